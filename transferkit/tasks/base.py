"""The task contract: what a label is, how outputs are decided and scored, and the verdict.

A task is a stateless object registered in :data:`TASKS`; :func:`get_task` returns it.  Its
metrics carry percentile-bootstrap intervals over the test items, and its verdict compares the
transfer model with the best control on the task's primary metric with a paired bootstrap:
every model is scored on the same resamples, so the item-to-item difficulty they share cancels.

Resamples are drawn by :func:`transferkit.evaluation._boot_indices` (the classification
metrics' own generator, same seed, same resamples) and turned into a ``(B, N)`` matrix of
multiplicities, so every statistic is a weighted sum, one matrix product for all replicates.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, ClassVar, Iterator, NamedTuple

import numpy as np

from .._registry import Registry
from ..errors import UserInputError
from ..evaluation import _boot_indices, _interval

#: The tasks, by name (``classification``, ``regression``, ``multi-label``).
TASKS: Registry = Registry("task")


class Outputs(NamedTuple):
    """One model's test outputs for :meth:`Task.verdict`.

    Attributes:
        values: classification ``(N, C)`` probabilities; regression ``(N,)`` values in the
            target's units; multi-label ``(N, L)`` per-label probabilities.
        thresholds: multi-label ``(L,)`` decision thresholds (None: 0.5 for every label).
        about: what the report says of how the model was made (a control's chosen features:
            ``{"features": "word 1-2-grams + char 2-5-grams"}``); ``None``: nothing.
    """

    values: np.ndarray
    thresholds: np.ndarray | None = None
    about: dict | None = None


def get_task(name: str) -> "Task":
    """The registered task called ``name``; an unknown name is a UserInputError listing the known ones."""
    return TASKS.get(name)


def boot_counts(n: int, n_boot: int, seed: int, confidence: float) -> Iterator[np.ndarray]:
    """Yields ``(b, n)`` float multiplicities of the items in each resample, b summing to n_boot.

    Row ``r`` counts how often each item was drawn in replicate ``r``; the draws are those of
    ``evaluation._boot_indices`` (same seed: same resamples as the classification metrics).
    """
    for idx in _boot_indices(n, n_boot, seed, confidence):
        b = len(idx)
        keys = (idx + (np.arange(b) * n)[:, None]).ravel()
        yield np.bincount(keys, minlength=b * n).reshape(b, n).astype(np.float64)


def bootstrap(stat: Callable[[np.ndarray], Any], n: int, n_boot: int, seed: int,
              confidence: float) -> tuple[Any, list]:
    """Point value and percentile interval of every statistic ``stat`` returns.

    Args:
        stat: ``counts (b, n) -> array (b, ...)`` or a tuple of such arrays, one value per row.
            The point estimate is ``stat`` of a single row of ones (every item once).
        n, n_boot, seed, confidence: the bootstrap.

    Returns:
        ``(point, intervals)``: ``point`` as ``stat`` returns it for one row (row dropped),
        ``intervals`` one ``(2, ...)`` array per statistic.  NaN replicates (a statistic
        undefined on that resample) are left out of the interval; an interval with no defined
        replicate is NaN.
    """
    one = stat(np.ones((1, n)))
    single = not isinstance(one, tuple)
    point = tuple(np.asarray(s)[0] for s in ((one,) if single else one))
    parts: list[list[np.ndarray]] = [[] for _ in point]
    for counts in boot_counts(n, n_boot, seed, confidence):
        out = stat(counts)
        for acc, s in zip(parts, (out,) if single else out):
            acc.append(np.asarray(s, dtype=np.float64))
    intervals = [_nan_interval(np.concatenate(acc), confidence) for acc in parts]
    return (point[0] if single else point), intervals


def _nan_interval(samples: np.ndarray, confidence: float) -> np.ndarray:
    if not np.isnan(samples).any():
        return _interval(samples, confidence)
    alpha = 1.0 - confidence
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice": an undefined interval is NaN
        return np.nanpercentile(samples, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)


def json_float(x: Any) -> float | None:
    """A float for metrics.json: NaN (undefined) becomes None, which JSON can hold."""
    x = float(x)
    return None if np.isnan(x) else x


def json_interval(ci: np.ndarray) -> list[float | None] | None:
    lo, hi = (json_float(v) for v in ci)
    return None if lo is None and hi is None else [lo, hi]


class Task:
    """A prediction task: label encoding, decisions, metrics and the transfer verdict.

    Subclasses set the class attributes and implement :meth:`encode`, :meth:`decide`,
    :meth:`metrics`, plus the hooks of the generic :meth:`verdict` (:meth:`_primary_stat`,
    :meth:`_same`, :meth:`_compare`, :meth:`_ci_text`).
    """

    name: ClassVar[str]
    primary: ClassVar[str]
    higher_is_better: ClassVar[bool]
    #: how the primary metric is named in sentences ("accuracy", "RMSE", "micro-F1")
    primary_label: ClassVar[str]

    def encode(self, labels: list, classes: list[str]) -> np.ndarray:
        raise NotImplementedError

    def decide(self, outputs: np.ndarray, thresholds: np.ndarray | None = None, *,
               classes: list[str] | None = None) -> list:
        raise NotImplementedError

    def metrics(self, y: np.ndarray, outputs: np.ndarray, classes: list[str], *,
                thresholds: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
                confidence: float = 0.95) -> dict:
        raise NotImplementedError

    # -- the verdict ---------------------------------------------------------------------------------

    def _primary_stat(self, y: np.ndarray, outputs: Outputs) -> Callable[[np.ndarray], np.ndarray]:
        """``counts (b, N) -> (b,)``: the primary metric of ``outputs`` on each resample."""
        raise NotImplementedError

    def _same(self, y: np.ndarray, a: Outputs, b: Outputs) -> bool:
        """Whether two models make the same decision on every test item."""
        raise NotImplementedError

    def _compare(self, gain: float, best: str) -> str:
        """A gain (> 0: transfer better) against control ``best`` as words, e.g. "+3.1 points of
        micro-F1 over the best control (tfidf)" or "RMSE 0.41 lower than the best control (mean)"."""
        raise NotImplementedError

    def _ci_text(self, lo: float, hi: float, confidence: float) -> str:
        """The gain's interval as words, e.g. "95% CI [+1.2, +5.0] points"."""
        raise NotImplementedError

    def verdict(self, y: np.ndarray, transfer: Outputs, controls: dict[str, Outputs], *,
                n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
        """Did transfer help? The transfer model against the best control, on the primary metric.

        The best control is the best by the primary metric on the test set (ties: the first in
        ``controls`` order), which favours the control: the comparison is conservative, against
        transfer.  Gains are signed so that > 0 means transfer is better (for a lower-is-better
        metric, control minus transfer).  "helped" if the whole paired-bootstrap interval of the
        gain is above 0, "hurt" if wholly below, else "no-difference".

        Args:
            y: the task's encoded test labels (``encode``).
            transfer: the transfer model's outputs.
            controls: control name -> outputs; at least one.

        Returns:
            ``{"metric", "control": {"name", <primary>}, "controls": {name: {<primary>, "gain",
            "gain_ci"}}, "transfer_gain", "transfer_gain_ci", "verdict", "explanation",
            "confidence"}``.
        """
        if not controls:
            raise ValueError("verdict needs at least one control")
        n = len(y)
        if n == 0:
            raise ValueError("cannot compare on an empty test set")
        names = [str(k) for k in controls]
        stats = [self._primary_stat(y, transfer)] + [self._primary_stat(y, o) for o in controls.values()]
        sign = 1.0 if self.higher_is_better else -1.0

        def all_stats(counts: np.ndarray) -> tuple[np.ndarray, ...]:
            values = [s(counts) for s in stats]
            return tuple(values) + tuple(sign * (values[0] - v) for v in values[1:])

        point, cis = bootstrap(all_stats, n, n_boot, seed, confidence)
        k = len(names)
        values, gains, gain_cis = point[1:k + 1], point[k + 1:], cis[k + 1:]
        table = {name: {self.primary: float(values[i]), "gain": float(gains[i]), "gain_ci": gain_cis[i].tolist()}
                 for i, name in enumerate(names)}
        pick = max if self.higher_is_better else min  # both keep the first of equal keys
        best = pick(names, key=lambda m: table[m][self.primary])
        gain, (lo, hi) = table[best]["gain"], table[best]["gain_ci"]
        ci, versus = self._ci_text(lo, hi, confidence), self._compare(gain, best)
        if lo > 0:
            verdict = "helped"
            explanation = f"Transfer helped: {versus}, {ci}."
        elif hi < 0:
            verdict = "hurt"
            explanation = (f"Transfer hurt (negative transfer): {versus}, {ci}; the control alone does better "
                           f"on this data.")
        elif self._same(y, transfer, controls[list(controls)[names.index(best)]]):
            verdict = "no-difference"
            explanation = (f"Transfer made no difference: the transfer model and the best control ({best}) "
                           f"make the same prediction for every test item ({ci}).")
        else:
            verdict = "no-difference"
            explanation = (f"No clear difference: {versus}, but the {ci} includes zero: any real difference is "
                           f"too small for this test set to detect, so transfer neither clearly helped nor "
                           f"clearly hurt.")
        return {"metric": self.primary, "control": {"name": best, self.primary: table[best][self.primary]},
                "controls": table, "transfer_gain": gain, "transfer_gain_ci": [lo, hi], "verdict": verdict,
                "explanation": explanation, "confidence": float(confidence)}


def check_length(y: np.ndarray, outputs: np.ndarray) -> None:
    if len(y) != len(outputs):
        raise ValueError(f"y has {len(y)} items but outputs has {len(outputs)} rows")
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty test set")


def unknown_labels_error(unknown: list[str], classes: list[str]) -> UserInputError:
    shown = ", ".join(repr(u) for u in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
    return UserInputError(f"labels not seen in training: {shown} (the model knows {len(classes)}: "
                          f"{', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''})",
                          hint="every label to evaluate must occur in the training set; leave out those items or "
                               "retrain with them")
