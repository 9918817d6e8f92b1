"""``tk-forecaster``: a small quantile forecaster pre-trained by the project on real series.

The network (N-BEATS-like, Oreshkin et al. 2020: a stack of fully connected residual blocks over
a fixed look-back window) reads the last :data:`CONTEXT` values of a series, each window scaled
by its own mean and standard deviation (:func:`transferkit.tasks.backtest.scale_contexts`, as in
DeepAR / Chronos), with an observed-mask channel for padding and gaps, and gives
:data:`QUANTILES` of each of the next :data:`MAX_HORIZON` values (trained with the pinball loss).
The pooled output of the last block is the embedding (the features a probe reads); the quantile
layer is the source head.

Its weights ship in the package (``backbones/weights/tk-forecaster.safetensors``, ~1 MB), built
by ``benchmarks/build_forecaster.py`` from the series of ``statsmodels.datasets`` listed in
:data:`PRETRAIN_SERIES` (plus seeded synthetic seasonal series); the series in
:data:`HELD_OUT_SERIES` are never seen, so they are honest forecasting targets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._files import files_sha256
from ..errors import UserInputError
from ..tasks.backtest import scale_contexts
from ..tasks.forecast import QUANTILES
from .base import Backbone, Batch

CONTEXT = 64
MAX_HORIZON = 24
HIDDEN = 256
BLOCKS = 3
WEIGHTS = Path(__file__).parent / "weights" / "tk-forecaster.safetensors"
#: statsmodels.datasets series the shipped weights were pre-trained on ...
PRETRAIN_SERIES = ("co2", "macrodata", "danish_data")
#: ... and those left out of pre-training (the benchmark's targets).
HELD_OUT_SERIES = ("elnino", "elec_equip", "sunspots", "nile", "interest_inflation")


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(h))))


class ForecasterNet(nn.Module):
    """``x (N, 2, CONTEXT)`` scaled values + observed mask -> embedding ``(N, HIDDEN)``
    (:meth:`embed`) -> quantiles ``(N, MAX_HORIZON, Q)`` in scaled units (:meth:`forward`)."""

    def __init__(self, context: int = CONTEXT, horizon: int = MAX_HORIZON, hidden: int = HIDDEN,
                 blocks: int = BLOCKS, n_quantiles: int = len(QUANTILES)):
        super().__init__()
        self.context, self.horizon, self.n_quantiles = context, horizon, n_quantiles
        self.input = nn.Linear(2 * context, hidden)
        self.blocks = nn.ModuleList(_Block(hidden) for _ in range(blocks))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, horizon * n_quantiles)

    def embed(self, x: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.input(x.flatten(1)))
        for i, block in enumerate(self.blocks):
            if layer is not None and i == layer:
                return h
            h = block(h)
        return self.norm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.head(self.embed(x)).view(-1, self.horizon, self.n_quantiles)
        return q

    def layer_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        return ([("input", list(self.input.parameters()))]
                + [(f"block{i}", list(b.parameters())) for i, b in enumerate(self.blocks)]
                + [("norm", list(self.norm.parameters()))])


def pinball_loss(q: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of quantiles ``q (N, H, Q)`` at :data:`QUANTILES` for ``y (N, H)``;
    NaN targets (missing values, or steps past a short future) are left out."""
    tau = torch.tensor(QUANTILES, dtype=q.dtype, device=q.device)
    ok = torch.isfinite(y)
    d = torch.where(ok, y, torch.zeros_like(y))[..., None] - q
    loss = torch.maximum(tau * d, (tau - 1) * d) * ok[..., None]
    return loss.sum() / (ok.sum() * len(QUANTILES)).clamp(min=1)


def load_net(path: Path = WEIGHTS) -> ForecasterNet:
    """The pre-trained network from its safetensors file (tensors only, never a pickle)."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserInputError(f"the tk-forecaster weights are missing ({path})",
                             hint="reinstall transferkit, or rebuild them: python benchmarks/build_forecaster.py")
    net = ForecasterNet()
    net.load_state_dict(load_file(str(path)))
    return net


def series_history(item: Any) -> np.ndarray:
    """A raw item as a 1-D float history: ``(T,)``, or the first channel of ``(C, T)`` (the
    forecaster is univariate: the first channel is the target)."""
    a = np.asarray(item, dtype=np.float64)
    if a.ndim == 2:
        a = a[0]
    if a.ndim != 1:
        a = a.reshape(-1)
    return a


class ForecasterBackbone(Backbone):
    """The forecaster as a backbone: items are series (``(T,)`` or ``(C, T)``, first channel
    read), features the embedding of their last :data:`CONTEXT` values."""

    modality = "timeseries"

    def __init__(self, name: str = "tk-forecaster", *, layer: int | str | None = None, init: str = "pretrained",
                 pooling: str | None = None):
        super().__init__(name, layer=layer, pooling=None, init=init)

    def _load_module(self) -> nn.Module:
        if self.init.startswith("random:"):
            torch.manual_seed(int(self.init.split(":", 1)[1]))
            return ForecasterNet()
        return load_net()

    def weights_sha256(self) -> str:
        return files_sha256([WEIGHTS])

    def randomized(self, seed: int = 0) -> "ForecasterBackbone":
        return ForecasterBackbone(self.name, layer=self.layer, init=f"random:{seed}")

    @property
    def num_features(self) -> int:
        return HIDDEN

    def preprocessing(self) -> dict[str, Any]:
        return {"context": CONTEXT, "scaling": "per-window mean/std", "channel": 0}

    def prepare(self, items: list[Any]) -> Batch:
        x, loc, scale = scale_contexts([series_history(i) for i in items], CONTEXT)
        return Batch(tensors={"x": torch.from_numpy(x)}, n_items=len(items),
                     extra={"loc": loc, "scale": scale})

    def forward_features(self, batch: Batch) -> torch.Tensor:
        return self.module.embed(batch.tensors["x"], layer=self.layer)

    def layer_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        return self.module.layer_groups()

    def source_head(self) -> nn.Module | None:
        return self.module.head if self.layer is None else None

    def sort_key(self, item: Any) -> float:
        return 0.0  # every item is cut to the same window

    def units_name(self) -> str:
        return "time steps"
