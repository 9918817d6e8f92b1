"""Drift monitoring: are recent requests still like the training data, in the backbone's space?

The server keeps the pooled features of the last ``window`` request items and, every ``every``
requests, runs the MMD two-sample test (:func:`transferkit.scores.domain.mmd`, Gretton et al.
2012: Gaussian kernel, median-heuristic bandwidth, permutation p-value) of that window against
the run's reference sample of training features.  The test runs on a background thread, never
on a request's path.  The alarm is on while the latest p-value is below the threshold.

Each test is a test at level ``p_value``: on traffic that does match the training data, about
that share of tests still alarm; windows overlap, so consecutive results are correlated.

The same thread tests the recent *predictions* against the test set's, per task
(:class:`~transferkit.serve.prediction_drift.PredictionDrift`): ``describe()["predictions"]``.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from ..scores.domain import mmd
from .prediction_drift import PredictionDrift, ring_rows


class DriftMonitor:
    """A ring buffer of recent embeddings and a background MMD test against a reference.

    Args:
        reference: ``(n, D)`` training features (``None``: drift monitoring off, with a reason).
        window: recent items kept.
        every: test after every this many requests.
        min_items: no test before the window holds this many items.
        p_value: alarm threshold on the permutation p-value.
        n_permutations: permutations of the test.
        seed: seeds subsampling and permutations (each test uses ``seed + test number``).
        predictions: the monitor of the predictions, tested on the same schedule (``None``: off).
    """

    def __init__(self, reference: np.ndarray | None, *, window: int = 200, every: int = 50, min_items: int = 50,
                 p_value: float = 0.01, n_permutations: int = 500, seed: int = 0,
                 predictions: PredictionDrift | None = None):
        self.predictions = predictions if predictions is not None else PredictionDrift(None)
        self.reference = None if reference is None else np.asarray(reference, dtype=np.float32)
        self.window, self.every, self.min_items = window, every, min_items
        self.p_threshold, self.n_permutations, self.seed = p_value, n_permutations, seed
        self.enabled = self.reference is not None and len(self.reference) >= 2
        self.reason = None if self.enabled else (
            "this run has no reference training features (written by transferkit before drift monitoring; "
            "re-run the fit to get them)")
        dim = self.reference.shape[1] if self.enabled else 0
        self._buf = np.zeros((window, dim), dtype=np.float32)
        self._n = 0  # items ever added
        self._requests_since = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.state: dict[str, Any] = {"statistic": None, "p_value": None, "alarm": False, "tests": 0,
                                      "window_items": 0, "last_test_unix": None, "last_test_seconds": None,
                                      "error": None}

    def start(self) -> None:
        if self.enabled or self.predictions.enabled:
            self._thread = threading.Thread(target=self._loop, name="transferkit-serve-drift", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()

    def add(self, feats: np.ndarray | None, n_requests: int = 1, outputs: np.ndarray | None = None) -> None:
        """Add ``feats (k, D)`` and the task's ``outputs`` of ``n_requests`` requests; wakes the
        tester every ``every`` requests."""
        self.predictions.add(outputs)
        have_feats = self.enabled and feats is not None and len(feats)
        if not have_feats and not self.predictions.enabled:
            return
        with self._lock:
            if have_feats:
                feats = np.asarray(feats, dtype=np.float32)[-self.window:]
                pos = np.arange(self._n, self._n + len(feats)) % self.window
                self._buf[pos] = feats
                self._n += len(feats)
            self._requests_since += n_requests
            ready = max(min(self._n, self.window), self.predictions.items())
            due = self._requests_since >= self.every and ready >= self.min_items
            if due:
                self._requests_since = 0
        if due:
            self._wake.set()

    def recent(self) -> np.ndarray:
        """The window's items ``(min(n, window), D)``, oldest first."""
        with self._lock:
            return ring_rows(self._buf, self._n, self.window)

    def test_now(self) -> dict[str, Any]:
        """Run the tests on the current windows (the background thread calls this); returns the
        state of the input test."""
        self.predictions.test_now()
        x = self.recent()
        if len(x) < self.min_items:
            return dict(self.state)
        t = time.perf_counter()
        try:
            r = mmd(self.reference, x, n_permutations=self.n_permutations, max_items=1000,
                    seed=self.seed + int(self.state["tests"]))
        except Exception as e:  # a failed test is reported, never fatal
            self.state = dict(self.state, error=f"{type(e).__name__}: {e}")
            return dict(self.state)
        self.state = {"statistic": float(r.mmd2), "p_value": float(r.p_value),
                      "alarm": bool(r.p_value < self.p_threshold), "tests": int(self.state["tests"]) + 1,
                      "window_items": len(x), "last_test_unix": time.time(),
                      "last_test_seconds": round(time.perf_counter() - t, 4), "error": None}
        return dict(self.state)

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            self.test_now()

    def describe(self) -> dict[str, Any]:
        """For /metadata: settings, the latest result, and the reading of the alarm."""
        return {"enabled": self.enabled, "reason": self.reason, "test": "MMD (Gaussian kernel, median bandwidth), "
                "permutation p-value, window of recent requests vs training sample",
                "window": self.window, "every_requests": self.every, "min_items": self.min_items,
                "p_value_threshold": self.p_threshold, "n_permutations": self.n_permutations,
                "reference_items": 0 if self.reference is None else int(len(self.reference)),
                "items_seen": self._n, **self.state, "predictions": self.predictions.describe()}
