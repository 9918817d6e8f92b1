"""The no-transfer controls per task: the classical baselines learn regression (ridge) and
multi-label (one logistic regression per label) on their own features, regression adds the
mean predictor, and ``evidence.run_controls`` returns every control's outputs for the task."""
from __future__ import annotations

import numpy as np
import pytest

from transferkit import classical, controls
from transferkit.backbones import get_backbone
from transferkit.config import FitConfig
from transferkit.controls import BASELINES, baselines_for, control_name, mean_target, pixels_logreg, tfidf_logreg
from transferkit.data import Dataset
from transferkit.evidence import new_model, run_controls
from transferkit.strategies import get_strategy
from transferkit.tasks import Outputs, get_task
from transferkit.tasks.linear import fit_logistic, softmax

from conftest import toy_texts
from task_data import digit_pairs, digit_values, mail_lengths, split


def _rmse(pred: np.ndarray, y: list[float]) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred) - np.asarray(y)) ** 2)))


def test_each_task_gets_the_modality_baseline_and_regression_the_mean():
    assert baselines_for("text", "classification") == ["tfidf-logreg"] == [controls.baseline_for("text")]
    assert baselines_for("image", "multi-label") == ["pixels-logreg"]
    assert baselines_for("audio", "regression") == ["mfcc-logreg", "mean"]
    assert [control_name(n, "regression") for n in baselines_for("text", "regression")] == ["tfidf-ridge", "mean"]
    assert control_name("pixels-logreg", "multi-label") == "pixels-logreg"  # one logistic regression per label
    assert control_name("pixels-logreg", "classification") == "pixels-logreg"
    assert all(set(e.meta["tasks"]) <= {"classification", "regression", "multi-label"} for e in BASELINES)


def test_pixels_ridge_beats_the_mean_on_digit_values():
    """Ridge on 32x32 grey pixels predicts a digit's value far better than the training mean does
    (measured: RMSE 2.0 against 3.0 on 300 test digits)."""
    train, test = split(digit_values(900), 600)
    y = get_task("regression").encode(list(train.labels), [])
    pred, info = pixels_logreg(train, y, test, 0, task="regression")
    mean, mean_info = mean_target(train, y, test, 0)
    assert pred.shape == mean.shape == (len(test),) and np.isfinite(pred).all()
    np.testing.assert_array_equal(mean, np.full(len(test), np.mean(train.labels)))
    assert mean_info["mean"] == pytest.approx(np.mean(train.labels))
    assert _rmse(pred, test.labels) < 0.8 * _rmse(mean, test.labels)
    assert info["side"] == 28 and info["alpha"] in info["alphas"] and "thresholds" not in info


def test_pixels_one_vs_rest_finds_the_digits_of_a_pair():
    """One logistic regression per digit on the pixels of two digits side by side, with per-label
    thresholds chosen on the training items: micro-F1 far above marking every label (~0.33)."""
    train, test = split(digit_pairs(600), 300)
    task = get_task("multi-label")
    classes = train.classes
    proba, info = pixels_logreg(train, task.encode(list(train.labels), classes), test, 0, task="multi-label")
    assert proba.shape == (len(test), 10) and ((proba >= 0) & (proba <= 1)).all()
    assert info["thresholds"].shape == (10,)
    y = task.encode(list(test.labels), classes)
    decided = proba >= info["thresholds"]
    assert 2 * (decided & (y == 1)).sum() / (decided.sum() + y.sum()) > 0.55  # measured 0.70 on 400 pairs
    m = task.metrics(y, proba, classes, thresholds=info["thresholds"], n_boot=200)
    assert m["micro_f1"] > 0.55 and [r["threshold"] for r in m["per_label"].values()] == info["thresholds"].tolist()


def test_tfidf_ridge_on_sparse_features():
    """Plumbing on real text: ridge on the sparse TF-IDF matrix (no scaling) predicts log body
    length of SpamAssassin e-mails (a target derived from the input, so it shows the plumbing,
    not transfer), better than the mean."""
    train, test = split(mail_lengths(400), 300)
    y = np.asarray(train.labels)
    pred, info = tfidf_logreg(train, y, test, 0, task="regression")
    assert pred.shape == (len(test),) and np.isfinite(pred).all() and info["vocabulary"] > 1000
    assert _rmse(pred, test.labels) < _rmse(np.full(len(test), y.mean()), test.labels)


