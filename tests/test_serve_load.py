"""Denial of service within the default limits (issue #26-7): a queue bounded by cost, requests
taking turns, abandoned work dropped, readiness that reports a saturated queue, decoded pixels
bounded per request and per model call, idle and excess connections closed."""
from __future__ import annotations

import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs pip install 'transferkit[serve]'")
httpx = pytest.importorskip("httpx", reason="needs pip install 'transferkit[serve]'")
import test_serve  # noqa: E402
from PIL import Image  # noqa: E402
from test_serve import GOOD, Served, Slow, assert_healthy, wait_ready  # noqa: E402

from transferkit.serve.batcher import MicroBatcher, Overloaded  # noqa: E402
from transferkit.serve.predictor import Predictor  # noqa: E402

# the module's fixtures, shared (an assignment, so that tests taking them shadow nothing)
image_run = test_serve.image_run
text_run = test_serve.text_run


def _recording_run(calls: list, hook=None):
    def run(items):
        calls.append(list(items))
        if hook is not None:
            hook(len(calls))
        return np.array([[1.0, 0.0]] * len(items)), np.zeros((len(items), 3))
    return run


# ----------------------------------------------------------------------------- the batcher
def test_a_large_request_takes_turns_with_small_ones():
    """Slices bounded by cost: a small request waits for one slice of the large one, not all of it."""
    calls: list = []
    b = MicroBatcher(_recording_run(calls), max_batch=32, max_delay_s=0.0, queue_items=64, max_batch_cost=20)
    big = b.submit([f"big{i}" for i in range(10)], costs=[10] * 10)
    small = b.submit(["small"], costs=[10])
    b.start()
    try:
        proba, feats = big.result(10)
        assert proba.shape == (10, 2) and feats.shape == (10, 3)
        assert small.result(10)[0].shape == (1, 2)
    finally:
        b.stop()
    assert calls[0] == ["big0", "big1"] and calls[1] == ["small", "big2"], calls
    assert [x for c in calls for x in c if x.startswith("big")] == [f"big{i}" for i in range(10)]  # in order
    assert all(len(c) <= 2 for c in calls)


def test_the_queue_is_bounded_by_cost_and_an_empty_queue_takes_any_request():
    b = MicroBatcher(_recording_run([]), max_batch=8, max_delay_s=0.0, queue_items=100, queue_cost=1_000)
    b.submit(["huge"], costs=[5_000])  # nothing waiting: taken, whatever its cost
    with pytest.raises(Overloaded, match="units of work are waiting"):
        b.submit(["x"], costs=[10])
    b = MicroBatcher(_recording_run([]), max_batch=8, max_delay_s=0.0, queue_items=100, queue_cost=1_000)
    b.submit(["a"] * 3, costs=[300] * 3)
    with pytest.raises(Overloaded):
        b.submit(["b"] * 2, costs=[300] * 2)
    b.submit(["c"], costs=[100])  # exactly at the bound
    assert b.queued_cost == 1_000 and b.queued_items == 4
    assert "units of work" in b.saturation()


def test_a_request_given_up_is_dropped_even_while_it_runs():
    calls: list = []
    futures: list = []
    b = MicroBatcher(_recording_run(calls, hook=lambda n: futures[0].cancel() if n == 1 else None), max_batch=2,
                     max_delay_s=0.0, queue_items=64)
    futures.append(b.submit(list(range(10))))
    other = b.submit(["other"])
    b.start()
    try:
        assert other.result(10)[0].shape == (1, 2)
        time.sleep(0.2)  # let the worker go on, if it were to
    finally:
        b.stop()
    assert calls == [[0, 1], ["other"]], calls  # 8 items of the abandoned request never ran
    assert b.queued_items == 0 and b.queued_cost == 0


def test_a_cancelled_waiting_request_frees_the_queue_at_once():
    b = MicroBatcher(_recording_run([]), max_batch=8, max_delay_s=0.0, queue_items=4)  # worker not started
    f = b.submit(["a", "b", "c", "d"])
    with pytest.raises(Overloaded):
        b.submit(["e"])
    assert f.cancel()
    assert b.queued_items == 0
    b.submit(["e"])


