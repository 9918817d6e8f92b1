"""``linear-probe`` machinery: the logistic regression fit."""
from __future__ import annotations

import numpy as np

from transferkit.strategies.probe import fit_logistic


def test_probe_weights_stay_bounded_when_a_feature_is_nearly_constant():
    """Three training items can leave a feature constant up to rounding; dividing by its ~0
    standard deviation made weights of 1e30 and lp-ft's first step overflow."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 16)).astype(np.float32).astype(np.float64)
    X[:, 3] = 0.25 + np.array([0.0, 1e-12, -1e-12])  # constant up to rounding
    W, b, _ = fit_logistic(X, np.array([0, 1, 1]), Cs=(0.1,), cv=2, max_iter=200, seed=0)
    assert np.isfinite(W).all() and np.abs(W).max() < 1e3 and np.abs(b).max() < 1e3
