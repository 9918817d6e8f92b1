"""Tests of transferkit.evaluation: agreement with sklearn, ECE, bootstrap CIs, the verdict."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)

from transferkit.evaluation import (
    classification_metrics,
    expected_calibration_error,
    paired_gain,
    transfer_verdict,
)


def make_proba(n, c, seed=0, skill=2.0, labels=None):
    """Random (y, proba) where proba leans towards the true class by `skill` logits."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n) if labels is None else rng.choice(labels, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += skill
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def assert_plain_json(x):
    """Only Python builtins (no numpy scalars, which json or downstream code may trip on)."""
    if isinstance(x, dict):
        assert all(type(k) is str for k in x)
        for v in x.values():
            assert_plain_json(v)
    elif isinstance(x, list):
        for v in x:
            assert_plain_json(v)
    else:
        assert type(x) in (int, float, str, bool, type(None)), type(x)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_sklearn(seed):
    # 5 classes, class 4 never in y_true: it must still be reported, with support 0.
    y, p = make_proba(300, 5, seed=seed, skill=1.0, labels=[0, 1, 2, 3])
    classes = ["a", "b", "c", "d", "e"]
    m = classification_metrics(y, p, classes, n_boot=50)
    pred = p.argmax(axis=1)
    assert m["n"] == 300
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert m["confusion_matrix"] == confusion_matrix(y, pred, labels=range(5)).tolist()
    assert m["log_loss"] == pytest.approx(log_loss(y, p, labels=range(5)))
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=range(5), zero_division=0)
    for j, name in enumerate(classes):
        pc = m["per_class"][name]
        assert pc["precision"] == pytest.approx(prec[j])
        assert pc["recall"] == pytest.approx(rec[j])
        assert pc["f1"] == pytest.approx(f1[j])
        assert pc["support"] == sup[j]
    assert m["per_class"]["e"]["support"] == 0
    assert m["classes"] == classes


def test_macro_f1_with_a_never_predicted_class_matches_sklearn():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.eye(3)[[0, 0, 0, 1, 1, 1]] * 0.8 + 0.2 / 3  # class 2 is never predicted
    m = classification_metrics(y, p, ["x", "y", "z"], n_boot=20)
    assert m["macro_f1"] == pytest.approx(f1_score(y, p.argmax(1), average="macro", zero_division=0))
    assert m["per_class"]["z"]["precision"] == 0.0


def test_ece_hand_computed():
    # Top-label confidences 0.9, 0.9, 0.62, 0.55; correct: yes, no, yes, no.
    # 15 bins of width 1/15: 0.9 -> bin 13, 0.62 -> bin 9, 0.55 -> bin 8.
    # ECE = 2/4*|0.5-0.9| + 1/4*|1-0.62| + 1/4*|0-0.55| = 0.2 + 0.095 + 0.1375 = 0.4325
    proba = np.array([[0.9, 0.1], [0.9, 0.1], [0.38, 0.62], [0.55, 0.45]])
    y = np.array([0, 1, 1, 1])
    assert expected_calibration_error(y, proba) == pytest.approx(0.4325)
    assert classification_metrics(y, proba, ["n", "p"], n_boot=10)["ece"] == pytest.approx(0.4325)
    # One bin: |mean accuracy - mean confidence| = |0.5 - 0.7425|.
    assert expected_calibration_error(y, proba, n_bins=1) == pytest.approx(0.2425)


def test_ece_of_a_perfect_confident_model_is_zero():
    y = np.array([0, 1, 2, 1])
    assert expected_calibration_error(y, np.eye(3)[y]) == 0.0  # confidence 1.0 falls in the last bin


def test_ci_contains_point_estimate_and_narrows_with_n():
    widths = []
    for n in (200, 5000):
        y, p = make_proba(n, 4, seed=3)
        m = classification_metrics(y, p, list("abcd"))
        for key in ("accuracy", "macro_f1"):
            lo, hi = m[f"{key}_ci"]
            assert lo <= m[key] <= hi
        for pc in m["per_class"].values():
            assert pc["recall_ci"][0] <= pc["recall"] <= pc["recall_ci"][1]
            assert pc["precision_ci"][0] <= pc["precision"] <= pc["precision_ci"][1]
        assert m["ece_ci"][0] <= m["ece_ci"][1]
        widths.append(m["accuracy_ci"][1] - m["accuracy_ci"][0])
    assert widths[1] < widths[0] / 3  # ~ 1/sqrt(N): 5 times narrower


