"""Feature standardisation shared by the linear heads of every task."""
from __future__ import annotations

import numpy as np


def fit_scaler(X: np.ndarray):
    """A ``StandardScaler`` fitted on ``(N, D)`` features, each scale floored.

    A feature that is (nearly) constant on the training items, as happens with a handful of
    items, would be divided by ~0 (sklearn only guards exact zeros): the folded weights reach
    1e30 and fine-tuning from them (lp-ft) overflows.  Floor each scale at a thousandth of the
    median, so such a feature stays near 0 after scaling and carries no weight.
    """
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    floor = 1e-3 * float(np.median(scaler.scale_)) if np.median(scaler.scale_) > 0 else 1.0
    scaler.scale_ = np.maximum(scaler.scale_, floor)
    return scaler


def scaled(X, scale: bool):
    """``(Xs, scaler)``: ``X`` standardised by :func:`fit_scaler` (as float64), or ``X`` as it is
    and ``None`` when ``scale`` is off (sparse TF-IDF features)."""
    if not scale:
        return X, None
    X = np.asarray(X, dtype=np.float64)
    scaler = fit_scaler(X)
    return scaler.transform(X), scaler
