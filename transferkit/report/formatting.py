"""How numbers read in reports and tables: percentages, points, durations, scores.

Plain functions from numbers to text (no markup), shared by the HTML templates (as Jinja2
filters), ``rank``'s plain-text table and its progress lines.
"""
from __future__ import annotations

__all__ = ["pct", "points", "duration", "fmt_score", "interval"]


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


def fmt_score(score: str, v: float | None) -> str:
    """A transferability score as shown in ``rank``'s table, chart and log: kNN accuracy in percent,
    the others to 4 decimals (1 for large magnitudes); ``None`` -> ``"—"``."""
    if v is None:
        return "—"
    if score == "knn":
        return f"{100 * v:.1f}%"
    return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
