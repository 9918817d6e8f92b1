"""Micro-batching: requests wait in a bounded queue; one worker thread merges them into batches
and runs the model.

Bounded in items and in estimated cost (characters of text, pixels of images, given per item
by the caller): a request that would push the queue over ``queue_items`` or ``queue_cost`` is
refused at once (:class:`Overloaded`, answered 503 with ``Retry-After``), so under overload
latency stays bounded and memory does not grow.  So is a request that would not be answered
within ``max_wait_s``, at the worker's measured rate (a moving average of cost per second of
model time): a client that would time out anyway learns it at once.

Batches are bounded in items and in cost, and requests take turns: each batch takes the next
slice of every waiting request in order, and a request with items left goes to the back.  A
large request is run in several model calls, so it delays a small one by one slice at most,
and a request whose caller gave up (timeout, disconnect) is dropped between slices.

If a model call fails, the requests merged into it are run again one by one, so that only
the one that caused the failure gets the error.
"""
from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np

#: ``run(items) -> (outputs (N, ...), features (N, D) or None)``: the task's outputs, split along items
RunFn = Callable[[list[Any]], tuple[np.ndarray, "np.ndarray | None"]]


class Overloaded(Exception):
    """The queue is full: the caller should retry later."""


class Abandoned(Exception):
    """Set on a request's future once its caller gave up while it was running."""


class JobFuture(Future):
    """The future of one request.  ``cancel()`` also abandons a request that is already
    running: its slices not yet run are dropped (a plain ``Future`` cannot be cancelled once
    running)."""

    def __init__(self) -> None:
        super().__init__()
        self._on_cancel: Callable[[], None] | None = None

    def cancel(self) -> bool:
        cancelled = super().cancel()
        if self._on_cancel is not None:
            self._on_cancel()
        return cancelled


class _Job:
    """One request: its items, their costs, how far the worker got and the slices' results."""

    def __init__(self, items: list[Any], costs: list[float]):
        self.items, self.costs = items, costs
        self.future = JobFuture()
        self.taken = 0  # items handed to a batch so far
        self.cost_left = float(sum(costs))  # of the items not taken yet
        self.results: list[tuple[np.ndarray, Any]] = []
        self.started = False
        self.finished = False  # answered, failed or abandoned: nothing more is run for it


