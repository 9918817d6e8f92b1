"""The task's side of a fine-tuning fit: what the head outputs, what it learns from, how it is scored.

The fine-tuning family (``finetune``, ``gradual``, ``lp-ft``, ``l2sp``, ``lora``) trains a backbone
and a linear head ``Linear(D, K)`` in the one training loop; everything that depends on the task
lives in one :class:`TaskHead` per task:

============== ======== ============================= ============================== ===================
task           K        training target               loss                           outputs
============== ======== ============================= ============================== ===================
classification C        class index ``(N,)``          cross-entropy, class weights   softmax ``(N, C)``
regression     1        ``(y - mean) / std`` ``(N,)`` MSE on the standardised target value in user units
multi-label    L        0/1 indicators ``(N, L)``     BCE with logits, ``pos_weight`` sigmoid ``(N, L)``
============== ======== ============================= ============================== ===================

``mean`` and ``std`` are those of the part of the training data the loop trains on (never of the
validation split), so that a regression loss is comparable across targets of any unit (and across
the tasks of a joint fit).  After training, :meth:`TaskHead.finish` folds the standardisation into
the head (regression: the head then outputs values in the user's units, as the linear probe's does)
or chooses per-label decision thresholds on the validation split (multi-label, never on test).

Saved tensors are the linear probe's (``probe.TASK_TENSORS``): ``head.weight``, ``head.bias``,
plus ``target.mean`` / ``target.scale`` (regression) or ``head.thresholds`` (multi-label).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserInputError
from ..tasks import get_task
from ..tasks._multilabel import best_f1_threshold
from .probe import TASK_TENSORS


def _scores(proba: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> dict[str, float]:
    """Validation loss (mean cross-entropy; with ``weight (C,)``, weighted as the training loss, so
    that early stopping watches the loss being minimised) and accuracy of ``(N, C)`` probabilities."""
    p = np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0)
    if weight is None:
        loss = float(-np.log(p).mean())
    else:  # torch's weighted mean: sum(w_y * nll) / sum(w_y)
        w = np.asarray(weight, dtype=np.float64)[y]
        loss = float(-(w * np.log(p)).sum() / w.sum())
    return {"loss": loss, "accuracy": float((proba.argmax(1) == y).mean())}


class TaskHead:
    """One task's head in a fine-tuning fit (this class: classification).

    Args:
        classes: class names (classification), label names (multi-label), ``[]`` (regression).
        weights: ``class_weight`` resolved for the task: ``(C,)`` per-class weights or ``(L,)``
            weights of each label's positive items; ``None``: unweighted.
    """

    task: ClassVar[str] = "classification"
    #: the validation metric logged beside the loss (``val_<metric>``)
    metric: ClassVar[str] = "accuracy"

    def __init__(self, classes: list[str], weights: np.ndarray | None = None):
        self.classes = list(classes)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.thresholds: np.ndarray | None = None
        self._weights_t: torch.Tensor | None = None

    @property
    def width(self) -> int:
        """K, the head's outputs."""
        return len(self.classes)

    def encode(self, labels: list) -> np.ndarray:
        """The task's encoding of ``labels``: ``(N,)`` int, ``(N,)`` float64 or ``(N, L)`` uint8."""
        return get_task(self.task).encode(list(labels), self.classes)

    def bind(self, fit_labels: list, device: torch.device) -> torch.Tensor:
        """Prepare training on the items with ``fit_labels``; returns their targets on ``device``."""
        self._weights_t = None if self.weights is None else torch.tensor(self.weights, dtype=torch.float32,
                                                                         device=device)
        return torch.as_tensor(self.encode(fit_labels), device=device)

    def release(self) -> None:
        """Drop what only training needs (tensors on the device)."""
        self._weights_t = None

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss of ``logits (B, K)`` (float32) against the targets ``y`` of :meth:`bind`."""
        return F.cross_entropy(logits, y, weight=self._weights_t)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """The task's outputs of ``logits (B, K)``: here softmax ``(B, C)``."""
        return torch.softmax(logits, dim=1)

    def scores(self, outputs: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """``{"loss", metric}`` of :meth:`activate`'s outputs against encoded labels ``y``; the
        loss is the training loss's (same weights), for early stopping."""
        return _scores(outputs, y, self.weights)

    def finish(self, head: nn.Linear, val_outputs: np.ndarray | None, y_val: np.ndarray | None,
               notes: list[str], strategy: str) -> dict[str, Any]:
        """After training: adjust ``head`` in place and choose decision rules; returns facts for ``info_``."""
        return {}

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """What a saved model of the task carries beside ``head.weight`` and ``head.bias``."""
        return {}

    def load_extras(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`extra_tensors` (their presence and shapes are checked by :func:`load_task_head`)."""


class RegressionHead(TaskHead):
    """One output, trained on the standardised target; folded into the user's units by :meth:`finish`."""

    task = "regression"
    metric = "rmse"

    def __init__(self, classes: list[str], weights: np.ndarray | None = None):
        super().__init__([], None)
        self.mean, self.scale = 0.0, 1.0
        self.folded = False  # True once the head outputs values in the target's units

    @property
    def width(self) -> int:
        return 1

    def bind(self, fit_labels: list, device: torch.device) -> torch.Tensor:
        y = self.encode(fit_labels)
        mean, scale = float(y.mean()), float(y.std())
        if not scale > 0:
            raise UserInputError("the regression target is the same for every item the model trains on (after the "
                                 "validation split): nothing to learn", hint="add data, or pass val_fraction=0")
        self.mean, self.scale, self.folded = mean, scale, False
        return torch.tensor((y - mean) / scale, dtype=torch.float32, device=device)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits[:, 0], y)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B,)`` values in the target's units (float64)."""
        z = logits[:, 0].double()
        return z if self.folded else z * self.scale + self.mean

    def scores(self, outputs: np.ndarray, y: np.ndarray) -> dict[str, float]:
        err = np.asarray(outputs, np.float64) - np.asarray(y, np.float64)
        return {"loss": float(np.mean((err / self.scale) ** 2)), "rmse": float(np.sqrt(np.mean(err ** 2)))}

    def finish(self, head: nn.Linear, val_outputs, y_val, notes: list[str], strategy: str) -> dict[str, Any]:
        """Fold ``value = z * scale + mean`` into the head: it then outputs the target's units
        (what ``torch_head`` gives export, as the linear probe's head does)."""
        if not self.folded:
            with torch.no_grad():
                head.weight.mul_(self.scale)
                head.bias.mul_(self.scale).add_(self.mean)
            self.folded = True
        return {"target_mean": self.mean, "target_scale": self.scale}

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {"target.mean": torch.tensor([self.mean], dtype=torch.float64),
                "target.scale": torch.tensor([self.scale], dtype=torch.float64)}

    def load_extras(self, tensors: dict[str, torch.Tensor]) -> None:
        self.mean = float(tensors["target.mean"].double().reshape(-1)[0])
        self.scale = float(tensors["target.scale"].double().reshape(-1)[0])
        self.folded = True  # saved heads are in the target's units


