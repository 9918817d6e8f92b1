"""Augmentation hooks applied to prepared batches during training (never at evaluation).

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


def make_augment(option: Any, modality: str) -> Augment | None:
    """The augmentation a strategy's ``augment`` option asks for.

    Args:
        option: ``None`` (default: on for images, off otherwise), ``False``, ``True``, or a dict
            of :class:`ImageAugment` arguments (``{"crop_scale": [0.5, 1], "flip": false}``).
        modality: the backbone's modality.
    """
    if option is False or (option is None and modality != "image"):
        return None
    if modality != "image":
        raise UserInputError(f"augment is only implemented for images, not {modality}",
                             hint="leave augment unset for text and audio")
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
