"""``l2sp``: fine-tuning regularised towards the starting point, not towards zero.

Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional
Networks", ICML 2018.  Weight decay pulls every weight towards 0, which for a pre-trained
backbone means towards forgetting; L2-SP pulls the backbone towards its pre-trained weights
``w0`` instead and keeps plain L2 for the new head::

    loss = task loss + alpha / 2 * ||w - w0||^2 + beta / 2 * ||w_head||^2

The penalty replaces weight decay (``weight_decay`` defaults to 0 here).  ``w0`` is a copy kept
beside the model, not in it: checkpoints hold only what training changes, and a resumed run
takes ``w0`` again from the freshly loaded backbone, which is bitwise the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..data.dataset import Dataset
from ..training.callbacks import Callback
from .base import STRATEGIES, TransferContext
from .finetune import FineTune, FineTuneParams
from .params import param

Anchors = Sequence[tuple[nn.Parameter, torch.Tensor]]


def l2sp_terms(anchors: Anchors, head: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The two squared norms of L2-SP, differentiable.

    Args:
        anchors: ``(w, w0)`` pairs: a trainable backbone parameter and its starting value
            (same shape).
        head: the new layer (or a ``ModuleDict`` of one per task); all of its parameters (weight
            ``(K, D)`` and bias ``(K,)``) count.

    Returns:
        ``||w - w0||^2`` summed over the anchors, and ``||w_head||^2``; scalars (float32 or wider).
    """
    head_sq = sum((p.float() ** 2).sum() for p in head.parameters())
    if not anchors:
        return torch.zeros((), device=head_sq.device), head_sq
    sp_sq = sum(((w.float() - w0.float()) ** 2).sum() for w, w0 in anchors)
    return sp_sq, head_sq


class LogDistance(Callback):
    """Adds ``alpha / 2 * ||w - w0||^2`` at each epoch end to the logs (``l2sp``), for the history."""

    def __init__(self, terms: Callable[[], tuple[torch.Tensor, torch.Tensor]], alpha: float):
        self.terms, self.alpha = terms, alpha

    def on_epoch_end(self, state, logs: dict[str, Any]) -> None:
        with torch.no_grad():
            logs["l2sp"] = float(self.alpha / 2 * self.terms()[0])


@dataclass
class L2SPParams(FineTuneParams):
    """:class:`FineTuneParams` plus the two strengths of the penalty, which replaces weight decay."""

    alpha: float = param(0.01, "strength of the pull towards the starting weights (paper: 0.01 to 0.1)",
                         ge=0, lt=float("inf"))
    beta: float = param(0.01, "plain L2 strength on the head (paper: 0.01)", ge=0, lt=float("inf"))
    weight_decay: float = param(0.0, "decoupled weight decay on top of the penalty; 0, as the penalty replaces it",
                                ge=0)


@STRATEGIES.register("l2sp", needs="backbone",
                     summary="fine-tuning with an L2-SP penalty towards the pre-trained weights "
                             "(Li et al., ICML 2018)")
class L2SPFineTune(FineTune):
    """Fine-tuning with the L2-SP penalty.

    Data: labelled items of any modality, every task of :class:`FineTune`. Shapes as
    :class:`FineTune`: items -> features ``(B, D)`` -> head ``Linear(D, K)``. The penalty covers
    every trainable backbone parameter (the groups chosen by ``unfreeze``; frozen ones cannot
    move) and the head (every task's head in a joint fit).

    On the random-init control, ``w0`` is the random initialisation: the same recipe, whose
    prior then says nothing about the task; that is what the control measures.

    Options: :class:`L2SPParams`.
    """

    name = "l2sp"
    description = "fine-tuning with an L2-SP penalty towards the pre-trained weights (Li et al., ICML 2018)"
    Params = L2SPParams

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._anchors: list[tuple[nn.Parameter, torch.Tensor]] = []
        self._head: nn.Module | None = None

    def _before_training(self, model: nn.ModuleDict, fit_ds: Dataset, val_ds: Dataset | None,
                         ctx: TransferContext) -> None:
        # Before any checkpoint is loaded: these are the weights the backbone was loaded with.
        self._anchors = [(p, p.detach().clone()) for p in model["backbone"].parameters() if p.requires_grad]
        self._head = model["head"]

    def penalty_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(||w - w0||^2, ||w_head||^2)`` of the run in progress (see :func:`l2sp_terms`)."""
        return l2sp_terms(self._anchors, self._head)

    def _extra_loss(self, model: nn.ModuleDict) -> torch.Tensor | None:
        sp_sq, head_sq = self.penalty_terms()
        return self.alpha / 2 * sp_sq + self.beta / 2 * head_sq

    def _callbacks(self, model: nn.ModuleDict, groups, chosen: set[str],
                   evaluate: Callable[[], dict[str, float]] | None) -> list[Callback]:
        return [*super()._callbacks(model, groups, chosen, evaluate), LogDistance(self.penalty_terms, self.alpha)]

    def _fit(self, train_ds: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        try:
            super()._fit(train_ds, y, ctx)
            with torch.no_grad():
                sp_sq, head_sq = self.penalty_terms()
            self.info_.update(l2sp_distance=float(sp_sq) ** 0.5, head_norm=float(head_sq) ** 0.5)
        finally:  # the copy of w0 is as large as the trained part of the backbone: let it go
            self._anchors, self._head = [], None