class MultiLabelHead(TaskHead):
    """One logit per label, BCE with each label's positives weighted; thresholds chosen on validation."""

    task = "multi-label"
    metric = "micro_f1"

    def bind(self, fit_labels: list, device: torch.device) -> torch.Tensor:
        super().bind(fit_labels, device)
        return torch.as_tensor(self.encode(fit_labels).astype(np.float32), device=device)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, y, pos_weight=self._weights_t)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def scores(self, outputs: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """BCE of the probabilities (each label's positives weighted as in training) and micro-F1
        at 0.5 (the thresholds are chosen once, after training)."""
        p = np.clip(np.asarray(outputs, np.float64), 1e-12, 1 - 1e-12)
        y = np.asarray(y, np.float64)
        w = np.ones(y.shape[1]) if self.weights is None else self.weights
        loss = float(-(w * y * np.log(p) + (1 - y) * np.log1p(-p)).mean())
        pred = p >= 0.5
        tp = float((pred * y).sum())
        denom = float(pred.sum() + y.sum())
        return {"loss": loss, "micro_f1": 2 * tp / denom if denom else 0.0}

    def finish(self, head: nn.Linear, val_outputs, y_val, notes: list[str], strategy: str) -> dict[str, Any]:
        """Per label, the threshold that maximises F1 on the validation split (the test set never
        sees it); 0.5 for a label without positives there, and for every label without a split."""
        n = self.width
        self.thresholds = np.full(n, 0.5, dtype=np.float32)
        if val_outputs is None or y_val is None:
            notes.append(f"{strategy}: no validation split, so every label's decision threshold is 0.5 (thresholds "
                         "are chosen on validation items, never on test).")
            return {"threshold_rule": "0.5 for every label (no validation split)"}
        defaulted = []
        for j in range(n):
            if y_val[:, j].sum() == 0:
                defaulted.append(self.classes[j])
                continue
            self.thresholds[j] = best_f1_threshold(y_val[:, j], np.asarray(val_outputs)[:, j])[0]
        if defaulted:
            notes.append(f"{strategy}: no validation item carries {', '.join(defaulted)}; threshold 0.5 for "
                         f"{'it' if len(defaulted) == 1 else 'them'}.")
        return {"threshold_rule": "per label, maximises F1 on the validation split",
                "thresholds": [float(t) for t in self.thresholds]}

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {"head.thresholds": torch.as_tensor(self.thresholds, dtype=torch.float32).clone()}

    def load_extras(self, tensors: dict[str, torch.Tensor]) -> None:
        self.thresholds = tensors["head.thresholds"].float().numpy().copy()


HEADS: dict[str, type[TaskHead]] = {"classification": TaskHead, "regression": RegressionHead,
                                    "multi-label": MultiLabelHead}


def make_task_head(task: str, classes: list[str], weights: np.ndarray | None = None) -> TaskHead:
    """The :class:`TaskHead` of ``task`` (``classification``, ``regression``, ``multi-label``)."""
    return HEADS[task](classes, weights)


def head_tensor_names(task: str) -> tuple[str, ...]:
    """The names a saved head of ``task`` holds: ``head.weight``, ``head.bias`` and the task's own."""
    return ("head.weight", "head.bias", *TASK_TENSORS[task])


def load_task_head(tensors: dict[str, torch.Tensor], task: str, classes: list[str], num_features: int,
                   strategy: str) -> tuple[nn.Linear, TaskHead]:
    """The saved head ``Linear(D, K)`` (eval mode) and its :class:`TaskHead`, checked against the task,
    the classes and the backbone's width ``D``.

    Raises:
        UserInputError: a tensor the task needs is missing, or a shape does not fit.
    """
    missing = [k for k in head_tensor_names(task) if k not in tensors]
    if missing:
        raise UserInputError(f"the saved {strategy} state lacks {', '.join(missing)}, which a {task} head needs",
                             hint="the weights file is incomplete or belongs to another task: fit again")
    unit = make_task_head(task, classes)
    k = unit.width
    weight, bias = tensors["head.weight"], tensors["head.bias"]
    if weight.ndim != 2 or tuple(weight.shape) != (k, num_features) or tuple(bias.shape) != (k,):
        raise UserInputError(f"the saved head has shape {tuple(weight.shape)}, expected ({k}, {num_features})",
                             hint="load the run with the backbone it was trained with, or fit again")
    if task == "multi-label" and tuple(tensors["head.thresholds"].shape) != (k,):
        raise UserInputError(f"the saved thresholds have shape {tuple(tensors['head.thresholds'].shape)}, "
                             f"expected ({k},)", hint="the weights belong to another run: fit again")
    unit.load_extras(tensors)
    head = nn.Linear(num_features, k)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return head.eval(), unit


# ----- the heads of one fit (one task, or several: FineTune.fit_joint) -------------------------------
@dataclass
class HeadRun:
    """One task of a fit: its head and what it trains on.

    Attributes:
        key: the task's name in a joint fit (the label column); ``""`` for a single-task fit.
        member: the strategy object that receives the fitted head.
        data: the task's training data (every training item, its own labels).
        unit: the task's :class:`TaskHead`.
        weight: the task's weight in the summed loss (1 for a single task).
        head: ``Linear(D, K)`` once built.
        y_fit: encoded labels of the items trained on; ``y_val``: of the validation items (or None).
        facts: what the fit learnt about this task, for its ``info_`` (lp-ft's probe, thresholds...).
    """

    key: str
    member: Any
    data: Any
    unit: TaskHead
    weight: float = 1.0
    head: nn.Linear | None = None
    y_fit: np.ndarray | None = None
    y_val: np.ndarray | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def head_outputs(data: Any, backbone: Any, runs: list[HeadRun], device: torch.device, step: int) -> list[np.ndarray]:
    """Each task's outputs on ``data`` in eval mode, one backbone pass for all heads, in batches of
    ``step`` items of similar size (less padding): ``(N, C)`` probabilities, ``(N,)`` values or
    ``(N, L)`` per-label probabilities, float64 (:meth:`TaskHead.activate` of each head's logits)."""
    module = backbone.module
    was_training = module.training, [r.head.training for r in runs]
    module.eval()
    for r in runs:
        r.head.eval()
    order = sorted(range(len(data)), key=lambda i: -backbone.sort_key(data.inputs[i]))
    out = [np.zeros((len(data),) if r.unit.task == "regression" else (len(data), r.head.out_features),
                    dtype=np.float64) for r in runs]
    try:
        with torch.no_grad():
            for s in range(0, len(order), step):
                rows = order[s:s + step]
                batch = backbone.prepare([data.inputs[i] for i in rows]).to(device)
                feats = backbone.forward_features(batch)
                for r, o in zip(runs, out):
                    o[rows] = r.unit.activate(r.head(feats).float()).double().cpu().numpy()
    finally:
        module.train(was_training[0])
        for r, flag in zip(runs, was_training[1]):
            r.head.train(flag)
    return out
