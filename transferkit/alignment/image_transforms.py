"""The input transforms that make a source image look like the target domain in one simple respect,
each the counterpart of a rule of :mod:`.image_stats` (same names).

Every function takes and returns ``(H, W, 3)`` uint8 (``downsample`` changes ``H, W``).  They are
composed in :data:`ORDER` (size first, colour last), so that a copy of a source image carries every
difference the target was found to have at once.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from PIL import Image

from .image_stats import ImageStats, border_mask, luminance, object_box

#: Composition order: framing and size, then polarity, then the luminance's level, then colour.
ORDER = ("reframe", "downsample", "invert", "contrast", "tint", "greyscale")
#: Transforms that need the target's statistics (the others are fixed maps).
NEEDS_TARGET = ("reframe", "downsample", "contrast", "tint")


def invert(rgb: np.ndarray) -> np.ndarray:
    """``255 - x``: light-on-dark <-> dark-on-light."""
    return 255 - rgb


def greyscale(rgb: np.ndarray) -> np.ndarray:
    """The luminance in all three channels."""
    lum = np.clip(np.rint(luminance(rgb)), 0, 255).astype(np.uint8)
    return np.repeat(lum[:, :, None], 3, axis=2)


def _size(h: int, w: int, side: int) -> tuple[int, int]:
    """PIL ``(width, height)`` with the shorter side ``side``, aspect kept."""
    return (side, max(1, round(h * side / w))) if w <= h else (max(1, round(w * side / h)), side)


def downsample(rgb: np.ndarray, side: float, native: float | None = None) -> np.ndarray:
    """Area-averaged (PIL ``BOX``) down to a shorter side of ``side`` pixels (the target's detail
    side), then bilinearly up to ``native`` (the target's native side) when that is larger, as the
    target's enlarged images were; the backbone's preprocessing scales either up again, as it
    does the target's.  An image already that small is returned as it is."""
    h, w = rgb.shape[:2]
    side = max(1, int(round(side)))
    if min(h, w) <= side:
        return rgb
    im = Image.fromarray(np.ascontiguousarray(rgb)).resize(_size(h, w, side), Image.BOX)
    if native is not None and round(native) > side:
        im = im.resize(_size(h, w, int(round(native))), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def reframe(rgb: np.ndarray, extent: float) -> np.ndarray:
    """A square window centred on the object, of the side that makes the object span ``extent`` of
    it (the target's median): cropped where the window is inside the image, the rest filled with
    the background colour (median border RGB).  A flat image is returned as it is."""
    lum = luminance(rgb)
    h, w = lum.shape
    border = border_mask(h, w)
    box = object_box(lum, float(np.median(lum[border])))
    if box is None or not extent > 0:
        return rgb
    side = max(1, int(round(max(box[1] - box[0], box[3] - box[2]) / extent)))
    top, left = (box[0] + box[1] - side) // 2, (box[2] + box[3] - side) // 2
    out = np.empty((side, side, 3), np.uint8)
    out[:] = np.rint(np.median(rgb[border].astype(np.float64), axis=0)).astype(np.uint8)
    r0, r1, c0, c1 = max(top, 0), min(top + side, h), max(left, 0), min(left + side, w)
    out[r0 - top:r1 - top, c0 - left:c1 - left] = rgb[r0:r1, c0:c1]
    return out


def contrast(rgb: np.ndarray, brightness: float, spread: float) -> np.ndarray:
    """Each channel mapped linearly so that the image's luminance has mean ``brightness`` and
    standard deviation ``spread`` (the target's medians), clipped to 0..255; a flat image is
    only moved to ``brightness``."""
    lum = luminance(rgb)
    s = float(lum.std())
    gain = spread / s if s > 1e-6 else 0.0
    out = (rgb.astype(np.float64) - lum.mean()) * gain + brightness
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def tint(rgb: np.ndarray, background: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """The image recoloured with a ``background`` and an ``ink`` colour ``(3,)``: each pixel's
    share of ink is how far its luminance is from the border's (the background's), over the
    largest such distance in the image, so either polarity of the source maps to the pair given."""
    lum = luminance(rgb)
    far = np.abs(lum - np.median(lum[border_mask(*lum.shape)]))
    a = (far / max(float(far.max()), 1.0))[:, :, None]
    out = (1 - a) * np.asarray(background, np.float64) + a * np.asarray(ink, np.float64)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def composed(names: list[str], target: ImageStats | None, rng: np.random.Generator) -> Callable[[np.ndarray], Any]:
    """One function applying the transforms ``names`` in :data:`ORDER` to an ``(H, W, 3)`` uint8
    image; ``tint`` draws a (background, object) colour pair from the target's palette at random
    for each image (``rng``), jittered by up to 16 per channel.

    Raises:
        ValueError: a transform that needs the target's statistics without them.
    """
    missing = [n for n in names if n in NEEDS_TARGET and target is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} need(s) the target's statistics")
    steps = [n for n in ORDER if n in names]

    def apply(rgb: np.ndarray) -> np.ndarray:
        for n in steps:
            if n == "reframe":
                rgb = reframe(rgb, target.extent)
            elif n == "downsample":
                rgb = downsample(rgb, target.side, target.native_side)
            elif n == "invert":
                rgb = invert(rgb)
            elif n == "contrast":
                rgb = contrast(rgb, target.brightness, target.contrast)
            elif n == "tint":
                pair = target.palette[rng.integers(len(target.palette))] + rng.uniform(-16, 16, size=(2, 3))
                rgb = tint(rgb, pair[0], pair[1])
            else:
                rgb = greyscale(rgb)
        return rgb

    return apply
