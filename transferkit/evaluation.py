"""Evaluation maths: test metrics with bootstrap confidence intervals, and the transfer verdict.

Every public function takes numpy arrays and returns plain JSON-able Python values (``float``,
``int``, ``str``, ``list``, ``dict``), so its output can go straight into ``metrics.json``.

Confidence intervals are percentile bootstraps over test examples.  Each replicate
recomputes the statistic exactly as it is defined for the point estimate (same
``zero_division=0`` conventions as scikit-learn), so an interval is the spread of *that*
statistic under resampling of the test set.  The randomness comes only from ``seed``: the
same inputs and seed always give the same output.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

__all__ = ["classification_metrics", "expected_calibration_error", "paired_gain", "transfer_verdict"]

# Bootstrap work is done in chunks of replicates so that the (chunk, N) index matrix stays
# around 16 MB whatever N is; the results do not depend on the chunking.
_CHUNK_ELEMENTS = 1 << 21


def _check_labels(y: np.ndarray, name: str, n_classes: int | None = None) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"{name} must hold integer class indices")
    y = y.astype(np.int64)
    if n_classes is not None and y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{name} holds class indices outside [0, {n_classes})")
    return y


def _check_proba(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2:
        raise ValueError(f"proba must be 2-D (N, C), got shape {proba.shape}")
    y = _check_labels(y_true, "y_true", proba.shape[1])
    if len(y) != len(proba):
        raise ValueError(f"y_true has {len(y)} items but proba has {len(proba)} rows")
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty test set")
    if not np.all(np.isfinite(proba)) or proba.min() < 0:
        raise ValueError("proba must hold finite, non-negative probabilities")
    # Catches logits or unnormalised scores passed by mistake; the tolerance allows float32 softmax.
    if not np.allclose(proba.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("each row of proba must sum to 1 (pass probabilities, not logits)")
    return y, proba


def _interval(samples: np.ndarray, confidence: float) -> np.ndarray:
    """Percentile interval along axis 0: (B, ...) -> (2, ...)."""
    alpha = 1.0 - confidence
    return np.percentile(samples, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)


def _boot_indices(n: int, n_boot: int, seed: int, confidence: float) -> Iterator[np.ndarray]:
    """Yields (b, n) int index matrices, b summing to n_boot, from one seeded generator.

    Every statistic of a call is computed from the same resamples, which keeps the
    per-metric intervals mutually consistent.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_boot, step):
        yield rng.integers(0, n, size=(min(step, n_boot - start), n))


