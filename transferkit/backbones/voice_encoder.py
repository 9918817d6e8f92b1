"""Resemblyzer's speaker encoder as a backbone: a 3-layer LSTM on 40-band mel frames.

The network and weights are those of the ``resemblyzer`` package (0.1.4, Apache-2.0; Jemine's
"Real-Time Voice Cloning" encoder), trained with the generalised end-to-end speaker
verification loss (Wan et al., ICASSP 2018, "Generalized End-to-End Loss for Speaker
Verification") on thousands of speakers (LibriSpeech, VoxCeleb 1 and 2).  Its weights file,
``resemblyzer/pretrained.pt``, is a torch pickle: it is read with ``torch.load(...,
weights_only=True)`` (tensors and containers only, never arbitrary objects), and resemblyzer's
own modules, which import librosa and webrtcvad, are never imported.

Preprocessing follows resemblyzer's documented steps, rewritten in numpy: 16 kHz mono, volume
raised (never lowered) to -30 dBFS, a mel power spectrogram (25 ms window, 10 ms hop, 40 bands,
librosa's conventions: :mod:`transferkit.data._mel`), cut into partial utterances of 160 frames
(1.6 s) at 1.3 per second, the last kept where it covers 75 % (the clip zero-padded to it).  One
difference, recorded in :meth:`VoiceEncoderBackbone.preprocessing`: resemblyzer's voice-activity
trimming of long silences (webrtcvad) is not applied.

Shapes: partials ``(P, 160, 40)`` -> per partial ``(P, 256)`` -> per item the mean ``(N, 256)``;
the last layer's per-partial embeddings are ReLU'd and unit-length, and so is their mean (as
``VoiceEncoder.embed_utterance``).  Layers: 0-2 the final hidden state of LSTM layer 1-3, 3 (the
default, ``None``) the embedding.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._files import files_sha256
from ..errors import MissingDependencyError, UserInputError
from .base import Backbone, Batch, pool_chunks

SAMPLING_RATE = 16000
N_FFT, HOP, N_MELS = 400, 160, 40  # 25 ms window, 10 ms step
PARTIAL_FRAMES = 160  # 1.6 s
PARTIAL_RATE, MIN_COVERAGE = 1.3, 0.75
NORM_DBFS = -30.0
HIDDEN = 256
N_LAYERS = 3


def weights_path() -> Path:
    """``pretrained.pt`` inside the installed resemblyzer package, found without importing it."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("the resemblyzer speaker encoder", "resemblyzer==0.1.4")
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise UserInputError(f"the resemblyzer package has no weights file at {path}",
                             hint="reinstall it: pip install --force-reinstall resemblyzer==0.1.4")
    return path


class SpeakerLSTM(nn.Module):
    """Resemblyzer's ``VoiceEncoder`` network, its 3-layer LSTM as three 1-layer LSTMs (the same
    computation: no dropout between layers) so that each is a stage of its own."""

    def __init__(self):
        super().__init__()
        self.lstms = nn.ModuleList([nn.LSTM(N_MELS if i == 0 else HIDDEN, HIDDEN, batch_first=True)
                                    for i in range(N_LAYERS)])
        self.linear = nn.Linear(HIDDEN, HIDDEN)

    def stages(self) -> list[nn.Module]:
        return [*self.lstms, self.linear]

    def forward(self, mels: torch.Tensor, layer: int = N_LAYERS) -> torch.Tensor:
        """``mels (P, frames, 40)`` -> ``(P, 256)``: LSTM layer ``layer``'s final hidden state
        (0-2), or (3) the unit-length ReLU embedding."""
        x = mels
        for i, lstm in enumerate(self.lstms):
            x, (h, _c) = lstm(x)
            if i == layer:
                return h[-1]
        e = torch.relu(self.linear(h[-1]))
        return e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def load_resemblyzer(self, state: dict[str, torch.Tensor]) -> None:
        """Copy resemblyzer's ``model_state`` (``lstm.weight_ih_l{k}``...) into the stages."""
        mine = {}
        for k, v in state.items():
            if k.startswith("lstm."):
                name, layer = k[len("lstm."):].rsplit("_l", 1)
                mine[f"lstms.{layer}.{name}_l0"] = v
            elif k.startswith("linear."):
                mine[k] = v
        self.load_state_dict(mine, strict=True)  # every tensor present, none left over


