"""How far apart two data sets are in a backbone's feature space.

* MMD — Gretton, Borgwardt, Rasch, Schölkopf, Smola, "A Kernel Two-Sample Test", JMLR 13
  (2012): the unbiased squared maximum mean discrepancy with a Gaussian kernel whose bandwidth
  is the median pairwise distance (the "median heuristic"), and a permutation p-value.
* Proxy A-distance — Ben-David, Blitzer, Crammer, Pereira, "Analysis of Representations for
  Domain Adaptation", NIPS 2006; Ganin et al., "Domain-Adversarial Training of Neural
  Networks", JMLR 17 (2016): ``2 (1 - 2 err)`` where ``err`` is the held-out error of a linear
  classifier trained to tell the two sets apart; 0 when it cannot, 2 when it always can.

:func:`domain_shift` runs both and reads them in plain words.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ._common import as_features

__all__ = ["mmd", "proxy_a_distance", "domain_shift", "MMDResult", "DomainShift", "shift_reading"]

# Thresholds of the plain-words reading (heuristics, stated in every reading).
SAME_P_VALUE = 0.05  # MMD test: no detectable difference at this level ...
SAME_A_DISTANCE = 0.5  # ... and a domain classifier at most 37.5% right above chance
LARGE_A_DISTANCE = 1.5  # the domain classifier errs on fewer than 12.5% of items


@dataclass
class MMDResult:
    """Attributes:
        mmd2: unbiased estimate of the squared MMD (may be slightly negative when the sets match).
        p_value: permutation p-value of "both sets come from one distribution".
        bandwidth: the Gaussian kernel's sigma (median pairwise distance).
        n_source, n_target: items used (after subsampling).
        n_permutations: permutations of the test.
    """

    mmd2: float
    p_value: float
    bandwidth: float
    n_source: int
    n_target: int
    n_permutations: int


def _subsample(x: np.ndarray, n_max: int | None, rng: np.random.Generator) -> np.ndarray:
    if n_max is None or len(x) <= n_max:
        return np.asarray(x, dtype=np.float64)
    return np.asarray(x[np.sort(rng.choice(len(x), n_max, replace=False))], dtype=np.float64)


def mmd(source, target, *, n_permutations: int = 500, max_items: int | None = 1000, bandwidth: float | None = None,
        seed: int = 0) -> MMDResult:
    """Kernel two-sample test: unbiased MMD^2 with a Gaussian kernel and a permutation p-value.

    Args:
        source: ``(n, D)`` features of the first set.
        target: ``(m, D)`` features of the second set.
        n_permutations: random relabellings of the pooled items for the p-value.
        max_items: use at most this many items of each set (a seeded random subset), which
            bounds memory to the ``(n + m)^2`` kernel matrix (16 MB at 1,000 + 1,000);
            ``None`` uses all.
        bandwidth: the kernel's sigma in ``exp(-||x - y||^2 / (2 sigma^2))``; default the
            median distance between pooled items.
        seed: seeds the subsets and the permutations.

    Returns:
        :class:`MMDResult`; ``p_value`` is ``(1 + #{permuted >= observed}) / (1 + n_permutations)``.
    """
    xs, xt = as_features(source, "source"), as_features(target, "target")
    if xs.shape[1] != xt.shape[1]:
        raise ValueError(f"source and target differ in width: {xs.shape[1]} vs {xt.shape[1]}")
    if len(xs) < 2 or len(xt) < 2:
        raise ValueError("MMD needs at least 2 items in each set")
    rng = np.random.default_rng(seed)
    xs, xt = _subsample(xs, max_items, rng), _subsample(xt, max_items, rng)
    n, m = len(xs), len(xt)
    z = np.vstack([xs, xt])
    sq = np.einsum("ij,ij->i", z, z)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)
    if bandwidth is None:
        off = d2[np.triu_indices(n + m, k=1)]
        med = float(np.median(off))
        if med <= 0:  # more than half the pairs coincide: fall back to the mean distance
            med = float(off.mean())
        bandwidth = float(np.sqrt(med)) if med > 0 else 1.0
    kern = np.exp(-d2 / (2.0 * bandwidth ** 2))
    del d2
    # Each column of `ind` marks which pooled items play "source": column 0 the real split.
    ind = np.zeros((n + m, n_permutations + 1))
    ind[:n, 0] = 1.0
    for j in range(1, n_permutations + 1):
        ind[rng.permutation(n + m)[:n], j] = 1.0
    stats = _unbiased_mmd2(kern, ind, n, m)
    observed = float(stats[0])
    p = (1.0 + float(np.sum(stats[1:] >= observed))) / (1.0 + n_permutations)
    return MMDResult(observed, p, bandwidth, n, m, n_permutations)


def _unbiased_mmd2(kern: np.ndarray, ind: np.ndarray, n: int, m: int) -> np.ndarray:
    """Unbiased MMD^2 for each labelling column of ``ind`` (1 = source), in one matrix product."""
    k_ind = kern @ ind  # (n + m, P)
    s_xx = np.einsum("ip,ip->p", ind, k_ind)  # sum over source pairs, diagonal included
    total = float(kern.sum())
    s_xy = np.einsum("ip,ip->p", 1.0 - ind, k_ind)  # sum over (target, source) pairs
    s_yy = total - s_xx - 2.0 * s_xy
    diag = float(np.trace(kern)) / (n + m)  # 1 for a Gaussian kernel
    return ((s_xx - n * diag) / (n * (n - 1)) + (s_yy - m * diag) / (m * (m - 1)) - 2.0 * s_xy / (n * m))


def proxy_a_distance(source, target, *, max_items: int | None = 2000, n_splits: int = 2, seed: int = 0) -> float:
    """Proxy A-distance ``2 (1 - 2 err)`` from a linear domain classifier.

    The two sets are first cut to the same size (a seeded random subset of the larger), so a
    classifier that always answers "source" has error 1/2 and distance 0.  ``err`` is the
    cross-validated error (``n_splits`` stratified folds) of an L2-regularised logistic
    regression on standardised features.

    Args:
        source: ``(n, D)`` features.
        target: ``(m, D)`` features.
        max_items: use at most this many items of each set.
        n_splits: cross-validation folds.
        seed: seeds the subsets and the folds.

    Returns:
        The distance in [0, 2] (clipped at 0 when the classifier does worse than chance).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    xs, xt = as_features(source, "source"), as_features(target, "target")
    if xs.shape[1] != xt.shape[1]:
        raise ValueError(f"source and target differ in width: {xs.shape[1]} vs {xt.shape[1]}")
    rng = np.random.default_rng(seed)
    size = min(len(xs), len(xt), max_items or max(len(xs), len(xt)))
    if size < n_splits:
        raise ValueError(f"the proxy A-distance needs at least {n_splits} items in each set")
    xs, xt = _subsample(xs, size, rng), _subsample(xt, size, rng)
    x = np.vstack([xs, xt])
    y = np.r_[np.zeros(size, dtype=int), np.ones(size, dtype=int)]
    wrong = 0
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for tr, te in folds.split(x, y):
        scaler = StandardScaler().fit(x[tr])
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(x[tr]), y[tr])
        wrong += int((clf.predict(scaler.transform(x[te])) != y[te]).sum())
    err = wrong / len(y)
    return float(max(0.0, 2.0 * (1.0 - 2.0 * err)))


