"""transferkit: adapt a pre-trained model to your data, and show honestly whether transfer helped.

>>> import transferkit as tk
>>> model = tk.fit(data="emails.jsonl", text_columns="subject,body", model="minilm-l6", out="runs/spam")
>>> model.metrics["verdict"]
>>> tk.load("runs/spam").predict(["WIN A FREE CRUISE", "minutes of Tuesday's meeting"])
"""
from __future__ import annotations

from importlib import metadata as _metadata

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

try:
    __version__ = _metadata.version("transferkit")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+source"

__all__ = [
    "fit", "load", "update", "load_multitask", "MultiTaskModel", "RunDir", "FitConfig", "TransferModel", "Dataset",
    "from_arrays", "prepare_data", "get_backbone",
    "list_models", "Backbone", "get_strategy", "Strategy", "extract_features", "TransferkitError",
    "UserInputError", "DataValidationError", "NotFittedError", "__version__",
]
