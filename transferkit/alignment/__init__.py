"""Domain-alignment maths: pure ``nn.Module`` losses over source and target features ``(f_s, f_t)``,
and criteria that choose hyper-parameters without target labels.

=============================  =============================================  ==========================
name                           what                                           paper
=============================  =============================================  ==========================
:class:`DomainAdversarialLoss`  discriminator behind a gradient reversal layer  Ganin et al., JMLR 2016
:class:`MultipleKernelMMD`      multi-kernel MMD^2 with Gaussian kernels       Long et al., ICML 2015
:class:`CoralLoss`              distance between feature covariances           Sun & Saenko, ECCV-W 2016
:class:`MinimumClassConfusionLoss`  class confusion of target predictions      Jin et al., ECCV 2020
:class:`ConditionalDomainAdversarialLoss`  CDAN(+E): discriminator on f x softmax  Long et al., NeurIPS 2018
:func:`dev_risk`                importance-weighted source validation risk     You et al., ICML 2019
:func:`snd`                     soft neighbourhood density of target outputs   Saito et al., ICCV 2021
:func:`information_maximization` SHOT: item entropy - entropy of the mean       Liang et al., ICML 2020
:func:`centroid_pseudo_labels`  SHOT: labels of the nearest class centroid     Liang et al., ICML 2020
=============================  =============================================  ==========================
"""
from .information import centroid_pseudo_labels, information_maximization
from .losses import (
    ConditionalDomainAdversarialLoss,
    CoralLoss,
    DomainAdversarialLoss,
    MinimumClassConfusionLoss,
    MultipleKernelMMD,
    dann_lambda,
    gradient_reverse,
)
from .selection import dev_risk, entropy, snd

__all__ = ["DomainAdversarialLoss", "MultipleKernelMMD", "CoralLoss", "gradient_reverse", "dann_lambda",
           "MinimumClassConfusionLoss", "ConditionalDomainAdversarialLoss",
           "dev_risk", "snd", "entropy", "information_maximization", "centroid_pseudo_labels"]
