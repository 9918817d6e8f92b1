"""Extract features once and cache them on disk, keyed by content.

The key of a cache directory is the backbone's identity (name, weight sha256, preprocessing,
pooling, layer, initialisation); inside it, each item is found by the sha256 of its content.
So a second run on the same data, a subset of it, or a test set that overlaps a training set,
reuses what was computed.  Items are streamed in batches of similar size (texts sorted by
length, to cut padding) and written in shards as they come, so memory does not grow with the
data, and a killed extraction keeps what it finished.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._files import cache_root
from ._memory import release_free_memory
from .backbones.base import Backbone
from .data.dataset import Dataset
from .errors import UserInputError

SHARD_ITEMS = 2048


@dataclass
class ExtractionStats:
    """What one extraction did: for timings, notes and benchmarks."""

    n_items: int = 0
    n_cached: int = 0
    n_computed: int = 0
    seconds: float = 0.0
    units: np.ndarray | None = None  # (N, 2) units embedded / units present, per item
    units_name: str = "units"
    chunked: int = 0
    cut: int = 0
    extra: dict = field(default_factory=dict)


class FeatureCache:
    """Shards of ``(hashes, features, units)`` under ``root/<backbone cache key>/``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else cache_root() / "features"

    def _dir(self, key: str) -> Path:
        return self.root / key

    def lookup(self, key: str, hashes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Find cached rows.

        Returns:
            ``found (N,) bool``, ``feats (N, D)`` (rows valid where found; ``(N, 0)`` if nothing
            is cached), ``units (N, 2)``.
        """
        n = len(hashes)
        found = np.zeros(n, dtype=bool)
        units = np.zeros((n, 2), dtype=np.int64)
        d = self._dir(key)
        if not d.is_dir():
            return found, np.zeros((n, 0), np.float32), units
        want: dict[bytes, list[int]] = {}
        for i, h in enumerate(hashes):
            want.setdefault(bytes.fromhex(h), []).append(i)
        feats = None
        for idx_file in sorted(d.glob("shard-*.hash.npy")):
            stem = idx_file.name[: -len(".hash.npy")]
            try:
                sh = np.load(idx_file, allow_pickle=False)
            except (OSError, ValueError):
                continue  # a damaged shard only costs a recomputation
            rows = [(r, want[bytes(sh[r])]) for r in range(len(sh)) if bytes(sh[r]) in want]
            if not rows:
                continue
            try:
                f = np.load(d / f"{stem}.feat.npy", mmap_mode="r", allow_pickle=False)
                u = np.load(d / f"{stem}.units.npy", allow_pickle=False)
            except (OSError, ValueError):
                continue
            if feats is None:
                feats = np.zeros((n, f.shape[1]), dtype=np.float32)
            for r, targets in rows:
                feats[targets] = f[r]
                units[targets] = u[r]
                found[targets] = True
        return found, feats if feats is not None else np.zeros((n, 0), np.float32), units

    def store(self, key: str, hashes: list[str], feats: np.ndarray, units: np.ndarray,
              rows: np.ndarray | None = None) -> None:
        """Write one shard: ``feats[rows]`` (all rows by default) with their hashes and units.

        The rows are copied into the file in blocks, so a shard costs no second copy of the
        features in memory.  The hash file goes last: a half-written shard is never read.
        """
        if not len(hashes):
            return
        rows = np.arange(len(hashes)) if rows is None else np.asarray(rows)
        d = self._dir(key)
        d.mkdir(parents=True, exist_ok=True)
        stem = f"shard-{time.time_ns():x}-{os.getpid()}"
        tmp = d / f".{stem}.feat.npy.tmp"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(rows), feats.shape[1]))
        for s in range(0, len(rows), 256):
            out[s:s + 256] = feats[rows[s:s + 256]]
        out.flush()
        del out
        os.replace(tmp, d / f"{stem}.feat.npy")
        for suffix, arr in ((".units.npy", units.astype(np.int64)),
                            (".hash.npy", np.array([bytes.fromhex(h) for h in hashes], dtype="S32"))):
            tmp = d / f".{stem}{suffix}.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
            os.replace(tmp, d / f"{stem}{suffix}")


def extract_features(backbone: Backbone, data: Dataset, *, batch_size: int = 32,
                     cache: FeatureCache | None | bool = True, progress: bool | None = None,
                     device: str | torch.device = "cpu", backend: str = "torch") -> tuple[np.ndarray, ExtractionStats]:
    """Pooled features for every item of ``data``.

    Args:
        backbone: any :class:`Backbone`; its module is loaded only if something must be computed.
        data: the items (their modality must match the backbone's).
        batch_size: items per forward pass (text backbones prepare pools of many items and run
            their own ``chunk_batch`` windows per pass).
        cache: ``True`` for the default cache, a :class:`FeatureCache`, or ``False``/``None``.
        progress: show a progress bar (default: when stderr is a terminal).
        backend: ``torch``, or ``onnx``: the backbone's feature graph run by ONNX Runtime on CPU
            (exported and checked once per cache key; :class:`transferkit.onnx_runtime.OnnxFeatures`).

    Returns:
        ``features (N, D)`` float32 in the order of ``data``, and the extraction's stats.
    """
    t0 = time.perf_counter()
    if cache is True:
        cache = FeatureCache()
    hashes = data.content_hashes()
    n = len(data)
    key = backbone.cache_key() if cache else ""
    if cache:
        found, feats, units = cache.lookup(key, hashes)
    else:
        found, feats, units = np.zeros(n, bool), np.zeros((n, 0), np.float32), np.zeros((n, 2), np.int64)
    # Each distinct content is computed once, even when it repeats in the data.
    first_of: dict[str, int] = {}
    todo = [i for i in range(n) if not found[i] and first_of.setdefault(hashes[i], i) == i]
    stats = ExtractionStats(n_items=n, n_cached=int(found.sum()), n_computed=len(todo),
                            units_name=backbone.units_name())
    if todo:
        todo.sort(key=lambda i: -backbone.sort_key(data.inputs[i]))
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="item", desc=f"features {backbone.describe()}", leave=False,
                   disable=(not progress) if progress is not None else None, dynamic_ncols=True)
        forward = backbone.forward_features
        if backend == "onnx":
            from .onnx_runtime import onnx_features

            forward = onnx_features(backbone).forward_features
            device = "cpu"
        elif backend != "torch":
            raise UserInputError(f"backend must be torch or onnx, got {backend!r}")
        module = backbone.module
        module.to(device)
        pending: list[int] = []  # rows computed but not yet in the cache (the rows live in feats)
        try:
            pool = max(1, backbone.pool_items(batch_size))
            with torch.inference_mode():
                for s in range(0, len(todo), pool):
                    idx = todo[s:s + pool]
                    batch = backbone.prepare([_item(data, i) for i in idx]).to(device)
                    out = forward(batch).float().cpu().numpy()
                    u = np.asarray(batch.units) if batch.units is not None else np.zeros((len(idx), 2), np.int64)
                    if feats.shape[1] == 0:
                        feats = np.zeros((n, out.shape[1]), dtype=np.float32)
                    feats[idx] = out
                    units[idx] = u
                    pending += idx
                    bar.update(len(idx))
                    release_free_memory()
                    if cache and len(pending) >= SHARD_ITEMS:
                        _flush(cache, key, hashes, feats, units, pending)
                        pending = []
        finally:
            bar.close()
            if cache and pending:
                _flush(cache, key, hashes, feats, units, pending)
        for i in range(n):  # repeated contents take the row of their first occurrence
            j = first_of.get(hashes[i], i)
            if j != i and not found[i]:
                feats[i], units[i] = feats[j], units[j]
    stats.units = units
    stats.chunked = int((units[:, 1] > backbone_chunk_limit(backbone)).sum()) if backbone.modality == "text" else 0
    stats.cut = int((units[:, 0] < units[:, 1]).sum())
    stats.seconds = time.perf_counter() - t0
    return feats, stats


def _item(data: Dataset, i: int):
    """An item as the backbone's ``prepare`` takes it: in-memory audio travels with its rate."""
    x = data.inputs[i]
    if data.modality == "audio" and data.sampling_rate and isinstance(x, np.ndarray):
        return (x, data.sampling_rate)
    return x


def backbone_chunk_limit(backbone: Backbone) -> int:
    """Content tokens that fit in one chunk (texts longer than this were split)."""
    room = getattr(backbone, "chunk_room", None)
    return room() if room else 1 << 62


def _flush(cache: FeatureCache, key: str, hashes: list[str], feats: np.ndarray, units: np.ndarray,
           rows: list[int]) -> None:
    cache.store(key, [hashes[i] for i in rows], feats, units[rows], rows=np.asarray(rows))
