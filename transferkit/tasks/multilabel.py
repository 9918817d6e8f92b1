"""Multi-label: a set of labels per item, decided per label by a threshold on its probability.

Metrics: micro- and macro-F1, subset accuracy, Hamming loss and mean average precision, each
with a percentile-bootstrap interval; micro-F1 is the primary metric.  Conventions follow
scikit-learn: undefined ratios are 0 (``zero_division=0``); macro-F1 averages the labels present
in the truth or the predictions (``zero_division=np.nan``, the classification metrics' rule);
average precision is defined for labels with a positive test item, and their mean is the mAP.
"""
from __future__ import annotations

import warnings

import numpy as np

from .base import TASKS, Outputs, Task, bootstrap, check_length, json_float, json_interval, unknown_labels_error


def _points(x: float) -> str:
    r = round(100 * x, 1)
    return f"{r + 0.0:+.1f}" if r != 0 else "+0.0"


class MultiLabel(Task):
    """Any non-empty set of labels per item.  Labels: sorted ``tuple[str, ...]``; encoded
    ``(N, L)`` uint8 indicators in ``classes`` order; outputs ``(N, L)`` per-label
    probabilities, label ``j`` predicted when ``p >= thresholds[j]`` (0.5 by default)."""

    name = "multi-label"
    primary = "micro_f1"
    higher_is_better = True
    primary_label = "micro-F1"

    def encode(self, labels: list, classes: list[str]) -> np.ndarray:
        index = {c: j for j, c in enumerate(classes)}
        out = np.zeros((len(labels), len(classes)), dtype=np.uint8)
        unknown: set[str] = set()
        for i, names in enumerate(labels):
            if isinstance(names, str):
                raise ValueError(f"item {i + 1}: a multi-label label is a tuple of names, got the string {names!r}")
            for name in names:
                if name in index:
                    out[i, index[name]] = 1
                else:
                    unknown.add(str(name))
        if unknown:
            raise unknown_labels_error(sorted(unknown), list(classes))
        return out

    @staticmethod
    def _thresholds(thresholds: np.ndarray | None, n_labels: int) -> np.ndarray:
        if thresholds is None:
            return np.full(n_labels, 0.5)
        t = np.asarray(thresholds, dtype=np.float64)
        if t.shape != (n_labels,) or not np.all((t >= 0) & (t <= 1)):
            raise ValueError(f"thresholds must be ({n_labels},) values in [0, 1], got shape {t.shape}")
        return t

    def _check(self, outputs: np.ndarray, n_labels: int | None = None) -> np.ndarray:
        p = np.asarray(outputs, dtype=np.float64)
        if p.ndim != 2 or (n_labels is not None and p.shape[1] != n_labels):
            raise ValueError(f"multi-label outputs must be (N, L={n_labels}) probabilities, got shape {p.shape}")
        if not (np.all(np.isfinite(p)) and p.min(initial=0) >= 0 and p.max(initial=0) <= 1):
            raise ValueError("multi-label outputs must be probabilities in [0, 1] (pass sigmoids, not logits)")
        return p

    def predicted(self, outputs: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        """``(N, L)`` uint8: which labels are predicted (``p >= threshold``)."""
        p = self._check(outputs)
        return (p >= self._thresholds(thresholds, p.shape[1])).astype(np.uint8)

    def decide(self, outputs: np.ndarray, thresholds: np.ndarray | None = None, *,
               classes: list[str] | None = None) -> list[tuple[str, ...]]:
        """The predicted label names of each item (in ``classes`` order, possibly empty)."""
        if classes is None:
            raise ValueError("multi-label decides label names: pass classes=")
        pred = self.predicted(outputs, thresholds)
        if pred.shape[1] != len(classes):
            raise ValueError(f"outputs have {pred.shape[1]} columns but {len(classes)} labels were given")
        return [tuple(classes[j] for j in np.flatnonzero(row)) for row in pred]

    def metrics(self, y: np.ndarray, outputs: np.ndarray, classes: list[str], *,
                thresholds: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
                confidence: float = 0.95) -> dict:
        """Test metrics of a multi-label model, with percentile-bootstrap intervals over test items.

        Args:
            y: ``(N, L)`` 0/1 truth (``encode``).
            outputs: ``(N, L)`` per-label probabilities.
            classes: the ``L`` label names, in column order.
            thresholds: ``(L,)`` decision thresholds (None: 0.5).

        Returns:
            ``{"n", "micro_f1", "micro_f1_ci", "macro_f1", "macro_f1_ci", "subset_accuracy",
            "subset_accuracy_ci", "hamming_loss", "hamming_loss_ci", "map", "map_ci", "per_label",
            "labels", "n_boot", "confidence"}``; ``per_label[name]`` has ``precision``,
            ``recall``, ``f1``, ``support``, ``threshold`` and ``ap`` (None without a positive
            test item; ``map`` is None when no label has one).
        """
        Y = np.asarray(y)
        p = self._check(outputs, len(classes))
        if Y.shape != p.shape:
            raise ValueError(f"y has shape {Y.shape} but outputs {p.shape}")
        check_length(Y, p)
        t = self._thresholds(thresholds, len(classes))
        Y = (Y > 0).astype(np.float64)
        P = (p >= t).astype(np.float64)
        n, n_labels = Y.shape
        hit, exact, wrong = Y * P, (Y == P).all(axis=1).astype(np.float64), (Y != P).mean(axis=1)
        ranked = [self._ranking(Y[:, j], p[:, j]) for j in range(n_labels) if Y[:, j].any()]

        def stat(counts: np.ndarray) -> tuple[np.ndarray, ...]:
            tp, sup, pre = counts @ hit, counts @ Y, counts @ P  # (b, L)
            micro, _, f1 = _f1(tp, sup, pre)
            present = (sup + pre) > 0
            with np.errstate(invalid="ignore"):
                macro = np.where(present.any(axis=1), (f1 * present).sum(axis=1) / present.sum(axis=1), 0.0)
            c32 = counts.astype(np.float32)
            aps = np.stack([_average_precision(c32, *r) for r in ranked], axis=1) if ranked else \
                np.full((len(counts), 1), np.nan)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # no label with a positive in a resample: NaN
                mean_ap = np.nanmean(aps, axis=1)
            return micro, macro, counts @ exact / n, counts @ wrong / n, mean_ap

        (micro, macro, subset, hamming, mean_ap), cis = bootstrap(stat, n, n_boot, seed, confidence)
        tp, sup, pre = hit.sum(axis=0), Y.sum(axis=0), P.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision, recall = np.where(pre > 0, tp / pre, 0.0), np.where(sup > 0, tp / sup, 0.0)
        _, _, f1 = _f1(tp[None], sup[None], pre[None])
        ap = {j: float(_average_precision(np.ones((1, n), np.float32), *self._ranking(Y[:, j], p[:, j]))[0])
              for j in range(n_labels) if sup[j] > 0}
        per_label = {
            str(name): {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[0, j]),
                        "support": int(sup[j]), "threshold": float(t[j]), "ap": ap.get(j)}
            for j, name in enumerate(classes)
        }
        return {
            "n": int(n),
            "micro_f1": float(micro), "micro_f1_ci": cis[0].tolist(),
            "macro_f1": float(macro), "macro_f1_ci": cis[1].tolist(),
            "subset_accuracy": float(subset), "subset_accuracy_ci": cis[2].tolist(),
            "hamming_loss": float(hamming), "hamming_loss_ci": cis[3].tolist(),
            "map": json_float(mean_ap), "map_ci": json_interval(cis[4]),
            "per_label": per_label, "labels": [str(c) for c in classes],
            "n_boot": int(n_boot), "confidence": float(confidence),
        }

    @staticmethod
    def _ranking(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, ...]:
        """Indices for :func:`_average_precision` of one label with a positive item.

        Returns:
            ``order (N,)``: items by descending score; ``positives (P,)``: the positions of the
            positive items in that order; ``kept_at (G,)``: the last position of each run of
            equal scores that holds a positive (the thresholds where recall rises); ``hits_at
            (G,)``: the number of positives up to each of those positions, minus one.
        """
        order = np.argsort(-p, kind="stable")
        ps, hits = p[order], np.cumsum(y[order])
        ends = np.flatnonzero(np.r_[ps[:-1] != ps[1:], True])
        kept_at = ends[np.diff(hits[ends], prepend=0) > 0]
        return order, np.flatnonzero(y[order]), kept_at, (hits[kept_at] - 1).astype(np.int64)

    def _primary_stat(self, y: np.ndarray, outputs: Outputs):
        Y = (np.asarray(y) > 0).astype(np.float64)
        P = self.predicted(outputs.values, outputs.thresholds).astype(np.float64)
        if Y.shape != P.shape:
            raise ValueError(f"y has shape {Y.shape} but outputs {P.shape}")
        hit = Y * P
        return lambda counts: _f1(counts @ hit, counts @ Y, counts @ P)[0]

    def _same(self, y: np.ndarray, a: Outputs, b: Outputs) -> bool:
        return bool(np.array_equal(self.predicted(a.values, a.thresholds), self.predicted(b.values, b.thresholds)))

    def _compare(self, gain: float, best: str) -> str:
        return f"{_points(gain)} points of micro-F1 {'over' if gain >= 0 else 'against'} the best control ({best})"

    def _ci_text(self, lo: float, hi: float, confidence: float) -> str:
        return f"{100 * confidence:g}% CI [{_points(lo)}, {_points(hi)}]"


