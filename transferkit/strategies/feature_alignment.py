"""Domain adaptation by aligning source and target feature distributions: ``dann``, ``mmd``, ``coral``.

Each trains a small adapter MLP and a head (:mod:`._adapt`) on labelled source features and
unlabelled target features, minimising the source loss (cross-entropy; for regression the squared
error of the standardised target; for multi-label the binary cross-entropy of each label) plus
``trade_off`` times an alignment loss from :mod:`transferkit.alignment`.  ``trade_off`` may be a list: the value is
then chosen without target labels (DEV by default).  Use them with
``transferkit fit --data SOURCE --target-unlabelled TARGET --strategy dann [--test LABELLED_TARGET]``.
(Self-training, the other adaptation family, is in :mod:`.selftrain`; the domain distances
that measure a shift are in :mod:`transferkit.scores.domain`.)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..alignment import CoralLoss, DomainAdversarialLoss, MultipleKernelMMD, dann_lambda
from ._adapt import AdaptationParams, FeatureAdaptation
from .base import STRATEGIES
from .params import param


@dataclass
class AlignmentParams(AdaptationParams):
    """:class:`AdaptationParams` plus the weight of the alignment loss, the knob chosen without target labels."""

    trade_off: float | list[float] = param([0.0, 0.1, 0.3, 1.0], "weight of the alignment loss (0: source-only), "
                                                                 "or candidates chosen by selection", ge=0)


@dataclass
class CoralParams(AlignmentParams):
    # the CORAL loss is divided by 4 H^2, so it is small: larger weights than DANN's
    trade_off: float | list[float] = param([0.0, 1.0, 3.0, 10.0], "weight of the CORAL loss (0: source-only), or "
                                                                  "candidates chosen by selection", ge=0)


class _LossWeighted(FeatureAdaptation):
    """A :class:`FeatureAdaptation` whose knob is the weight of an alignment loss."""

    Params = AlignmentParams
    knob = "trade_off"
    # the alignment acts on the adapter's features, whatever the head predicts
    tasks = ("classification", "regression", "multi-label")


@STRATEGIES.register("dann", needs="features", target=True)
class DANN(_LossWeighted):
    """Domain-adversarial training (Ganin et al., "Domain-Adversarial Training of Neural
    Networks", JMLR 2016) of an adapter on frozen features.

    Shapes: source ``(n, D)`` and target ``(m, D)`` features -> adapter ``(., H)``; the head
    sees source features, the discriminator ``MLP(H -> 1)`` sees both through a gradient
    reversal layer whose strength ramps as ``2 / (1 + exp(-10 p)) - 1`` over training progress p.
    """

    name = "dann"
    description = ("domain-adversarial adapter on cached features: gradient reversal, domain discriminator, "
                   "lambda ramp (Ganin et al., JMLR 2016)")

    def _alignment(self, hidden: int) -> nn.Module:
        return DomainAdversarialLoss(hidden, hidden)

    def _transfer_loss(self, align: nn.Module, f_s: torch.Tensor, f_t: torch.Tensor, progress: float,
                       head: nn.Module) -> torch.Tensor:
        return align(f_s, f_t, dann_lambda(progress))


@STRATEGIES.register("mmd", needs="features", target=True)
class MMDAlignment(_LossWeighted):
    """Multi-kernel MMD alignment, the Deep Adaptation Network (DAN; Long et al., "Learning
    Transferable Features with Deep Adaptation Networks", ICML 2015): multi-kernel MMD between
    source and target adapter features ``(n, H)``, ``(m, H)`` of each batch, Gaussian kernels at
    5 bandwidths."""

    name = "mmd"
    description = "adapter on cached features aligned by multi-kernel MMD (DAN; Long et al., ICML 2015)"

    def _alignment(self, hidden: int) -> nn.Module:
        return MultipleKernelMMD()


@STRATEGIES.register("coral", needs="features", target=True)
class DeepCORAL(_LossWeighted):
    """Deep CORAL (Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain
    Adaptation", ECCV 2016 workshops): the distance between the covariance matrices
    ``(H, H)`` of source and target adapter features of each batch."""

    name = "coral"
    description = "adapter on cached features aligned by feature covariances (Deep CORAL; Sun & Saenko 2016)"
    Params = CoralParams

    def _alignment(self, hidden: int) -> nn.Module:
        return CoralLoss()
