"""What the pre-flight check found: one :class:`Problem` per thing wrong, gathered in a
:class:`ValidationReport` that readers fill and :func:`~transferkit.data.prepare_data` judges.

Its own module so that the readers (which record problems) and the validation (which reads
them) both depend on it, and not on each other.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

from ..errors import shown as printable

_SHOW_PER_KIND = 50  # errors listed one by one per kind before a count
_COLLAPSE_AT = 4  # this many warnings of one kind or more are shown as one line
_EXAMPLES = 3  # examples named in a collapsed line


@dataclass
class Problem:
    """One thing wrong (or suspicious) with the data.

    Attributes:
        severity: ``"error"`` (item or set unusable) or ``"warning"`` (usable).
        kind: short slug, e.g. ``"truncated"``, ``"label-case"``.
        origin: where: ``"emails.jsonl:12"``, ``"digits/3/x.png"``, ``"train set"``; always
            printable (see :func:`printable`).
        message: what is wrong, in plain words.
        hint: what to do about it.
        item: index of the offending item in its Dataset; ``None`` for set-level problems
            and for rows that never became items.
        split: ``"train"`` or ``"test"``.
    """

    severity: str
    kind: str
    origin: str
    message: str
    hint: str | None = None
    item: int | None = None
    split: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return f"{self.origin}: {self.message} [{self.kind}]"


@dataclass
class ValidationReport:
    """Everything the check found.

    Attributes:
        problems: the problems still present (with ``skip_bad``, those fixed by dropping
            items move to ``skipped``).
        skipped: ``{"origin", "reason", "kind", "split"}`` per item or row left out.
        counts: ``{"train": {"items": n, "classes": {name: n}, "skipped": n}, "test": ...}``;
            multi-label: ``classes`` counts the items carrying each label; regression:
            ``classes`` is empty and ``target`` holds ``{"min", "max", "mean", "std"}``.
        task: the task the labels were read for.
    """

    problems: list[Problem] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    task: str = "classification"

    def add(self, severity: str, kind: str, origin: str, message: str, hint: str | None = None,
            *, item: int | None = None, split: str | None = None) -> Problem:
        p = Problem(severity, kind, printable(origin), message, hint, item, split)
        self.problems.append(p)
        return p

    def skip(self, origin: str, reason: str, kind: str | None, split: str | None) -> None:
        """Record an item or row left out of the data."""
        self.skipped.append({"origin": printable(origin), "reason": reason, "kind": kind,
                             "split": split})

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def ok(self) -> bool:
        """True when no error remains."""
        return not self.errors

    def warning_lines(self) -> list[str]:
        """The warnings as ``"origin: message"`` lines, a kind seen 4 times or more collapsed
        into one line with its count and a few examples (1,000 single-item classes are one
        line, not 1,000)."""
        return _collapsed(self.warnings)

    def summary(self) -> str:
        """Human-readable text: counts, every error (50 per kind, then a count), warnings
        (repeated kinds collapsed), skipped items."""
        errs, warns = self.errors, self.warnings
        head = (f"Data check: {len(errs)} error(s), {len(warns)} warning(s)"
                + (f", {len(self.skipped)} item(s) skipped" if self.skipped else ""))
        lines = [head]
        for split, c in self.counts.items():
            classes = c.get("classes") or {}
            shown = ", ".join(f"{k}: {v}" for k, v in list(classes.items())[:12])
            more = " ..." if len(classes) > 12 else ""
            t = c.get("target")
            if t:
                lines.append(f"  {split}: {c.get('items', 0)} items, target {t['min']:g} to "
                             f"{t['max']:g} (mean {t['mean']:g}, std {t['std']:g})")
                continue
            word = "labels" if self.task == "multi-label" else "classes"
            lines.append(f"  {split}: {c.get('items', 0)} items, {len(classes)} {word}"
                         + (f" ({shown}{more})" if classes else ""))
        if errs:
            lines.append("Errors:")
            lines += _grouped(errs, "error")
        if warns:
            lines.append("Warnings:")
            lines += [f"  - {line}" for line in _collapsed(warns)]
        if self.skipped:
            lines.append("Skipped (left out of the data):")
            per_kind: Counter = Counter()
            for s in self.skipped:
                per_kind[s.get("kind")] += 1
                if per_kind[s.get("kind")] <= _SHOW_PER_KIND:
                    lines.append(f"  - {s['origin']}: {s['reason']}")
            lines += [f"  ... and {n - _SHOW_PER_KIND} more skipped for '{k}'"
                      for k, n in per_kind.items() if n > _SHOW_PER_KIND]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-able form (validation.json in the run directory)."""
        return {"ok": self.ok(), "task": self.task, "errors": len(self.errors),
                "warnings": len(self.warnings),
                "problems": [p.to_dict() for p in self.problems],
                "skipped": [dict(s) for s in self.skipped], "counts": self.counts}


def _grouped(problems: list[Problem], word: str) -> list[str]:
    """One line per problem, the hint once per (kind, hint); over 50 of a kind -> a count."""
    lines, seen_hint, per_kind = [], set(), Counter(p.kind for p in problems)
    shown: Counter = Counter()
    for p in problems:
        shown[p.kind] += 1
        if shown[p.kind] > _SHOW_PER_KIND:
            continue
        lines.append(f"  - {p.line()}")
        if p.hint and (p.kind, p.hint) not in seen_hint:
            seen_hint.add((p.kind, p.hint))
            lines.append(f"      hint: {p.hint}")
    lines += [f"  ... and {n - _SHOW_PER_KIND} more '{k}' {word}s (all are listed in "
              "validation.json)" for k, n in per_kind.items() if n > _SHOW_PER_KIND]
    return lines


def _collapsed(problems: list[Problem]) -> list[str]:
    """One line per problem, except kinds with many: one line each, count and examples."""
    by_kind: dict[str, list[Problem]] = defaultdict(list)
    for p in problems:
        by_kind[p.kind].append(p)
    lines = []
    for kind, ps in by_kind.items():
        if len(ps) < _COLLAPSE_AT:
            lines += [f"{p.origin}: {p.message}" for p in ps]
            continue
        examples = "; ".join(f"{p.origin}: {p.message}" for p in ps[:_EXAMPLES])
        lines.append(f"{len(ps)} '{kind}' warnings, e.g. {examples}; ... (all are listed in "
                     "validation.json)")
    return lines
