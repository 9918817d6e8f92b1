"""Backbones: one contract (:class:`Backbone`) over the bundled zoo and any transformers model."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from .base import Backbone, Batch
from .zoo import BACKBONES, list_models

__all__ = ["Backbone", "Batch", "BACKBONES", "RESOLVERS", "get_backbone", "list_models"]

#: ``resolve(name, options) -> Backbone | None``: names that hold a model without being one (a run
#: directory: ``transferkit.runs.run_backbone``), registered by the layer that knows them.
RESOLVERS: list[Callable[[str, dict[str, Any]], Backbone | None]] = []


def get_backbone(name: str, **options: Any) -> Backbone:
    """A backbone by zoo name, local transformers directory or hub id.

    Args:
        name: ``"minilm-l6"``, ``"efficientnet-lite0"``..., a directory, or ``"org/model"``.
        **options: passed to the adapter: ``layer``, ``pooling``, ``max_length``, ``max_chunks``,
            ``image_size``, ``allow_pickle``, ``trust_remote_code``, ``modality``...
    """
    options = {k: v for k, v in options.items() if v is not None}
    for resolve in RESOLVERS if name not in BACKBONES else ():
        found = resolve(name, options)
        if found is not None:
            return found
    if name in BACKBONES:
        options.pop("modality", None)
        factory = BACKBONES.get(name)
    elif Path(name).expanduser().exists() or "/" in name:
        from .hf import hf_backbone as factory
    else:
        BACKBONES.get(name)  # raises "unknown backbone ... did you mean"
    try:
        return factory(name, **options) if name not in BACKBONES else factory(**options)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        bad = str(e).rsplit("argument", 1)[-1].strip(" '")
        raise UserInputError(f"backbone option {bad!r} does not apply to {name!r}",
                             hint="text models take max_length/max_chunks/pooling, image models image_size; "
                                  "all take layer") from None