class MicroBatcher:
    """One worker thread over a bounded queue of requests.

    Args:
        run: the model call, see :data:`RunFn`.
        max_batch: items per model call at most.
        max_delay_s: how long to wait for more requests once one is waiting.
        queue_items: items queued at most.
        queue_cost: cost queued at most (``None``: no bound); an empty queue takes any request.
        max_batch_cost: cost per model call at most (``None``: no bound); a single costlier
            item runs alone.
        max_wait_s: refuse a request whose estimated time to an answer is longer (``None``: no
            estimate, only the queue bounds).
        on_batch: called after each model call with ``(n_items, n_requests, seconds, features,
            outputs)`` (the drift monitor reads the last two).
        on_retry: called with ``n_requests`` when a model call failed and its requests are run
            again one by one.
    """

    def __init__(self, run: RunFn, *, max_batch: int, max_delay_s: float, queue_items: int,
                 queue_cost: float | None = None, max_batch_cost: float | None = None,
                 max_wait_s: float | None = None, on_batch: Callable[[int, int, float, Any, Any], None] | None = None,
                 on_retry: Callable[[int], None] | None = None, one_request_per_call: bool = False):
        self.run = run
        #: each model call holds one request's slice only (a model that adapts on the items it is given)
        self.one_request_per_call = one_request_per_call
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.queue_items = queue_items
        self.queue_cost = queue_cost
        self.max_batch_cost = max_batch_cost
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self.on_retry = on_retry
        self.cost_per_s: float | None = None  # moving average of the worker's rate
        self._jobs: collections.deque[_Job] = collections.deque()  # with items not yet taken
        self._queued = 0
        self._queued_cost = 0.0
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    @property
    def queued_items(self) -> int:
        return self._queued

    @property
    def queued_cost(self) -> float:
        return self._queued_cost

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="transferkit-serve-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ admission
    def submit(self, items: list[Any], costs: list[float] | None = None) -> JobFuture:
        """Queue ``items`` (``costs``: one per item, default 1); the future gets
        ``(outputs, features)``.  Raises :class:`Overloaded`."""
        job = _Job(list(items), [1.0] * len(items) if costs is None else [float(c) for c in costs])
        if not job.items or len(job.costs) != len(job.items):
            raise ValueError("a request needs items, and one cost per item")
        with self._cond:
            if self._stop:
                raise Overloaded("the server is shutting down")
            if self._queued + len(job.items) > self.queue_items:
                raise Overloaded(f"{self._queued} items are waiting (limit {self.queue_items})")
            if self._jobs and self.queue_cost is not None and self._queued_cost + job.cost_left > self.queue_cost:
                raise Overloaded(f"{self._queued_cost:,.0f} units of work are waiting (limit {self.queue_cost:,.0f})")
            wait = self._wait_s(job.cost_left)
            if self._jobs and wait is not None and self.max_wait_s is not None and wait > self.max_wait_s:
                raise Overloaded(f"an answer would take about {wait:.0f} s with the work waiting "
                                 f"(limit {self.max_wait_s:g} s)")
            job.future._on_cancel = lambda: self._abandon(job)
            self._jobs.append(job)
            self._queued += len(job.items)
            self._queued_cost += job.cost_left
            self._cond.notify()
        return job.future

    def _wait_s(self, cost: float) -> float | None:
        """Seconds until a request of ``cost`` would be answered: requests take turns, so each
        one waiting delays it by at most as much work as it needs itself."""
        rate = self.cost_per_s
        if not rate:
            return None
        turn = max(cost, self.max_batch_cost or 0.0)
        return (cost + sum(min(j.cost_left, turn) for j in self._jobs)) / rate

    def saturation(self) -> str | None:
        """Why the queue is (nearly) full, or ``None``: readiness reports it, so that a load
        balancer sends new work elsewhere."""
        with self._cond:
            if self._queued >= 0.9 * self.queue_items:
                return f"{self._queued} items are waiting (limit {self.queue_items})"
            if self.queue_cost is not None and self._queued_cost >= 0.9 * self.queue_cost:
                return f"{self._queued_cost:,.0f} units of work are waiting (limit {self.queue_cost:,.0f})"
            wait = self._wait_s(0.0) if self._jobs else None
            if wait is not None and self.max_wait_s is not None and wait >= self.max_wait_s:
                return f"the work waiting takes about {wait:.0f} s (limit {self.max_wait_s:g} s)"
        return None

    def _abandon(self, job: _Job) -> None:
        """The caller gave up: drop what is left of the request (called from the caller's thread)."""
        with self._cond:
            if job.finished:
                return
            self._finish(job)
        if not job.future.done():
            try:
                job.future.set_exception(Abandoned("the caller gave up"))
            except Exception:  # it was answered in the meantime
                pass

    def _finish(self, job: _Job) -> None:
        """Take ``job`` out of the queue (the lock is held)."""
        job.finished = True
        try:
            self._jobs.remove(job)
            self._queued -= len(job.items) - job.taken
            self._queued_cost -= job.cost_left
        except ValueError:
            pass  # every item was taken already
        self._cond.notify_all()

    # ------------------------------------------------------------------ the worker
    def _take(self) -> list[tuple[_Job, int, int]] | None:
        """Block for the first request, then gather slices for up to ``max_delay_s``, up to
        ``max_batch`` items and ``max_batch_cost``: ``[(job, start, end), ...]``."""
        with self._cond:
            while not self._jobs and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            batch: list[tuple[_Job, int, int]] = []
            n, cost = 0, 0.0
            deadline = time.monotonic() + self.max_delay_s
            while True:
                for _ in range(len(self._jobs)):  # each waiting request once, in turn
                    job = self._jobs[0]
                    if not job.started:
                        if not job.future.set_running_or_notify_cancel():  # cancelled while waiting
                            self._finish(job)
                            continue
                        job.started = True
                    start = end = job.taken
                    while end < len(job.items) and n < self.max_batch and (
                            n == 0 or self.max_batch_cost is None or cost + job.costs[end] <= self.max_batch_cost):
                        n, cost = n + 1, cost + job.costs[end]
                        end += 1
                    if end == start:
                        break  # the batch is full
                    part = sum(job.costs[start:end])
                    job.taken, job.cost_left = end, job.cost_left - part
                    self._queued, self._queued_cost = self._queued - (end - start), self._queued_cost - part
                    batch.append((job, start, end))
                    self._jobs.popleft()
                    if end < len(job.items):
                        self._jobs.append(job)  # the rest takes its turn after the others
                full = n >= self.max_batch or (self.max_batch_cost is not None and cost >= self.max_batch_cost)
                left = deadline - time.monotonic()
                if full or left <= 0 or self._stop or (self._jobs and batch):
                    return batch
                self._cond.wait(left)

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            with self._cond:
                batch = [s for s in batch if not s[0].finished]  # given up during the wait
            if batch:
                self._run(batch)

    def _run(self, batch: list[tuple[_Job, int, int]]) -> None:
        if self.one_request_per_call and len(batch) > 1:
            for s in batch:
                self._run([s])
            return
        items = [x for job, a, b in batch for x in job.items[a:b]]
        t = time.perf_counter()
        try:
            proba, feats = self.run(items)
        except BaseException as e:  # retried one request at a time, below
            if len(batch) == 1:
                self._fail(batch[0][0], e)
                return
            if self.on_retry is not None:
                try:
                    self.on_retry(len(batch))
                except Exception:  # monitoring must never stop the worker
                    pass
            for s in batch:  # only the request that breaks the model gets the error
                self._run([s])
            return
        seconds = time.perf_counter() - t
        cost = sum(sum(job.costs[a:b]) for job, a, b in batch)
        rate = cost / max(seconds, 1e-6)
        self.cost_per_s = rate if self.cost_per_s is None else 0.7 * self.cost_per_s + 0.3 * rate
        if self.on_batch is not None:  # before the answers: a caller sees its batch recorded
            try:
                self.on_batch(len(items), len(batch), seconds, feats, proba)
            except Exception:  # monitoring must never stop the worker
                pass
        at = 0
        for job, a, b in batch:
            k = b - a
            self._deliver(job, b, proba[at:at + k], None if feats is None else feats[at:at + k])
            at += k

    def _deliver(self, job: _Job, end: int, proba: np.ndarray, feats: Any) -> None:
        with self._cond:
            if job.finished:
                return  # abandoned while its slice ran
            job.results.append((proba, feats))
            if end < len(job.items):
                return
            job.finished = True
        probas = [p for p, _ in job.results]
        all_feats = None if any(f is None for _, f in job.results) else np.concatenate([f for _, f in job.results])
        if not job.future.done():
            job.future.set_result((probas[0] if len(probas) == 1 else np.concatenate(probas), all_feats))

    def _fail(self, job: _Job, e: BaseException) -> None:
        with self._cond:
            if job.finished:
                return
            self._finish(job)
        if not job.future.done():
            job.future.set_exception(e)
