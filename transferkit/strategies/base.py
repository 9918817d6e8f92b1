"""The strategy interface: an estimator in the scikit-learn sense.

Hyper-parameters are keyword arguments, declared once in the strategy's ``Params`` dataclass
(:mod:`.params`: type, default, range, help), coerced and checked at construction and stored
as attributes; ``fit`` returns ``self``; learned state ends in ``_``; using an unfitted
strategy raises :class:`~transferkit.errors.NotFittedError`.  A strategy sees the backbone and
the data through a :class:`TransferContext`, never through files or globals, so the same
object serves the transfer run and its random-init control.

Every strategy declares the tasks it handles (:attr:`Strategy.tasks`; classification unless it
says more): :meth:`Strategy.check_task`, called by :meth:`Strategy.fit` and at the end of every
:meth:`Strategy.load_state`, refuses any other with a message naming the strategies that handle it.

What the pipeline, export and explanations may ask of any strategy is declared here, with a
default, so that no caller probes with ``hasattr``: :meth:`Strategy.check_labels`,
:attr:`Strategy.tunes_backbone`, :attr:`Strategy.transforms_features` with
:meth:`Strategy.transform`, :meth:`Strategy.source_only`, :meth:`Strategy.candidate_outputs`,
:meth:`Strategy.merged_for_export` and :meth:`Strategy.torch_head`.
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
from ..tasks import get_task
from .params import Params, build_params, describe_params

STRATEGIES: Registry = Registry("strategy")


def strategies_for(task: str) -> list[str]:
    """Names of the registered strategies whose :attr:`Strategy.tasks` include ``task``."""
    return [e.name for e in STRATEGIES if task in e.obj.tasks]


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
    ``state_tensors`` and ``load_state``; one that handles more than classification lists the
    tasks in ``tasks`` and implements ``_predict_outputs`` for them.
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
    #: The tasks (:data:`transferkit.tasks.TASKS` names) the strategy can learn; anything else is
    #: refused by :meth:`check_task` before a model loads.
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    #: False where the prediction is not a head on the backbone's features alone (models on
    #: hand-made features): :meth:`torch_head` then refuses, and with it explanations and export.
    head_on_features: ClassVar[bool] = True

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
                "tasks": list(cls.tasks),
                "params": describe_params(cls.params_class())}

    @classmethod
    def check_task(cls, task: str) -> None:
        """Refuse a task this strategy cannot learn, naming the strategies that can.

        Raises:
            UserInputError: an unknown task name, or one not in :attr:`tasks`.
        """
        get_task(task)  # an unknown name: the registry's "did you mean"
        if task in cls.tasks:
            return
        able = strategies_for(task)
        raise UserInputError(f"strategy {cls.name!r} handles {', '.join(cls.tasks)}; for {task} use: "
                             f"{', '.join(able) or 'no registered strategy'}",
                             hint=f"pass --strategy {able[0]}" if able else None)

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
        """Learn from labelled ``train`` (of ``train.task``); returns ``self``.

        Sets ``task_``, ``classes_`` (class names; label names for multi-label; ``[]`` for
        regression) and ``thresholds_`` (``(L,)`` per-label decision thresholds for multi-label,
        set by ``_fit``; ``None`` otherwise), and hands ``_fit`` the labels encoded by the task:
        ``(N,)`` int for classification, ``(N,)`` float64 for regression, ``(N, L)`` uint8 for
        multi-label.
        """
        if not train.labels:
            raise UserInputError(f"strategy {self.name!r} needs labelled training data")
        task = train.task
        self.check_task(task)
        classes = task_classes("", train)
        self.task_, self.classes_, self.thresholds_ = task, classes, None
        y = get_task(task).encode(list(train.labels), classes)
        self._fit(train, y, ctx)
        self.fitted_ = True
        return self

    def predict_outputs(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        """The task's outputs: classification ``(N, C)`` probabilities in the order of
        ``classes_``; regression ``(N,)`` values in the target's units; multi-label ``(N, L)``
        per-label probabilities (decided with ``thresholds_``)."""
        self._check_fitted()
        if self.task_ == "classification":
            return self._predict_proba(data, ctx)
        return self._predict_outputs(data, ctx)

    def predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        """Class probabilities ``(N, C)`` in the order of ``classes_`` (multi-label: ``(N, L)``
        per-label probabilities, each row not summing to one).

        Raises:
            UserInputError: a regression model (it predicts values: :meth:`predict_outputs`).
        """
        self._check_fitted()
        if self.task_ == "regression":
            raise UserInputError(f"this {self.name} model predicts numbers (regression), not probabilities",
                                 hint="use predict_outputs() or predict()")
        return self.predict_outputs(data, ctx)

    def predict(self, data: Dataset, ctx: TransferContext) -> list:
        """One decision per item: a class name, a number (regression) or a sorted tuple of label
        names (multi-label, each label whose probability reaches its threshold)."""
        outputs = self.predict_outputs(data, ctx)
        if self.task_ == "classification":
            return [self.classes_[i] for i in outputs.argmax(1)]
        return get_task(self.task_).decide(outputs, self.thresholds_, classes=self.classes_)

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit() first")

    @abstractmethod
    def _fit(self, train: Dataset, y: np.ndarray, ctx: TransferContext) -> None: ...

    @abstractmethod
    def _predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray: ...

    def _predict_outputs(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        """The outputs of a task other than classification (see :meth:`predict_outputs`); only
        strategies whose :attr:`tasks` go beyond classification override it."""
        raise NotImplementedError(f"strategy {self.name!r} has no {self.task_} outputs")

    # ----- persistence --------------------------------------------------------------------
    @abstractmethod
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The learned tensors, saved as safetensors in the run directory."""

    @abstractmethod
    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str], backbone: Backbone,
                   task: str = "classification") -> "Strategy":
        """Restore what :meth:`state_tensors` saved for a model of ``task`` (the run's card says
        which; runs written before tasks existed are classification); returns ``self``, fitted.

        ``backbone`` is the freshly loaded pre-trained backbone: a strategy that changed the
        backbone (fine-tuning, adapters) applies its saved weights to it here.  Every
        implementation ends in :meth:`_restored`, which refuses a task the strategy does not
        handle (a hand-edited card).
        """

    def _restored(self, classes: list[str], task: str = "classification",
                  thresholds: np.ndarray | None = None) -> "Strategy":
        """The end of every :meth:`load_state`: task, classes and (multi-label) thresholds set, no
        fit facts, fitted; returns ``self``.

        Raises:
            UserInputError: ``task`` is not one of :attr:`tasks`.
        """
        self.check_task(task)
        self.task_, self.classes_, self.thresholds_ = task, list(classes), thresholds
        self.info_: dict[str, Any] = {}
        self.fitted_ = True
        return self

    def fit_info(self) -> dict[str, Any]:
        """JSON-able facts about the fit (chosen regularisation, epochs...), for metrics.json:
        a copy of ``info_``, which a strategy fills while fitting."""
        return dict(getattr(self, "info_", {}))

    def validation_items(self) -> np.ndarray | None:
        """Indices ``(V,)`` into the training set given to :meth:`fit` of the items the fit held out
        for validation (early stopping may have read them; no gradient step did), or ``None`` for a
        fit that held nothing out.  The pipeline's model selection scores every candidate on
        exactly these items when the strategy is too costly to cross-validate (fine-tuning)."""
        idx = getattr(self, "validation_idx_", None)
        return None if idx is None else np.asarray(idx, dtype=np.int64)

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

    def candidate_outputs(self, data: Dataset, ctx: TransferContext, release: bool = False) -> dict[str, np.ndarray]:
        """Outputs on ``data`` of every candidate a choosing strategy fitted and scored
        (``auto-adapt``), by candidate name; ``release`` frees them afterwards.  ``{}`` for the others."""
        return {}

    def merged_for_export(self) -> "Strategy":
        """The fitted strategy as one plain set of backbone weights and a head, for export;
        ``self`` unless it keeps separate adapters (``lora`` merges them, in place)."""
        self._check_fitted()
        return self

    def torch_head(self) -> torch.nn.Module:
        """The fitted head as a torch module in eval mode, ``(N, D)`` backbone features -> ``(N, K)``
        pre-activation outputs, such that the task's activation of ``head(backbone.forward_features(batch))``
        equals :meth:`predict_outputs` (explanations and export differentiate or trace through it):
        classification ``softmax`` of ``(N, C)`` logits; multi-label ``sigmoid`` of ``(N, L)`` logits;
        regression ``(N, 1)`` taken as is (values in the target's units).  A strategy returns one
        only for the tasks it learns.

        Raises:
            UserInputError: a strategy whose prediction is not a head on backbone features.
        """
        raise UserInputError(f"strategy {self.name!r} has no head on backbone features to explain or export")


def task_classes(key: str, data: Dataset) -> list[str]:
    """The classes of ``data``'s task (labels for multi-label, ``[]`` for regression), refusing data
    with nothing to learn; ``key`` names the task in messages (a joint fit's label column).

    Raises:
        UserInputError: fewer than two classes (labels), or a constant regression target.
    """
    where = f" (task {key!r})" if key else ""
    if data.task == "classification":
        classes = sorted(set(data.labels))
        if len(classes) < 2:
            raise UserInputError(f"need at least two classes to train a classifier{where}")
    elif data.task == "multi-label":
        classes = list(data.classes)
        if len(classes) < 2:
            raise UserInputError(f"multi-label training data{where} names only the label {classes}: every item has "
                                 "it, so there is nothing to learn", hint="use data with at least two labels")
    else:
        classes = []
        if len({float(v) for v in data.labels}) < 2:
            raise UserInputError(f"the regression target{where} is the same for every training item: nothing to "
                                 "learn", hint="check the label column")
    return classes
