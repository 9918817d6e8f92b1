"""The HTTP server: a real uvicorn server on 127.0.0.1 with an ephemeral port, tiny random models,
an httpx client.  Every endpoint, every bad input (the server stays healthy after each), overload
(503 + Retry-After), readiness, and the drift alarm."""
from __future__ import annotations

import asyncio
import io
import random
import struct
import threading
import time
import zlib

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs pip install 'transferkit[serve]'")
httpx = pytest.importorskip("httpx", reason="needs pip install 'transferkit[serve]'")
from PIL import Image  # noqa: E402

import transferkit as tk  # noqa: E402
from transferkit.serve import BackgroundServer, ServeSettings, create_app  # noqa: E402
from transferkit.serve.predictor import Predictor  # noqa: E402

from conftest import toy_texts  # noqa: E402

FAST = dict(port=0, max_delay_ms=2.0, request_timeout_s=20.0)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def text_run(tiny_text_dir, tmp_path_factory):
    texts, labels = toy_texts(40)
    out = tmp_path_factory.mktemp("serve-text") / "run"
    tk.fit(train=tk.Dataset(modality="text", inputs=texts, labels=labels), model=str(tiny_text_dir), out=str(out),
           control=False, log=None)
    return out


@pytest.fixture(scope="module")
def image_run(tiny_image_dir, tmp_path_factory):
    rng = np.random.RandomState(0)
    X = rng.randint(0, 120, (24, 32, 32, 3), dtype=np.uint8)
    X[12:, :16] = 250
    out = tmp_path_factory.mktemp("serve-image") / "run"
    tk.fit(train=tk.from_arrays(X, ["dark"] * 12 + ["bright"] * 12), model=str(tiny_image_dir), out=str(out),
           control=False, log=None)
    return out


class Slow:
    """A predictor that waits for ``gate`` (if given) and sleeps ``delay`` before each batch."""

    def __init__(self, inner, delay: float = 0.0, gate: threading.Event | None = None):
        self.inner, self.delay, self.gate = inner, delay, gate

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, items):
        if self.gate is not None:
            self.gate.wait(30)
        time.sleep(self.delay)
        return self.inner.predict(items)


