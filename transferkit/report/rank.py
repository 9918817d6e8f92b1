"""The self-contained ``rank.html`` of ``transferkit rank``, its score chart, and writing both
``rank.json`` and ``rank.html``.

The ranking itself (:mod:`transferkit.ranking`) sits above the report package; it hands its
:class:`~transferkit.ranking.RankResult` down, and this module reads it by its attributes
(``rows``, ``scores``, ``data``, ``target``, ``notes``, ``seed``, ``best``, ``task``,
``not_applicable``, ``ranked_by``, ``cell()``, ``data_line()``, ``to_dict()``) without importing
the ranking module.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from .._files import atomic_write_bytes, write_json
from ..scores import score_about, score_title
from .formatting import fmt_score
from .html import template_env


class RankResult(Protocol):
    """What this view reads of :class:`transferkit.ranking.RankResult` (which satisfies it): the
    report package sits below the ranking, so it names the attributes instead of importing it."""

    rows: list
    scores: list[str]
    data: dict
    target: Any
    notes: list[str]
    seed: int
    best: Any
    task: str
    not_applicable: dict[str, str]
    ranked_by: str

    def cell(self, score: str, value: float | None) -> str: ...

    def data_line(self) -> str: ...

    def to_dict(self) -> dict: ...

__all__ = ["render_html", "rank_view", "score_chart", "write_rank"]


def _title(score: str, task: str = "classification") -> str:
    return score_title(score, task)


def render_html(result: RankResult) -> str:
    """The self-contained ``rank.html``: table, chart (inline PNG), what the scores mean, notes."""
    return template_env().get_template("rank.html").render(rank_view(result))


def rank_view(result: RankResult, *, chart: bool = True) -> dict[str, Any]:
    """The view model of ``rank.html`` (``rank_summary.html``, its top, is also the notebook
    view's); ``chart=False`` draws no chart."""
    d = result.data
    task = result.task
    headers = ["#", "candidate", "layer", "init", "dim"] + [_title(s, task) for s in result.scores] + \
        ["extraction (s)", "total (s)", "peak memory (MB)"]
    if result.target is not None:
        headers.append("shift to target")
    rows = []
    for i, r in enumerate(result.rows, 1):
        cells: list[Any] = [i, r.candidate, "last" if r.layer is None else r.layer, r.init, r.dim]
        cells += [result.cell(s, r.scores.get(s)) for s in result.scores]
        cells += [f"{r.extract_seconds:.1f}" + (" (cached)" if r.n_cached == d["n_items"] else ""), f"{r.seconds:.1f}",
                  "—" if r.peak_memory_mb is None else f"{r.peak_memory_mb:.0f}"]
        if result.target is not None:
            cells.append("—" if not r.domain else r.domain["level"])
        rows.append(cells)
    context = {
        "data": d, "data_line": result.data_line(), "task": task, "seed": result.seed,
        "best": result.best.candidate, "ranked_by": _title(result.ranked_by, task),
        "headers": headers, "rows": rows, "chart": score_chart(result) if chart else None,
        "meanings": [(_title(s, task), score_about(s, task)) for s in result.scores if s not in result.not_applicable],
        "not_applicable": [(_title(s, task), why) for s, why in result.not_applicable.items()],
        "target": result.target, "shifts": [(r.candidate, r.domain) for r in result.rows if r.domain],
        "notes": list(result.notes) + [f"{r.candidate}: {n}" for r in result.rows for n in r.notes],
    }
    return context


def write_rank(result: RankResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``rank.json`` (``result.to_dict()``) and ``rank.html`` into ``out_dir`` (created).

    Returns:
        ``{"json": path, "html": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "rank.json", result.to_dict())
    atomic_write_bytes(out / "rank.html", render_html(result).encode("utf-8"))
    return {"json": out / "rank.json", "html": out / "rank.html"}


def score_chart(result: RankResult) -> bytes | None:
    """One horizontal-bar panel per score, candidates in rank order; PNG bytes (``None``: nothing to plot)."""
    from .plots import _figure, _label, _png, _quiet

    panels = [s for s in result.scores if any(r.scores.get(s) is not None for r in result.rows)]
    if not panels:
        return None
    k = len(result.rows)
    names = [_label(r.candidate, 28) for r in result.rows]
    fig = _figure(min(3.2 * len(panels) + 1.8, 18), 1.0 + 0.42 * k)
    with _quiet():
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        ypos = list(range(k))[::-1]
        for ax, s in zip(axes, panels):
            vals = [r.scores.get(s) for r in result.rows]
            known = [v for v in vals if v is not None]
            top, low = max(known), min(known)
            # Bars grow from a baseline left of the worst value, so a longer bar is a better score
            # even for scores that are negative (LogME, LEEP, NCE); with no negative value it is 0.
            span = (top - low) or abs(top) or 1.0
            base = 0.0 if low >= 0 else low - 0.25 * span
            colours = ["#2f6fb3" if v == top else "#9aa4ae" for v in vals]
            ax.barh(ypos, [0.0 if v is None else v - base for v in vals], left=base, color=colours, height=0.6)
            for y, v in zip(ypos, vals):  # the value just past the end of its bar
                ax.text(base if v is None else v, y, f" {'n/a' if v is None else fmt_score(s, v, result.task)}",
                        va="center", fontsize=8, ha="left", color="#222")
            ax.set_xlim(base, top + 0.45 * (top - base if top > base else 1.0))
            ax.set_title(_label(_title(s, result.task), 24), fontsize=10)
            ax.spines[["top", "right"]].set_visible(False)
            ax.tick_params(axis="x", labelsize=8)
        axes[0].set_yticks(ypos, names)
        return _png(fig)
