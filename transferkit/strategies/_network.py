"""A backbone and a fixed head as one network on raw items, trained on unlabelled target items.

The machinery of the strategies that adapt the network itself to a target domain without
labels (``tent``: entropy minimisation on normalisation parameters; ``shot``: information
maximisation on the last layer groups): the head (a fitted strategy's :meth:`torch_head`, e.g.
the linear probe's, its standardisation already folded into the weights) stays fixed, chosen
backbone parameters train through THE training loop on batches drawn from a bounded subset of
the target items, and only the backbone tensors that changed are saved (``backbone.<name>``),
to be put back onto the freshly loaded pre-trained backbone at load time (:func:`apply_tensors`).

Which parameters train (:func:`select_parameters`): ``"norm"``, the affine parameters (weight
and bias) of every BatchNorm, LayerNorm and GroupNorm layer that the features use (TENT), or
an int ``k``, every parameter of the last ``k`` layer groups that the features use
(:func:`~._tuning.used_layer_groups`; SHOT's feature extractor).  BatchNorm layers with a
trainable parameter run in train mode while training, so they normalise with the statistics
of each target batch (as TENT does); afterwards their running statistics are re-estimated on
the target subset, so that eval-mode predictions read the target's statistics and do not
depend on how items are batched.

Cost: every step is a forward and backward pass through the backbone, so the target items are
bounded (``max_items``) and images may be made smaller (``--image-size``).  Measured with
``tent`` (2-core CPU shared with other jobs): 3 passes over 500 images, EfficientNet-Lite0 at
96 px, 215-290 s for the whole fit; over 300 e-mails with minilm-l6, 400 s.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..backbones.base import Backbone
from ..data.dataset import Dataset
from ..errors import UserInputError
from ..training import train
from ..training.batchnorm import keep_statistics, release_statistics
from ._tuning import batchnorm_layers, mark_adapted, recalibrate_batchnorm, used_layer_groups

#: Normalisation layers whose affine parameters ``"norm"`` selects.
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)

#: ``loss(features (B, D), logits (B, K)) -> scalar``: the objective on one target batch.
TargetLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class HeadNetwork(nn.Module):
    """``items -> (features (B, D), logits (B, K))``: the backbone's pooled features and a fixed
    head over them (logits: classification; any pre-activation outputs the head gives).

    The head never trains (its parameters are frozen here, and it stays in eval mode);
    ``backbone`` is the :class:`~transferkit.backbones.base.Backbone`, whose module is the one
    that adapts.  In train mode only BatchNorm layers train unless ``dropout`` (the loop then puts
    those whose parameters are frozen back in eval mode): dropout and stochastic depth stay off,
    so the objective is computed on the predictions the adapted model will make.
    """

    def __init__(self, backbone: Backbone, head: nn.Module, device: str | torch.device = "cpu",
                 dropout: bool = False):
        super().__init__()
        self.device, self.dropout = torch.device(device), dropout
        self._backbone = backbone
        self.body = backbone.module.to(self.device)  # registered: the loop's train mode and checkpoints see it
        self.head = head.to(self.device).eval()
        for p in self.head.parameters():
            p.requires_grad_(False)

    @property
    def backbone(self) -> Backbone:
        return self._backbone

    def train(self, mode: bool = True) -> "HeadNetwork":
        super().train(mode)
        self.head.eval()
        if mode and not self.dropout:  # every random train-mode behaviour off (attention dropout reads the
            self.body.eval()           # module's own flag), BatchNorm alone in train mode
            for m in self.body.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
        return self

    def forward(self, items: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self._backbone.forward_features(self._backbone.prepare(list(items)).to(self.device)).float()
        return feats, self.head(feats)

    def outputs(self, data: Dataset, batch_size: int = 32) -> np.ndarray:
        """Logits ``(N, K)`` of every item of ``data``, eval mode, no gradient."""
        was = self.body.training
        self.body.eval()
        try:
            with torch.no_grad():
                parts = [self(data.inputs[s:s + batch_size])[1].cpu().numpy()
                         for s in range(0, len(data), batch_size)]
        finally:
            self.body.train(was)
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def norm_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``[(name, parameter)]``: the affine weight and bias of every normalisation layer
    (:data:`NORM_LAYERS`) of ``module``, in module order."""
    out = []
    for name, m in module.named_modules():
        if isinstance(m, NORM_LAYERS):
            out += [(f"{name}.{n}" if name else n, p) for n, p in m.named_parameters(recurse=False)]
    return out


