"""``lp-ft``: a linear probe first, then fine-tuning from the probe's head.

Kumar, Raghunathan, Jones, Ma & Liang, "Fine-Tuning can Distort Pretrained Features and
Underperform Out-of-Distribution", ICLR 2022: with a random head, the large early gradients
of fine-tuning change the pre-trained features to fit that head, and the model generalises
worse out of distribution.  Starting from a good head (the linear probe's) the gradients into
the backbone are small from the first step, so the features move less; a small learning rate
for the whole network keeps it that way.

Stage 1 is :func:`~transferkit.strategies.probe.fit_logistic` on features of the frozen
pre-trained backbone, through ``ctx.features`` (the on-disk cache serves them when the probe,
a score or an earlier run already computed them).  Its scaler is folded into ``W (C, D)`` and
``b (C,)`` acting on raw pooled features, which is exactly what the fine-tuning head sees.
Stage 2 is :class:`~transferkit.strategies.finetune.FineTune` from that head.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.dataset import Dataset
from .base import STRATEGIES, TransferContext
from .finetune import FineTune, FineTuneParams
from .params import param
from .probe import fit_logistic

PROBE_MAX_ITER = 2000


def _accuracy(X: np.ndarray, W: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    return float(((X @ W.T + b).argmax(1) == y).mean())


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
    ``W (C, D)``, ``b (C,)``, copied into the head ``Linear(D, C)``; then as :class:`FineTune`.
    The probe sees only the part of the training data that fine-tuning trains on; its accuracy
    there and on the validation split, and its ``C``, are in ``fit_info()["probe"]``.

    Options: :class:`LPFTParams`.
    """

    name = "lp-ft"
    description = ("linear probe on cached features, then fine-tuning from its head with a small LR "
                   "(Kumar et al., ICLR 2022)")
    Params = LPFTParams
    new_head = False

    def _before_training(self, model: nn.ModuleDict, fit_ds: Dataset, val_ds: Dataset | None,
                         ctx: TransferContext) -> None:
        """Stage 1: fit the probe on frozen features and make it the head (before any resume,
        which then replaces the head with the checkpoint's: the probe is deterministic)."""
        index = {c: i for i, c in enumerate(self.classes_)}
        y = np.array([index[c] for c in fit_ds.labels])
        model["backbone"].eval()  # the cache holds eval-mode features; compute any missing ones the same way
        X = ctx.features(fit_ds).astype(np.float64)
        W, b, info = fit_logistic(X, y, Cs=tuple(float(c) for c in self.probe_Cs), cv=self.probe_cv,
                                  max_iter=PROBE_MAX_ITER, seed=ctx.seed, class_weight=self.loss_weight_)
        head = model["head"]
        with torch.no_grad():
            head.weight.copy_(torch.as_tensor(W, dtype=head.weight.dtype))
            head.bias.copy_(torch.as_tensor(b, dtype=head.bias.dtype))
        self.probe_ = {"C": info["C"], "cv_folds": info.get("cv_folds", 0), "converged": info["converged"],
                       "fit_accuracy": _accuracy(X, W, b, y), "val_accuracy": None}
        if val_ds is not None:
            Xv = ctx.features(val_ds).astype(np.float64)
            self.probe_["val_accuracy"] = _accuracy(Xv, W, b, np.array([index[c] for c in val_ds.labels]))

    def _fit(self, train_ds: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        super()._fit(train_ds, y, ctx)
        self.info_["probe"] = dict(self.probe_)
