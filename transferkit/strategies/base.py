"""The strategy interface: an estimator in the scikit-learn sense.

Hyper-parameters are keyword arguments stored unchanged and validated at construction;
``fit`` returns ``self``; learned state ends in ``_``; using an unfitted strategy raises
:class:`~transferkit.errors.NotFittedError`.  A strategy sees the backbone and the data through
a :class:`TransferContext`, never through files or globals, so the same object serves the
transfer run and its random-init control.
"""
from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from .._registry import Registry
from ..backbones.base import Backbone
from ..data.dataset import Dataset
from ..errors import NotFittedError, UserInputError

STRATEGIES: Registry = Registry("strategy")


@dataclass
class TransferContext:
    """What a strategy may use: the backbone, cached features, the seed and the device.

    Attributes:
        features: ``features(dataset) -> (N, D) float32``, cached on disk by content.
        notes: strings a strategy adds for the report.
        checkpoint_dir: where a strategy that trains writes its checkpoints (``None``: nowhere).
        resume: continue from the newest complete checkpoint in ``checkpoint_dir``.
        target: unlabelled data of the domain the model will meet, for the domain-adaptation
            strategies (``needs_target``); labels on it, if any, are never read.
    """

    backbone: Backbone
    features: Callable[[Dataset], np.ndarray]
    seed: int = 0
    device: str = "cpu"
    progress: bool | None = None
    notes: list[str] = field(default_factory=list)
    checkpoint_dir: str | Path | None = None
    resume: bool = True
    target: Dataset | None = None


class Strategy(ABC):
    """Base class of every adaptation strategy.

    Subclasses set ``name`` (their registry name) and implement ``_fit``, ``_predict_proba``,
    ``state_tensors`` and ``load_state``.
    """

    name: ClassVar[str] = ""
    #: True when the strategy only needs cached features of a frozen backbone.
    uses_features: ClassVar[bool] = True
    #: False for strategies that learn nothing from labels (zero-shot): the pipeline then
    #: accepts an unlabelled or absent training set and evaluates on the labelled data.
    needs_labels: ClassVar[bool] = True
    #: True for domain adaptation: ``fit`` also reads ``ctx.target`` (unlabelled target data).
    needs_target: ClassVar[bool] = False

    def __init__(self) -> None:  # subclasses declare their own keyword hyper-parameters
        pass

    # ----- scikit-learn conventions ---------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.KEYWORD_ONLY]

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._param_names()}

    def clone(self) -> "Strategy":
        """A fresh, unfitted strategy with the same hyper-parameters."""
        return type(self)(**self.get_params())

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "Strategy":
        names = set(cls._param_names())
        unknown = sorted(set(params) - names)
        if unknown:
            raise UserInputError(f"strategy {cls.name!r} has no option {', '.join(unknown)}",
                                 hint=f"its options are: {', '.join(sorted(names)) or 'none'}")
        return cls(**params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ----- fitting ------------------------------------------------------------------------
    def fit(self, train: Dataset, ctx: TransferContext) -> "Strategy":
        """Learn from labelled ``train``; returns ``self``."""
        if not train.labels:
            raise UserInputError(f"strategy {self.name!r} needs labelled training data")
        self.classes_ = sorted(set(train.labels))
        if len(self.classes_) < 2:
            raise UserInputError("need at least two classes to train a classifier")
        index = {c: i for i, c in enumerate(self.classes_)}
        y = np.array([index[c] for c in train.labels])
        self._fit(train, y, ctx)
        self.fitted_ = True
        return self

    def predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        """Class probabilities ``(N, C)`` in the order of ``classes_``."""
        self._check_fitted()
        return self._predict_proba(data, ctx)

    def predict(self, data: Dataset, ctx: TransferContext) -> list[str]:
        proba = self.predict_proba(data, ctx)
        return [self.classes_[i] for i in proba.argmax(1)]

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit() first")

    @abstractmethod
    def _fit(self, train: Dataset, y: np.ndarray, ctx: TransferContext) -> None: ...

    @abstractmethod
    def _predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray: ...

    # ----- persistence --------------------------------------------------------------------
    @abstractmethod
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The learned tensors, saved as safetensors in the run directory."""

    @abstractmethod
    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str], backbone: Backbone) -> "Strategy":
        """Restore what :meth:`state_tensors` saved; returns ``self``, fitted.

        ``backbone`` is the freshly loaded pre-trained backbone: a strategy that changed the
        backbone (fine-tuning, adapters) applies its saved weights to it here.
        """

    def _restored(self, classes: list[str]) -> "Strategy":
        """The end of every :meth:`load_state`: classes set, no fit facts, fitted; returns ``self``."""
        self.classes_ = list(classes)
        self.info_: dict[str, Any] = {}
        self.fitted_ = True
        return self

    def fit_info(self) -> dict[str, Any]:
        """JSON-able facts about the fit (chosen regularisation, epochs...), for metrics.json:
        a copy of ``info_``, which a strategy fills while fitting."""
        return dict(getattr(self, "info_", {}))

    def torch_head(self) -> torch.nn.Module:
        """The fitted head as a torch module, ``(N, D)`` backbone features -> ``(N, C)`` logits,
        in eval mode, such that ``softmax(head(backbone.forward_features(batch)))`` equals
        :meth:`predict_proba` (explanations and export differentiate or trace through it).

        Raises:
            UserInputError: a strategy whose prediction is not a head on backbone features.
        """
        raise UserInputError(f"strategy {self.name!r} has no head on backbone features to explain or export")
