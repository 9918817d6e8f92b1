"""The pre-flight data check: every problem at once, before any model is loaded.

:func:`prepare_data` reads the data (recording per-item problems), then checks the sets as a
whole (classes, labels, duplicates).  Any error raises :class:`DataValidationError` listing all
of them, unless ``skip_bad=True``: then bad items are dropped and listed in
``report.skipped``, and only problems that dropping cannot fix still raise.
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataValidationError, UserInputError
from ..errors import shown as printable
from ._tables import split_columns
from ._task_labels import check_task_options, resolve_task
from .checks import check_items
from .dataset import Dataset, item_hash
from .labels import (
    NumericTarget,
    check_label_sets,
    check_targets,
    label_names,
    label_text,
    regression_target,
    target_stats,
)
from .readers import read_path
from .report import Problem, ValidationReport

# Errors with item=None and one of these kinds are rows/files that never became an item (a bad
# JSON line, a row without a label): skip_bad records them as skipped.  Any other error with
# item=None concerns a whole set and stays fatal.
ROW_KINDS = frozenset({"bad-json", "bad-row", "missing-label", "bad-label", "not-text", "missing-path"})


@dataclass
class PreparedData:
    """What :func:`prepare_data` returns: the checked sets, the report, and the task the
    labels were read for (``"classification"``, ``"regression"`` or ``"multi-label"``: what
    ``train.task`` and ``test.task`` are)."""

    train: Dataset
    test: Dataset | None
    report: ValidationReport
    task: str = "classification"


def prepare_data(data: Any, test: Any = None, *, text_columns: list[str] | None = None,
                 label_column: str | None = "label", modality: str | None = None,
                 skip_bad: bool = False, require_labels: bool = True, task: str | None = None,
                 label_sep: str | None = None, path_column: str | None = None) -> PreparedData:
    """Read and check the data; raise with every problem, or drop the bad items.

    Args:
        data: a path (see :func:`read_source`) or a Dataset.  A folder with ``train/`` and
            ``test/`` supplies both sets.
        test: optional test set, a path or a Dataset.
        text_columns, label_column, modality: as for :func:`read_source`.
        skip_bad: drop bad items (listed in ``report.skipped``) instead of raising.
        require_labels: ``False`` for prediction: labels are optional and class checks skipped
            (a table without the default ``label`` column is then read as unlabelled).
        task: ``"classification"``, ``"regression"`` or ``"multi-label"``: how to read the
            labels (see :class:`Dataset`).  ``None`` infers it, never silently: every label a
            JSON list (or ``label_sep`` given) -> multi-label with a ``task-inferred``
            warning; numbers with many distinct values -> a ``regression-target`` error
            saying which task to pass; otherwise classification.  The test set is read for
            the training set's task.
        label_sep: multi-label labels written as one string, e.g. ``"cat;dog"`` with ``";"``.
        path_column: tables that list image or audio files: the column of their paths,
            relative to the table's folder (see :func:`read_source`).

    Returns:
        :class:`PreparedData` with the (cleaned) sets and the report (warnings, skipped).

    Raises:
        DataValidationError: errors remain (all of them are in ``err.report``).
        UserInputError: a source is unusable as a whole (missing path, missing column...).
    """
    check_task_options(task, label_sep)
    report = ValidationReport()
    text_columns = split_columns(text_columns)
    opts = dict(text_columns=text_columns, label_column=label_column, modality=modality,
                label_optional=not require_labels, label_sep=label_sep, path_column=path_column)
    train = _load(data, "train", report, task=task, **opts)
    if isinstance(train, tuple):
        if test is not None:
            raise UserInputError(f"{printable(str(data))} already has train/ and test/ folders; "
                                 "do not pass "
                                 "test= as well", "remove one of the two test sets")
        train, test_ds = train
    else:
        test_ds = None
        if test is not None:
            test_ds = _load(test, "test", report, task=train.task, **opts)
            if isinstance(test_ds, tuple):
                raise UserInputError(f"the test path {printable(str(test))} has train/ and test/ "
                                     "folders",
                                     "pass its test/ folder")
    if test_ds is not None and test_ds.modality != train.modality:
        report.add("error", "modality-mismatch", "test set", f"the test set is "
                   f"{test_ds.modality} but the training set is {train.modality}", split="test")
    listed = {p.item for p in report.errors if p.kind == "label-list" and p.split == "train"}
    before = set(label_names(train)) - {train.labels[i] for i in listed}  # placeholders: no class
    if skip_bad:
        _leave_out_empty_class_folders(report)
        train, test_ds = _drop(train, "train", report), _drop(test_ds, "test", report)
    _check_sets(train, test_ds, report, require_labels, label_column, task is not None)
    if skip_bad:  # duplicates and unseen labels are per item: drop those too
        test_ds = _drop(test_ds, "test", report)
        if test_ds is not None and len(test_ds) == 0 and not _has(report, "no-items", "test"):
            _no_items(report, "test")
        lost = sorted(before - set(label_names(train)))
        what = "label" if train.task == "multi-label" else "class"
        for c in lost:
            report.add("error", "empty-class", "train set", f"every item of {what} "
                       f"'{printable(c)}' was skipped as bad: nothing is left to learn it from",
                       f"fix the files of {what} '{printable(c)}' (see skipped), or remove the "
                       f"{what}", split="train")
    report.task = train.task
    _fill_counts(report, train, test_ds)
    if report.errors:
        raise _failure(report, skip_bad)
    return PreparedData(train, test_ds, report, train.task)


def _failure(report: ValidationReport, skip_bad: bool) -> DataValidationError:
    """The error to raise; its hint names --skip-bad only where it would help and was not given."""
    if skip_bad:
        hint = ("these problems remain after leaving out the bad items (--skip-bad was given): "
                "fix them as the hints above say")
    elif not any(p.item is not None or p.kind in ROW_KINDS or p.kind == "empty-class"
                 for p in report.errors):
        hint = ("fix the problems listed above (--skip-bad cannot: they concern whole sets, "
                "classes or columns, not single items)")
    else:
        hint = None
    return DataValidationError(report, hint=hint)


def _leave_out_empty_class_folders(report: ValidationReport) -> None:
    """With skip_bad, an empty class folder is a class that does not exist: a warning."""
    for p in report.problems:
        if p.severity == "error" and p.kind == "empty-class":
            p.severity = "warning"
            p.message += ": it is left out (the model will not know this class)"
            p.hint = "add files to it, or delete the folder to silence this warning"


def _load(src: Any, split: str, report: ValidationReport, *, label_optional: bool,
          task: str | None, label_sep: str | None, path_column: str | None = None, **opts):
    if isinstance(src, Dataset):
        check_items(src, report, split)
        return resolve_task(src, task, label_sep, report, split)
    if isinstance(src, (str, os.PathLike)):
        return read_path(Path(src), opts["text_columns"], opts["label_column"], opts["modality"],
                         report, split, label_optional=label_optional, task=task,
                         label_sep=label_sep, path_column=path_column)
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
            report.skip(p.origin, p.message, p.kind, split)
        else:
            keep_problems.append(p)
    report.problems = keep_problems
    for i in sorted(bad):
        ps = bad[i]
        report.skip(ds.origins[i], "; ".join(f"{p.kind}: {p.message}" for p in ps), ps[0].kind,
                    split)
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
                require_labels: bool, label_column: str | None, task_given: bool) -> None:
    """Set-level checks: labels, classes (or targets, or label sets), label spellings,
    duplicates, unseen test labels.  ``task_given``: the user named the task, so numbers
    read as classes are what was asked for."""
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
    labelled = require_labels and train.labels is not None and len(train) > 0
    if labelled and train.task == "regression":
        check_targets(train, report)
    elif labelled and train.task == "multi-label":
        check_label_sets(train, report)
    elif labelled:
        counts = Counter(train.labels)
        target = None if task_given else regression_target(train.labels)
        if target:
            _regression_error(train, label_column, target, report)
        elif len(counts) == 1:
            (only, n), = counts.items()
            add("error", "single-class", "train set", f"need at least two classes; found only "
                f"'{printable(only)}' ({n} items)", "add items of at least one other class",
                split="train")
        singles = sorted(c for c, n in counts.items() if n == 1)
        if singles and not target:  # one line, however many: 1,000 classes are not 1,000 lines
            shown = ", ".join(repr(printable(c)) for c in singles[:5])
            more = f" and {len(singles) - 5} more" if len(singles) > 5 else ""
            what = (f"class {shown} has" if len(singles) == 1
                    else f"{len(singles)} classes ({shown}{more}) have")
            add("warning", "too-few-per-class", "train set", f"{what} only 1 item: "
                "it cannot be split stratified (it stays in the training part)",
                "add more items of these classes", split="train")
    if require_labels and train.task != "regression":
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
                f"item {printable(train.origins[first[h]])}: copies in both sets inflate test "
                "accuracy",
                "remove it from one of the two sets", item=j, split="test")
    if require_labels and train.labels is not None and test.labels is not None \
            and train.task != "regression":
        seen = set(label_names(train))
        norm = {_norm(x) for x in seen}
        for j, lab in enumerate(test.labels):
            names = lab if train.task == "multi-label" else (lab,)
            new = [x for x in names if x not in seen and _norm(x) not in norm]  # case: label-case
            if new:
                shown = ", ".join(f"'{printable(x)}'" for x in new)
                add("error", "unseen-label", test.origins[j], f"label {shown} does not "
                    "occur in the training data", "a model cannot predict a label it never saw: "
                    f"add training items of {shown}, or remove these test items",
                    item=j, split="test")


def _regression_error(ds: Dataset, label_column: str | None, t: NumericTarget,
                      report: ValidationReport) -> None:
    src = Path(ds.source)
    if src.is_file():
        where, what = f"{src.name} column '{label_column}'", f"column '{label_column}' holds"
    elif src.is_dir():
        where, what = f"{src.name}/", "the class folder names hold"
    else:
        where, what = "labels", "the labels hold"
    kind = "numbers with decimals" if t.decimals else "numbers"
    rows = "rows" if src.is_file() else "items"
    report.add("error", "regression-target", where, f"{printable(what)} {t.distinct} "
               f"distinct {kind} in {t.n} {rows} (e.g. {printable(', '.join(t.examples))}): it "
               "looks like a regression target, not classes (as classes, each value would "
               "become a class of its own)", "pass --task regression (task='regression') to "
               "predict the number; or --task classification to keep each value as a class; "
               "or bin the values into classes (e.g. low/medium/high); if another column holds "
               "the class names, that one is the label column", split="train")


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
        for lab in label_names(ds, each=True) if ds is not None else []:
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
               f"another {split} item (e.g. {printable(ds.origins[g[0]])} and "
               f"{printable(ds.origins[g[1]])})",
               "harmless for training, but they over-weight those items", split=split)
    if ds.labels is not None:
        clash = [g for g in dups if len({ds.labels[i] for i in g}) > 1]
        if clash:
            i = clash[0][0]
            j = next(k for k in clash[0] if ds.labels[k] != ds.labels[i])
            report.add("warning", "conflicting-labels", f"{split} set", f"{len(clash)} group(s) "
                       f"of identical items carry different labels (e.g. {printable(ds.origins[i])} "
                       f"'{printable(label_text(ds.labels[i]))}' vs {printable(ds.origins[j])} "
                       f"'{printable(label_text(ds.labels[j]))}')",
                       "check those labels", split=split)


def _fill_counts(report: ValidationReport, train: Dataset, test: Dataset | None) -> None:
    skipped = Counter(s.get("split") for s in report.skipped)
    for name, ds in (("train", train), ("test", test)):
        if ds is not None:
            # classes: items per class (multi-label: per label name; regression: none)
            report.counts[name] = {"items": len(ds),
                                   "classes": dict(sorted(Counter(label_names(ds, each=True)).items())),
                                   "skipped": skipped.get(name, 0)}
            if ds.task == "regression" and ds.labels:
                report.counts[name]["target"] = target_stats(ds.labels)
