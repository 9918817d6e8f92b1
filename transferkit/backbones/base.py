"""The one backbone contract every pre-trained model is adapted to.

Strategies never ask where a model came from: a zoo package, a local transformers directory
or the hub all give the same object.  The torch module is loaded lazily, so listing, hashing
and cache look-ups never pay for loading weights.
"""
from __future__ import annotations

import hashlib
import json
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import UserInputError

if TYPE_CHECKING:  # torch is imported where a tensor is made: listing the zoo and parsing options need none
    import torch
    from torch import nn

#: Bump when a code change alters the features of an unchanged backbone (architecture, random
#: initialisation, pooling, preprocessing): it enters every cache key, so old cached features of
#: that backbone are not reused.  (2: EfficientNet's own random initialisation; 3: EfficientNet in
#: channels-last layout, which changes features by float rounding only.)
FEATURES_REVISION = 3


def parse_layer(value: int | str | None, *, what: str = "layer") -> int | None:
    """A layer as the user writes it, the same for ``fit --layer``, ``rank --layers``, ``NAME@LAYER``
    and ``config.json``: an integer (0 = embeddings / stem; negative counts from the top), its
    text (``"4"``, ``"-1"``), or ``"last"`` / ``None`` for the last layer (returned as ``None``).

    Raises:
        UserInputError: anything else, naming the value and what is allowed.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        pass  # a JSON true/false is not a layer
    elif isinstance(value, numbers.Integral):
        return int(value)
    elif isinstance(value, float) and value.is_integer():
        return int(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in ("last", ""):
            return None
        try:
            return int(text)
        except ValueError:
            pass
    raise UserInputError(f"{what} must be an integer or 'last', got {value!r}",
                         hint="0 is the embeddings (text) or stem (images), higher numbers go deeper, negative "
                              "numbers count from the top; 'last' (the default) is the last layer")


@dataclass
class Batch:
    """Model inputs for ``n_items`` raw items, as made by :meth:`Backbone.prepare`.

    Attributes:
        tensors: keyword inputs of the model (``input_ids``, ``pixel_values``, ...).
        n_items: how many raw items the batch stands for.
        owner: for text split into chunks, ``(n_chunks,)`` long tensor giving the item of each
            chunk; ``None`` when each row is one item.
        units: per item ``(n_items, 2)`` int: units embedded (tokens, frames; 0 when not
            counted) and units the item had; they differ when an item was cut.
    """

    tensors: dict[str, torch.Tensor]
    n_items: int
    owner: torch.Tensor | None = None
    units: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "Batch":
        self.tensors = {k: v.to(device) for k, v in self.tensors.items()}
        if self.owner is not None:
            self.owner = self.owner.to(device)
        return self


class Backbone(ABC):
    """A pre-trained model seen as a feature extractor with layer groups.

    Subclasses set ``modality`` and implement the abstract methods.  ``layer`` selects an
    intermediate representation (``None``: the last one), ``pooling`` how tokens or positions
    are pooled into one vector per item.

    Attributes:
        name: the name the user gave (zoo name, hub id or directory).
        modality: ``"text"``, ``"image"`` or ``"audio"``.
        init: ``"pretrained"`` or ``"random:<seed>"`` (the control of a run).
        adapted: ``None``, or what changed the weights after loading (``"finetuned:<sha>"``):
            set by strategies that train the backbone, so that its features get a cache key
            of their own.
    """

    modality: str = ""
    #: Text backbones that split long texts into windows run this many windows per forward pass
    #: (export and explanations batch the same way); ``None``: the backbone does not split items.
    chunk_batch: int | None = None

    def __init__(self, name: str, *, layer: int | str | None = None, pooling: str | None = None,
                 init: str = "pretrained"):
        self.name = name
        self.layer = parse_layer(layer)
        self.pooling = pooling
        self.init = init
        self.adapted: str | None = None
        self._module: nn.Module | None = None

    # ----- loading -------------------------------------------------------------------
    @property
    def module(self) -> nn.Module:
        """The torch module (loaded on first use, in eval mode)."""
        if self._module is None:
            self._module = self._load_module()
            self._module.eval()
        return self._module

    @property
    def loaded(self) -> bool:
        return self._module is not None

    @abstractmethod
    def _load_module(self) -> nn.Module:
        """Build the module and load its weights (or initialise them randomly)."""

    @abstractmethod
    def weights_sha256(self) -> str:
        """sha256 of the weight files (cheap after the first call: memoised on disk)."""

    @abstractmethod
    def randomized(self, seed: int = 0) -> "Backbone":
        """The same architecture and preprocessing, randomly initialised (the control)."""

    # ----- the contract -------------------------------------------------------------
    @property
    @abstractmethod
    def num_features(self) -> int:
        """D, the width of pooled features at ``self.layer``."""

    @abstractmethod
    def preprocessing(self) -> dict[str, Any]:
        """A JSON-able description of the preprocessing (enters the cache key and model card)."""

    @abstractmethod
    def prepare(self, items: list[Any]) -> Batch:
        """Decode and preprocess raw items (texts, paths, arrays) into one batch."""

    @abstractmethod
    def forward_features(self, batch: Batch) -> torch.Tensor:
        """Pooled features ``(batch.n_items, D)``; differentiable (fine-tuning uses it)."""

    @abstractmethod
    def layer_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """Named parameter groups, input side first: for freezing and per-layer learning rates."""

    @property
    def tokenizer(self) -> Any:
        """The text tokenizer (a transformers tokenizer) of a text backbone; ``None`` for others
        (export and word attributions need it)."""
        return None

    def feature_map_module(self) -> nn.Module | None:
        """The module whose output is the last spatial feature map ``(B, C, h, w)`` the features
        pool (Grad-CAM hooks it), for convolutional image backbones; ``None`` for the others."""
        return None

    def source_head(self) -> nn.Module | None:
        """The pre-training task's classifier over last-layer features, when the model has one."""
        return None

    def sort_key(self, item: Any) -> float:
        """A cheap size estimate of one raw item, to batch items of similar size together."""
        return 0.0

    def units_name(self) -> str:
        """What :attr:`Batch.units` counts ("tokens", "samples")."""
        return "units"

    def pool_items(self, batch_size: int) -> int:
        """Items to :meth:`prepare` together during extraction (default: one batch).

        A backbone whose :meth:`forward_features` runs its own sub-batches (text chunks) takes a
        larger pool, so that it can sort the pieces of many items by size and pad less.
        """
        return batch_size

    # ----- identity --------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """Everything that determines the features: the cache key and the model card use it."""
        ident = {
            "revision": FEATURES_REVISION,
            "name": self.name,
            "kind": type(self).__name__,
            "modality": self.modality,
            "init": self.init,
            "weights_sha256": self.weights_sha256() if self.init == "pretrained" else None,
            "layer": self.layer,
            "pooling": self.pooling,
            "preprocessing": self.preprocessing(),
        }
        if self.adapted:  # only when set: the cache keys of unadapted backbones stay as they were
            ident["adapted"] = self.adapted
        return ident

    def lineage(self) -> dict[str, Any]:
        """What a run fitted on this backbone records of where its weights came from: ``{}`` for a
        published model; ``{"parent": ...}`` for a finished run used as the backbone."""
        return {}

    def cache_key(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    def describe(self) -> str:
        layer = "last layer" if self.layer is None else f"layer {self.layer}"
        init = self.init + (f", {self.adapted}" if self.adapted else "")
        return f"{self.name} ({self.modality}, {layer}, {init})"

    def embed(self, items: list[Any]) -> torch.Tensor:
        """Features ``(len(items), D)`` for a small list of items, with no cache."""
        import torch

        with torch.inference_mode():
            return self.forward_features(self.prepare(items))


def pool_chunks(chunk_feats: torch.Tensor, owner: torch.Tensor, weights: torch.Tensor,
                n_items: int) -> torch.Tensor:
    """Weighted mean of chunk features per owning item.

    Args:
        chunk_feats: ``(n_chunks, D)``.
        owner: ``(n_chunks,)`` item index of each chunk.
        weights: ``(n_chunks,)`` weight of each chunk (its token count).
        n_items: number of items.

    Returns:
        ``(n_items, D)``.
    """
    import torch

    w = weights.to(chunk_feats.dtype).unsqueeze(1)
    out = torch.zeros(n_items, chunk_feats.shape[1], dtype=chunk_feats.dtype, device=chunk_feats.device)
    out.index_add_(0, owner, chunk_feats * w)
    tot = torch.zeros(n_items, 1, dtype=chunk_feats.dtype, device=chunk_feats.device)
    tot.index_add_(0, owner, w)
    return out / tot.clamp_min(1e-12)
