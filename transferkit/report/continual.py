"""The report's continual-learning section (``transferkit update --data``): the accuracy matrix
as a heat map and a table, the curves over the steps, and the summary against naive fine-tuning,
built from ``metrics.json``'s ``continual`` entry alone."""
from __future__ import annotations

from typing import Any

from . import plots


def continual_view(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """``None`` for a run that is not a continual update; else what ``continual.html`` shows."""
    c = metrics.get("continual")
    if not isinstance(c, dict) or not c.get("accuracy_matrix"):
        return None
    R, sets = c["accuracy_matrix"], list(c.get("test_sets") or [])
    first = list(c.get("first_step") or [0] * len(sets))
    average = []  # the average accuracy over the sets known after each step
    for i, row in enumerate(R):
        known = [v for j, v in enumerate(row) if j < len(first) and first[j] <= i and v is not None]
        average.append(sum(known) / len(known) if known else None)
    curves = {"average, sets known so far": average}
    if sets:
        curves[f"first set: {sets[0]}"] = [row[0] if row else None for row in R]
    naive = c.get("naive") or {}
    summary = [("average accuracy", c.get("average_accuracy"), naive.get("average_accuracy")),
               ("forgetting (mean largest drop)", c.get("forgetting"), naive.get("forgetting")),
               ("backward transfer", c.get("backward_transfer"), naive.get("backward_transfer")),
               ("forward transfer (vs majority class)", c.get("forward_transfer"), naive.get("forward_transfer"))]
    return {"strategy": (metrics.get("update") or {}).get("strategy"), "sets": sets,
            "rows": [[None if v is None else 100 * float(v) for v in row] for row in R],
            "heatmap": plots.accuracy_matrix_heatmap(R, sets), "curves": plots.continual_curves(curves),
            "summary": summary, "has_naive": bool(naive), "explanation": c.get("explanation"),
            "verdict": (c.get("verdict") or {}).get("verdict")}
