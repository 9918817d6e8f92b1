"""The report of ``rl fit``: learning curves of every strategy with their bootstrap intervals over
seeds, the Taylor & Stone metrics against scratch, and the verdicts; one self-contained
``report.html`` (inline PNG, Jinja2 with autoescaping: data is only ever a value)."""
from __future__ import annotations

import base64
from typing import Any

from ..report import formatting
from ..report.plots import _figure, _label, _png, _quiet
from ..runs.rundir import REPORT, RunDir
from .metrics import METRICS

COLOURS = {"scratch": "#9aa4ae", "zero-shot": "#e08a2c", "finetune": "#2f6fb3", "frozen-features": "#3a9a5b",
           "randomized-source": "#8a4fb3"}


def learning_curves(rl: dict[str, Any]) -> bytes:
    """Mean return of every strategy over the evaluation steps, with its interval as a band."""
    fig = _figure(7.0, 3.8)
    ax = fig.add_subplot()
    steps = rl["steps"]
    with _quiet():
        for name, c in rl["curves"].items():
            colour = COLOURS.get(name, "#444444")
            ax.plot(steps, c["mean"], label=_label(name), color=colour, lw=2 if name != "scratch" else 1.5,
                    ls="--" if name == "scratch" else "-")
            lo, hi = c["ci"]
            ax.fill_between(steps, lo, hi, color=colour, alpha=0.15, lw=0)
        ax.axhline(rl["threshold"], color="#666666", lw=0.8, ls=":", label="threshold")
        ax.set_xlabel("environment steps in the target")
        ax.set_ylabel("evaluation return")
        ax.legend(fontsize=8, loc="best")
        ax.grid(alpha=0.3)
    return _png(fig)


def _rows(rl: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for metric in METRICS:
        for name, v in rl[metric].items():
            rows.append({"metric": metric, "name": name, "mean": formatting.number(v["mean"], 1),
                         "ci": formatting.number_interval(v["ci"], 1), "gain": formatting.signed(v["gain"], 1),
                         "gain_ci": formatting.number_interval(v["gain_ci"], 1)})
    return rows


def write_report(rd: RunDir, metrics: dict[str, Any]) -> None:
    """``report.html`` of an ``rl fit`` run from its ``metrics.json`` content."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("transferkit.rl", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    rl = metrics["rl"]
    html = env.get_template("rl_report.html").render(
        rl=rl, verdict=metrics.get("verdict"), rows=_rows(rl),
        curves_png=base64.b64encode(learning_curves(rl)).decode("ascii"),
        ratios={k: formatting.number(v, 2) for k, v in rl["transfer_ratio"].items()})
    rd.write_text(REPORT, html)
