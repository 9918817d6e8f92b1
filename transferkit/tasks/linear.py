"""Linear heads on fixed features, in numpy: the fit shared by the linear probe and the controls.

``fit_logistic`` is the classification head: standardise, choose the L2 strength by stratified
cross-validation, refit, fold the scaler into one ``(C, D)`` layer over raw features.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def fit_logistic(X, y: np.ndarray, *, Cs: tuple[float, ...], cv: int, max_iter: int,
                 seed: int, scale: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Standardise, pick C by stratified CV (log-loss), refit on all data.

    Args:
        X: ``(N, D)`` features (dense; or scipy sparse with ``scale=False``).
        y: ``(N,)`` int labels in ``0..C-1``, every class present.
        scale: standardise features first (the fitted scaler is folded into ``W, b``).

    Returns:
        ``W (C, D)`` and ``b (C,)`` acting on *unscaled* X, and facts about the fit.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if scale:
        X = np.asarray(X, dtype=np.float64)
        scaler = StandardScaler().fit(X)
        # A feature that is (nearly) constant on the training items, as happens with a handful of
        # items, would be divided by ~0 (sklearn only guards exact zeros): the folded weights reach
        # 1e30 and fine-tuning from them (lp-ft) overflows.  Floor each scale at a thousandth of
        # the median, so such a feature stays near 0 after scaling and carries no weight.
        floor = 1e-3 * float(np.median(scaler.scale_)) if np.median(scaler.scale_) > 0 else 1.0
        scaler.scale_ = np.maximum(scaler.scale_, floor)
        Xs = scaler.transform(X)
    else:
        Xs = X
    n_classes = int(y.max()) + 1
    folds = min(cv, int(np.bincount(y).min()))
    info: dict[str, Any] = {"Cs": sorted(Cs)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny folds; the refit reports `converged`
        if folds >= 2 and len(Cs) > 1:
            scores = _cv_path(Xs, y, sorted(Cs), folds, seed)
            best = int(np.argmax(scores))
            C = sorted(Cs)[best]
            info.update(cv_folds=folds, cv_neg_log_loss=[float(s) for s in scores])
        else:
            C = sorted(Cs)[len(Cs) // 2]
            info.update(cv_folds=0, cv_note="too few items per class for cross-validation; middle C used")
        clf = LogisticRegression(C=C, max_iter=max_iter).fit(Xs, y)
    info.update(C=float(C), n_iter=int(np.max(clf.n_iter_)), converged=bool(np.max(clf.n_iter_) < max_iter))
    coef, intercept = clf.coef_, clf.intercept_
    if n_classes == 2 and coef.shape[0] == 1:  # sklearn's binary form: one logit for class 1
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    if not scale:
        return coef, intercept, info
    W = coef / scaler.scale_
    b = intercept - W @ scaler.mean_
    return W, b, info


def _cv_path(X, y: np.ndarray, Cs: list[float], folds: int, seed: int) -> np.ndarray:
    """Mean validation log-likelihood of each C (ascending) over stratified folds.

    scikit-learn's ``LogisticRegressionCV`` walks each fold's regularisation path from strong
    to weak, warm-starting every fit from the previous solution; the selection-grade tolerance
    (``tol=1e-3``, 300 iterations) keeps it 3-4x faster than independent fits, with the same
    choice of C on the data we measured.  ``refit=False``: :func:`fit_logistic` refits the
    chosen C on all items itself, at full tolerance.
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    path = LogisticRegressionCV(Cs=list(Cs), cv=cv, scoring="neg_log_loss", l1_ratios=(0.0,), max_iter=300,
                                tol=1e-3, refit=False, use_legacy_attributes=False).fit(X, y)
    return np.asarray(path.scores_, dtype=np.float64).reshape(folds, len(Cs)).mean(axis=0)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
