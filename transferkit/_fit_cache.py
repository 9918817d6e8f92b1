"""Fitted state kept on disk by what it was fitted on, so that an identical fit is read back.

A fit whose result depends only on its inputs (the items' content hashes, the targets, the
options, the seed and the code that fits) can be keyed by a sha256 of all of them; the same
key later means the same fitted state.  Used by the classical model (TF-IDF vocabularies, idf
weights and the cross-validated head) that every text fit's control refits otherwise.

Each entry is one safetensors file, ``<cache root>/fits/<kind>/<key>.safetensors``, with the
fitted tensors and, under :data:`INFO`, the fit's facts as UTF-8 JSON bytes: never a pickle.
Written atomically; an entry that cannot be parsed is removed and counts as a miss, and a cache
that cannot be written only costs the refit next time.
"""
from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from ._files import atomic_write_bytes, cache_root, files_sha256, json_bytes

#: The tensor that holds an entry's facts (JSON), beside the fitted tensors.
INFO = "__fit_info__"
SUFFIX = ".safetensors"


def fit_key(parts: dict[str, Any], code: Iterable[str | Path] = (), packages: Iterable[str] = ()) -> str:
    """sha256 (hex) of ``parts`` (JSON; numpy values allowed), the contents of the ``code`` files
    (the modules that fit: an edit to them gives new keys) and the versions of ``packages``."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    code = list(code)
    blob = json_bytes({"parts": parts, "code": files_sha256(code) if code else None, "packages": versions})
    return hashlib.sha256(blob).hexdigest()


def items_sha256(hashes: Iterable[str]) -> str:
    """One sha256 over items' content hashes, in order."""
    h = hashlib.sha256()
    for c in hashes:
        h.update(c.encode() + b"\0")
    return h.hexdigest()


def _path(kind: str, key: str) -> Path:
    return cache_root() / "fits" / kind / f"{key}{SUFFIX}"


def load_fit(kind: str, key: str):
    """``(tensors, info)`` stored under ``key``, or ``None`` (absent, unreadable or damaged)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = _path(kind, key)
    try:
        tensors = load(path.read_bytes())
        info = json.loads(bytes(tensors.pop(INFO).to(torch.uint8).numpy().tobytes()).decode())
    except OSError:
        return None  # absent or unreadable: computed again
    except (SafetensorError, KeyError, ValueError):  # damaged (a bad JSON is a ValueError): a miss
        path.unlink(missing_ok=True)
        return None
    return tensors, info


def store_fit(kind: str, key: str, tensors: dict, info: dict[str, Any]) -> bool:
    """Write ``tensors`` (name -> torch tensor or numpy array) and ``info`` (JSON-able) under ``key``.

    Returns whether it was written."""
    import numpy as np
    import torch
    from safetensors.torch import save

    blob = torch.from_numpy(np.frombuffer(json_bytes(info), dtype=np.uint8).copy())
    try:
        data = save({**{k: torch.as_tensor(v).contiguous() for k, v in tensors.items()}, INFO: blob})
        path = _path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    except OSError:
        return False  # a read-only or full cache only costs the refit next time
    return True
