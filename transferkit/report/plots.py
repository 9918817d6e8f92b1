"""The report's plots, each rendered to PNG bytes with matplotlib's Agg renderer.

Figures are built with ``matplotlib.figure.Figure`` and an explicit ``FigureCanvasAgg``,
never through ``pyplot``: nothing is registered in pyplot's global figure list (so nothing
can leak, even if a plot raises) and the process-wide backend is left alone, so calling this
from a notebook or a GUI program does not break the caller's own plotting.  matplotlib is
imported lazily, on the first plot, so ``import transferkit`` stays fast.
"""
from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from typing import Sequence

__all__ = ["accuracy_bars", "confusion_heatmap", "per_class_bars", "metric_bars", "predicted_vs_true", "residuals",
           "per_label_f1_bars", "accuracy_matrix_heatmap", "continual_curves"]

TRANSFER_COLOUR = "#2f6fb3"
CONTROL_COLOUR = "#9aa4ae"
PRECISION_COLOUR = "#2f6fb3"
RECALL_COLOUR = "#e08a2c"
POINT_ALPHA = 0.35  # scatter points: overlaps show as darker areas (up to 2,000 points)
MAX_LABELLED_CLASSES = 20  # above this, confusion-matrix ticks and counts become unreadable
MAX_BAR_LABELS = 60  # above this, per-class bar tick labels overlap whatever the width
DPI = 110


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # No "Software" metadata: the bytes then depend only on the data (reproducible reports).
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _label(name: str, width: int = 18) -> str:
    """A class or model name made safe for a matplotlib label.

    Names come from users: ``$`` would switch matplotlib to mathtext (and an unbalanced one
    raises), and long names would squeeze the plot, so both are neutralised.
    """
    name = " ".join(str(name).split())
    if len(name) > width:
        name = name[: width - 1] + "…"
    return name.replace("$", r"\$")


def _errors(values: Sequence[float], cis: Sequence[Sequence[float] | None]) -> list[list[float]]:
    """Asymmetric error-bar lengths (2, K) from [lo, hi] intervals; 0 where unknown.

    Clipped at 0 because a percentile interval need not contain its point estimate.
    """
    lower, upper = [], []
    for v, ci in zip(values, cis):
        lo, hi = (v, v) if not ci or None in ci else ci
        lower.append(max(v - lo, 0.0))
        upper.append(max(hi - v, 0.0))
    return [lower, upper]


