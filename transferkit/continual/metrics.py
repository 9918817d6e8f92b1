"""Metrics of a continual-learning accuracy matrix (pure: lists and numbers in, numbers out).

``R[i][j]`` is the accuracy after step ``i`` (row 0: the run the lineage started from) on test
set ``j`` (columns in the order the lineage met them); ``None`` where a set was not evaluated
(it was not known yet, or its files are gone).  Test set ``j`` is *introduced* at step
``first[j]``: the first row where the model was trained with it in view; the row before it,
where present, is the model's accuracy before that step (forward transfer).

Definitions (Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS
2017; forgetting as Chaudhry et al., "Riemannian Walk for Incremental Learning", ECCV 2018),
with ``T`` the last row:

- average accuracy ``ACC = mean_j R[T][j]`` over the sets evaluated after the last step;
- forgetting of an earlier set ``j``: ``max_{first[j] <= l < T} R[l][j] - R[T][j]``, the largest
  drop from the best accuracy it ever had (``forgetting``: their mean over the earlier sets);
- backward transfer ``BWT = mean_j (R[T][j] - R[first[j]][j])`` over the earlier sets
  (negative: forgetting);
- forward transfer ``FWT = mean_j (R[first[j] - 1][j] - b[j])`` over the sets whose row before
  introduction was measured, ``b[j]`` a reference accuracy without training on anything
  (Lopez-Paz & Ranzato use a random-init model; we take the caller's ``baseline``, by default
  the majority-class share of each set); ``None`` where no such entry exists.
"""
from __future__ import annotations

from collections.abc import Sequence

Matrix = Sequence[Sequence[float | None]]


def _cell(R: Matrix, i: int, j: int) -> float | None:
    return R[i][j] if 0 <= i < len(R) and j < len(R[i]) else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def continual_metrics(R: Matrix, first: Sequence[int], baseline: Sequence[float | None] | None = None
                      ) -> dict[str, object]:
    """The summary of accuracy matrix ``R`` (rows: after step ``i``; columns: test set ``j``).

    Args:
        R: ``T+1`` rows, each as long as the columns known then (shorter rows are padded with ``None``).
        first: for each column ``j``, the row where its set was first trained on (``0``: the root).
        baseline: for each column, the reference accuracy ``b[j]`` of forward transfer.

    Returns:
        ``average_accuracy``, ``forgetting`` (mean) and ``forgetting_per_set`` (``None`` for
        the sets of the last step), ``backward_transfer``, ``forward_transfer`` (each ``None`` when
        undefined), ``steps`` (``T + 1``) and ``n_sets``.

    Raises:
        ValueError: ``first`` names a row outside ``R``.
    """
    if not R:
        raise ValueError("an accuracy matrix needs at least one row")
    T, n = len(R) - 1, len(first)
    if any(not 0 <= f <= T for f in first):
        raise ValueError(f"first must name rows 0..{T}, got {list(first)}")
    last = [_cell(R, T, j) for j in range(n)]
    forgetting: list[float | None] = []
    bwt: list[float] = []
    for j in range(n):
        if first[j] >= T or last[j] is None:
            forgetting.append(None)
            continue
        before = [v for v in (_cell(R, i, j) for i in range(first[j], T)) if v is not None]
        forgetting.append(max(before) - last[j] if before else None)
        at_first = _cell(R, first[j], j)
        if at_first is not None:
            bwt.append(last[j] - at_first)
    fwt = []
    for j in range(n):
        prior = _cell(R, first[j] - 1, j) if first[j] > 0 else None
        b = baseline[j] if baseline is not None and j < len(baseline) else None
        if prior is not None and b is not None:
            fwt.append(prior - b)
    return {"average_accuracy": _mean([v for v in last if v is not None]),
            "forgetting": _mean([f for f in forgetting if f is not None]),
            "forgetting_per_set": forgetting,
            "backward_transfer": _mean(bwt),
            "forward_transfer": _mean(fwt),
            "steps": T + 1, "n_sets": n}


def square(R: Matrix, n_cols: int) -> list[list[float | None]]:
    """``R`` with every row padded with ``None`` to ``n_cols`` columns (what metrics.json stores)."""
    return [list(row) + [None] * (n_cols - len(row)) for row in R]
