"""Fuzzing the request parser (issue #26, "done when"): arbitrary bytes, JSON documents and
multipart bodies into ``inputs.py`` and through the app with the real (tiny) model: every answer
is a 2xx or a 4xx with a JSON error, never a traceback or a 5xx.  Bounded: a few hundred
examples, no example database written."""
from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs pip install 'transferkit[serve]'")
pytest.importorskip("httpx", reason="needs pip install 'transferkit[serve]'")
import test_serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from starlette.testclient import TestClient
from test_serve import image_run as image_run_fixture  # noqa: F401 - registers the fixture `image_run`
from test_serve import text_run as text_run_fixture  # noqa: F401 - registers the fixture `text_run`

from transferkit.serve import ServeSettings, create_app
from transferkit.serve.inputs import MAX_JSON_DEPTH, RequestError, json_depth, parse_texts

# the module's fixtures, shared (an assignment, so that tests taking them shadow nothing)
image_run = test_serve.image_run
text_run = test_serve.text_run

FUZZ = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
LIMITS = ServeSettings(max_items=8, max_text_chars=300, max_body_bytes=32 * 1024, max_image_pixels=256 * 256,
                       max_request_pixels=3 * 256 * 256, port=0, max_delay_ms=1.0)

# any code point, with the ones that broke the server before (lone surrogates, NUL, controls,
# zero-width, JSON's own syntax) drawn often
ANY_CHAR = st.one_of(st.characters(codec=None, exclude_categories=()),
                     st.sampled_from(["\ud800", "\udfff", "\x00", "\x1f", " ", "\n", "\u200b", "[", "{", '"', "\\"]))
TEXTS = st.lists(ANY_CHAR, max_size=40).map("".join)  # (st.text draws the listed characters rarely)
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXTS,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXTS, inner, max_size=4),
                           max_leaves=12)
# mostly well-formed requests, each part possibly wrong
REQUESTS = st.one_of(
    st.fixed_dictionaries({"texts": st.lists(TEXTS, max_size=10)}),
    st.fixed_dictionaries({"texts": st.lists(JSON_VALUES, max_size=4)}),
    st.dictionaries(TEXTS, JSON_VALUES, max_size=3),
    JSON_VALUES,
)
CONTENT_TYPES = st.sampled_from(["application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
                                 "text/plain", "multipart/form-data; boundary=x", "", None])


