"""transferkit.scores: reference values of the authors' implementations, stability, invariances."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from transferkit.errors import UserInputError
from transferkit.scores import (
    SCORES,
    domain_shift,
    hscore,
    knn_accuracy,
    leep,
    logme,
    mmd,
    nce,
    proxy_a_distance,
    score,
    shift_reading,
)

rs = np.random.RandomState


@pytest.fixture(scope="module")
def ref():
    """The inputs of issue 4's reference values (thuml/LogME at commit 56551ca)."""
    f = rs(0).randn(1000, 64)
    y = rs(1).randint(0, 5, 1000)
    w = rs(2).randn(64, 5)
    y2 = np.argmax(f @ w + 0.5 * rs(3).randn(1000, 5), 1)
    f3 = rs(4).randn(100, 300)
    y3 = rs(5).randint(0, 3, 100)
    y4 = f @ rs(6).randn(64, 2) + 0.1 * rs(7).randn(1000, 2)
    p = softmax(rs(8).randn(1000, 20), axis=1)
    return dict(f=f, y=y, y2=y2, f3=f3, y3=y3, y4=y4, p=p)


# ----------------------------------------------------------------------------- reference values
@pytest.mark.parametrize("case, expected", [
    ("random labels", -0.613669798397046),
    ("linear labels", -0.47442213843549774),
    ("N < D", 5.753470374853918),
    ("regression", 0.5305282686196008),
])
def test_logme_matches_the_authors(ref, case, expected):
    got = {"random labels": lambda: logme(ref["f"], ref["y"]),
           "linear labels": lambda: logme(ref["f"], ref["y2"]),
           "N < D": lambda: logme(ref["f3"], ref["y3"]),
           "regression": lambda: logme(ref["f"], ref["y4"], regression=True)}[case]()
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-6)


def test_leep_and_nce_match_the_authors(ref):
    assert leep(ref["p"], ref["y2"]) == pytest.approx(-1.5962611345347413, rel=1e-6)
    assert nce(np.argmax(ref["p"], 1), ref["y2"]) == pytest.approx(-1.5609362772202613, rel=1e-6)


def test_float32_input_gives_the_float64_result(ref):
    f32 = ref["f"].astype(np.float32)
    assert logme(f32, ref["y2"]) == pytest.approx(logme(f32.astype(np.float64), ref["y2"]), rel=1e-12)


def test_row_chunking_does_not_change_logme(monkeypatch, ref):
    import sys

    from transferkit.scores import _common

    whole = logme(ref["f"], ref["y2"])
    module = sys.modules["transferkit.scores.logme"]  # the package's `logme` is the function
    monkeypatch.setattr(module, "row_chunks", lambda n: _common.row_chunks(n, 37))
    assert logme(ref["f"], ref["y2"]) == pytest.approx(whole, rel=1e-10)
    assert logme(ref["f3"], ref["y3"]) == pytest.approx(5.753470374853918, rel=1e-6)


# ----------------------------------------------------------------------------- LogME behaviour
def test_logme_is_higher_for_labels_the_features_explain(ref):
    assert logme(ref["f"], ref["y2"]) > logme(ref["f"], ref["y"])


def test_logme_label_permutation_invariance(ref):
    y2 = ref["y2"]
    renamed = np.array(["abcde"[(k + 3) % 5] for k in y2])  # other names, other order
    assert logme(ref["f"], renamed) == pytest.approx(logme(ref["f"], y2), rel=1e-12)
    perm = rs(9).permutation(len(y2))  # items shuffled together with their features
    assert logme(ref["f"][perm], y2[perm]) == pytest.approx(logme(ref["f"], y2), rel=1e-9)


def test_logme_duplicated_feature_columns(ref):
    """[F, F] spans the same functions as F: the maximised evidence is the same (N > 2D here)."""
    f, y2 = ref["f"], ref["y2"]
    assert logme(np.hstack([f, f]), y2) == pytest.approx(logme(f, y2), rel=1e-6)


