"""Leave-one-out k-nearest-neighbour scores on frozen features (cosine similarity).

A model-free check of how well the features already group items by their labels: each item is
predicted from its k most similar other items.  Used as a transferability baseline, for
instance in Kornblith, Shlens, Le, "Do Better ImageNet Models Transfer Better?", CVPR 2019,
and as the kNN monitor of self-supervised learning (Wu et al. 2018).  One form per task:

* :func:`knn_accuracy` (classification): majority vote of the k neighbours, accuracy;
* :func:`knn_regression` (regression): mean of the k neighbours' targets, R²;
* :func:`knn_multilabel` (multi-label): a majority vote per label (each label a binary task),
  balanced accuracy averaged over the labels.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ._common import as_features, encode_labels, row_chunks

__all__ = ["knn_accuracy", "knn_regression", "knn_multilabel"]

# Similarity entries held at once: 2**23 float64 = 64 MiB, whatever N is.
_BLOCK_ENTRIES = 1 << 23


def _neighbours(f: np.ndarray, k: int, block_entries: int) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, nbr)`` blocks: ``nbr`` ``(b, k)`` holds the indices of the ``k`` items most
    similar (cosine) to each item of ``rows``, the item itself left out, in any order
    (``f``: ``(N, D)`` checked by :func:`as_features`).

    Similarities are computed in float64 blocks of rows, so memory stays bounded (about
    ``block_entries * 8`` bytes) for any N; time is ``O(N^2 D)``.  All-zero rows are compared
    by their (zero) similarity.
    """
    n = f.shape[0]
    x = np.empty(f.shape, dtype=np.float64)
    for sl in row_chunks(n):
        fc = np.asarray(f[sl], dtype=np.float64)
        norms = np.linalg.norm(fc, axis=1, keepdims=True)
        x[sl] = np.divide(fc, norms, out=np.zeros_like(fc), where=norms > 0)
    rows = max(1, block_entries // n)
    for sl in row_chunks(n, rows):
        sim = x[sl] @ x.T  # (b, N)
        b = sim.shape[0]
        sim[np.arange(b), np.arange(sl.start, sl.stop)] = -np.inf  # leave the item itself out
        yield sl, np.argpartition(-sim, k - 1, axis=1)[:, :k]


def _check_k(n: int, k: int) -> int:
    if n < 2:
        raise ValueError("leave-one-out kNN scores need at least 2 items")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return min(int(k), n - 1)


def knn_accuracy(features, labels, *, k: int = 5, block_entries: int = _BLOCK_ENTRIES) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour classifier with cosine similarity.

    Each item is left out in turn and predicted by a majority vote of its ``k`` most similar
    other items; ties between classes go to the class that sorts first (as in scikit-learn's
    ``KNeighborsClassifier``).

    Args:
        features: ``(N, D)`` features.
        labels: ``(N,)`` class labels of any type.
        k: neighbours per vote (clipped to N - 1).
        block_entries: similarity entries computed at once (memory bound).

    Returns:
        The leave-one-out accuracy in [0, 1]; higher is better.
    """
    f = as_features(features)
    n = f.shape[0]
    codes, n_classes = encode_labels(labels, n)
    k = _check_k(n, k)
    correct = 0
    for sl, nbr in _neighbours(f, k, block_entries):
        b = nbr.shape[0]
        votes = np.zeros((b, n_classes), dtype=np.int64)
        np.add.at(votes, (np.repeat(np.arange(b), k), codes[nbr].ravel()), 1)
        correct += int((votes.argmax(axis=1) == codes[sl]).sum())  # argmax: first of tied classes
    return correct / n


def knn_regression(features, targets, *, k: int = 5, block_entries: int = _BLOCK_ENTRIES) -> float:
    """Leave-one-out R² of a k-nearest-neighbour regressor with cosine similarity.

    Each item's target is predicted by the plain mean of its ``k`` most similar other items'
    targets; the score is ``1 - sum((y - y_hat)^2) / sum((y - mean(y))^2)``.  R² rather than
    minus the RMSE: it does not depend on the target's units, 0 is the mean predictor (the
    regression control), 1 a perfect fit, and it can be negative (worse than the mean).

    Args:
        features: ``(N, D)`` features.
        targets: ``(N,)`` finite numbers, not all equal.
        k: neighbours per prediction (clipped to N - 1).
        block_entries: similarity entries computed at once (memory bound).

    Returns:
        The leave-one-out R² in (-inf, 1]; higher is better.

    Raises:
        ValueError: shapes that do not match, non-finite or constant targets.
    """
    f = as_features(features)
    n = f.shape[0]
    y = np.asarray(targets, dtype=np.float64)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"targets must be a 1-D array of {n} entries, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("regression targets contain NaN or infinite values")
    total = float(((y - y.mean()) ** 2).sum())
    if total == 0.0:
        raise ValueError("the targets are all equal: R² is undefined")
    k = _check_k(n, k)
    residual = 0.0
    for sl, nbr in _neighbours(f, k, block_entries):
        residual += float(((y[sl] - y[nbr].mean(axis=1)) ** 2).sum())
    return 1.0 - residual / total


def knn_multilabel(features, indicators, *, k: int = 5, block_entries: int = _BLOCK_ENTRIES) -> float:
    """Leave-one-out k-nearest-neighbour balanced accuracy, averaged over the labels.

    Each label is a binary task: an item is predicted to carry it when more than half of its
    ``k`` most similar other items do (a tie goes to "absent", the class that sorts first, as
    in :func:`knn_accuracy`).  Per label the score is the balanced accuracy (mean of the
    true-positive and true-negative rates): plain accuracy would be dominated by the absent
    class of rare labels, where predicting "never" already scores ``1 - prevalence``.  Labels
    that every item carries, or none, have no negative (positive) items and are left out.

    Args:
        features: ``(N, D)`` features.
        indicators: ``(N, L)`` 0/1, item i carries label j.
        k: neighbours per vote (clipped to N - 1).
        block_entries: similarity entries computed at once (memory bound).

    Returns:
        The mean over the labels of the leave-one-out balanced accuracy in [0, 1]; 0.5 is chance.

    Raises:
        ValueError: shapes that do not match, values other than 0/1, no label with both
            present and absent items.
    """
    f = as_features(features)
    n = f.shape[0]
    y = _indicators(indicators, n)
    k = _check_k(n, k)
    hits = np.zeros(y.shape[1])  # true positives per label
    rejections = np.zeros(y.shape[1])  # true negatives per label
    for sl, nbr in _neighbours(f, k, block_entries):
        predicted = 2 * y[nbr].sum(axis=1) > k  # (b, L): more than half of the neighbours carry it
        truth = y[sl].astype(bool)
        hits += (predicted & truth).sum(axis=0)
        rejections += (~predicted & ~truth).sum(axis=0)
    positives = y.sum(axis=0)
    return float(np.mean(0.5 * (hits / positives + rejections / (n - positives))))


def _indicators(indicators, n: int) -> np.ndarray:
    """``(N, L)`` 0/1 as int64, the labels that are constant over the items left out."""
    y = np.asarray(indicators)
    if y.ndim != 2 or y.shape[0] != n:
        raise ValueError(f"indicators must have shape ({n}, L), got {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("indicators must be 0 or 1")
    y = y.astype(np.int64)
    counts = y.sum(axis=0)
    varying = (counts > 0) & (counts < n)
    if not varying.any():
        raise ValueError("no label is carried by some items and not by others: nothing to score")
    return y[:, varying]