def _confidence_bins(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index of each confidence in equal-width bins ((m-1)/M, m/M], as in Guo et al. 2017."""
    return np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 15) -> float:
    """Top-label expected calibration error (Guo et al. 2017).

    The confidence of an example is its largest class probability; examples are put in
    ``n_bins`` equal-width bins ``((m-1)/M, m/M]`` of confidence, and
    ``ECE = sum_m |B_m|/N * |accuracy(B_m) - mean confidence(B_m)|``.

    Args:
        y_true: ``(N,)`` int class indices.
        proba: ``(N, C)`` class probabilities, rows summing to 1.
        n_bins: number of confidence bins.

    Returns:
        The ECE, in [0, 1] (same units as accuracy).
    """
    y, proba = _check_proba(y_true, proba)
    return _ece(proba.max(axis=1), (proba.argmax(axis=1) == y).astype(np.float64), n_bins)


def _ece(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """ECE from (N,) top-label confidences and (N,) 0/1 correctness."""
    bins = _confidence_bins(conf, n_bins)
    gap = np.bincount(bins, correct, n_bins) - np.bincount(bins, conf, n_bins)
    return float(np.abs(gap).sum() / len(conf))


def _per_class(tp: np.ndarray, support: np.ndarray, predicted: np.ndarray):
    """Precision, recall, F1 and macro-F1 from counts of shape (..., C), zero_division=0.

    Macro-F1 averages over the classes present in y_true or in the predictions (of that
    replicate), which is what sklearn's ``f1_score(average="macro")`` does without ``labels``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = support + predicted
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
        present = denom > 0
        macro_f1 = (f1 * present).sum(axis=-1) / present.sum(axis=-1)
    return precision, recall, f1, macro_f1


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, classes: list[str], *,
    n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
) -> dict:
    """Test-set metrics of a classifier, with percentile-bootstrap confidence intervals.

    Args:
        y_true: ``(N,)`` int indices into ``classes``.
        proba: ``(N, C)`` class probabilities (rows sum to 1); the prediction is the argmax.
        classes: the ``C`` class names, in column order.
        n_boot: bootstrap replicates (resamples of the N test examples with replacement).
        seed: seed of the bootstrap.
        confidence: level of the intervals.

    Returns:
        ``{"n", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "ece", "ece_ci",
        "log_loss", "per_class", "confusion_matrix", "classes", "n_boot", "confidence",
        "majority_class", "majority_rate"}``.
        ``per_class[name]`` has ``precision``, ``recall``, ``f1``, ``support`` and
        ``precision_ci``, ``recall_ci``; every class appears, with support 0 if absent from
        ``y_true``.  Undefined ratios are 0 (sklearn's ``zero_division=0``), in the point
        estimate and in each replicate alike.  ``confusion_matrix`` is ``C x C`` ints, rows
        true, columns predicted.  ``majority_rate`` is the share of the most frequent class
        among these items (``majority_class``, the first in ``classes`` on a tie): the accuracy
        of the best constant answer here, which a classifier should beat (:func:`majority_note`).
        ECE is upward-biased on small test sets and its bootstrap
        (which resamples, adding duplicates) even more so: its interval may lie above the point
        estimate; read it as "how large miscalibration could plausibly be".
    """
    y, proba = _check_proba(y_true, proba)
    n, c = proba.shape
    if len(classes) != c:
        raise ValueError(f"proba has {c} columns but {len(classes)} classes were given")
    if len({str(x) for x in classes}) != c:
        raise ValueError("class names must be distinct (they key per_class)")

    pred = proba.argmax(axis=1)
    conf = proba.max(axis=1)
    correct = (pred == y).astype(np.float64)
    n_bins = 15
    bins = _confidence_bins(conf, n_bins)

    cm = np.bincount(y * c + pred, minlength=c * c).reshape(c, c)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    precision, recall, f1, macro_f1 = _per_class(tp, support, predicted)
    ece = _ece(conf, correct, n_bins)
    # Clipped like sklearn's log_loss, so a confident wrong 0.0 gives a large finite loss.
    eps = np.finfo(np.float64).eps
    log_loss = float(-np.mean(np.log(np.clip(proba[np.arange(n), y], eps, 1.0))))

    # Bootstrap: per replicate b, offset indices by b*C (or b*n_bins) so that one bincount
    # over the flattened chunk yields every replicate's per-class (or per-bin) counts at once.
    acc_s, f1_s, ece_s, prec_s, rec_s = [], [], [], [], []
    for idx in _boot_indices(n, n_boot, seed, confidence):
        b = len(idx)
        yb, pb, cb, kb = y[idx], pred[idx], correct[idx], bins[idx]
        off_c = (np.arange(b) * c)[:, None]
        off_k = (np.arange(b) * n_bins)[:, None]
        sup_b = np.bincount((yb + off_c).ravel(), minlength=b * c).reshape(b, c)
        pre_b = np.bincount((pb + off_c).ravel(), minlength=b * c).reshape(b, c)
        tp_b = np.bincount((yb + off_c).ravel(), weights=cb.ravel(), minlength=b * c).reshape(b, c)
        p_b, r_b, _, mf1_b = _per_class(tp_b, sup_b, pre_b)
        bin_keys = (kb + off_k).ravel()
        acc_bin = np.bincount(bin_keys, weights=cb.ravel(), minlength=b * n_bins)
        conf_bin = np.bincount(bin_keys, weights=conf[idx].ravel(), minlength=b * n_bins)
        acc_s.append(cb.mean(axis=1))
        f1_s.append(mf1_b)
        ece_s.append(np.abs(acc_bin - conf_bin).reshape(b, n_bins).sum(axis=1) / n)
        prec_s.append(p_b)
        rec_s.append(r_b)

    acc_ci, f1_ci, ece_ci, prec_ci, rec_ci = (  # (2,) each, or (2, C) per class
        _interval(np.concatenate(s), confidence) for s in (acc_s, f1_s, ece_s, prec_s, rec_s))

    per_class = {
        str(name): {
            "precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]),
            "support": int(support[j]),
            "precision_ci": prec_ci[:, j].tolist(), "recall_ci": rec_ci[:, j].tolist(),
        }
        for j, name in enumerate(classes)
    }
    return {
        "n": int(n),
        "accuracy": float(correct.mean()), "accuracy_ci": acc_ci.tolist(),
        "macro_f1": float(macro_f1), "macro_f1_ci": f1_ci.tolist(),
        "ece": ece, "ece_ci": ece_ci.tolist(),
        "log_loss": log_loss,
        "per_class": per_class,
        "confusion_matrix": cm.astype(int).tolist(),  # rows true, columns predicted
        "classes": [str(x) for x in classes],
        "n_boot": int(n_boot), "confidence": float(confidence),
        "majority_class": str(classes[int(support.argmax())]), "majority_rate": float(support.max() / n),
    }


