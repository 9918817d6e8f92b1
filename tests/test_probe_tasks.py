"""``linear-probe`` beyond classification: ridge regression and one logistic regression per label,
on real digits (MNIST-5k) with the grey pixels standing in for backbone features, so that what is
tested is the head: fitting, outputs in the target's units, thresholds, decisions, and the state
that a run saves and loads."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from transferkit.errors import UserInputError
from transferkit.strategies import LinearProbe, get_strategy
from transferkit.tasks import get_task

from task_data import digit_pairs, digit_values, pixel_context, split

FAST = {"Cs": [0.01, 0.1, 1.0], "cv": 3}  # a shorter grid: the heads, not the grid, are under test


def _saved_and_loaded(probe: LinearProbe, task: str) -> LinearProbe:
    """The probe's state through safetensors bytes (as a run stores it), into a fresh probe."""
    tensors = st_load(st_save({k: v.contiguous() for k, v in probe.state_tensors().items()}))
    return LinearProbe(**probe.get_params()).load_state(tensors, probe.classes_, None, task=task)


@pytest.fixture(scope="module")
def regression():
    ctx = pixel_context()
    train, test = split(digit_values(900), 600)
    probe = LinearProbe(**FAST).fit(train, ctx)
    return probe, ctx, train, test


@pytest.fixture(scope="module")
def multilabel():
    ctx = pixel_context(pool=2)
    train, test = split(digit_pairs(700), 400)
    probe = LinearProbe(**FAST).fit(train, ctx)
    return probe, ctx, train, test


def test_regression_probe_predicts_digit_values_in_their_units(regression):
    """Ridge on pixels learns much of a digit's value: RMSE well below the spread of the target
    (what predicting the mean gives); predictions are in the target's units, not standardised."""
    probe, ctx, train, test = regression
    assert probe.task_ == "regression" and probe.classes_ == [] and probe.thresholds_ is None
    y = np.array(test.labels)
    out = probe.predict_outputs(test, ctx)
    assert out.shape == (len(test),) and out.dtype == np.float64 and np.isfinite(out).all()
    rmse = float(np.sqrt(np.mean((out - y) ** 2)))
    mean_rmse = float(np.sqrt(np.mean((y - np.mean(train.labels)) ** 2)))
    assert rmse < 0.75 * mean_rmse, (rmse, mean_rmse)  # measured 1.9 against 3.0 on 800 items
    assert abs(out.mean() - y.mean()) < 0.5  # centred on the digits 0..9, not on 0
    assert probe.target_mean_ == pytest.approx(np.mean(train.labels))
    assert probe.target_scale_ == pytest.approx(np.std(train.labels))
    assert probe.fit_info()["alpha"] in probe.fit_info()["alphas"]
    pred = probe.predict(test, ctx)
    assert all(isinstance(v, float) for v in pred) and np.allclose(pred, out)


def test_regression_probe_refuses_probabilities_and_its_torch_head_gives_values(regression):
    probe, ctx, _, test = regression
    with pytest.raises(UserInputError, match="predicts numbers"):
        probe.predict_proba(test, ctx)
    head = probe.torch_head()  # (N, D) -> (N, 1) in the target's units: what export traces
    with torch.no_grad():
        values = head(torch.from_numpy(np.asarray(ctx.features(test), np.float32))).numpy()
    assert values.shape == (len(test), 1)
    np.testing.assert_allclose(values[:, 0], probe.predict_outputs(test, ctx), rtol=1e-4, atol=1e-3)


