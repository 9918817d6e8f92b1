"""Single-label classification: the metrics and verdict of ``transferkit.evaluation``, unchanged."""
from __future__ import annotations

import numpy as np

from ..evaluation import classification_metrics, transfer_verdict
from .base import TASKS, Outputs, Task, unknown_labels_error


class Classification(Task):
    """One class per item.  Labels: ``str``; encoded ``(N,)`` int indices into ``classes``;
    outputs ``(N, C)`` probabilities, decided by their argmax; primary metric accuracy."""

    name = "classification"
    primary = "accuracy"
    higher_is_better = True
    primary_label = "accuracy"

    def encode(self, labels: list, classes: list[str]) -> np.ndarray:
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({str(v) for v in labels if v not in index})
        if unknown:
            raise unknown_labels_error(unknown, list(classes))
        return np.array([index[v] for v in labels], dtype=np.int64)

    def decide(self, outputs: np.ndarray, thresholds: np.ndarray | None = None, *,
               classes: list[str] | None = None) -> list[str]:
        """The most probable class name of each row of ``(N, C)`` probabilities."""
        if thresholds is not None:
            raise ValueError("thresholds are for multi-label outputs; classification decides by the argmax")
        if classes is None:
            raise ValueError("classification decides class names: pass classes=")
        return [classes[k] for k in np.asarray(outputs).argmax(axis=1)]

    def metrics(self, y: np.ndarray, outputs: np.ndarray, classes: list[str], *,
                thresholds: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
                confidence: float = 0.95) -> dict:
        """Exactly :func:`transferkit.evaluation.classification_metrics` (see there)."""
        if thresholds is not None:
            raise ValueError("thresholds are for multi-label outputs; classification decides by the argmax")
        return classification_metrics(y, outputs, classes, n_boot=n_boot, seed=seed, confidence=confidence)

    def verdict(self, y: np.ndarray, transfer: Outputs, controls: dict[str, Outputs], *,
                n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
        """Exactly :func:`transferkit.evaluation.transfer_verdict` on the argmax predictions, plus
        ``"metric": "accuracy"``."""
        v = transfer_verdict(y, np.asarray(transfer.values).argmax(axis=1),
                             {name: np.asarray(o.values).argmax(axis=1) for name, o in controls.items()},
                             n_boot=n_boot, seed=seed, confidence=confidence)
        return {"metric": self.primary, **v}


CLASSIFICATION = TASKS.register("classification")(Classification())
