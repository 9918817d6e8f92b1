"""The classical forecasting controls: seasonal naive, ETS and ARIMA (statsmodels), each refitted
on every backtest window's history, each giving the quantiles of :data:`~.tasks.forecast.QUANTILES`.

* ``seasonal-naive``: ``y_{t+h} = y_{t+h-km}`` (k the seasons ahead); normal quantiles with the
  in-sample seasonal-difference spread times ``sqrt(k)`` (Hyndman & Athanasopoulos, FPP3 5.5).
* ``ets``: statsmodels' ``ETSModel`` with additive errors; trend none or damped additive,
  seasonality none or additive (when two full seasons exist), chosen by AIC (as ``ets()`` in R's
  forecast package does over its larger set); normal quantiles from its forecast variance.
* ``arima``: statsmodels' ``SARIMAX``; the differencing by a KPSS test at 5% (as auto.arima), the
  seasonal differencing when three full seasons exist, then the AR/MA orders by AIC over a small
  grid; normal quantiles from its forecast standard errors.

A model that fails to fit (too short a history, no convergence, a non-finite forecast) gives the
seasonal naive forecast for that window, and the count of such fallbacks is recorded.
Layer 4: numpy, scipy, statsmodels (imported when a control runs).
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
from scipy.stats import norm

from ._registry import Registry
from .errors import MissingDependencyError
from .tasks.forecast import QUANTILES

FORECAST_CONTROLS: Registry = Registry("forecast control")
_Z = norm.ppf(np.asarray(QUANTILES))  # (Q,)
_ARMA_GRID = ((1, 0), (0, 1), (1, 1), (2, 0), (2, 1), (0, 2))


def _statsmodels():
    try:
        import statsmodels  # noqa: F401
    except ImportError:
        raise MissingDependencyError("the ETS and ARIMA forecasting controls", "'transferkit[timeseries]'") from None


def normal_quantiles(mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``(H,)`` means and standard deviations -> ``(H, Q)`` quantiles of normal forecasts."""
    sd = np.nan_to_num(np.asarray(sd, dtype=np.float64), nan=0.0).clip(min=0)
    return np.asarray(mean, dtype=np.float64)[:, None] + sd[:, None] * _Z[None, :]


@FORECAST_CONTROLS.register("seasonal-naive")
def seasonal_naive(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The last season repeated: ``(horizon, Q)`` quantiles."""
    y = np.asarray(history, dtype=np.float64)
    m = season if len(y) > season else 1
    h = np.arange(1, horizon + 1)
    k = (h - 1) // m + 1  # whole seasons ahead
    mean = y[len(y) - 1 + h - k * m]
    resid = y[m:] - y[:-m]
    sd = float(np.sqrt(np.mean(resid ** 2))) if len(resid) else 0.0
    return normal_quantiles(mean, sd * np.sqrt(k))


def _quiet(fit: Callable[[], tuple[np.ndarray, np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray, float] | None:
    """A statsmodels fit with its convergence warnings silenced; ``None`` when it fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mean, sd, aic = fit()
        except (ValueError, np.linalg.LinAlgError, IndexError, ZeroDivisionError, OverflowError):
            return None
    if not (np.isfinite(mean).all() and np.isfinite(aic)):
        return None
    return mean, sd, aic


@FORECAST_CONTROLS.register("ets")
def ets(history: np.ndarray, horizon: int, season: int) -> np.ndarray | None:
    """Exponential smoothing, the form chosen by AIC: ``(horizon, Q)`` quantiles, or ``None``."""
    _statsmodels()
    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    y = pd.Series(np.asarray(history, dtype=np.float64))  # ETS's prediction needs an index
    seasonal = [None] + (["add"] if season > 1 and len(y) >= 2 * season + 2 else [])
    best = None
    for trend in (None, "add"):
        for s in seasonal:
            def fit(trend=trend, s=s):
                r = ETSModel(y, error="add", trend=trend, damped_trend=trend is not None, seasonal=s,
                             seasonal_periods=season if s else None).fit(disp=False)
                p = r.get_prediction(start=len(y), end=len(y) + horizon - 1)
                return np.asarray(p.predicted_mean), np.sqrt(np.asarray(p.var_pred_mean)), r.aic
            got = _quiet(fit)
            if got is not None and (best is None or got[2] < best[2]):
                best = got
    return None if best is None else normal_quantiles(best[0], best[1])


def _kpss_diffs(y: np.ndarray, max_d: int = 1) -> int:
    """Differences needed for level stationarity by the KPSS test at 5% (Kwiatkowski et al. 1992)."""
    from statsmodels.tsa.stattools import kpss

    d = 0
    while d < max_d and len(y) > 10:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "p-value outside the table": the bound is what we need
            p = kpss(y, regression="c", nlags="auto")[1]
        if p >= 0.05:
            break
        y, d = np.diff(y), d + 1
    return d


@FORECAST_CONTROLS.register("arima")
def arima(history: np.ndarray, horizon: int, season: int) -> np.ndarray | None:
    """(S)ARIMA, orders by AIC over a small grid: ``(horizon, Q)`` quantiles, or ``None``."""
    _statsmodels()
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    y = np.asarray(history, dtype=np.float64)
    seasonal_d = season > 1 and len(y) >= 3 * season + 2
    z = y[season:] - y[:-season] if seasonal_d else y
    d = _kpss_diffs(z)
    sorder = (0, 1, 1, season) if seasonal_d else (0, 0, 0, 0)
    best = None
    for p, q in _ARMA_GRID:
        def fit(p=p, q=q):
            r = SARIMAX(y, order=(p, d, q), seasonal_order=sorder, trend="c" if d == 0 and not seasonal_d else "n",
                        enforce_stationarity=True, enforce_invertibility=True).fit(disp=False, maxiter=100)
            f = r.get_forecast(horizon)
            return np.asarray(f.predicted_mean), np.asarray(f.se_mean), r.aic
        got = _quiet(fit)
        if got is not None and (best is None or got[2] < best[2]):
            best = got
    return None if best is None else normal_quantiles(best[0], best[1])


def control_forecasts(history: np.ndarray, horizon: int, season: int, names: tuple[str, ...] = (
        "seasonal-naive", "ets", "arima")) -> dict[str, tuple[np.ndarray, bool]]:
    """Every control's ``(horizon, Q)`` quantiles for one history, and whether it fell back to
    the seasonal naive forecast."""
    naive = seasonal_naive(history, horizon, season)
    out = {}
    for name in names:
        got = FORECAST_CONTROLS.get(name)(history, horizon, season)
        out[name] = (naive, True) if got is None else (got, False)
    return out

