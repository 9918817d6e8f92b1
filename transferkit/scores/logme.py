"""LogME: the log marginal evidence of a Bayesian linear model on frozen features.

You, Liu, Wang, Long, Jordan, "Ranking and Tuning Pre-trained Models: A New Paradigm for
Exploiting Model Hubs", JMLR 23 (2022) — the fixed-point version of LogME (the ICML 2021
paper's MacKay iteration replaced by a fixed point in ``t = alpha / beta``).

For each target column ``y`` (one-hot class indicator, or one regression output) the model is
``y = F w + noise``, ``w ~ N(0, I / alpha)``, ``noise ~ N(0, I / beta)``; alpha and beta are set
to maximise the evidence ``p(y | F, alpha, beta)``; LogME is that maximum divided by N,
averaged over the target columns.  Higher is better; values compare models on the *same*
data, not across data sets.

How this implementation differs from the authors' code (thuml/LogME), with the same results:

* one eigendecomposition of the smaller Gram matrix, ``F^T F`` (D x D) when N > D or ``F F^T``
  (N x N) otherwise, built in float64 in row chunks (the float32 features are never copied
  whole), instead of an SVD of ``F^T F`` followed by ``U = F V / s`` (a second N x D x D product);
* the projections of all targets come from one product ``F^T Y`` (class sums, for one-hot
  targets), and the fixed point runs for all target columns at once, as arrays;
* when N > D the fit and residual are written in ``z = V^T F^T y`` with no division by
  singular values, so near-null directions of rank-deficient features cannot blow up.

Convention kept from the authors' code (the published reference values depend on it): the
log-determinant ``log |alpha I + beta F^T F|`` sums over the min(N, D) eigenvalues of the Gram
matrix only.  When N >= D that is the exact evidence; when N < D the D - N null directions of
``F^T F`` are left out, so the score is that of the exact evidence plus ``(D - N) / (2N) *
log(alpha)``, and it is *not* invariant to rescaling the features: compare models on
features of the same scale, or pass ``exact=True``.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from ._common import as_features, class_sums, encode_labels, row_chunks

__all__ = ["logme"]

_EPS = 1e-5  # added to the denominators of the alpha and beta updates, as in the paper's code
_LOG_2PI = float(np.log(2 * np.pi))


def logme(features, labels, regression: bool = False, *, max_iter: int = 11, tol: float = 1e-3,
          exact: bool = False) -> float:
    """LogME of features for a classification or regression target.

    Args:
        features: ``(N, D)`` float features (float32 is converted to float64 in row chunks).
        labels: classification: ``(N,)`` class labels of any type (the classes are the
            distinct values; one one-hot target column per class). Regression: ``(N,)`` or
            ``(N, K)`` real targets, one evidence per column.
        regression: read ``labels`` as real-valued targets.
        max_iter: fixed-point iterations per target at most (the authors' 11).
        tol: stop a target's iteration when ``t = alpha / beta`` changes by at most this
            fraction (the authors' 1e-3).
        exact: include the ``D - N`` null directions in the log-determinant when N < D (the
            exact log evidence, invariant to the scale of the features); the default follows
            the authors' code and their published values.

    Returns:
        The mean over target columns of the maximum log evidence per item (a float; higher is
        better).

    Raises:
        ValueError: shapes that do not match, non-finite features or targets.
    """
    f = as_features(features)
    n, d = f.shape
    if regression:
        y = np.asarray(labels, dtype=np.float64)
        y = y.reshape(-1, 1) if y.ndim == 1 else y
        if y.ndim != 2 or y.shape[0] != n:
            raise ValueError(f"regression targets must have shape ({n},) or ({n}, K), got {np.shape(labels)}")
        if not np.isfinite(y).all():
            raise ValueError("regression targets contain NaN or infinite values")
        codes, n_targets = None, y.shape[1]
        y_sq = (y * y).sum(axis=0)
    else:
        codes, n_targets = encode_labels(labels, n)
        y = None
        y_sq = np.bincount(codes, minlength=n_targets).astype(np.float64)  # ||one-hot column||^2

    if n > d:
        # Gram F^T F (D, D) and F^T Y (D, K), one pass over row chunks of F in float64.
        gram = np.zeros((d, d))
        fty = np.zeros((d, n_targets))
        for sl in row_chunks(n):
            fc = np.asarray(f[sl], dtype=np.float64)
            gram += fc.T @ fc  # numpy computes A^T A with syrk
            fty += class_sums(fc, codes[sl], n_targets).T if codes is not None else fc.T @ y[sl]
        sigma, v = _eigh(gram)
        proj = v.T @ fty  # (D, K): z_i = v_i^T F^T y = s_i x_i
        complete = False
    else:
        sigma, u = _eigh(_row_gram(f))
        # x = U^T y over a complete basis of R^N (null directions included): (N, K).
        proj = class_sums(u, codes, n_targets).T if codes is not None else u.T @ y
        complete = True  # the residual is then computed without any subtraction
    evidence = _fixed_point(sigma, proj, y_sq, n, d, complete=complete, max_iter=max_iter, tol=tol)
    if exact and n < d:
        alpha = evidence[1]
        return float(np.mean(evidence[0] - (d - n) / (2.0 * n) * np.log(alpha)))
    return float(np.mean(evidence[0]))


def _row_gram(f: np.ndarray) -> np.ndarray:
    """``F F^T`` (N, N) in float64, by blocks of rows (F may be float32 and wide)."""
    n = f.shape[0]
    gram = np.empty((n, n))
    chunks = list(row_chunks(n))
    for i, si in enumerate(chunks):
        fi = np.asarray(f[si], dtype=np.float64)
        gram[si, si] = fi @ fi.T
        for sj in chunks[:i]:
            gram[si, sj] = fi @ np.asarray(f[sj], dtype=np.float64).T
            gram[sj, si] = gram[si, sj].T
    return gram


def _eigh(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (clipped at 0: roundoff can make null ones slightly negative) and vectors."""
    # scipy's divide-and-conquer driver is several times faster than numpy.linalg.eigh here.
    w, v = scipy.linalg.eigh(gram, driver="evd", check_finite=False, overwrite_a=True)
    return np.maximum(w, 0.0), v


def _fixed_point(sigma: np.ndarray, proj: np.ndarray, y_sq: np.ndarray, n: int, d: int, *, complete: bool,
                 max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """The fixed-point iteration of the JMLR paper, for K targets at once.

    Args:
        sigma: ``(k,)`` eigenvalues of the Gram matrix (squared singular values of F).
        proj: ``(k, K)``: when ``complete`` is False (N > D), ``z_i = v_i^T F^T y`` (= s_i x_i);
            when True (N <= D, a complete basis of R^N), ``x_i = u_i^T y``.
        y_sq: ``(K,)`` squared norms of the targets.

    Returns:
        ``(evidence per item (K,), alpha (K,))``.

    Each target keeps iterating until its own ``t`` converges (relative change <= ``tol``) or
    ``max_iter`` steps; as in the paper, the evidence is then evaluated at the last alpha and
    beta with the fit (``m``) of the last ``t``.
    """
    s = sigma[:, None]
    tiny = np.finfo(np.float64).tiny
    if not complete:
        # Directions that are null to working precision carry no signal, only roundoff: their
        # z would be divided by t + 0 below (nothing else changes for full-rank features).
        proj = np.where(s > sigma.max(initial=0.0) * len(sigma) * np.finfo(np.float64).eps, proj, 0.0)
    root_s = np.sqrt(s)
    k_targets = proj.shape[1]
    alpha = np.ones(k_targets)
    beta = np.ones(k_targets)
    m2 = np.zeros(k_targets)
    res2 = np.zeros(k_targets)
    active = np.ones(k_targets, dtype=bool)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        t = np.maximum(alpha[idx] / beta[idx], tiny)
        denom = t + s  # (k, K_active)
        gamma = (s / denom).sum(axis=0)
        # Each ratio is bounded before it is squared, so degenerate features (all zero: t near
        # 1e-308) neither overflow nor give 0/0.
        if complete:
            m2_i = (((root_s / denom) * proj[:, idx]) ** 2).sum(axis=0)
            res2_i = (((t / denom) * proj[:, idx]) ** 2).sum(axis=0)
        else:
            r2 = (proj[:, idx] / denom) ** 2
            m2_i = r2.sum(axis=0)
            # ||y - F m||^2 = ||y||^2 - sum_i z_i^2 (2t + sigma_i) / (t + sigma_i)^2
            res2_i = np.maximum(y_sq[idx] - (r2 * (2 * t + s)).sum(axis=0), 0.0)
        a = np.maximum(gamma / (m2_i + _EPS), tiny)
        b = np.maximum(np.maximum(n - gamma, 0.0) / (res2_i + _EPS), tiny)
        alpha[idx], beta[idx], m2[idx], res2[idx] = a, b, m2_i, res2_i
        active[idx] = np.abs(a / b - t) / t > tol
    log_det = np.log(alpha[None, :] + beta[None, :] * s).sum(axis=0)
    evidence = (d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta) - 0.5 * log_det
                - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * _LOG_2PI) / n
    return evidence, alpha


def logme_regression(features, targets, *, exact: bool = False, **kwargs) -> float:
    """LogME of a regression target, standardised first (``(y - mean) / sd``).

    The model of :func:`logme` has no intercept: centring stands in for one (a target far from
    zero would otherwise be "explained" by whatever feature direction carries the mean), and
    the unit scale makes values of targets in different units alike in size.  The candidates
    of one ranking share the target, so their order does not depend on it.

    Args:
        features: ``(N, D)``; targets: ``(N,)`` finite numbers, not all equal.
        exact, kwargs: as for :func:`logme`.

    Raises:
        ValueError: non-finite or constant targets, shapes that do not match.
    """
    y = np.asarray(targets, dtype=np.float64)
    if y.ndim != 1 or not np.isfinite(y).all():
        raise ValueError("regression targets must be a 1-D array of finite numbers")
    sd = y.std()
    if sd == 0:
        raise ValueError("the targets are all equal: nothing to explain")
    return logme(features, (y - y.mean()) / sd, regression=True, exact=exact, **kwargs)


def logme_multilabel(features, indicators, *, exact: bool = False, **kwargs) -> float:
    """LogME of a multi-label target: the mean over the labels of each label's binary LogME.

    A binary label's LogME (as :func:`logme` computes it for two classes) is the mean evidence
    of its two one-hot columns, present and absent; all ``2 L`` columns are evaluated at once
    on one eigendecomposition of the features, so this equals averaging ``logme(features,
    indicators[:, j])`` over the labels j.  Labels that every item carries, or none, have one
    class only and are left out.

    Args:
        features: ``(N, D)``; indicators: ``(N, L)`` 0/1.
        exact, kwargs: as for :func:`logme`.

    Raises:
        ValueError: shapes that do not match, values other than 0/1, no label with both
            present and absent items.
    """
    y = np.asarray(indicators)
    n = np.shape(features)[0] if np.ndim(features) == 2 else -1
    if y.ndim != 2 or y.shape[0] != n:
        raise ValueError(f"indicators must have shape (N, L) with the features' N, got {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("indicators must be 0 or 1")
    counts = y.sum(axis=0)
    y = y[:, (counts > 0) & (counts < n)].astype(np.float64)
    if not y.shape[1]:
        raise ValueError("no label is carried by some items and not by others: nothing to score")
    return logme(features, np.hstack([y, 1.0 - y]), regression=True, exact=exact, **kwargs)
