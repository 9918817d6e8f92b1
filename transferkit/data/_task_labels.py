"""Labels as read -> labels of a task: the task chosen (or inferred) and every label parsed.

Readers keep a label as written: a string, or a tuple of strings for a JSON list.
:func:`resolve_task` decides the task (the one asked for, or the one the labels make
unambiguous) and turns each label into its task's type (see :class:`Dataset`): a class name,
a finite float, or a sorted tuple of distinct label names.  A label that cannot be read
becomes an error on its item (skippable with ``skip_bad``), with a placeholder label until
the item is dropped.
"""
from __future__ import annotations

import difflib
import math
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ..errors import shown as printable
from .dataset import TASK_NAMES, Dataset
from .report import ValidationReport

__all__ = ["check_task_options", "resolve_task", "is_label_list"]

# A plain decimal number as people write one: float() alone would also take "1_000",
# "nan" and "infinity", which are not targets anyone meant.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NOT_FINITE = re.compile(r"[+-]?(nan|inf|infinity)", re.IGNORECASE)
_SEPARATORS = (";", "|", ",", "/", " ")  # what delimited label sets use, most likely first


def check_task_options(task: str | None, label_sep: str | None) -> None:
    """Refuse an unknown task or a ``label_sep`` that a task cannot use, before any read.

    Raises:
        UserInputError: naming the tasks, or saying what ``label_sep`` is for.
    """
    if task is not None and task not in TASK_NAMES:
        close = difflib.get_close_matches(str(task), TASK_NAMES, n=1, cutoff=0.5)
        raise UserInputError(f"unknown task {printable(str(task))!r}; the tasks are "
                             f"{', '.join(TASK_NAMES)}",
                             f"did you mean --task {close[0]}?" if close else
                             "pass --task classification, regression or multi-label")
    if label_sep is None:
        return
    if not isinstance(label_sep, str) or not label_sep:
        raise UserInputError(f"label_sep={label_sep!r}: give the character(s) between the labels, "
                             "e.g. --label-sep ';'")
    if task in ("classification", "regression"):
        raise UserInputError(f"--label-sep splits a cell into several labels: it is for "
                             f"multi-label data, not {task}",
                             "drop --label-sep, or pass --task multi-label")


def is_label_list(v: Any) -> bool:
    """A label written as several labels (a JSON list, or a list/tuple/set in memory)."""
    return isinstance(v, (list, tuple, set, frozenset))


def resolve_task(ds: Dataset, task: str | None, label_sep: str | None, report: ValidationReport,
                 split: str, label_column: str | None = None) -> Dataset:
    """``ds`` with its task decided and its labels parsed for it.

    The task is ``task`` when given; else the task of ``ds`` when that is not the default;
    else multi-label when ``label_sep`` is given or every label is a list (a ``task-inferred``
    warning says so); else classification.  Some labels lists and some not is an
    ``ambiguous-task`` error (which ``--task`` to pass).

    Args:
        ds: labels as read: strings, numbers or lists (or already typed).
        task, label_sep: as given by the user (checked by :func:`check_task_options`).
        report: where per-item (``bad-label``, ``bad-target``, ``empty-label-set``) and
            set-level problems go.
        split: recorded with each problem.
        label_column: the table column, for messages.

    Returns:
        A Dataset with the same items (and hash cache), ``task`` set and labels typed.
    """
    check_task_options(task, label_sep)
    chosen = task or (ds.task if ds.task != "classification" else None)
    if chosen is None and label_sep is not None:
        chosen = "multi-label"
    if ds.labels is None:
        return ds if ds.task == (chosen or ds.task) else replace(ds, task=chosen)
    where = _where(ds, label_column, split)
    if chosen is None:
        chosen = _infer(ds.labels, where, report, split)
    if chosen == "regression":
        labels = _regression(ds, report, split, where)
    elif chosen == "multi-label":
        labels = _multi_label(ds, label_sep, report, split, where)
    else:
        labels = _classification(ds, report, split)
    return replace(ds, labels=labels, task=chosen)


def _where(ds: Dataset, label_column: str | None, split: str) -> str:
    """Where set-level label problems point: the table's column, the folder, or the set."""
    src = Path(ds.source)
    if label_column and src.is_file():
        return f"{src.name} column '{label_column}'"
    return f"{src.name}/" if src.is_dir() else f"{split} set labels"