def test_multilabel_probe_finds_the_digits_of_a_pair(multilabel):
    """One logistic regression per digit on pooled pixels of two digits side by side: micro-F1
    far above what marking every label gives (about 0.33), with one threshold per label chosen
    on the training items and used by ``predict``."""
    probe, ctx, train, test = multilabel
    assert probe.task_ == "multi-label" and probe.classes_ == [str(d) for d in range(10)]
    proba = probe.predict_outputs(test, ctx)
    assert proba.shape == (len(test), 10) and ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_array_equal(probe.predict_proba(test, ctx), proba)
    assert probe.thresholds_.shape == (10,) and ((probe.thresholds_ > 0) & (probe.thresholds_ < 1)).all()
    task = get_task("multi-label")
    y = task.encode(list(test.labels), probe.classes_)
    decided = proba >= probe.thresholds_
    f1 = 2 * (decided & (y == 1)).sum() / (decided.sum() + y.sum())
    assert f1 > 0.55, f1  # measured 0.69 with 400 training pairs
    pred = probe.predict(test, ctx)
    assert all(isinstance(p, tuple) and list(p) == sorted(p) for p in pred)
    assert pred == [tuple(c for c, on in zip(probe.classes_, row) if on) for row in decided]
    assert len(probe.fit_info()["labels"]) == 10


@pytest.mark.parametrize("task", ["regression", "multi-label"])
def test_state_round_trips_through_safetensors(task, regression, multilabel):
    probe, ctx, _, test = regression if task == "regression" else multilabel
    again = _saved_and_loaded(probe, task)
    assert again.task_ == task and again.classes_ == probe.classes_
    np.testing.assert_array_equal(again.predict_outputs(test, ctx), probe.predict_outputs(test, ctx))
    assert again.predict(test, ctx) == probe.predict(test, ctx)
    if task == "multi-label":
        np.testing.assert_array_equal(again.thresholds_, probe.thresholds_)
    else:
        assert (again.target_mean_, again.target_scale_) == (probe.target_mean_, probe.target_scale_)


def test_load_refuses_weights_of_another_task(regression, multilabel):
    reg, ml = regression[0], multilabel[0]
    with pytest.raises(UserInputError, match="lack head.thresholds"):
        LinearProbe().load_state(reg.state_tensors(), ml.classes_, None, task="multi-label")
    with pytest.raises(UserInputError, match="lack target.mean, target.scale"):
        LinearProbe().load_state(ml.state_tensors(), [], None, task="regression")
    bad = dict(ml.state_tensors(), **{"head.thresholds": torch.zeros(3)})
    with pytest.raises(UserInputError, match=r"thresholds have shape \(3,\), expected \(10,\)"):
        LinearProbe().load_state(bad, ml.classes_, None, task="multi-label")
    with pytest.raises(UserInputError, match=r"expected \(9, D\)"):
        LinearProbe().load_state(ml.state_tensors(), ml.classes_[:9], None, task="multi-label")


def test_classification_state_loads_as_before(multilabel):
    """A run written before tasks existed has no task: its two head tensors load as a classifier."""
    _, ctx, train, test = multilabel
    first = [ls[0] for ls in train.labels]  # the pair's smaller digit, as one class
    from transferkit.data import Dataset

    single = Dataset(modality="image", inputs=train.inputs, labels=first)
    probe = LinearProbe(**FAST).fit(single, ctx)
    assert set(probe.state_tensors()) == {"head.weight", "head.bias"} and probe.thresholds_ is None
    again = LinearProbe().load_state(probe.state_tensors(), probe.classes_, None)
    assert again.task_ == "classification"
    np.testing.assert_array_equal(again.predict_proba(test, ctx), probe.predict_proba(test, ctx))


def test_fit_refuses_targets_with_nothing_to_learn():
    ctx = pixel_context()
    values = digit_values(20)
    flat = values.subset(range(20))
    flat.labels = [3.0] * 20
    with pytest.raises(UserInputError, match="same for every training item"):
        LinearProbe(**FAST).fit(flat, ctx)
    pairs = digit_pairs(20)
    one = pairs.subset(range(20))
    one.labels = [("4",)] * 20
    with pytest.raises(UserInputError, match="only the label"):
        LinearProbe(**FAST).fit(one, ctx)


def test_adabn_weighs_the_labels_of_a_multi_label_task_as_the_probe_does():
    """AdaBN fits the probe's head of the task; class_weight reaches it (per-label positives)."""
    data = digit_pairs(60)
    plain = get_strategy("adabn").fit(data, pixel_context())
    weighted = get_strategy("adabn", {"class_weight": "balanced"}).fit(data, pixel_context())
    assert plain.task_ == weighted.task_ == "multi-label"
    assert not np.allclose(plain.head_weight_, weighted.head_weight_)


