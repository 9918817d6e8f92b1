"""Rules about label values as a whole (not one item): is this column really classes? Is a
regression target constant? Are there enough items per label of a multi-label set?"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import shown as printable
from .dataset import Dataset
from .report import ValidationReport

# Few distinct numbers are fine as class names whatever they look like (ratings 1..5, 0.5
# steps); beyond these, numbers with decimals or mostly-unique numbers are a measured target.
_FEW = 5
_MANY = 20


@dataclass(frozen=True)
class NumericTarget:
    """Why a label column looks like a regression target.

    Attributes:
        distinct: distinct numeric values.
        n: labels.
        decimals: some value is not a whole number.
        examples: a few of the values, as written.
    """

    distinct: int
    n: int
    decimals: bool
    examples: tuple[str, ...]


def regression_target(labels: Sequence[str]) -> NumericTarget | None:
    """A :class:`NumericTarget` when ``labels`` look like a measured quantity, not classes.

    The rule: every label is a finite number, more than 5 distinct values, and either
      - some value has decimals and there are more than 20 distinct values or more
        distinct values than half the labels, or
      - all are whole numbers, more than 20 distinct and more distinct values than half
        the labels, and they are not class indices (not exactly ``0..K-1`` or ``1..K``).
    So MNIST's 0-9, star ratings and half-star ratings, ImageNet's class ids stay classes;
    60 prices in 60 rows do not.
    """
    values: dict[float, str] = {}
    for lab in labels:
        try:
            v = float(lab)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(v):
            return None
        values.setdefault(v, lab)
    k, n = len(values), len(labels)
    if k <= _FEW:
        return None
    decimals = any(v != int(v) for v in values)
    mostly_unique = k > n / 2
    if decimals:
        flagged = k > _MANY or mostly_unique
    else:
        lo, hi = min(values), max(values)
        indices = lo in (0.0, 1.0) and hi - lo + 1 == k
        flagged = not indices and k > _MANY and mostly_unique
    if not flagged:
        return None
    return NumericTarget(k, n, decimals, tuple(list(values.values())[:3]))


def label_names(ds: Dataset, each: bool = False) -> Iterator[str]:
    """The label names of ``ds``: distinct (or, with ``each``, once per item that carries
    them). Classification: the classes; multi-label: the names in the items' sets;
    regression: none."""
    if ds.labels is None or ds.task == "regression":
        return iter(())
    if ds.task == "multi-label":
        names = (name for labs in ds.labels for name in labs)
    else:
        names = iter(ds.labels)
    return names if each else iter(dict.fromkeys(names))


def label_text(label) -> str:
    """One label as messages show it: ``'spam'``, ``'3.25'``, ``'cat;dog'``."""
    if isinstance(label, tuple):
        return ";".join(label)
    if isinstance(label, float):
        return f"{label:g}"
    return str(label)


def target_stats(targets: Sequence[float]) -> dict:
    """``{"min", "max", "mean", "std"}`` of the finite targets (NaN marks a bad one)."""
    xs = [float(x) for x in targets if math.isfinite(x)]
    if not xs:
        return {}
    mean = math.fsum(xs) / len(xs)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / len(xs))
    return {"min": min(xs), "max": max(xs), "mean": mean, "std": std}


def check_targets(ds: Dataset, report: ValidationReport) -> None:
    """Regression: a target that never varies leaves nothing to learn (and R² undefined)."""
    xs = {float(x) for x in ds.labels if math.isfinite(x)}
    if len(xs) == 1:
        (only,) = xs
        report.add("error", "constant-target", "train set", f"every training target is {only:g}: "
                   "there is nothing to predict", "check the label column (is it the right "
                   "one?), or add items with other values", split="train")


def check_label_sets(ds: Dataset, report: ValidationReport) -> None:
    """Multi-label: at least two label names; a name on one item only, or on every item,
    cannot be learnt (warnings: the model still trains on the others)."""
    sets = [labs for labs in ds.labels if labs]  # () marks an item reported as bad
    counts = Counter(label_names(ds, each=True))
    if len(counts) == 1:
        (only, n), = counts.items()
        report.add("error", "single-class", "train set", f"need at least two label names; "
                   f"every item carries only '{printable(only)}' ({n} items)",
                   "add items with other labels", split="train")
        return
    singles = sorted(c for c, n in counts.items() if n == 1)
    if singles:
        shown = ", ".join(repr(printable(c)) for c in singles[:5])
        more = f" and {len(singles) - 5} more" if len(singles) > 5 else ""
        what = f"label {shown} is" if len(singles) == 1 else \
            f"{len(singles)} labels ({shown}{more}) are"
        report.add("warning", "too-few-per-label", "train set", f"{what} on only 1 item: too few "
                   "to learn or to test (it stays in the training part)",
                   "add more items with these labels", split="train")
    everywhere = sorted(c for c, n in counts.items() if n == len(sets) and len(sets) > 1)
    if everywhere:
        shown = ", ".join(repr(printable(c)) for c in everywhere[:5])
        report.add("warning", "constant-label", "train set", f"label {shown} is on every training "
                   "item: the model learns to always predict it", "check the labels, or add "
                   "items without it", split="train")
