"""The update's training: a linear head on frozen features, through THE training loop.

The head ``Linear(D, C)`` starts from the parent's (its ``C_old`` rows and biases unchanged;
rows for new classes start at zero, so an old class keeps its output index) and trains on the
cached features of the update's training items with one loss per strategy:

=========  ==========================================================================
naive      cross-entropy on the new data alone: the forgetting control
ewc        cross-entropy on the new data + ``ewc_lambda`` * the EWC penalty (:mod:`.ewc`)
lwf        cross-entropy on the new data + ``lwf_lambda`` * distillation of the parent's
           outputs on the new data (:mod:`.lwf`)
replay     cross-entropy on the new data and the replay memory together (:mod:`.memory`)
joint      cross-entropy on every training item still available (earlier steps' and new)
=========  ==========================================================================

With ``balance`` the cross-entropy weighs each class by ``N / (C * n_c)`` over the training
items, so a memory of 20 items per old class is not drowned by 800 new items per new class
(the bias of class-incremental replay, Wu et al., "Large Scale Incremental Learning", CVPR 2019).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..strategies.params import Params, param
from ..training import train
from ..training.optim import adamw
from .ewc import ewc_penalty
from .lwf import distillation_loss

CONTINUAL = ("naive", "ewc", "lwf", "replay", "joint")


@dataclass
class ContinualParams(Params):
    """Options of ``update --data`` (``--param KEY=VALUE``), every strategy."""

    epochs: int = param(30, "passes over the update's training items", ge=1)
    lr: float = param(0.01, "AdamW learning rate of the head", gt=0)
    batch_size: int = param(64, "items per step", ge=2)
    weight_decay: float = param(0.0, "AdamW decoupled weight decay", ge=0)
    balance: bool = param(True, "weigh each class by N / (C * n_c) in the cross-entropy")
    ewc_lambda: float = param(1000.0, "ewc: weight of the penalty 1/2 sum F (theta - theta*)^2", ge=0)
    lwf_lambda: float = param(1.0, "lwf: weight of the distillation term", ge=0)
    temperature: float = param(2.0, "lwf: distillation temperature", gt=0)
    memory_kind: Literal["items", "features"] = param("items", "replay: keep references to the items (texts, file "
                                                               "paths) or their backbone features")
    test_size: float = param(0.2, "share of --data held out as the new step's test set when no --test is given",
                             gt=0, lt=1)
    allow_class_clash: bool = param(False, "train although a new class name equals an old one but for case or "
                                           "spaces (they become two classes)")
    tune_backbone: bool = param(False, "a fine-tuned parent: also train the backbone tensors it tuned, on raw items "
                                       "(minutes, not seconds; bounded by max_steps)")
    backbone_lr: float = param(1e-4, "tune_backbone: AdamW learning rate of the backbone tensors", gt=0)
    max_steps: int = param(200, "tune_backbone: most optimizer steps", ge=1)
    fisher_items: int = param(64, "tune_backbone with ewc: items the sampled Fisher is estimated on", ge=1)
    naive_control: bool = param(True, "also train the naive head (cheap on cached features) and judge the "
                                      "strategy against it: did it reduce forgetting?")


@dataclass
class HeadData:
    """The update's training set on features.

    Attributes:
        X: ``(N, D)`` float32 features of every training item (new items first).
        y: ``(N,)`` int64 class indices in the new class list.
        old_logits: lwf: ``(N, C_old)`` the parent's logits for the same items, else ``None``.
        fisher, anchor: ewc: ``{"weight": (C_old, D), "bias": (C_old,)}`` each, else ``None``.
    """

    X: np.ndarray
    y: np.ndarray
    old_logits: np.ndarray | None = None
    fisher: dict[str, torch.Tensor] | None = None
    anchor: dict[str, torch.Tensor] | None = None


def initial_head(weight: np.ndarray, bias: np.ndarray, n_classes: int) -> torch.nn.Linear:
    """``Linear(D, n_classes)``: the parent's ``weight (C_old, D)`` and ``bias`` in the first rows,
    zeros for the new classes."""
    c_old, d = weight.shape
    head = torch.nn.Linear(d, n_classes)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[:c_old] = torch.as_tensor(np.asarray(weight, np.float32))
        head.bias[:c_old] = torch.as_tensor(np.asarray(bias, np.float32))
    return head


def train_head(head: torch.nn.Linear, data: HeadData, strategy: str, p: ContinualParams, seed: int
               ) -> dict[str, Any]:
    """Train ``head`` in place on ``data`` with ``strategy``'s loss (module docstring) through
    :func:`transferkit.training.train`; returns facts for ``metrics.json``."""
    if strategy not in CONTINUAL:
        raise ValueError(f"unknown continual strategy {strategy!r}")
    X = torch.as_tensor(np.asarray(data.X, np.float32))
    y = torch.as_tensor(np.asarray(data.y, np.int64))
    C = head.out_features
    weight = None
    if p.balance:
        counts = torch.bincount(y, minlength=C).float()
        weight = torch.where(counts > 0, len(y) / (int((counts > 0).sum()) * counts.clamp(min=1)), 0.0)
    old = None if data.old_logits is None else torch.as_tensor(np.asarray(data.old_logits, np.float32))
    terms: dict[str, float] = {}

    def step(idx: np.ndarray) -> torch.Tensor:
        i = torch.as_tensor(idx)
        logits = head(X[i])
        loss = F.cross_entropy(logits, y[i], weight=weight)
        if strategy == "lwf" and old is not None and p.lwf_lambda > 0:
            d = distillation_loss(logits, old[i], p.temperature)
            terms["distillation"] = float(d.detach())
            loss = loss + p.lwf_lambda * d
        if strategy == "ewc" and data.fisher is not None and p.ewc_lambda > 0:
            pen = ewc_penalty(head, data.anchor, data.fisher)
            terms["ewc_penalty"] = float(pen.detach())
            loss = loss + p.ewc_lambda * pen
        return loss

    opt = adamw(list(head.parameters()), lr=p.lr, weight_decay=p.weight_decay)
    state = train(head, step, len(y), opt, epochs=p.epochs, batch_size=min(p.batch_size, max(len(y), 2)),
                  seed=seed, progress=False, desc=f"update ({strategy})", clip=None)
    head.eval()
    with torch.no_grad():
        train_acc = float((head(X).argmax(1) == y).float().mean())
    return {"n_train": int(len(y)), "epochs": p.epochs, "steps": state.step,
            "final_loss": (state.history[-1].get("loss") if state.history else None),
            "train_accuracy": round(train_acc, 4), **{f"last_{k}": v for k, v in terms.items()}}
