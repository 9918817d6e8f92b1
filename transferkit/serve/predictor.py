"""What the server's worker runs: a loaded run, giving the task's outputs (probabilities, values
or per-label probabilities) and the pooled features the drift monitor watches, from one forward
pass where the strategy allows it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import Dataset
from ..errors import UserInputError
from ..features import extract_features
from ..runs import RunDir, load
from ..strategies.base import TransferContext
from ..strategies.tent import episodic_options, episodic_outputs
from .backend import OutputCache, choose_backend, content_key
from .inputs import AUDIO_RATE, check_text, decode_audio_upload, decode_image


class Predictor:
    """A run directory loaded for serving.

    Features are never written to the on-disk cache (requests would fill the disk).  For
    strategies on frozen features (the linear probe) the features the head reads are the
    ones the drift monitor gets; for strategies that run the backbone themselves a second
    pass computes them.

    Attributes:
        task: ``"classification"``, ``"regression"`` or ``"multi-label"``.
        classes: class names (multi-label: label names), in the order of probability columns;
            ``[]`` for regression.
        thresholds: multi-label: ``(L,)`` per-label decision thresholds; otherwise ``None``.
        modality: ``"text"``, ``"image"`` or ``"audio"``.
        card: the model card.
        reference: ``(n, D)`` training features for drift, or ``None`` (older runs).
        tent: with ``tent=True``, how each request is adapted on (for /metadata), else ``None``:
            TENT (Wang et al. 2021) on the request's own items, the model's normalisation
            parameters put back after each request (episodic), so no request changes the model
            another one meets.  Refused at load time for runs that do not qualify.
        backend: what predicts (:func:`~transferkit.serve.backend.choose_backend`: ``name``,
            ``file``, ``why``); ``backend="auto"`` takes the run's fastest checked ONNX graph.
        max_chunks: text runs: windows per text at most (``None``: the run's own setting).
        cache: the :class:`~transferkit.serve.backend.OutputCache` of recent items (``None``
            with ``cache_items=0`` or with TENT, whose outputs depend on the request).
    """

    def __init__(self, run_dir: str | Path, load_options: dict[str, Any] | None = None, tent: bool = False, *,
                 backend: str = "auto", max_chunks: int | None = None, cache_items: int = 0,
                 threads: int | None = None):
        self.run_dir = Path(run_dir)
        load_options = load_options or {}
        self.model = load(self.run_dir, cache=False, progress=False, **load_options)
        self.card = self.model.card
        bb = self.model.backbone
        if max_chunks is not None:
            if not hasattr(bb, "max_chunks"):
                raise UserInputError(f"--max-chunks applies to text runs that split texts into windows, not to "
                                     f"{bb.describe()}", hint="leave --max-chunks out")
            bb.max_chunks = max_chunks
        self.max_chunks = getattr(bb, "max_chunks", None)
        self.tent: dict[str, Any] | None = None
        if tent:
            self._tent_options = episodic_options(self.model.backbone, self.model.strategy)
            self.tent = {"method": "TENT (Wang et al., ICLR 2021): normalisation affine parameters minimise the "
                                   "prediction entropy of the request's items, then those items are predicted",
                         "episodic": "per request: the model is reset after each one (a request larger than "
                                     "max_batch is adapted on in slices of max_batch items)",
                         "options": self._tent_options}
        self.reference = RunDir(self.run_dir).reference(self.card)
        self.backend = choose_backend(self.card, self.run_dir, backend, tent=tent,
                                      which=load_options.get("which", "delivered"),
                                      needs_features=self.reference is not None)
        self._onnx = None
        if self.backend["file"]:
            from ..onnx_runtime import OnnxRunner

            self._onnx = OnnxRunner(self.run_dir / self.backend["file"], bb, threads=threads)
        self.cache = OutputCache(cache_items) if cache_items and not tent else None
        self._last: np.ndarray | None = None
        model = self.model
        self._ctx = TransferContext(backbone=model.ctx.backbone, features=self._features, seed=model.ctx.seed,
                                    device=model.ctx.device, progress=False)

    def serving(self) -> dict[str, Any]:
        """What /metadata says of how predictions are made: backend, windows per text, cache."""
        return {"backend": self.backend, "max_chunks": self.max_chunks,
                "cache": None if self.cache is None else self.cache.describe()}

    @property
    def classes(self) -> list[str]:
        return self.model.classes

    @property
    def task(self) -> str:
        return self.model.task

    @property
    def thresholds(self) -> np.ndarray | None:
        return self.model.strategy.thresholds_ if self.task == "multi-label" else None

    @property
    def modality(self) -> str:
        return self.model.modality

    def _features(self, data: Dataset) -> np.ndarray:
        feats, _ = extract_features(self._ctx.backbone, data, batch_size=self.model.batch_size, cache=False,
                                    progress=False, device=self._ctx.device)
        self._last = feats
        return feats

    def predict(self, items: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """The task's outputs and pooled features ``(N, D)`` of ``N`` decoded items
        (texts; for images encoded bytes, already checked, or ``(H, W, 3)`` uint8 arrays; for audio
        encoded bytes, already checked, or 16 kHz float waveforms ``(T,)``).

        Outputs: classification ``(N, C)`` probabilities, regression ``(N,)`` values in the
        target's units, multi-label ``(N, L)`` per-label probabilities.  Called from one worker
        thread at a time.

        Raises:
            RequestError: (a :class:`~transferkit.errors.UserInputError`) for a text the model
                would fail on; the batcher then runs the batch's requests one by one, so only
                the request that holds it gets the error.
        """
        if self.modality == "text":  # the app checks this already: here for callers of the library
            for t in items:
                check_text(t, "a text")
        if self.cache is None:
            return self._predict(items)
        keys = [content_key(x) for x in items]
        rows = [self.cache.get(k) for k in keys]
        todo = [i for i, r in enumerate(rows) if r is None]
        if todo:
            outputs, feats = self._predict([items[i] for i in todo])
            for j, i in enumerate(todo):
                rows[i] = (outputs[j], None if feats is None else feats[j])
                self.cache.put(keys[i], *rows[i])
        outputs = np.stack([r[0] for r in rows])
        feats = None if any(r[1] is None for r in rows) else np.stack([r[1] for r in rows])
        return outputs, feats

    def _predict(self, items: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        if self.modality == "image":  # the queue holds encoded bytes; the batch's pixels are bounded
            items = [decode_image(x) if isinstance(x, (bytes, bytearray)) else x for x in items]
        rate = None
        if self.modality == "audio":  # encoded bytes too: decoded one batch at a time, at one rate
            items = [decode_audio_upload(bytes(x)) if isinstance(x, (bytes, bytearray)) else x for x in items]
            rate = AUDIO_RATE
        data = Dataset(modality=self.modality, inputs=list(items), sampling_rate=rate)
        if self._onnx is not None:  # the graph gives the outputs and the drift monitor's features at once
            outputs, feats = self._onnx.outputs_and_features(data, batch_size=self.model.batch_size,
                                                             features=self.reference is not None)
            return np.asarray(outputs, dtype=np.float64), feats
        self._last = None
        if self.tent is not None:  # the batcher gives this one request's items (one_request_per_call)
            outputs = episodic_outputs(self.model.backbone, self.model.strategy, data, device=self._ctx.device,
                                       seed=self._ctx.seed, options=self._tent_options)
        else:
            outputs = self.model.strategy.predict_outputs(data, self._ctx)
        feats = self._last
        if feats is None or len(feats) != len(items):
            feats = self._features(data) if self.reference is not None else None
        return np.asarray(outputs, dtype=np.float64), feats
