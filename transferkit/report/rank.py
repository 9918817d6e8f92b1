"""The self-contained ``rank.html`` of ``transferkit rank`` and its score chart."""
from __future__ import annotations

import html

from ..ranking import RankResult, _fmt
from ..scores import SCORES


def render_html(result: RankResult) -> str:
    """The self-contained ``rank.html``: table, chart (inline PNG), what the scores mean, notes."""
    import base64

    from .html import CSS

    e = lambda x: html.escape(str(x), quote=True)  # noqa: E731  every string from users goes through it
    d = result.data
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>transferkit rank</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>Which pre-trained model? transferkit rank</h1>",
             f'<div class="meta">data: <b>{e(d["source"])}</b> · {e(d["n_items"])} items · {e(d["n_classes"])} classes'
             f' · {e(d["modality"])} · seed {e(result.seed)}</div>']
    best = result.best
    parts.append(f'<section class="verdict helped"><div class="big">{e(best.candidate)}</div>'
                 f"<p>ranks first by {e(SCORES.entry(result.scores[0]).meta['title'])}. Scores compare the candidates "
                 "on this data; they predict, they do not measure, accuracy after training.</p></section>")
    heads = ["#", "candidate", "layer", "init", "dim"] + [SCORES.entry(s).meta["title"] for s in result.scores] + \
        ["extraction (s)", "total (s)", "peak memory (MB)"]
    if result.target is not None:
        heads.append("shift to target")
    body = []
    for i, r in enumerate(result.rows, 1):
        cells = [str(i), e(r.candidate), "last" if r.layer is None else e(r.layer), e(r.init), e(r.dim)]
        cells += [e(_fmt(s, r.scores.get(s))) for s in result.scores]
        cells += [f"{r.extract_seconds:.1f}" + (" (cached)" if r.n_cached == d["n_items"] else ""), f"{r.seconds:.1f}",
                  "—" if r.peak_memory_mb is None else f"{r.peak_memory_mb:.0f}"]
        if result.target is not None:
            cells.append("—" if not r.domain else e(r.domain["level"]))
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("<h2>Ranking</h2><table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in heads)
                 + "</tr></thead><tbody>" + "".join(body) + "</tbody></table>")
    png = score_chart(result)
    if png:
        parts.append(f'<figure><img id="plot-scores" alt="scores of each candidate" '
                     f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
                     "<figcaption>One panel per score, the best candidate in blue; in every panel a longer bar "
                     "is a better score (bars of negative scores start left of the worst value). Compare "
                     "candidates within a panel, not across panels.</figcaption></figure>")
    parts.append("<h2>What the scores mean</h2><ul>" + "".join(
        f"<li><b>{e(SCORES.entry(s).meta['title'])}</b>: {e(SCORES.entry(s).meta['about'])}.</li>"
        for s in result.scores) + "</ul>")
    if result.target is not None:
        parts.append(f"<h2>Shift to the target data</h2><p class=\"small\">target: {e(result.target['source'])}, "
                     f"{e(result.target['n_items'])} items. MMD (Gaussian kernel, median bandwidth, permutation test) "
                     "and proxy A-distance (error of a linear domain classifier), in each candidate's features.</p><ul>"
                     + "".join(f"<li><b>{e(r.candidate)}</b>: {e(r.domain['reading'])} "
                               f"(MMD² {r.domain['mmd2']:.4g}, p = {r.domain['mmd_p_value']:.3f}).</li>"
                               for r in result.rows if r.domain) + "</ul>")
    notes = [e(n) for n in result.notes] + [f"{e(r.candidate)}: {e(n)}" for r in result.rows for n in r.notes]
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{n}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


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
                ax.text(base if v is None else v, y, f" {'n/a' if v is None else _fmt(s, v)}", va="center",
                        fontsize=8, ha="left", color="#222")
            ax.set_xlim(base, top + 0.45 * (top - base if top > base else 1.0))
            ax.set_title(_label(SCORES.entry(s).meta["title"], 24), fontsize=10)
            ax.spines[["top", "right"]].set_visible(False)
            ax.tick_params(axis="x", labelsize=8)
        axes[0].set_yticks(ypos, names)
        return _png(fig)
