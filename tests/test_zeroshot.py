"""zero-shot: several descriptions per label, label-free calibration (contextual, EM prior), the
majority-class rate beside the accuracy; on hand-made embeddings whose bias is known, then end to
end on a tiny model (fast)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from transferkit.cli import main
from transferkit.data import Dataset
from transferkit.errors import UserInputError
from transferkit.evaluation import classification_metrics, majority_note
from transferkit.strategies import get_strategy
from transferkit.strategies._zeroshot_calibration import contextual_bias, em_prior, prior_bias
from transferkit.strategies.base import TransferContext
from transferkit.strategies.zeroshot import ZeroShot, parse_label_descriptions
from transferkit.tasks.linear import softmax

from conftest import toy_texts

# ----- a world of 3-d embeddings whose bias is known --------------------------------------------------------------
# Label descriptions point along e_a and e_b; every text also shares a general direction g that lies
# closer to e_a, so raw cosines favour "a" whatever the item: what contextual calibration must remove.
E_A, E_B = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
G = np.array([0.6, 0.3, 0.74])
CONTENT_FREE = ["N/A", "", "[MASK]"]


def _world(n_a: int, n_b: int, seed: int = 0, noise: float = 0.08):
    """Item texts, their true labels and a ``TransferContext`` whose features read the embeddings."""
    rng = np.random.default_rng(seed)
    vectors = {"about a": E_A, "about b": E_B, "about b, also": 0.9 * E_B + 0.1 * np.array([0, 0, 1.0])}
    vectors.update({t: G for t in CONTENT_FREE})
    texts, labels = [], []
    for i, (label, e) in enumerate([("a", E_A)] * n_a + [("b", E_B)] * n_b):
        texts.append(f"item {i}")
        labels.append(label)
        vectors[texts[-1]] = G + 0.25 * (e - (E_A + E_B) / 2) + noise * rng.standard_normal(3)

    def features(ds: Dataset) -> np.ndarray:
        return np.stack([vectors[t] for t in ds.inputs]).astype(np.float32)

    return texts, labels, lambda: TransferContext(backbone=None, features=features)


def _zs(**params) -> ZeroShot:
    return get_strategy("zero-shot", {"labels": {"a": "about a", "b": "about b"}, "templates": ["{description}"],
                                      **params})


def _predicted(s, texts, ctx) -> np.ndarray:
    return np.array(s.classes_)[s.predict_proba(Dataset(modality="text", inputs=texts), ctx).argmax(1)]


def test_contextual_calibration_removes_the_bias_every_text_shares():
    texts, labels, make_ctx = _world(30, 30)
    raw, cal = _zs(calibration="none"), _zs()
    assert cal.calibration == "contextual"  # the documented default
    ctx = make_ctx()
    raw.fit(None, ctx)
    cal.fit(None, ctx)
    before, after = _predicted(raw, texts, ctx), _predicted(cal, texts, ctx)
    y = np.array(labels)
    assert (before == "a").mean() > 0.75  # the shared direction sends most items to "a"
    assert (after == "b").sum() >= (before == "b").sum() + 15  # the correction moves items to "b" ...
    assert (after == y).mean() > 0.9 > (before == y).mean()  # ... the right ones
    p_cf = cal.fit_info()["calibration"]["content_free_probabilities"]
    assert p_cf["a"] > 0.5 > p_cf["b"]  # what it divided out, reported
    # the content-free input itself is now undecided
    np.testing.assert_allclose(cal.predict_proba(Dataset(modality="text", inputs=["N/A"]), ctx), [[0.5, 0.5]])


def test_the_em_prior_moves_predictions_toward_the_majority_without_reading_labels():
    texts, labels, make_ctx = _world(12, 48, noise=0.2)  # 80% "b", and items that overlap
    ctx = make_ctx()
    unlabelled = Dataset(modality="text", inputs=texts)
    contextual = _zs().fit(unlabelled, ctx)
    prior = _zs(calibration="contextual+prior").fit(unlabelled, ctx)
    priors = prior.fit_info()["calibration"]["priors"]
    assert priors["estimated_on"] == "the 60 training items' texts" and priors["labels_read"] is False
    assert priors["classes"]["b"] > 0.6
    y = np.array(labels)
    before, after = _predicted(contextual, texts, ctx), _predicted(prior, texts, ctx)
    assert (after == "b").sum() > (before == "b").sum()
    assert (after == y).mean() > (before == y).mean()
    # labels given with the training texts change nothing, whatever they say
    for wrong in (labels, ["a"] * 60):
        again = _zs(calibration="contextual+prior").fit(Dataset(modality="text", inputs=texts, labels=wrong), ctx)
        np.testing.assert_array_equal(again.prior_bias_, prior.prior_bias_)


def test_without_training_texts_the_prior_comes_from_the_first_large_batch_and_then_stays(tmp_path):
    texts, _, make_ctx = _world(10, 40, noise=0.2)
    ctx = make_ctx()
    s = _zs(calibration="prior", prior_min_items=20).fit(None, ctx)
    assert s.prior_pending_ and "not yet estimated" in s.fit_info()["calibration"]["priors"]
    few = Dataset(modality="text", inputs=texts[:5])
    s.predict_proba(few, ctx)
    assert s.prior_pending_ and not ctx.notes  # 5 items are too few to estimate priors on
    whole = Dataset(modality="text", inputs=texts)
    p_whole = s.predict_proba(whole, ctx)
    assert not s.prior_pending_ and s.fit_info()["calibration"]["priors"]["estimated_on"].startswith("the first 50")
    assert "class priors estimated without labels on the 50 items" in ctx.notes[0]
    # from now on a batch's company does not change an item's prediction
    np.testing.assert_allclose(s.predict_proba(few, ctx), p_whole[:5])
    # and the saved tensors predict the same (safetensors, as a run stores them)
    from safetensors.torch import load_file, save_file

    save_file(s.state_tensors(), tmp_path / "w.safetensors")
    back = _zs(calibration="prior").load_state(load_file(tmp_path / "w.safetensors"), s.classes_)
    assert not back.prior_pending_
    np.testing.assert_allclose(back.predict_proba(few, ctx), p_whole[:5])
    # the torch head (export, explanations) gives the same probabilities
    with torch.no_grad():
        logits = back.torch_head()(torch.from_numpy(ctx.features(few)))
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), p_whole[:5], atol=1e-5)


def test_a_run_saved_before_calibration_loads_uncorrected():
    texts, _, make_ctx = _world(5, 5)
    ctx = make_ctx()
    raw = _zs(calibration="none").fit(None, ctx)
    old = _zs().load_state({"class_embeddings": torch.from_numpy(raw.class_embeddings_)}, raw.classes_)
    data = Dataset(modality="text", inputs=texts)
    np.testing.assert_allclose(old.predict_proba(data, ctx), raw.predict_proba(data, ctx))
    with pytest.raises(UserInputError, match="prior_bias"):
        _zs().load_state({"class_embeddings": torch.from_numpy(raw.class_embeddings_),
                          "prior_bias": torch.zeros(3, dtype=torch.float64)}, raw.classes_)


def test_calibration_maths():
    bias, p_cf = contextual_bias(np.log(np.array([[0.8, 0.2], [0.6, 0.4]])))
    np.testing.assert_allclose(p_cf, [0.7, 0.3])
    np.testing.assert_allclose(softmax((np.log(p_cf) + bias)[None]), [[0.5, 0.5]])
    assert abs(bias.sum()) < 1e-12
    # posteriors that are exactly the Bayes posteriors of a 2-Gaussian world with priors 0.8 / 0.2
    # (under a uniform prior): EM recovers the priors from the unlabelled draws
    rng = np.random.default_rng(0)
    y = rng.random(20000) < 0.2
    x = rng.normal(np.where(y, 1.0, -1.0), 1.0)
    logits = np.stack([-(x + 1) ** 2 / 2, -(x - 1) ** 2 / 2], axis=1)
    priors, iterations = em_prior(logits)
    assert abs(priors[1] - 0.2) < 0.02 and iterations > 1
    np.testing.assert_allclose(prior_bias(np.array([0.5, 0.5])), [0.0, 0.0])


# ----- several descriptions per label ------------------------------------------------------------------------------
def test_several_descriptions_per_label_in_the_text_form():
    assert parse_label_descriptions("spam: ad|a scam, ham: normal e-mail") == {
        "spam": ["ad", "a scam"], "ham": ["normal e-mail"]}
    # a comma inside one of them is kept, as before
    assert parse_label_descriptions("spam: ads, offers|a scam,ham: mail") == {
        "spam": ["ads, offers", "a scam"], "ham": ["mail"]}
    # the JSON form takes each description whole
    assert parse_label_descriptions({"a": "x|y", "b": ["z", "w"]}) == {"a": ["x|y"], "b": ["z", "w"]}
    for bad, msg in [("spam: a||b,ham: x", "empty description between '|'"),
                     ("spam: a|,ham: x", "empty description between '|'"),
                     ("spam|junk,ham", "'|' in the label name"), ("spam|x: a,ham: b", "'|' in the label name"),
                     ("spam: a|b,spam: c", "twice")]:
        with pytest.raises(UserInputError, match=msg) as e:
            parse_label_descriptions(bad)
        assert 'separated by "|"' in e.value.hint


def test_a_class_embedding_is_the_mean_of_its_descriptions():
    _, _, make_ctx = _world(1, 1)
    ctx = make_ctx()
    one = _zs(labels={"a": "about a", "b": "about b"}).fit(None, ctx)
    two = _zs(labels="a: about a,b: about b|about b, also").fit(None, ctx)
    expected = E_B + (0.9 * E_B + 0.1 * np.array([0, 0, 1.0])) / np.linalg.norm([0, 0.9, 0.1])
    np.testing.assert_allclose(two.class_embeddings_[1], expected / np.linalg.norm(expected))
    np.testing.assert_allclose(two.class_embeddings_[0], one.class_embeddings_[0])
    assert two.fit_info()["descriptions"]["b"] == ["about b", "about b, also"]


# ----- the majority-class rate ------------------------------------------------------------------------------------
def test_majority_rate_and_its_note():
    y = np.array([0, 0, 0, 1])
    m = classification_metrics(y, np.tile([0.2, 0.8], (4, 1)), ["ham", "spam"], n_boot=20)
    assert m["majority_class"] == "ham" and m["majority_rate"] == 0.75 and m["accuracy"] == 0.25
    (note,) = majority_note(m, "zero-shot")
    assert note.startswith("zero-shot: test accuracy 0.250 is below the majority-class rate 0.750")
    assert "'ham'" in note
    good = classification_metrics(y, np.tile([0.8, 0.2], (4, 1)), ["ham", "spam"], n_boot=20)
    assert majority_note(good) == []  # equal to the constant: no note
    assert majority_note({"rmse": 1.0}) == []


def _write(path, texts, labels):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    return path


def test_cli_zero_shot_calibrates_reports_the_majority_rate_and_reloads(tiny_text_dir, tmp_path, capsys):
    texts, labels = toy_texts(15, seed=2)
    test = _write(tmp_path / "test.csv", texts[:15] + texts[15:20], labels[:15] + labels[15:20])  # 15 ham, 5 spam
    out = tmp_path / "zs"
    rc = main(["fit", "--test", str(test), "--model", str(tiny_text_dir), "--strategy", "zero-shot",
               "--labels", "spam: unsolicited advertising|a prize to win,ham: normal e-mail",
               "--param", "calibration=contextual+prior", "--no-control", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["test"]["majority_rate"] == 0.75 and m["test"]["majority_class"] == "ham"
    below = m["test"]["accuracy"] < m["test"]["majority_rate"]
    assert any("below the majority-class rate 0.750" in n for n in m["notes"]) == below
    cal = m["strategy"]["fit"]["calibration"]
    assert cal["method"] == "contextual+prior" and set(cal["content_free_probabilities"]) == {"ham", "spam"}
    assert cal["priors"]["estimated_on"].startswith("the first 20 items") and cal["priors"]["labels_read"] is False
    assert m["strategy"]["fit"]["descriptions"]["spam"] == ["unsolicited advertising", "a prize to win"]
    import transferkit as tk

    again = tk.load(out)
    proba = again.predict_proba(texts[:3])
    rc = main(["fit", "--test", str(test), "--model", str(tiny_text_dir), "--strategy", "zero-shot",
               "--labels", "spam: ads||scam,ham: mail"])
    assert rc == 2 and "empty description between '|'" in capsys.readouterr().err
    # the reloaded run predicts with the stored bias, whatever the batch
    np.testing.assert_allclose(again.predict_proba(texts[:1]), proba[:1], atol=1e-6)
