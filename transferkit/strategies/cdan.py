"""``cdan``: Conditional Domain Adversarial Network with entropy conditioning (CDAN+E).

Long, Cao, Wang & Jordan, "Conditional Adversarial Domain Adaptation", NeurIPS 2018.  DANN's
adversary, but the discriminator sees each item's features together with the head's class
probabilities (their outer product, :class:`transferkit.alignment.ConditionalDomainAdversarialLoss`),
so the features are aligned class by class rather than as one cloud; entropy conditioning
(``entropy_conditioning``, on by default: the "+E") weighs confident items more.  The reversal
strength ramps as DANN's.  ``trade_off`` (the knob, 0 = source-only) is chosen without target
labels as for every :class:`~._adapt.FeatureAdaptation`; ``on="backbone"`` trains the last
``unfreeze`` layer groups too, bounded as ``mcc`` is (``backbone_steps``, ``max_target``).

Measured 2026-12-07 on cached features (EfficientNet-Lite0 at 96 px, seed 0, defaults, DEV chose
0.3 both times; 1000 MNIST-5k source items; accuracy on the unlabelled target items, transductive;
fit about 390 s each on 2 CPU cores shared with other jobs): MNIST-5k -> sklearn digits (1797)
0.173 against the source-only adapter's 0.127 (``mcc`` 0.134); MNIST-5k -> 500 inverted MNIST-5k
items 0.366 against 0.360 (``mcc`` 0.360).  Not yet measured with ``on="backbone"``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..alignment import ConditionalDomainAdversarialLoss, dann_lambda
from .base import STRATEGIES
from .mcc import BoundedParams, ClassConditioned
from .params import param


@dataclass
class CDANParams(BoundedParams):
    """:class:`BoundedParams` plus the adversarial loss's weight (the knob) and the "+E"."""

    trade_off: float | list[float] = param([0.0, 0.1, 0.3, 1.0], "weight of the conditional adversarial loss (0: "
                                                                 "source-only), or candidates chosen by selection",
                                           ge=0)
    entropy_conditioning: bool = param(True, "CDAN+E: weigh each item's adversarial term by 1 + exp(-entropy) of its "
                                             "prediction (false: plain CDAN)")


@STRATEGIES.register("cdan", needs="features", target=True)
class CDAN(ClassConditioned):
    """CDAN+E (Long et al., NeurIPS 2018) of an adapter + head, optionally of the backbone's last
    layer groups.

    Shapes: source ``(n, D)`` and target ``(m, D)`` features -> adapter ``f (., H)`` -> head
    ``z (., C)``; the discriminator ``MLP(H C -> 1)`` reads ``softmax(z) (x) f`` of both
    domains through a gradient reversal layer (a randomized ``(., 1024)`` map when ``H C > 4096``).
    Options: :class:`CDANParams`.
    """

    name = "cdan"
    description = ("conditional domain-adversarial adapter (CDAN+E; Long et al., NeurIPS 2018): the discriminator "
                   "reads features x class probabilities, on cached features or the backbone's last layer groups")
    Params = CDANParams

    def _alignment(self, hidden: int) -> nn.Module:
        return ConditionalDomainAdversarialLoss(hidden, self._n_outputs(), hidden, self.entropy_conditioning)

    def _transfer_loss(self, align: nn.Module, f_s: torch.Tensor, f_t: torch.Tensor, progress: float,
                       head: nn.Module) -> torch.Tensor:
        return align(f_s, f_t, head(f_s), head(f_t), dann_lambda(progress))
