"""A 1-D convolutional time-series encoder pre-trained by this project on UCR/UEA series.

The network is the Fully Convolutional Network of Wang, Yan & Oates (2017, "Time series
classification from scratch with deep neural networks: a strong baseline"), the model Fawaz
et al. (2018, "Transfer learning for time series classification") transferred across the UCR
archive: three convolution blocks (kernels 7 (FCN: 8), 5, 3; 64, 128, 128 channels; BatchNorm, ReLU),
then global average pooling.  Here the pooling is masked, so a batch of series of unequal
length is padded to its longest series without the padding entering the features, and the
encoder is channel-independent: each channel of a multivariate series is encoded on its own
and the features are averaged over channels, so one encoder serves any number of channels.

Preprocessing: each channel is z-normalised over its own time steps (a constant channel
becomes zeros); a series longer than ``max_length`` is linearly resampled to ``max_length``.

The weights (``weights/ts-fcn-ucr.safetensors``) are built by ``benchmarks/build_ts_encoder.py``
(seeded) from the UCR/UEA sets listed in :data:`PRETRAIN_SETS`; the others bundled with aeon
are left out as honest transfer targets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._files import files_sha256
from ..errors import UserInputError
from .base import Backbone, Batch

WEIGHTS = Path(__file__).parent / "weights" / "ts-fcn-ucr.safetensors"
#: sha256 of :data:`WEIGHTS` as the build script wrote it; loading checks it.
WEIGHTS_SHA256 = "72d5c753790a68c7e15f4eafea5488dff058d9f2cefc9118856dc8164ed306f0"
#: Class prototypes of each pre-training set (``series_features.class_prototypes``, ``(K, 64)`` per set), for
#: the data-set similarity that ``rank`` reports (Fawaz et al. 2018); written by the build script.
SOURCES = Path(__file__).parent / "weights" / "ts-fcn-ucr-sources.safetensors"
#: The UCR/UEA data sets (train and test files) the shipped weights were pre-trained on.
PRETRAIN_SETS = ("ACSF1", "OSULeaf", "JapaneseVowels", "PickupGestureWiimoteZ")
#: Bundled with aeon 1.6.0, classification, never seen in pre-training: the transfer targets.
TARGET_SETS = ("ArrowHead", "BasicMotions", "Covid3Month_disc", "GunPoint", "ItalyPowerDemand", "UnitTest")
CHANNELS = (64, 128, 128)
KERNELS = (7, 5, 3)  # FCN has 8, 5, 3: an odd first kernel pads "same" symmetrically (no copy, no warning)
MAX_LENGTH = 512


class FCNEncoder(nn.Module):
    """``(B, 1, T)`` z-normalised series and a mask ``(B, T)`` -> pooled features per block."""

    def __init__(self):
        super().__init__()
        blocks, cin = [], 1
        for cout, k in zip(CHANNELS, KERNELS):
            blocks.append(nn.Sequential(nn.Conv1d(cin, cout, k, padding="same"), nn.BatchNorm1d(cout), nn.ReLU()))
            cin = cout
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Masked mean over time of block ``layer``'s output (``None``: the last): ``(B, D)``."""
        last = len(self.blocks) - 1 if layer is None else layer % len(self.blocks)
        m = mask.unsqueeze(1).to(x.dtype)
        for block in self.blocks[:last + 1]:
            x = block(x) * m  # padding stays zero, so it never leaks into the next kernel
        return x.sum(dim=2) / m.sum(dim=2).clamp_min(1.0)


