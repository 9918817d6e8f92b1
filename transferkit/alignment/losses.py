"""Domain-alignment losses: ``nn.Module``s over source features ``f_s (n, H)`` and target
features ``f_t (m, H)`` returning a scalar tensor, the same in train and eval mode (and
:class:`MinimumClassConfusionLoss`, over the target's class logits ``(m, C)`` alone).

Each is added to the source classification loss with a weight (the ``trade_off``), so the
feature extractor learns features that classify the source and look alike in both domains.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class _GradientReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coeff * grad, None


def gradient_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by ``-coeff`` backward (Ganin & Lempitsky 2015)."""
    return _GradientReverse.apply(x, float(coeff))


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """DANN's ramp of the reversal strength: ``2 / (1 + exp(-gamma p)) - 1``, 0 at p=0, ~1 at p=1.

    Early in training the features are still random; a full-strength adversary would then
    only add noise (Ganin et al., JMLR 2016, section 5.2.2).
    """
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


class DomainAdversarialLoss(nn.Module):
    """DANN: a domain discriminator trained to tell ``f_s`` from ``f_t`` through a gradient
    reversal layer, so that the feature extractor learns to fool it.

    Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand & Lempitsky,
    "Domain-Adversarial Training of Neural Networks", JMLR 17 (2016).

    Args:
        in_features: H, the width of the features.
        hidden: width of the discriminator's two hidden layers.

    Shapes: ``f_s (n, H)``, ``f_t (m, H)`` -> scalar binary cross-entropy of the discriminator
    (source = 0, target = 1); the features receive ``-coeff`` times its gradient.
    """

    def __init__(self, in_features: int, hidden: int = 256):
        super().__init__()
        self.discriminator = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                           nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
        f = gradient_reverse(torch.cat([f_s, f_t]), coeff)
        logits = self.discriminator(f).squeeze(1).float()
        target = torch.cat([torch.zeros(len(f_s), device=f.device), torch.ones(len(f_t), device=f.device)])
        return F.binary_cross_entropy_with_logits(logits, target)


class MultipleKernelMMD(nn.Module):
    """Multi-kernel maximum mean discrepancy (DAN).

    Long, Cao, Wang & Jordan, "Learning Transferable Features with Deep Adaptation Networks",
    ICML 2015: MMD^2 between the two batches under a sum of Gaussian kernels whose bandwidths
    are ``alphas`` times the mean squared distance of the pooled batch (so the loss does not
    depend on the features' scale; the bandwidth is not back-propagated through).  This is the
    quadratic-time, biased batch estimate (as TLlib's default), fine for batches of a few hundred.

    Shapes: ``f_s (n, H)``, ``f_t (m, H)`` -> scalar >= 0 (0 when the batches coincide).
    """

    def __init__(self, alphas: Sequence[float] = (0.125, 0.25, 0.5, 1.0, 2.0)):
        super().__init__()
        self.alphas = tuple(float(a) for a in alphas)

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        z = torch.cat([f_s, f_t]).float()
        d2 = torch.cdist(z, z).pow(2)
        n = len(z)
        base = d2.detach().sum() / max(n * n - n, 1)
        base = torch.clamp(base, min=1e-12)
        k = sum(torch.exp(-d2 / (a * base)) for a in self.alphas)
        ns = len(f_s)
        return k[:ns, :ns].mean() + k[ns:, ns:].mean() - 2.0 * k[:ns, ns:].mean()


class CoralLoss(nn.Module):
    """Deep CORAL: the squared Frobenius distance between the feature covariances, ``/ 4 H^2``.

    Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation", ECCV 2016
    workshops.  Shapes: ``f_s (n, H)``, ``f_t (m, H)`` (n, m >= 2) -> scalar >= 0.
    """

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        h = f_s.shape[1]
        return (_cov(f_s.float()) - _cov(f_t.float())).pow(2).sum() / (4.0 * h * h)


def _cov(f: torch.Tensor) -> torch.Tensor:
    c = f - f.mean(0, keepdim=True)
    return c.T @ c / max(len(f) - 1, 1)


