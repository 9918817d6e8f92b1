"""Input checks and small helpers shared by the score functions."""
from __future__ import annotations

from typing import Iterator

import numpy as np

# Rows converted to float64 at a time: big feature matrices (20,000 x 1,280 float32) are never
# copied whole, so a score's memory stays near that of its (D, D) or (N, N) Gram matrix.
CHUNK_ROWS = 4096


def as_features(features, name: str = "features") -> np.ndarray:
    """``features`` as a 2-D array (float32 or float64 kept, anything else made float64).

    Raises:
        ValueError: not 2-D, empty, or not finite.
    """
    f = np.asarray(features)
    if f.dtype not in (np.float32, np.float64):
        f = f.astype(np.float64)
    if f.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D), got shape {f.shape}")
    if f.shape[0] == 0 or f.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {f.shape}")
    for sl in row_chunks(f.shape[0]):
        if not np.isfinite(f[sl]).all():
            raise ValueError(f"{name} contain NaN or infinite values")
    return f


def encode_labels(labels, n: int) -> tuple[np.ndarray, int]:
    """Class labels of any type -> ``(codes (N,) int64 in [0, C), C)``, classes in sorted order.

    Codes depend only on which items share a label, so every score built on them is
    invariant to renaming or permuting the classes.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"labels must be a 1-D array of {n} entries, got shape {y.shape}")
    _, codes = np.unique(y, return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    return codes, int(codes.max()) + 1


def row_chunks(n: int, size: int = CHUNK_ROWS) -> Iterator[slice]:
    for s in range(0, n, size):
        yield slice(s, min(s + size, n))


def class_sums(m: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """``(C, K)`` sums of the rows of ``m`` (N, K) per class, in float64 (``Y^T m`` for one-hot Y)."""
    out = np.zeros((n_classes, m.shape[1]), dtype=np.float64)
    np.add.at(out, codes, m) if m.shape[0] < 64 else _sorted_sums(out, m, codes)
    return out


def _sorted_sums(out: np.ndarray, m: np.ndarray, codes: np.ndarray) -> None:
    # One pass in class order with reduceat: O(N K), no (N, C) one-hot matrix.
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    out[sorted_codes[starts]] = np.add.reduceat(np.asarray(m[order], dtype=np.float64), starts, axis=0)
