"""The server's settings: safe defaults, overridable by the run's ``config.json`` and by flags."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserInputError


@dataclass
class ServeSettings:
    """Everything the server can be told; each limit keeps one request from hurting the others.

    Attributes:
        host: interface to bind; loopback by default (put a reverse proxy in front to expose it).
        port: TCP port (0: any free port).
        max_body_bytes: largest request body accepted (413 above it).
        max_items: items per request at most (422 above it).
        max_text_chars: characters per text at most (422 above it); bounds tokenisation and
            the number of chunks a text is split into.
        max_image_pixels: width x height of an uploaded image at most (422 above it); checked
            from the header, before any pixel is decoded.
        max_batch: items the worker runs through the model at once (requests are merged).
        max_delay_ms: how long the worker waits for more requests to fill a batch.
        queue_items: items waiting for the worker at most; above it requests get 503 with
            ``Retry-After`` instead of queueing without bound.  A request that would wait longer
            than ``request_timeout_s`` behind the queue (at the measured model rate) gets the
            same answer at once.
        request_timeout_s: a request not answered by then gets 503 (its items are dropped if
            the worker has not started them).
        retry_after_s: the ``Retry-After`` header sent with 503.
        drift_window: recent request embeddings kept for the drift test.
        drift_every: run the drift test after every this many requests (in the background).
        drift_min_items: no test before the window holds this many items.
        drift_p_value: alarm when the MMD permutation p-value is below this.
        drift_permutations: permutations of the MMD test.
        warmup: run one prediction before reporting ready.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 10 * 2**20
    max_items: int = 64
    max_text_chars: int = 20_000
    max_image_pixels: int = 40_000_000
    max_batch: int = 32
    max_delay_ms: float = 5.0
    queue_items: int = 256
    request_timeout_s: float = 30.0
    retry_after_s: int = 1
    drift_window: int = 200
    drift_every: int = 50
    drift_min_items: int = 50
    drift_p_value: float = 0.01
    drift_permutations: int = 500
    warmup: bool = True

    def __post_init__(self) -> None:
        positive = ("max_body_bytes", "max_items", "max_text_chars", "max_image_pixels", "max_batch", "queue_items",
                    "drift_window", "drift_every", "drift_permutations")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserInputError(f"serve setting {name} must be a positive integer, got {v!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise UserInputError(f"port must be 0..65535, got {self.port!r}")
        if self.max_delay_ms < 0 or self.request_timeout_s <= 0 or self.retry_after_s < 0:
            raise UserInputError("max_delay_ms and retry_after_s must be >= 0 and request_timeout_s > 0")
        if not 0.0 < self.drift_p_value < 1.0:
            raise UserInputError(f"drift_p_value must be between 0 and 1, got {self.drift_p_value!r}")
        if not 2 <= self.drift_min_items <= self.drift_window:
            raise UserInputError(f"drift_min_items must be in 2..drift_window ({self.drift_window}), "
                                 f"got {self.drift_min_items!r}")
        if self.queue_items < self.max_items:
            raise UserInputError(f"queue_items ({self.queue_items}) must be at least max_items ({self.max_items}), "
                                 "or no full request could ever be queued")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def for_run(cls, run_dir: str | Path, **overrides: Any) -> "ServeSettings":
        """Defaults, then the optional ``"serve"`` section of the run's ``config.json``, then
        ``overrides`` (flags; ``None`` values are ignored)."""
        d: dict[str, Any] = {}
        path = Path(run_dir) / "config.json"
        if path.is_file():
            try:
                d.update(json.loads(path.read_text()).get("serve") or {})
            except (ValueError, AttributeError) as e:
                raise UserInputError(f"{path} is damaged: {e}") from None
        d.update({k: v for k, v in overrides.items() if v is not None})
        if "drift_min_items" not in d and isinstance(d.get("drift_window"), int):
            d["drift_min_items"] = max(2, min(cls.drift_min_items, d["drift_window"]))  # a small window is full
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserInputError(f"unknown serve settings: {', '.join(unknown)}", hint=f"allowed: {', '.join(sorted(names))}")
        return cls(**d)
