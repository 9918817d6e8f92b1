"""One request never fails another (issue #26-2), HEAD on the health probes and a run's files
that cannot widen the server (#26-11), metrics through prometheus_client (#15).

Against a real uvicorn server on 127.0.0.1 with a tiny random model, as in test_serve.py."""
from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs pip install 'transferkit[serve]'")
httpx = pytest.importorskip("httpx", reason="needs pip install 'transferkit[serve]'")

import test_serve  # noqa: E402
from test_serve import GOOD, Served, assert_healthy  # noqa: E402

from transferkit.serve import ServeSettings  # noqa: E402
from transferkit.serve.batcher import MicroBatcher  # noqa: E402
from transferkit.serve.predictor import Predictor  # noqa: E402

# the module's fixtures, shared (an assignment, so that tests taking them shadow nothing)
text_run = test_serve.text_run


async def _post_all(url: str, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        # json.dumps escapes a lone surrogate as "\ud800", as a client's JSON library would
        return await asyncio.gather(*(c.post("/predict", content=json.dumps(b).encode(),
                                             headers={"content-type": "application/json"}) for b in bodies))


def _burst_with(bad: dict, n_good: int = 100) -> tuple[list[dict], int]:
    bodies = [{"texts": [f"free cash prize {i}", "project meeting agenda"]} for i in range(n_good)]
    at = n_good // 2
    return bodies[:at] + [bad] + bodies[at:], at


# ----------------------------------------------------------------------------- a poisoned batch
def test_a_lone_surrogate_never_fails_concurrent_requests(text_run):
    """The reported case: one JSON text "\\ud800" among 100 concurrent good requests on the real
    model.  It used to pass validation and make the tokenizer raise for the whole batch."""
    bodies, at = _burst_with({"texts": ["fine text", "\ud800"]})
    with Served(text_run, max_delay_ms=20.0) as c:
        rs = asyncio.run(_post_all(str(c.base_url), bodies))
        bad = rs.pop(at)
        assert [r.status_code for r in rs] == [200] * 100, {r.status_code for r in rs}
        assert bad.status_code == 422 and bad.json()["error"] == "invalid-text", bad.text
        assert "texts[1]" in bad.json()["message"] and "surrogate" in bad.json()["message"]
        assert_healthy(c, GOOD)


class Poisoned:
    """The real predictor, except that the text "POISON" reaches the model as a lone surrogate:
    an input the app's checks let through, that makes the model's call fail."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, items):
        with self._lock:
            self.calls.append(list(items))
        return self.inner.predict(["\ud800" if x == "POISON" else x for x in items])


def test_a_failed_batch_is_run_again_one_request_at_a_time(text_run):
    pred = Poisoned(Predictor(text_run))
    bodies, at = _burst_with({"texts": ["POISON"]})
    with Served(text_run, predictor=pred, max_delay_ms=20.0) as c:
        rs = asyncio.run(_post_all(str(c.base_url), bodies))
        bad = rs.pop(at)
        assert [r.status_code for r in rs] == [200] * 100, {r.status_code for r in rs}
        # the model refused it (a 4xx, the input's fault), not the app's checks
        assert bad.status_code == 422 and bad.json()["error"] == "invalid-text", bad.text
        merged = [call for call in pred.calls if "POISON" in call and len(call) > 1]
        assert merged, "the poisoned request was never merged with others: the test proves nothing"
        assert any(call == ["POISON"] for call in pred.calls)  # the retry ran it alone
        assert "transferkit_serve_batch_retries_total 1.0" in c.get("/metrics").text
        assert_healthy(c, GOOD)


def test_batcher_retry_gives_an_unexpected_error_to_its_culprit_only():
    def run(items):
        if "bad" in items:
            raise RuntimeError("the model broke on 'bad'")
        return np.array([[1.0, 0.0]] * len(items)), None

    b = MicroBatcher(run, max_batch=8, max_delay_s=0.05, queue_items=16)
    futures = [b.submit(["a"]), b.submit(["bad", "b"]), b.submit(["c", "d"])]  # queued before the worker starts
    b.start()
    try:
        assert futures[0].result(10)[0].shape == (1, 2) and futures[2].result(10)[0].shape == (2, 2)
        with pytest.raises(RuntimeError, match="broke"):
            futures[1].result(10)
    finally:
        b.stop()


# ----------------------------------------------------------------------------- parser bounds
def test_deeply_nested_json_is_400_not_500(text_run):
    with Served(text_run) as c:
        deep = b"[" * 100_000 + b"]" * 100_000
        r = c.post("/predict", content=deep, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"] == "malformed-json", r.text
        assert "nests 100,000 levels" in r.json()["message"] and "Traceback" not in r.text
        # brackets inside strings are text, not nesting
        r = c.post("/predict", json={"texts": ["[{" * 5_000]})
        assert r.status_code == 200, r.text
        assert_healthy(c, GOOD)


# ----------------------------------------------------------------------------- health probes
def test_head_on_health_probes(text_run):
    with Served(text_run) as c:
        for path in ("/health/live", "/health/ready"):
            r = c.head(path)
            assert r.status_code == 200 and r.content == b"", (path, r.status_code)
        assert c.head("/health/nope").status_code == 404
        spec = c.get("/openapi.json").json()
        assert set(spec["paths"]["/health/ready"]) == {"get"}  # HEAD is implied, not a second operation


# ----------------------------------------------------------------------------- a run's files
def _run_with_serve_section(text_run, tmp_path, section: dict, card_section: dict | None = None):
    run = tmp_path / "received-run"
    shutil.copytree(text_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["serve"] = section
    (run / "config.json").write_text(json.dumps(cfg))
    if card_section is not None:
        card = json.loads((run / "model_card.json").read_text())
        card["serve"] = card_section
        (run / "model_card.json").write_text(json.dumps(card))
    return run


def test_a_runs_config_cannot_bind_beyond_loopback_or_lift_limits(text_run, tmp_path, caplog):
    hostile = {"host": "0.0.0.0", "max_items": 100_000, "max_body_bytes": 2**40, "queue_items": 10**9,
               "request_timeout_s": 1e9, "max_text_chars": 10**9, "drift_permutations": 10**9,
               "keep_alive_s": 1e9, "max_connections": 10**6}
    run = _run_with_serve_section(text_run, tmp_path, hostile, card_section={"host": "0.0.0.0"})
    with caplog.at_level(logging.WARNING, logger="transferkit.serve"):
        s = ServeSettings.for_run(run)
    assert s == ServeSettings()  # every value ignored: the defaults stand
    assert "0.0.0.0" in caplog.text and "--host" in caplog.text and "max_items = 100000" in caplog.text
    # tightening is allowed, and so is a loopback address
    run = _run_with_serve_section(text_run, tmp_path / "b", {"host": "::1", "max_items": 8, "request_timeout_s": 5,
                                                              "drift_every": 7})
    s = ServeSettings.for_run(run)
    assert (s.host, s.max_items, s.request_timeout_s, s.drift_every) == ("::1", 8, 5, 7)
    # the user's own flags set anything, over the run's values
    s = ServeSettings.for_run(run, host="0.0.0.0", max_items=200, queue_items=400)
    assert (s.host, s.max_items, s.queue_items) == ("0.0.0.0", 200, 400)


def test_cli_serve_takes_host_only_from_the_flag(text_run, tmp_path, monkeypatch):
    import transferkit.serve as serve_pkg

    run = _run_with_serve_section(text_run, tmp_path, {"host": "0.0.0.0", "port": 0})
    seen = []
    monkeypatch.setattr(serve_pkg, "serve", lambda run_dir, settings, **load: seen.append(settings))
    from transferkit.cli import main

    assert main(["serve", str(run)]) == 0
    assert seen[-1].host == "127.0.0.1" and seen[-1].port == 0
    assert main(["serve", str(run), "--host", "0.0.0.0", "--max-connections", "10"]) == 0
    assert seen[-1].host == "0.0.0.0" and seen[-1].max_connections == 10


# ----------------------------------------------------------------------------- metrics
def test_each_app_has_its_own_metrics_registry(text_run):
    with Served(text_run) as a, Served(text_run) as b:
        for _ in range(3):
            assert a.post("/predict", json=GOOD).status_code == 200
        b.post("/predict", json={"texts": []})
        ta, tb = a.get("/metrics").text, b.get("/metrics").text
    assert 'transferkit_serve_requests_total{endpoint="/predict",status="200"} 3.0' in ta
    assert 'endpoint="/predict",status="200"' not in tb
    assert 'transferkit_serve_requests_total{endpoint="/predict",status="422"} 1.0' in tb
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("transferkit_serve_items_total") is None  # nothing in the global one


def test_metrics_negotiate_openmetrics(text_run):
    with Served(text_run) as c:
        r = c.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        assert r.text.rstrip().endswith("# EOF")
