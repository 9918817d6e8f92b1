"""Rolling-origin backtests and forecasting windows: pure index arithmetic over 1-D series.

A rolling-origin backtest (Tashman 2000; Hyndman & Athanasopoulos, *Forecasting: Principles and
Practice*, 3rd ed., sec. 5.10 "time series cross-validation") cuts one series at ``n`` origins;
each model is fitted on everything before an origin (an expanding window) and forecasts the
``H`` values after it.  The last window ends at the series' end; origins step back by ``step``
(default ``H``: the test windows do not overlap).

The same windowing serves training: :func:`training_windows` cuts ``(context, future)`` pairs
from a history, scaled per window by :func:`window_scale`, so that a network pre-trained on
series of any level and spread reads them alike (the pre-training script and fine-tuning on a
target use the one function).  Layer 1: numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserInputError

#: Seasonal period of a median time step (in days), the usual one of each sampling
#: (Hyndman & Athanasopoulos, table 12.1): hourly -> daily cycle, daily -> weekly, weekly -> yearly ...
_PERIODS = ((1 / 24, 24), (1.0, 7), (7.0, 52), (30.4, 12), (91.3, 4), (365.25, 1))


@dataclass(frozen=True)
class Window:
    """One backtest window of one series: fit on ``values[:origin]``, forecast ``values[origin:origin + horizon]``."""

    series: int
    origin: int
    horizon: int


def rolling_origins(length: int, horizon: int, n_windows: int, *, step: int | None = None,
                    min_train: int = 1, name: str = "series") -> list[int]:
    """The ``n_windows`` origins of an expanding-window backtest, oldest first.

    Args:
        length: T, the series length.
        horizon: H, steps forecast from each origin.
        n_windows: how many origins.
        step: steps between origins (default H).
        min_train: the shortest history a model may be fitted on.
        name: the series' id, for the error.

    Returns:
        Origins ``o_k = T - H - (n_windows - 1 - k) * step``; the last window ends at T.

    Raises:
        UserInputError: the series is too short for that many windows with ``min_train`` history.
    """
    if horizon < 1 or n_windows < 1:
        raise UserInputError(f"horizon and windows must be >= 1, not {horizon} and {n_windows}")
    step = horizon if step is None else step
    first = length - horizon - (n_windows - 1) * step
    if first < min_train:
        need = min_train + horizon + (n_windows - 1) * step
        raise UserInputError(f"{name} has {length} values; {n_windows} backtest windows of {horizon} steps need "
                             f"at least {need} ({min_train} of history before the first window)",
                             hint="pass fewer --windows or a shorter --horizon, or leave out that series")
    return [first + k * step for k in range(n_windows)]


def seasonal_period(median_step_days: float | None) -> int:
    """The usual seasonal period for a median time step in days (1: unknown, or no season)."""
    if median_step_days is None or not np.isfinite(median_step_days) or median_step_days <= 0:
        return 1
    best = min(_PERIODS, key=lambda p: abs(np.log(median_step_days / p[0])))
    return best[1] if abs(np.log(median_step_days / best[0])) < 0.4 else 1


def infer_season(values: np.ndarray, candidates: tuple[int, ...] = (4, 7, 12, 24, 52),
                 threshold: float = 0.3) -> int:
    """The seasonal period a series shows: among ``candidates`` with three full cycles in the
    series, the lag where the autocorrelation of the differenced series (the trend removed) peaks,
    if it reaches ``threshold``; the shortest lag within 80% of that peak (a multiple of the
    period correlates too); else 1 (no season).  A simple form of R's ``findfrequency``."""
    d = np.diff(np.asarray(values, dtype=np.float64))
    d = d - d.mean()
    var = float(d @ d)
    lags = [m for m in candidates if len(d) >= 3 * m]
    if var <= 0 or not lags:
        return 1
    acf = {m: float(d[m:] @ d[:-m]) / var for m in lags}
    peak = max(acf.values())
    if peak < threshold:
        return 1
    return min(m for m in lags if acf[m] >= 0.8 * peak)


