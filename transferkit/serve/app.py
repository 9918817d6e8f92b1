"""The HTTP app over a run directory: /predict, health, /metadata, /metrics, OpenAPI docs.

``create_app(run_dir, settings)`` returns a FastAPI app; the model loads and warms up on a
background thread at start-up, so /health/live answers at once and /health/ready only once a
prediction has gone through (and not while the queue is saturated).  No endpoint reads a file
or URL named in a request.

One request never fails another: what the model would refuse is refused before a request
joins a batch, and a batch that fails anyway is run again one request at a time (see
``batcher.py``).  A request whose client times out or disconnects is dropped from the queue.
"""
from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UserInputError
from .batcher import MicroBatcher, Overloaded
from .drift import DriftMonitor
from .inputs import (
    RequestError,
    check_audio,
    check_count,
    check_image,
    check_request_pixels,
    image_cost,
    image_size,
    parse_texts,
    text_cost,
)
from .metrics import Metrics
from .prediction_drift import PredictionDrift
from .schemas import PREDICT_OPENAPI, PredictResponse, predictions
from .settings import ServeSettings

log = logging.getLogger("transferkit.serve")
ENDPOINTS = ("/predict", "/health/live", "/health/ready", "/metadata", "/metrics", "/docs", "/openapi.json",
             "/redoc")


class BodyTooLarge(Exception):
    """Raised from ``receive`` once a body passes the limit; answered 413."""


class ServerState:
    """The model, the micro-batcher, the drift monitor and the metrics of one app."""

    def __init__(self, run_dir: str | Path, settings: ServeSettings, predictor=None):
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.predictor = predictor
        self.metrics = Metrics(self._metric_state)
        self.batcher: MicroBatcher | None = None
        self.drift = DriftMonitor(None)
        self.ready = False
        self.error: str | None = None
        self.started = time.time()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._load, name="transferkit-serve-load", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.ready = False
        if self.batcher is not None:
            self.batcher.stop()
        self.drift.stop()

    def _load(self) -> None:
        s = self.settings
        try:
            if self.predictor is None:
                from .predictor import Predictor

                self.predictor = Predictor(self.run_dir, **s.predictor_options())
            self.drift = DriftMonitor(getattr(self.predictor, "reference", None), window=s.drift_window,
                                      every=s.drift_every, min_items=s.drift_min_items, p_value=s.drift_p_value,
                                      n_permutations=s.drift_permutations,
                                      seed=int(self.predictor.card.get("seed", 0) or 0),
                                      predictions=PredictionDrift(
                                          self.predictor.card.get("prediction_reference"),
                                          thresholds=getattr(self.predictor, "thresholds", None),
                                          window=s.drift_window, min_items=s.drift_min_items,
                                          p_value=s.drift_p_value))
            queue_cost, batch_cost = {"image": (s.queue_pixels, s.max_batch_pixels),
                                      "audio": (s.queue_audio_ms, s.max_batch_audio_ms)}.get(
                self.predictor.modality, (s.queue_chars, s.max_batch_chars))
            self.batcher = MicroBatcher(self.predictor.predict, max_batch=s.max_batch,
                                        max_delay_s=s.max_delay_ms / 1000, queue_items=s.queue_items,
                                        queue_cost=queue_cost, max_batch_cost=batch_cost,
                                        max_wait_s=s.request_timeout_s, on_batch=self._on_batch,
                                        on_retry=lambda _n: self.metrics.retried(),
                                        one_request_per_call=getattr(self.predictor, "tent", None) is not None)
            self.batcher.start()
            self.drift.start()
            if s.warmup:
                warm = self.batcher.submit([_warmup_item(self.predictor.modality)])
                warm.result(timeout=max(60.0, s.request_timeout_s))
                self.batcher.cost_per_s = None  # a first call is slow: not a rate to plan with
            self.ready = True
            log.info("model of %s loaded and warmed up: ready", self.run_dir)
        except Exception as e:  # reported by /health/ready, the process stays up
            self.error = f"{type(e).__name__}: {e}"
            log.error("the model could not be loaded: %s", self.error)

    def _on_batch(self, n_items: int, n_requests: int, seconds: float, feats, outputs=None) -> None:
        self.metrics.batch(n_items)
        if self.ready:  # the warm-up item is not traffic
            self.drift.add(feats, n_requests, outputs)

    def _metric_state(self) -> dict[str, Any]:
        b = self.batcher
        cache = getattr(self.predictor, "cache", None)
        return {"queue_items": b.queued_items if b else 0, "queue_cost": b.queued_cost if b else 0,
                "ready": self.ready, "saturated": bool(b and b.saturation()), "drift": self.drift.describe(),
                "cache": cache.describe() if cache is not None else None}

    def unavailable(self) -> RequestError:
        retry = {"Retry-After": str(self.settings.retry_after_s)}
        if self.error:
            return RequestError(503, "model-failed", f"the model could not be loaded: {self.error}", headers=retry)
        return RequestError(503, "not-ready", "the model is still loading", "retry shortly", headers=retry)


