"""Micro-batching: requests wait in a bounded queue; one worker thread merges them into batches
and runs the model.

Bounded in items, not requests: a request that would push the queue over ``queue_items`` is
refused at once (:class:`Overloaded`, answered 503 with ``Retry-After``), so under overload
latency stays bounded and memory does not grow.  So is a request that would wait longer than
``max_wait_s`` behind the items already queued, at the worker's measured rate (a moving
average of items per second of model time): a client that would time out anyway learns it at
once.  A request whose caller gave up (timeout) is dropped before the model sees it.
"""
from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

#: ``run(items) -> (proba (N, C), features (N, D) or None)``
RunFn = Callable[[list[Any]], tuple[np.ndarray, "np.ndarray | None"]]


class Overloaded(Exception):
    """The queue is full: the caller should retry later."""


@dataclass
class _Job:
    items: list[Any]
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """One worker thread over a bounded queue of requests.

    Args:
        run: the model call, see :data:`RunFn`; exceptions it raises go to every request of
            the batch.
        max_batch: items per model call at most (a larger single request runs alone).
        max_delay_s: how long to wait for more requests once one is waiting.
        queue_items: items queued at most.
        max_wait_s: refuse a request whose estimated wait in the queue is longer (``None``: no
            estimate, only the queue bound).
        on_batch: called after each model call with ``(n_items, n_requests, seconds, features)``.
    """

    def __init__(self, run: RunFn, *, max_batch: int, max_delay_s: float, queue_items: int,
                 max_wait_s: float | None = None, on_batch: Callable[[int, int, float, Any], None] | None = None):
        self.run = run
        self.max_wait_s = max_wait_s
        self.items_per_s: float | None = None  # moving average of the worker's rate
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.queue_items = queue_items
        self.on_batch = on_batch
        self._jobs: collections.deque[_Job] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    @property
    def queued_items(self) -> int:
        return self._queued

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="transferkit-serve-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, items: list[Any]) -> Future:
        """Queue ``items``; the future gets ``(proba (N, C), features)``.  Raises :class:`Overloaded`."""
        job = _Job(list(items))
        with self._cond:
            if self._stop:
                raise Overloaded("the server is shutting down")
            if self._queued + len(job.items) > self.queue_items:
                raise Overloaded(f"{self._queued} items are waiting (limit {self.queue_items})")
            rate = self.items_per_s
            if self._queued and rate and self.max_wait_s is not None and self._queued / rate > self.max_wait_s:
                raise Overloaded(f"{self._queued} items are waiting, about {self._queued / rate:.0f} s of work "
                                 f"(limit {self.max_wait_s:g} s)")
            self._jobs.append(job)
            self._queued += len(job.items)
            self._cond.notify()
        return job.future

    def _take(self) -> list[_Job] | None:
        """Block for the first job, then gather more for up to ``max_delay_s`` or ``max_batch`` items."""
        with self._cond:
            while not self._jobs and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            batch, n = [], 0
            deadline = time.monotonic() + self.max_delay_s
            while True:
                while self._jobs and (not batch or n + len(self._jobs[0].items) <= self.max_batch):
                    job = self._jobs.popleft()
                    self._queued -= len(job.items)
                    if job.future.set_running_or_notify_cancel():  # False: the caller gave up
                        batch.append(job)
                        n += len(job.items)
                left = deadline - time.monotonic()
                if n >= self.max_batch or left <= 0 or self._stop or (self._jobs and batch):
                    return batch
                self._cond.wait(left)

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:
                continue
            items = [x for job in batch for x in job.items]
            t = time.perf_counter()
            try:
                proba, feats = self.run(items)
            except BaseException as e:  # noqa: BLE001 - every waiting request gets the error
                for job in batch:
                    job.future.set_exception(e)
                continue
            seconds = time.perf_counter() - t
            rate = len(items) / max(seconds, 1e-6)
            self.items_per_s = rate if self.items_per_s is None else 0.7 * self.items_per_s + 0.3 * rate
            if self.on_batch is not None:  # before the answers: a caller sees its batch recorded
                try:
                    self.on_batch(len(items), len(batch), seconds, feats)
                except Exception:  # noqa: BLE001 - monitoring must never stop the worker
                    pass
            start = 0
            for job in batch:
                k = len(job.items)
                job.future.set_result((proba[start:start + k], None if feats is None else feats[start:start + k]))
                start += k
