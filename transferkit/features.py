"""Extract features once and cache them on disk, keyed by content.

The key of a cache directory is the backbone's identity (name, weight sha256, preprocessing,
pooling, layer, initialisation); inside it, each item is found by the sha256 of its content.
So a second run on the same data, a subset of it, or a test set that overlaps a training set,
reuses what was computed.  Items are streamed in batches of similar size (texts sorted by
length, to cut padding) and written in shards as they come, so memory does not grow with the
data, and a killed extraction keeps what it finished.

The cache can only ever cost a recomputation, never change a result or stop a run: every
shard carries sha256 checksums that are verified when it is read (a damaged, truncated or
edited shard is discarded with a :class:`FeatureCacheWarning` and its items computed again),
item keys are stored as raw bytes (lossless), shards are written with fsync and rename, and
a cache that cannot be written (read-only, full disk) only makes the next run slower.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._files import atomic_write_bytes, cache_root
from ._memory import release_free_memory
from .backbones.base import Backbone
from .data.dataset import Dataset
from .errors import UserInputError

SHARD_ITEMS = 2048

# A shard is one file, ``shard-<time>-<pid>.tkf``:
#   MAGIC (8 bytes) | header length (uint32 LE) | header (JSON: rows N, dim D, key_bytes K,
#   keys_sha256, data_sha256) | keys (N x K raw bytes) | units (N x 2 int64 LE) | features (N x D float32 LE)
# The keys block is verified on its own, so a lookup reads and hashes the (small) keys of every
# shard but the features only of shards that hold a wanted item.
MAGIC = b"TKFEAT\x00\x02"
SHARD_SUFFIX = ".tkf"
# Format 1 (before): three .npy files per shard with keys as numpy S32, which dropped trailing
# NUL bytes (1 key in 256 never found) and carried no checksum.  Never read; removed on write.
LEGACY_SUFFIXES = (".hash.npy", ".feat.npy", ".units.npy")
_MAX_HEADER = 1 << 16
_STALE_TMP_SECONDS = 3600

# Cache roots found unwritable in this process -> why: warned about once, then not tried again
# (each extraction still notes it, so every run records it).
_UNWRITABLE: dict[str, str] = {}


class FeatureCacheWarning(RuntimeWarning):
    """The feature cache was damaged or could not be written: features were (re)computed."""


@dataclass
class ExtractionStats:
    """What one extraction did: for timings, notes and benchmarks.

    ``cache_notes`` holds one sentence per cache problem met (a discarded shard, a cache that
    could not be written): the run records them; each also went out as a FeatureCacheWarning.
    """

    n_items: int = 0
    n_cached: int = 0
    n_computed: int = 0
    seconds: float = 0.0
    units: np.ndarray | None = None  # (N, 2) units embedded / units present, per item
    units_name: str = "units"
    chunked: int = 0
    cut: int = 0
    extra: dict = field(default_factory=dict)
    cache_notes: list[str] = field(default_factory=list)


class _BadShard(Exception):
    """A shard whose bytes are not what its writer wrote (internal)."""


@dataclass
class _ShardIndex:
    path: Path
    rows: int
    dim: int
    keys: np.ndarray  # (rows, key_bytes) uint8, verified
    data_offset: int
    data_sha256: str


def encode_shard(keys: np.ndarray, feats: np.ndarray, units: np.ndarray) -> bytes:
    """One shard file's bytes.

    Args:
        keys: ``(N, K)`` uint8, the raw content hashes.
        feats: ``(N, D)`` float32.
        units: ``(N, 2)`` int64.
    """
    n, k = keys.shape
    keys_b = np.ascontiguousarray(keys, dtype=np.uint8).tobytes()
    data_b = (np.ascontiguousarray(units, dtype="<i8").tobytes()
              + np.ascontiguousarray(feats, dtype="<f4").tobytes())
    header = json.dumps({"rows": n, "dim": int(feats.shape[1]), "key_bytes": k,
                         "keys_sha256": hashlib.sha256(keys_b).hexdigest(),
                         "data_sha256": hashlib.sha256(data_b).hexdigest()}).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + keys_b + data_b


def _read_index(path: Path, key_bytes: int) -> _ShardIndex:
    """The verified keys of a shard.  Raises _BadShard (damaged) or OSError (unreadable)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if len(head) < 12 or head[:8] != MAGIC:
            raise _BadShard("empty" if size == 0 else "not a feature shard (truncated or overwritten)")
        (hl,) = struct.unpack("<I", head[8:])
        if hl > _MAX_HEADER:
            raise _BadShard("its header is damaged")
        try:
            meta = json.loads(f.read(hl))
            n, d, k = (int(meta[x]) for x in ("rows", "dim", "key_bytes"))
            keys_sha, data_sha = str(meta["keys_sha256"]), str(meta["data_sha256"])
        except (ValueError, KeyError, TypeError):
            raise _BadShard("its header is damaged") from None
        if k != key_bytes or n < 0 or d <= 0:
            raise _BadShard(f"its header says {n} rows of width {d}, keys of {k} bytes")
        data_offset = 12 + hl + n * k
        expected = data_offset + n * 16 + n * d * 4
        if size != expected:
            raise _BadShard(f"{size} bytes where its header implies {expected} (rows missing or added)")
        keys_b = f.read(n * k)
    if hashlib.sha256(keys_b).hexdigest() != keys_sha:
        raise _BadShard("its item keys differ from their checksum")
    keys = np.frombuffer(keys_b, dtype=np.uint8).reshape(n, k)
    return _ShardIndex(path, n, d, keys, data_offset, data_sha)


