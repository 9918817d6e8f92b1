"""Rules about label values as a whole (not one item): is this column really classes?"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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