class MinimumClassConfusionLoss(nn.Module):
    """MCC: how much the classifier confuses classes on a target batch, to be minimised.

    Jin, Wang, Long & Wang, "Minimum Class Confusion for Versatile Domain Adaptation", ECCV
    2020, eqs. 1-7: ``P = softmax(z / T)`` ``(m, C)`` (temperature scaling, ``T`` > 1 softens
    over-confident predictions); item weights ``W_ii = m (1 + exp(-H(p_i))) / sum_j (1 + exp(-H(p_j)))``
    (confident items, low entropy ``H``, count more; the weights are not back-propagated through);
    class correlations ``C = P^T W P`` ``(C, C)``; category normalisation: each column divided by
    its sum, so a class the batch rarely predicts weighs as much as a frequent one; the loss is
    the normalised matrix's off-diagonal mass divided by the number of classes.

    Shapes: target logits ``z (m, C)``, m >= 1 -> scalar in ``[0, 1)`` (``(C - 1) / C`` for
    uniform predictions): ~0 when every class is predicted, each confidently and by different
    items; larger when items spread their probability over several classes.  A class that no
    item of the batch predicts has a column of small numbers that normalises to a spread column,
    so the loss is lowest on batches that cover the classes (batches of at least ``C`` items).
    A column whose sum underflows to 0 counts 0 (a guard against 0/0 that the paper lacks).
    """

    def __init__(self, temperature: float = 2.5):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        m, n_classes = logits.shape
        p = torch.softmax(logits.float() / self.temperature, dim=1)
        w = _certainty_weights(p).unsqueeze(1)
        confusion = (p * w).T @ p
        confusion = confusion / confusion.sum(0, keepdim=True).clamp_min(1e-30)
        return (confusion.sum() - confusion.trace()) / n_classes


def _certainty_weights(p: torch.Tensor) -> torch.Tensor:
    """``(m,)`` weights ``1 + exp(-H(p_i))`` of probability rows ``p (m, C)``, scaled to mean 1 and
    not back-propagated through: confident items (low entropy ``H``) count more.  MCC's item
    weights and CDAN+E's entropy conditioning."""
    h = -(p * torch.log(p.clamp_min(1e-12))).sum(1).detach()
    w = 1.0 + torch.exp(-h)
    return len(w) * w / w.sum()


class ConditionalDomainAdversarialLoss(DomainAdversarialLoss):
    """CDAN(+E): DANN's discriminator, conditioned on the classifier's predictions.

    Long, Cao, Wang & Jordan, "Conditional Adversarial Domain Adaptation", NeurIPS 2018.  The
    discriminator sees the multilinear map ``f (x) g`` of features and class probabilities
    ``g = softmax(z)`` (not back-propagated through, as in the authors' code), so it can tell the
    domains apart class by class; with ``entropy_conditioning`` (CDAN+E) each item's term is
    weighted by ``1 + exp(-H(g))`` (mean 1 over the batch), so uncertain predictions, whose
    conditioning is least reliable, count less.  ``H x C`` above ``max_joint`` (4096, the paper's
    threshold) uses the randomized multilinear map ``(R_f f) * (R_g g) / sqrt(d)`` with fixed
    Gaussian ``R_f (H, d)``, ``R_g (C, d)``, ``d = randomized_dim``.

    Shapes: ``f_s (n, H)``, ``f_t (m, H)``, logits ``z_s (n, C)``, ``z_t (m, C)`` -> scalar
    weighted binary cross-entropy of the discriminator (source = 0, target = 1); the features
    receive ``-coeff`` times its gradient.
    """

    def __init__(self, in_features: int, n_classes: int, hidden: int = 256, entropy_conditioning: bool = True,
                 max_joint: int = 4096, randomized_dim: int = 1024):
        joint = in_features * n_classes
        randomized = joint > max_joint
        super().__init__(randomized_dim if randomized else joint, hidden)
        self.entropy_conditioning = bool(entropy_conditioning)
        self.randomized = randomized
        if randomized:  # fixed, drawn from the caller's seeded generator state; saved with the module
            self.register_buffer("r_f", torch.randn(in_features, randomized_dim))
            self.register_buffer("r_g", torch.randn(n_classes, randomized_dim))

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, z_s: torch.Tensor, z_t: torch.Tensor,
                coeff: float = 1.0) -> torch.Tensor:
        f = torch.cat([f_s, f_t]).float()
        g = torch.softmax(torch.cat([z_s, z_t]).float(), dim=1).detach()
        if self.randomized:
            h = (f @ self.r_f) * (g @ self.r_g) / math.sqrt(self.r_f.shape[1])
        else:
            h = torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)  # (B, C * H)
        logits = self.discriminator(gradient_reverse(h, coeff)).squeeze(1)
        target = torch.cat([torch.zeros(len(f_s), device=f.device), torch.ones(len(f_t), device=f.device)])
        weight = _certainty_weights(g) if self.entropy_conditioning else None
        return F.binary_cross_entropy_with_logits(logits, target, weight=weight)
