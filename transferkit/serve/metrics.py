"""Prometheus metrics of one app, through ``prometheus_client``.

Each app has its own registry (never the process-wide default one), so several apps in one
process (tests, benchmarks) keep their counts apart.  Counters and histograms are recorded as
things happen (thread-safe: the worker thread records batches); the queue, readiness and drift
gauges are read from the app's state at scrape time by a collector.
"""
from __future__ import annotations

from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PREFIX = "transferkit_serve_"

#: ``() -> {"queue_items": int, "queue_cost": float, "ready": bool, "saturated": bool,
#: "drift": DriftMonitor.describe()}``
StateFn = Callable[[], dict[str, Any]]


class _StateCollector(Collector):
    """The gauges that are the app's state rather than counts of events."""

    def __init__(self, state: StateFn):
        self.state = state

    def collect(self):
        s = self.state()
        drift = s.get("drift") or {}

        def gauge(name: str, doc: str, value: Any) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, doc, value=float("nan") if value is None else float(value))

        yield gauge("queue_items", "Items waiting for the model.", s.get("queue_items", 0))
        yield gauge("queue_cost", "Work waiting for the model: characters of text or pixels of images.",
                    s.get("queue_cost", 0))
        yield gauge("ready", "1 when the model is loaded and warmed up.", int(bool(s.get("ready"))))
        yield gauge("saturated", "1 while the queue is (nearly) full: readiness answers 503.",
                    int(bool(s.get("saturated"))))
        yield gauge("drift_enabled", "1 when the run has reference features to test against.",
                    int(bool(drift.get("enabled"))))
        yield gauge("drift_statistic", "Unbiased MMD^2 of the recent window vs training features.",
                    drift.get("statistic"))
        yield gauge("drift_p_value", "Permutation p-value of the latest drift test.", drift.get("p_value"))
        yield gauge("drift_alarm", "1 while the latest p-value is below the threshold.", int(bool(drift.get("alarm"))))
        yield CounterMetricFamily(PREFIX + "drift_tests", "Drift tests run.", value=int(drift.get("tests") or 0))
        yield gauge("drift_window_items", "Items in the window of the latest test.",
                    int(drift.get("window_items") or 0))
        cache = s.get("cache") or {}
        yield CounterMetricFamily(PREFIX + "cache_hits", "Items answered from the output cache (same content as a "
                                  "recent item).", value=int(cache.get("hits") or 0))
        yield CounterMetricFamily(PREFIX + "cache_misses", "Items looked up in the output cache and run through the "
                                  "model.", value=int(cache.get("misses") or 0))


class Metrics:
    """Request counts by endpoint and status, /predict latency, batch sizes, items; plus the
    state gauges that ``state`` gives at each scrape."""

    def __init__(self, state: StateFn | None = None) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(PREFIX + "requests", "HTTP requests by endpoint and status code.",
                                 ["endpoint", "status"], registry=self.registry)
        self._latency = Histogram(PREFIX + "predict_latency_seconds", "Time to answer /predict, queueing included.",
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self._batch_items = Histogram(PREFIX + "batch_items", "Items per model call (requests merged by the "
                                      "micro-batcher).", buckets=BATCH_BUCKETS, registry=self.registry)
        self._items = Counter(PREFIX + "items", "Items predicted.", registry=self.registry)
        self._retries = Counter(PREFIX + "batch_retries", "Model calls that failed and were run again one request "
                                "at a time.", registry=self.registry)
        if state is not None:
            self.registry.register(_StateCollector(state))

    def request(self, endpoint: str, status: int, seconds: float | None = None) -> None:
        self._requests.labels(endpoint=endpoint, status=str(int(status))).inc()
        if seconds is not None:
            self._latency.observe(seconds)

    def batch(self, n_items: int) -> None:
        self._batch_items.observe(n_items)
        self._items.inc(n_items)

    def retried(self) -> None:
        self._retries.inc()

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition in the format the scraper's ``Accept`` header asks for (the classic
        text format by default) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