def _warmup_item(modality: str) -> Any:
    if modality == "image":
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (128, 128, 128)).save(buf, format="PNG")
        return buf.getvalue()
    if modality == "timeseries":
        return np.zeros((1, 16), np.float32)
    if modality == "audio":  # one second of silence as 16-bit WAV
        from scipy.io import wavfile

        buf = io.BytesIO()
        wavfile.write(buf, 16000, np.zeros(16000, np.int16))
        return buf.getvalue()
    return "warm-up"


def _limits_middleware(app, state: ServerState):
    """Pure ASGI: refuses bodies over the limit (by header, and while streaming) and counts every
    response by endpoint and status."""
    limit = state.settings.max_body_bytes

    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        def record():
            took = time.perf_counter() - t0
            state.metrics.request(endpoint, status["code"], took if endpoint == "/predict" else None)

        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            err = _too_large(limit) if length.isdigit() else RequestError(400, "bad-content-length",
                                                                           "the Content-Length header is not a number")
            await JSONResponse(err.body(), status_code=err.status)(scope, receive, send_wrapper)
            return record()
        seen = 0

        async def receive_limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        try:
            await app(scope, receive_limited, send_wrapper)
        finally:
            record()

    return middleware


def _too_large(limit: int) -> RequestError:
    return RequestError(413, "body-too-large", f"the request body is over the server's limit of {limit:,} bytes",
                        "send fewer or smaller items per request")


