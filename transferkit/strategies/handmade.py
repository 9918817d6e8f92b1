"""Models on hand-made features: ``classical`` (no transfer at all) and ``hybrid`` (pre-trained
features beside the hand-made ones, one head).

Both exist so that the model a user receives can be the best one that honest selection finds
(:mod:`transferkit.selection`), transfer or not: the classical model is the classical control,
saved; the hybrid gives one regularised head both views, which are often complementary (the
pre-trained model knows the language or the shapes; TF-IDF knows the rare words of this
collection, pixels know the exact strokes), so that neither the control nor the probe alone is
the ceiling.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..classical import (
    CV_FOLDS,
    HandMade,
    TfidfText,
    fit_handmade_model,
    fit_head,
    handmade_for,
    head_from_tensors,
    head_tensors,
    load_handmade,
    save_handmade,
)
from ..data.dataset import Dataset
from ..errors import UserInputError
from ..tasks._scaling import fit_scaler
from ..tasks.linear import linear_outputs
from .base import STRATEGIES, Strategy, TransferContext
from .params import Params, param
from .probe import CLASS_WEIGHT_HELP, check_class_weight, loss_weights

TASKS = ("classification", "regression", "multi-label")


@dataclass
class ClassicalParams(Params):
    cv: int = param(CV_FOLDS, "folds of stratified cross-validation (fewer when a class is smaller)", ge=2)
    class_weight: Literal["balanced"] | dict | None = param(None, CLASS_WEIGHT_HELP, check=check_class_weight)


@STRATEGIES.register("classical", needs="features")
class Classical(Strategy):
    """The modality's classical model, no pre-trained weights involved: TF-IDF (word, or word +
    character n-grams, chosen by cross-validation) for text, raw grey pixels for images, MFCC
    statistics for audio, with the task's linear head (regularisation by cross-validation).

    The same model as the classical control (:mod:`transferkit.controls`); as a strategy it is
    saved and served like any other, for when selection finds it the best.  Data: labelled
    items of text, images or audio.  Shapes: hand-made features ``(N, V)`` -> head ``(K, V)``.
    """

    name = "classical"
    description = ("no transfer: the classical control's model (TF-IDF, pixels or MFCC statistics + the task's "
                   "linear head), saved and served like any other")
    Params = ClassicalParams
    tasks = TASKS
    head_on_features = False

    def _fit(self, train: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        weights = loss_weights(self, y, ctx)
        model = fit_handmade_model(self.task_, train, y, ctx.seed, cv=self.cv, class_weight=weights)
        self.featurizer_, self.head_ = model.featurizer, model.head
        self.info_ = {k: v for k, v in model.info.items() if k != "thresholds"}
        if self.task_ == "multi-label":
            self.thresholds_ = np.asarray(model.head.thresholds, dtype=np.float32)

    def _predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        return linear_outputs("classification", self.featurizer_.transform(data), self.head_)

    def _predict_outputs(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        return linear_outputs(self.task_, self.featurizer_.transform(data), self.head_)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return {**save_handmade(self.featurizer_, "handmade."), **head_tensors(self.task_, self.head_)}

    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str], backbone=None,
                   task: str = "classification") -> "Classical":
        self.check_task(task)
        self.featurizer_ = load_handmade(tensors, "handmade.")
        self.head_ = head_from_tensors(task, tensors, 1 if task == "regression" else len(classes))
        return self._restored(classes, task, self.head_.thresholds)


@dataclass
class HybridParams(Params):
    Cs: list[float] = param([0.1, 1.0, 10.0, 100.0, 1000.0], "candidate inverse L2 strengths (every block is "
                            "scaled to rows of about unit length), one chosen by cross-validation", gt=0)
    cv: int = param(5, "folds of stratified cross-validation (fewer when a class is smaller)", ge=2)
    max_iter: int = param(3000, "solver iterations", ge=1)
    class_weight: Literal["balanced"] | dict | None = param(None, CLASS_WEIGHT_HELP, check=check_class_weight)


#: Ridge alphas of the hybrid's regression head: its blocks have rows of about unit length,
#: where the useful penalties are far smaller than on standardised features.
HYBRID_ALPHAS = tuple(float(a) for a in np.logspace(-4, 4, 17))


@STRATEGIES.register("hybrid", needs="features")
class Hybrid(Strategy):
    """Pre-trained features concatenated with the modality's hand-made features, each block
    scaled, and one regularised linear head of the task over both.

    Scaling: the backbone's features are standardised and divided by ``sqrt(D)``, so that a
    row has about unit length; TF-IDF rows are unit length already (word + character n-grams,
    each part L2-normalised, so the text block is divided by ``sqrt(2)``); pixels and MFCC
    statistics are standardised and divided by ``sqrt(V)``.  Each view then weighs about the same
    before the head's cross-validated regularisation chooses.  Data: labelled items of text,
    images or audio.  Shapes: ``(N, D)`` + ``(N, V)`` -> head ``(K, D + V)``.
    """

    name = "hybrid"
    description = ("pre-trained features beside hand-made ones (TF-IDF, pixels, MFCC statistics), each block "
                   "scaled, one regularised linear head (regularisation by cross-validation)")
    Params = HybridParams
    tasks = TASKS
    head_on_features = False

    def _blocks(self, data: Dataset, ctx: TransferContext):
        from scipy.sparse import csr_matrix, hstack

        F = (ctx.features(data).astype(np.float64) - self.mean_) / self.scale_
        H = self.featurizer_.transform(data)
        if self.featurizer_.sparse:
            return hstack([csr_matrix(F), H * self.handmade_weight_], format="csr")
        return np.hstack([F, (H - self.h_mean_) / self.h_scale_])

    def _fit(self, train: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        weights = loss_weights(self, y, ctx)
        F = ctx.features(train).astype(np.float64)
        scaler = fit_scaler(F)
        self.mean_, self.scale_ = scaler.mean_, scaler.scale_ * np.sqrt(F.shape[1])
        kind = handmade_for(train.modality)
        self.featurizer_: HandMade = (TfidfText(chars=True) if kind is TfidfText else kind()).fit(train)
        if self.featurizer_.sparse:
            self.handmade_weight_ = float(1.0 / np.sqrt(2.0))  # two unit-length parts (a float: float32 stays)
        else:
            h = fit_scaler(self.featurizer_.transform(train))
            self.h_mean_, self.h_scale_ = h.mean_, h.scale_ * np.sqrt(len(h.scale_))
        X = self._blocks(train, ctx)
        self.head_ = fit_head(self.task_, X, y, ctx.seed, Cs=tuple(self.Cs), cv=self.cv, scale=False,
                              max_iter=self.max_iter, class_weight=weights, alphas=HYBRID_ALPHAS)
        self.info_ = {**self.head_.info, "features": f"backbone features + {self.featurizer_.describe()}",
                      "dims": {"backbone": int(F.shape[1]), "handmade": int(X.shape[1] - F.shape[1])}}
        if self.task_ == "multi-label":
            self.thresholds_ = np.asarray(self.head_.thresholds, dtype=np.float32)

    def _predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        return linear_outputs("classification", self._blocks(data, ctx), self.head_)

    def _predict_outputs(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        return linear_outputs(self.task_, self._blocks(data, ctx), self.head_)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        out = {**save_handmade(self.featurizer_, "handmade."), **head_tensors(self.task_, self.head_),
               "backbone.mean": torch.from_numpy(np.asarray(self.mean_, np.float64)),
               "backbone.scale": torch.from_numpy(np.asarray(self.scale_, np.float64))}
        if self.featurizer_.sparse:
            out["handmade.weight"] = torch.tensor([self.handmade_weight_], dtype=torch.float64)
        else:
            out["handmade.mean"] = torch.from_numpy(np.asarray(self.h_mean_, np.float64))
            out["handmade.scale"] = torch.from_numpy(np.asarray(self.h_scale_, np.float64))
        return out

    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str], backbone=None,
                   task: str = "classification") -> "Hybrid":
        self.check_task(task)
        missing = [k for k in ("backbone.mean", "backbone.scale") if k not in tensors]
        if missing:
            raise UserInputError(f"the saved hybrid weights lack {', '.join(missing)}",
                                 hint="the weights file is incomplete or belongs to another strategy: fit again")
        scalers = {k: v for k, v in tensors.items() if k in ("handmade.weight", "handmade.mean", "handmade.scale")}
        self.featurizer_ = load_handmade({k: v for k, v in tensors.items() if k not in scalers}, "handmade.")
        self.mean_ = tensors["backbone.mean"].numpy()
        self.scale_ = tensors["backbone.scale"].numpy()
        if self.featurizer_.sparse:
            self.handmade_weight_ = float(tensors["handmade.weight"].reshape(-1)[0])
        else:
            self.h_mean_, self.h_scale_ = tensors["handmade.mean"].numpy(), tensors["handmade.scale"].numpy()
        self.head_ = head_from_tensors(task, tensors, 1 if task == "regression" else len(classes))
        return self._restored(classes, task, self.head_.thresholds)
