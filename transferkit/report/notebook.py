"""Rich views in Jupyter notebooks (``_repr_html_``): a fitted model's verdict banner and summary
table, a ranking's table.

The fragments are the report pages' own pieces (``summary.html`` and ``rank_summary.html``, from the
same view models as ``report.html`` and ``rank.html``) inside one ``<div>`` that carries the
report's stylesheet scoped to it: a notebook page holds many outputs, and the report's rules for
``body``, ``table`` or ``h2`` must not restyle the rest of it.  No figure is drawn (an output stays
light and quick to show); the run's ``report.html`` has them.

:class:`~transferkit.model.TransferModel` sits below this package, so this module hands it its view
(``TransferModel.html_view``) instead of being imported by it.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from markupsafe import Markup

from ..model import TransferModel
from .html import summary_view, template_env
from .rank import RankResult, rank_view

__all__ = ["model_html", "models_html", "rank_html", "scoped_css"]

#: The CSS class of the view's block, which every rule of the scoped stylesheet starts from.
ROOT = "transferkit-view"
#: A run directory's report (``runs.rundir.REPORT``; the run package sits above this one).
REPORT_FILE = "report.html"


@functools.lru_cache(maxsize=1)
def scoped_css() -> Markup:
    """``report.css`` with every rule limited to the view's block (``body`` rules apply to the
    block itself), and the page margins of ``body`` dropped: an output cell has its own."""
    env = template_env()
    css = env.loader.get_source(env, "report.css")[0]
    rules = []
    for rule in css.split("}"):
        if "{" not in rule:
            continue
        selectors, body = rule.split("{", 1)
        scoped = [f".{ROOT}" if s == "body" else f".{ROOT} {s}" for s in (" ".join(x.split()) for x in
                                                                        selectors.split(","))]
        rules.append(f"{','.join(scoped)}{{{' '.join(body.split())}}}")
    rules.append(f".{ROOT}{{margin:.4rem 0}} .{ROOT} h1{{margin-top:.6rem}}")
    # the package's own stylesheet: a value of the template, printed unescaped (no data in it)
    return Markup("\n".join(rules))


def _render(sections: list[dict[str, Any]]) -> str:
    return template_env().get_template("notebook.html").render(root=ROOT, css=scoped_css(), sections=sections)


def _section(title: str, metrics: dict, run_dir: Path | None) -> dict[str, Any]:
    body = template_env().get_template("summary.html").render(summary_view(metrics, plots=False))
    report = run_dir / REPORT_FILE if run_dir is not None and (run_dir / REPORT_FILE).is_file() else None
    # rendered by the same environment, every value escaped there: inserted as it is
    return {"title": title, "body": Markup(body), "report": str(report) if report else None}


def _title(model: TransferModel, metrics: dict) -> str:
    name = (metrics.get("run") or {}).get("name")
    return f"transferkit model: {name}" if name else f"transferkit model: {model.strategy.name} on " \
                                                     f"{model.backbone.describe()}"


def model_html(model: TransferModel) -> str | None:
    """A fitted model's view: the fit's facts, verdict banner, delivered model and summary table
    (``None`` without the fit's metrics, e.g. a run loaded without ``metrics.json``: Jupyter then
    shows the plain ``repr``)."""
    m = model.metrics
    if not isinstance(m, dict) or not isinstance(m.get("test"), dict):
        return None
    return _render([_section(_title(model, m), m, model.run_dir)])


def models_html(models: Sequence[tuple[str, TransferModel]]) -> str | None:
    """Several models, one section each, titled by the given names (a multi-task fit: a column each)."""
    sections = [_section(title, m.metrics, m.run_dir) for title, m in models
                if isinstance(m.metrics, dict) and isinstance(m.metrics.get("test"), dict)]
    return _render(sections) if sections else None


def rank_html(result: RankResult) -> str:
    """A ranking's view: the data, the best candidate and the table of scores (no chart)."""
    body = template_env().get_template("rank_summary.html").render(rank_view(result, chart=False))
    return _render([{"title": "transferkit rank", "body": Markup(body), "report": None}])


TransferModel.html_view = model_html
