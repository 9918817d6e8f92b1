"""``linear-probe``: frozen backbone, a linear head on cached features, for every task.

The classic feature-extraction baseline of transfer learning (e.g. Kornblith et al., "Do
Better ImageNet Models Transfer Better?", CVPR 2019): features are standardised and the
L2 regularisation strength is chosen by cross-validation on the training set.  The fitted
scaler and head are folded into one linear layer ``(K, D)`` over raw features, the head format
every strategy shares (LP-FT starts from it).  Per task (:func:`transferkit.tasks.linear.fit_linear`):
classification a multinomial logistic regression (``K = C``); regression a ridge regression on
the standardised target, folded back into the target's units (``K = 1``); multi-label one
logistic regression per label (``K = L``), each label's decision threshold chosen on
out-of-fold predictions of the training items.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..data.dataset import Dataset
from ..errors import UserInputError
from ..tasks.linear import LinearFit, class_weights, fit_linear, fit_logistic, linear_outputs, softmax
from .base import STRATEGIES, Strategy, TransferContext
from .params import Params, param


def linear_head(weight: np.ndarray, bias: np.ndarray) -> torch.nn.Linear:
    """``Linear(D, C)`` in eval mode holding ``weight (C, D)`` and ``bias (C,)`` as float32."""
    head = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(np.asarray(weight, np.float32)))
        head.bias.copy_(torch.as_tensor(np.asarray(bias, np.float32)))
    return head.eval()


CLASS_WEIGHT_HELP = ("weight of each class in the loss: null (every item once), balanced (classification: "
                     "n_items / (n_classes * class count); multi-label: each label's positives weighted "
                     "n_negative / n_positive, clipped to [1, 100]) or {\"class or label\": weight} (multi-label: "
                     "the weight of that label's positives); refused for regression; the controls get the same")


def check_class_weight(value: Any) -> str | None:
    """A ``check`` for ``class_weight``: a dict's weights are positive numbers (its class names are
    checked against the training data at fit time, :func:`~transferkit.tasks.linear.class_weights`)."""
    if isinstance(value, dict):
        bad = [k for k, v in value.items()
               if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf")]
        if bad or not value:
            return "null, \"balanced\" or a non-empty {class: positive weight}"
    return None


def task_class_weights(strategy: str, spec: Any, task: str, y: np.ndarray, classes: list[str]) -> np.ndarray | None:
    """The weights a ``class_weight`` option gives the loss of ``task``
    (:func:`~transferkit.tasks.linear.class_weights`): ``(C,)`` per class (classification),
    ``(L,)`` per label's positives (multi-label); ``None`` when unset.

    Raises:
        UserInputError: ``class_weight`` set for a regression task (it has no classes).
    """
    if spec is None:
        return None
    if task == "regression":
        raise UserInputError(f"class_weight weighs classes, and a regression target has none: {strategy} cannot "
                             "apply it", hint="drop --class-weight / --param class_weight for a regression task")
    return class_weights(spec, y, list(classes))


def loss_weights(strategy: Strategy, y: np.ndarray, ctx: TransferContext) -> np.ndarray | None:
    """:func:`task_class_weights` of ``strategy``'s ``class_weight`` on its encoded training
    labels ``y`` (``(N,)`` classes or ``(N, L)`` label indicators): ``(C,)`` or ``(L,)``, or ``None``."""
    return task_class_weights(strategy.name, getattr(strategy, "class_weight", None), strategy.task_, y,
                              list(strategy.classes_))


@dataclass
class ProbeParams(Params):
    """Options of ``linear-probe`` (and ``adabn``)."""

    Cs: list[float] = param([1e-3, 1e-2, 1e-1, 1.0, 10.0], "candidate inverse L2 strengths (on standardised "
                                                           "features), one chosen by cross-validation", gt=0)
    cv: int = param(5, "folds of stratified cross-validation (fewer when a class is smaller)", ge=2)
    max_iter: int = param(2000, "L-BFGS iterations", ge=1)
    class_weight: Literal["balanced"] | dict | None = param(None, CLASS_WEIGHT_HELP, check=check_class_weight)


#: The tensors a saved probe of each task carries beyond ``head.weight`` and ``head.bias``.
TASK_TENSORS = {"classification": (), "regression": ("target.mean", "target.scale"),
                "multi-label": ("head.thresholds",)}


@STRATEGIES.register("linear-probe", needs="features")
class LinearProbe(Strategy):
    """Frozen-feature linear head: logistic regression, ridge regression or one logistic
    regression per label.

    Data: labelled items of any modality. Shapes: features ``(N, D)`` -> head ``(K, D)``, ``K``
    the classes (classification), 1 (regression) or the labels (multi-label).  After fitting a
    multi-label task, ``thresholds_`` ``(L,)``; a regression task, ``target_mean_`` and
    ``target_scale_`` (the training target's mean and standard deviation).
    Options: :class:`ProbeParams`.
    """

    name = "linear-probe"
    description = ("frozen backbone; logistic regression (ridge for regression, one per label for multi-label) "
                   "on cached features, regularisation by cross-validation")
    Params = ProbeParams
    uses_features = True
    tasks = ("classification", "regression", "multi-label")

    def _fit(self, train: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        weights = loss_weights(self, y, ctx)
        X = ctx.features(train)
        if self.task_ == "classification":
            W, b, self.info_ = fit_logistic(X, y, Cs=self.Cs, cv=self.cv, max_iter=self.max_iter, seed=ctx.seed,
                                            class_weight=weights)
            self.head_weight_ = W.astype(np.float32)
            self.head_bias_ = b.astype(np.float32)
            return
        options = {} if self.task_ == "regression" else {"Cs": self.Cs, "cv": self.cv, "max_iter": self.max_iter}
        fit = fit_linear(self.task_, X, y, seed=ctx.seed, class_weight=weights, **options)
        self.info_ = dict(fit.info)
        self.head_weight_ = np.asarray(fit.W, dtype=np.float32)
        self.head_bias_ = np.asarray(fit.b, dtype=np.float32)
        if self.task_ == "multi-label":
            self.thresholds_ = np.asarray(fit.thresholds, dtype=np.float32)
        else:
            self.target_mean_, self.target_scale_ = float(fit.target_mean), float(fit.target_scale)

    def _predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        X = ctx.features(data).astype(np.float64)
        return softmax(X @ self.head_weight_.T.astype(np.float64) + self.head_bias_)

    def _predict_outputs(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        regression = self.task_ == "regression"
        fit = LinearFit(W=self.head_weight_.astype(np.float64), b=self.head_bias_.astype(np.float64), info={},
                        thresholds=None if regression else self.thresholds_.astype(np.float64),
                        target_mean=self.target_mean_ if regression else None,
                        target_scale=self.target_scale_ if regression else None)
        return linear_outputs(self.task_, ctx.features(data).astype(np.float64), fit)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        out = {"head.weight": torch.from_numpy(self.head_weight_), "head.bias": torch.from_numpy(self.head_bias_)}
        if self.task_ == "multi-label":
            out["head.thresholds"] = torch.from_numpy(self.thresholds_)
        elif self.task_ == "regression":
            out["target.mean"] = torch.tensor([self.target_mean_], dtype=torch.float64)
            out["target.scale"] = torch.tensor([self.target_scale_], dtype=torch.float64)
        return out

    def torch_head(self) -> torch.nn.Module:
        """``Linear(D, K)`` over raw features, for every task: classification logits ``(N, C)``,
        multi-label logits ``(N, L)`` (the caller applies the sigmoid), regression ``(N, 1)`` values
        already in the target's units (the target's scaling is folded into the weights)."""
        self._check_fitted()
        return linear_head(self.head_weight_, self.head_bias_)

    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str], backbone=None,
                   task: str = "classification") -> "LinearProbe":
        """Restore the head of a probe of ``task`` (the run's card says which)."""
        self.check_task(task)
        if task == "classification":
            self.head_weight_ = tensors["head.weight"].numpy()
            self.head_bias_ = tensors["head.bias"].numpy()
            return self._restored(classes)
        missing = [k for k in ("head.weight", "head.bias", *TASK_TENSORS[task]) if k not in tensors]
        if missing:
            raise UserInputError(f"the saved linear-probe weights lack {', '.join(missing)}, which a {task} head needs",
                                 hint="the weights file is incomplete or belongs to another task: fit again")
        W, b = tensors["head.weight"].numpy(), tensors["head.bias"].numpy()
        k = 1 if task == "regression" else len(classes)
        if W.ndim != 2 or W.shape[0] != k or b.shape != (k,):
            raise UserInputError(f"the saved {task} head has shape {tuple(W.shape)} and bias {tuple(b.shape)}, "
                                 f"expected ({k}, D) and ({k},)", hint="the weights belong to another run: fit again")
        self.head_weight_, self.head_bias_ = W, b
        thresholds = None
        if task == "multi-label":
            thresholds = tensors["head.thresholds"].numpy()
            if thresholds.shape != (k,):
                raise UserInputError(f"the saved thresholds have shape {tuple(thresholds.shape)}, expected ({k},)",
                                     hint="the weights belong to another run: fit again")
        else:
            self.target_mean_ = float(tensors["target.mean"].numpy().reshape(-1)[0])
            self.target_scale_ = float(tensors["target.scale"].numpy().reshape(-1)[0])
        return self._restored(classes, task, thresholds)