def test_logme_scale_invariance_when_n_exceeds_d(ref):
    assert logme(7.0 * ref["f"], ref["y2"]) == pytest.approx(logme(ref["f"], ref["y2"]), rel=1e-4)


def test_logme_scale_dependence_of_the_authors_formula_when_n_below_d(ref):
    """The authors' log-determinant leaves out D - N null directions: rescaling by c shifts the
    score by (D - N)/N * log(c); ``exact=True`` does not depend on the scale."""
    f3, y3 = ref["f3"], ref["y3"]
    n, d = f3.shape
    shift = logme(10.0 * f3, y3) - logme(f3, y3)
    assert shift == pytest.approx((d - n) / n * np.log(10.0), rel=5e-2)  # not exact: the 1e-5 terms
    assert logme(10.0 * f3, y3, exact=True) == pytest.approx(logme(f3, y3, exact=True), abs=1e-2)
    # when N >= D, exact is the authors' value
    assert logme(ref["f"], ref["y2"], exact=True) == logme(ref["f"], ref["y2"])


@pytest.mark.parametrize("shape", [(20, 500), (50, 50), (5, 3), (3, 1000)])
def test_logme_finite_in_small_and_wide_cases(shape):
    f = rs(10).randn(*shape)
    y = np.arange(shape[0]) % 3
    for exact in (False, True):
        assert np.isfinite(logme(f, y, exact=exact))
    assert np.isfinite(logme(f, rs(11).randn(shape[0]), regression=True))


def test_logme_degenerate_features_stay_finite():
    y = np.arange(60) % 4
    assert np.isfinite(logme(np.zeros((60, 10)), y))  # no signal at all
    assert np.isfinite(logme(np.zeros((6, 10)), y[:6])) and np.isfinite(logme(np.zeros((6, 10)), y[:6], exact=True))
    const = np.ones((60, 10))
    assert np.isfinite(logme(const, y))
    dup_rows = np.repeat(rs(12).randn(15, 40), 4, axis=0)  # rank 15, N = 60 > D = 40
    assert np.isfinite(logme(dup_rows, y))
    rank_deficient = rs(13).randn(200, 5) @ rs(14).randn(5, 50)  # N > D, rank 5
    assert np.isfinite(logme(rank_deficient, np.arange(200) % 3))


def test_logme_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        logme(np.full((10, 3), np.nan), np.arange(10) % 2)
    with pytest.raises(ValueError, match="2-D"):
        logme(np.zeros(10), np.arange(10) % 2)
    with pytest.raises(ValueError, match="labels"):
        logme(np.zeros((10, 3)), np.arange(9) % 2)


# ----------------------------------------------------------------------------- H-score
def _hscore_by_definition(f, y, shrink=True):
    """tr(cov_a^+ (1 - a) cov(E[f|y])) written out with scikit-learn's LedoitWolf and pinv."""
    from sklearn.covariance import LedoitWolf

    f = f - f.mean(axis=0)
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(axis=0)
    if shrink:
        lw = LedoitWolf().fit(f)
        a, cov = lw.shrinkage_, lw.covariance_
    else:
        a, cov = 0.0, np.cov(f, rowvar=False)
    return float(np.trace(np.linalg.pinv(cov, rcond=1e-15) @ ((1 - a) * np.cov(g, rowvar=False))))


@pytest.mark.parametrize("n, d", [(400, 20), (60, 200), (100, 100)])
def test_hscore_matches_its_definition(n, d):
    f = rs(20).randn(n, d) * rs(21).rand(d) * 3
    y = rs(22).randint(0, 4, n)
    f[:, :3] += y[:, None]
    assert hscore(f, y) == pytest.approx(_hscore_by_definition(f, y), rel=1e-8)
    if n > d:
        assert hscore(f, y, shrinkage=None) == pytest.approx(_hscore_by_definition(f, y, False), rel=1e-8)


