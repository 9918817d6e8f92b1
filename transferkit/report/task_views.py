"""The report's view of the tasks beyond classification: regression and multi-label.

``html.render_report`` hands a run's metrics here when ``metrics["task"]`` is not
classification.  This module turns them into the plain values the templates print: the summary
table's columns and cells (numbers already formatted: RMSE and MAE in the target's own units,
proportions in percent), the verdict line on the task's primary metric, the figures and the
per-label table.  Everything returned is text or PNG bytes; the templates escape the text.
The classification page is built by ``html.py`` alone and does not pass through here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import formatting, plots

__all__ = ["TASKS", "COLUMNS", "PRIMARY", "Column", "primary_key", "task_view"]


@dataclass(frozen=True)
class Column:
    """One metric of the summary table.

    ``kind``: "units" (in the regression target's units), "pct" (a proportion, shown in percent,
    differences in points) or "num" (a unitless number such as R²).  ``label`` heads the table's
    column, ``word`` names the metric in a sentence.
    """

    key: str
    label: str
    kind: str
    higher_is_better: bool
    word: str = ""

    @property
    def prose(self) -> str:
        return self.word or self.label


COLUMNS: dict[str, tuple[Column, ...]] = {
    "regression": (Column("rmse", "RMSE", "units", False), Column("mae", "MAE", "units", False),
                   Column("r2", "R²", "num", True), Column("spearman", "Spearman ρ", "num", True)),
    "multi-label": (Column("micro_f1", "Micro-F1", "pct", True, "micro-F1"),
                    Column("macro_f1", "Macro-F1", "pct", True, "macro-F1"),
                    Column("subset_accuracy", "Subset accuracy", "pct", True, "subset accuracy"),
                    Column("hamming_loss", "Hamming loss", "pct", False), Column("map", "mAP", "pct", True)),
}
PRIMARY = {"regression": "rmse", "multi-label": "micro_f1"}  # when metrics.json names no verdict_metric
TASKS = ("classification", *COLUMNS)

_NOTES = {
    "regression": ("RMSE (root mean squared error) and MAE (mean absolute error) are in the target's own units"
                   "{target}: lower is better. R² is the share of the target's variance explained (1 is perfect, 0 "
                   "no better than predicting the mean of the test targets, below 0 worse); Spearman ρ is the rank "
                   "correlation of predictions with the true values: higher is better."),
    "multi-label": ("Micro-F1 pools every item-label decision; macro-F1 averages the F1 of each label, so rare "
                    "labels count as much as common ones; subset accuracy is the share of items whose whole label "
                    "set is exactly right; mAP (mean average precision over labels) ranks the items by each "
                    "label's probability and needs no threshold: higher is better. Hamming loss, the share of "
                    "wrong item-label decisions, is lower-is-better."),
}


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


@dataclass(frozen=True)
class _Fmt:
    """Formats one task's numbers; ``decimals`` is for values in the target's units."""

    decimals: int

    def value(self, col: Column, x: float | None) -> str:
        if _missing(x):
            return "—"
        return formatting.pct(x) if col.kind == "pct" else formatting.number(x, self._d(col))

    def interval(self, col: Column, ci: list | None) -> str | None:
        return formatting.number_interval(ci, self._d(col), percent=col.kind == "pct")

    def diff(self, col: Column, g: float | None) -> str:
        """A signed difference: points for proportions, else in the metric's own units."""
        if _missing(g):
            return "—"
        return formatting.points(g) if col.kind == "pct" else formatting.signed(g, self._d(col))

    def magnitude(self, col: Column, g: float) -> str:
        return f"{abs(100 * g):.1f} points" if col.kind == "pct" else formatting.number(abs(g), self._d(col))

    def is_zero(self, col: Column, g: float) -> bool:
        """Whether ``g`` shows as zero at the digits printed."""
        return round(100 * g, 1) == 0 if col.kind == "pct" else round(g, self._d(col)) == 0

    def _d(self, col: Column) -> int:
        return self.decimals if col.kind == "units" else 3


def primary_key(m: dict, task: str) -> str:
    """The key of the verdict's metric: ``metrics["verdict_metric"]``, else the task's default."""
    return str(m.get("verdict_metric") or PRIMARY[task])


def _column(task: str, key: str) -> Column:
    for col in COLUMNS[task]:
        if col.key == key:
            return col
    raise ValueError(f"metrics.json names verdict_metric {key!r}, which is not a {task} metric "
                     f"({', '.join(c.key for c in COLUMNS[task])})")


