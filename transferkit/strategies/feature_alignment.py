"""Unsupervised domain adaptation on cached features: ``dann``, ``mmd``, ``coral``.

Each trains a small adapter MLP and a head (:mod:`._adapt`) on labelled source features and
unlabelled target features, minimising the source cross-entropy plus ``trade_off`` times an
alignment loss from :mod:`transferkit.alignment`.  ``trade_off`` may be a list: the value is
then chosen without target labels (DEV by default).  Use them with
``transferkit fit --data SOURCE --target-unlabelled TARGET --strategy dann [--test LABELLED_TARGET]``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..alignment import CoralLoss, DomainAdversarialLoss, MultipleKernelMMD, dann_lambda
from ._adapt import FeatureAdaptation
from .base import STRATEGIES

DEFAULT_TRADE_OFFS = (0.0, 0.1, 0.3, 1.0)


class _LossWeighted(FeatureAdaptation):
    """A :class:`FeatureAdaptation` whose knob is the weight of an alignment loss.

    Args:
        trade_off: weight of the alignment loss (0: source-only), or a list of candidates
            chosen by ``selection``.
        **params: the options of :class:`FeatureAdaptation` (hidden, steps, lr, selection...).
    """

    knob = "trade_off"
    tunes_backbone = True

    def __init__(self, *, trade_off: float | list[float] = DEFAULT_TRADE_OFFS, **params: Any):
        super().__init__(**params)
        vals = self._values("trade_off", trade_off, lambda x: x >= 0)
        self.trade_off = vals if isinstance(trade_off, (list, tuple)) else vals[0]

    def knob_values(self) -> list[float]:
        return list(self.trade_off) if isinstance(self.trade_off, list) else [self.trade_off]


@STRATEGIES.register("dann", needs="features", target=True,
                     summary="domain-adversarial adapter on cached features: gradient reversal, domain "
                             "discriminator, lambda ramp (Ganin et al., JMLR 2016)")
class DANN(_LossWeighted):
    """Domain-adversarial training (Ganin et al., "Domain-Adversarial Training of Neural
    Networks", JMLR 2016) of an adapter on frozen features.

    Shapes: source ``(n, D)`` and target ``(m, D)`` features -> adapter ``(., H)``; the head
    sees source features, the discriminator ``MLP(H -> 1)`` sees both through a gradient
    reversal layer whose strength ramps as ``2 / (1 + exp(-10 p)) - 1`` over training progress p.
    """

    name = "dann"

    def _alignment(self, hidden: int) -> nn.Module:
        return DomainAdversarialLoss(hidden, hidden)

    def _transfer_loss(self, align: nn.Module, f_s: torch.Tensor, f_t: torch.Tensor, progress: float) -> torch.Tensor:
        return align(f_s, f_t, dann_lambda(progress))


@STRATEGIES.register("mmd", needs="features", target=True,
                     summary="adapter on cached features aligned by multi-kernel MMD (DAN; Long et al., ICML 2015)")
class DAN(_LossWeighted):
    """Deep Adaptation Network (Long et al., "Learning Transferable Features with Deep
    Adaptation Networks", ICML 2015): multi-kernel MMD between source and target adapter
    features ``(n, H)``, ``(m, H)`` of each batch, Gaussian kernels at 5 bandwidths."""

    name = "mmd"

    def _alignment(self, hidden: int) -> nn.Module:
        return MultipleKernelMMD()


@STRATEGIES.register("coral", needs="features", target=True,
                     summary="adapter on cached features aligned by feature covariances (Deep CORAL; "
                             "Sun & Saenko 2016)")
class DeepCORAL(_LossWeighted):
    """Deep CORAL (Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain
    Adaptation", ECCV 2016 workshops): the distance between the covariance matrices
    ``(H, H)`` of source and target adapter features of each batch."""

    name = "coral"

    def __init__(self, *, trade_off: float | list[float] = (0.0, 1.0, 3.0, 10.0), **params: Any):
        # the CORAL loss is divided by 4 H^2, so it is small: larger weights than DANN's
        super().__init__(trade_off=trade_off, **params)

    def _alignment(self, hidden: int) -> nn.Module:
        return CoralLoss()
