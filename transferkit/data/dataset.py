"""The in-memory description of a labelled (or unlabelled) data set.

A :class:`Dataset` holds *references* to the items, not their decoded contents: texts are
strings (small), images and audio are file paths (decoded lazily, batch by batch, by the
backbone) or in-memory arrays.  This keeps memory flat whatever the data size.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

MODALITIES = ("text", "image", "audio", "timeseries")
# What the labels are: class names, numbers, or sets of label names (see Dataset.labels).
TASK_NAMES = ("classification", "regression", "multi-label")


@dataclass
class Dataset:
    """Items, their labels and where each came from.

    Attributes:
        modality: ``"text"``, ``"image"``, ``"audio"`` or ``"timeseries"``.
        inputs: one entry per item: ``str`` for text; a file path (``str``) or an array
            ``(H, W)``/``(H, W, C)`` uint8 for images; a file path or a float array ``(T,)``
            for audio; a float32 array ``(C, T)`` for a time series (lengths may differ).
        labels: one per item, typed by ``task``: classification, the class name (``str``);
            regression, the target (finite ``float``); multi-label, the item's label names
            (``tuple[str, ...]``, sorted, distinct, non-empty).  ``None`` for unlabelled data.
            (An item reported as bad keeps a placeholder, NaN or ``()``, until it is dropped.)
        origins: where each item came from, for messages: ``"emails.jsonl:12"`` or a path.
        source: a short description of the whole set (usually the path given by the user).
        sampling_rate: for in-memory audio arrays.
        task: one of :data:`TASK_NAMES`: what the labels are.
    """

    modality: str
    inputs: list[Any]
    labels: list[str] | None = None
    origins: list[str] = field(default_factory=list)
    source: str = "<memory>"
    sampling_rate: int | None = None
    task: str = "classification"
    _hashes: list[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, not {self.modality!r}")
        if self.task not in TASK_NAMES:
            raise ValueError(f"task must be one of {TASK_NAMES}, not {self.task!r}")
        if not self.origins:
            self.origins = [f"{self.source}[{i}]" for i in range(len(self.inputs))]
        if self.labels is not None and len(self.labels) != len(self.inputs):
            raise ValueError("labels and inputs differ in length")

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def classes(self) -> list[str]:
        """Sorted distinct class names; for multi-label the sorted union of the items' label
        names; for regression ``[]``."""
        if self.task == "regression":
            return []
        if self.task == "multi-label":
            return sorted({name for labs in self.labels or [] for name in labs})
        return sorted(set(self.labels or []))

    def subset(self, indices: Sequence[int] | np.ndarray) -> "Dataset":
        idx = [int(i) for i in indices]
        hashes = self._hashes
        return Dataset(
            modality=self.modality,
            inputs=[self.inputs[i] for i in idx],
            labels=None if self.labels is None else [self.labels[i] for i in idx],
            origins=[self.origins[i] for i in idx],
            source=self.source,
            sampling_rate=self.sampling_rate,
            task=self.task,
            _hashes=None if hashes is None else [hashes[i] for i in idx],
        )

    def content_hashes(self) -> list[str]:
        """sha256 (hex) of each item's content: the text, the file bytes or the array bytes."""
        if self._hashes is None:
            self._hashes = [item_hash(x, self.modality) for x in self.inputs]
        return self._hashes

    def fingerprint(self) -> str:
        """One sha256 over all items and labels, in order: the data hash of a run.

        Classification hashes exactly as before tasks existed (old runs keep their hashes);
        the other tasks add their name, so the same values read as classes or as targets
        are different data.
        """
        h = hashlib.sha256()
        for c in self.content_hashes():
            h.update(c.encode())
        if self.task != "classification":
            h.update(b"\0task:" + self.task.encode())
        for lab in self.labels or []:
            if self.task == "multi-label":
                lab = json.dumps(list(lab), ensure_ascii=False)  # unambiguous, whatever the names hold
            elif self.task == "regression":
                lab = repr(float(lab))
            h.update(b"\0" + str(lab).encode())
        return h.hexdigest()


def item_hash(x: Any, modality: str) -> str:
    """sha256 hex of one item's content (see :meth:`Dataset.content_hashes`).

    A ``str`` is the text itself for the text modality and a file path otherwise.
    """
    h = hashlib.sha256()
    if isinstance(x, (str, Path)) and modality != "text":
        with open(x, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    elif isinstance(x, str):
        h.update(b"text\0" + x.encode("utf-8", "surrogatepass"))
    elif isinstance(x, np.ndarray):
        h.update(f"array\0{x.dtype.str}{x.shape}".encode())
        h.update(np.ascontiguousarray(x).tobytes())
    elif isinstance(x, (bytes, bytearray)):
        h.update(b"bytes\0" + bytes(x))
    else:
        raise TypeError(f"cannot hash an item of type {type(x).__name__}")
    return h.hexdigest()