def test_classification_baseline_is_unchanged():
    """The classification call (no task, as before tasks existed) gives exactly the logistic
    regression it always gave, on the feature set it reports (word n-grams, plus character n-grams
    where the cross-validation prefers them: test_controls_text.py)."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts, labels = toy_texts(12)
    texts2, _ = toy_texts(5, seed=1)
    train = Dataset(modality="text", inputs=texts, labels=labels)
    test = Dataset(modality="text", inputs=texts2)
    y = np.array([0 if c == "ham" else 1 for c in labels])
    proba, info = tfidf_logreg(train, y, test, 0)
    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1, max_features=200_000, dtype=np.float32)
    chars = TfidfVectorizer(sublinear_tf=True, analyzer="char_wb", ngram_range=(2, 5), min_df=1,
                            max_features=classical.CHAR_FEATURES, dtype=np.float32)
    Xtr, Xte = vec.fit_transform(texts), vec.transform(texts2)
    if info["features"] == classical.WORDS_CHARS:
        Xtr, Xte = hstack([Xtr, chars.fit_transform(texts)], format="csr"), hstack([Xte, chars.transform(texts2)])
    W, b, _ = fit_logistic(Xtr, y, Cs=(1.0, 10.0, 100.0, 1000.0), cv=5, max_iter=3000, seed=0, scale=False)
    # the same model; the head's product now runs in float64 (the old one in the features' float32)
    np.testing.assert_allclose(proba, softmax(np.asarray(Xte @ W.T) + b), atol=1e-6)


def test_the_mean_control_is_for_regression_only():
    texts, labels = toy_texts(3)
    ds = Dataset(modality="text", inputs=texts, labels=labels)
    with pytest.raises(ValueError, match="for regression"):
        mean_target(ds, np.zeros(len(ds), dtype=int), ds, 0, task="classification")


def _topic_texts(task: str) -> tuple[Dataset, Dataset]:
    """Toy texts of one or two topics: multi-label, the topics; regression, the share of money words."""
    topics = {"money": ["cash", "prize", "offer", "winner"], "work": ["meeting", "agenda", "report", "budget"]}
    rng = np.random.RandomState(0)
    texts, labels = [], []
    for i in range(36):
        chosen = [["money"], ["work"], ["money", "work"]][i % 3]
        words = [str(rng.choice(topics[t])) for t in chosen for _ in range(rng.randint(2, 6))]
        texts.append(" ".join(words))
        labels.append(tuple(chosen) if task == "multi-label" else sum(w in topics["money"] for w in words) / len(words))
    ds = Dataset(modality="text", inputs=texts, labels=labels, task=task)
    return ds.subset(range(24)), ds.subset(range(24, 36))


@pytest.mark.parametrize("task", ["classification", "regression", "multi-label"])
def test_run_controls_gives_every_control_of_the_task(task, tiny_text_dir):
    """random-init (the probe on a random copy of the backbone), the modality's baseline for the
    task and, for regression, the mean: each as Outputs the task's verdict takes."""
    if task == "classification":
        texts, labels = toy_texts(18)
        ds = Dataset(modality="text", inputs=texts, labels=labels)
        idx = np.random.RandomState(0).permutation(len(ds))
        train, test = ds.subset(idx[:24]), ds.subset(idx[24:])
    else:
        train, test = _topic_texts(task)
    cfg = FitConfig(data="unused.csv", n_boot=200)
    backbone = get_backbone(str(tiny_text_dir))
    model = new_model(backbone, get_strategy("linear-probe"), cfg)
    strategy = model.strategy.fit(train, model.ctx)
    said: list[str] = []
    outs = run_controls(strategy, backbone, train, test, cfg, said.append, progress=False)
    expected = {"classification": ["random-init", "tfidf-logreg"], "regression": ["random-init", "tfidf-ridge", "mean"],
                "multi-label": ["random-init", "tfidf-logreg"]}[task]
    assert list(outs) == expected and len(said) == len(expected)
    for name, out in outs.items():
        assert isinstance(out, Outputs)
        if task == "classification":
            assert out.values.shape == (len(test), 2) and out.thresholds is None
            np.testing.assert_allclose(out.values.sum(1), 1.0, atol=1e-6)
        elif task == "regression":
            assert out.values.shape == (len(test),) and out.thresholds is None
        else:
            assert out.values.shape == (len(test), 2) and out.thresholds.shape == (2,), name
    t = get_task(task)
    y = t.encode(list(test.labels), strategy.classes_)
    transfer = Outputs(strategy.predict_outputs(test, model.ctx), strategy.thresholds_)
    v = t.verdict(y, transfer, outs, n_boot=200)
    assert v["metric"] == t.primary and set(v["controls"]) == set(expected) and v["control"]["name"] in expected
