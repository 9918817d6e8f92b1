"""A client's data as it stays on the client: read and validated like any fit's data, split
into its own training and held-out parts, and turned into cached backbone features."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backbones import get_backbone
from ..backbones.base import Backbone
from ..data.dataset import Dataset
from ..data.split import stratified_split
from ..data.validate import prepare_data
from ..errors import UserInputError
from ..features import extract_features


@dataclass
class Reads:
    """How the client files are read (the options of ``fit``)."""

    text_columns: list[str] | None = None
    label_column: str = "label"
    modality: str | None = None
    path_column: str | None = None
    skip_bad: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ClientData:
    """One client's split and features: ``X_train (N, D)``, ``y_train (N,)`` class indices into
    ``classes``, the same for its held-out test part."""

    name: str
    train: Dataset
    test: Dataset
    X_train: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), np.float32))
    X_test: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), np.float32))

    def encoded(self, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(y_train, y_test)`` as indices into ``classes``; a label outside them is refused."""
        unknown = sorted((set(self.train.labels) | set(self.test.labels)) - set(classes))
        if unknown:
            raise UserInputError(f"client {self.name}: labels {', '.join(unknown)} are not among the federation's "
                                 f"classes ({', '.join(classes)})",
                                 hint="every client's labels must be among the classes the server was started with")
        index = {c: i for i, c in enumerate(classes)}
        return (np.array([index[v] for v in self.train.labels], np.int64),
                np.array([index[v] for v in self.test.labels], np.int64))


def client_name(path: str | Path) -> str:
    """A client's name: its data file's name without extensions (``a.jsonl.gz`` -> ``a``)."""
    return Path(path).name.split(".")[0]


def read_client(path: str | Path, reads: Reads, *, test_size: float, seed: int, name: str | None = None) -> ClientData:
    """Read, validate and split one client's labelled file (classification); the split is
    stratified and seeded, so the one-machine mode's centralised control sees the same parts."""
    prepared = prepare_data(str(path), None, text_columns=reads.text_columns, label_column=reads.label_column,
                            modality=reads.modality, skip_bad=reads.skip_bad, task="classification",
                            path_column=reads.path_column)
    train, test = stratified_split(prepared.train, test_size=test_size, seed=seed)
    return ClientData(name or client_name(path), train, test)


def with_features(data: ClientData, backbone: Backbone, batch_size: int = 32) -> ClientData:
    """``data`` with its features from ``backbone`` (the feature cache makes re-runs cheap)."""
    data.X_train, _ = extract_features(backbone, data.train, batch_size=batch_size, progress=False)
    data.X_test, _ = extract_features(backbone, data.test, batch_size=batch_size, progress=False)
    return data


def backbone_of(model: str, options: dict[str, Any] | None = None) -> tuple[Backbone, str]:
    """The frozen backbone and its weight hash (what identifies it across the federation)."""
    backbone = get_backbone(model, **(options or {}))
    sha = backbone.identity().get("weights_sha256")
    if not sha:
        raise UserInputError(f"model {model!r} has no weight hash (random initialisation?)",
                             hint="federate a pre-trained backbone: its weight hash is how clients are matched")
    return backbone, str(sha)