def _infer(labels: list, where: str, report: ValidationReport, split: str) -> str:
    lists = sum(is_label_list(v) for v in labels)
    if lists == 0:
        return "classification"
    if lists == len(labels):
        report.add("warning", "task-inferred", where, "every label is a list of labels: read as "
                   "multi-label data (each item can carry several labels)",
                   "pass --task multi-label to say so (and silence this warning)", split=split)
        return "multi-label"
    report.add("error", "ambiguous-task", where, f"{lists} of {len(labels)} labels are lists of "
               f"labels and the others single values: is this multi-label data or classes?",
               "pass --task multi-label (a single value is then a one-label set), or "
               "--task classification (the items labelled with lists are then reported)",
               split=split)
    return "classification"


def _classification(ds: Dataset, report: ValidationReport, split: str) -> list:
    out = []
    for i, v in enumerate(ds.labels):
        if is_label_list(v):
            # its own kind: the placeholder label below is no class that skipping could lose
            report.add("error", "label-list", ds.origins[i], f"the label is a list of {len(v)} "
                       "labels, not one class name", "give one class per item, or pass --task "
                       "multi-label for items with several labels", item=i, split=split)
            out.append(printable(str(list(v))))
        else:
            out.append(v if isinstance(v, str) else str(v))
    return out


def _regression(ds: Dataset, report: ValidationReport, split: str, where: str) -> list[float]:
    out = []
    for i, v in enumerate(ds.labels):
        value, why = _number(v)
        if why:
            report.add("error", "bad-target", ds.origins[i], f"the target {why}", "write the "
                       "number (e.g. 3.25), or remove the row (--skip-bad leaves it out)",
                       item=i, split=split)
            value = math.nan
        out.append(value)
    return out


def _number(v: Any) -> tuple[float, str | None]:
    """``(value, None)``, or ``(nan, why it is not a finite number)``."""
    if isinstance(v, bool) or is_label_list(v) or getattr(getattr(v, "dtype", None), "kind", "") == "b":
        return math.nan, f"is {_shown(v)}, not a number"
    if isinstance(v, (int, float)) or (hasattr(v, "dtype") and getattr(v, "ndim", 1) == 0):
        try:
            x = float(v)
        except (TypeError, ValueError):
            return math.nan, f"is {_shown(v)}, not a number"
        return (x, None) if math.isfinite(x) else (math.nan, f"is {x}: not a finite number")
    s = str(v).strip()
    if _NOT_FINITE.fullmatch(s):
        return math.nan, f"is {_shown(s)}: not a finite number"
    if not _NUMBER.fullmatch(s):
        return math.nan, f"is {_shown(s)}, not a number"
    x = float(s)
    if not math.isfinite(x):  # 1e999
        return math.nan, f"is {_shown(s)}: too large to be a finite number"
    return x, None


def _shown(v: Any) -> str:
    s = repr(list(v)) if is_label_list(v) else repr(v)
    return printable(s if len(s) <= 40 else s[:37] + "...")


def _multi_label(ds: Dataset, label_sep: str | None, report: ValidationReport, split: str,
                 where: str) -> list[tuple[str, ...]]:
    raw = ds.labels
    # Only the training set says how labels are written; a test set of single names (e.g. a
    # JSONL file whose items all have one label) reads them as one-label sets.
    if split == "train" and label_sep is None and ds.task != "multi-label" and \
            not any(is_label_list(v) for v in raw):
        sep = _likely_separator([v for v in raw if isinstance(v, str)])
        report.add("error", "no-label-sep", where, "every label is a single value: multi-label "
                   "data needs each item's labels as a list (a JSON list in a JSON/JSONL table) "
                   "or as one delimited string", f"pass --label-sep {sep!r} (the labels look "
                   f"separated by {sep!r})" if sep else "pass --label-sep with the character "
                   "between the labels (e.g. --label-sep ';'), or write the labels as JSON "
                   "lists", split=split)
    out = []
    for i, v in enumerate(raw):
        if is_label_list(v):
            names = [str(x).strip() for x in v]
        elif label_sep is not None and isinstance(v, str):
            names = [x.strip() for x in v.split(label_sep)]
        else:
            names = [str(v).strip()]
        names_set = tuple(sorted({n for n in names if n}))
        if not names_set:
            shown = "an empty list" if is_label_list(v) else f"{_shown(v)} (no label between " \
                f"the separators {label_sep!r})" if label_sep else _shown(v)
            report.add("error", "empty-label-set", ds.origins[i], f"the item has no label: its "
                       f"labels are {shown}", "give the item at least one label, or remove it "
                       "(--skip-bad leaves it out)", item=i, split=split)
        out.append(names_set)
    return out