def test_hscore_is_zero_for_isotropic_features():
    """A peculiarity of the regularised H-score: when the features' covariance looks like a
    multiple of I, Ledoit-Wolf shrinks (almost) fully and the (1 - a) factor (nearly) zeroes
    the score, even for labels the features determine."""
    f = rs(25).randn(1000, 64)
    y = (f[:, 0] > 0).astype(int)
    assert hscore(f, y) < 0.05 * hscore(f, y, shrinkage=None)
    f0, y0 = rs(0).randn(1000, 64), rs(1).randint(0, 5, 1000)
    assert hscore(f0, y0) == 0.0  # here a = 1 exactly


def test_hscore_without_shrinkage_saturates_when_n_below_d():
    """Why shrinkage: with N <= D any labels are perfectly separable and plain H-score is C - 1."""
    f = rs(23).randn(50, 300)
    y = rs(24).randint(0, 4, 50)
    assert hscore(f, y, shrinkage=None) == pytest.approx(3.0, rel=1e-6)
    informative = f.copy()
    informative[:, :5] += 3 * y[:, None]
    assert hscore(informative, y) > hscore(f, y)


def test_hscore_invariances(ref):
    f, y2 = ref["f"] * np.linspace(0.2, 3.0, 64), ref["y2"]  # anisotropic: see the next test
    assert hscore(f, (y2 + 2) % 5) == pytest.approx(hscore(f, y2), rel=1e-12)
    assert hscore(f + 5.0, y2) == pytest.approx(hscore(f, y2), rel=1e-9)  # centring
    assert hscore(3.0 * f, y2) == pytest.approx(hscore(f, y2), rel=1e-9)
    assert hscore(f, y2) > hscore(f, ref["y"]) > 0
    assert np.isfinite(hscore(ref["f3"], ref["y3"]))
    with pytest.raises(ValueError, match="shrinkage"):
        hscore(f, y2, shrinkage=1.5)


# ----------------------------------------------------------------------------- LEEP / NCE
def test_leep_by_hand():
    # 4 items, 2 source classes, 2 target classes
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8]])
    y = np.array(["a", "a", "b", "b"])
    joint = np.array([[0.9 + 0.8, 0.1 + 0.2], [0.3 + 0.2, 0.7 + 0.8]]) / 4  # rows y, columns z
    cond = joint / joint.sum(axis=0)  # P(y | z)
    expected = np.mean([np.log(p[i] @ cond[int(y[i] == "b")]) for i in range(4)])
    assert leep(p, y) == pytest.approx(expected, rel=1e-12)
    assert leep(p, y) < 0


def test_leep_bounds_and_unused_source_classes():
    y = np.array([0, 0, 1, 1, 2])
    perfect = np.eye(3)[y]
    assert leep(np.hstack([perfect, np.zeros((5, 2))]), y) == pytest.approx(0.0, abs=1e-12)  # no NaN from empty z
    uniform = np.full((5, 4), 0.25)
    prior = np.bincount(y) / 5
    assert leep(uniform, y) == pytest.approx(np.mean(np.log(prior[y])), rel=1e-12)


def test_nce_by_hand():
    z = np.array([0, 0, 0, 1, 1, 7])  # source class 7 used once: labels need not be contiguous
    y = np.array([0, 0, 1, 1, 1, 0])
    # H(Y|Z) = P(z=0) H(2/3, 1/3) + P(z=1) * 0 + P(z=7) * 0
    h = 0.5 * -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))
    assert nce(z, y) == pytest.approx(-h, rel=1e-12)
    assert nce(y, y) == 0.0


# ----------------------------------------------------------------------------- kNN
@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_matches_scikit_learn_leave_one_out(k):
    from sklearn.model_selection import LeaveOneOut, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    f = rs(30).randn(90, 6)
    y = rs(31).randint(0, 3, 90)
    f[:, 0] += y
    expected = cross_val_score(KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute"), f, y,
                               cv=LeaveOneOut()).mean()
    assert knn_accuracy(f, y, k=k) == pytest.approx(expected)
    # small blocks: the chunked computation gives the same answer
    assert knn_accuracy(f, y, k=k, block_entries=200) == pytest.approx(expected)


