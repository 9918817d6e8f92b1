"""The report of a multi-task run: one section per label column (its task, the transfer model
and its controls on the task's metrics, the verdict), each linking to the column's full report."""
from __future__ import annotations

from typing import Any

from .html import template_env
from .text import headline


def render_multitask_report(metrics: dict[str, Any], *, card: dict[str, Any]) -> str:
    """``report.html`` of a multi-task run from its ``metrics.json`` and card (``multi_task``
    gives each column's task and the folder of its complete run)."""
    sections = []
    for column, m in metrics["tasks"].items():
        sections.append({
            "column": column, "task": m["task"], "dir": card["multi_task"][column]["dir"],
            "n_train": m.get("n_train"), "n_test": m.get("n_test"),
            "rows": [("transfer", headline(m["test"]))] + [(name, headline(c))
                                                           for name, c in (m.get("controls") or {}).items()],
            "verdict": m.get("verdict"), "explanation": m.get("verdict_explanation"),
            "control": (m.get("control") or {}).get("name"), "notes": m.get("notes", []),
        })
    run = metrics["run"]
    return template_env().get_template("multitask.html").render(
        run=run, columns=metrics["columns"], joint=metrics["joint"], n_train=metrics["n_train"],
        n_test=metrics["n_test"], sections=sections, notes=metrics.get("notes", []))
