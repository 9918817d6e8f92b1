"""Classical time-series models: ROCKET features and 1-nearest-neighbour DTW.

* :class:`RocketCore`: ROCKET (Dempster, Petitjean & Webb 2020, "ROCKET: exceptionally fast and
  accurate time series classification using random convolutional kernels"): random kernels of
  length 7, 9 or 11, weights N(0, 1) centred, bias U(-1, 1), dilation ``2^U(0, log2((L-1)/(k-1)))``,
  padding on half of them; two features per kernel, the proportion of positive values (PPV) and
  the maximum.  A linear head on them (the classical model's, regularisation by cross-validation)
  is the control.  Written here because ``aeon``/``sktime`` (MiniRocket) need numba, whose wheels
  require numpy < 2.4 (this project pins 2.4.6).  Multivariate: each kernel reads one channel,
  drawn at random (a simplification of ROCKET's random channel subsets).
* :func:`dtw_1nn`: 1-NN under dynamic time warping with a Sakoe-Chiba band (10% of the length,
  the UCR archive's usual window), the time-series classification reference since Ding et al.
  (2008); computed for all pairs at once along the warping matrix, in numpy.

Series are z-normalised per channel first (as the encoder sees them); unequal lengths are fine.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

KERNEL_LENGTHS = (7, 9, 11)
N_KERNELS = 1000  # ROCKET's default is 10,000; 1,000 (2,000 features) keep the cross-validated head fast
DTW_WINDOW = 0.1


def znorm(x: np.ndarray) -> np.ndarray:
    """``(C, T)`` z-normalised per channel (a constant channel becomes zeros)."""
    x = np.asarray(x, dtype=np.float32)
    x = x[None, :] if x.ndim == 1 else x
    sd = x.std(axis=1, keepdims=True)
    return np.where(sd > 1e-8, (x - x.mean(axis=1, keepdims=True)) / np.where(sd > 1e-8, sd, 1.0), 0.0)


class RocketCore:
    """ROCKET random kernels; ``fit`` draws them for the training series' length and channels."""

    def __init__(self, n_kernels: int = N_KERNELS, seed: int = 0):
        self.n_kernels, self.seed = n_kernels, seed

    def fit(self, data: Any) -> "RocketCore":
        rng = np.random.default_rng(self.seed)
        length = max(int(np.shape(x)[-1]) for x in data.inputs)
        channels = int(np.atleast_2d(data.inputs[0]).shape[0])
        k = rng.choice(KERNEL_LENGTHS, self.n_kernels)
        weights = np.zeros((self.n_kernels, max(KERNEL_LENGTHS)), np.float32)
        for i, n in enumerate(k):
            w = rng.normal(size=n)
            weights[i, :n] = w - w.mean()
        self.lengths_ = k.astype(np.int64)
        self.weights_ = weights
        self.bias_ = rng.uniform(-1, 1, self.n_kernels).astype(np.float32)
        top = np.log2(np.maximum((length - 1) / (k - 1), 1.0))
        self.dilations_ = np.floor(2 ** rng.uniform(0, top)).astype(np.int64)
        self.padding_ = np.where(rng.integers(0, 2, self.n_kernels) == 1, (k - 1) * self.dilations_ // 2, 0)
        self.channels_ = rng.integers(0, channels, self.n_kernels).astype(np.int64)
        return self

    def transform(self, data: Any) -> np.ndarray:
        """``(N, 2 * n_kernels)``: PPV and max of each kernel, series of equal length batched."""
        series = [znorm(x) for x in data.inputs]
        out = np.zeros((len(series), 2 * self.n_kernels), np.float64)
        by_length: dict[int, list[int]] = {}
        for i, s in enumerate(series):
            by_length.setdefault(s.shape[1], []).append(i)
        with torch.inference_mode():
            for idx in by_length.values():
                x = torch.from_numpy(np.stack([series[i] for i in idx]))
                out[idx] = self._features(x)
        return out

    def _features(self, x: torch.Tensor) -> np.ndarray:
        n, _, t = x.shape
        feats = np.zeros((n, 2 * self.n_kernels), np.float64)
        groups: dict[tuple, list[int]] = {}
        for j in range(self.n_kernels):
            key = (int(self.lengths_[j]), int(self.dilations_[j]), int(self.padding_[j]), int(self.channels_[j]))
            groups.setdefault(key, []).append(j)
        for (k, d, p, c), js in groups.items():
            if (k - 1) * d + 1 > t + 2 * p:  # a kernel longer than the series: features stay 0
                continue
            w = torch.from_numpy(self.weights_[js, :k]).unsqueeze(1)
            y = F.conv1d(x[:, c:c + 1], w, torch.from_numpy(self.bias_[js]), padding=p, dilation=d)
            feats[:, [2 * j for j in js]] = (y > 0).float().mean(dim=2).numpy()
            feats[:, [2 * j + 1 for j in js]] = y.amax(dim=2).numpy()
        return feats

    def state(self) -> dict[str, torch.Tensor]:
        return {"lengths": torch.from_numpy(self.lengths_), "weights": torch.from_numpy(self.weights_),
                "bias": torch.from_numpy(self.bias_), "dilations": torch.from_numpy(self.dilations_),
                "padding": torch.from_numpy(np.asarray(self.padding_, np.int64)),
                "channels": torch.from_numpy(self.channels_)}

    @classmethod
    def restore(cls, tensors: dict[str, torch.Tensor]) -> "RocketCore":
        r = cls(n_kernels=int(tensors["lengths"].numel()))
        r.lengths_, r.weights_ = tensors["lengths"].numpy(), tensors["weights"].numpy()
        r.bias_, r.dilations_ = tensors["bias"].numpy(), tensors["dilations"].numpy()
        r.padding_, r.channels_ = tensors["padding"].numpy(), tensors["channels"].numpy()
        return r

    def describe(self) -> str:
        return f"ROCKET, {self.n_kernels} random kernels (PPV + max)"


def dtw_distances(a: list[np.ndarray], b: list[np.ndarray], window: float = DTW_WINDOW) -> np.ndarray:
    """``(len(a), len(b))`` DTW distances (squared point costs summed over channels, the
    dependent multivariate DTW), Sakoe-Chiba band ``window`` x the longer length (at least 1
    step; widened to the length difference so that unequal series can be aligned).

    All pairs advance together along the warping matrix: one numpy operation per cell.
    """
    za, zb = [znorm(x) for x in a], [znorm(x) for x in b]
    ta, tb = max(x.shape[1] for x in za), max(x.shape[1] for x in zb)
    la = np.array([x.shape[1] for x in za])
    lb = np.array([x.shape[1] for x in zb])
    A = np.zeros((len(za), za[0].shape[0], ta), np.float32)
    B = np.zeros((len(zb), zb[0].shape[0], tb), np.float32)
    for i, x in enumerate(za):
        A[i, :, :x.shape[1]] = x
    for j, x in enumerate(zb):
        B[j, :, :x.shape[1]] = x
    band = max(1, int(math.ceil(window * max(ta, tb))), abs(ta - tb))
    inf = np.float32(np.inf)
    prev = np.full((len(za), len(zb), tb + 1), inf, np.float32)
    prev[:, :, 0] = 0.0
    out = np.full((len(za), len(zb)), inf, np.float32)
    for i in range(1, ta + 1):
        cur = np.full_like(prev, inf)
        lo, hi = max(1, i - band), min(tb, i + band)
        ai = A[:, :, i - 1]
        for j in range(lo, hi + 1):
            cost = ((ai[:, None, :] - B[None, :, :, j - 1]) ** 2).sum(axis=2)
            best = np.minimum(np.minimum(prev[:, :, j], prev[:, :, j - 1]), cur[:, :, j - 1])
            cur[:, :, j] = cost + best
        done = la == i
        if done.any():
            out[done] = cur[done][:, np.arange(len(zb)), lb]
        prev = cur
    return out


def dtw_1nn(train: list[np.ndarray], y: np.ndarray, test: list[np.ndarray], n_classes: int,
            window: float = DTW_WINDOW, block: int = 64) -> np.ndarray:
    """One-hot ``(len(test), n_classes)`` of each test series' nearest training series' class
    ``y (N,)`` (ties: the first training series)."""
    out = np.zeros((len(test), n_classes))
    for s in range(0, len(test), block):
        d = dtw_distances(test[s:s + block], train, window)
        out[np.arange(s, s + d.shape[0]), y[d.argmin(axis=1)]] = 1.0
    return out


def class_prototypes(items: list[np.ndarray], labels: list[str], length: int = 64) -> list[np.ndarray]:
    """One prototype ``(1, length)`` per class: the mean of the class's series, each z-normalised,
    averaged over its channels and linearly resampled to ``length`` (Fawaz et al. 2018 average
    with DBA; a plain mean keeps this cheap)."""
    grid = np.linspace(0.0, 1.0, length)
    out = []
    for c in sorted(set(labels)):
        rows = [znorm(x).mean(axis=0) for x, lab in zip(items, labels) if lab == c]
        rows = [np.interp(grid, np.linspace(0.0, 1.0, len(r)), r) for r in rows]
        out.append(np.mean(rows, axis=0, dtype=np.float64)[None, :].astype(np.float32))
    return out


def dataset_distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Fawaz et al. (2018)'s inter-data-set similarity, lower is closer: the smallest DTW distance
    between a class prototype of one set and one of the other (prototypes from :func:`class_prototypes`)."""
    return float(dtw_distances(a, b).min())
