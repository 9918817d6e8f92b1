"""``linear-probe``: frozen backbone, multinomial logistic regression on cached features.

The classic feature-extraction baseline of transfer learning (e.g. Kornblith et al., "Do
Better ImageNet Models Transfer Better?", CVPR 2019): features are standardised and the
L2 regularisation strength is chosen by stratified cross-validation on the training set.
The fitted scaler and classifier are folded into one linear layer ``(C, D)`` over raw
features, the head format every strategy shares (LP-FT starts from it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.dataset import Dataset
from ..tasks.linear import fit_logistic, softmax
from .base import STRATEGIES, Strategy, TransferContext
from .params import Params, param


def linear_head(weight: np.ndarray, bias: np.ndarray) -> torch.nn.Linear:
    """``Linear(D, C)`` in eval mode holding ``weight (C, D)`` and ``bias (C,)`` as float32."""
    head = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(np.asarray(weight, np.float32)))
        head.bias.copy_(torch.as_tensor(np.asarray(bias, np.float32)))
    return head.eval()


@dataclass
class ProbeParams(Params):
    """Options of ``linear-probe`` (and ``adabn``)."""

    Cs: list[float] = param([1e-3, 1e-2, 1e-1, 1.0, 10.0], "candidate inverse L2 strengths (on standardised "
                                                           "features), one chosen by cross-validation", gt=0)
    cv: int = param(5, "folds of stratified cross-validation (fewer when a class is smaller)", ge=2)
    max_iter: int = param(2000, "L-BFGS iterations", ge=1)


@STRATEGIES.register("linear-probe", needs="features")
class LinearProbe(Strategy):
    """Frozen-feature logistic regression.

    Data: labelled items of any modality. Shapes: features ``(N, D)`` -> head ``(C, D)``.
    Options: :class:`ProbeParams`.
    """

    name = "linear-probe"
    description = "frozen backbone; logistic regression on cached features, C by cross-validation"
    Params = ProbeParams
    uses_features = True

    def _fit(self, train: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        X = ctx.features(train)
        W, b, self.info_ = fit_logistic(X, y, Cs=self.Cs, cv=self.cv, max_iter=self.max_iter, seed=ctx.seed)
        self.head_weight_ = W.astype(np.float32)
        self.head_bias_ = b.astype(np.float32)

    def _predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        X = ctx.features(data).astype(np.float64)
        return softmax(X @ self.head_weight_.T.astype(np.float64) + self.head_bias_)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return {"head.weight": torch.from_numpy(self.head_weight_), "head.bias": torch.from_numpy(self.head_bias_)}

    def torch_head(self) -> torch.nn.Module:
        self._check_fitted()
        return linear_head(self.head_weight_, self.head_bias_)

    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str], backbone=None) -> "LinearProbe":
        self.head_weight_ = tensors["head.weight"].numpy()
        self.head_bias_ = tensors["head.bias"].numpy()
        return self._restored(classes)
