"""``transferkit strategies``: every registered strategy, its data needs and its options.

Generated from each strategy's ``description``, its class flags and its ``Params`` dataclass,
so nothing here is written twice.
"""
from __future__ import annotations

import json
from typing import Any

from .base import STRATEGIES


def strategy_catalog(name: str | None = None) -> list[dict[str, Any]]:
    """JSON-able rows, one per strategy (sorted by name), or only ``name``'s.

    Each row: ``name``, ``description``, ``needs`` (``labels``, ``unlabelled_target``,
    ``backbone_training``), ``data`` (the needs in words) and ``params``: ``[{"name", "type",
    "default", "range", "choices", "help"}]``.

    Raises:
        UserInputError: an unknown ``name`` (with the closest known one).
    """
    names = [name] if name is not None else STRATEGIES.list()
    rows = []
    for n in names:
        row = STRATEGIES.get(n).describe()
        row["data"] = data_needs(row["needs"])
        rows.append(row)
    return rows


def data_needs(needs: dict[str, bool]) -> str:
    """The data a strategy needs, in words."""
    parts = ["labelled training data" if needs["labels"] else "no labelled training data (label names or "
             "descriptions only)"]
    if needs["unlabelled_target"]:
        parts.append("unlabelled target data (--target-unlabelled)")
    parts.append("trains the backbone on raw items" if needs["backbone_training"] else "cached backbone features")
    return "; ".join(parts)


def _value(v: Any) -> str:
    return json.dumps(v)


def render_catalog(rows: list[dict[str, Any]], *, width: int = 100) -> str:
    """The rows of :func:`strategy_catalog` as text: one block per strategy, one line per option."""
    out = []
    for row in rows:
        out.append(f"{row['name']}: {row['description']}")
        out.append(f"  data: {row['data']}")
        if not row["params"]:
            out.append("  options: none")
        for p in row["params"]:
            r = p["range"]
            allowed = (f"one of {', '.join(p['choices'])}" if p["choices"]
                       else f"in {r}" if r and r[0] in "([" else r)
            facts = f"{p['type']}, default {_value(p['default'])}" + (f", {allowed}" if allowed else "")
            out.append(f"  {p['name']} ({facts})")
            out.append(f"      {p['help']}")
        out.append("")
    return "\n".join(out).rstrip("\n")
