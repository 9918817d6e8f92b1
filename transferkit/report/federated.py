"""``federated.html`` of ``transferkit federate``: accuracy per round per client, the clients'
verdicts against their local-only models, the centralised control, bytes and faults per round;
built from ``metrics.json``'s ``federated`` alone."""
from __future__ import annotations

from typing import Any

from .html import template_env
from .plots import _figure, _png, _quiet


def rounds_chart(rows: list[dict[str, Any]], clients: list[str], centralised: float | None) -> bytes | None:
    """Held-out accuracy of each client after each round (lines), the centralised control dashed."""
    if not rows:
        return None
    with _quiet():
        fig = _figure(6.4, 3.4)
        ax = fig.add_subplot()
        for name in clients:
            pts = [(r["round"], r["accuracy"][name]) for r in rows if name in r.get("accuracy", {})]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        if centralised is not None:
            ax.axhline(centralised, linestyle="--", color="grey", label="centralised (pooled)")
        ax.set_xlabel("round")
        ax.set_ylabel("held-out accuracy")
        ax.set_xticks(sorted({r["round"] for r in rows}))
        ax.legend(fontsize=8)
        return _png(fig)


def render_federated(fed: dict[str, Any]) -> str:
    """The page, from ``metrics["federated"]``."""
    names = [c["name"] for c in fed["clients"]]
    rows = sorted(fed["round_log"], key=lambda r: r["round"])
    return template_env().get_template("federated.html").render(
        fed=fed, names=names, rows=rows, chart=rounds_chart(rows, names, fed.get("centralised_accuracy")))