@contextmanager
def _quiet():
    """Silences "Glyph ... missing from font" warnings from non-Latin class names."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*[Gg]lyph.*missing")
        yield


def accuracy_bars(
    names: Sequence[str], accuracy: Sequence[float], cis: Sequence[Sequence[float] | None],
    *, n_transfer: int = 1,
) -> bytes:
    """Horizontal accuracy bars with confidence-interval error bars: transfer vs controls.

    Args:
        names: K model names, the transfer model(s) first.
        accuracy: K accuracies in [0, 1].
        cis: K ``[lo, hi]`` intervals (or ``None``), in [0, 1].
        n_transfer: how many of the first names are transfer models (coloured differently).

    Returns:
        PNG bytes.
    """
    k = len(names)
    pct = [100 * a for a in accuracy]
    pct_ci = [None if not ci else [100 * c for c in ci] for ci in cis]
    fig = _figure(7.5, 1.1 + 0.55 * k)
    with _quiet():
        ax = fig.add_subplot()
        ypos = list(range(k))[::-1]  # first model at the top
        colours = [TRANSFER_COLOUR if i < n_transfer else CONTROL_COLOUR for i in range(k)]
        ax.barh(ypos, pct, color=colours, height=0.6,
                xerr=_errors(pct, pct_ci), error_kw={"ecolor": "#222", "capsize": 4, "lw": 1.2})
        for y, v, ci in zip(ypos, pct, pct_ci):
            text = f"{v:.1f}%" + (f"  [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")
            ax.text(min(max(v, ci[1] if ci else v) + 1.5, 101), y, text, va="center", fontsize=9)
        ax.set_yticks(ypos, [_label(n, 24) for n in names])
        ax.set_xlim(0, 125)  # room on the right for the value labels
        ax.set_xticks(range(0, 101, 20))
        ax.set_xlabel("test accuracy (%), error bars: confidence interval")
        ax.spines[["top", "right"]].set_visible(False)
        return _png(fig)


def confusion_heatmap(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> bytes:
    """Confusion-matrix heat map: colour = share of the true class, text = counts.

    Colouring by row share keeps rare classes visible next to frequent ones; the printed
    numbers are the raw counts.  Above ``MAX_LABELLED_CLASSES`` classes the tick labels and
    counts are left out (they would overlap), leaving the colour pattern.

    Args:
        matrix: ``(C, C)`` counts, rows true class, columns predicted class.
        classes: the C class names.

    Returns:
        PNG bytes.
    """
    import numpy as np

    cm = np.asarray(matrix, dtype=float).reshape(len(classes), len(classes))
    c = len(classes)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    labelled = c <= MAX_LABELLED_CLASSES
    side = min(max(4.5, 0.42 * c + 2.5), 11) if labelled else 8
    fig = _figure(side + 1.2, side)
    with _quiet():
        ax = fig.add_subplot()
        im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class")
        if labelled:
            names = [_label(n) for n in classes]
            slant = {"rotation": 45, "ha": "right"} if c > 4 else {}
            ax.set_xticks(range(c), names, **slant)
            ax.set_yticks(range(c), names)
            size = 10 if c <= 8 else 8 if c <= 14 else 6.5
            for i in range(c):
                for j in range(c):
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=size,
                            color="white" if share[i, j] > 0.55 else "#222")
        else:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{c} classes (too many to label; see the per-class table)", fontsize=9)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        return _png(fig)


def per_class_bars(
    classes: Sequence[str], precision: Sequence[float], recall: Sequence[float],
    precision_ci: Sequence[Sequence[float] | None] | None = None,
    recall_ci: Sequence[Sequence[float] | None] | None = None,
) -> bytes:
    """Grouped precision and recall bars per class, with confidence-interval error bars.

    Args:
        classes: C class names.
        precision: C precisions in [0, 1].
        recall: C recalls in [0, 1].
        precision_ci: C ``[lo, hi]`` intervals or ``None``.
        recall_ci: C ``[lo, hi]`` intervals or ``None``.

    Returns:
        PNG bytes.
    """
    c = len(classes)
    fig = _figure(min(max(6.5, 0.38 * c + 2), 18), 4.2)
    with _quiet():
        ax = fig.add_subplot()
        x = list(range(c))
        w = 0.4
        err = {"ecolor": "#333", "capsize": 2 if c <= 30 else 0, "lw": 0.9}
        for offset, vals, cis, colour, label in (
            (-w / 2, precision, precision_ci, PRECISION_COLOUR, "precision"),
            (w / 2, recall, recall_ci, RECALL_COLOUR, "recall"),
        ):
            ax.bar([i + offset for i in x], vals, width=w, color=colour, label=label,
                   yerr=_errors(vals, cis or [None] * c), error_kw=err)
        if c <= MAX_BAR_LABELS:
            ax.set_xticks(x, [_label(n) for n in classes], rotation=45 if c > 6 else 0,
                          ha="right" if c > 6 else "center", fontsize=9 if c <= 30 else 7)
        else:
            ax.set_xticks([])
            ax.set_xlabel(f"{c} classes, in class order (see the per-class table)")
        ax.set_xlim(-0.6, c - 0.4)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("score")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=9, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
        return _png(fig)


def metric_bars(
    names: Sequence[str], values: Sequence[float], cis: Sequence[Sequence[float] | None],
    *, label: str, percent: bool, decimals: int = 3, n_transfer: int = 1,
) -> bytes:
    """Horizontal bars of one metric with confidence-interval error bars: transfer vs controls.

    The bar chart of :func:`accuracy_bars` for any metric (RMSE in the target's units, micro-F1...).

    Args:
        names: K model names, the transfer model(s) first.
        values: K values; proportions in [0, 1] when ``percent`` (drawn in percent), else as given
            (an RMSE, an R²).
        cis: K ``[lo, hi]`` intervals (or ``None``) in the units of ``values``.
        label: the x-axis label (the metric's name and unit).
        percent: draw proportions as percentages on a 0-100 axis.
        decimals: decimals of the printed values when not ``percent``.
        n_transfer: how many of the first names are transfer models (coloured differently).

    Returns:
        PNG bytes.
    """
    k = len(names)
    scale = 100.0 if percent else 1.0
    vals = [scale * v for v in values]
    vals_ci = [None if not ci or None in ci else [scale * c for c in ci] for ci in cis]
    top = 100.0 if percent else max([*vals, *(ci[1] for ci in vals_ci if ci), 1e-12])
    fmt = (lambda v: f"{v:.1f}%") if percent else (lambda v: f"{v:.{decimals}f}")
    fig = _figure(7.5, 1.1 + 0.55 * k)
    with _quiet():
        ax = fig.add_subplot()
        ypos = list(range(k))[::-1]  # first model at the top
        colours = [TRANSFER_COLOUR if i < n_transfer else CONTROL_COLOUR for i in range(k)]
        ax.barh(ypos, vals, color=colours, height=0.6,
                xerr=_errors(vals, vals_ci), error_kw={"ecolor": "#222", "capsize": 4, "lw": 1.2})
        for y, v, ci in zip(ypos, vals, vals_ci):
            text = fmt(v) + (f"  [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")
            ax.text(max(v, ci[1] if ci else v) + 0.015 * top, y, text, va="center", fontsize=9)
        ax.set_yticks(ypos, [_label(n, 24) for n in names])
        low = min([0.0, *vals, *(ci[0] for ci in vals_ci if ci)])  # an R² can be below 0
        ax.set_xlim(1.25 * low, 1.25 * top)  # room on the right for the value labels
        ax.set_xlabel(label)
        ax.spines[["top", "right"]].set_visible(False)
        return _png(fig)


def predicted_vs_true(y_true: Sequence[float], y_pred: Sequence[float]) -> bytes:
    """Scatter of predicted against true values with the identity line ``y = x``.

    Points on the line are exact; above it, over-predictions.  Both axes share one range so the
    line is the diagonal.

    Args:
        y_true: N true targets, in the user's units.
        y_pred: N predictions, same units.

    Returns:
        PNG bytes.
    """
    import numpy as np

    t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    pad = 0.04 * (hi - lo) or 0.5  # a constant target still gets a visible window
    fig = _figure(5.6, 5.2)
    with _quiet():
        ax = fig.add_subplot()
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#cf222e", lw=1.2, label="identity (y = x)")
        ax.scatter(t, p, s=10, alpha=POINT_ALPHA, color=TRANSFER_COLOUR, edgecolors="none", label="test item")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.set_xlabel("true value")
        ax.set_ylabel("predicted value")
        ax.legend(loc="upper left", fontsize=9, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
        return _png(fig)


def residuals(y_true: Sequence[float], y_pred: Sequence[float]) -> bytes:
    """Residuals (true minus predicted) against the prediction, with the zero line.

    A trend or funnel shape shows errors that depend on the predicted value (a biased or
    heteroscedastic model); a band around zero is what a good fit looks like.

    Args:
        y_true: N true targets, in the user's units.
        y_pred: N predictions, same units.

    Returns:
        PNG bytes.
    """
    import numpy as np

    t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    r = t - p
    fig = _figure(7.0, 4.2)
    with _quiet():
        ax = fig.add_subplot()
        ax.axhline(0.0, color="#cf222e", lw=1.2)
        ax.scatter(p, r, s=10, alpha=POINT_ALPHA, color=TRANSFER_COLOUR, edgecolors="none")
        bound = float(np.abs(r).max()) * 1.08 or 1.0
        ax.set_ylim(-bound, bound)  # symmetric, so a skew of the residuals shows
        ax.set_xlabel("predicted value")
        ax.set_ylabel("residual (true − predicted)")
        ax.spines[["top", "right"]].set_visible(False)
        return _png(fig)


def per_label_f1_bars(
    labels: Sequence[str], f1: Sequence[float], control_f1: Sequence[float] | None = None,
    control_name: str | None = None,
) -> bytes:
    """F1 per label of the transfer model, beside the best control's when given.

    Args:
        labels: L label names.
        f1: L F1 scores in [0, 1] of the transfer model.
        control_f1: L F1 scores of a control, or ``None``.
        control_name: the control's name, for the legend.

    Returns:
        PNG bytes.
    """
    n = len(labels)
    fig = _figure(min(max(6.5, 0.38 * n + 2), 18), 4.2)
    with _quiet():
        ax = fig.add_subplot()
        x = list(range(n))
        series = [(f1, TRANSFER_COLOUR, "transfer")]
        if control_f1 is not None:
            series.append((control_f1, CONTROL_COLOUR, _label(control_name or "control", 30)))
        w = 0.8 / len(series)
        for i, (vals, colour, name) in enumerate(series):
            offset = (i - (len(series) - 1) / 2) * w
            ax.bar([j + offset for j in x], vals, width=w, color=colour, label=name)
        if n <= MAX_BAR_LABELS:
            slant = n > 6 and max(len(_label(s)) for s in labels) > 3  # short names (digits) fit upright
            ax.set_xticks(x, [_label(s) for s in labels], rotation=45 if slant else 0,
                          ha="right" if slant else "center", fontsize=9 if n <= 30 else 7)
        else:
            ax.set_xticks([])
            ax.set_xlabel(f"{n} labels, in label order (see the per-label table)")
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("F1 (at the label's threshold)")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=9, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
        return _png(fig)


def accuracy_matrix_heatmap(matrix: Sequence[Sequence[float | None]], sets: Sequence[str]) -> bytes:
    """Continual learning's accuracy matrix as a heat map: row ``i`` after step ``i``, column
    ``j`` test set ``j``; blank where a set was not evaluated.

    Returns:
        PNG bytes.
    """
    import numpy as np

    R = np.array([[np.nan if v is None else 100 * float(v) for v in row] for row in matrix], dtype=float)
    rows, cols = R.shape
    fig = _figure(min(2.5 + 0.9 * cols, 11), min(1.8 + 0.55 * rows, 9))
    with _quiet():
        ax = fig.add_subplot()
        im = ax.imshow(np.ma.masked_invalid(R), cmap="Blues", vmin=0, vmax=100, interpolation="nearest", aspect="auto")
        fig.colorbar(im, ax=ax, shrink=0.8, label="accuracy (%)")
        ax.set_xticks(range(cols), [_label(s, 14) for s in sets], rotation=30 if cols > 3 else 0, ha="right"
                      if cols > 3 else "center")
        ax.set_yticks(range(rows), [f"after step {i}" for i in range(rows)])
        for i in range(rows):
            for j in range(cols):
                if not np.isnan(R[i, j]):
                    ax.text(j, i, f"{R[i, j]:.0f}", ha="center", va="center", fontsize=8,
                            color="white" if R[i, j] > 60 else "#222")
        ax.set_xlabel("test set")
        return _png(fig)


def continual_curves(curves: dict[str, Sequence[float | None]]) -> bytes:
    """Lines over the steps (e.g. average accuracy so far and the accuracy on the first test set),
    one per named curve, in percent; a ``None`` leaves a gap.

    Returns:
        PNG bytes.
    """
    fig = _figure(6.5, 3.2)
    with _quiet():
        ax = fig.add_subplot()
        for name, values in curves.items():
            xs = [i for i, v in enumerate(values) if v is not None]
            ax.plot(xs, [100 * float(values[i]) for i in xs], marker="o", label=_label(name, 30))
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 102)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
        return _png(fig)
