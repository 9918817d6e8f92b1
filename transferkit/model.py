"""A trained transfer model: a backbone, a fitted strategy, its task, classes and lineage."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from .backbones.base import Backbone
from .data.dataset import Dataset
from .errors import UserInputError
from .features import ExtractionStats, FeatureCache, extract_features
from .strategies.base import Strategy, TransferContext
from .tasks import get_task


class TransferModel:
    """What ``tk.fit`` returns and ``tk.load`` gives back.

    Attributes:
        backbone: the pre-trained backbone (frozen or adapted, as the strategy left it).
        strategy: the fitted strategy.
        task: what it predicts: ``"classification"``, ``"regression"`` or ``"multi-label"``.
        classes: class names (multi-label: label names), in the order of the output columns;
            ``[]`` for regression.
        card: the model card (lineage) as a dict.
        metrics: the fit's metrics (``None`` for a loaded model without metrics.json).
        run_dir: where the run lives, if it was written.
        transfer: where model selection delivered another model than the transfer model (the
            probe, the hybrid or the classical model), the transfer model itself, which the
            verdict judges; ``None`` when this model is the transfer model.
    """

    #: Jupyter's rich view (:meth:`_repr_html_`): the report's verdict banner and summary table,
    #: set by :mod:`transferkit.report.notebook` (the report package sits above this module).
    html_view: ClassVar[Callable[[TransferModel], str | None] | None] = None

    def __init__(self, backbone: Backbone, strategy: Strategy, *, card: dict[str, Any] | None = None,
                 metrics: dict[str, Any] | None = None, run_dir: str | Path | None = None,
                 cache: bool = True, batch_size: int = 32, progress: bool | None = None, backend: str = "torch"):
        self.backbone = backbone
        self.strategy = strategy
        self.card = card or {}
        self.metrics = metrics
        self.run_dir = Path(run_dir) if run_dir else None
        self.batch_size = batch_size
        self.backend = backend  # feature extraction: torch, or onnx (ONNX Runtime on CPU)
        self.extraction_log: list[ExtractionStats] = []
        self.onnx = None  # an OnnxRunner when loaded with backend="onnx"
        self.transfer: TransferModel | None = None
        #: the on-disk feature cache (``None``: features are computed every time)
        self.feature_cache = FeatureCache() if cache else None
        self.ctx = TransferContext(backbone=backbone, features=self._features, seed=self.card.get("seed", 0),
                                   progress=progress)

    @property
    def classes(self) -> list[str]:
        return list(self.strategy.classes_)

    @property
    def task(self) -> str:
        return self.strategy.task_

    @property
    def modality(self) -> str:
        return self.backbone.modality

    def _features(self, data: Dataset) -> np.ndarray:
        feats, stats = extract_features(self.ctx.backbone, data, batch_size=self.batch_size,
                                        cache=self.feature_cache or False, progress=self.ctx.progress,
                                        backend=self.backend)
        self.extraction_log.append(stats)
        return feats

    def as_dataset(self, inputs: Any) -> Dataset:
        """Turn what a user passes into a :class:`Dataset` of this model's modality.

        Accepts a :class:`Dataset`, a list of texts (text models), a list of image/audio file
        paths or arrays, or an array batch ``(N, H, W[, C])``.
        """
        if isinstance(inputs, Dataset):
            if inputs.modality != self.modality:
                raise UserInputError(f"this model takes {self.modality} data, not {inputs.modality}")
            return inputs
        if isinstance(inputs, (str, Path)):
            inputs = [str(inputs)]
        if isinstance(inputs, np.ndarray) and self.modality == "image" and inputs.ndim >= 3:
            from .data import from_arrays

            return from_arrays(inputs, modality="image")
        items = [str(x) if isinstance(x, Path) else x for x in inputs]
        if not items:
            raise UserInputError("nothing to predict: the input list is empty")
        if self.modality == "text" and not all(isinstance(x, str) for x in items):
            raise UserInputError("a text model predicts from a list of strings")
        return Dataset(modality=self.modality, inputs=items)

    def predict_proba(self, inputs: Any) -> np.ndarray:
        """Class probabilities ``(N, C)``, columns in the order of :attr:`classes` (multi-label:
        per-label probabilities ``(N, L)``).

        Raises:
            UserInputError: a regression model (it predicts numbers: :meth:`predict_outputs`).
        """
        if self.onnx is not None:
            return self.onnx.predict_proba(self.as_dataset(inputs), batch_size=self.batch_size)
        return self.strategy.predict_proba(self.as_dataset(inputs), self.ctx)

    def predict_outputs(self, inputs: Any) -> np.ndarray:
        """The task's outputs: classification ``(N, C)`` probabilities, regression ``(N,)``
        values in the target's units, multi-label ``(N, L)`` per-label probabilities."""
        if self.onnx is not None:  # the exported graph gives the task's outputs
            return self.onnx.predict_outputs(self.as_dataset(inputs), batch_size=self.batch_size)
        return self.strategy.predict_outputs(self.as_dataset(inputs), self.ctx)

    def predict(self, inputs: Any) -> list:
        """One decision per input: a class name (classification), a number (regression) or a
        sorted tuple of label names (multi-label: each label whose probability reaches the
        threshold chosen for it in training)."""
        outputs = self.predict_outputs(inputs)
        if self.task == "classification":
            return [self.classes[i] for i in outputs.argmax(1)]
        return get_task(self.task).decide(outputs, self.strategy.thresholds_, classes=self.classes)

    def _repr_html_(self) -> str | None:
        """In a notebook: the fit's verdict banner and summary table (``None``: the plain repr)."""
        view = type(self).html_view
        return None if view is None else view(self)

    def __repr__(self) -> str:
        where = f", run_dir={str(self.run_dir)!r}" if self.run_dir else ""
        task = f", task={self.task!r}" if self.task != "classification" else ""
        return f"TransferModel({self.backbone.describe()}, {self.strategy!r}, classes={self.classes}{task}{where})"
