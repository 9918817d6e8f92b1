"""The report of a forecasting run: verdict, backtest metrics per model, per-series MASE, and
for each series a plot of its history, the forecast of the next H values and its intervals.

Built from plain values (metrics.json, the series, the forecast rows), never from the pipeline's
objects.  Layer 5.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import plots
from .html import template_env

MAX_PLOTTED = 8  # series drawn; the rest are in the tables
SHOWN_HISTORY = 120  # last values of the history drawn before the forecast


def forecast_plot(history: Sequence[float], steps: Sequence[int], q: dict[str, Sequence[float]],
                  title: str) -> bytes:
    """History, the median forecast and its 50% / 80% intervals: PNG bytes.

    Args:
        history: the series' values (the last :data:`SHOWN_HISTORY` are drawn).
        steps: the 1-based time steps of the forecast.
        q: ``{"q10", "q25", "forecast", "q75", "q90"}`` -> one value per step.
    """
    h = np.asarray(history, dtype=float)
    start = max(0, len(h) - SHOWN_HISTORY)
    fig = plots._figure(7.5, 2.6)
    with plots._quiet():
        ax = fig.add_subplot()
        ax.plot(np.arange(start + 1, len(h) + 1), h[start:], color="#333", lw=1.2, label="history")
        ax.fill_between(steps, q["q10"], q["q90"], color=plots.TRANSFER_COLOUR, alpha=0.18, lw=0, label="80% interval")
        ax.fill_between(steps, q["q25"], q["q75"], color=plots.TRANSFER_COLOUR, alpha=0.35, lw=0, label="50% interval")
        ax.plot(steps, q["forecast"], color=plots.TRANSFER_COLOUR, lw=1.6, label="forecast (median)")
        ax.set_title(plots._label(title, 60), fontsize=10)
        ax.set_xlabel("time step")
        ax.legend(fontsize=8, loc="upper left", frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
        return plots._png(fig)


def _line(m: dict) -> str:
    parts = [f"MASE {m['mase']:.3f} [{m['mase_ci'][0]:.3f}, {m['mase_ci'][1]:.3f}]",
             f"sMAPE {m['smape']:.1f}%"]
    if "crps" in m:
        parts.append(f"scaled CRPS {m['crps']:.3f}")
    return " · ".join(parts)


def forecast_view(metrics: dict, series: list[tuple[str, np.ndarray]], rows: list[dict[str, Any]]) -> dict:
    """The template's values."""
    models = [(f"transfer ({metrics['strategy']})", metrics["test"], True)]
    models += [(name, m, False) for name, m in metrics.get("variants", {}).items()]
    models += [(name, m, False) for name, m in metrics.get("controls", {}).items()]
    bars = plots.metric_bars([n for n, _, _ in models], [m["mase"] for _, m, _ in models],
                             [m["mase_ci"] for _, m, _ in models], label="MASE (lower is better)",
                             percent=False, n_transfer=1 + len(metrics.get("variants", {})))
    figures = []
    for name, values in series[:MAX_PLOTTED]:
        mine = [r for r in rows if r["series"] == name]
        q = {k: [r[k] for r in mine] for k in ("q10", "q25", "forecast", "q75", "q90")}
        figures.append({"name": name, "png": forecast_plot(values, [r["step"] for r in mine], q, name)})
    names = [n for n, _, _ in models]
    keys = ["transfer"] + list(metrics.get("variants", {})) + list(metrics.get("controls", {}))
    per_series = [{"name": s, "values": [f"{v.get(k, float('nan')):.3f}" for k in keys]}
                  for s, v in metrics["per_series"].items()]
    return {"metrics": metrics, "models": [(n, _line(m), t) for n, m, t in models], "bars": bars,
            "figures": figures, "n_more": max(0, len(series) - MAX_PLOTTED), "columns": names,
            "per_series": per_series, "control": metrics.get("control", {}).get("name")}


def render_forecast_report(metrics: dict, series: list[tuple[str, np.ndarray]], rows: list[dict[str, Any]]) -> str:
    """The run's report.html as text."""
    return template_env().get_template("forecast.html").render(**forecast_view(metrics, series, rows))
