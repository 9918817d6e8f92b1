"""The strategy interface: an estimator in the scikit-learn sense.

Hyper-parameters are keyword arguments, declared once in the strategy's ``Params`` dataclass
(:mod:`.params`: type, default, range, help), coerced and checked at construction and stored
as attributes; ``fit`` returns ``self``; learned state ends in ``_``; using an unfitted
strategy raises :class:`~transferkit.errors.NotFittedError`.  A strategy sees the backbone and
the data through a :class:`TransferContext`, never through files or globals, so the same
object serves the transfer run and its random-init control.

What the pipeline, export and explanations may ask of any strategy is declared here, with a
default, so that no caller probes with ``hasattr``: :meth:`Strategy.check_labels`,
:attr:`Strategy.tunes_backbone`, :attr:`Strategy.transforms_features` with
:meth:`Strategy.transform`, :meth:`Strategy.source_only`, :meth:`Strategy.merged_for_export`
and :meth:`Strategy.torch_head`.
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
from .params import Params, build_params, describe_params

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

    Subclasses set ``name`` (their registry name), ``description`` (one line) and ``Params``
    (their options, :mod:`.params`), and implement ``_fit``, ``_predict_proba``,
    ``state_tensors`` and ``load_state``.
    """

    name: ClassVar[str] = ""
    #: One line for ``transferkit strategies``: what it does, and the paper it comes from.
    description: ClassVar[str] = ""
    #: The options: a dataclass of :func:`~transferkit.strategies.params.param` fields.
    Params: ClassVar[type[Params]] = Params
    #: True when the strategy only needs cached features of a frozen backbone.
    uses_features: ClassVar[bool] = True
    #: False for strategies that learn nothing from labels (zero-shot): the pipeline then
    #: accepts an unlabelled or absent training set and evaluates on the labelled data.
    needs_labels: ClassVar[bool] = True
    #: True for domain adaptation: ``fit`` also reads ``ctx.target`` (unlabelled target data).
    needs_target: ClassVar[bool] = False
    #: True when :meth:`transform` gives the strategy's own features (the domain-adaptation
    #: adapters): the pipeline then measures the domain distance on them too.
    transforms_features: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        """Options by keyword (``LinearProbe(cv=3)``), checked and coerced by ``Params``."""
        values = build_params(self.params_class(), params, f"strategy {self.name or type(self).__name__!r}")
        for k, v in values.as_dict().items():
            setattr(self, k, v)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        # help(), IDEs and inspect see the options as keyword-only arguments with their defaults
        own = vars(cls).get("__init__")
        if own is not None and any(p.kind == p.KEYWORD_ONLY for p in inspect.signature(own).parameters.values()):
            return  # a class with arguments of its own beside the options (distillation) keeps its signature
        defaults = cls.Params()
        cls.__signature__ = inspect.Signature([
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, n))
            for n in cls.Params.names()])

    # ----- scikit-learn conventions ---------------------------------------------------
    @classmethod
    def params_class(cls) -> type[Params]:
        """The dataclass declaring this strategy's options."""
        return cls.Params

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """JSON-able: name, description, data needs and every option (``transferkit strategies``)."""
        return {"name": cls.name, "description": cls.description,
                "needs": {"labels": cls.needs_labels, "unlabelled_target": cls.needs_target,
                          "backbone_training": not cls.uses_features},
                "params": describe_params(cls.params_class())}

    def get_params(self) -> dict[str, Any]:
        """Every option, defaults included, JSON-shaped (lists, never tuples)."""
        return {k: getattr(self, k) for k in self.params_class().names()}

    def clone(self) -> "Strategy":
        """A fresh, unfitted strategy with the same hyper-parameters."""
        return type(self)(**self.get_params())

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "Strategy":
        """A new strategy from a JSON dict of options (``config.json``, ``--param``); unknown names
        are refused with the closest known one."""
        return cls(**dict(params))

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

    # ----- optional abilities: declared here with their defaults, overridden where they apply ----
    # an optional hook with an empty default, not an abstract method
    def check_labels(self, data: Dataset) -> None:  # noqa: B027
        """Refuse labelled evaluation ``data`` the strategy cannot be scored on (zero-shot: a label
        its descriptions do not name); the default accepts any."""

    @property
    def tunes_backbone(self) -> bool:
        """True when fitting changes the backbone's weights in place (fine-tuning, adapters,
        domain adaptation with ``on="backbone"``): its pre-trained features then need a fresh
        backbone."""
        return False

    def transform(self, data: Dataset, ctx: TransferContext, domain: str = "target") -> np.ndarray:
        """The strategy's own features ``(N, H)`` of ``data`` (where :attr:`transforms_features`).

        Raises:
            NotImplementedError: a strategy whose prediction reads the backbone's features directly.
        """
        raise NotImplementedError(f"strategy {self.name!r} has no features of its own (transforms_features is False)")

    def source_only(self) -> "Strategy":
        """The same model with adaptation switched off (where :attr:`needs_target`): the comparison
        every domain-adaptation run reports.

        Raises:
            NotImplementedError: a strategy that does not adapt to a target domain.
        """
        raise NotImplementedError(f"strategy {self.name!r} does not adapt to a target domain")

    def merged_for_export(self) -> "Strategy":
        """The fitted strategy as one plain set of backbone weights and a head, for export;
        ``self`` unless it keeps separate adapters (``lora`` merges them, in place)."""
        self._check_fitted()
        return self

    def torch_head(self) -> torch.nn.Module:
        """The fitted head as a torch module, ``(N, D)`` backbone features -> ``(N, C)`` logits,
        in eval mode, such that ``softmax(head(backbone.forward_features(batch)))`` equals
        :meth:`predict_proba` (explanations and export differentiate or trace through it).

        Raises:
            UserInputError: a strategy whose prediction is not a head on backbone features.
        """
        raise UserInputError(f"strategy {self.name!r} has no head on backbone features to explain or export")