def _f1(tp: np.ndarray, sup: np.ndarray, pre: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From ``(b, L)`` counts: micro-F1 ``(b,)``, its denominator ``(b,)`` and per-label F1 ``(b, L)``;
    0 where undefined (``zero_division=0``)."""
    denom = sup.sum(axis=1) + pre.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        micro = np.where(denom > 0, 2 * tp.sum(axis=1) / denom, 0.0)
        f1 = np.where(sup + pre > 0, 2 * tp / (sup + pre), 0.0)
    return micro, denom, f1


def _average_precision(counts: np.ndarray, order: np.ndarray, positives: np.ndarray, kept_at: np.ndarray,
                       hits_at: np.ndarray) -> np.ndarray:
    """Average precision of one label in each resample ``(b,)``, as scikit-learn defines it:
    ``sum_k (R_k - R_{k-1}) P_k`` over the distinct scores, descending; NaN without a positive.

    Only runs of equal scores that hold a positive raise recall, so only they are summed (see
    :meth:`MultiLabel._ranking` for the indices).  Pass float32 counts: exact for integers up
    to 2**24, and half the memory traffic of the cumulative sums.
    """
    c = counts[:, order]
    kept = np.cumsum(c, axis=1)[:, kept_at].astype(np.float64)  # resampled items scored >= each run
    tp = np.cumsum(c[:, positives], axis=1)[:, hits_at].astype(np.float64)  # ... of which positive
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(kept > 0, tp / kept, 0.0)
        total = tp[:, -1]
        gained = np.diff(tp, axis=1, prepend=0.0)
        return np.where(total > 0, (gained * precision).sum(axis=1) / total, np.nan)


MULTI_LABEL = TASKS.register("multi-label")(MultiLabel())