def naive_scale(history: np.ndarray, season: int) -> float:
    """The in-sample mean absolute error of the seasonal naive forecast: MASE's denominator.

    ``mean |y_t - y_{t-m}|`` over the history (Hyndman & Koehler 2006); with fewer than
    ``m + 1`` values the one-step naive (m = 1) is used.  A flat history gives a tiny positive
    floor, so that the scaled errors stay finite (such a series is flagged by the checks).
    """
    y = np.asarray(history, dtype=np.float64)
    m = season if len(y) > season else 1
    if len(y) < 2:
        return 1.0
    d = np.abs(y[m:] - y[:-m]).mean()
    return float(d) if d > 1e-12 else float(max(1e-8, 1e-8 * np.abs(y).max()))


def window_scale(context: np.ndarray) -> tuple[float, float]:
    """``(loc, scale)`` of one context window: its mean and standard deviation (floored).

    Per-window scaling as in DeepAR / Chronos: the network sees ``(y - loc) / scale`` and its
    outputs are mapped back with the same two numbers.
    """
    c = np.asarray(context, dtype=np.float64)
    c = c[np.isfinite(c)]
    if len(c) == 0:
        return 0.0, 1.0
    loc, sd = float(c.mean()), float(c.std())
    return loc, max(sd, 1e-3 * max(abs(loc), 1.0), 1e-8)


def fit_context(history: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``length`` values of a history, left-padded: ``(values, observed)`` both ``(length,)``.

    Padding (a history shorter than ``length``) is 0 with ``observed`` 0; so are NaNs.
    """
    h = np.asarray(history, dtype=np.float64)[-length:]
    values = np.zeros(length)
    observed = np.zeros(length)
    values[length - len(h):] = h
    observed[length - len(h):] = np.isfinite(h)
    values[~observed.astype(bool)] = 0.0
    return values, observed


def training_windows(series: list[np.ndarray], context: int, horizon: int, *, min_context: int = 8,
                     stride: int = 1) -> list[tuple[int, int]]:
    """Every ``(series index, cut)`` with at least ``min_context`` values before the cut and
    ``horizon`` after it, every ``stride`` steps: the training pairs of a forecaster."""
    out = []
    for i, s in enumerate(series):
        for cut in range(max(min_context, 1), len(s) - horizon + 1, stride):
            out.append((i, cut))
    return out


def scale_contexts(histories: list[np.ndarray], context: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network inputs of histories: ``x (N, 2, context)`` float32 (per-window scaled values,
    observed mask) and each window's ``loc (N,)``, ``scale (N,)`` to map outputs back."""
    n = len(histories)
    x = np.zeros((n, 2, context), dtype=np.float32)
    loc, scale = np.zeros(n), np.ones(n)
    for k, h in enumerate(histories):
        values, observed = fit_context(h, context)
        loc[k], scale[k] = window_scale(values[observed > 0])
        x[k, 0] = np.where(observed > 0, (values - loc[k]) / scale[k], 0.0)
        x[k, 1] = observed
    return x, loc, scale


def scaled_pairs(series: list[np.ndarray], cuts: list[tuple[int, int]], context: int,
                 horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Training pairs of windows: ``x (N, 2, context)`` as :func:`scale_contexts` and ``y (N, horizon)``
    float32, each future scaled by its own context's ``(loc, scale)`` (NaN where missing)."""
    x, loc, scale = scale_contexts([np.asarray(series[i], dtype=np.float64)[:cut] for i, cut in cuts], context)
    y = np.stack([(np.asarray(series[i], dtype=np.float64)[cut:cut + horizon] - loc[k]) / scale[k]
                  for k, (i, cut) in enumerate(cuts)]) if cuts else np.zeros((0, horizon))
    return x, y.astype(np.float32)