def _read_rows(shard: _ShardIndex) -> tuple[np.ndarray, np.ndarray]:
    """``feats (N, D)`` float32 and ``units (N, 2)`` int64 of a shard, verified."""
    n, d = shard.rows, shard.dim
    with open(shard.path, "rb") as f:
        f.seek(shard.data_offset)
        data = f.read(n * 16 + n * d * 4)
    if hashlib.sha256(data).hexdigest() != shard.data_sha256:
        raise _BadShard("its features differ from their checksum")
    units = np.frombuffer(data, dtype="<i8", count=2 * n).reshape(n, 2).astype(np.int64)
    feats = np.frombuffer(data, dtype="<f4", offset=16 * n).reshape(n, d).astype(np.float32)
    if not np.isfinite(feats).all():
        raise _BadShard("it holds values that are not finite")
    return feats, units


def _warn(notes: list[str] | None, message: str) -> None:
    if notes is not None:
        notes.append(message)
    warnings.warn(message, FeatureCacheWarning, stacklevel=3)


class FeatureCache:
    """Checksummed shards of ``(keys, features, units)`` under ``root/<backbone cache key>/``.

    Args:
        root: the cache folder (default ``<cache root>/features``); it need not exist or be
            writable: a cache that cannot be read or written costs speed, never the run.
    """

    key_bytes = 32  # sha256

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else cache_root() / "features"

    def _dir(self, key: str) -> Path:
        return self.root / key

    def lookup(self, key: str, hashes: list[str], notes: list[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Find cached rows; a damaged shard is deleted (warned, noted) and its items count as missing.

        Args:
            key: the backbone's cache key.
            hashes: ``N`` content hashes (sha256 hex).
            notes: problems met are appended here (and warned).

        Returns:
            ``found (N,) bool``, ``feats (N, D)`` (rows valid where found; ``(N, 0)`` if nothing
            is cached), ``units (N, 2)``.
        """
        n = len(hashes)
        found = np.zeros(n, dtype=bool)
        units = np.zeros((n, 2), dtype=np.int64)
        feats = None
        d = self._dir(key)
        want: dict[bytes, list[int]] = {}
        for i, h in enumerate(hashes):
            want.setdefault(bytes.fromhex(h), []).append(i)
        try:
            paths = sorted(d.glob(f"shard-*{SHARD_SUFFIX}")) if d.is_dir() else []
        except OSError as e:
            _warn(notes, f"feature cache {d} cannot be read ({e.strerror}): all features are computed")
            paths = []
        bad: list[str] = []
        for path in paths:
            try:
                shard = _read_index(path, self.key_bytes)
                rows = [(r, want[k]) for r, k in enumerate(map(bytes, shard.keys)) if k in want]
                if not rows:
                    continue
                if feats is not None and shard.dim != feats.shape[1]:
                    raise _BadShard(f"its width {shard.dim} differs from the other shards' {feats.shape[1]}")
                f, u = _read_rows(shard)
            except _BadShard as e:
                bad.append(f"{path.name} ({e})")
                try:
                    path.unlink()  # the next store puts its items back, verified
                except OSError:
                    pass  # a read-only cache keeps it; it is skipped again next time
                continue
            except OSError as e:
                bad.append(f"{path.name} (unreadable: {e.strerror})")
                continue
            if feats is None:
                feats = np.zeros((n, shard.dim), dtype=np.float32)
            for r, targets in rows:
                feats[targets] = f[r]
                units[targets] = u[r]
                found[targets] = True
        if bad:
            _warn(notes, f"feature cache: {len(bad)} damaged shard(s) in {d} discarded, their items computed "
                         f"again: {'; '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")
        return found, feats if feats is not None else np.zeros((n, 0), np.float32), units

    def store(self, key: str, hashes: list[str], feats: np.ndarray, units: np.ndarray,
              rows: np.ndarray | None = None, notes: list[str] | None = None) -> bool:
        """Write one shard: ``feats[rows]`` (all rows by default) with their hashes and units.

        Args:
            key: the backbone's cache key.
            hashes: the ``M`` content hashes of the rows written.
            feats: ``(N, D)`` float32; ``rows`` (``M`` indices) pick the rows written.
            units: ``(M, 2)`` int64.
            notes: where a failure to write is noted (and warned, once per cache root).

        Returns:
            Whether the shard was written.  A cache that cannot be written (read-only, full
            disk, not a folder) is noted and skipped for the rest of the process.
        """
        if not len(hashes):
            return True
        root = str(self.root)
        if root in _UNWRITABLE:
            if notes is not None and _UNWRITABLE[root] not in notes:
                notes.append(_UNWRITABLE[root])
            return False
        rows = np.arange(len(hashes)) if rows is None else np.asarray(rows)
        d = self._dir(key)
        try:
            keys = np.frombuffer(b"".join(bytes.fromhex(h) for h in hashes), dtype=np.uint8)
            blob = encode_shard(keys.reshape(len(hashes), -1), feats[rows], units)
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(d / f"shard-{time.time_ns():x}-{os.getpid()}{SHARD_SUFFIX}", blob)
        except OSError as e:
            why = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
            message = (f"feature cache {self.root} cannot be written ({why}): features are computed but not "
                       "kept, so the next run computes them again")
            _UNWRITABLE[root] = message
            if notes is not None:
                notes.append(message)
            warnings.warn(message, FeatureCacheWarning, stacklevel=2)
            return False
        self._tidy(d)
        return True

    @staticmethod
    def _tidy(d: Path) -> None:
        """Remove format-1 shards (never read) and temporary files of writes killed long ago."""
        now = time.time()
        try:
            names = [p for p in d.iterdir() if p.name.startswith(("shard-", ".shard-"))]
        except OSError:
            return
        for p in names:
            try:
                legacy = p.name.endswith(LEGACY_SUFFIXES)
                stale = p.name.endswith(".tmp") and now - p.stat().st_mtime > _STALE_TMP_SECONDS
                if legacy or stale:
                    p.unlink()
            except OSError:
                pass  # tidying is a courtesy


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
        ``features (N, D)`` float32 in the order of ``data``, and the extraction's stats (its
        ``cache_notes`` say what went wrong with the cache, if anything: it never stops a run).
    """
    t0 = time.perf_counter()
    if backend not in ("torch", "onnx"):
        raise UserInputError(f"backend must be torch or onnx, got {backend!r}")
    if cache is True:
        cache = FeatureCache()
    hashes = data.content_hashes()
    n = len(data)
    key = backbone.cache_key() if cache else ""
    notes: list[str] = []
    if cache:
        found, feats, units = cache.lookup(key, hashes, notes=notes)
    else:
        found, feats, units = np.zeros(n, bool), np.zeros((n, 0), np.float32), np.zeros((n, 2), np.int64)
    # Each distinct content is computed once, even when it repeats in the data.
    first_of: dict[str, int] = {}
    todo = [i for i in range(n) if not found[i] and first_of.setdefault(hashes[i], i) == i]
    stats = ExtractionStats(n_items=n, n_cached=int(found.sum()), n_computed=len(todo),
                            units_name=backbone.units_name(), cache_notes=notes)
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
        module = backbone.module
        module.to(device)
        pending: list[int] = []  # rows computed but not yet in the cache (the rows live in feats)
        try:
            pool = max(1, backbone.pool_items(batch_size))
            s = 0
            with torch.inference_mode():
                while s < len(todo):
                    idx = todo[s:s + pool]
                    s += len(idx)
                    batch = backbone.prepare([_item(data, i) for i in idx]).to(device)
                    out = forward(batch).float().cpu().numpy()
                    u = np.asarray(batch.units) if batch.units is not None else np.zeros((len(idx), 2), np.int64)
                    if feats.shape[1] != out.shape[1]:
                        if found.any():  # only on the first batch: cached rows of another width
                            _warn(notes, f"feature cache: the cached features of {backbone.describe()} are "
                                         f"{feats.shape[1]} wide but the backbone gives {out.shape[1]}: all "
                                         "items computed again")
                            found[:] = False
                            first_of = {}
                            every = [i for i in range(n) if first_of.setdefault(hashes[i], i) == i]
                            queued = set(todo)
                            todo += [i for i in every if i not in queued]
                            bar.total = len(todo)
                            stats.n_cached, stats.n_computed = 0, len(todo)
                        feats = np.zeros((n, out.shape[1]), dtype=np.float32)
                    feats[idx] = out
                    units[idx] = u
                    pending += idx
                    bar.update(len(idx))
                    release_free_memory()
                    if cache and len(pending) >= SHARD_ITEMS:
                        _flush(cache, key, hashes, feats, units, pending, notes)
                        pending = []
        finally:
            bar.close()
            if cache and pending:
                _flush(cache, key, hashes, feats, units, pending, notes)
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
           rows: list[int], notes: list[str]) -> None:
    cache.store(key, [hashes[i] for i in rows], feats, units[rows], rows=np.asarray(rows), notes=notes)
