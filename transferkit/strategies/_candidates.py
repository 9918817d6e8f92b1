"""The candidates of ``auto-adapt``: which methods, with which explicit options, on which backbone.

Each candidate is a registered strategy by name with options of its own (:data:`CANDIDATES`);
``auto-adapt`` fits them one by one.  A candidate that changes the backbone in place
(``tunes_backbone``: AdaBN in the network, TENT, SHOT, alignment with ``on=backbone``) gets a
copy of the pre-trained backbone (:func:`backbone_copy`) and a context whose features come from
that copy (:func:`context_on`), so no candidate ever sees another's weights; the copy's features
get a cache key of their own as soon as the candidate marks it adapted (``mark_adapted``).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..backbones.base import Backbone
from ..data.dataset import Dataset
from ._tuning import batchnorm_layers
from .base import STRATEGIES, TransferContext

#: what a candidate costs: ``cheap`` ones always run; ``expensive`` ones train backbone layers and
#: run only within ``budget_s`` (their cost estimated from a measured forward pass, see :func:`estimate_seconds`)
CHEAP, EXPENSIVE = "cheap", "expensive"


@dataclass(frozen=True)
class Candidate:
    """One candidate: a label (how runs and reports name it), the registered strategy and its
    explicit options; ``dev``: whether DEV can score it (False for models that normalise each
    domain with its own statistics: their loss on source items is not the loss of the target model;
    ``"no-batchnorm"``: only on backbones without BatchNorm, TENT and SHOT re-estimating its
    statistics on the target);
    ``modalities``/``batchnorm``: where it applies; ``items_per_step``: backbone passes per training
    item of a step (source + target: 2), for the cost estimate."""

    label: str
    strategy: str
    params: dict[str, Any] = field(default_factory=dict)
    cost: str = CHEAP
    dev: bool | str = True
    modalities: tuple[str, ...] = ("text", "image", "audio")
    batchnorm: bool = False
    items_per_step: int = 2
    #: whether its target probabilities come from a cross-validated linear head that never saw a
    #: target prediction in training; only such candidates are compared by the confidence criteria
    #: (IM, SND, entropy) - a method trained to make target predictions confident (TENT, SHOT,
    #: self-training, MCC) or an MLP adapter fitted for 1000 steps wins them whatever its accuracy
    calibrated: bool = False


#: Every known candidate, cheap first.  Backbone-training ones at a small step budget and one
#: trained layer group: on a 2-core CPU a backward pass of EfficientNet-Lite0 costs ~3 forward
#: passes, and 60 steps of 32 + 32 items at 96 px already take minutes.
CANDIDATES: dict[str, Candidate] = {c.label: c for c in [
    Candidate("source-only", "linear-probe", calibrated=True),
    Candidate("adabn", "adabn", {"on": "features"}, dev=False, calibrated=True),
    Candidate("adabn-backbone", "adabn", {"on": "backbone"}, dev=False, batchnorm=True, calibrated=True),
    Candidate("input-invariance", "input-invariance", {}, modalities=("image",), calibrated=True),
    Candidate("tent", "tent", {}, dev="no-batchnorm", items_per_step=1),
    Candidate("mmd", "mmd", {"trade_off": 1.0}),
    Candidate("dann", "dann", {"trade_off": 1.0}),
    Candidate("self-training", "self-training", {"threshold": 0.8}),
    Candidate("mcc", "mcc", {"trade_off": 1.0}),
    Candidate("coral", "coral", {"trade_off": 1.0}),
    Candidate("shot", "shot", {}, cost=EXPENSIVE, dev="no-batchnorm", items_per_step=1),
    Candidate("mcc-backbone", "mcc", {"on": "backbone", "trade_off": 1.0, "unfreeze": 1, "backbone_steps": 60,
                                      "batch_size": 32}, cost=EXPENSIVE),
    Candidate("dann-backbone", "dann", {"on": "backbone", "trade_off": 1.0, "unfreeze": 1, "steps": 60,
                                        "batch_size": 32}, cost=EXPENSIVE),
]}

#: The default list, before filtering by modality, BatchNorm and what is registered (coral is
#: known but not a default: it never beat mmd here and costs the same).
DEFAULT_LABELS = ["source-only", "adabn", "adabn-backbone", "input-invariance", "tent", "mmd", "dann",
                  "self-training", "mcc", "shot"]


def known_labels() -> list[str]:
    """Labels a user may list: the table's, and any registered strategy that adapts to a target."""
    return sorted(set(CANDIDATES) | {e.name for e in STRATEGIES if e.meta.get("target")})