def majority_note(test: dict, who: str | None = None) -> list[str]:
    """``[note]`` when the accuracy of ``test`` (:func:`classification_metrics`) is below its
    ``majority_rate`` (always answering the most frequent test class would have scored more), else
    ``[]``; ``who`` names the model in the note.  Metrics without the keys (other tasks) give ``[]``."""
    if "majority_rate" not in test or test["accuracy"] >= test["majority_rate"]:
        return []
    return [f"{who or 'the model'}: test accuracy {test['accuracy']:.3f} is below the majority-class rate "
            f"{test['majority_rate']:.3f} (always answering {test['majority_class']!r} would score that on these "
            "test items)"]


def paired_gain(
    y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, *,
    n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
) -> dict:
    """Accuracy of A minus accuracy of B on the same test items, with a paired bootstrap CI.

    Both models are scored on the same resampled items in each replicate, so the item-to-item
    difficulty they share cancels out and the interval is much tighter than comparing two
    independent intervals.

    Args:
        y_true: ``(N,)`` int class indices.
        pred_a: ``(N,)`` int predictions of model A.
        pred_b: ``(N,)`` int predictions of model B.
        n_boot: bootstrap replicates.
        seed: seed of the bootstrap.
        confidence: level of the interval.

    Returns:
        ``{"gain": float, "gain_ci": [lo, hi], "n_boot": int}``; gain in [-1, 1].
    """
    y, a, b = (_check_labels(v, k) for v, k in
               ((y_true, "y_true"), (pred_a, "pred_a"), (pred_b, "pred_b")))
    if not len(y) == len(a) == len(b):
        raise ValueError(f"lengths differ: y_true {len(y)}, pred_a {len(a)}, pred_b {len(b)}")
    if len(y) == 0:
        raise ValueError("cannot compare on an empty test set")
    # Per-item difference in correctness, in {-1, 0, 1}: the gain is its mean.
    diff = (a == y).astype(np.int8) - (b == y).astype(np.int8)
    boots = _boot_indices(len(y), n_boot, seed, confidence)
    samples = np.concatenate([diff[idx].mean(axis=1) for idx in boots])
    return {"gain": float(diff.mean()), "gain_ci": _interval(samples, confidence).tolist(),
            "n_boot": int(n_boot)}


def _points(x: float) -> str:
    """A proportion as signed percentage points with one decimal, never "-0.0"."""
    r = round(100 * x, 1)
    return f"{r + 0.0:+.1f}" if r != 0 else "+0.0"