def _likely_separator(labels: list[str]) -> str | None:
    """The separator most labels contain (each counted once per label), if any does."""
    counts = Counter(s for lab in labels for s in _SEPARATORS if s in lab.strip())
    if not counts:
        return None
    best = max(_SEPARATORS, key=lambda s: (counts[s], -_SEPARATORS.index(s)))
    return best if counts[best] else None


def array_labels(y: Any, n: int, classes: list[str] | None, task: str | None) -> tuple[list, str] | None:
    """Labels given in memory (:func:`from_arrays`) for regression and multi-label.

    Args:
        y: regression: ``N`` numbers; multi-label: ``N`` lists of label names (or of indices
            into ``classes``), or a multi-hot array ``(N, L)`` of 0/1 (columns named by
            ``classes``, else ``"0"``..``"L-1"``).
        n: items in X.
        classes: optional label names.
        task: as given; ``None`` infers multi-label when every label is a list.

    Returns:
        ``(labels, task)`` typed as :class:`Dataset` holds them, or ``None`` for
        classification (the caller reads class names as it always did).

    Raises:
        UserInputError: a wrong length, a label that is not of the task, an empty set.
    """
    check_task_options(task, None)
    shape = getattr(y, "shape", None)
    if shape is not None and len(shape) == 2 and task in (None, "multi-label"):
        return _multi_hot(y, n, classes), "multi-label"
    ys = list(y)
    if len(ys) != n:
        raise UserInputError(f"X has {n} items but y has {len(ys)} labels", "give one label per item")
    if task is None:
        lists = sum(is_label_list(v) or getattr(v, "ndim", 0) == 1 for v in ys)
        if lists == 0:
            return None
        if lists < n:
            raise UserInputError(f"{lists} of {n} labels in y are lists and the others single "
                                 "values", "pass task='multi-label' (a single value is then a "
                                 "one-label set) or give every label the same way")
        task = "multi-label"
    if task == "classification":
        if any(is_label_list(v) for v in ys):
            raise UserInputError("y holds lists of labels, but task='classification' takes one "
                                 "class per item", "pass task='multi-label' for label sets")
        return None
    if task == "regression":
        bad = [(i, why) for i, (_, why) in enumerate(map(_number, ys)) if why]
        if bad:
            shown = "; ".join(f"y[{i}] {why}" for i, why in bad[:5])
            raise UserInputError(f"regression targets must be finite numbers: {shown}"
                                 + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""),
                                 "fix or remove those items")
        return [_number(v)[0] for v in ys], "regression"
    names = [str(c) for c in classes] if classes is not None else None
    out = []
    for i, v in enumerate(ys):
        items = list(v) if is_label_list(v) or getattr(v, "ndim", 0) == 1 else [v]
        if names is not None:
            items = [_named(x, names, i) for x in items]
        labs = tuple(sorted({str(x).strip() for x in items} - {""}))
        if not labs:
            raise UserInputError(f"y[{i}] is an empty set of labels",
                                 "give every item at least one label, or remove it")
        out.append(labs)
    return out, "multi-label"


def _named(x: Any, names: list[str], i: int) -> str:
    if str(x) in names:
        return str(x)
    index = not isinstance(x, (bool, str)) and (
        isinstance(x, int) or getattr(getattr(x, "dtype", None), "kind", "") in ("i", "u"))
    if index and 0 <= int(x) < len(names):
        return names[int(x)]
    raise UserInputError(f"y[{i}] holds {_shown(x)}, which is not in classes {names[:20]}",
                         "give label names from classes, or indices 0..len(classes)-1")


def _multi_hot(y: Any, n: int, classes: list[str] | None) -> list[tuple[str, ...]]:
    import numpy as np

    m = np.asarray(y)
    if m.shape[0] != n:
        raise UserInputError(f"X has {n} items but y has {m.shape[0]} rows", "give one row per item")
    if m.dtype.kind not in "biuf" or not np.isin(m, (0, 1)).all():
        raise UserInputError(f"y has shape {m.shape} but is not a 0/1 matrix",
                             "give a multi-hot matrix (1 = the item has the label), or one list "
                             "of label names per item")
    names = [str(c) for c in classes] if classes is not None else [str(j) for j in range(m.shape[1])]
    if len(names) != m.shape[1]:
        raise UserInputError(f"y has {m.shape[1]} columns but classes names {len(names)} labels",
                             "give one class name per column")
    empty = np.flatnonzero(m.sum(axis=1) == 0)
    if empty.size:
        raise UserInputError(f"y rows {empty[:10].tolist()} have no label", "give every item at "
                             "least one label, or remove it")
    return [tuple(sorted(names[j] for j in np.flatnonzero(row))) for row in m]
