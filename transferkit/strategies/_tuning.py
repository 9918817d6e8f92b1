"""Backbone machinery shared by the strategies that change weights (finetune, and later
LoRA, gradual unfreezing): which layer groups really train, BatchNorm statistics, identity."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backbones.base import Backbone
from ..data.dataset import Dataset
from ..training.batchnorm import statistics_frozen


def used_layer_groups(backbone: Backbone, items: list[Any],
                      device: torch.device) -> tuple[list[tuple[str, list[nn.Parameter]]], int]:
    """The layer groups restricted to parameters that ``forward_features`` actually uses.

    A transformers model computes a pooler that mean-pooled features never touch, and a zoo
    CNN carries its ImageNet classifier: without this, ``unfreeze=1`` could "train" a layer
    that gets no gradient.  One eval-mode forward/backward on two items finds them (no random
    draws, so seeded runs are unaffected).

    Returns:
        ``[(name, params)]`` input side first, empty groups dropped; and the number of unused
        parameter tensors (frozen for the run).
    """
    module = backbone.module
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    was_training = module.training
    module.eval()
    try:
        for p in params:
            p.requires_grad_(True)
        feats = backbone.forward_features(backbone.prepare(list(items)).to(device))
        grads = torch.autograd.grad(feats.float().sum(), params, allow_unused=True)
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        module.train(was_training)
    used = {id(p) for p, g in zip(params, grads) if g is not None}
    groups = [(name, [p for p in ps if id(p) in used]) for name, ps in backbone.layer_groups()]
    return [(n, ps) for n, ps in groups if ps], sum(1 for p in params if id(p) not in used)


def batchnorm_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(name, layer)]``: the BatchNorm layers of ``module`` that keep running statistics."""
    return [(n, m) for n, m in module.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def recalibrate_batchnorm(backbone: Backbone, data: Dataset, batch_size: int, device: torch.device,
                          every_layer: bool = False) -> int:
    """Re-estimate the running statistics of the trained BatchNorm layers on the training data
    (``every_layer``: of every BatchNorm layer, trained or frozen: AdaBN on the target's items).

    With a short budget, running averages (TF-style momentum 0.01 in EfficientNet) lag far
    behind the weights they normalise, most of all from a random initialisation (the control):
    eval-mode predictions would then be poor for reasons unrelated to transfer.  One forward
    pass with a cumulative average, as in SWA (Izmailov et al., 2018;
    ``torch.optim.swa_utils.update_bn``), fixes them.  Frozen BatchNorm layers are untouched.

    Returns:
        How many BatchNorm layers were re-estimated (0 for models without any).
    """
    module = backbone.module
    layers = [m for _, m in batchnorm_layers(module) if not statistics_frozen(m)
              and (every_layer or not list(m.parameters(recurse=False))
                   or any(p.requires_grad for p in m.parameters(recurse=False)))]
    if not layers:
        return 0
    momenta = {m: m.momentum for m in layers}
    module.eval()  # everything else (dropout included) in eval mode: no random draws
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
        m.train()
    try:
        with torch.no_grad():
            for rows in np.array_split(np.arange(len(data)), max(1, -(-len(data) // batch_size))):
                backbone.forward_features(backbone.prepare([data.inputs[i] for i in rows]).to(device))
    finally:
        for m in layers:
            m.momentum = momenta[m]
        module.eval()
    return len(layers)


def mark_adapted(backbone: Backbone, tensors: dict[str, torch.Tensor]) -> None:
    """Give the adapted backbone an identity of its own: features cached for the pre-trained
    weights must never be served for the fine-tuned ones (the cache is keyed by identity).

    The digest covers the saved tensors, so a run loaded from disk gets the identity the
    fitted one had.
    """
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    backbone.adapted = f"finetuned:{h.hexdigest()[:16]}"


Groups = list[tuple[str, list[nn.Parameter]]]


@contextmanager
def only_training(module: nn.Module, params: Iterable[nn.Parameter]) -> Iterator[None]:
    """Inside the block only ``params`` of ``module`` require gradients; afterwards every
    parameter's ``requires_grad`` flag is what it was before."""
    flags = {p: p.requires_grad for p in module.parameters()}
    try:
        for p in module.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


@contextmanager
def training_only(backbone: Backbone, items: list[Any], device: torch.device,
                  unfreeze: str | int = "all") -> Iterator[tuple[Groups, list[nn.Parameter]]]:
    """Inside the block only the layer groups that ``forward_features`` uses train (the last ``unfreeze``
    of them, or ``"all"``): yields ``(chosen groups, their parameters)``; every other parameter of the
    module is frozen.  Afterwards the caller's ``requires_grad`` flags are back and the module is in
    eval mode."""
    module = backbone.module
    groups, _ = used_layer_groups(backbone, items, device)
    chosen = groups if unfreeze == "all" else groups[-int(unfreeze):]
    params = [p for _, ps in chosen for p in ps]
    try:
        with only_training(module, params):
            yield chosen, params
    finally:
        module.eval()


def decayed_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: weight decay on weight matrices and kernels only, none on biases and
    normalisation parameters (``ndim <= 1``)."""
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