def transfer_verdict(
    y_true: np.ndarray, pred_transfer: np.ndarray, control_preds: dict[str, np.ndarray], *,
    n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
) -> dict:
    """Did transfer help? Compares the transfer model with the best control on the test set.

    The best control is the one with the highest test accuracy (ties go to the first in
    ``control_preds`` order).  Picking the winner on the same test set favours the control
    (its accuracy is the maximum of several noisy estimates, so it is biased upwards): the
    comparison is conservative, against transfer.  A "helped" verdict can therefore be trusted
    as stated, while a "hurt" verdict with controls close to each other deserves a second look.

    The verdict is "helped" if the whole paired-bootstrap interval of the gain is above 0,
    "hurt" (negative transfer) if it is wholly below 0, else "no-difference".  Every control
    is compared on the same bootstrap resamples (same ``seed``).

    Args:
        y_true: ``(N,)`` int class indices.
        pred_transfer: ``(N,)`` int predictions of the transfer model.
        control_preds: control name -> ``(N,)`` int predictions; at least one.
        n_boot: bootstrap replicates.
        seed: seed of the bootstrap.
        confidence: level of the intervals.

    Returns:
        ``{"control": {"name", "accuracy"}, "controls": {name: {"accuracy", "gain",
        "gain_ci"}}, "transfer_gain", "transfer_gain_ci", "verdict", "explanation",
        "confidence"}``; gains are accuracy differences (transfer minus control) in [-1, 1].
    """
    if not control_preds:
        raise ValueError("transfer_verdict needs at least one control")
    y = _check_labels(y_true, "y_true")
    transfer_correct = _check_labels(pred_transfer, "pred_transfer") == y
    controls, correct = {}, {}
    for name, pred in control_preds.items():
        name = str(name)
        pred = _check_labels(pred, f"control_preds[{name!r}]")
        if len(pred) != len(y):
            raise ValueError(f"control {name!r} has {len(pred)} predictions for {len(y)} items")
        correct[name] = pred == y
        g = paired_gain(y, pred_transfer, pred, n_boot=n_boot, seed=seed, confidence=confidence)
        controls[name] = {
            "accuracy": float(np.mean(correct[name])),
            "gain": g["gain"],
            "gain_ci": g["gain_ci"],
        }
    # max() keeps the first of equal keys, which gives the documented tie rule.
    best = max(controls, key=lambda k: controls[k]["accuracy"])
    best_correct = correct[best]
    gain, (lo, hi) = controls[best]["gain"], controls[best]["gain_ci"]
    level = f"{100 * confidence:g}%"
    ci_text = f"{level} CI [{_points(lo)}, {_points(hi)}]"
    if lo > 0:
        verdict = "helped"
        explanation = (
            f"Transfer helped: {_points(gain)} points of accuracy over the best control "
            f"({best}), {ci_text}."
        )
    elif hi < 0:
        verdict = "hurt"
        explanation = (
            f"Transfer hurt (negative transfer): {_points(gain)} points of accuracy against the "
            f"best control ({best}), {ci_text}; the control alone does better on this data."
        )
    elif np.array_equal(transfer_correct, best_correct):
        verdict = "no-difference"
        explanation = (
            f"Transfer made no difference: the transfer model and the best control ({best}) "
            f"get exactly the same test items right (gain {_points(gain)} points, {ci_text})."
        )
    else:
        verdict = "no-difference"
        explanation = (
            f"No clear difference: {_points(gain)} points of accuracy against the best control "
            f"({best}), but the {ci_text} includes zero: any real difference is too small for "
            f"this test set to detect, so transfer neither clearly helped nor clearly hurt."
        )
    return {
        "control": {"name": best, "accuracy": controls[best]["accuracy"]},
        "controls": controls,
        "transfer_gain": gain,
        "transfer_gain_ci": [lo, hi],
        "verdict": verdict,
        "explanation": explanation,
        "confidence": float(confidence),
    }