def wait_ready(c: httpx.Client, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while c.get("/health/ready").status_code != 200:
        assert time.monotonic() - t0 < timeout, c.get("/health/ready").json()
        time.sleep(0.02)


class Served:
    """``with Served(run, **settings) as c:`` a ready server and a client on it."""

    def __init__(self, run, predictor=None, wait=True, **settings):
        self.app = create_app(run, ServeSettings(**{**FAST, **settings}), predictor=predictor)
        self.server = BackgroundServer(self.app)
        self.wait = wait

    def __enter__(self) -> httpx.Client:
        url = self.server.start()
        assert url.startswith("http://127.0.0.1:")
        self.client = httpx.Client(base_url=url, timeout=30)
        if self.wait:
            wait_ready(self.client)
        return self.client

    def __exit__(self, *exc):
        self.client.close()
        self.server.stop()


@pytest.fixture(scope="module")
def text_server(text_run):
    with Served(text_run, max_items=8, max_text_chars=500, max_body_bytes=64 * 1024) as c:
        yield c


@pytest.fixture(scope="module")
def image_server(image_run):
    with Served(image_run, max_items=4, max_image_pixels=512 * 512) as c:
        yield c


def assert_healthy(c: httpx.Client, good: dict | None = None, files=None) -> None:
    assert c.get("/health/live").status_code == 200
    assert c.get("/health/ready").json() == {"status": "ready"}
    r = c.post("/predict", json=good) if good is not None else c.post("/predict", files=files)
    assert r.status_code == 200, r.text


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- text runs
def test_predict_texts_matches_the_library(text_server, text_run):
    texts = ["free cash prize winner", "project meeting agenda", "budget review minutes"]
    r = text_server.post("/predict", json={"texts": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["classes"] == ["ham", "spam"] and len(body["predictions"]) == 3
    expected = tk.load(text_run, cache=False).predict_proba(texts)
    got = np.array([[p["probabilities"][c] for c in body["classes"]] for p in body["predictions"]])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert [p["label"] for p in body["predictions"]] == ["spam", "ham", "ham"]
    assert all(abs(p["confidence"] - max(p["probabilities"].values())) < 1e-12 for p in body["predictions"])


def test_a_finetuned_run_serves_with_its_own_features(tiny_text_dir, tmp_path):
    """A strategy that runs the backbone itself: predictions as the library's, and the drift
    reference and the request features both come from the fine-tuned backbone."""
    texts, labels = toy_texts(12)
    out = tmp_path / "ft"
    tk.fit(train=tk.Dataset(modality="text", inputs=texts, labels=labels), model=str(tiny_text_dir), out=str(out),
           strategy="finetune", strategy_params={"epochs": 1, "lr": 1e-3}, control=False, log=None)
    pred = Predictor(out)
    proba, feats = pred.predict(["free cash prize", "project agenda"])
    np.testing.assert_allclose(proba, tk.load(out, cache=False).predict_proba(["free cash prize", "project agenda"]),
                               atol=1e-5)
    assert feats.shape == (2, pred.reference.shape[1])
    loaded = tk.load(out, cache=False)
    assert pred.reference.shape[0] == 19  # 80% of 24 training items
    assert np.isfinite(pred.reference).all() and loaded.backbone.num_features == pred.reference.shape[1]
    with Served(out, predictor=pred) as c:
        assert c.post("/predict", json={"texts": ["free cash"]}).status_code == 200


GOOD = {"texts": ["free cash now"]}
BAD_TEXT_REQUESTS = [
    ("malformed JSON", dict(content=b'{"texts": ["a",', headers={"content-type": "application/json"}), 400,
     "malformed-json"),
    ("not UTF-8", dict(content=b'{"texts": ["\xff"]}', headers={"content-type": "application/json"}), 400,
     "malformed-json"),
    ("wrong content type", dict(content=b"free cash", headers={"content-type": "text/plain"}), 415,
     "unsupported-media-type"),
    ("no content type", dict(content=b'{"texts": ["a"]}'), 415, "unsupported-media-type"),
    ("multipart to a text model", dict(files={"files": ("a.png", b"x")}), 415, "unsupported-media-type"),
    ("a list, not an object", dict(json=["a", "b"]), 422, "invalid-request"),
    ("no texts field", dict(json={"text": ["a"]}), 422, "invalid-request"),
    ("unknown field", dict(json={"texts": ["a"], "path": "/etc/passwd"}), 422, "invalid-request"),
    ("texts not a list", dict(json={"texts": "a"}), 422, "invalid-request"),
    ("a number among texts", dict(json={"texts": ["a", 3]}), 422, "invalid-request"),
    ("empty batch", dict(json={"texts": []}), 422, "empty-batch"),
    ("too many items", dict(json={"texts": ["a"] * 9}), 422, "too-many-items"),
    ("over-long text", dict(json={"texts": ["a" * 501]}), 422, "text-too-long"),
    ("a lone surrogate (not Unicode)", dict(content=b'{"texts": ["ok", "a\\ud800b"]}',
                                            headers={"content-type": "application/json"}), 422, "invalid-text"),
    ("a NUL-only text", dict(json={"texts": ["\x00\x00"]}), 422, "empty-text"),
    ("an empty text", dict(json={"texts": ["ok", ""]}), 422, "empty-text"),
    ("a whitespace-only text", dict(json={"texts": [" \n\t\u200b"]}), 422, "empty-text"),
    ("JSON nested 30,000 deep", dict(content=b"[" * 30_000 + b"]" * 30_000,
                                      headers={"content-type": "application/json"}), 400, "malformed-json"),
    ("body over the limit", dict(json={"texts": ["a" * 400] * 200}), 413, "body-too-large"),
    ("streamed body over the limit (no Content-Length)",
     dict(content=iter([b'{"texts": ["' + b"a" * 40_000, b"a" * 40_000 + b'"]}']),
          headers={"content-type": "application/json"}), 413, "body-too-large"),
]


@pytest.mark.parametrize("what,kwargs,status,code", BAD_TEXT_REQUESTS, ids=[b[0] for b in BAD_TEXT_REQUESTS])
def test_bad_text_requests_get_a_clear_4xx(text_server, what, kwargs, status, code):
    r = text_server.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and body["message"]
    assert "Traceback" not in r.text and 'File "' not in r.text
    assert_healthy(text_server, GOOD)


def test_unknown_routes_and_methods_answer_json(text_server):
    for r, status in ((text_server.get("/predict"), 405), (text_server.get("/../etc/passwd"), 404),
                      (text_server.post("/metadata"), 405)):
        assert r.status_code == status and r.json()["error"] == f"http-{status}"
    assert_healthy(text_server, GOOD)


def test_health_metadata_docs(text_server, text_run):
    assert text_server.get("/health/live").json() == {"status": "alive"}
    m = text_server.get("/metadata").json()
    assert m["ready"] is True and m["modality"] == "text" and m["classes"] == ["ham", "spam"]
    assert m["model_card"]["label_map"] == {"0": "ham", "1": "spam"}
    assert m["model_card"]["drift_reference"]["n"] == 64  # 80% of 80 toy texts
    assert m["settings"]["host"] == "127.0.0.1" and m["settings"]["max_items"] == 8
    assert m["drift"]["enabled"] is True and m["drift"]["reference_items"] == 64
    spec = text_server.get("/openapi.json").json()
    assert {"/predict", "/health/live", "/health/ready", "/metadata", "/metrics"} <= set(spec["paths"])
    assert "application/json" in spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert text_server.get("/docs").status_code == 200


def test_metrics_are_prometheus_text(text_server):
    text_server.post("/predict", json={"texts": ["a", "b"]})
    text_server.post("/predict", json={"texts": []})
    r = text_server.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = r.text.splitlines()
    values = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in lines if ln and not ln.startswith("#")}
    p = "transferkit_serve_"
    assert values[f'{p}requests_total{{endpoint="/predict",status="200"}}'] >= 1
    assert values[f'{p}requests_total{{endpoint="/predict",status="422"}}'] >= 1
    assert values[f'{p}predict_latency_seconds_bucket{{le="+Inf"}}'] == values[f"{p}predict_latency_seconds_count"]
    assert values[f"{p}batch_items_count"] >= 1 and values[f"{p}items_total"] >= 2
    assert values[f"{p}ready"] == 1 and values[f"{p}drift_enabled"] == 1
    for name in ("drift_statistic", "drift_p_value", "drift_alarm", "drift_tests_total", "queue_items"):
        assert f"{p}{name}" in values
    for ln in lines:  # every sample has a TYPE line for its family
        if ln and not ln.startswith("#"):
            fam = ln.split("{")[0].split(" ")[0]
            base = fam.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
            assert f"# TYPE {fam} " in r.text or f"# TYPE {base} " in r.text, ln


# ----------------------------------------------------------------------------- image runs
def _bomb_png() -> bytes:
    """A valid 8x8 PNG whose header claims 100,000 x 100,000 pixels (CRC fixed)."""
    b = bytearray(png(np.zeros((8, 8), np.uint8)))
    struct.pack_into(">II", b, 16, 100_000, 100_000)
    struct.pack_into(">I", b, 29, zlib.crc32(bytes(b[12:29])))
    return bytes(b)


def test_predict_images(image_server, image_run):
    rng = np.random.RandomState(1)
    dark = rng.randint(0, 120, (32, 32, 3), dtype=np.uint8)
    bright = dark.copy()
    bright[:16] = 250
    r = image_server.post("/predict", files=[("files", ("d.png", png(dark), "image/png")),
                                             ("files", ("b.png", png(bright), "image/png"))])
    assert r.status_code == 200, r.text
    body = r.json()
    expected = tk.load(image_run, cache=False).predict_proba(np.stack([dark, bright]))
    got = np.array([[p["probabilities"][c] for c in body["classes"]] for p in body["predictions"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)


NOISE = png(np.random.RandomState(2).randint(0, 255, (64, 64, 3), dtype=np.uint8))
ONE = [("files", ("ok.png", png(np.zeros((32, 32, 3), np.uint8)), "image/png"))]
BAD_IMAGE_REQUESTS = [
    ("JSON to an image model", dict(json={"texts": ["a"]}), 415, "unsupported-media-type"),
    ("non-image bytes", dict(files=[("files", ("x.png", b"this is text, not a png", "image/png"))]), 422,
     "not-an-image"),
    ("truncated image", dict(files=[("files", ("t.png", NOISE[: len(NOISE) // 2], "image/png"))]), 422,
     "truncated-image"),
    ("decompression bomb", dict(files=[("files", ("bomb.png", _bomb_png(), "image/png"))]), 422, "image-too-large"),
    ("image over the pixel limit", dict(files=[("files", ("big.png", png(np.zeros((600, 600), np.uint8)),
                                                          "image/png"))]), 422, "image-too-large"),
    ("empty file", dict(files=[("files", ("e.png", b"", "image/png"))]), 422, "empty-file"),
    ("no files", dict(data={"note": "x"}, files=[("other", ("a.png", b"x", "image/png"))]), 422, "invalid-request"),
    ("too many files", dict(files=ONE * 5), 422, "too-many-items"),
]


@pytest.mark.parametrize("what,kwargs,status,code", BAD_IMAGE_REQUESTS, ids=[b[0] for b in BAD_IMAGE_REQUESTS])
def test_bad_image_requests_get_a_clear_4xx(image_server, what, kwargs, status, code):
    r = image_server.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and "Traceback" not in r.text
    assert_healthy(image_server, files=ONE)


def test_streamed_multipart_over_the_body_limit_is_413(image_server):
    head = b'--b\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'
    chunks = iter([head] + [b"\0" * 2**20] * 11 + [b"\r\n--b--\r\n"])  # 11 MiB, no Content-Length
    r = image_server.post("/predict", content=chunks, headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and r.json()["error"] == "body-too-large"
    assert_healthy(image_server, files=ONE)


def test_empty_multipart_is_an_empty_batch(image_server):
    r = image_server.post("/predict", content=b"--b--\r\n", headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 422 and r.json()["error"] == "empty-batch"
    assert_healthy(image_server, files=ONE)


# ----------------------------------------------------------------------------- load and readiness
async def _burst(url: str, n: int, texts: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        return await asyncio.gather(*(c.post("/predict", json={"texts": texts}) for _ in range(n)))


def test_overload_answers_503_with_retry_after(text_run):
    slow = Slow(Predictor(text_run), delay=0.2)
    with Served(text_run, predictor=slow, max_batch=2, max_items=2, queue_items=2) as c:
        rs = asyncio.run(_burst(str(c.base_url), 12, ["free cash", "meeting"]))
        codes = [r.status_code for r in rs]
        assert set(codes) <= {200, 503}, codes
        assert codes.count(200) >= 1 and codes.count(503) >= 6, codes
        for r in rs:
            if r.status_code == 503:
                assert r.json()["error"] == "overloaded" and r.headers["retry-after"] == "1"
        assert_healthy(c, GOOD)
        assert 'status="503"' in c.get("/metrics").text


def test_request_timeout_answers_503(text_run):
    slow = Slow(Predictor(text_run), delay=1.0)
    with Served(text_run, predictor=slow, request_timeout_s=0.3, warmup=False) as c:
        r = c.post("/predict", json=GOOD)
        assert r.status_code == 503 and r.json()["error"] == "timeout" and "retry-after" in r.headers
        slow.delay = 0.0  # the model recovers: so does the server
        time.sleep(1.0)
        assert_healthy(c, GOOD)


def test_ready_only_after_load_and_warmup(text_run):
    gate = threading.Event()
    with Served(text_run, predictor=Slow(Predictor(text_run), gate=gate), wait=False) as c:
        assert c.get("/health/live").status_code == 200
        r = c.get("/health/ready")
        assert r.status_code == 503 and r.json()["status"] == "loading" and "retry-after" in r.headers
        r = c.post("/predict", json=GOOD)
        assert r.status_code == 503 and r.json()["error"] == "not-ready"
        assert c.get("/metadata").json()["ready"] is False
        assert "transferkit_serve_ready 0" in c.get("/metrics").text
        gate.set()
        wait_ready(c, 30)
        assert_healthy(c, GOOD)


def test_a_run_that_cannot_load_is_live_but_never_ready(tmp_path):
    with Served(tmp_path / "not-a-run", wait=False) as c:
        t0 = time.monotonic()
        while c.get("/health/ready").json()["status"] == "loading" and time.monotonic() - t0 < 30:
            time.sleep(0.02)
        r = c.get("/health/ready")
        assert r.status_code == 503 and r.json()["status"] == "failed" and "transferkit fit" in r.json()["message"]
        assert c.get("/health/live").status_code == 200
        assert c.post("/predict", json=GOOD).json()["error"] == "model-failed"


def test_batcher_merges_requests_up_to_max_batch():
    from transferkit.serve.batcher import MicroBatcher

    sizes = []

    def run(items):
        sizes.append(len(items))
        return np.array([[float(x), 1.0 - float(x)] for x in items]), None

    b = MicroBatcher(run, max_batch=2, max_delay_s=0.05, queue_items=10)
    futures = [b.submit([i / 10]) for i in range(5)]  # queued before the worker starts
    b.start()
    try:
        results = [f.result(10) for f in futures]
    finally:
        b.stop()
    assert sizes == [2, 2, 1]
    assert [float(p[0][0]) for p, _ in results] == [0.0, 0.1, 0.2, 0.3, 0.4]  # each request gets its own rows


def test_batcher_refuses_what_would_wait_too_long_or_overflow():
    from transferkit.serve.batcher import MicroBatcher, Overloaded

    b = MicroBatcher(lambda items: (np.zeros((len(items), 2)), None), max_batch=4, max_delay_s=0.0, queue_items=3,
                     max_wait_s=1.0)
    b.cost_per_s = 2.0  # as measured: 2 items per second of model time (the worker is not started)
    b.submit(["a"])  # nothing ahead: always admitted, whatever the estimate
    b.submit(["b"])  # 1 item ahead, 1 its own: 1 s
    with pytest.raises(Overloaded, match="about 2 s"):
        b.submit(["c"])  # 2 items ahead: 1.5 s > 1 s
    b.cost_per_s = 100.0
    b.submit(["c"])
    with pytest.raises(Overloaded, match="limit 3"):
        b.submit(["d"])  # the queue bound


# ----------------------------------------------------------------------------- drift
def _drift(c: httpx.Client, after: int, timeout: float = 30.0) -> dict:
    t0 = time.monotonic()
    while True:
        d = c.get("/metadata").json()["drift"]
        if d["tests"] > after:
            return d
        assert time.monotonic() - t0 < timeout, d
        time.sleep(0.05)


def test_drift_alarm_flips_on_shifted_inputs_only(text_run):
    with Served(text_run, drift_window=40, drift_every=8, drift_min_items=40, drift_permutations=200) as c:
        same, _ = toy_texts(20, seed=7)  # in distribution: the same generator, other draws
        random.Random(0).shuffle(same)
        for i in range(0, 40, 5):
            assert c.post("/predict", json={"texts": same[i:i + 5]}).status_code == 200
        d = _drift(c, 0)
        assert d["items_seen"] == 40  # the warm-up item is not traffic
        assert d["alarm"] is False and d["p_value"] > 0.05 and d["window_items"] == 40, d
        assert "transferkit_serve_drift_alarm 0" in c.get("/metrics").text
        rng = random.Random(1)
        shifted = ["".join(rng.choice("qxzj0123456789#@") for _ in range(30)) for _ in range(40)]
        for i in range(0, 40, 5):
            assert c.post("/predict", json={"texts": shifted[i:i + 5]}).status_code == 200
        d = _drift(c, d["tests"])
        assert d["alarm"] is True and d["p_value"] < 0.01 and d["statistic"] > 0, d
        assert "transferkit_serve_drift_alarm 1" in c.get("/metrics").text


def test_drift_is_off_with_a_reason_for_runs_without_reference(text_run, tmp_path):
    import json
    import shutil

    old = tmp_path / "old-run"
    shutil.copytree(text_run, old)
    card = json.loads((old / "model_card.json").read_text())
    del card["drift_reference"]
    (old / "model_card.json").write_text(json.dumps(card))
    (old / "reference_features.npy").unlink()
    with Served(old) as c:
        assert c.post("/predict", json=GOOD).status_code == 200
        d = c.get("/metadata").json()["drift"]
        assert d["enabled"] is False and "no reference" in d["reason"]
        assert "transferkit_serve_drift_enabled 0" in c.get("/metrics").text


def test_settings_from_run_config_and_flags(text_run, tmp_path):
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(text_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["serve"] = {"drift_window": 30, "drift_p_value": 0.001}
    (run / "config.json").write_text(json.dumps(cfg))
    s = ServeSettings.for_run(run, drift_every=5, port=None)
    assert (s.drift_window, s.drift_min_items, s.drift_p_value, s.drift_every, s.port) == (30, 30, 0.001, 5, 8000)
    with pytest.raises(tk.errors.UserInputError, match="unknown serve settings"):
        ServeSettings.for_run(run, nope=1)
    with pytest.raises(tk.errors.UserInputError, match="max_items"):
        ServeSettings(max_items=0)


def test_cli_serve_reports_a_bad_run_without_traceback(tmp_path, capsys):
    from transferkit.cli import main

    assert main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "transferkit fit" in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_serve_in_a_subprocess(text_run):
    """``transferkit serve RUN --port 0`` as a user runs it: it says where it listens, serves, stops on SIGINT."""
    import os
    import re
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "transferkit.cli", "serve", str(text_run), "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        url, t0 = None, time.monotonic()
        while url is None and time.monotonic() - t0 < 120:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "the server exited"
            m = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
            url = m.group(1) if m else None
        assert url, "no 'running on' line"
        with httpx.Client(base_url=url, timeout=30) as c:
            wait_ready(c)
            assert c.post("/predict", json={"texts": ["free cash prize"]}).json()["predictions"][0]["label"] == "spam"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