@dataclass
class DomainShift:
    """Both distances and their reading.

    Attributes:
        mmd2, mmd_p_value, bandwidth: see :class:`MMDResult`.
        a_distance: the proxy A-distance in [0, 2].
        level: ``"none"``, ``"moderate"`` or ``"large"``.
        reading: one sentence for users.
    """

    mmd2: float
    mmd_p_value: float
    bandwidth: float
    a_distance: float
    level: str
    reading: str

    def to_dict(self) -> dict:
        return asdict(self)


def shift_reading(p_value: float, a_distance: float) -> tuple[str, str]:
    """``(level, sentence)``: the plain-words reading of an MMD p-value and a proxy A-distance."""
    if p_value >= SAME_P_VALUE and a_distance < SAME_A_DISTANCE:
        return "none", ("the target looks like the source: the MMD test finds no difference "
                        f"(p = {p_value:.2f}) and a linear classifier can hardly tell them apart "
                        f"(A-distance {a_distance:.2f} of 2)")
    if a_distance >= LARGE_A_DISTANCE:
        return "large", ("large shift: domain adaptation should matter (a linear classifier tells target "
                         f"from source {100 * (1 - (1 - a_distance / 2) / 2):.0f}% of the time; A-distance "
                         f"{a_distance:.2f} of 2)")
    return "moderate", ("moderate shift: the sets differ measurably (MMD p = "
                        f"{p_value:.3f}, A-distance {a_distance:.2f} of 2) but overlap; check accuracy on "
                        "labelled target items before relying on the source model")


def domain_shift(source, target, *, n_permutations: int = 500, max_items: int | None = 1000,
                 seed: int = 0) -> DomainShift:
    """MMD test and proxy A-distance between two sets' features, with a plain-words reading.

    Args:
        source: ``(n, D)`` features of the labelled (training) data.
        target: ``(m, D)`` features of the data the model will meet (unlabelled is fine).
        n_permutations: for the MMD p-value.
        max_items: items of each set used at most (seeded subset).
        seed: seeds subsets, permutations and folds.

    Returns:
        :class:`DomainShift`.  The reading's thresholds (p >= 0.05 and A-distance < 0.5:
        no shift; A-distance >= 1.5: large) are rules of thumb, stated in the sentence.
    """
    r = mmd(source, target, n_permutations=n_permutations, max_items=max_items, seed=seed)
    a = proxy_a_distance(source, target, max_items=max_items, seed=seed)
    level, reading = shift_reading(r.p_value, a)
    return DomainShift(r.mmd2, r.p_value, r.bandwidth, a, level, reading)