def create_app(run_dir: str | Path, settings: ServeSettings | None = None, *, predictor=None):
    """The FastAPI app serving one run directory.

    Args:
        run_dir: a directory written by ``transferkit fit --out``.
        settings: limits, batching and drift settings (default: :meth:`ServeSettings.for_run`).
        predictor: an already loaded :class:`~transferkit.serve.predictor.Predictor` (or any
            object with ``predict(items) -> (outputs, features (N, D) | None)``, ``classes``,
            ``modality``, ``card`` and ``reference``, and for other tasks than classification
            ``task`` and ``thresholds``: see :class:`~transferkit.serve.predictor.Predictor`);
            default: load ``run_dir`` on a background thread at start-up.
    """
    settings = settings or ServeSettings.for_run(run_dir)
    state = ServerState(run_dir, settings, predictor)

    @asynccontextmanager
    async def lifespan(_app):
        state.start()
        yield
        state.stop()

    tent = getattr(predictor, "tent", None)  # serve --tent: each request is adapted on (the /docs page says so)
    app = FastAPI(title="transferkit model server", version="1", lifespan=lifespan,
                  description=f"Predictions, health, model card and metrics of the run `{Path(run_dir).name}`."
                  + (f" Test-time adaptation is on: {tent['method']}; {tent['episodic']}." if tent else ""))
    app.state.serve = state

    @app.exception_handler(RequestError)
    async def _request_error(_request, e: RequestError):
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(BodyTooLarge)
    async def _body_too_large(_request, _e):
        e = _too_large(settings.max_body_bytes)
        return JSONResponse(e.body(), status_code=413)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, e: StarletteHTTPException):
        return JSONResponse({"error": f"http-{e.status_code}", "message": str(e.detail)}, status_code=e.status_code,
                            headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request, e: RequestValidationError):
        return JSONResponse({"error": "invalid-request", "message": str(e.errors())[:2000]}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal(_request, e: Exception):
        log.exception("internal error")
        return JSONResponse({"error": "internal", "message": "internal server error (logged on the server)"},
                            status_code=500)

    # exclude_unset: a regression answer has no `classes`; the others keep their exact shape
    @app.post("/predict", response_model=PredictResponse, response_model_exclude_unset=True,
              openapi_extra=PREDICT_OPENAPI,
              summary="Predict labels and probabilities (classification, multi-label) or values (regression) "
                      "for a batch of texts or images")
    async def predict(request: Request):
        if not state.ready:
            raise state.unavailable()
        t0 = time.monotonic()
        items, costs = await _read_items(request, state)
        try:
            future = state.batcher.submit(items, costs)
        except Overloaded as e:
            raise RequestError(503, "overloaded", f"the server is at capacity: {e}", "retry after the delay given "
                               "in Retry-After", headers={"Retry-After": str(settings.retry_after_s)}) from None
        left = settings.request_timeout_s - (time.monotonic() - t0)
        try:
            outputs, _feats = await _answer(request, future, left)
        except RequestError:
            raise  # the request's own fault, found by the model's checks: its status and code
        except UserInputError as e:  # an item the model refused (decoding, ...): the client's to fix
            raise RequestError(422, "invalid-input", e.message, e.hint) from None
        except asyncio.TimeoutError:
            raise RequestError(503, "timeout", f"no answer within {settings.request_timeout_s:g} s: the server is "
                               "overloaded", headers={"Retry-After": str(settings.retry_after_s)}) from None
        p = state.predictor
        return predictions(_task(p), np.asarray(outputs), list(p.classes), getattr(p, "thresholds", None))

    @app.get("/health/live", summary="The process is up")
    async def live():
        return {"status": "alive"}

    @app.get("/health/ready", summary="The model is loaded, a warm-up prediction went through and the queue has room")
    async def ready():
        if state.ready:
            full = state.batcher.saturation()
            if full is None:
                return {"status": "ready"}
            return JSONResponse({"status": "saturated", "error": "saturated", "message": f"the queue is full: {full}",
                                 "hint": "send new work elsewhere, or retry after the delay given in Retry-After"},
                                status_code=503, headers={"Retry-After": str(settings.retry_after_s)})
        e = state.unavailable()
        return JSONResponse({"status": "failed" if state.error else "loading", **e.body()}, status_code=503,
                            headers=e.headers)

    for path, probe in (("/health/live", live), ("/health/ready", ready)):  # HEAD: the same status, no body
        app.add_api_route(path, probe, methods=["HEAD"], include_in_schema=False)

    @app.get("/metadata", summary="The model card, the server's settings and the drift monitor")
    async def metadata():
        if state.predictor is None:
            raise state.unavailable()
        p = state.predictor
        task = _task(p)
        extra = {}
        if task == "multi-label":  # the thresholds /predict decides with, once here rather than per answer
            extra["thresholds"] = {c: float(t) for c, t in zip(p.classes, p.thresholds)}
        if getattr(p, "tent", None) is not None:  # serve --tent: how each request's prediction was made
            extra["test_time_adaptation"] = p.tent
        if hasattr(p, "serving"):  # backend, windows per text, output cache
            extra["serving"] = p.serving()
        return {"run": Path(run_dir).name, "modality": p.modality, "task": task, "classes": list(p.classes), **extra,
                "ready": state.ready, "model_card": p.card, "settings": settings.to_dict(),
                "drift": state.drift.describe(), "uptime_s": round(time.time() - state.started, 1)}

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics(request: Request):
        body, content_type = state.metrics.render(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    app.add_middleware(_LimitsASGI, state=state)
    return app


def _task(predictor) -> str:
    """The predictor's task (a caller's own predictor object may predate tasks: classification)."""
    return getattr(predictor, "task", "classification")


class _LimitsASGI:
    """ASGI middleware class form of :func:`_limits_middleware` (what ``add_middleware`` takes)."""

    def __init__(self, app, state: ServerState):
        self._call = _limits_middleware(app, state)

    async def __call__(self, scope, receive, send):
        await self._call(scope, receive, send)


async def _answer(request: Request, future, timeout: float):
    """The batcher's answer to this request; on timeout or when the client disconnects, the
    request is abandoned (its work not yet done is dropped) and ``asyncio.TimeoutError`` or a
    499 :class:`RequestError` is raised."""
    answer = asyncio.wrap_future(future)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({answer, gone}, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if answer in done:
        return answer.result()
    future.cancel()
    answer.cancel()
    if gone in done and not gone.cancelled():
        raise RequestError(499, "client-gone", "the client disconnected before the answer")
    raise asyncio.TimeoutError


async def _disconnected(request: Request) -> None:
    """Return once the client has gone (the body is read already: the next ASGI message is the
    disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _read_items(request, state: ServerState) -> tuple[list[Any], list[int]]:
    """The request's items and their costs: texts for a text run, checked image bytes for an
    image run."""
    s = state.settings
    modality = state.predictor.modality
    if modality == "text":
        body = await request.body()
        texts = await run_in_threadpool(parse_texts, body, request.headers.get("content-type"), s)
        return texts, [text_cost(t) for t in texts]
    if modality not in ("image", "audio"):
        raise RequestError(415, "unsupported-modality", f"serving {modality} models over HTTP is not supported yet",
                           "use `transferkit predict` on files")
    from .inputs import media_type

    mt = media_type(request.headers.get("content-type"))
    if mt != "multipart/form-data":
        a, b = ("cat.jpg", "dog.png") if modality == "image" else ("yes.wav", "no.flac")
        raise RequestError(415, "unsupported-media-type", f"this model takes {modality} files as multipart/form-data; "
                           f"got content type {mt or '(none)'!r}", f'e.g. curl -F "files=@{a}" -F "files=@{b}" URL')
    from python_multipart.exceptions import MultipartParseError
    from starlette.datastructures import UploadFile

    try:  # starlette 1.3 (the pin flwr needs) lets the parser's own error through instead of a 400
        form = await request.form(max_files=s.max_items + 1, max_fields=s.max_items + 16)
    except MultipartParseError as e:
        raise RequestError(400, "malformed-multipart", f"the multipart body cannot be parsed: {e}") from None
    try:
        extra = sorted({k for k, v in form.multi_items() if k != "files" or not isinstance(v, UploadFile)})
        if extra:
            raise RequestError(422, "invalid-request", f"unexpected form fields: {', '.join(extra[:10])}",
                               f'send each {modality} file as a file in the field "files"')
        files = form.getlist("files")
        check_count(len(files), s)
        blobs = [(f.filename or f"files[{i}]", await f.read()) for i, f in enumerate(files)]
    finally:
        await form.close()

    def check_all() -> list[int]:
        if modality == "audio":  # one clip decoded at a time; the worker decodes again per batch
            return [check_audio(data, name, s) for name, data in blobs]
        sizes = [(name, *image_size(data, name)) for name, data in blobs]
        check_request_pixels(sizes, s)  # from the headers: nothing decoded yet
        for name, data in blobs:  # one at a time: one image's pixels in memory at once
            check_image(data, name, s)
        return [image_cost(w, h) for _name, w, h in sizes]

    costs = await run_in_threadpool(check_all)
    return [data for _name, data in blobs], costs