def prepare_series(items: list[Any], max_length: int = MAX_LENGTH) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Series -> ``(values (B*C, 1, T), mask (B*C, T), C)``, channel-independent, z-normalised.

    Args:
        items: arrays ``(C, T)`` or ``(T,)`` (lengths may differ, channels may not).
        max_length: longer series are linearly resampled to this length.

    Raises:
        UserInputError: channel counts differ, or a series has missing values.
    """
    arrays = [np.asarray(x, dtype=np.float32) for x in items]
    arrays = [a[None, :] if a.ndim == 1 else a for a in arrays]
    channels = {a.shape[0] for a in arrays}
    if len(channels) > 1:
        raise UserInputError(f"the series have different channel counts {sorted(channels)}",
                             "give every series the same channels (run the data check to find the odd ones)")
    if any(not np.isfinite(a).all() for a in arrays):
        raise UserInputError("a series has missing (NaN or infinite) values",
                             "fill them in or leave the series out (the data check names them)")
    arrays = [_resample(a, max_length) if a.shape[1] > max_length else a for a in arrays]
    c = arrays[0].shape[0] if arrays else 1
    t = max((a.shape[1] for a in arrays), default=1)
    values = np.zeros((len(arrays) * c, 1, t), np.float32)
    mask = np.zeros((len(arrays) * c, t), bool)
    for i, a in enumerate(arrays):
        mu, sd = a.mean(axis=1, keepdims=True), a.std(axis=1, keepdims=True)
        z = np.where(sd > 1e-8, (a - mu) / np.where(sd > 1e-8, sd, 1.0), 0.0)
        values[i * c:(i + 1) * c, 0, :a.shape[1]] = z
        mask[i * c:(i + 1) * c, :a.shape[1]] = True
    return torch.from_numpy(values), torch.from_numpy(mask), c


def _resample(a: np.ndarray, length: int) -> np.ndarray:
    old = np.linspace(0.0, 1.0, a.shape[1])
    new = np.linspace(0.0, 1.0, length)
    return np.stack([np.interp(new, old, ch) for ch in a]).astype(np.float32)


def load_encoder(path: Path = WEIGHTS, sha256: str | None = WEIGHTS_SHA256) -> FCNEncoder:
    """The pre-trained encoder, its file checked against ``sha256`` (``None``: unchecked)."""
    from safetensors.torch import load_file

    if sha256 is not None and files_sha256([str(path)]) != sha256:
        raise UserInputError(f"{path} does not have the sha256 the package was built with",
                             "reinstall transferkit (the time-series weights file was changed)")
    module = FCNEncoder()
    module.load_state_dict(load_file(str(path)), strict=True)
    return module.eval()


class TimeSeriesBackbone(Backbone):
    """The FCN encoder as a :class:`Backbone` for the ``timeseries`` modality.

    Args:
        name: the zoo name.
        layer: 0..2, a block's output (``None`` / ``"last"``: block 2).
        max_length: series longer than this are resampled to it.
        init: ``"pretrained"`` or ``"random:<seed>"``.
    """

    modality = "timeseries"

    def __init__(self, name: str = "ts-fcn-ucr", *, layer: int | str | None = None, max_length: int = MAX_LENGTH,
                 init: str = "pretrained", pooling: str | None = "masked-mean"):
        super().__init__(name, layer=layer, pooling=pooling or "masked-mean", init=init)
        if self.layer is not None and not -len(CHANNELS) <= self.layer < len(CHANNELS):
            raise UserInputError(f"layer {self.layer} does not exist in {name}",
                                 f"use 0..{len(CHANNELS) - 1} (or -1, 'last')")
        self.max_length = int(max_length)

    def _load_module(self) -> nn.Module:
        if self.init.startswith("random:"):
            torch.manual_seed(int(self.init.split(":", 1)[1]))
            return FCNEncoder()
        return load_encoder()

    def weights_sha256(self) -> str:
        return WEIGHTS_SHA256

    def randomized(self, seed: int = 0) -> "TimeSeriesBackbone":
        return TimeSeriesBackbone(self.name, layer=self.layer, max_length=self.max_length, init=f"random:{seed}")

    @property
    def num_features(self) -> int:
        return CHANNELS[-1 if self.layer is None else self.layer]

    def preprocessing(self) -> dict[str, Any]:
        return {"normalise": "z per series and channel", "max_length": self.max_length,
                "longer": "linear resampling", "unequal_lengths": "padded, masked", "channels": "independent, mean"}

    def prepare(self, items: list[Any]) -> Batch:
        values, mask, c = prepare_series(items, self.max_length)
        lengths = mask.sum(dim=1).view(len(items), c)[:, 0]
        units = torch.stack([lengths, lengths], dim=1)
        return Batch(tensors={"values": values, "mask": mask}, n_items=len(items), units=units,
                     extra={"channels": c})

    def forward_features(self, batch: Batch) -> torch.Tensor:
        feats = self.module(batch.tensors["values"], batch.tensors["mask"], self.layer)
        return feats.view(batch.n_items, -1, feats.shape[1]).mean(dim=1)

    def layer_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        return [(f"block{i}", list(b.parameters())) for i, b in enumerate(self.module.blocks)]

    def sort_key(self, item: Any) -> float:
        return float(np.shape(item)[-1])

    def units_name(self) -> str:
        return "time steps"
