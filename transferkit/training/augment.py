"""Augmentation hooks applied to prepared batches during training (never at evaluation).

Time series: window slicing, scaling and jitter (:class:`SeriesAugment`), on request only.

Images: random resized crop and horizontal flip, on the backbone's already normalised
``(B, C, H, W)`` tensor (both are geometric, so they commute with the per-channel
normalisation).  Draws come from torch's global generator, which the loop seeds and
checkpoints, so augmented runs resume exactly.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..errors import UserInputError

Augment = Callable[[torch.Tensor], torch.Tensor]


class ImageAugment:
    """Random resized crop (Szegedy et al., "Going Deeper with Convolutions", 2015) and flip.

    Args:
        crop_scale: range of the crop's share of the image area; ``(1, 1)`` turns cropping off.
            Narrower than the ImageNet-training ``(0.08, 1)``: fine-tuning sets are small and
            a crop that misses the object teaches noise.
        ratio: range of the crop's aspect ratio (width / height).
        flip: mirror left-right with probability 1/2.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, crop_scale: tuple[float, float] = (0.35, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 flip: bool = True):
        lo, hi = (float(v) for v in crop_scale)
        if not 0 < lo <= hi <= 1:
            raise UserInputError(f"augment crop_scale must satisfy 0 < low <= high <= 1, got {list(crop_scale)}")
        self.crop_scale, self.ratio, self.flip = (lo, hi), tuple(float(r) for r in ratio), bool(flip)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        out = []
        for img in x:
            if self.crop_scale != (1.0, 1.0):
                img = self._crop(img, h, w)
            if self.flip and torch.rand(()) < 0.5:
                img = img.flip(-1)
            out.append(img)
        return torch.stack(out)

    def _crop(self, img: torch.Tensor, h: int, w: int) -> torch.Tensor:
        area = h * w * (self.crop_scale[0] + (self.crop_scale[1] - self.crop_scale[0]) * float(torch.rand(())))
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = math.exp(log_lo + (log_hi - log_lo) * float(torch.rand(())))
        cw = min(w, max(1, int(round(math.sqrt(area * aspect)))))
        ch = min(h, max(1, int(round(math.sqrt(area / aspect)))))
        top = int(torch.randint(0, h - ch + 1, ()))
        left = int(torch.randint(0, w - cw + 1, ()))
        crop = img[:, top:top + ch, left:left + cw]
        return F.interpolate(crop[None], size=(h, w), mode="bilinear", align_corners=False)[0]


class SeriesAugment:
    """Time-series augmentation (Le Guennec et al. 2016, "Data augmentation for time series
    classification using convolutional neural networks": window slicing; Um et al. 2017: jitter
    and scaling), on the encoder's z-normalised, padded rows ``(B*C, 1, T)`` with their mask
    ``(B*C, T)``; the ``C`` rows of one series get the same window and scale.

    Args:
        jitter: standard deviation of the Gaussian noise added to every valid step (0: none).
        scaling: standard deviation of the series' scale factor around 1 (0: none).
        window: share of the series' valid length kept by window slicing, stretched back to that
            length (1: none).
    """

    def __init__(self, jitter: float = 0.03, scaling: float = 0.1, window: float = 0.9):
        if jitter < 0 or scaling < 0 or not 0 < window <= 1:
            raise UserInputError(f"augment needs jitter >= 0, scaling >= 0 and 0 < window <= 1, got "
                                 f"{jitter}, {scaling}, {window}")
        self.jitter, self.scaling, self.window = float(jitter), float(scaling), float(window)

    def __call__(self, x: torch.Tensor, mask: torch.Tensor, channels: int = 1) -> torch.Tensor:
        out = x.clone()
        for item in range(len(x) // channels):
            rows = slice(item * channels, (item + 1) * channels)
            n = int(mask[item * channels].sum())
            if n < 2:
                continue
            s = out[rows, 0, :n]
            w = max(2, int(round(self.window * n)))
            if w < n:
                start = int(torch.randint(0, n - w + 1, ()))
                s = F.interpolate(s[None, :, start:start + w], size=n, mode="linear", align_corners=True)[0]
            s = s * (1.0 + self.scaling * torch.randn(()))
            out[rows, 0, :n] = s + self.jitter * torch.randn(s.shape)
        return out


def augment_batch(augment: Any, batch: Any) -> None:
    """Apply ``augment`` in place to a prepared training batch: images (``pixel_values``) or series
    (``values`` with ``mask``)."""
    t = batch.tensors
    if isinstance(augment, SeriesAugment) and "values" in t:
        t["values"] = augment(t["values"], t["mask"], int(batch.extra.get("channels", 1)))
    elif not isinstance(augment, SeriesAugment) and t.get("pixel_values") is not None:
        t["pixel_values"] = augment(t["pixel_values"])


SERIES_OPTIONS = frozenset({"jitter", "scaling", "window"})


def make_augment(option: Any, modality: str) -> Augment | None:
    """The augmentation a strategy's ``augment`` option asks for.

    Args:
        option: ``None`` (default: on for images, off otherwise), ``False``, ``True``, or a dict
            of :class:`ImageAugment` arguments (``{"crop_scale": [0.5, 1], "flip": false}``) or, for
            time series, of :class:`SeriesAugment` arguments (``{"jitter": 0.05, "window": 0.8}``).
        modality: the backbone's modality.
    """
    if option is False or (option is None and modality != "image"):
        return None
    if modality == "timeseries":
        extra = sorted(set(option) - SERIES_OPTIONS) if isinstance(option, dict) else []
        if extra or not isinstance(option, (bool, dict)):
            raise UserInputError(f"augment for series takes true or a dict of {', '.join(sorted(SERIES_OPTIONS))}; "
                                 f"got {option!r}", hint='e.g. --param augment=\'{"jitter": 0.05, "window": 0.8}\'')
        return SeriesAugment(**(option if isinstance(option, dict) else {}))
    if modality != "image":
        raise UserInputError(f"augment is only implemented for images, not {modality}",
                             hint="leave augment unset for text and audio (series: jitter, scaling, window)")
    if option is None or option is True:
        return ImageAugment()
    if isinstance(option, dict):
        allowed = {"crop_scale", "ratio", "flip"}
        unknown = sorted(set(option) - allowed)
        if unknown:
            raise UserInputError(f"unknown augment option {', '.join(unknown)}",
                                 hint=f"allowed: {', '.join(sorted(allowed))}")
        return ImageAugment(**option)
    raise UserInputError(f"augment must be true, false or a dict of options, not {option!r}")
