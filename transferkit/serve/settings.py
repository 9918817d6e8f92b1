"""The server's settings: safe defaults, then the run's ``config.json`` (which may only tighten
them), then the user's flags (which may set anything)."""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserInputError, shown

log = logging.getLogger("transferkit.serve")

#: Settings that bound work, memory or waiting: lower is always safer.  A run's ``config.json``
#: (a file that may come from someone else) can lower them, never raise them; only the user's
#: own flags can.
TIGHTEN_ONLY = ("max_body_bytes", "max_items", "max_text_chars", "max_image_pixels", "max_request_pixels",
                "max_batch", "max_batch_chars", "max_batch_pixels", "max_delay_ms", "queue_items", "queue_chars",
                "queue_pixels", "request_timeout_s", "keep_alive_s", "max_connections", "drift_window",
                "drift_permutations", "cache_items", "max_audio_ms", "max_batch_audio_ms", "queue_audio_ms")


@dataclass
class ServeSettings:
    """Everything the server can be told; each limit keeps one request from hurting the others.

    Attributes:
        host: interface to bind; loopback by default (put a reverse proxy in front to expose it).
            A run's ``config.json`` can only name a loopback address: binding beyond this
            machine takes the user's own ``--host``.
        port: TCP port (0: any free port).
        max_body_bytes: largest request body accepted (413 above it).
        max_items: items per request at most (422 above it).
        max_text_chars: characters per text at most (422 above it); bounds tokenisation and
            the number of chunks a text is split into.
        max_image_pixels: width x height of an uploaded image at most (422 above it); checked
            from the header, before any pixel is decoded.
        max_request_pixels: width x height summed over the images of one request at most (422
            above it, from the headers, before decoding).
        max_batch: items the worker runs through the model at once (requests are merged).
        max_batch_chars: characters of text per model call at most (a longer single text runs
            alone); a large request is run in several calls, taking turns with other requests.
        max_batch_pixels: decoded image pixels per model call at most, the same way: bounds the
            memory of decoded images (a larger single image runs alone).
        max_delay_ms: how long the worker waits for more requests to fill a batch.
        queue_items: items waiting for the worker at most; above it requests get 503 with
            ``Retry-After`` instead of queueing without bound.  A request that would not be
            answered within ``request_timeout_s`` (at the measured model rate) gets the same
            answer at once.
        queue_chars: characters of text waiting at most (each text counts at least 256), 503
            above it; an empty queue takes any valid request.
        queue_pixels: image pixels waiting at most (each image counts at least 256 x 256), the
            same way.
        max_audio_ms: an uploaded audio clip's duration at most, in milliseconds (422 above it,
            after decoding it once).
        max_batch_audio_ms: audio per model call at most, in milliseconds (as max_batch_pixels).
        queue_audio_ms: audio waiting at most, in milliseconds (each clip counts at least one
            second), 503 above it.
        request_timeout_s: a request not answered by then gets 503; its work not yet started
            is dropped, and so is the work of a client that disconnects.
        retry_after_s: the ``Retry-After`` header sent with 503.
        keep_alive_s: a connection idle this long (before its first request too) is closed.
        max_connections: open connections at most; requests beyond get 503.
        drift_window: recent request embeddings kept for the drift test.
        drift_every: run the drift test after every this many requests (in the background).
        drift_min_items: no test before the window holds this many items.
        drift_p_value: alarm when the MMD permutation p-value is below this.
        drift_permutations: permutations of the MMD test.
        warmup: run one prediction before reporting ready.
        backend: ``auto`` (the run's fastest checked ONNX graph: int8 where its export kept
            accuracy, else fp32; PyTorch without an export), ``torch``, ``onnx`` or ``onnx-int8``.
        max_chunks: text runs: windows per text at most (``None``: the run's own, 8 by default);
            fewer bound the time of a long text, and its prediction reads only its first windows.
        cache_items: recent items whose outputs are kept by content hash (0: no cache).
        threads: ONNX Runtime intra-op threads (``None``: its default, one per core).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 10 * 2**20
    max_items: int = 64
    max_text_chars: int = 20_000
    max_image_pixels: int = 40_000_000
    max_request_pixels: int = 200_000_000
    max_batch: int = 32
    max_batch_chars: int = 64_000
    max_batch_pixels: int = 50_000_000
    max_delay_ms: float = 5.0
    queue_items: int = 256
    queue_chars: int = 2_000_000
    queue_pixels: int = 400_000_000
    request_timeout_s: float = 30.0
    retry_after_s: int = 1
    keep_alive_s: float = 5.0
    max_connections: int = 256
    drift_window: int = 200
    drift_every: int = 50
    drift_min_items: int = 50
    drift_p_value: float = 0.01
    drift_permutations: int = 500
    warmup: bool = True
    backend: str = "auto"
    max_chunks: int | None = None
    cache_items: int = 1024
    threads: int | None = None
    max_audio_ms: int = 600_000
    max_batch_audio_ms: int = 600_000
    queue_audio_ms: int = 7_200_000

    def __post_init__(self) -> None:
        positive = ("max_body_bytes", "max_items", "max_text_chars", "max_image_pixels", "max_request_pixels",
                    "max_batch", "max_batch_chars", "max_batch_pixels", "queue_items", "queue_chars", "queue_pixels",
                    "max_connections", "drift_window", "drift_every", "drift_permutations", "max_audio_ms",
                    "max_batch_audio_ms", "queue_audio_ms")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserInputError(f"serve setting {name} must be a positive integer, got {v!r}")
        for name in ("max_chunks", "threads"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise UserInputError(f"serve setting {name} must be a positive integer, got {v!r}")
        if not isinstance(self.cache_items, int) or isinstance(self.cache_items, bool) or self.cache_items < 0:
            raise UserInputError(f"serve setting cache_items must be 0 (no cache) or more, got {self.cache_items!r}")
        if self.backend not in ("auto", "torch", "onnx", "onnx-int8"):
            raise UserInputError(f"serve setting backend must be auto, torch, onnx or onnx-int8, got {self.backend!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise UserInputError(f"port must be 0..65535, got {self.port!r}")
        if not isinstance(self.host, str) or not self.host:
            raise UserInputError(f"host must be an interface name or address, got {self.host!r}")
        if self.max_delay_ms < 0 or self.request_timeout_s <= 0 or self.retry_after_s < 0 or self.keep_alive_s <= 0:
            raise UserInputError("max_delay_ms and retry_after_s must be >= 0, request_timeout_s and keep_alive_s > 0")
        if not 0.0 < self.drift_p_value < 1.0:
            raise UserInputError(f"drift_p_value must be between 0 and 1, got {self.drift_p_value!r}")
        if not 2 <= self.drift_min_items <= self.drift_window:
            raise UserInputError(f"drift_min_items must be in 2..drift_window ({self.drift_window}), "
                                 f"got {self.drift_min_items!r}")
        if self.queue_items < self.max_items:
            raise UserInputError(f"queue_items ({self.queue_items}) must be at least max_items ({self.max_items}), "
                                 "or no full request could ever be queued")
        if self.max_request_pixels < self.max_image_pixels:
            raise UserInputError(f"max_request_pixels ({self.max_request_pixels:,}) must be at least "
                                 f"max_image_pixels ({self.max_image_pixels:,}), or no largest image could be sent")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def predictor_options(self) -> dict[str, Any]:
        """The settings the :class:`~transferkit.serve.predictor.Predictor` takes."""
        return {"backend": self.backend, "max_chunks": self.max_chunks, "cache_items": self.cache_items,
                "threads": self.threads}

    @classmethod
    def for_run(cls, run_dir: str | Path, **overrides: Any) -> "ServeSettings":
        """Defaults, then the optional ``"serve"`` section of the run's ``config.json``, then
        ``overrides`` (the user's flags; ``None`` values are ignored).

        A run directory may come from someone else, so its file can only make the server
        safer: a value of :data:`TIGHTEN_ONLY` above the default and a ``host`` that is not a
        loopback address are ignored with a warning (the user's flags set them).  The model
        card is never read for settings.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        path = Path(run_dir) / "config.json"
        from_run: dict[str, Any] = {}
        if path.is_file():
            try:
                section = json.loads(path.read_text()).get("serve") or {}
                if not isinstance(section, dict):
                    raise ValueError(f'"serve" must be an object, not {type(section).__name__}')
            except (ValueError, AttributeError) as e:
                raise UserInputError(f"{shown(path)} is damaged: {e}") from None
            from_run = _tightened(section, overrides, path)
        d = {**from_run, **{k: v for k, v in overrides.items() if v is not None}}
        if "drift_min_items" not in d and isinstance(d.get("drift_window"), int):
            d["drift_min_items"] = max(2, min(cls.drift_min_items, d["drift_window"]))  # a small window is full
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserInputError(f"unknown serve settings: {', '.join(map(shown, unknown))}",
                                 hint=f"allowed: {', '.join(sorted(names))}")
        return cls(**d)


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.x.x.x`` or ``::1``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _tightened(section: dict[str, Any], overrides: dict[str, Any], path: Path) -> dict[str, Any]:
    """The run's settings that may apply: those the user's flags leave open, and only where
    they make the server safer than the defaults."""
    defaults = ServeSettings.__dataclass_fields__
    out = {}
    for name, value in section.items():
        if overrides.get(name) is not None:
            continue  # the user's flag wins anyway
        field = defaults.get(name)
        if field is None:
            out[name] = value  # reported as unknown with the rest
        elif name == "host" and not (isinstance(value, str) and is_loopback(value)):
            log.warning("%s asks to bind to %s; ignored: binding beyond this machine needs --host", shown(path),
                        shown(str(value)))
        elif (name in TIGHTEN_ONLY and isinstance(value, (int, float)) and not isinstance(value, bool)
              and value > field.default):
            log.warning("%s sets %s = %s, above the default %s; ignored: a run's files can only tighten the "
                        "server's limits, your own flags (or ServeSettings.for_run overrides) raise them",
                        shown(path), name, value, field.default)
        else:
            out[name] = value
    return out
