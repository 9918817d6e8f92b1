"""The multi-label linear head: one logistic regression per label, C and threshold by CV.

Each label is its own binary problem (binary relevance, the one-vs-rest baseline of the
multi-label literature, e.g. Tsoumakas & Katakis 2007).  Per label, stratified folds of the
*training* items walk the grid of C from strong to weak regularisation, warm-starting each fit
from the previous one (as scikit-learn's ``LogisticRegressionCV`` does); the out-of-fold
probabilities give both the validation log-loss of every C and, at the chosen C, the decision
threshold that maximises the label's F1.  The test set never sees either choice.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ._scaling import scaled

#: Logit of a label that is constant in training (present in every item, or in none): the
#: probability 0.999 (or 0.001), which the default threshold 0.5 decides the same way.
_CONSTANT_LOGIT = float(np.log(999.0))


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """The threshold on ``p`` that maximises F1 of ``p >= threshold`` against ``y``.

    Args:
        y: ``(N,)`` 0/1 truth with at least one positive.
        p: ``(N,)`` scores (out-of-fold probabilities).

    Returns:
        ``(threshold, f1)``: the threshold lies halfway between the lowest score kept positive
        and the next lower score (a cut between equal scores is impossible), so a new item
        scored like its nearest training neighbour is decided the same way.
    """
    y = np.asarray(y, dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    ps = p[order]
    tp = np.cumsum(y[order])
    f1 = 2 * tp / (np.arange(1, len(p) + 1) + y.sum())
    ends = np.flatnonzero(np.r_[ps[:-1] != ps[1:], True])  # last position of each run of equal scores
    best = int(ends[np.argmax(f1[ends])])  # argmax keeps the first: the highest threshold among equals
    threshold = (ps[best] + ps[best + 1]) / 2 if best + 1 < len(ps) else ps[best] / 2
    return float(threshold), float(f1[best])


def _oof_path(X, y: np.ndarray, Cs: list[float], folds: int, seed: int,
              weights: dict[int, float] | None = None) -> np.ndarray:
    """Out-of-fold probabilities ``(N, len(Cs))`` of one binary label, Cs ascending (``weights``:
    scikit-learn's ``class_weight`` of the label, ``{0: 1, 1: w}``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    oof = np.empty((len(y), len(Cs)))
    for train, val in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        # Selection-grade tolerance, as in linear._cv_path; the refit on all items is at full tolerance.
        clf = LogisticRegression(C=Cs[0], max_iter=300, tol=1e-3, warm_start=True, class_weight=weights)
        for j, C in enumerate(Cs):
            clf.set_params(C=C).fit(X[train], y[train])
            oof[val, j] = clf.predict_proba(X[val])[:, 1]
    return oof


def _log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Mean binary log-loss of each column of ``p (N, K)`` against ``y (N,)``, clipped as sklearn does."""
    eps = np.finfo(np.float64).eps
    p = np.clip(p, eps, 1 - eps)
    return -(y[:, None] * np.log(p) + (1 - y[:, None]) * np.log1p(-p)).mean(axis=0)


def fit_multilabel(X, Y: np.ndarray, *, Cs: tuple[float, ...], cv: int, max_iter: int, seed: int,
                   scale: bool = True, class_weight: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """One logistic regression per label on (standardised) features.

    Args:
        X: ``(N, D)`` features (dense; or scipy sparse with ``scale=False``).
        Y: ``(N, L)`` 0/1 label indicators.
        Cs: candidate inverse L2 strengths (on standardised features).
        cv: folds of stratified CV per label (fewer when a label has fewer positives or negatives).
        max_iter: L-BFGS iterations of each refit.
        seed: seed of the folds.
        scale: standardise features first (the scaler is folded into ``W, b``).
        class_weight: ``(L,)`` weight of each label's positive items (``linear.class_weights``),
            in the cross-validation, the thresholds and the refit alike; ``None``: all 1.

    Returns:
        ``W (L, D)``, ``b (L,)`` logits over *unscaled* X, ``thresholds (L,)`` on the sigmoid
        probabilities, and ``info`` with one entry per label (``C``, ``cv_folds``, ``threshold``,
        ``oof_f1``, ``converged``, ``note`` where a default was used).
    """
    from sklearn.linear_model import LogisticRegression

    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise ValueError(f"multi-label targets must be (N, L) indicators, got shape {Y.shape}")
    Xs, scaler = scaled(X, scale)
    if scaler is None and hasattr(Xs, "tocsr"):
        Xs = Xs.tocsr()  # row indexing of the folds
    grid = sorted(float(c) for c in Cs)
    n, n_labels = Y.shape
    W, b = np.zeros((n_labels, X.shape[1])), np.zeros(n_labels)
    thresholds = np.full(n_labels, 0.5)
    per_label: list[dict[str, Any]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny folds; the refit reports `converged`
        for j in range(n_labels):
            y = Y[:, j].astype(np.int64)
            pos = int(y.sum())
            if pos in (0, n):
                b[j] = _CONSTANT_LOGIT if pos else -_CONSTANT_LOGIT
                per_label.append({"C": None, "cv_folds": 0, "threshold": 0.5, "converged": True,
                                  "note": f"{'every' if pos else 'no'} training item has this label: constant output"})
                continue
            folds = min(cv, pos, n - pos)
            entry: dict[str, Any] = {"cv_folds": folds if folds >= 2 else 0}
            weights = None if class_weight is None else {0: 1.0, 1: float(class_weight[j])}
            if weights is not None:
                entry["pos_weight"] = weights[1]
            if folds >= 2:
                oof = _oof_path(Xs, y, grid, folds, seed, weights)
                loss = _log_loss(y, oof)
                best = int(np.argmin(loss))
                thresholds[j], oof_f1 = best_f1_threshold(y, oof[:, best])
                entry.update(C=grid[best], cv_log_loss=[float(v) for v in loss], oof_f1=oof_f1)
            else:
                entry.update(C=grid[len(grid) // 2],
                             note="too few positive or negative items for cross-validation; middle C and "
                                  "threshold 0.5 used")
            clf = LogisticRegression(C=entry["C"], max_iter=max_iter, class_weight=weights).fit(Xs, y)
            W[j], b[j] = clf.coef_[0], clf.intercept_[0]
            entry.update(threshold=float(thresholds[j]), n_iter=int(np.max(clf.n_iter_)),
                         converged=bool(np.max(clf.n_iter_) < max_iter))
            per_label.append(entry)
    if scale:
        W = W / scaler.scale_
        b = b - W @ scaler.mean_
    info = {"Cs": grid, "labels": per_label, "converged": all(e["converged"] for e in per_label),
            "threshold_rule": "per label, maximises F1 of out-of-fold predictions on the training items"}
    return W, b, thresholds, info
