"""Forecasting: H future values per backtest window, scored by MASE (primary), sMAPE and, for
quantile forecasts, the quantile (pinball) loss and CRPS.

The items of a forecast evaluation are backtest windows (:mod:`.backtest`), not single values:
intervals come from a percentile bootstrap over windows, and the verdict is the paired bootstrap
of :meth:`Task.verdict` over the same windows.

Every window arrives already divided by its own MASE scale (the in-sample mean absolute error of
the seasonal naive forecast on that window's history, :func:`.backtest.naive_scale`): then the
mean absolute error of a window *is* its MASE (Hyndman & Koehler 2006), the pinball loss and CRPS
are scale-free (comparable across series, as in the M4/M5 scaled losses), and sMAPE, which is
invariant to a common positive scale, is unchanged.

The forecast task is deliberately not in :data:`TASKS`: the strategies and the classification
conformance suite enumerate that registry, and no strategy learns from labelled items here; the
forecasting pipeline holds :data:`FORECAST` itself.  Layer 1: numpy only.
"""
from __future__ import annotations

import numpy as np

from .base import Outputs, Task, bootstrap

#: Quantile levels every forecaster here gives (the median is the point forecast).
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _as_quantiles(outputs: np.ndarray) -> np.ndarray:
    """``(W, H)`` point forecasts or ``(W, H, Q)`` quantiles -> ``(W, H, Q)``."""
    o = np.asarray(outputs, dtype=np.float64)
    return o[..., None] if o.ndim == 2 else o


def median_of(outputs: np.ndarray, quantiles: tuple[float, ...] = QUANTILES) -> np.ndarray:
    """The point forecast ``(W, H)``: the 0.5 quantile, or the outputs themselves when ``(W, H)``."""
    o = _as_quantiles(outputs)
    if o.shape[-1] == 1:
        return o[..., 0]
    return o[..., list(quantiles).index(0.5)]


def pinball(y: np.ndarray, q: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """Quantile (pinball) loss per window, averaged over steps and levels: ``(W,)``.

    ``y (W, H)``, ``q (W, H, Q)``; for level tau, ``max(tau (y - q), (tau - 1)(y - q))``.
    """
    tau = np.asarray(levels, dtype=np.float64)
    d = y[..., None] - q
    return np.maximum(tau * d, (tau - 1) * d).mean(axis=(1, 2))


def per_window(y: np.ndarray, outputs: np.ndarray, quantiles: tuple[float, ...] = QUANTILES) -> dict[str, np.ndarray]:
    """Each window's scores ``(W,)``: ``mase``, ``smape`` (percent), and with quantiles
    ``pinball`` and ``crps`` (twice the pinball loss averaged over the levels: the quantile
    approximation of the CRPS, Gneiting & Raftery 2007, as in Chronos / GluonTS' mean wQL)."""
    y = np.asarray(y, dtype=np.float64)
    o = _as_quantiles(outputs)
    if y.ndim != 2 or o.shape[:2] != y.shape:
        raise ValueError(f"forecast y must be (W, H) and outputs (W, H) or (W, H, Q); got {y.shape}, {o.shape}")
    if not (np.isfinite(y).all() and np.isfinite(o).all()):
        raise ValueError("forecast targets and outputs must be finite")
    point = median_of(o, quantiles)
    err = np.abs(y - point)
    denom = np.abs(y) + np.abs(point)
    with np.errstate(divide="ignore", invalid="ignore"):
        sm = np.where(denom > 0, 2 * err / denom, 0.0)
    out = {"mase": err.mean(axis=1), "smape": 100 * sm.mean(axis=1)}
    if o.shape[-1] > 1:
        out["pinball"] = pinball(y, o, quantiles)
        out["crps"] = 2 * out["pinball"]
    return out


class Forecast(Task):
    """Forecasts of backtest windows.  ``y``: ``(W, H)`` true future values, ``outputs``:
    ``(W, H, Q)`` quantiles at :data:`QUANTILES` (or ``(W, H)`` point forecasts), both divided
    by each window's MASE scale; primary metric MASE (lower is better)."""

    name = "forecast"
    primary = "mase"
    higher_is_better = False
    primary_label = "MASE"

    def metrics(self, y: np.ndarray, outputs: np.ndarray, classes: list[str] | None = None, *,
                thresholds: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
                confidence: float = 0.95) -> dict:
        """Backtest metrics with percentile-bootstrap intervals over windows.

        Returns:
            ``{"n_windows", "horizon", "mase", "mase_ci", "smape", "smape_ci"[, "pinball",
            "pinball_ci", "crps", "crps_ci"], "n_boot", "confidence"}``.
        """
        scores = per_window(y, outputs)
        names = list(scores)
        table = np.stack([scores[k] for k in names])  # (K, W)
        n = table.shape[1]

        def stat(counts: np.ndarray) -> tuple[np.ndarray, ...]:
            return tuple(counts @ row / n for row in table)

        point, cis = bootstrap(stat, n, n_boot, seed, confidence)
        out: dict = {"n_windows": int(n), "horizon": int(np.asarray(y).shape[1])}
        for i, k in enumerate(names):
            out[k], out[f"{k}_ci"] = float(point[i]), cis[i].tolist()
        return {**out, "n_boot": int(n_boot), "confidence": float(confidence)}

    def _primary_stat(self, y: np.ndarray, outputs: Outputs):
        m = per_window(y, outputs.values)["mase"]
        return lambda counts: counts @ m / len(m)

    def _same(self, y: np.ndarray, a: Outputs, b: Outputs) -> bool:
        return bool(np.array_equal(median_of(a.values), median_of(b.values)))

    def _compare(self, gain: float, best: str) -> str:
        if gain == 0:
            return f"the same MASE as the best control ({best})"
        return f"MASE {abs(gain):.3g} {'lower' if gain > 0 else 'higher'} than the best control ({best})"

    def _ci_text(self, lo: float, hi: float, confidence: float) -> str:
        return f"{100 * confidence:g}% CI of the MASE reduction [{lo:+.3g}, {hi:+.3g}] over backtest windows"


FORECAST = Forecast()