def test_same_seed_same_output_and_json_serialisable():
    y, p = make_proba(400, 3, seed=5)
    a = classification_metrics(y, p, ["x", "y", "z"], seed=7)
    b = classification_metrics(y, p, ["x", "y", "z"], seed=7)
    assert json.dumps(a) == json.dumps(b)
    assert classification_metrics(y, p, ["x", "y", "z"], seed=8)["accuracy_ci"] != a["accuracy_ci"]
    v1 = transfer_verdict(y, p.argmax(1), {"c": np.roll(y, 1)}, seed=3)
    assert json.dumps(v1) == json.dumps(transfer_verdict(y, p.argmax(1), {"c": np.roll(y, 1)}, seed=3))
    for out in (a, v1, paired_gain(y, p.argmax(1), y)):
        json.dumps(out, allow_nan=False)
        assert_plain_json(out)


def test_input_validation():
    y, p = make_proba(10, 3)
    with pytest.raises(ValueError, match="columns"):
        classification_metrics(y, p, ["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        classification_metrics(y, p, ["a", "b", "a"])
    with pytest.raises(ValueError, match="logits"):
        classification_metrics(y, 2 * p, ["a", "b", "c"])
    with pytest.raises(ValueError, match="outside"):
        classification_metrics(y + 3, p, ["a", "b", "c"])
    with pytest.raises(ValueError, match="rows"):
        classification_metrics(y[:5], p, ["a", "b", "c"])
    with pytest.raises(ValueError, match="empty"):
        classification_metrics(y[:0], p[:0], ["a", "b", "c"])
    with pytest.raises(ValueError, match="lengths"):
        paired_gain(y, y, y[:5])
    with pytest.raises(ValueError, match="at least one control"):
        transfer_verdict(y, y, {})


def test_paired_gain():
    y = np.zeros(1000, dtype=int)
    a = y.copy()
    b = y.copy()
    b[:100] = 1  # b wrong on 10% of items, a always right
    g = paired_gain(y, a, b)
    assert g["gain"] == pytest.approx(0.1)
    assert g["gain_ci"][0] < 0.1 < g["gain_ci"][1]
    assert g["gain_ci"][0] > 0.07 and g["n_boot"] == 2000
    assert paired_gain(y, b, a)["gain"] == pytest.approx(-0.1)


def _three_models(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)

    def model(acc):
        wrong = rng.random(n) > acc
        return np.where(wrong, (y + 1) % 3, y)

    return y, model


def test_verdict_helped():
    y, model = _three_models()
    v = transfer_verdict(y, model(0.9), {"random-init": model(0.5), "tfidf-logreg": model(0.8)})
    assert v["verdict"] == "helped"
    assert v["control"]["name"] == "tfidf-logreg"
    assert v["transfer_gain_ci"][0] > 0
    assert set(v["controls"]) == {"random-init", "tfidf-logreg"}
    assert v["controls"]["tfidf-logreg"]["gain"] == v["transfer_gain"]
    assert v["explanation"].startswith("Transfer helped: +")
    assert "(tfidf-logreg)" in v["explanation"] and "95% CI [+" in v["explanation"]


def test_verdict_identical_predictions_is_no_difference():
    y, model = _three_models()
    pred = model(0.8)
    v = transfer_verdict(y, pred, {"tfidf-logreg": pred.copy()})
    assert v["verdict"] == "no-difference"
    assert v["transfer_gain"] == 0.0 and v["transfer_gain_ci"] == [0.0, 0.0]
    assert "-0.0" not in v["explanation"]


def test_verdict_noisy_small_difference_is_no_difference():
    y, model = _three_models(n=100, seed=1)
    a, b = model(0.8), model(0.8)
    v = transfer_verdict(y, a, {"ctl": b})
    assert v["transfer_gain_ci"][0] < 0 < v["transfer_gain_ci"][1]
    assert v["verdict"] == "no-difference"
    assert "includes zero" in v["explanation"]


def test_verdict_hurt():
    y, model = _three_models()
    v = transfer_verdict(y, model(0.6), {"random-init": model(0.5), "tfidf-logreg": model(0.85)})
    assert v["verdict"] == "hurt"
    assert v["transfer_gain_ci"][1] < 0
    assert "negative transfer" in v["explanation"]


def test_best_control_ties_go_to_first():
    y, model = _three_models()
    c = model(0.7)
    v = transfer_verdict(y, model(0.7), {"first": c, "second": c.copy()})
    assert v["control"]["name"] == "first"
    v = transfer_verdict(y, model(0.7), {"second": c, "first": c.copy()})
    assert v["control"]["name"] == "second"