def test_knn_basic_behaviour():
    f = np.vstack([rs(32).randn(20, 4) + [10, 0, 0, 0], rs(33).randn(20, 4) + [0, 10, 0, 0]])
    y = np.r_[np.zeros(20), np.ones(20)]
    assert knn_accuracy(f, y) == 1.0
    assert knn_accuracy(f, y, k=1000) == pytest.approx(knn_accuracy(f, y, k=39))
    with pytest.raises(ValueError):
        knn_accuracy(f, y, k=0)


# ----------------------------------------------------------------------------- domain distance
def test_mmd_same_distribution_vs_shifted():
    # Under the null the p-value is uniform: check its median over draws, not one draw.
    p_same = [mmd(rs(40 + i).randn(200, 10), rs(60 + i).randn(200, 10), n_permutations=100, seed=i).p_value
              for i in range(9)]
    assert 0.2 < np.median(p_same) < 0.8
    a, b = rs(40).randn(300, 10), rs(41).randn(300, 10)
    same = mmd(a, b, n_permutations=200)
    assert abs(same.mmd2) < 0.01
    shifted = mmd(a, b + 0.5, n_permutations=200)
    assert shifted.mmd2 > 10 * abs(same.mmd2)
    assert shifted.p_value <= 1 / 201 + 1e-12


def test_mmd_unbiased_estimate_by_definition():
    a, b = rs(42).randn(15, 3), rs(43).randn(12, 3) + 0.3
    r = mmd(a, b, n_permutations=10, bandwidth=1.3)

    def k(x, y):
        return np.exp(-((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / (2 * 1.3 ** 2))

    kxx, kyy = k(a, a), k(b, b)
    expected = ((kxx.sum() - np.trace(kxx)) / (15 * 14) + (kyy.sum() - np.trace(kyy)) / (12 * 11)
                - 2 * k(a, b).mean())
    assert r.mmd2 == pytest.approx(expected, rel=1e-10)
    assert (r.n_source, r.n_target) == (15, 12)


def test_proxy_a_distance_same_and_separable():
    a, b = rs(44).randn(300, 10), rs(45).randn(300, 10)
    assert proxy_a_distance(a, b) < 0.4
    assert proxy_a_distance(a, b + 5.0) == pytest.approx(2.0)
    # unequal sizes are balanced first: a majority guess cannot fake a distance
    assert proxy_a_distance(a, rs(46).randn(60, 10)) < 0.6


def test_domain_shift_readings():
    a = rs(47).randn(200, 8)
    same = domain_shift(a, rs(48).randn(200, 8), n_permutations=100)
    assert same.level == "none" and same.reading.startswith("the target looks like the source")
    far = domain_shift(a, rs(49).randn(200, 8) + 4.0, n_permutations=100)
    assert far.level == "large" and "domain adaptation should matter" in far.reading
    assert shift_reading(0.001, 0.8)[0] == "moderate"
    assert set(far.to_dict()) >= {"mmd2", "mmd_p_value", "a_distance", "level", "reading"}


# ----------------------------------------------------------------------------- registry
def test_registry_lists_the_scores_with_their_needs():
    assert SCORES.list() == ["hscore", "knn", "leep", "logme", "nce"]
    for e in SCORES:
        assert e.meta["higher_is_better"] is True
        assert e.meta["needs_source_head"] == (e.name in ("leep", "nce"))
        assert e.meta["title"] and e.meta["about"]
    with pytest.raises(UserInputError, match="did you mean"):
        SCORES.get("logmee")


def test_score_by_name(ref):
    assert score("logme", features=ref["f"], labels=ref["y2"]) == logme(ref["f"], ref["y2"])
    assert score("nce", source_probs=ref["p"], labels=ref["y2"]) == nce(ref["p"].argmax(1), ref["y2"])
    with pytest.raises(ValueError, match="needs source_probs"):
        score("leep", features=ref["f"], labels=ref["y2"])
