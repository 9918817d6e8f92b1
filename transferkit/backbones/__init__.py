"""Backbones: one contract (:class:`Backbone`) over the bundled zoo and any transformers model."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Backbone, Batch
from .zoo import BACKBONES, list_models

__all__ = ["Backbone", "Batch", "BACKBONES", "get_backbone", "list_models"]


def get_backbone(name: str, **options: Any) -> Backbone:
    """A backbone by zoo name, local transformers directory or hub id.

    Args:
        name: ``"minilm-l6"``, ``"efficientnet-lite0"``..., a directory, or ``"org/model"``.
        **options: passed to the adapter: ``layer``, ``pooling``, ``max_length``, ``max_chunks``,
            ``image_size``, ``allow_pickle``, ``trust_remote_code``, ``modality``...
    """
    options = {k: v for k, v in options.items() if v is not None}
    if name in BACKBONES:
        options.pop("modality", None)
        return BACKBONES.get(name)(**options)
    if Path(name).expanduser().exists() or "/" in name:
        from .hf import hf_backbone

        return hf_backbone(name, **options)
    return BACKBONES.get(name)  # raises "unknown backbone ... did you mean"