def _json_bytes(doc, ensure_ascii: bool) -> bytes:
    # ensure_ascii=False writes lone surrogates raw: not UTF-8, as a broken client would send
    return json.dumps(doc, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


# ----------------------------------------------------------------------------- the parser
@FUZZ
@given(body=st.one_of(st.binary(max_size=300), REQUESTS.map(lambda d: _json_bytes(d, True)),
                      REQUESTS.map(lambda d: _json_bytes(d, False)),
                      st.integers(1, 200).map(lambda n: b'{"texts": ' + b"[" * n + b"]" * n + b"}")),
       content_type=CONTENT_TYPES)
def test_parse_texts_gives_texts_or_a_4xx(body, content_type):
    try:
        texts = parse_texts(body, content_type, LIMITS)
    except RequestError as e:
        assert 400 <= e.status < 500 and e.code and e.message
        return
    assert 1 <= len(texts) <= LIMITS.max_items
    for t in texts:  # what passes is what the model takes
        assert isinstance(t, str) and 0 < len(t) <= LIMITS.max_text_chars
        t.encode("utf-8")


def _nested(doc, levels: int):
    for k in range(levels):
        doc = [doc] if k % 2 else {"k": doc}
    return doc


@FUZZ
@given(st.tuples(st.recursive(st.just([]) | st.just({}) | st.text(st.sampled_from('[]{}"\\ab'), max_size=6),
                              lambda inner: st.lists(inner, max_size=3), max_leaves=30),
                 st.integers(0, 2 * MAX_JSON_DEPTH)).map(lambda a: _nested(*a)))
def test_json_depth_refuses_exactly_the_documents_nested_too_deeply(doc):
    """Brackets inside strings (escaped quotes and backslashes included) never count."""
    def depth(x) -> int:
        if isinstance(x, list):
            return 1 + max((depth(v) for v in x), default=0)
        if isinstance(x, dict):
            return 1 + max((depth(v) for v in x.values()), default=0)
        return 0

    got, true = json_depth(json.dumps(doc).encode()), depth(doc)
    assert got >= true and (got > MAX_JSON_DEPTH) == (true > MAX_JSON_DEPTH), (got, true)


# ----------------------------------------------------------------------------- through the app
def _client(run) -> TestClient:
    client = TestClient(create_app(run, LIMITS), raise_server_exceptions=False)
    client.__enter__()
    t0 = time.monotonic()
    while client.get("/health/ready").status_code != 200:
        assert time.monotonic() - t0 < 60, client.get("/health/ready").text
        time.sleep(0.02)
    return client


@pytest.fixture(scope="module")
def text_client(text_run):
    c = _client(text_run)
    yield c
    c.__exit__(None, None, None)


@pytest.fixture(scope="module")
def image_client(image_run):
    c = _client(image_run)
    yield c
    c.__exit__(None, None, None)


def _assert_clean(r) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    assert "Traceback" not in r.text and 'File "' not in r.text
    if r.status_code >= 400:
        assert r.json()["error"] and r.json()["message"]


# well-shaped requests most of the time, so that the model sees what the checks let through
WELL_SHAPED = st.lists(TEXTS, min_size=1, max_size=8).map(lambda ts: {"texts": ts})


@FUZZ
@given(body=st.one_of(WELL_SHAPED.map(lambda d: _json_bytes(d, True)), WELL_SHAPED.map(lambda d: _json_bytes(d, True)),
                      WELL_SHAPED.map(lambda d: _json_bytes(d, False)), REQUESTS.map(lambda d: _json_bytes(d, True)),
                      st.binary(max_size=200)),
       content_type=st.one_of(st.just("application/json"), st.just("application/json"), CONTENT_TYPES))
def test_text_app_answers_every_body_with_2xx_or_4xx(text_client, body, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    r = text_client.post("/predict", content=body, headers=headers)
    _assert_clean(r)
    if r.status_code == 200:
        assert len(r.json()["predictions"]) == len(json.loads(body)["texts"])


def _png(side: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(seed).randint(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


FILE_BYTES = st.one_of(st.binary(max_size=100),
                       st.tuples(st.integers(1, 300), st.integers(0, 3)).map(lambda a: _png(*a)),
                       st.tuples(st.integers(8, 64), st.integers(0, 3), st.integers(0, 200)).map(
                           lambda a: _png(a[0], a[1])[: a[2]]))  # truncated
PARTS = st.lists(st.tuples(st.sampled_from(["files", "file", "texts", ""]), st.text(ANY_CHAR, max_size=10), FILE_BYTES),
                 max_size=5)


def _multipart(parts, boundary: str = "fuzzboundary") -> bytes:
    out = b""
    for field, filename, data in parts:
        name = filename.encode("utf-8", "surrogatepass").replace(b'"', b"").replace(b"\r", b"").replace(b"\n", b"")
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"".encode() + name
                + b'"\r\nContent-Type: image/png\r\n\r\n' + data + b"\r\n")
    return out + f"--{boundary}--\r\n".encode()


@FUZZ
@given(body=st.one_of(PARTS.map(_multipart), st.binary(max_size=300),
                      PARTS.map(_multipart).flatmap(lambda b: st.integers(0, len(b)).map(lambda k: b[:k]))),
       content_type=st.sampled_from(["multipart/form-data; boundary=fuzzboundary", "multipart/form-data",
                                     "multipart/form-data; boundary=other", "application/json"]))
def test_image_app_answers_every_body_with_2xx_or_4xx(image_client, body, content_type):
    _assert_clean(image_client.post("/predict", content=body, headers={"content-type": content_type}))
