"""A finished run as a backbone: ``fit --model runs/spam2002`` (sequential transfer, continued pre-training).

:class:`RunBackbone` is the pre-trained backbone that the run's model card names, with every
backbone tensor the run changed put back into it: the fine-tuned weights of ``finetune`` and its
variants, ``lora``'s adapters merged into the base weights, the BatchNorm statistics of
``adabn``, the normalisation parameters of ``tent``, the last layer groups of ``shot``, or the
encoder a ``transferkit pretrain`` run trained.  The run is rebuilt the way :func:`~.loading.load`
rebuilds it (its checks of the card, the weight hashes and the card's backbone path included:
the transfer model, LoRA merged), then the whole backbone state is copied into a fresh copy of
the published backbone with the options the new fit asks for (``layer``, ``max_length``...).
A pretrain run's ``backbone.<name>`` tensors are put back with the same
:func:`~transferkit.strategies._network.apply_tensors` that tent and shot runs load with.

Identity: the name is the run's directory, the weight hash covers the published weights and the
run's weight file, and ``start`` holds the lineage (run, card hash, weight hash), so the feature
cache never serves the plain backbone's features for the run's, nor one run's for another's.
:meth:`randomized` is the published architecture randomly initialised, the same control as the
plain backbone's.  The parent run is only read; its module loads lazily, on first use.

``get_backbone`` takes run directories through :data:`~transferkit.backbones.RESOLVERS`, which
this module registers into, so every caller (fit, controls, selection, ranking, load) takes
them without knowing about runs.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backbones import RESOLVERS, get_backbone
from ..backbones.base import Backbone, Batch
from ..errors import UserInputError, shown
from ..strategies._network import apply_tensors
from .loading import CARD_OPTIONS, _check_card_backbone, load
from .rundir import CARD, CONFIG, RunDir

#: Options of the new fit that choose how features are read from the run's network; the others of
#: CARD_OPTIONS (``modality``, ``revision``) name the network itself and must agree with the run's.
FEATURE_OPTIONS = ("layer", "pooling", "max_length", "max_chunks", "image_size", "max_seconds")
PERMISSIONS = ("trust_remote_code", "allow_pickle")


def is_run_dir(name: str | os.PathLike) -> bool:
    """A transferkit run directory, finished or not (its model card, or the ``config.json`` a
    transferkit command writes first), as opposed to a transformers model directory."""
    path = Path(name).expanduser()
    if not path.is_dir():
        return False
    if (path / CARD).is_file():
        return True
    try:
        cfg = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "transferkit_version" in cfg


class RunBackbone(Backbone):
    """The adapted backbone of the finished run ``run_dir``.

    Args:
        run_dir: a directory written by ``transferkit fit`` (its transfer model's backbone), or by
            ``transferkit pretrain`` (its encoder).
        **options: backbone options of the new fit (``layer``, ``pooling``, ``max_length``,
            ``image_size``...) over the run's own; ``modality`` and ``revision`` must be the run's.

    Raises:
        UserInputError: not a finished run (what is missing named), a run of several label
            columns, a run with no backbone (its model is hand-made features), or options that
            imply another network than the run's.
    """

    def __init__(self, run_dir: str | os.PathLike, **options: Any):
        self.run = RunDir(Path(run_dir).expanduser())
        card = self.run.card()  # an unfinished or foreign directory: refused, naming the missing card
        self.card = card
        where = shown(self.run.path)
        if isinstance(card.get("multi_task"), dict):
            raise UserInputError(f"{where} is a multi-task run; each label column's model is a run of its own",
                                 hint=f"use one of them as the backbone: --model {where}/tasks/COLUMN")
        b = card.get("backbone") or {}
        base = b.get("name")
        if not isinstance(base, str) or not base:
            raise UserInputError(f"{shown(self.run.file(CARD))} names no backbone", hint="re-run the fit that wrote it")
        self.pretrain = isinstance(card.get("pretrain"), dict)
        weights = card.get("weights") or {}
        if not weights.get("sha256"):
            raise UserInputError(f"{shown(self.run.file(CARD))} lists no weights file, so the run's backbone "
                                 "cannot be rebuilt", hint="re-run the fit that wrote it")
        if not self.pretrain and not (card.get("strategy") or {}).get("name"):
            raise UserInputError(f"{shown(self.run.file(CARD))} names no strategy", hint="re-run the fit that wrote it")
        own = {k: v for k, v in (b.get("options") or {}).items() if k in CARD_OPTIONS}
        made = {"revision": own.get("revision"), "modality": own.get("modality") or card.get("modality")}
        for k, v in made.items():
            if options.get(k) is not None and v is not None and options[k] != v:
                raise UserInputError(f"{where} was made with the backbone {base!r} at {k}={v!r}; {k}="
                                     f"{options[k]!r} names another network", hint=f"drop the {k} option")
        unknown = sorted(set(options) - set(FEATURE_OPTIONS) - set(PERMISSIONS) - {"modality", "revision"})
        if unknown:
            raise UserInputError(f"backbone option {unknown[0]!r} does not apply to a run used as a backbone",
                                 hint=f"the options that do: {', '.join(FEATURE_OPTIONS)}")
        _check_card_backbone(base, self.run)  # the card's backbone path is followed only where load follows it
        self.permissions = {k: True for k in PERMISSIONS if options.get(k)}
        merged = {**own, **{k: v for k, v in options.items() if k in FEATURE_OPTIONS and v is not None},
                  **self.permissions}
        self.inner = get_backbone(base, **merged)
        super().__init__(str(self.run.path.resolve()), layer=self.inner.layer, pooling=self.inner.pooling)
        self.modality = self.inner.modality
        self.base_name = base
        self.options = {k: v for k, v in merged.items() if k not in PERMISSIONS}
        self._weights_sha: str | None = None

    # ----- where the weights come from ------------------------------------------------------
    def weights_sha256(self) -> str:
        """sha256 over the published backbone's weights and the run's weight file (the card's hash,
        checked when the module loads): the adapted weights, without loading them."""
        if self._weights_sha is None:
            blob = json.dumps({"base": self.inner.weights_sha256(), "run_weights": self.card["weights"]["sha256"]},
                              sort_keys=True).encode()
            self._weights_sha = hashlib.sha256(blob).hexdigest()
        return self._weights_sha

    def lineage(self) -> dict[str, Any]:
        """``{"parent": ...}``, the entry of the run a fit started from (as ``update`` records its
        parent): the run's path, creation time, card hash, weight file hash, and what it was."""
        what = {"pretrain": self.card["pretrain"].get("objective")} if self.pretrain else \
            {"model": (self.card.get("strategy") or {}).get("name")}
        return {"parent": {**self.run.lineage_entry(), "weights_sha256": self.card["weights"]["sha256"],
                           "adapted_weights_sha256": self.weights_sha256(), **what}}

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident.update(base=self.base_name, start=self.lineage()["parent"])
        return ident

    def _load_module(self) -> nn.Module:
        module = self.inner.module
        if self.pretrain:
            tensors = dict(self.run.read_weights(self.card))
        else:
            parent = load(self.run.path, which="transfer", cache=False, progress=False, **self.permissions)
            if not parent.strategy.head_on_features:
                raise UserInputError(f"the model of {shown(self.run.path)} ({parent.strategy.name}) reads hand-made "
                                     "features, not a backbone's", hint="start from a run of a backbone strategy")
            parent.strategy.merged_for_export()  # LoRA: the adapters folded into the base weights
            tensors = {f"backbone.{k}": v for k, v in parent.backbone.module.state_dict().items()}
        self._put(module, tensors)
        return module

    def _put(self, module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        """The run's ``backbone.<name>`` tensors into the fresh published module (the blocks above an
        intermediate ``layer`` are not kept by the new backbone, so their tensors are not needed)."""
        own = module.state_dict()
        fits = {k: v for k, v in tensors.items() if k.startswith("backbone.") and k[len("backbone."):] in own}
        if not fits and any(k.startswith("backbone.") for k in tensors):
            raise UserInputError(f"the backbone tensors of {shown(self.run.path)} do not belong to "
                                 f"{self.base_name!r} with the options asked for: another architecture",
                                 hint="fit with the run's own backbone options, or start from the published model")
        apply_tensors(self.inner, fits, f"run {shown(self.run.path)}'s")
        self.inner.adapted = None  # the run's identity is this backbone's, not a fine-tune of the published one

    # ----- the contract, read from the published backbone's adapter ---------------------------
    def randomized(self, seed: int = 0) -> Backbone:
        return self.inner.randomized(seed)

    @property
    def num_features(self) -> int:
        return self.inner.num_features

    def preprocessing(self) -> dict[str, Any]:
        return self.inner.preprocessing()

    def prepare(self, items: list[Any]) -> Batch:
        return self.inner.prepare(items)

    def forward_features(self, batch: Batch) -> torch.Tensor:
        self.module  # noqa: B018 - the run's tensors are in place before the first forward pass
        return self.inner.forward_features(batch)

    def layer_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        self.module  # noqa: B018
        return self.inner.layer_groups()

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    @property
    def chunk_batch(self) -> int | None:  # type: ignore[override]
        return self.inner.chunk_batch

    def feature_map_module(self) -> nn.Module | None:
        self.module  # noqa: B018
        return self.inner.feature_map_module()

    def source_head(self) -> nn.Module | None:
        self.module  # noqa: B018
        return self.inner.source_head()

    def sort_key(self, item: Any) -> float:
        return self.inner.sort_key(item)

    def units_name(self) -> str:
        return self.inner.units_name()

    def pool_items(self, batch_size: int) -> int:
        return self.inner.pool_items(batch_size)

    def __getattr__(self, name: str) -> Any:
        """The adapter's own settings (``max_length``, ``image_size``...), read from the published
        backbone's adapter; only reached for attributes this object lacks."""
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def _resolve(name: str, options: dict[str, Any]) -> Backbone | None:
    return RunBackbone(name, **options) if is_run_dir(name) else None


RESOLVERS.append(_resolve)