def _verdict_line(m: dict, col: Column, fmt: _Fmt) -> dict[str, str | None]:
    """``lead`` (the text before "the best control") and ``ci`` (after "<level> CI").

    Gains are always "positive means transfer is better" (for RMSE: the control's minus the
    transfer model's), so a lower-is-better metric reads "lower than" for a positive gain.
    """
    gain, ci = m.get("transfer_gain"), m.get("transfer_gain_ci")
    if _missing(gain):
        return {"lead": None, "ci": None}
    ci_text = None
    if ci and len(ci) == 2 and not any(_missing(c) for c in ci):
        ci_text = f"{fmt.diff(col, ci[0])} to {fmt.diff(col, ci[1])}"
    unit = ", in the target's units" if col.kind == "units" else ""
    if col.higher_is_better:
        lead = f"{fmt.diff(col, gain)} {'points of ' if col.kind == 'pct' else ''}{col.prose} vs"
    elif fmt.is_zero(col, gain):
        lead = f"the same {col.prose} (to the digits shown) as"
    else:
        lead = f"{col.prose} {fmt.magnitude(col, gain)} {'lower' if gain > 0 else 'higher'} than"
    if ci_text and not col.higher_is_better:
        ci_text = f"of the {col.prose} reduction {ci_text}{unit}"
    return {"lead": lead, "ci": ci_text}


def _row(name: str, cm: dict, best: bool, gain: dict | None, cols: tuple[Column, ...], primary: Column,
         fmt: _Fmt) -> dict[str, Any]:
    cells = [{"text": fmt.value(c, cm.get(c.key)), "ci": fmt.interval(c, cm.get(f"{c.key}_ci"))} for c in cols]
    g = None
    if gain and not _missing(gain.get("gain")):
        g = {"text": fmt.diff(primary, gain["gain"]), "ci": None}
        ci = gain.get("gain_ci")
        if ci and len(ci) == 2 and not any(_missing(c) for c in ci):
            g["ci"] = f"{fmt.diff(primary, ci[0])}, {fmt.diff(primary, ci[1])}"
    return {"name": name, "best": best, "cells": cells, "gain": g}


def _predictions(test: dict) -> tuple[list[float], list[float]] | None:
    """The stored test predictions as two equal-length lists of finite floats, or ``None``."""
    pred = test.get("predictions")
    if not isinstance(pred, dict) or pred.get("y_true") is None or pred.get("y_pred") is None:
        return None
    t, p = list(pred["y_true"]), list(pred["y_pred"])
    if len(t) != len(p):
        raise ValueError(f"metrics['test']['predictions'] has {len(t)} true values but {len(p)} predictions")
    pairs = [(float(a), float(b)) for a, b in zip(t, p) if not _missing(a) and not _missing(b)]
    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    return ([a for a, _ in pairs], [b for _, b in pairs]) if pairs else None


def _controls_plot(rows: list[tuple[str, dict, bool]], primary: Column, fmt: _Fmt, level: str) -> dict | None:
    """The primary metric's bars for the transfer model and every control (None: nothing scored)."""
    scored = [(n, cm) for n, cm, _ in rows if not _missing(cm.get(primary.key))]
    if not scored:
        return None
    what = ("of the transfer model (blue) and of each control trained without transfer (grey)"
            if len(scored) > 1 else "of the transfer model (no controls were trained)")
    better = "higher" if primary.higher_is_better else "lower"
    unit = " in the target's units" if primary.kind == "units" else ""
    axis = f"test {primary.label}{' (%)' if primary.kind == 'pct' else unit}, error bars: confidence interval"
    return {"id": "plot-controls",
            "alt": f"Test {primary.label} bars: " + ", ".join(f"{n} {fmt.value(primary, cm[primary.key])}"
                                                             for n, cm in scored),
            "png": plots.metric_bars([n for n, _ in scored], [cm[primary.key] for _, cm in scored],
                                     [cm.get(f"{primary.key}_ci") for _, cm in scored], label=axis,
                                     percent=primary.kind == "pct", decimals=fmt.decimals),
            "caption": f"Test {primary.label}{unit} ({better} is better) {what}; error bars: {level} "
                       "confidence intervals."}


