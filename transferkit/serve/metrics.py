"""Prometheus metrics in the text exposition format (0.0.4), written by hand: a few counters and
histograms need no dependency.  Thread-safe (the worker thread records batches)."""
from __future__ import annotations

import math
import threading
from collections import defaultdict
from typing import Any

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Cumulative buckets, sum and count, as Prometheus expects."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # last: +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        i = next((k for k, b in enumerate(self.buckets) if v <= b), len(self.buckets))
        self.counts[i] += 1
        self.sum += v
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out, acc = [], 0
        for b, c in zip(self.buckets + (math.inf,), self.counts):
            acc += c
            le = "+Inf" if b == math.inf else _num(b)
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {acc}')
        lab = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{lab} {_num(self.sum)}", f"{name}_count{lab} {self.count}"]
        return out


def _num(v: float | int | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "NaN"
    if isinstance(v, float) and math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if isinstance(v, float) else str(int(v))


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Request counts by endpoint and status, /predict latency, batch sizes, items."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_items = Histogram(BATCH_BUCKETS)
        self.items = 0
        self.batches = 0

    def request(self, endpoint: str, status: int, seconds: float | None = None) -> None:
        with self._lock:
            self.requests[(endpoint, int(status))] += 1
            if seconds is not None:
                self.latency.observe(seconds)

    def batch(self, n_items: int) -> None:
        with self._lock:
            self.batch_items.observe(n_items)
            self.items += n_items
            self.batches += 1

    def render(self, *, queue_items: int, ready: bool, drift: dict[str, Any]) -> str:
        """The whole exposition text, with the gauges given by the caller."""
        p = "transferkit_serve_"
        with self._lock:
            lines = [f"# HELP {p}requests_total HTTP requests by endpoint and status code.",
                     f"# TYPE {p}requests_total counter"]
            for (ep, st), n in sorted(self.requests.items()):
                lines.append(f'{p}requests_total{{endpoint="{_esc(ep)}",status="{st}"}} {n}')
            lines += [f"# HELP {p}predict_latency_seconds Time to answer /predict, queueing included.",
                      f"# TYPE {p}predict_latency_seconds histogram", *self.latency.lines(f"{p}predict_latency_seconds"),
                      f"# HELP {p}batch_items Items per model call (requests merged by the micro-batcher).",
                      f"# TYPE {p}batch_items histogram", *self.batch_items.lines(f"{p}batch_items"),
                      f"# HELP {p}items_total Items predicted.", f"# TYPE {p}items_total counter",
                      f"{p}items_total {self.items}"]
        lines += [f"# HELP {p}queue_items Items waiting for the model.", f"# TYPE {p}queue_items gauge",
                  f"{p}queue_items {queue_items}",
                  f"# HELP {p}ready 1 when the model is loaded and warmed up.", f"# TYPE {p}ready gauge",
                  f"{p}ready {int(ready)}",
                  f"# HELP {p}drift_enabled 1 when the run has reference features to test against.",
                  f"# TYPE {p}drift_enabled gauge", f"{p}drift_enabled {int(bool(drift.get('enabled')))}",
                  f"# HELP {p}drift_statistic Unbiased MMD^2 of the recent window vs training features.",
                  f"# TYPE {p}drift_statistic gauge", f"{p}drift_statistic {_num(drift.get('statistic'))}",
                  f"# HELP {p}drift_p_value Permutation p-value of the latest drift test.",
                  f"# TYPE {p}drift_p_value gauge", f"{p}drift_p_value {_num(drift.get('p_value'))}",
                  f"# HELP {p}drift_alarm 1 while the latest p-value is below the threshold.",
                  f"# TYPE {p}drift_alarm gauge", f"{p}drift_alarm {int(bool(drift.get('alarm')))}",
                  f"# HELP {p}drift_tests_total Drift tests run.", f"# TYPE {p}drift_tests_total counter",
                  f"{p}drift_tests_total {int(drift.get('tests') or 0)}",
                  f"# HELP {p}drift_window_items Items in the window of the latest test.",
                  f"# TYPE {p}drift_window_items gauge", f"{p}drift_window_items {int(drift.get('window_items') or 0)}"]
        return "\n".join(lines) + "\n"
