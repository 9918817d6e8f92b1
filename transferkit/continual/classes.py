"""The classes of an update: what the parent knew, what the new data brings, what looks wrong."""
from __future__ import annotations


def class_clashes(old: list[str], new: list[str]) -> dict[str, list]:
    """Suspicious class names before training: ``case`` pairs ``[old, new]`` equal but for case
    or spaces, and ``vanished``: old classes absent from data that shares other old classes (a
    domain-incremental step that lost a class: renamed, or forgotten in the export?)."""
    key = {" ".join(c.split()).casefold(): c for c in old}
    case = [[key[" ".join(c.split()).casefold()], c] for c in new
            if c not in old and " ".join(c.split()).casefold() in key]
    shared = set(old) & set(new)
    return {"case": case, "vanished": sorted(set(old) - set(new)) if shared else []}