def select_parameters(backbone: Backbone, which: str | int, items: list[Any],
                      device: str | torch.device) -> tuple[list[str], list[nn.Parameter], list[str]]:
    """The backbone parameters that adapt: ``which="norm"`` (normalisation affine parameters)
    or ``which=k`` (the last ``k`` layer groups), restricted to those ``forward_features`` uses
    (one eval-mode forward/backward on ``items[:2]``).

    Returns:
        ``(names, parameters, groups)``: parameter names in the module's ``state_dict``, the
        parameters, and the layer groups they belong to (``which=k``; ``[]`` for ``"norm"``).

    Raises:
        UserInputError: ``"norm"`` on a backbone without affine normalisation layers.
    """
    groups, _ = used_layer_groups(backbone, list(items)[:2], torch.device(device))
    used = {id(p) for _, ps in groups for p in ps}
    module = backbone.module
    if which == "norm":
        chosen = [(n, p) for n, p in norm_parameters(module) if id(p) in used]
        if not chosen:
            raise UserInputError(f"{backbone.name!r} has no normalisation layer with affine parameters "
                                 "(BatchNorm, LayerNorm, GroupNorm) that its features use: there is nothing for "
                                 "test-time adaptation to train", hint="use another strategy (adabn, dann, shot)")
        return [n for n, _ in chosen], [p for _, p in chosen], []
    if not isinstance(which, int) or which < 1:
        raise UserInputError(f"the parameters to adapt are 'norm' or a number of last layer groups >= 1, not {which!r}")
    last = groups[-which:]
    ids = {id(p) for _, ps in last for p in ps}
    names = [n for n, p in module.named_parameters() if id(p) in ids]
    return names, [p for _, ps in last for p in ps], [n for n, _ in last]


def bounded_subset(data: Dataset, max_items: int, seed: int) -> Dataset:
    """At most ``max_items`` items of ``data``, drawn without replacement by ``seed`` (in their
    original order); ``data`` itself when it is small enough."""
    if len(data) <= max_items:
        return data
    idx = np.sort(np.random.default_rng(seed).choice(len(data), size=max_items, replace=False))
    return data.subset(idx)


@dataclass
class AdaptRun:
    """What one :func:`adapt` run did: ``steps`` optimizer steps over ``n_items`` target items,
    ``losses`` the mean loss of each epoch, ``batchnorm_layers`` re-estimated afterwards."""

    steps: int
    n_items: int
    losses: list[float]
    batchnorm_layers: int

    def info(self) -> dict[str, Any]:
        return {"steps": self.steps, "n_target_used": self.n_items, "epoch_losses": self.losses,
                "batchnorm_layers_reestimated": self.batchnorm_layers}


