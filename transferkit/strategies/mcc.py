"""``mcc``: Minimum Class Confusion on the unlabelled target, on cached features or on the backbone.

Jin, Wang, Long & Wang, "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020.
Where ``dann``, ``mmd`` and ``coral`` align feature distributions, MCC reads the classifier's
own target predictions: the source cross-entropy plus ``trade_off`` times the class confusion of
each target batch (:class:`transferkit.alignment.MinimumClassConfusionLoss`), which pushes the
head to predict each target item confidently and different items as different classes, with no
discriminator and no pseudo-label.  ``trade_off`` may be a list: the value is chosen without
target labels (DEV by default; 0 is the source-only model), as for every
:class:`~._adapt.FeatureAdaptation`.

``on="features"`` trains the adapter MLP and head on cached frozen features (seconds);
``on="backbone"`` trains the backbone's last ``unfreeze`` layer groups too.  On a CPU the
backbone costs about 2 x ``batch_size`` images forward (and back through the trained groups)
per step, so with the backbone the runs are bounded by default: ``backbone_steps`` (100)
steps instead of ``steps`` (1000), on a seeded random subset of at most ``max_target`` (500)
target items (every target item is still predicted), and a reduced ``--image-size`` is the
other lever (64 or 96 px for digits).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..alignment import MinimumClassConfusionLoss
from ..data.dataset import Dataset
from ..errors import UserInputError
from ._adapt import AdaptationParams, FeatureAdaptation, _Items
from .base import STRATEGIES, TransferContext
from .params import param


@dataclass
class BoundedParams(AdaptationParams):
    """:class:`AdaptationParams` plus the bounds of a run with ``on="backbone"`` (``mcc``, ``cdan``)."""

    backbone_steps: int = param(100, "with on=backbone: optimizer steps per training run, in place of steps (each "
                                     "runs the backbone on 2 x batch_size items)", ge=1)
    max_target: int = param(500, "with on=backbone: at most this many target items train (a seeded random subset; "
                                 "every target item is still predicted)", ge=1)


@dataclass
class MCCParams(BoundedParams):
    """:class:`BoundedParams` plus the MCC loss's weight (the knob) and its temperature."""

    trade_off: float | list[float] = param([0.0, 0.3, 1.0, 3.0], "weight of the MCC loss (0: source-only), or "
                                                                 "candidates chosen by selection", ge=0)
    temperature: float = param(2.5, "T of the softmax whose class confusion is minimised (the paper's 2.5; above 1 "
                                    "it softens over-confident predictions)", gt=0)


class ClassConditioned(FeatureAdaptation):
    """A :class:`FeatureAdaptation` whose loss reads the head's class probabilities (``mcc``,
    ``cdan``): classification only, and bounded with ``on="backbone"`` (:class:`BoundedParams`)."""

    Params = BoundedParams
    knob = "trade_off"

    @classmethod
    def check_task(cls, task: str) -> None:
        """Classification only: the loss reads a softmax over classes, which a number (regression)
        or independent labels (multi-label) do not have; the refusal says so."""
        try:
            super().check_task(task)
        except UserInputError as e:
            if task not in ("regression", "multi-label"):
                raise
            raise UserInputError(e.message, hint=f"{cls.name} reads the classifier's softmax over classes, which a "
                                                 f"{task} target does not have; adabn, dann, mmd and coral adapt to "
                                                 "the target for it" + (f" ({e.hint})" if e.hint else "")) from None

    def _n_steps(self, tuned: bool) -> int:
        return self.backbone_steps if tuned else self.steps

    def _items(self, train_ds: Dataset, target: Dataset | None, Xs0: np.ndarray,
               ctx: TransferContext) -> tuple[_Items, _Items | None]:
        # the bound on target items: training, DEV's importance weights and its embeddings read
        # this subset; prediction reads every target item through ctx.features afterwards
        if target is not None and len(target) > self.max_target:
            keep = np.sort(np.random.default_rng(ctx.seed).choice(len(target), self.max_target, replace=False))
            ctx.notes.append(f"{self.name}: with on=backbone, {self.max_target} of the {len(target)} unlabelled "
                             "target items (a seeded random subset) trained the backbone (param max_target).")
            target = target.subset(keep)
        return super()._items(train_ds, target, Xs0, ctx)


@STRATEGIES.register("mcc", needs="features", target=True)
class MinimumClassConfusion(ClassConditioned):
    """Minimum Class Confusion (Jin et al., ECCV 2020) of an adapter + head, optionally of the
    backbone's last layer groups.

    Shapes: source ``(n, D)`` and target ``(m, D)`` features -> adapter ``(., H)`` -> head
    ``(., C)``; the loss is the cross-entropy of the source logits plus ``trade_off`` x the class
    confusion of the target logits ``(B, C)`` of each step.  Options: :class:`MCCParams`.
    """

    name = "mcc"
    description = ("minimum class confusion of the target predictions (Jin et al., ECCV 2020): adapter + head on "
                   "cached features, or the backbone's last layer groups with on=backbone")
    Params = MCCParams

    def _alignment(self, hidden: int) -> nn.Module:
        return MinimumClassConfusionLoss(self.temperature)

    def _transfer_loss(self, align: nn.Module, f_s: torch.Tensor, f_t: torch.Tensor, progress: float,
                       head: nn.Module) -> torch.Tensor:
        return align(head(f_t))
