"""transferkit: adapt a pre-trained model to your data, and show honestly whether transfer helped.

>>> import transferkit as tk
>>> model = tk.fit(data="emails.jsonl", text_columns="subject,body", model="minilm-l6", out="runs/spam")
>>> model.metrics["verdict"]
>>> tk.load("runs/spam").predict(["WIN A FREE CRUISE", "minutes of Tuesday's meeting"])

The public names load on first use (PEP 562 ``__getattr__``): ``import transferkit`` and the
command line's ``--help`` import no torch, transformers or scikit-learn; ``tk.fit`` imports what
fitting needs the first time it is touched.
"""
from __future__ import annotations

import importlib
from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

# public name -> the submodule that defines it
_PUBLIC = {
    "Backbone": "backbones", "get_backbone": "backbones", "list_models": "backbones",
    "FitConfig": "config",
    "Dataset": "data", "from_arrays": "data", "prepare_data": "data",
    "DataValidationError": "errors", "NotFittedError": "errors", "TransferkitError": "errors",
    "UserInputError": "errors",
    "extract_features": "features",
    "TransferModel": "model",
    "MultiTaskModel": "multitask", "fit": "multitask", "load_multitask": "multitask",
    "RunDir": "runs", "load": "runs",
    "Strategy": "strategies", "get_strategy": "strategies",
    "update": "update",
}

__all__ = [
    "fit", "load", "update", "load_multitask", "MultiTaskModel", "RunDir", "FitConfig", "TransferModel", "Dataset",
    "from_arrays", "prepare_data", "get_backbone",
    "list_models", "Backbone", "get_strategy", "Strategy", "extract_features", "TransferkitError",
    "UserInputError", "DataValidationError", "NotFittedError", "__version__",
]


def _version() -> str:
    try:
        return _metadata.version("transferkit")
    except _metadata.PackageNotFoundError:  # running from a source tree
        return "0.0.0+source"


def __getattr__(name: str) -> Any:
    if name == "__version__":  # reading package metadata costs ~25 ms: only when asked
        globals()[name] = _version()
        return globals()[name]
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'transferkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC) | {"__version__"})


if TYPE_CHECKING:  # static checkers and IDEs see the eager imports
    from .backbones import Backbone, get_backbone, list_models
    from .config import FitConfig
    from .data import Dataset, from_arrays, prepare_data
    from .errors import DataValidationError, NotFittedError, TransferkitError, UserInputError
    from .features import extract_features
    from .model import TransferModel
    from .multitask import MultiTaskModel, fit, load_multitask
    from .runs import RunDir, load
    from .strategies import Strategy, get_strategy
    from .update import update
