"""Feature standardisation shared by the linear heads of every task."""
from __future__ import annotations

import numpy as np

#: The smallest scale of a feature, as a share of the median feature scale (see fit_scaler).
SCALE_FLOOR = 0.1


def fit_scaler(X: np.ndarray):
    """A ``StandardScaler`` fitted on ``(N, D)`` features, each scale floored.

    A feature that is (nearly) constant on the training items, as happens with a few hundred
    items or fewer, would be divided by ~0 (sklearn only guards exact zeros): the folded weights
    reach 1e30 and fine-tuning from them (lp-ft) overflows, and a test item on which the feature
    does move gets a standardised value in the hundreds, which the head extrapolates wildly.
    Floor each scale at a tenth of the median scale: such a feature counts at most as a feature
    of a tenth of the typical spread (a stronger L2 prior on it), never as a huge one.  Measured
    on efficientnet-lite0 features of MNIST-5k digits, 150 training items, 8 draws: the ridge
    probe's RMSE on the digit's value was 2.68 on average (worst 4.13, the mean predictor 2.95)
    with a floor of a thousandth, 1.89 (worst 2.14) with a tenth; the classification probe's
    accuracy rose from 0.800 to 0.843 (4 draws), and with 600 training items stayed the same
    (0.906 -> 0.910).
    """
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    floor = SCALE_FLOOR * float(np.median(scaler.scale_)) if np.median(scaler.scale_) > 0 else 1.0
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
