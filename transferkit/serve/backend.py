"""What the server predicts with: the fastest runtime of the run that passed its checks, and a
cache of recent items' outputs.

Backends, fastest first: the run's ONNX int8 graph (``transferkit export --quantize int8``) when
the export's check kept the task's accuracy within :data:`INT8_MAX_DROP`; its fp32 ONNX graph
(exported only when it matched PyTorch on the run's test items); PyTorch.  ``auto`` (the default)
takes the first that applies and says why in ``/metadata``; naming one that does not apply is an
error.  The output cache keys items by a hash of their content (texts as UTF-8, images as their
encoded bytes or pixels), so a repeated item skips the model; it holds the item's outputs and its
pooled features, which the drift monitor still sees.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, UserInputError
from ..export import INT8_MAX_DROP

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


def int8_accepted(entry: dict[str, Any]) -> tuple[bool, str]:
    """Whether an export's int8 graph kept the run's accuracy, and the figure that says so."""
    q = entry.get("int8") or {}
    if "accepted" in q:  # exports since issue #25 record their own verdict
        return bool(q["accepted"]), str(q.get("check", "the export's accuracy check"))
    change = q.get("accuracy_change")
    if change is None:
        return False, "the export measured no accuracy change of its int8 graph (not a classification run, " \
                      "or its test split was not there)"
    ok = change >= -INT8_MAX_DROP
    return ok, f"test accuracy {q['accuracy_fp32']:.3f} -> {q['accuracy_int8']:.3f} " \
               f"({'within' if ok else 'beyond'} {100 * INT8_MAX_DROP:g} point)"


def choose_backend(card: dict[str, Any], run_dir: str | Path, asked: str = "auto", *, tent: bool = False,
                   which: str = "delivered", needs_features: bool = False) -> dict[str, Any]:
    """``{"name": "onnx-int8" | "onnx" | "torch", "file": str | None, "why": str}`` for a run.

    Args:
        card: the run's model card (its ``export`` entry is read).
        asked: ``auto`` or a backend the user named (then it must apply, else UserInputError).
        tent: serve --tent adapts the PyTorch model on each request: PyTorch only.
        which: the run's model being served (``delivered`` or ``transfer``): the graph must be it.
        needs_features: the drift monitor needs the pooled features: a graph without that output
            (an export made before graphs gave it) does not apply.
    """
    if asked not in BACKENDS:
        raise UserInputError(f"backend must be one of {', '.join(BACKENDS)}, got {asked!r}")
    if asked == "torch":
        return {"name": "torch", "file": None, "why": "asked for (--backend torch)"}
    entry = card.get("export") or {}
    reason = None
    if tent:
        reason = "--tent adapts the PyTorch model on each request"
    elif not entry:
        reason = f"the run has no ONNX export (`transferkit export {run_dir} --quantize int8` makes one)"
    elif entry.get("model", "delivered") != which:
        reason = f"the export holds the run's {entry.get('model')} model, not the {which} one served"
    elif needs_features and "features_output" not in entry:
        reason = f"the export predates graphs that give features for the drift monitor (re-run `transferkit " \
                 f"export {run_dir}`)"
    else:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            reason = "onnxruntime is not installed (pip install 'transferkit[export]')"
    if reason is not None:
        if asked != "auto":
            if "not installed" in reason:
                raise MissingDependencyError("--backend onnx", "'transferkit[export]'")
            raise UserInputError(f"cannot serve with --backend {asked}: {reason}",
                                 hint="leave --backend out (auto) to serve with what applies")
        return {"name": "torch", "file": None, "why": reason}
    ok, check = int8_accepted(entry)
    if "int8" in entry and (asked == "onnx-int8" or (asked == "auto" and ok)):
        file = entry["int8"]["file"]
        why = "asked for" if asked != "auto" else "the fastest graph whose export check kept accuracy"
        choice = {"name": "onnx-int8", "file": file, "why": f"{why}: {check}"}
    elif asked == "onnx-int8":
        raise UserInputError(f"{run_dir} has no int8 export",
                             hint=f"run `transferkit export {run_dir} --quantize int8`")
    else:
        why = "asked for" if asked != "auto" else "fp32 graph that matched PyTorch at export"
        no8 = "" if asked != "auto" else ("; no int8 graph" if "int8" not in entry else f"; int8 not used: {check}")
        choice = {"name": "onnx", "file": entry["file"], "why": why + no8}
    if not (Path(run_dir) / choice["file"]).is_file():
        if asked != "auto":
            raise UserInputError(f"{choice['file']} is missing from {run_dir}", hint="re-run `transferkit export`")
        return {"name": "torch", "file": None, "why": f"{choice['file']} named by the card is missing"}
    return choice


def content_key(item: Any) -> bytes:
    """A digest of what an item holds: equal items (same text, same image bytes or pixels) share it."""
    h = hashlib.blake2b(digest_size=16)
    if isinstance(item, str):
        h.update(b"t")
        h.update(item.encode("utf-8", "surrogatepass"))
    elif isinstance(item, (bytes, bytearray)):
        h.update(b"b")
        h.update(item)
    else:
        a = np.ascontiguousarray(item)
        h.update(f"a{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.digest()


class OutputCache:
    """The ``capacity`` most recently used items' outputs (and pooled features), by content.

    Thread-safe (the worker thread fills it, scrapes read its counts)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._rows: OrderedDict[bytes, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: bytes) -> tuple[np.ndarray, np.ndarray | None] | None:
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                self.misses += 1
                return None
            self._rows.move_to_end(key)
            self.hits += 1
            return row

    def put(self, key: bytes, outputs: np.ndarray, feats: np.ndarray | None) -> None:
        with self._lock:
            self._rows[key] = (outputs, feats)
            self._rows.move_to_end(key)
            while len(self._rows) > self.capacity:
                self._rows.popitem(last=False)

    def describe(self) -> dict[str, int]:
        with self._lock:
            return {"capacity": self.capacity, "held": len(self._rows), "hits": self.hits, "misses": self.misses}