def partial_starts(n_samples: int) -> list[int]:
    """First mel frame of each partial utterance of a clip of ``n_samples`` at 16 kHz
    (resemblyzer's ``compute_partial_slices``, rate 1.3, coverage 0.75)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round((SAMPLING_RATE / PARTIAL_RATE) / HOP))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    last = starts[-1] * HOP
    coverage = (n_samples - last) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts.pop()
    return starts


def normalize_volume(wave: np.ndarray) -> np.ndarray:
    """Raise (never lower) the level to -30 dBFS; silence stays silence."""
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0
    if rms <= 0.0:
        return wave
    change = NORM_DBFS - 20.0 * np.log10(rms)
    return wave if change < 0 else (wave * 10.0 ** (change / 20.0)).astype(np.float32)


def utterance_partials(wave: np.ndarray) -> np.ndarray:
    """A preprocessed 16 kHz clip ``(T,)`` -> its partial mel spectrograms ``(P, 160, 40)``."""
    from ..data._mel import mel_spectrogram

    starts = partial_starts(len(wave))
    end = (starts[-1] + PARTIAL_FRAMES) * HOP
    if end >= len(wave):
        wave = np.pad(wave, (0, end - len(wave)))
    mel = mel_spectrogram(wave, SAMPLING_RATE, N_FFT, HOP, N_MELS)
    return np.stack([mel[s:s + PARTIAL_FRAMES] for s in starts])


class VoiceEncoderBackbone(Backbone):
    """Resemblyzer's speaker encoder (GE2E, 1.4 M parameters): speaker identity, not words.

    Args:
        layer: 0-2 an LSTM layer's final hidden state; 3 / ``None`` / ``"last"`` the embedding.
        max_seconds: clips are cut to this length (the run's notes say how many were).
    """

    modality = "audio"
    final_layer = N_LAYERS  # what ``layer=None`` computes: the embedding

    def __init__(self, name: str = "resemblyzer", *, layer: int | str | None = None, max_seconds: float = 30.0,
                 init: str = "pretrained", pooling: str | None = "mean"):
        super().__init__(name, layer=layer, pooling=pooling or "mean", init=init)
        if self.layer is not None:
            k = self.layer + N_LAYERS + 1 if self.layer < 0 else self.layer
            if not 0 <= k <= N_LAYERS:
                raise UserInputError(f"{name} has layers 0-{N_LAYERS}, not {self.layer}",
                                     hint="0-2: the LSTM layers' final states; 3 or 'last': the speaker embedding")
            self.layer = None if k == N_LAYERS else k
        if not max_seconds or max_seconds <= 0:
            raise UserInputError(f"max_seconds must be positive, got {max_seconds!r}")
        self.max_seconds = float(max_seconds)

    def _load_module(self) -> nn.Module:
        if self.init.startswith("random:"):
            torch.manual_seed(int(self.init.split(":", 1)[1]))
            return SpeakerLSTM()  # PyTorch's default initialisation, seeded
        module = SpeakerLSTM()
        checkpoint = torch.load(weights_path(), map_location="cpu", weights_only=True)
        module.load_resemblyzer(checkpoint["model_state"])
        return module

    def weights_sha256(self) -> str:
        return files_sha256([weights_path()])

    def randomized(self, seed: int = 0) -> "VoiceEncoderBackbone":
        return VoiceEncoderBackbone(self.name, layer=self.layer, max_seconds=self.max_seconds,
                                    init=f"random:{seed}")

    @property
    def num_features(self) -> int:
        return HIDDEN

    def preprocessing(self) -> dict[str, Any]:
        return {"sampling_rate": SAMPLING_RATE, "mono": "mean of channels", "resample": "polyphase (scipy)",
                "volume": f"raised to {NORM_DBFS:g} dBFS, never lowered", "vad_trim": False,
                "mel": {"n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS, "scale": "slaney", "power": 2,
                        "log": False},
                "partials": {"frames": PARTIAL_FRAMES, "per_second": PARTIAL_RATE, "min_coverage": MIN_COVERAGE},
                "max_seconds": self.max_seconds}

    def units_name(self) -> str:
        return "samples"

    def sort_key(self, item: Any) -> float:
        if isinstance(item, tuple):
            item = item[0]
        if isinstance(item, np.ndarray):
            return float(len(item))
        try:
            return float(Path(item).stat().st_size)
        except (OSError, TypeError):
            return 0.0

    def _wave(self, item: Any) -> tuple[np.ndarray, int]:
        """The clip at 16 kHz, cut to ``max_seconds``, volume-normalised; and its uncut length."""
        from ..data import load_audio, resample

        # An in-memory clip comes as (array, rate); a bare array is taken to be at 16 kHz.
        w, rate = load_audio(item[0], item[1]) if isinstance(item, tuple) else load_audio(item, SAMPLING_RATE)
        w = resample(w, rate, SAMPLING_RATE)
        return normalize_volume(w[:int(self.max_seconds * SAMPLING_RATE)]), len(w)

    def prepare(self, items: list[Any]) -> Batch:
        parts, units = [], np.zeros((len(items), 2), dtype=np.int64)
        for i, x in enumerate(items):
            w, total = self._wave(x)
            units[i] = (len(w), total)
            parts.append(utterance_partials(w))
        batch = self.batch_from_spectrograms([], parts=parts)
        batch.units = units
        return batch

    def spectrogram(self, item: Any) -> np.ndarray:
        """The item's whole mel power spectrogram ``(F, 40)`` as the encoder reads it (padded to
        its last partial): what explanations occlude."""
        from ..data._mel import mel_spectrogram

        w, _ = self._wave(item)
        end = (partial_starts(len(w))[-1] + PARTIAL_FRAMES) * HOP
        return mel_spectrogram(np.pad(w, (0, max(0, end - len(w)))), SAMPLING_RATE, N_FFT, HOP, N_MELS)

    def batch_from_spectrograms(self, specs: list[np.ndarray], parts: list[np.ndarray] | None = None) -> Batch:
        """One item per spectrogram ``(F, 40)`` from :meth:`spectrogram` (or per stack of
        partials ``(P, 160, 40)`` in ``parts``), cut into the partials the encoder reads."""
        if parts is None:  # a padded clip of (F - 1) * HOP samples has its clip's partials (the pad adds none)
            parts = [np.stack([s[k:k + PARTIAL_FRAMES] for k in partial_starts((len(s) - 1) * HOP)]) for s in specs]
        owner = [i for i, p in enumerate(parts) for _ in range(len(p))]
        mels = torch.from_numpy(np.concatenate(parts)) if parts else torch.zeros(0, PARTIAL_FRAMES, N_MELS)
        return Batch(tensors={"mels": mels}, n_items=len(parts), owner=torch.tensor(owner, dtype=torch.long))

    def forward_features(self, batch: Batch) -> torch.Tensor:
        layer = N_LAYERS if self.layer is None else self.layer
        per_partial = self.module(batch.tensors["mels"], layer)
        ones = torch.ones_like(batch.owner, dtype=per_partial.dtype)
        pooled = pool_chunks(per_partial, batch.owner, ones, batch.n_items)
        if layer == N_LAYERS:  # resemblyzer's utterance embedding: the unit-length mean
            pooled = pooled / pooled.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return pooled

    def layer_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        names = [f"lstm{i + 1}" for i in range(N_LAYERS)] + ["projection"]
        return [(n, list(s.parameters())) for n, s in zip(names, self.module.stages())]
