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

Measured 2026-12-07 (EfficientNet-Lite0 at a reduced ``image_size``, seed 0, defaults unless
said; 1000 MNIST-5k source items; accuracy on the unlabelled target items themselves,
transductive; ``fit`` wall times on 2 CPU cores shared with 6-8 other jobs, load average 8-18,
so only their order of magnitude means something), as accuracy (fit time, trade_off chosen):

* MNIST-5k -> sklearn digits (all 1797), 64 px: source-only adapter 0.136 (38 s); mcc on
  features 0.092 (235 s, DEV chose 0.3); mcc on the backbone at its defaults 0.119 (2525 s for
  DEV's 4 candidates and the refit, DEV chose 0: the backbone trained on the source loss alone).
* the same at 96 px: source-only adapter 0.127 (78 s); mcc on features 0.134 (396 s, chose 3);
  mcc on the backbone, ``trade_off=1`` (the paper's; one run) 0.204 (624 s); the
  backbone on the source loss alone (``trade_off=0``) 0.169 (168 s).
* MNIST-5k -> 500 other MNIST-5k items inverted (255 - pixel), 64 px: source-only adapter 0.182
  (6 s); mcc on features 0.194 (55 s, chose 3); backbone on the source loss alone (``trade_off=0``)
  0.206 (281 s); mcc on the backbone, ``trade_off=1`` 0.262 (725 s).
* the same at 96 px: source-only adapter 0.360 (16 s); mcc on features 0.360 (81 s, DEV chose
  0: the source-only model); mcc on the backbone, ``trade_off=1`` 0.422 (372 s); the
  backbone on the source loss alone 0.214 (134 s).

Reading: MCC on cached features does not help on these shifts (-4.4, +0.7, +1.2 and 0 points
against the source-only adapter, with the weight DEV chose; the choice was once clearly worse
than not adapting).  In the backbone MCC at weight 1 gains where the features cannot move: over
the same 100 steps of backbone training without it, +5.6 points on inverted MNIST at 64 px, +3.5
on digits at 96 px and +20.8 on inverted MNIST at 96 px, where training the backbone on the
source alone lost 15 points (over the source-only adapter: +8.0, +7.7 and +6.2); all of it far
below a usable model.  On a shared CPU each knob candidate with the backbone is a run of minutes
to tens of minutes: give one value (``--param trade_off=1``) to pay for one run instead of DEV's
five.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..alignment import MinimumClassConfusionLoss
from ..data.dataset import Dataset
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

    # classification only: the loss reads a softmax over classes
    classification_only_because = "{name} reads the classifier's softmax over classes, which a {task} target " \
                                  "does not have"

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
