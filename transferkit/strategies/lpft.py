"""``lp-ft``: a linear probe first, then fine-tuning from the probe's head.

Kumar, Raghunathan, Jones, Ma & Liang, "Fine-Tuning can Distort Pretrained Features and
Underperform Out-of-Distribution", ICLR 2022: with a random head, the large early gradients
of fine-tuning change the pre-trained features to fit that head, and the model generalises
worse out of distribution.  Starting from a good head (the linear probe's) the gradients into
the backbone are small from the first step, so the features move less; a small learning rate
for the whole network keeps it that way.

Stage 1 is the task's linear probe (:func:`~transferkit.tasks.linear.fit_logistic`; for
regression and multi-label :func:`~transferkit.tasks.linear.fit_linear`) on features of the frozen
pre-trained backbone, through ``ctx.features`` (the on-disk cache serves them when the probe,
a score or an earlier run already computed them).  Its scaler is folded into ``W (K, D)`` and
``b (K,)`` acting on raw pooled features, which is exactly what the fine-tuning head sees.
Stage 2 is :class:`~transferkit.strategies.finetune.FineTune` from that head.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.dataset import Dataset
from ..tasks.linear import LinearFit, fit_linear, fit_logistic, linear_outputs
from .base import STRATEGIES, TransferContext
from .finetune import FineTune, FineTuneParams
from .params import param

PROBE_MAX_ITER = 2000


def _accuracy(X: np.ndarray, W: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    return float(((X @ W.T + b).argmax(1) == y).mean())


def _probe_facts(task: str, fit: LinearFit, X: np.ndarray, y: np.ndarray, Xv: np.ndarray | None,
                 y_val: np.ndarray | None, unit) -> dict:
    """What ``fit_info()["probe"]`` reports of a regression or multi-label probe: its choice of
    regularisation and its validation metric on the fit and validation parts."""
    facts = {k: fit.info[k] for k in ("alpha", "converged") if k in fit.info}
    metric = unit.metric
    facts[f"fit_{metric}"] = unit.scores(linear_outputs(task, X, fit), y)[metric]
    facts[f"val_{metric}"] = None if Xv is None else unit.scores(linear_outputs(task, Xv, fit), y_val)[metric]
    return facts


@dataclass
class LPFTParams(FineTuneParams):
    """:class:`FineTuneParams` with one small rate for the whole network, and the probe's options."""

    lr: float = param(1e-5, "rate of the top backbone group in stage 2 (smaller than finetune's)", gt=0, lt=1)
    head_lr: float = param(1e-5, "rate of the head in stage 2: it starts trained, so the backbone's rate, "
                                 "as in the paper", gt=0, lt=1)
    scratch_lr: float | None = param(None, "null: the random-init control (its head also the probe) trains at "
                                           "lr / head_lr like the transfer run", gt=0, lt=1)
    probe_Cs: list[float] = param([1e-3, 1e-2, 1e-1, 1.0, 10.0], "inverse L2 strengths tried by the probe's "
                                                                 "cross-validation", gt=0)
    probe_cv: int = param(5, "folds of that cross-validation", ge=2)


@STRATEGIES.register("lp-ft", needs="backbone",
                     summary="linear probe on cached features, then fine-tune from its head with a small LR "
                             "(Kumar et al., ICLR 2022)")
class LinearProbeFineTune(FineTune):
    """LP-FT: fine-tuning whose head starts as the cross-validated linear probe.

    Data: labelled items of any modality. Shapes: cached features ``(N, D)`` -> probe
    ``W (K, D)``, ``b (K,)``, copied into the head ``Linear(D, K)``; then as :class:`FineTune`.
    The probe is the task's (:func:`~transferkit.tasks.linear.fit_linear`): logistic regression,
    ridge (its weights put back on the standardised target the head trains on), or one logistic
    regression per label; in a joint fit, one per task.  The probe sees only the part of the
    training data that fine-tuning trains on; its regularisation and its score there and on the
    validation split are in ``fit_info()["probe"]``.

    Options: :class:`LPFTParams`.
    """

    name = "lp-ft"
    description = ("linear probe on cached features, then fine-tuning from its head with a small LR "
                   "(Kumar et al., ICLR 2022)")
    Params = LPFTParams
    new_head = False

    def _before_training(self, model: nn.ModuleDict, fit_ds: Dataset, val_ds: Dataset | None,
                         ctx: TransferContext) -> None:
        """Stage 1: fit each task's probe on frozen features and make it that task's head (before
        any resume, which then replaces the heads with the checkpoint's: the probe is deterministic)."""
        model["backbone"].eval()  # the cache holds eval-mode features; compute any missing ones the same way
        X = ctx.features(fit_ds).astype(np.float64)
        Xv = None if val_ds is None else ctx.features(val_ds).astype(np.float64)
        for run in self._runs:
            task, unit, y = run.unit.task, run.unit, run.y_fit
            if task == "classification":
                W, b, info = fit_logistic(X, y, Cs=tuple(float(c) for c in self.probe_Cs), cv=self.probe_cv,
                                          max_iter=PROBE_MAX_ITER, seed=ctx.seed, class_weight=unit.weights)
                facts = {"C": info["C"], "cv_folds": info.get("cv_folds", 0), "converged": info["converged"],
                         "fit_accuracy": _accuracy(X, W, b, y),
                         "val_accuracy": None if Xv is None else _accuracy(Xv, W, b, run.y_val)}
            else:
                options = {} if task == "regression" else {"Cs": tuple(float(c) for c in self.probe_Cs),
                                                           "cv": self.probe_cv, "max_iter": PROBE_MAX_ITER}
                fit = fit_linear(task, X, y, seed=ctx.seed, class_weight=unit.weights, **options)
                facts = _probe_facts(task, fit, X, y, Xv, run.y_val, unit)
                W, b = np.asarray(fit.W, np.float64), np.asarray(fit.b, np.float64)
                if task == "regression":  # the head learns (y - mean) / scale: undo the ridge's units
                    W, b = W / unit.scale, (b - unit.mean) / unit.scale
            head = run.head
            with torch.no_grad():
                head.weight.copy_(torch.as_tensor(W, dtype=head.weight.dtype))
                head.bias.copy_(torch.as_tensor(b, dtype=head.bias.dtype))
            run.facts["probe"] = facts
