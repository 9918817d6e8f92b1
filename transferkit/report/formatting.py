"""How numbers read in reports and tables: percentages, points, durations, scores, and numbers
in a regression target's own units.

Plain functions from numbers to text (no markup), shared by the HTML templates (as Jinja2
filters), ``rank``'s plain-text table and its progress lines.
"""
from __future__ import annotations

import math

__all__ = ["pct", "points", "duration", "fmt_score", "interval", "decimals_for", "number", "signed",
           "number_interval"]


def pct(x: float | None) -> str:
    """``0.9123`` -> ``"91.2%"``; ``None`` -> ``"—"``."""
    return "—" if x is None else f"{100 * x:.1f}%"


def points(x: float) -> str:
    """A difference of two proportions in percentage points, signed: ``0.021`` -> ``"+2.1"``."""
    r = round(100 * x, 1)
    return "+0.0" if r == 0 else f"{r:+.1f}"


def interval(ci: list | tuple | None) -> str | None:
    """``[lo, hi]`` proportions as ``"lo, hi"`` in percent (``None``: no usable interval)."""
    if not ci or len(ci) != 2 or None in ci:
        return None
    return f"{100 * ci[0]:.1f}, {100 * ci[1]:.1f}"


def duration(s: float) -> str:
    """Seconds as ``"3.1 s"`` or ``"1 min 35.0 s"``."""
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {s % 60:04.1f} s"


def fmt_score(score: str, v: float | None, task: str = "classification") -> str:
    """A transferability score as shown in ``rank``'s table, chart and log: kNN accuracy in percent
    (regression's kNN R² to 3 decimals), the others to 4 decimals (1 for large magnitudes);
    ``None`` -> ``"—"``."""
    if v is None:
        return "—"
    if score == "knn" and task == "regression":
        return f"{v:.3f}"
    if score == "knn":
        return f"{100 * v:.1f}%"
    return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"


def _missing(x: float | None) -> bool:
    # NaN reaches reports from JSON (a Spearman correlation of constant predictions is undefined).
    return x is None or x != x


def _unsigned_zero(x: float, decimals: int) -> float:
    """``x``, or 0.0 where it rounds to zero: ``-0.0001`` prints ``0.000``, not ``-0.000``."""
    return 0.0 if round(x, decimals) == 0 else x


def decimals_for(scale: float | None) -> int:
    """Decimals that show a quantity of typical size ``scale`` (a target's standard deviation)
    to about three significant digits: ``2.9`` -> 2, ``1500`` -> 0, ``0.003`` -> 5; 3 when the
    scale is unknown, zero or not finite."""
    if _missing(scale) or not math.isfinite(scale) or scale <= 0:
        return 3
    return min(max(2 - math.floor(math.log10(scale)), 0), 10)


def number(x: float | None, decimals: int = 3) -> str:
    """``x`` with ``decimals`` decimals; ``None`` or NaN -> ``"—"``."""
    return "—" if _missing(x) else f"{_unsigned_zero(x, decimals):.{decimals}f}"


def signed(x: float | None, decimals: int = 3) -> str:
    """A difference with its sign, ``+0.123`` / ``-0.045``; ``0`` after rounding reads ``+0``."""
    if _missing(x):
        return "—"
    r = round(x, decimals)
    return f"{0.0 if r == 0 else r:+.{decimals}f}"


def number_interval(ci: list | tuple | None, decimals: int = 3, *, percent: bool = False) -> str | None:
    """``[lo, hi]`` as ``"lo, hi"`` with ``decimals`` decimals (in percent with 1 decimal when
    ``percent``); ``None`` when there is no usable interval."""
    if not ci or len(ci) != 2 or any(_missing(c) for c in ci):
        return None
    return interval(ci) if percent else f"{number(ci[0], decimals)}, {number(ci[1], decimals)}"
