"""Leave-one-out k-nearest-neighbour accuracy on frozen features (cosine similarity).

A model-free check of how well the features already group items by class: each item is
classified by a majority vote of its k most similar other items.  Used as a transferability
baseline, for instance in Kornblith, Shlens, Le, "Do Better ImageNet Models Transfer
Better?", CVPR 2019, and as the kNN monitor of self-supervised learning (Wu et al. 2018).
"""
from __future__ import annotations

import numpy as np

from ._common import as_features, encode_labels, row_chunks

__all__ = ["knn_accuracy"]

# Similarity entries held at once: 2**23 float64 = 64 MiB, whatever N is.
_BLOCK_ENTRIES = 1 << 23


def knn_accuracy(features, labels, *, k: int = 5, block_entries: int = _BLOCK_ENTRIES) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour classifier with cosine similarity.

    Each item is left out in turn and predicted by a majority vote of its ``k`` most similar
    other items; ties between classes go to the class that sorts first (as in scikit-learn's
    ``KNeighborsClassifier``).  Similarities are computed in float64 blocks of rows, so
    memory stays bounded (about ``block_entries * 8`` bytes) for any N; time is
    ``O(N^2 D)``.

    Args:
        features: ``(N, D)`` features; all-zero rows are compared by their (zero) similarity.
        labels: ``(N,)`` class labels of any type.
        k: neighbours per vote (clipped to N - 1).
        block_entries: similarity entries computed at once (memory bound).

    Returns:
        The leave-one-out accuracy in [0, 1]; higher is better.
    """
    f = as_features(features)
    n = f.shape[0]
    codes, n_classes = encode_labels(labels, n)
    if n < 2:
        raise ValueError("the leave-one-out kNN accuracy needs at least 2 items")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(int(k), n - 1)
    x = np.empty(f.shape, dtype=np.float64)
    for sl in row_chunks(n):
        fc = np.asarray(f[sl], dtype=np.float64)
        norms = np.linalg.norm(fc, axis=1, keepdims=True)
        x[sl] = np.divide(fc, norms, out=np.zeros_like(fc), where=norms > 0)
    rows = max(1, block_entries // n)
    correct = 0
    for sl in row_chunks(n, rows):
        sim = x[sl] @ x.T  # (b, N)
        b = sim.shape[0]
        sim[np.arange(b), np.arange(sl.start, sl.stop)] = -np.inf  # leave the item itself out
        nbr = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # the k most similar, any order
        votes = np.zeros((b, n_classes), dtype=np.int64)
        np.add.at(votes, (np.repeat(np.arange(b), k), codes[nbr].ravel()), 1)
        correct += int((votes.argmax(axis=1) == codes[sl]).sum())  # argmax: first of tied classes
    return correct / n
