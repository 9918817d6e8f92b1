"""H-score, and its shrinkage-regularised form.

* H-score — Bao, Li, Huang, Wang, Zhang, Chen, "An Information-Theoretic Approach to
  Transferability in Task Transfer Learning", ICIP 2019:
  ``H = tr(cov(f)^-1 cov(E[f | y]))``.
* Regularised H-score — Ibrahim, Ponomareva, Mazumder, "Newer is not always better:
  Rethinking transferability metrics, their peculiarities, stability and performance",
  ICLR 2022 (ECML-PKDD 2022): the feature covariance is replaced by the Ledoit-Wolf shrinkage
  estimate ``cov_a = (1 - a) S + a mu I``, and ``H_a = tr(cov_a^-1 (1 - a) cov(E[f | y]))``.
  Plain H-score inverts a sample covariance that is singular (or nearly) whenever N is not
  much larger than D, which makes it erratic exactly where transferability scores are used;
  shrinkage fixes that.

Both are computed here from one eigendecomposition of the smaller Gram matrix of the centred
features, so the cost is that of a (D, D) or (N, N) eigenproblem and no D x D inverse is formed.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from ._common import as_features, class_sums, encode_labels, row_chunks

__all__ = ["hscore", "ledoit_wolf_shrinkage"]


def hscore(features, labels, *, shrinkage: float | str | None = "ledoit-wolf") -> float:
    """H-score of features for class labels, regularised by covariance shrinkage by default.

    Args:
        features: ``(N, D)`` features.
        labels: ``(N,)`` class labels of any type.
        shrinkage: ``"ledoit-wolf"`` (Ibrahim et al. 2022: the Ledoit-Wolf shrinkage
            intensity ``a``, as scikit-learn's ``LedoitWolf`` estimates it), a fixed ``a`` in
            [0, 1], or ``None`` for the original H-score (pseudo-inverse of the sample
            covariance; unstable when N is not much larger than D).

    Returns:
        ``tr(cov_a(f)^+ (1 - a) cov(E[f | y]))``, a float >= 0; higher is better.  As in the
        reference implementations, ``cov_a`` shrinks the maximum-likelihood (1/N) covariance,
        the unregularised score inverts the unbiased (1/(N-1)) one, and ``cov(E[f | y])`` is
        the unbiased covariance of the per-item class means.
    """
    f = as_features(features)
    n, d = f.shape
    codes, n_classes = encode_labels(labels, n)
    mean = np.zeros(d)
    for sl in row_chunks(n):
        mean += np.asarray(f[sl], dtype=np.float64).sum(axis=0)
    mean /= n
    sums = np.zeros((n_classes, d))
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    if n > d:
        gram = np.zeros((d, d))
        sq_norms = np.empty(n)
        for sl in row_chunks(n):
            fc = np.asarray(f[sl], dtype=np.float64) - mean
            gram += fc.T @ fc
            sums += class_sums(fc, codes[sl], n_classes)
            sq_norms[sl] = np.einsum("ij,ij->i", fc, fc)
        lam, v = scipy.linalg.eigh(gram / n, driver="evd", check_finite=False, overwrite_a=True)
        proj = sums @ v  # (C, D): class sums of centred features in the eigenbasis
        frob2 = float(np.sum((gram / n) ** 2))
    else:
        fc = np.asarray(f, dtype=np.float64) - mean  # N <= D: the (N, N) problem is the small one
        gram = fc @ fc.T
        sq_norms = np.diag(gram).copy()
        lam, u = scipy.linalg.eigh(gram / n, driver="evd", check_finite=False)
        # Right singular directions of the centred F are v_i = F^T u_i / sqrt(n lam_i), so the
        # class sums project as (Y^T F) v_i = sqrt(n lam_i) Y^T u_i.
        lam = np.maximum(lam, 0.0)
        proj = class_sums(u, codes, n_classes) * np.sqrt(n * lam)[None, :]
        frob2 = float(np.sum((gram / n) ** 2))
    lam = np.maximum(lam, 0.0)
    mu = float(lam.sum()) / d  # tr(S) / D
    if shrinkage is None:
        a = 0.0
    elif isinstance(shrinkage, str):
        if shrinkage != "ledoit-wolf":
            raise ValueError(f"shrinkage must be 'ledoit-wolf', a number in [0, 1] or None, not {shrinkage!r}")
        a = ledoit_wolf_shrinkage(sq_norms, frob2, mu, n, d)
    else:
        a = float(shrinkage)
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {a}")
    # Eigenvalues of cov_a on the directions that carry the class means; the pseudo-inverse
    # skips directions with a zero eigenvalue (the class means have no component there).
    # The original H-score inverts the unbiased (1/(N-1)) covariance, the regularised one the
    # 1/N covariance that Ledoit-Wolf shrinks: each as its reference implementation does.
    ev = lam * n / (n - 1) if shrinkage is None else (1.0 - a) * lam + a * mu
    inv = np.divide(1.0, ev, out=np.zeros_like(ev), where=ev > ev.max(initial=0.0) * 1e-15)
    # cov(E[f|y]) = 1/(N-1) sum_c n_c m_c m_c^T with m_c the centred class means = sums_c / n_c.
    between = (proj ** 2 / counts[:, None]).sum(axis=0)  # (k,) = sum_c (sums_c . v_i)^2 / n_c
    return float((1.0 - a) * np.dot(inv, between) / (n - 1))


def ledoit_wolf_shrinkage(sq_norms: np.ndarray, frob2: float, mu: float, n: int, d: int) -> float:
    """The Ledoit-Wolf shrinkage intensity of centred data, as scikit-learn computes it.

    Ledoit & Wolf, "A well-conditioned estimator for large-dimensional covariance matrices",
    J. Multivariate Analysis 88 (2004).

    Args:
        sq_norms: ``(N,)`` squared norms of the centred rows.
        frob2: ``||S||_F^2`` of the (1/N) sample covariance S.
        mu: ``tr(S) / D``.

    Returns:
        The intensity ``a`` in [0, 1] of ``(1 - a) S + a mu I``.
    """
    # sum_ij (X^2)^T X^2 = sum_n ||x_n||^4: the O(N D) form of scikit-learn's beta_.
    beta_ = float(np.sum(sq_norms ** 2))
    beta = (beta_ / n - frob2) / (d * n)
    delta = (frob2 - 2.0 * mu * float(np.sum(sq_norms)) / n + d * mu ** 2) / d
    beta = min(beta, delta)
    return 0.0 if beta <= 0 else float(beta / delta)