# ----------------------------------------------------------------------------- the server
def test_readiness_reports_a_saturated_queue(text_run):
    gate = threading.Event()
    slow = Slow(Predictor(text_run), gate=gate)
    with Served(text_run, predictor=slow, warmup=False, max_items=2, queue_items=4, max_batch=2) as c:
        url = str(c.base_url)

        def post(i):
            with httpx.Client(base_url=url, timeout=30) as k:
                return k.post("/predict", json={"texts": [f"free cash {i}", "meeting"]}).status_code

        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(post, 0)  # taken by the worker, which waits for the gate
            t0 = time.monotonic()
            while c.get("/metrics").text.find("transferkit_serve_queue_items 0.0") < 0 and time.monotonic() - t0 < 10:
                time.sleep(0.01)
            rest = [pool.submit(post, i) for i in (1, 2)]  # 4 items wait: the queue is full
            t0 = time.monotonic()
            while c.get("/health/ready").status_code == 200:
                assert time.monotonic() - t0 < 20, "readiness never reported the full queue"
                time.sleep(0.01)
            r = c.get("/health/ready")
            assert r.json()["status"] == "saturated" and "retry-after" in r.headers
            assert "transferkit_serve_saturated 1.0" in c.get("/metrics").text
            gate.set()
            assert [first.result(30)] + [f.result(30) for f in rest] == [200, 200, 200]
        wait_ready(c, 20)
        assert_healthy(c, GOOD)


def test_work_of_a_client_that_disconnects_is_never_computed(text_run):
    gate = threading.Event()
    seen: list = []

    class Recording(Slow):
        def predict(self, items):
            seen.extend(items)
            return super().predict(items)

    with Served(text_run, predictor=Recording(Predictor(text_run), gate=gate), warmup=False) as c:
        url = str(c.base_url)
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(lambda: httpx.post(f"{url}/predict", json={"texts": ["first"]}, timeout=30).status_code)
            t0 = time.monotonic()
            while "first" not in seen:
                assert time.monotonic() - t0 < 10
                time.sleep(0.01)
            with pytest.raises(httpx.TimeoutException):  # gives up and closes its connection
                httpx.post(f"{url}/predict", json={"texts": ["gone"]}, timeout=0.5)
            t0 = time.monotonic()
            while "transferkit_serve_queue_items 0.0" not in c.get("/metrics").text:
                assert time.monotonic() - t0 < 10, "the gone client's items stayed in the queue"
                time.sleep(0.01)
            gate.set()
            assert first.result(30) == 200
        assert c.post("/predict", json={"texts": ["after"]}).status_code == 200
        assert "gone" not in seen and "after" in seen
        assert 'status="499"' in c.get("/metrics").text


def test_idle_connections_are_closed(text_run):
    with Served(text_run, keep_alive_s=0.3) as c:
        host, port = c.base_url.host, c.base_url.port
        with socket.create_connection((host, port), timeout=20) as s:  # connects, never sends a byte
            assert s.recv(1) == b""  # closed by the server (a timeout here raises instead)
        assert_healthy(c, GOOD)


def test_connections_beyond_the_limit_get_503(text_run):
    with Served(text_run, max_connections=3, keep_alive_s=30) as c:
        url = str(c.base_url)
        idle = [socket.create_connection((c.base_url.host, c.base_url.port), timeout=20) for _ in range(3)]
        try:
            time.sleep(0.2)  # let the server accept them
            r = httpx.get(f"{url}/health/live", timeout=10)
            assert r.status_code == 503
        finally:
            for s in idle:
                s.close()
        t0 = time.monotonic()
        while httpx.get(f"{url}/health/live", timeout=10).status_code != 200:
            assert time.monotonic() - t0 < 10
            time.sleep(0.05)


def _solid_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_decoded_pixels_are_bounded_per_request_and_per_model_call(image_run):
    pixels_per_call: list[int] = []

    class Measuring(Slow):
        def predict(self, items):
            pixels_per_call.append(sum(Image.open(io.BytesIO(x)).size[0] * Image.open(io.BytesIO(x)).size[1]
                                       for x in items))
            return super().predict(items)

    big = _solid_png(400)  # 160,000 pixels, a few hundred bytes compressed
    with Served(image_run, predictor=Measuring(Predictor(image_run)), max_image_pixels=200_000, max_items=8,
                max_request_pixels=500_000, max_batch_pixels=350_000, warmup=False) as c:
        r = c.post("/predict", files=[("files", (f"{i}.png", big, "image/png")) for i in range(4)])
        assert r.status_code == 422 and r.json()["error"] == "too-many-pixels", r.text  # 640,000 > 500,000
        assert pixels_per_call == []  # refused from the headers, nothing decoded for the model
        r = c.post("/predict", files=[("files", (f"{i}.png", big, "image/png")) for i in range(3)])
        assert r.status_code == 200 and len(r.json()["predictions"]) == 3, r.text
        assert pixels_per_call == [320_000, 160_000]  # 2 images fit 350,000 pixels per call, the third runs next
