"""Drift of what the model answers: are the recent predictions distributed as on the test set?

Input drift (:mod:`transferkit.serve.drift`) watches the backbone's features and does not care
about the task; this watches the predictions, with the test that fits each task, against the
test-set predictions the fit recorded in the model card (``prediction_reference``):

- classification: the predicted class shares, chi-square goodness of fit;
- regression: the distribution of predicted values, two-sample Kolmogorov-Smirnov test;
- multi-label: each label's predicted rate, an exact binomial test per label, Bonferroni-corrected
  over the labels (the smallest p-value times the number of labels).

As for input drift, each test is a test at level ``p_value``; windows overlap, so consecutive
results are correlated.  A change of predictions with no change of inputs means the world's mix
of classes (or values) moved; both together, that the inputs did.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

#: Predicted values of a regression test set kept in the model card, at most this many.
MAX_REFERENCE_VALUES = 500


def prediction_reference(task: str, outputs: np.ndarray, classes: list[str],
                         thresholds: np.ndarray | None = None, seed: int = 0) -> dict[str, Any]:
    """The model card's summary of the test-set predictions, the reference of prediction drift.

    Args:
        task: ``"classification"``, ``"regression"`` or ``"multi-label"``.
        outputs: the test set's outputs: ``(N, C)`` probabilities, ``(N,)`` values, or ``(N, L)``
            per-label probabilities.
        classes: class names (label names for multi-label; ``[]`` for regression).
        thresholds: multi-label ``(L,)`` decision thresholds.
        seed: seeds the sample of regression values (when N > ``MAX_REFERENCE_VALUES``).

    Returns:
        JSON-shaped: ``task`` and ``n``; ``names`` (classes or labels) with the items predicted
        as each (``counts``, classification) or with each label (``positives``, multi-label); or
        ``values``, a sorted sample of predicted values (regression).  Lists, not mappings: the
        order is that of the model's output columns whatever a JSON writer does with keys.
    """
    out = np.asarray(outputs, dtype=np.float64)
    ref: dict[str, Any] = {"task": task, "n": int(len(out))}
    if task == "regression":
        idx = np.random.default_rng(seed).permutation(len(out))[:MAX_REFERENCE_VALUES]
        ref["values"] = sorted(float(f"{v:.6g}") for v in out[idx])
    elif task == "multi-label":
        ref["names"] = list(classes)
        ref["positives"] = [int(k) for k in _decide_labels(out, thresholds).sum(axis=0)]
    else:
        ref["names"] = list(classes)
        ref["counts"] = [int(k) for k in np.bincount(out.argmax(axis=1), minlength=len(classes))]
    return ref


def _decide_labels(out: np.ndarray, thresholds: np.ndarray | None) -> np.ndarray:
    t = 0.5 if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    return out >= t


def ring_rows(buf: np.ndarray, written: int, window: int) -> np.ndarray:
    """The rows of a ring buffer ``buf (window, ...)`` after ``written`` rows in all, oldest
    first: ``(min(written, window), ...)``, a copy."""
    n = min(written, window)
    start = written % window if written >= window else 0
    return np.roll(buf, -start, axis=0)[:n].copy()


class PredictionDrift:
    """A window of recent predictions and the task's test against the test-set predictions.

    Args:
        reference: the card's ``prediction_reference`` (``None``: off, with a reason).
        thresholds: multi-label decision thresholds ``(L,)``.
        window: recent items kept.
        min_items: no test before the window holds this many items.
        p_value: alarm threshold.
    """

    def __init__(self, reference: dict[str, Any] | None, *, thresholds: np.ndarray | None = None,
                 window: int = 200, min_items: int = 50, p_value: float = 0.01):
        self.ref = reference or None
        self.thresholds = thresholds
        self.window, self.min_items, self.p_threshold = window, min_items, p_value
        self.enabled = bool(self.ref) and int(self.ref.get("n", 0)) >= 2
        self.reason = None if self.enabled else (
            "this run's model card has no test-set predictions to compare with (runs fitted before prediction "
            "drift monitoring, or without a test set); re-run the fit to get them")
        self.task = self.ref["task"] if self.enabled else None
        self.names = list(self.ref.get("names") or []) if self.enabled else []
        width = len(self.names) if self.task == "multi-label" else 1
        self._buf = np.zeros((window, width), dtype=np.float64)
        self._n = 0
        self._lock = threading.Lock()
        self.state: dict[str, Any] = {"statistic": None, "p_value": None, "alarm": False, "tests": 0,
                                      "window_items": 0, "recent": None, "error": None}

    def add(self, outputs: np.ndarray | None) -> None:
        """Add a batch's outputs (as :meth:`Predictor.predict` gives them); each is reduced to
        what the test reads: the predicted class, the value, or the predicted label set."""
        if not self.enabled or outputs is None or not len(outputs):
            return
        out = np.asarray(outputs, dtype=np.float64)
        if self.task == "classification":
            rows = out.argmax(axis=1)[:, None].astype(np.float64)
        elif self.task == "multi-label":
            rows = _decide_labels(out, self.thresholds).astype(np.float64)
        else:
            rows = out.reshape(-1, 1)
        rows = rows[-self.window:]
        with self._lock:
            self._buf[np.arange(self._n, self._n + len(rows)) % self.window] = rows
            self._n += len(rows)

    def items(self) -> int:
        return min(self._n, self.window)

    def recent(self) -> np.ndarray:
        """The window's rows, oldest first: ``(k, 1)`` class indices or values, ``(k, L)`` 0/1."""
        with self._lock:
            return ring_rows(self._buf, self._n, self.window)

    def test_now(self) -> dict[str, Any]:
        """Test the current window (needs ``min_items``); returns the state."""
        x = self.recent()
        if not self.enabled or len(x) < self.min_items:
            return dict(self.state)
        try:
            stat, p, recent = {"classification": self._classes, "regression": self._values,
                               "multi-label": self._labels}[self.task](x)
        except Exception as e:  # a failed test is reported, never fatal
            self.state = dict(self.state, error=f"{type(e).__name__}: {e}")
            return dict(self.state)
        self.state = {"statistic": float(stat), "p_value": float(p), "alarm": bool(p < self.p_threshold),
                      "tests": int(self.state["tests"]) + 1, "window_items": len(x), "recent": recent, "error": None}
        return dict(self.state)

    def _classes(self, x: np.ndarray) -> tuple[float, float, dict]:
        from scipy.stats import chisquare

        counts = np.bincount(x[:, 0].astype(int), minlength=len(self.names)).astype(np.float64)
        ref = np.asarray(self.ref["counts"], dtype=np.float64) + 0.5  # no zero share
        expected = ref / ref.sum() * counts.sum()
        stat, p = chisquare(counts, expected)
        return stat, p, {"shares": dict(zip(self.names, (round(float(c / counts.sum()), 4) for c in counts)))}

    def _values(self, x: np.ndarray) -> tuple[float, float, dict]:
        from scipy.stats import ks_2samp

        r = ks_2samp(x[:, 0], np.asarray(self.ref["values"], dtype=np.float64))
        q = np.quantile(x[:, 0], [0.1, 0.5, 0.9])
        return r.statistic, r.pvalue, {"p10": float(q[0]), "median": float(q[1]), "p90": float(q[2])}

    def _labels(self, x: np.ndarray) -> tuple[float, float, dict]:
        from scipy.stats import binomtest

        n, k = len(x), x.sum(axis=0)
        n_ref = int(self.ref["n"])
        ps, gaps = [], []
        for j in range(len(self.names)):
            # a label never (or always) predicted on the test set: half an item keeps the rate testable
            rate = min(max(self.ref["positives"][j], 0.5), n_ref - 0.5) / n_ref
            ps.append(binomtest(int(k[j]), n, rate).pvalue)
            gaps.append(abs(k[j] / n - rate))
        p = min(1.0, min(ps) * len(ps))
        return max(gaps), p, {"rates": dict(zip(self.names, (round(float(v / n), 4) for v in k)))}

    def describe(self) -> dict[str, Any]:
        """For /metadata: the test, the reference, the latest result."""
        test = {"classification": "chi-square of the predicted class shares",
                "regression": "Kolmogorov-Smirnov of the predicted values",
                "multi-label": "binomial test of each label's predicted rate, Bonferroni over labels"}.get(self.task)
        reference = None
        if self.enabled:
            n = int(self.ref["n"])
            reference = ({"shares": {c: round(k / n, 4) for c, k in zip(self.names, self.ref["counts"])}}
                         if self.task == "classification" else
                         {"rates": {c: round(k / n, 4) for c, k in zip(self.names, self.ref["positives"])}}
                         if self.task == "multi-label" else
                         {"values": len(self.ref["values"]),
                          "median": float(np.median(self.ref["values"]))})
            reference["test_items"] = n
        return {"enabled": self.enabled, "reason": self.reason, "test": test, "reference": reference,
                "window": self.window, "min_items": self.min_items, "p_value_threshold": self.p_threshold,
                **self.state}
