"""The pre-flight data check: every problem at once, before any model is loaded.

:func:`prepare_data` reads the data (recording per-item problems), then checks the sets as a
whole (classes, labels, duplicates).  Any error raises :class:`DataValidationError` listing all
of them, unless ``skip_bad=True``: then bad items are dropped and listed in
``report.skipped``, and only problems that dropping cannot fix still raise.
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import DataValidationError, UserInputError
from .dataset import Dataset, item_hash

# Errors with item=None and one of these kinds are rows/files that never became an item (a bad
# JSON line, a row without a label): skip_bad records them as skipped.  Any other error with
# item=None concerns a whole set and stays fatal.
ROW_KINDS = frozenset({"bad-json", "bad-row", "missing-label", "bad-label", "not-text"})
_SHOW_PER_KIND = 50


@dataclass
class Problem:
    """One thing wrong (or suspicious) with the data.

    Attributes:
        severity: ``"error"`` (item or set unusable) or ``"warning"`` (usable).
        kind: short slug, e.g. ``"truncated"``, ``"label-case"``.
        origin: where: ``"emails.jsonl:12"``, ``"digits/3/x.png"``, ``"train set"``.
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
        counts: ``{"train": {"items": n, "classes": {name: n}, "skipped": n}, "test": ...}``.
    """

    problems: list[Problem] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    def add(self, severity: str, kind: str, origin: str, message: str, hint: str | None = None,
            *, item: int | None = None, split: str | None = None) -> Problem:
        p = Problem(severity, kind, origin, message, hint, item, split)
        self.problems.append(p)
        return p

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def ok(self) -> bool:
        """True when no error remains."""
        return not self.errors

    def summary(self) -> str:
        """Human-readable text: counts, every error (50 per kind, then a count), warnings."""
        errs, warns = self.errors, self.warnings
        head = (f"Data check: {len(errs)} error(s), {len(warns)} warning(s)"
                + (f", {len(self.skipped)} item(s) skipped" if self.skipped else ""))
        lines = [head]
        for split, c in self.counts.items():
            classes = c.get("classes") or {}
            shown = ", ".join(f"{k}: {v}" for k, v in list(classes.items())[:12])
            more = " ..." if len(classes) > 12 else ""
            lines.append(f"  {split}: {c.get('items', 0)} items, {len(classes)} classes"
                         + (f" ({shown}{more})" if classes else ""))
        if errs:
            lines.append("Errors:")
            lines += _grouped(errs, "error")
        if warns:
            lines.append("Warnings:")
            lines += _grouped(warns, "warning")
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
        return {"ok": self.ok(), "errors": len(self.errors), "warnings": len(self.warnings),
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


@dataclass
class PreparedData:
    """What :func:`prepare_data` returns: the checked sets and the report."""

    train: Dataset
    test: Dataset | None
    report: ValidationReport


def prepare_data(data: Any, test: Any = None, *, text_columns: list[str] | None = None,
                 label_column: str | None = "label", modality: str | None = None,
                 skip_bad: bool = False, require_labels: bool = True) -> PreparedData:
    """Read and check the data; raise with every problem, or drop the bad items.

    Args:
        data: a path (see :func:`read_source`) or a Dataset.  A folder with ``train/`` and
            ``test/`` supplies both sets.
        test: optional test set, a path or a Dataset.
        text_columns, label_column, modality: as for :func:`read_source`.
        skip_bad: drop bad items (listed in ``report.skipped``) instead of raising.
        require_labels: ``False`` for prediction: labels are optional and class checks skipped
            (a table without the default ``label`` column is then read as unlabelled).

    Returns:
        :class:`PreparedData` with the (cleaned) sets and the report (warnings, skipped).

    Raises:
        DataValidationError: errors remain (all of them are in ``err.report``).
        UserInputError: a source is unusable as a whole (missing path, missing column...).
    """
    report = ValidationReport()
    opts = dict(text_columns=text_columns, label_column=label_column, modality=modality,
                label_optional=not require_labels)
    train = _load(data, "train", report, **opts)
    if isinstance(train, tuple):
        if test is not None:
            raise UserInputError(f"{data} already has train/ and test/ folders; do not pass "
                                 "test= as well", "remove one of the two test sets")
        train, test_ds = train
    else:
        test_ds = None
        if test is not None:
            test_ds = _load(test, "test", report, **opts)
            if isinstance(test_ds, tuple):
                raise UserInputError(f"the test path {test} has train/ and test/ folders",
                                     "pass its test/ folder")
    if test_ds is not None and test_ds.modality != train.modality:
        report.add("error", "modality-mismatch", "test set", f"the test set is "
                   f"{test_ds.modality} but the training set is {train.modality}", split="test")
    before = set(train.labels or [])
    if skip_bad:
        train, test_ds = _drop(train, "train", report), _drop(test_ds, "test", report)
    _check_sets(train, test_ds, report, require_labels)
    if skip_bad:  # duplicates and unseen labels are per item: drop those too
        test_ds = _drop(test_ds, "test", report)
        if test_ds is not None and len(test_ds) == 0 and not _has(report, "no-items", "test"):
            _no_items(report, "test")
        lost = sorted(before - set(train.labels or []))
        for c in lost:
            report.add("error", "empty-class", "train set", f"every item of class '{c}' was "
                       "skipped as bad: nothing is left to learn it from",
                       f"fix the files of class '{c}' (see skipped), or remove the class",
                       split="train")
    _fill_counts(report, train, test_ds)
    if report.errors:
        raise DataValidationError(report)
    return PreparedData(train, test_ds, report)


def _load(src: Any, split: str, report: ValidationReport, *, label_optional: bool, **opts):
    from . import readers  # readers imports this module: import late

    if isinstance(src, Dataset):
        readers.check_items(src, report, split)
        return src
    if isinstance(src, (str, os.PathLike)):
        from pathlib import Path

        return readers._read(Path(src), opts["text_columns"], opts["label_column"],
                             opts["modality"], report, split, label_optional=label_optional)
    raise UserInputError(f"cannot use a {type(src).__name__} as data",
                         "pass a path, or build a Dataset with from_arrays(X, y)")


def _drop(ds: Dataset | None, split: str, report: ValidationReport) -> Dataset | None:
    """Remove the items (and unloaded rows) with errors; move their problems to ``skipped``."""
    if ds is None:
        return None
    bad: dict[int, list[Problem]] = defaultdict(list)
    keep_problems = []
    for p in report.problems:
        if p.severity == "error" and p.split == split and p.item is not None:
            bad[p.item].append(p)
        elif p.severity == "error" and p.split == split and p.kind in ROW_KINDS:
            report.skipped.append({"origin": p.origin, "reason": p.message, "kind": p.kind,
                                   "split": split})
        else:
            keep_problems.append(p)
    report.problems = keep_problems
    for i in sorted(bad):
        ps = bad[i]
        report.skipped.append({"origin": ds.origins[i], "kind": ps[0].kind, "split": split,
                               "reason": "; ".join(f"{p.kind}: {p.message}" for p in ps)})
    if not bad:
        return ds
    # Problems that stay (warnings) keep pointing at the right items after the removal.
    keep = [i for i in range(len(ds)) if i not in bad]
    new_index = {old: new for new, old in enumerate(keep)}
    for p in report.problems:
        if p.split == split and p.item is not None:
            p.item = new_index.get(p.item)
    return ds.subset(keep)


def _safe_hashes(ds: Dataset) -> list[str | None]:
    if ds._hashes is not None:
        return ds._hashes
    out = []
    for x in ds.inputs:
        try:
            out.append(item_hash(x, ds.modality))
        except (OSError, TypeError):  # unreadable items are reported already
            out.append(None)
    return out


def _check_sets(train: Dataset, test: Dataset | None, report: ValidationReport,
                require_labels: bool) -> None:
    """Set-level checks: labels, classes, label spellings, duplicates, unseen test labels."""
    add = report.add
    for name, ds in (("train", train), ("test", test)):
        if ds is not None and len(ds) == 0:
            _no_items(report, name)
    if require_labels:
        for name, ds in (("train", train), ("test", test)):
            if ds is not None and ds.labels is None:
                add("error", "no-labels", f"{name} set", f"the {name} data has no labels",
                    "put the items in one subfolder per class, or name the label column "
                    "with label_column=...", split=name)
    if require_labels and train.labels is not None and len(train):
        counts = Counter(train.labels)
        if len(counts) == 1:
            (only, n), = counts.items()
            add("error", "single-class", "train set", f"need at least two classes; found only "
                f"'{only}' ({n} items)", "add items of at least one other class", split="train")
        for c, n in sorted(counts.items()):
            if n == 1:
                add("warning", "too-few-per-class", "train set", f"class '{c}' has only 1 item: "
                    "it cannot be split stratified (it stays in the training part)",
                    "add more items of this class", split="train")
    if require_labels:
        _check_label_case(train, test, report)
    th = _safe_hashes(train)
    _duplicates_within(train, th, "train", report)
    if test is None:
        return
    hh = _safe_hashes(test)
    _duplicates_within(test, hh, "test", report)
    first = {}
    for i, h in enumerate(th):
        if h is not None:
            first.setdefault(h, i)
    for j, h in enumerate(hh):
        if h is not None and h in first:
            add("error", "duplicate-train-test", test.origins[j], f"same content as training "
                f"item {train.origins[first[h]]}: copies in both sets inflate test accuracy",
                "remove it from one of the two sets", item=j, split="test")
    if require_labels and train.labels is not None and test.labels is not None:
        seen = set(train.labels)
        norm = {_norm(x) for x in seen}
        for j, lab in enumerate(test.labels):
            if lab not in seen and _norm(lab) not in norm:  # case variants: label-case says it
                add("error", "unseen-label", test.origins[j], f"label '{lab}' does not occur "
                    "in the training data", "a model cannot predict a class it never saw: add "
                    f"training items of '{lab}', or remove these test items", item=j, split="test")


def _no_items(report: ValidationReport, split: str) -> None:
    report.add("error", "no-items", f"{split} set", f"no usable items are left in the {split} "
               "data", "see the problems and skipped items listed here", split=split)


def _has(report: ValidationReport, kind: str, split: str) -> bool:
    return any(p.kind == kind and p.split == split for p in report.problems)


def _norm(label: str) -> str:
    return label.strip().casefold()


def _check_label_case(train: Dataset, test: Dataset | None, report: ValidationReport) -> None:
    """Labels that differ only in case or surrounding spaces: the user must decide."""
    spellings: dict[str, Counter] = defaultdict(Counter)
    for ds in (train, test):
        for lab in (ds.labels or []) if ds is not None else []:
            spellings[_norm(lab)][lab] += 1
    for forms in spellings.values():
        if len(forms) > 1:
            shown = " and ".join(f"{s!r} ({n} items)" for s, n in sorted(forms.items()))
            report.add("error", "label-case", "labels", f"labels {shown} differ only in case or "
                       "surrounding spaces", "make the spellings identical if they are the same "
                       "class (or make them clearly different)", split="train")


def _duplicates_within(ds: Dataset, hashes: list[str | None], split: str,
                       report: ValidationReport) -> None:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        if h is not None:
            groups[h].append(i)
    dups = [g for g in groups.values() if len(g) > 1]
    if not dups:
        return
    extra = sum(len(g) - 1 for g in dups)
    g = dups[0]
    report.add("warning", "duplicates", f"{split} set", f"{extra} item(s) are exact copies of "
               f"another {split} item (e.g. {ds.origins[g[0]]} and {ds.origins[g[1]]})",
               "harmless for training, but they over-weight those items", split=split)
    if ds.labels is not None:
        clash = [g for g in dups if len({ds.labels[i] for i in g}) > 1]
        if clash:
            i = clash[0][0]
            j = next(k for k in clash[0] if ds.labels[k] != ds.labels[i])
            report.add("warning", "conflicting-labels", f"{split} set", f"{len(clash)} group(s) "
                       f"of identical items carry different labels (e.g. {ds.origins[i]} "
                       f"'{ds.labels[i]}' vs {ds.origins[j]} '{ds.labels[j]}')",
                       "check those labels", split=split)


def _fill_counts(report: ValidationReport, train: Dataset, test: Dataset | None) -> None:
    skipped = Counter(s.get("split") for s in report.skipped)
    for name, ds in (("train", train), ("test", test)):
        if ds is not None:
            report.counts[name] = {"items": len(ds),
                                   "classes": dict(sorted(Counter(ds.labels or []).items())),
                                   "skipped": skipped.get(name, 0)}