def adapt(network: HeadNetwork, target: Dataset, loss: TargetLoss, params: list[nn.Parameter], *,
          optimizer: str = "adam", lr: float = 1e-3, momentum: float = 0.9, steps: int = 50, batch_size: int = 32,
          seed: int = 0, clip: float | None = None, batch_statistics: bool = True, checkpoint_dir=None,
          resume: bool = True, run_config: dict[str, Any] | None = None, progress: bool | None = False,
          desc: str = "adapt") -> AdaptRun:
    """Train ``params`` (of ``network``'s backbone) to minimise ``loss`` on batches of ``target``
    (already bounded: :func:`bounded_subset`), through the one training loop, then re-estimate
    the running statistics of the BatchNorm layers that trained on ``target``.

    ``batch_statistics=False``: every BatchNorm layer keeps its running statistics (eval mode,
    not re-estimated); only the selected parameters change.  Every other backbone parameter is
    frozen for the run (the caller's flags are restored).
    ``optimizer``: ``"sgd"`` (with ``momentum``) or ``"adam"``; ``steps`` optimizer steps of
    ``batch_size`` items (epochs over ``target`` as many as that takes).  The backbone ends in
    eval mode.
    """
    if not len(target):
        raise UserInputError("no target items to adapt on", hint="give unlabelled target data")
    module = network.body
    flags = {id(p): p.requires_grad for p in module.parameters()}
    for p in module.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    else:
        raise UserInputError(f"optimizer must be 'sgd' or 'adam', not {optimizer!r}")
    batch = max(2, min(batch_size, len(target)))  # never a lone item: BatchNorm needs two

    def training_step(idx: np.ndarray) -> torch.Tensor:
        feats, logits = network([target.inputs[int(i)] for i in idx])
        return loss(feats, logits)

    per_epoch = math.ceil(len(target) / batch)
    kept = [] if batch_statistics else keep_statistics(m for _, m in batchnorm_layers(module))
    try:
        state = train(network, training_step, len(target), opt, epochs=math.ceil(steps / per_epoch),
                      max_steps=steps, batch_size=batch, clip=clip, seed=seed, checkpoint_dir=checkpoint_dir,
                      resume=resume, run_config=run_config, precision="fp32", progress=progress, desc=desc)
        # the layers that normalised with batch statistics take the target's as running ones
        n_bn = recalibrate_batchnorm(network.backbone, target, batch, network.device)
    finally:
        release_statistics(kept)
        for p in module.parameters():
            p.requires_grad_(flags[id(p)])
        module.eval()
    losses = [float(h["loss"]) for h in state.history if "loss" in h]
    return AdaptRun(steps=state.step, n_items=len(target), losses=losses, batchnorm_layers=n_bn)


def changed_names(backbone: Backbone, names: list[str]) -> list[str]:
    """``names`` (trained parameters) and the buffers of every BatchNorm layer that owns one of
    them (its re-estimated running statistics): the ``state_dict`` keys an adapted run saves."""
    keys = set(names)
    for layer, m in batchnorm_layers(backbone.module):
        if any(f"{layer}.{n}" in keys for n, _ in m.named_parameters(recurse=False)):
            keys |= {f"{layer}.{b}" for b, _ in m.named_buffers(recurse=False)}
    return sorted(keys)


def backbone_tensors(backbone: Backbone, names: list[str]) -> dict[str, torch.Tensor]:
    """``{"backbone.<name>": tensor}``: copies of the named ``state_dict`` entries, for saving."""
    own = backbone.module.state_dict()
    return {f"backbone.{k}": own[k].detach().cpu().clone() for k in names}


def apply_tensors(backbone: Backbone, tensors: dict[str, torch.Tensor], who: str) -> list[str]:
    """Put the saved ``backbone.<name>`` tensors into the freshly loaded pre-trained ``backbone``
    and give it its adapted identity (:func:`~._tuning.mark_adapted`); returns the names (``[]``:
    none saved, the backbone untouched).

    Raises:
        UserInputError: tensors saved but no backbone given, or ones that do not fit it.
    """
    tuned = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
    if not tuned:
        return []
    if backbone is None:
        raise UserInputError(f"the saved {who} run holds adapted backbone tensors and needs its backbone to put "
                             "them in", hint="load the run with transferkit.load(RUN)")
    own = backbone.module.state_dict()
    bad = [k for k, v in tuned.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise UserInputError(f"the saved {who} backbone tensors do not fit {backbone.name!r}: {', '.join(bad[:5])}",
                             hint="the weights belong to another backbone: fit again")
    with torch.no_grad():
        for k, v in tuned.items():
            own[k].copy_(v)
    backbone.module.eval()
    names = sorted(tuned)
    mark_adapted(backbone, backbone_tensors(backbone, names))
    return names


@contextmanager
def episodic(backbone: Backbone, names: list[str]) -> Iterator[None]:
    """Adapt inside the block, then put back the named ``state_dict`` entries (with
    :func:`changed_names`) and the backbone's identity as they were: the model on disk and in
    memory is the same after the block as before it (TENT's episodic mode)."""
    saved = {k: v.detach().clone() for k, v in backbone.module.state_dict().items() if k in set(names)}
    identity = getattr(backbone, "adapted", None)
    was = backbone.module.training
    try:
        yield
    finally:
        own = backbone.module.state_dict()
        with torch.no_grad():
            for k, v in saved.items():
                own[k].copy_(v)
        backbone.adapted = identity
        backbone.module.train(was)
