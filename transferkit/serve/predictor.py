"""What the server's worker runs: a loaded run, giving the task's outputs (probabilities, values
or per-label probabilities) and the pooled features the drift monitor watches, from one forward
pass where the strategy allows it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import Dataset
from ..features import extract_features
from ..runs import RunDir, load
from ..strategies.base import TransferContext
from ..strategies.tent import episodic_options, episodic_outputs
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
    """

    def __init__(self, run_dir: str | Path, load_options: dict[str, Any] | None = None, tent: bool = False):
        self.run_dir = Path(run_dir)
        self.model = load(self.run_dir, cache=False, progress=False, **(load_options or {}))
        self.card = self.model.card
        self.tent: dict[str, Any] | None = None
        if tent:
            self._tent_options = episodic_options(self.model.backbone, self.model.strategy)
            self.tent = {"method": "TENT (Wang et al., ICLR 2021): normalisation affine parameters minimise the "
                                   "prediction entropy of the request's items, then those items are predicted",
                         "episodic": "per request: the model is reset after each one (a request larger than "
                                     "max_batch is adapted on in slices of max_batch items)",
                         "options": self._tent_options}
        self.reference = RunDir(self.run_dir).reference(self.card)
        self._last: np.ndarray | None = None
        model = self.model
        self._ctx = TransferContext(backbone=model.ctx.backbone, features=self._features, seed=model.ctx.seed,
                                    device=model.ctx.device, progress=False)

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
        if self.modality == "image":  # the queue holds encoded bytes; the batch's pixels are bounded
            items = [decode_image(x) if isinstance(x, (bytes, bytearray)) else x for x in items]
        rate = None
        if self.modality == "audio":  # encoded bytes too: decoded one batch at a time, at one rate
            items = [decode_audio_upload(bytes(x)) if isinstance(x, (bytes, bytearray)) else x for x in items]
            rate = AUDIO_RATE
        data = Dataset(modality=self.modality, inputs=list(items), sampling_rate=rate)
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
