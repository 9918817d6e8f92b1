"""Regression: one finite number per item, scored by RMSE (primary), MAE, R² and Spearman's rho."""
from __future__ import annotations

import numpy as np

from ..errors import UserInputError
from .base import TASKS, Outputs, Task, bootstrap, check_length, json_float, json_interval


def weighted_ranks(v: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The mid-rank each item has in each resample: ``v (N,)``, ``counts (B, N)`` -> ``(B, N)``.

    An item drawn k times is k tied copies; ties share the mean of their ranks (scipy's
    ``rankdata(method="average")`` of the resample).  With items sorted by value, the copies
    of a run of equal values sit after the ``before`` copies of smaller values, so their mid-rank
    is ``before + (copies + 1) / 2``: cumulative sums, no sort per resample.
    """
    order = np.argsort(v, kind="stable")
    vs = v[order]
    ends = np.flatnonzero(np.r_[vs[:-1] != vs[1:], True])  # last sorted position of each run of equal values
    group = np.repeat(np.arange(len(ends)), np.diff(np.r_[-1, ends]))
    cum = np.cumsum(counts[:, order], axis=1)[:, ends]
    before = np.concatenate([np.zeros((len(counts), 1)), cum[:, :-1]], axis=1)
    ranks = np.empty_like(counts, dtype=np.float64)
    ranks[:, order] = (before + (cum - before + 1) / 2)[:, group]
    return ranks


def _spearman(y: np.ndarray, pred: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Spearman's rho of each resample ``(B,)``; NaN where either side is constant."""
    mid = (counts.sum(axis=1, keepdims=True) + 1) / 2  # mean rank of every resample
    dy, dp = weighted_ranks(y, counts) - mid, weighted_ranks(pred, counts) - mid
    cov = (counts * dy * dp).sum(axis=1)
    var = (counts * dy * dy).sum(axis=1) * (counts * dp * dp).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(var > 0, cov / np.sqrt(var), np.nan)


class Regression(Task):
    """One number per item.  Labels: finite ``float``; encoded ``(N,)`` float64; outputs ``(N,)``
    predicted values in the target's units (they are the decision); primary metric RMSE (lower is
    better)."""

    name = "regression"
    primary = "rmse"
    higher_is_better = False
    primary_label = "RMSE"

    def encode(self, labels: list, classes: list[str]) -> np.ndarray:
        bad = []
        values = np.empty(len(labels), dtype=np.float64)
        for i, v in enumerate(labels):
            try:
                values[i] = float(v)
            except (TypeError, ValueError):
                values[i] = np.nan
            if not np.isfinite(values[i]):
                bad.append(f"item {i + 1}: {v!r}")
        if bad:
            raise UserInputError(f"regression targets must be finite numbers; {len(bad)} are not: "
                                 f"{'; '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}",
                                 hint="fix or leave out those items (or pass --skip-bad when reading the table)")
        return values

    def decide(self, outputs: np.ndarray, thresholds: np.ndarray | None = None, *,
               classes: list[str] | None = None) -> list[float]:
        """The predicted numbers of ``(N,)`` outputs, as Python floats."""
        if thresholds is not None:
            raise ValueError("thresholds are for multi-label outputs, not regression")
        return [float(v) for v in np.asarray(outputs, dtype=np.float64).reshape(-1)]

    @staticmethod
    def _check(y: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y, pred = np.asarray(y, dtype=np.float64), np.asarray(outputs, dtype=np.float64)
        if y.ndim != 1 or pred.ndim != 1:
            raise ValueError(f"regression y and outputs must be 1-D (N,), got {y.shape} and {pred.shape}")
        check_length(y, pred)
        if not (np.all(np.isfinite(y)) and np.all(np.isfinite(pred))):
            raise ValueError("regression targets and predictions must be finite")
        return y, pred

    def metrics(self, y: np.ndarray, outputs: np.ndarray, classes: list[str], *,
                thresholds: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
                confidence: float = 0.95) -> dict:
        """Test metrics of a regressor, with percentile-bootstrap intervals over test items.

        Args:
            y: ``(N,)`` true values.
            outputs: ``(N,)`` predictions, same units.
            classes: unused (``[]`` for regression).

        Returns:
            ``{"n", "rmse", "rmse_ci", "mae", "mae_ci", "r2", "r2_ci", "spearman", "spearman_ci",
            "target_mean", "target_std", "n_boot", "confidence"}``.  R² follows scikit-learn
            (``1 - SS_res / SS_tot``; 1 or 0 when the targets are constant); Spearman's rho is None
            when the predictions or the targets are constant (undefined), and its interval leaves
            out resamples where it is undefined.
        """
        if thresholds is not None:
            raise ValueError("thresholds are for multi-label outputs, not regression")
        y, pred = self._check(y, outputs)
        n = len(y)
        err, dev = pred - y, y - y.mean()
        sq, ab, dev2 = err * err, np.abs(err), dev * dev

        def stat(counts: np.ndarray) -> tuple[np.ndarray, ...]:
            sse, dy = counts @ sq, counts @ dev / n  # dy: the resample's mean minus y's mean
            ss_tot = counts @ dev2 - n * dy * dy  # centred on the resample's own mean
            with np.errstate(divide="ignore", invalid="ignore"):
                constant = ss_tot <= 1e-12 * (counts @ dev2 + 1e-300)
                r2 = np.where(constant, np.where(sse == 0, 1.0, 0.0), 1.0 - sse / ss_tot)
            return np.sqrt(sse / n), counts @ ab / n, r2, _spearman(y, pred, counts)

        (rmse, mae, r2, rho), cis = bootstrap(stat, n, n_boot, seed, confidence)
        return {
            "n": int(n),
            "rmse": float(rmse), "rmse_ci": cis[0].tolist(),
            "mae": float(mae), "mae_ci": cis[1].tolist(),
            "r2": float(r2), "r2_ci": cis[2].tolist(),
            "spearman": json_float(rho), "spearman_ci": json_interval(cis[3]),
            "target_mean": float(y.mean()), "target_std": float(y.std()),
            "n_boot": int(n_boot), "confidence": float(confidence),
        }

    def _primary_stat(self, y: np.ndarray, outputs: Outputs):
        y, pred = self._check(y, outputs.values)
        sq = (pred - y) ** 2
        return lambda counts: np.sqrt(counts @ sq / len(y))

    def _same(self, y: np.ndarray, a: Outputs, b: Outputs) -> bool:
        return bool(np.array_equal(np.asarray(a.values), np.asarray(b.values)))

    def _compare(self, gain: float, best: str) -> str:
        if gain == 0:
            return f"the same RMSE as the best control ({best})"
        return f"RMSE {abs(gain):.3g} {'lower' if gain > 0 else 'higher'} than the best control ({best})"

    def _ci_text(self, lo: float, hi: float, confidence: float) -> str:
        return f"{100 * confidence:g}% CI of the RMSE reduction [{lo:+.3g}, {hi:+.3g}] in the target's units"


REGRESSION = TASKS.register("regression")(Regression())
