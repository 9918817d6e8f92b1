"""The update of a fine-tuned run with ``tune_backbone``: the backbone tensors the parent tuned and
the head train together on raw items, through THE training loop, with the strategy's loss.

What trains: exactly the backbone parameters the parent's run saved as tuned (its unfrozen
layer groups: ``names``) and the head; every other backbone parameter stays frozen, and the
backbone runs in eval mode (no dropout, BatchNorm on its running statistics), so the objective is
the model's own prediction.  The cost is bounded by ``max_steps`` optimizer steps.

EWC over the backbone: the per-item Jacobian of every class that :func:`.ewc.fisher_diagonal`
takes exactly on features is out of reach through a whole backbone, so the Fisher is estimated
as Kirkpatrick et al. (2017) did, with one label drawn from the model's prediction per item, over
at most ``fisher_items`` items.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.base import Backbone
from ..errors import UserInputError
from ..model import TransferModel
from ..strategies._tuning import only_training
from ..training import train
from ..training.optim import adamw
from .ewc import ewc_penalty
from .head import ContinualParams, HeadData, initial_head
from .lwf import distillation_loss


class TunedNetwork(nn.Module):
    """``items -> logits (B, C)``: the backbone's pooled features and a linear head."""

    def __init__(self, backbone: Backbone, head: nn.Linear):
        super().__init__()
        self._backbone = backbone
        self.body = backbone.module  # registered: the loop's train mode and checkpoints see it
        self.head = head

    def train(self, mode: bool = True) -> "TunedNetwork":
        super().train(mode)
        self.body.eval()  # no dropout, BatchNorm on running statistics: the model's own predictions
        return self

    def forward(self, items: list[Any]) -> torch.Tensor:
        feats = self._backbone.forward_features(self._backbone.prepare(list(items))).float()
        return self.head(feats)


def tuned_parameters(net: TunedNetwork, names: list[str]) -> dict[str, nn.Parameter]:
    """The parameters that train: ``body.<name>`` for the parent's tuned ``names`` and the head."""
    own = dict(net.body.named_parameters())
    out = {f"body.{n}": own[n] for n in names if n in own}
    out.update({f"head.{n}": p for n, p in net.head.named_parameters()})
    return out


def sampled_fisher(net: TunedNetwork, inputs: list[Any], names: list[str], n_items: int, seed: int
                   ) -> dict[str, torch.Tensor]:
    """The diagonal Fisher of the trainable parameters, one label drawn from the model per item,
    over at most ``n_items`` of ``inputs`` (seeded): ``{"body.<name>" | "head.<name>": tensor}``."""
    params = tuned_parameters(net, names)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(inputs), min(n_items, len(inputs)), replace=False)
    total = {k: torch.zeros_like(p) for k, p in params.items()}
    net.eval()
    with only_training(net, params.values()):
        for i in pick:
            logits = net([inputs[int(i)]])[0]
            y = int(rng.choice(len(logits), p=torch.softmax(logits.detach().double(), 0).numpy()))
            grads = torch.autograd.grad(torch.log_softmax(logits, 0)[y], list(params.values()), allow_unused=True)
            for k, g in zip(params, grads):
                if g is not None:
                    total[k] += g.detach() ** 2
    return {k: v / len(pick) for k, v in total.items()}


