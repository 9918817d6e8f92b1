"""``prototype``: nearest class mean in feature space, by cosine similarity.

Prototypical networks (Snell, Swersky & Zemel, "Prototypical Networks for Few-shot
Learning", NeurIPS 2017) classify by the distance to each class's mean embedding; on frozen
pre-trained features with no meta-training this is the strong few-shot baseline of SimpleShot
(Wang, Chao, Weinberger & van der Maaten, "SimpleShot: Revisiting Nearest-Neighbor
Classification for Few-Shot Learning", 2019): centre the features on the training mean, L2
normalise them ("CL2N"), average per class, and compare by cosine.  Nothing is fitted by
optimisation, so it needs no hyper-parameter search and is instant on cached features.

Imbalanced classes: each prototype is its class's mean, whatever the class's size, and the rule
treats every class as equally likely, so ``class_weight="balanced"`` changes nothing (the rule is
balanced already; the run's notes say so).  Explicit weights ``{class: w}`` act as prior odds on
top of that: each class's probability is multiplied by its weight before normalising (``log w``
added to its logit), which moves the decision towards the heavier classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..data.dataset import Dataset
from ..errors import UserInputError
from ..tasks.linear import class_weights, softmax
from .base import STRATEGIES, Strategy, TransferContext
from .params import Params, param
from .probe import check_class_weight


class CosineHead(torch.nn.Module):
    """``f (N, D)`` -> ``normalize(f - center) @ prototypes.T / temperature + log_prior`` logits ``(N, C)``."""

    def __init__(self, prototypes: np.ndarray, center: np.ndarray | None, temperature: float,
                 log_prior: np.ndarray | None = None):
        super().__init__()
        self.register_buffer("prototypes", torch.as_tensor(np.asarray(prototypes, np.float32)))
        d = self.prototypes.shape[1]
        self.register_buffer("center", torch.as_tensor(np.zeros(d, np.float32) if center is None
                                                       else np.asarray(center, np.float32)))
        self.register_buffer("log_prior", torch.as_tensor(np.zeros(len(prototypes), np.float32) if log_prior is None
                                                          else np.asarray(log_prior, np.float32)))
        self.temperature = float(temperature)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        z = torch.nn.functional.normalize(f - self.center, dim=1, eps=1e-12)
        return z @ self.prototypes.T / self.temperature + self.log_prior


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
    class_weight: Literal["balanced"] | dict | None = param(
        None, "null; balanced: changes nothing (every prototype is its class's mean and the rule already treats "
              "the classes as equally likely); {\"class\": weight}: each class's probability multiplied by its "
              "weight (prior odds), moving decisions towards heavier classes; the controls get the same",
        check=check_class_weight)


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
        self.log_prior_ = None
        if self.class_weight == "balanced":
            ctx.notes.append("prototype: class_weight=balanced changes nothing: each prototype is its class's mean, "
                             "whatever the class's size, and the nearest-prototype rule already treats every class "
                             "as equally likely.")
        elif self.class_weight is not None:
            weights = class_weights(self.class_weight, y, list(self.classes_))
            self.log_prior_ = np.log(weights)
            self.info_["class_weight"] = [float(w) for w in weights]

    def _logits(self, X: np.ndarray) -> np.ndarray:
        """``(N, C)`` scaled cosines to the prototypes, plus the log prior odds where weights were given."""
        z = l2_normalize(X - self.mean_) @ self.prototypes_.T / self.temperature
        return z if self.log_prior_ is None else z + self.log_prior_

    def _predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        return softmax(self._logits(ctx.features(data).astype(np.float64)))

    def torch_head(self) -> torch.nn.Module:
        self._check_fitted()
        return CosineHead(self.prototypes_, self.mean_, self.temperature, self.log_prior_).eval()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        out = {"prototypes": torch.from_numpy(self.prototypes_), "mean": torch.from_numpy(self.mean_)}
        if self.log_prior_ is not None:
            out["log_prior"] = torch.from_numpy(np.asarray(self.log_prior_, np.float64))
        return out

    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str], backbone=None,
                   task: str = "classification") -> "Prototype":
        protos = tensors["prototypes"].numpy()
        if protos.ndim != 2 or protos.shape[0] != len(classes):
            raise UserInputError(f"the saved prototypes have shape {protos.shape}, expected ({len(classes)}, D)")
        self.prototypes_, self.mean_ = protos, tensors["mean"].numpy()
        # runs written before class_weight existed have no prior: every class equally likely
        self.log_prior_ = tensors["log_prior"].numpy() if "log_prior" in tensors else None
        return self._restored(classes, task)