def resolve(labels: list[str] | str, overrides: dict[str, dict], backbone: Backbone,
            modality: str) -> tuple[list[Candidate], list[dict[str, str]]]:
    """The candidates to fit, and the ones left out with the reason (``[{"label", "reason"}]``).

    ``labels="default"``: :data:`DEFAULT_LABELS` that apply to ``modality`` and the backbone (no
    BatchNorm: no AdaBN in the network, no TENT) and whose strategy is registered; a label the
    user names is kept unless it cannot apply.  ``overrides[label]`` is merged over its options.
    """
    default = labels == "default"
    chosen, left = [], []
    has_bn = None
    for label in (DEFAULT_LABELS if default else labels):
        c = CANDIDATES.get(label) or Candidate(label, label)
        if c.strategy not in STRATEGIES:
            left.append({"label": label, "reason": f"strategy {c.strategy!r} is not registered in this version"})
            continue
        if modality not in c.modalities:
            left.append({"label": label, "reason": f"applies to {' and '.join(c.modalities)} data, not {modality}"})
            continue
        if c.batchnorm:
            has_bn = bool(batchnorm_layers(backbone.module)) if has_bn is None else has_bn
            if not has_bn:
                left.append({"label": label, "reason": f"{backbone.name!r} has no BatchNorm layer (LayerNorm "
                                                       "normalises each item alone: no statistics to adapt)"})
                continue
        if label in overrides:
            c = dataclasses.replace(c, params={**c.params, **overrides[label]})
        chosen.append(c)
    return chosen, left


def scores_dev(c: Candidate, backbone: Backbone) -> bool:
    """Whether DEV applies to candidate ``c`` on ``backbone`` (see :class:`Candidate`)."""
    if c.dev == "no-batchnorm":
        return not batchnorm_layers(backbone.module)
    return bool(c.dev)


def backbone_copy(backbone: Backbone) -> Backbone:
    """The backbone with a deep copy of its (loaded) module: the same identity and cache key
    until a candidate changes its weights and marks it adapted; everything else shared."""
    twin = copy.copy(backbone)
    twin._module = copy.deepcopy(backbone.module)
    return twin


def context_on(ctx: TransferContext, backbone: Backbone | None, checkpoints: str | None = None) -> TransferContext:
    """A context like ``ctx`` whose backbone is ``backbone`` (``None``: ``ctx``'s own), with notes
    of its own.  Its features are ``ctx.features`` computed while ``ctx.backbone`` is ``backbone``:
    the feature function of a :class:`~transferkit.model.TransferModel` reads its context's
    backbone, so the run's cache, batch size and backend serve every candidate."""
    if backbone is None or backbone is ctx.backbone:
        return dataclasses.replace(ctx, notes=[])

    def features(data: Dataset) -> np.ndarray:
        own = ctx.backbone
        ctx.backbone = backbone
        try:
            return ctx.features(data)
        finally:
            ctx.backbone = own

    where = None
    if ctx.checkpoint_dir is not None and checkpoints:
        where = Path(ctx.checkpoint_dir) / checkpoints
    return dataclasses.replace(ctx, backbone=backbone, features=features, notes=[], checkpoint_dir=where)


def seconds_per_item(backbone: Backbone, items: list[Any], device: str) -> float:
    """Measured seconds of one no-gradient forward pass per item (on up to 16 items, after one
    warm-up item), the unit of :func:`estimate_seconds`."""
    items = list(items[:16])
    module = backbone.module.to(device)
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            backbone.forward_features(backbone.prepare(items[:1]).to(device))
            t = time.perf_counter()
            backbone.forward_features(backbone.prepare(items).to(device))
            return (time.perf_counter() - t) / len(items)
    finally:
        module.train(was)


#: a backward pass costs about twice a forward one (measured ~2-3x on EfficientNet-Lite0, CPU)
BACKWARD_FACTOR = 3.0


def estimate_seconds(c: Candidate, params: dict[str, Any], n_source: int, n_target: int, per_item: float) -> float:
    """Seconds a backbone-training candidate is expected to take: its training passes
    (``steps x batch_size x items_per_step``, or ``epochs`` over ``max_items`` target items, each
    forward + backward: x :data:`BACKWARD_FACTOR`) plus the no-gradient passes that embed and
    score the source and target items (3 per item), times the measured ``per_item`` seconds."""
    train_items = 0.0
    steps = params.get("backbone_steps", params.get("steps"))  # mcc names its backbone budget apart
    if steps is not None and "batch_size" in params:
        train_items = steps * params["batch_size"] * c.items_per_step
    elif "epochs" in params:
        items = min(n_target, params.get("max_items") or n_target)
        train_items = params["epochs"] * items
    return per_item * (BACKWARD_FACTOR * train_items + 3.0 * (n_source + n_target))