def tune_network(net: TunedNetwork, names: list[str], inputs: list[Any], y: np.ndarray, strategy: str,
                 p: ContinualParams, seed: int, *, old_logits: np.ndarray | None = None,
                 fisher: dict[str, torch.Tensor] | None = None,
                 anchor: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Train ``net``'s tuned backbone parameters and head on ``inputs`` / ``y`` with the loss of
    ``strategy`` (:mod:`.head`'s table; the memory or earlier items are already in ``inputs``)."""
    params = tuned_parameters(net, names)
    target = torch.as_tensor(np.asarray(y, np.int64))
    C = net.head.out_features
    weight = None
    if p.balance:
        counts = torch.bincount(target, minlength=C).float()
        weight = torch.where(counts > 0, len(target) / (int((counts > 0).sum()) * counts.clamp(min=1)), 0.0)
    old = None if old_logits is None else torch.as_tensor(np.asarray(old_logits, np.float32))
    terms: dict[str, float] = {}

    def step(idx: np.ndarray) -> torch.Tensor:
        i = torch.as_tensor(idx)
        logits = net([inputs[int(k)] for k in idx])
        loss = F.cross_entropy(logits, target[i], weight=weight)
        if strategy == "lwf" and old is not None and p.lwf_lambda > 0:
            d = distillation_loss(logits, old[i], p.temperature)
            terms["distillation"] = float(d.detach())
            loss = loss + p.lwf_lambda * d
        if strategy == "ewc" and fisher is not None and p.ewc_lambda > 0:
            pen = ewc_penalty(net, anchor, fisher)
            terms["ewc_penalty"] = float(pen.detach())
            loss = loss + p.ewc_lambda * pen
        return loss

    body = [q for k, q in params.items() if k.startswith("body.")]
    opt = adamw([{"params": body, "lr": p.backbone_lr}, {"params": list(net.head.parameters()), "lr": p.lr}],
                lr=p.lr, weight_decay=p.weight_decay)
    with only_training(net, params.values()):
        state = train(net, step, len(target), opt, epochs=p.epochs, max_steps=p.max_steps,
                      batch_size=min(p.batch_size, max(len(target), 2)), seed=seed, progress=False,
                      desc=f"update ({strategy}, backbone)", precision="fp32")
    net.eval()
    return {"n_train": int(len(target)), "steps": state.step, "tuned_backbone_tensors": len(body),
            "final_loss": (state.history[-1].get("loss") if state.history else None),
            **{f"last_{k}": v for k, v in terms.items()}}


def updated_model(parent: TransferModel, saved: dict[str, torch.Tensor], head: nn.Linear, classes: list[str],
                  backbone: Backbone, seed: int, tuned: list[str] | None = None) -> TransferModel:
    """The parent's strategy restored with the new head (and, ``tuned``, those backbone tensors as
    ``backbone`` now holds them) for ``classes``, as ``tk.load`` will rebuild it from the new run."""
    tensors = {**saved, "head.weight": head.weight.detach().cpu().clone(),
               "head.bias": head.bias.detach().cpu().clone()}
    if tuned:
        own = backbone.module.state_dict()
        tensors.update({f"backbone.{k}": own[k].detach().cpu().clone() for k in tuned})
    updated = type(parent.strategy).from_params(parent.strategy.get_params())
    updated.load_state(tensors, classes, backbone, task="classification")  # a tuned backbone: a new identity
    model = TransferModel(backbone, updated, batch_size=parent.batch_size)
    model.ctx.seed = seed
    return model


def tune_update(parent: TransferModel, old_head: nn.Linear, saved: dict[str, torch.Tensor], tuned: list[str],
                classes: list[str], inputs: list[Any], y: np.ndarray, strategy: str, p: ContinualParams, seed: int,
                data: HeadData, fisher_inputs: list[Any]) -> tuple[TransferModel, dict[str, Any]]:
    """``tune_backbone``: a copy of the parent's backbone and a head grown from the parent's trained
    together (:func:`tune_network`); ewc's sampled Fisher of the parent on ``fisher_inputs`` goes to
    ``data.fisher`` (saved with the run).  The parent's own backbone is not touched."""
    from ..strategies._candidates import backbone_copy

    twin = backbone_copy(parent.backbone)
    facts: dict[str, Any] = {}
    if strategy == "ewc":
        if not fisher_inputs:
            raise UserInputError("ewc estimates how much each weight mattered on the parent's data, and neither the "
                                 "parent's training data nor a replay memory of items is available",
                                 hint="restore the parent's data files, or use --strategy lwf")
        before = TunedNetwork(twin, copy.deepcopy(old_head))
        data.fisher = sampled_fisher(before, fisher_inputs, tuned, p.fisher_items, seed)
        data.anchor = {k: v.detach().clone() for k, v in tuned_parameters(before, tuned).items()}
        facts["fisher_source"] = (f"{min(p.fisher_items, len(fisher_inputs))} of the parent's items (one label "
                                  "drawn per item)")
    head = initial_head(old_head.weight.detach().numpy(), old_head.bias.detach().numpy(), len(classes))
    net = TunedNetwork(twin, head)
    run = tune_network(net, tuned, inputs, y, strategy, p, seed, old_logits=data.old_logits, fisher=data.fisher,
                       anchor=data.anchor)
    return updated_model(parent, saved, head, classes, twin, seed, tuned), {**facts, **run}