def _plots(m: dict, task: str, rows: list[tuple[str, dict, bool]], primary: Column, fmt: _Fmt,
           level: str) -> tuple[list[dict], str | None]:
    """The figures ``{"id", "alt", "png", "caption"}`` and a note for figures that could not be drawn."""
    test = m["test"]
    bars = _controls_plot(rows, primary, fmt, level)
    out = [bars] if bars else []
    note = None
    if task == "regression":
        pred = _predictions(test)
        if pred is None:
            note = "The run stored no test predictions, so the predicted-vs-true and residual plots are not drawn."
        else:
            k, n = len(pred[0]), test.get("n")
            sample = f" ({k} of the {n} test items)" if isinstance(n, int) and k < n else ""
            out.append({"id": "plot-predicted", "alt": f"Predicted against true values for {k} test items",
                        "png": plots.predicted_vs_true(*pred),
                        "caption": f"Predicted against true test values{sample}; the red line is a perfect "
                                   "prediction (y = x), points above it are over-predictions."})
            out.append({"id": "plot-residuals", "alt": f"Residuals against predicted values for {k} test items",
                        "png": plots.residuals(*pred),
                        "caption": f"Residuals (true minus predicted) against the prediction{sample}: a band "
                                   "around zero is a good fit; a slope or a funnel shows errors that depend on "
                                   "the predicted value."})
    else:
        labels = _labels(test)
        f1 = [_nz((test.get("per_label") or {}).get(x, {}).get("f1")) for x in labels]
        best = (m.get("control") or {}).get("name")
        best_pl = ((m.get("controls") or {}).get(best) or {}).get("per_label") if best else None
        control = [_nz(best_pl.get(x, {}).get("f1")) for x in labels] if best_pl else None
        if labels:
            vs = f", beside the best control, {best} (grey)" if control else ""
            out.append({"id": "plot-per-label", "alt": f"Per-label F1 bars over {len(labels)} labels",
                        "png": plots.per_label_f1_bars(labels, f1, control, best),
                        "caption": f"F1 of the transfer model per label (blue){vs}, each at its label's "
                                   "decision threshold."})
    return out, note


def _nz(x: Any) -> float:
    return 0.0 if _missing(x) else float(x)


def _labels(test: dict) -> list[str]:
    return [str(x) for x in (test.get("labels") or list(test.get("per_label") or {}))]


def _per_label(test: dict) -> list[dict[str, Any]]:
    """Rows of the per-label table, every number already text."""
    pl = test.get("per_label") or {}
    rows = []
    for name in _labels(test):
        p = pl.get(name)
        if p is None:
            continue
        rows.append({"name": name, "support": p.get("support", ""),
                     "precision": "—" if _missing(p.get("precision")) else formatting.pct(p["precision"]),
                     "recall": "—" if _missing(p.get("recall")) else formatting.pct(p["recall"]),
                     "f1": formatting.number(p.get("f1"), 3), "threshold": formatting.number(p.get("threshold"), 2),
                     "ap": formatting.number(p.get("ap"), 3)})
    return rows


def task_view(m: dict, task: str, rows: list[tuple[str, dict, bool]], level: str, *,
              plots: bool = True) -> dict[str, Any]:
    """The task-specific part of the report's context.

    Args:
        m: the run's ``metrics.json`` content (``m["test"]`` the task's metrics dict).
        task: "regression" or "multi-label".
        rows: ``(display name, metrics, is best control)``, the transfer model first.
        level: the confidence level as text (``"95%"``).
        plots: draw the figures (``False``: ``plots`` is empty; the notebook view shows none).

    Returns:
        ``{"columns", "models", "verdict_line", "summary_note", "plots", "plots_note",
        "per_label", "facts"}`` for the templates.
    """
    if task not in COLUMNS:
        raise ValueError(f"metrics.json has task {task!r}; this transferkit reports {', '.join(TASKS)}")
    test = m["test"]
    cols = COLUMNS[task]
    primary = _column(task, primary_key(m, task))
    fmt = _Fmt(formatting.decimals_for(test.get("target_std")))
    gains = m.get("controls_gain") or {}
    models = [_row(n, cm, best, gains.get(n) if i else None, cols, primary, fmt)
              for i, (n, cm, best) in enumerate(rows)]
    target = ""
    if task == "regression" and not _missing(test.get("target_mean")):
        target = (f" (test targets: mean {fmt.value(cols[0], test['target_mean'])}, standard deviation "
                  f"{fmt.value(cols[0], test.get('target_std'))})")
    note = f"Intervals in brackets: {level} bootstrap confidence intervals over test items. "
    note += _NOTES[task].format(target=target)
    if gains:
        if primary.higher_is_better:
            how = f"the transfer model's {primary.prose} minus this control's"
        else:
            how = f"this control's {primary.prose} minus the transfer model's (positive: transfer is better)"
        unit = "in points" if primary.kind == "pct" else "in the target's units" if primary.kind == "units" else ""
        note += f" Transfer gain: {how}, {unit + ', ' if unit else ''}with a {level} paired-bootstrap interval."
    figures, plots_note = _plots(m, task, rows, primary, fmt, level) if plots else ([], None)
    facts: list[tuple[str, Any]] = [("task", task)]
    if task == "regression":
        facts += [("target mean (test)", fmt.value(cols[0], test.get("target_mean"))),
                  ("target std (test)", fmt.value(cols[0], test.get("target_std")))]
    else:
        facts.append(("labels", len(_labels(test)) or None))
    return {"columns": [c.label for c in cols], "models": models, "verdict_line": _verdict_line(m, primary, fmt),
            "summary_note": note, "plots": figures, "plots_note": plots_note, "per_label": _per_label(test),
            "facts": [(k, v) for k, v in facts if v not in (None, "—")]}
