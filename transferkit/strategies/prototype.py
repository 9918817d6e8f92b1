"""``prototype``: nearest class mean in feature space, by cosine similarity.

Prototypical networks (Snell, Swersky & Zemel, "Prototypical Networks for Few-shot
Learning", NeurIPS 2017) classify by the distance to each class's mean embedding; on frozen
pre-trained features with no meta-training this is the strong few-shot baseline of SimpleShot
(Wang, Chao, Weinberger & van der Maaten, "SimpleShot: Revisiting Nearest-Neighbor
Classification for Few-Shot Learning", 2019): centre the features on the training mean, L2
normalise them ("CL2N"), average per class, and compare by cosine.  Nothing is fitted by
optimisation, so it needs no hyper-parameter search and is instant on cached features.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.dataset import Dataset
from ..errors import UserInputError
from .base import STRATEGIES, Strategy, TransferContext
from .params import Params, param
from .probe import softmax


class CosineHead(torch.nn.Module):
    """``f (N, D)`` -> ``normalize(f - center) @ prototypes.T / temperature`` logits ``(N, C)``."""

    def __init__(self, prototypes: np.ndarray, center: np.ndarray | None, temperature: float):
        super().__init__()
        self.register_buffer("prototypes", torch.as_tensor(np.asarray(prototypes, np.float32)))
        d = self.prototypes.shape[1]
        self.register_buffer("center", torch.as_tensor(np.zeros(d, np.float32) if center is None
                                                       else np.asarray(center, np.float32)))
        self.temperature = float(temperature)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        z = torch.nn.functional.normalize(f - self.center, dim=1, eps=1e-12)
        return z @ self.prototypes.T / self.temperature


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x (N, D)`` scaled to unit L2 norm (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class PrototypeParams(Params):
    """Options of ``prototype``."""

    # Centring removes the direction every embedding shares, which otherwise dominates cosines.
    center: bool = param(True, "subtract the training features' mean first (SimpleShot's CL2N)")
    temperature: float = param(0.1, "divides the cosines before the softmax (sharpness only, not the predicted "
                                    "class)", gt=0)


@STRATEGIES.register("prototype", needs="features")
class Prototype(Strategy):
    """Nearest-prototype classifier on frozen features.

    Data: labelled items of any modality (one per class is enough). Shapes: features
    ``(N, D)`` -> centred (``- mean (D,)``) and normalised -> prototypes ``(C, D)`` (unit
    norm) -> cosine similarities ``(N, C)`` / ``temperature`` -> softmax.  Options:
    :class:`PrototypeParams`.
    """

    name = "prototype"
    description = ("nearest class mean of centred, L2-normalised cached features, by cosine (Snell et al. 2017; "
                   "SimpleShot)")
    Params = PrototypeParams
    uses_features = True

    def _fit(self, train: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        X = ctx.features(train).astype(np.float64)
        self.mean_ = X.mean(0) if self.center else np.zeros(X.shape[1])
        Z = l2_normalize(X - self.mean_)
        protos = np.stack([Z[y == c].mean(0) for c in range(len(self.classes_))])
        self.prototypes_ = l2_normalize(protos)
        self.info_ = {"n_per_class": np.bincount(y, minlength=len(self.classes_)).tolist()}

    def _predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        Z = l2_normalize(ctx.features(data).astype(np.float64) - self.mean_)
        return softmax(Z @ self.prototypes_.T / self.temperature)

    def torch_head(self) -> torch.nn.Module:
        self._check_fitted()
        return CosineHead(self.prototypes_, self.mean_, self.temperature).eval()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return {"prototypes": torch.from_numpy(self.prototypes_), "mean": torch.from_numpy(self.mean_)}

    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str], backbone=None,
                   task: str = "classification") -> "Prototype":
        protos = tensors["prototypes"].numpy()
        if protos.ndim != 2 or protos.shape[0] != len(classes):
            raise UserInputError(f"the saved prototypes have shape {protos.shape}, expected ({len(classes)}, D)")
        self.prototypes_, self.mean_ = protos, tensors["mean"].numpy()
        return self._restored(classes, task)
