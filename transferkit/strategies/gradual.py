"""``gradual``: ULMFiT's gradual unfreezing with slanted triangular learning rates.

Howard & Ruder, "Universal Language Model Fine-tuning for Text Classification", ACL 2018
(section 3.3): fine-tuning every layer at once risks catastrophic forgetting of the pre-trained
features while the new head is still random, so the head trains alone first and one more
layer group (from the top: the most task-specific) is unfrozen each epoch.  Their companions
come from :class:`~transferkit.strategies.finetune.FineTune`: discriminative rates (each group
``1 / 2.6`` of the one above, the paper's factor) and the slanted triangular schedule.

Which groups train is a function of the epoch alone (:class:`UnfreezeSchedule`), never of
mutable history, so a run resumed from a checkpoint unfreezes exactly what the uninterrupted
run did.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from torch import nn

from ..data.dataset import Dataset
from ..training.callbacks import Callback, EarlyStopping
from ..training.schedules import SCHEDULES
from .base import STRATEGIES, TransferContext
from .finetune import FineTune, FineTuneParams
from .params import param

Groups = list[tuple[str, list[nn.Parameter]]]


def unfrozen_at(order: list[str], epoch: int) -> list[str]:
    """Layer groups trained in ``epoch``: the top ``epoch`` of ``order`` (input side first).

    Epoch 0 trains the head only; the head is not a layer group and always trains.
    """
    return order[len(order) - min(max(epoch, 0), len(order)):]


class UnfreezeSchedule(Callback):
    """Sets ``requires_grad`` of the layer groups for the epoch about to run.

    All of ``groups`` are in the optimizer from the start; a frozen parameter has no gradient,
    so AdamW neither moves nor decays it and keeps no state for it until it unfreezes.

    Args:
        groups: the groups that will unfreeze over the run, input side first.
    """

    def __init__(self, groups: Groups):
        self.groups = groups
        self.order = [n for n, _ in groups]

    def apply(self, epoch: int) -> list[str]:
        on = set(unfrozen_at(self.order, epoch))
        for name, params in self.groups:
            for p in params:
                p.requires_grad_(name in on)
        return [n for n in self.order if n in on]

    def on_train_begin(self, state) -> None:
        self.apply(state.epoch)  # after a resume: the epoch the checkpoint says

    def on_epoch_end(self, state, logs: dict[str, Any]) -> None:
        logs["unfrozen_groups"] = len(unfrozen_at(self.order, state.epoch))
        # Runs after early stopping took its snapshot, and before the epoch's checkpoint: the
        # next epoch's groups include every group trained so far, so the checkpoint holds them.
        self.apply(state.epoch + 1)

    def on_train_end(self, state) -> None:
        # what really trained (the last epoch run): FineTune saves the tensors that require grad
        self.apply(state.epoch - 1)


class ExposeAll(Callback):
    """Marks every group of the schedule trainable just before early stopping takes its
    snapshot of the trainable state, so that restoring the best epoch also puts back the
    groups unfrozen after it (still at their pre-trained weights at the best epoch)."""

    def __init__(self, groups: Groups):
        self.groups = groups

    def on_epoch_end(self, state, logs: dict[str, Any]) -> None:
        for _, params in self.groups:
            for p in params:
                p.requires_grad_(True)


@dataclass
class GradualParams(FineTuneParams):
    """:class:`FineTuneParams` with the paper's schedule, factor and an epoch per group."""

    epochs: int | None = param(None, "passes over the training data; one more layer group unfreezes at each "
                                     "(epochs >= groups + 1 reaches all); null: 4, raised until the run takes "
                                     "min_steps optimizer steps", ge=1)
    schedule: str = param("slanted", "learning-rate schedule over the whole run; slanted is the paper's "
                                     "(warmup is its cut_frac)", choices=SCHEDULES)
    layer_decay: float = param(1 / 2.6, "rate factor per group from the top; the paper's 1/2.6", gt=0, le=1)


@STRATEGIES.register("gradual", needs="backbone",
                     summary="ULMFiT: head first, one more layer group per epoch from the top; "
                             "slanted triangular rates, discriminative LR")
class GradualUnfreezing(FineTune):
    """Gradual unfreezing (Howard & Ruder, ACL 2018) in the one training loop.

    Data: labelled items of any modality, every task of :class:`FineTune`. Shapes as
    :class:`FineTune`: items -> features ``(B, D)`` -> head ``Linear(D, K)``. Epoch ``e``
    (0-based) trains the head and the top ``e`` of the groups chosen by ``unfreeze`` (all by
    default); reaching every group of a backbone with ``G`` groups takes ``epochs >= G + 1``
    (the fit notes say when it did not).

    Options: :class:`GradualParams` (those of :class:`FineTune`, with the paper's defaults).
    """

    name = "gradual"
    description = ("ULMFiT gradual unfreezing: the head first, one more layer group per epoch from the top; "
                   "slanted triangular rates (Howard & Ruder, ACL 2018)")
    Params = GradualParams
    base_epochs = 4

    def _callbacks(self, model: nn.ModuleDict, groups: Groups, chosen: set[str],
                   evaluate: Callable[[], dict[str, float]] | None) -> list[Callback]:
        planned = [(n, ps) for n, ps in groups if n in chosen]
        self._order, self._all_groups = [n for n, _ in planned], [n for n, _ in groups]
        # Order matters: validation (its BatchNorm refresh must see only the groups trained so
        # far) -> expose all -> early stopping's snapshot -> freeze for the next epoch.
        base = super()._callbacks(model, groups, chosen, evaluate)
        at = next((i for i, cb in enumerate(base) if isinstance(cb, EarlyStopping)), len(base))
        return [*base[:at], ExposeAll(planned), *base[at:], UnfreezeSchedule(planned)]

    def _fit(self, train_ds: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        super()._fit(train_ds, y, ctx)
        order, n_run = self._order, self.info_["epochs_run"]
        by_epoch = [unfrozen_at(order, e) for e in range(n_run)]
        trained = by_epoch[-1] if by_epoch else []
        self.info_.update(unfrozen_by_epoch=by_epoch, trained_groups=trained,
                          frozen_groups=[n for n in self._all_groups if n not in trained])
        if len(trained) < len(order):
            ctx.notes.append(f"gradual: {n_run} epoch(s) unfroze the top {len(trained)} of {len(order)} layer "
                             f"groups; epochs={len(order) + 1} would reach all of them.")
