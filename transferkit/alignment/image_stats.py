"""Simple statistics of an image domain, and the differences between two domains they reveal.

Used by the ``input-invariance`` strategy to decide, from the labelled source images and the
unlabelled target images alone, which obvious input difference the target has.  Every measure
is computed per image on its luminance ``L = 0.299 R + 0.587 G + 0.114 B`` (0..255) and
summarised per domain over at most ``max_items`` images drawn at random:

- **polarity**: the background is the median luminance of the border (the outer eighth of each
  side, at least one pixel); the object is the tenth of the central half's pixels that differ most
  from it.  An image is *light-on-dark* when the object is lighter than the background (MNIST),
  *dark-on-light* when darker (ink on paper); an image whose object differs from the background
  by less than :data:`FLAT` is left out.  The domain is ``light-on-dark`` / ``dark-on-light`` when
  at least :data:`DECISIVE` of its images agree, ``mixed`` otherwise (photographs).
- **colour**: an image's chroma is the mean over pixels of ``max(R,G,B) - min(R,G,B)``, over 255.
  An image is grey below :data:`GREY_CHROMA` and colour from :data:`COLOUR_CHROMA`; the domain is
  ``grey`` when at least 90% of its images are grey, ``colour`` when at least half are colour,
  ``mixed`` otherwise.
- **resolution**: the native shorter side in pixels, and the *detail* side: the smallest side of
  :data:`LADDER` to which the image can be area-downsampled and bilinearly upsampled back with a
  root-mean-square error under :data:`DETAIL_ERROR` of its luminance's standard deviation (the
  native side when none can; images are first reduced to at most 128 px, so it saturates there).
  An 8x8 digit enlarged to 32x32 has native side 32 and detail side 8 (medians over the domain).
- **framing**: the object's extent, the larger of the bounding box's height over the frame's and
  width over the frame's, the box holding the pixels that differ from the background by at least
  :data:`INK` of the image's largest difference (median; an MNIST digit spans about 0.71 of its
  frame, an 8x8 scikit-learn digit all of it).
- **brightness / contrast**: the mean and the standard deviation of the luminance (medians).
- **palette**: each image's background colour (median border RGB) and object colour (mean RGB
  of its object pixels), ``(P, 2, 3)``, what a tint drawn from the target's own colours uses.

:func:`differences` turns two domains' statistics into decisions, one documented rule with its
threshold each (:data:`RULES`).  Pure: numpy, and the data layer's image decoding for paths.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..data._images import load_image

#: An image whose object differs from its background by less than this (0..255) has no polarity.
FLAT = 16.0
#: The share of a domain's images that must agree on a polarity for the domain to have one.
DECISIVE = 0.8
#: Mean chroma (0..1) under which an image is grey, and from which it is colour.
GREY_CHROMA, COLOUR_CHROMA = 0.02, 0.06
#: Candidate detail sides, and the reconstruction error (over the luminance's std) that counts as lossless.
LADDER, DETAIL_ERROR = (4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 64, 96), 0.25
#: Target's detail side at most this share of the source's: the target is "much smaller".
SMALLER = 0.5
#: The share of an image's largest difference from its background that makes a pixel part of the object.
INK = 0.3
#: Ratio of the objects' extents (either way) from which the framing differs.
EXTENT_RATIO = 1.25
#: Contrast ratio (either way) or brightness gap (0..255, after any inversion) that is "very different".
CONTRAST_RATIO, BRIGHTNESS_GAP = 2.0, 64.0

RULES = {
    "invert": f"both domains have a polarity (at least {DECISIVE:.0%} of their images agree) and they are opposite",
    "tint": f"the source is grey (90% of images with chroma < {GREY_CHROMA}) and the target colour (half with "
            f"chroma >= {COLOUR_CHROMA})",
    "greyscale": "the source is colour and the target grey (the tint rule the other way round)",
    "downsample": f"the target's median detail side is at most {SMALLER:.0%} of the source's",
    "reframe": f"the objects' median extents in their frames differ by a factor of {EXTENT_RATIO:g} or more",
    "contrast": f"the luminance contrast differs by a factor of {CONTRAST_RATIO:g} or more, or the brightness by "
                f"{BRIGHTNESS_GAP:g} or more of 255 (the source's brightness taken after an inversion, if one "
                "is applied)",
}


def as_rgb(item: Any) -> np.ndarray:
    """One image item (a path, an ``(H, W)``/``(H, W, C)`` array) -> ``(H, W, 3)`` uint8, decoded
    as the backbones decode it (:func:`~transferkit.data.load_image`: transparency on white)."""
    if isinstance(item, np.ndarray) and item.dtype == np.uint8:
        if item.ndim == 2:
            return np.repeat(item[:, :, None], 3, axis=2)
        if item.ndim == 3 and item.shape[2] == 3:
            return item
        if item.ndim == 3 and item.shape[2] == 1:
            return np.repeat(item, 3, axis=2)
    return np.asarray(load_image(item), dtype=np.uint8)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` -> ``(H, W)`` float64 luminance, 0..255 (ITU-R BT.601 weights)."""
    return np.asarray(rgb, np.float64) @ np.array([0.299, 0.587, 0.114])


def border_mask(h: int, w: int) -> np.ndarray:
    """``(H, W)`` bool: the outer eighth of each side (at least one pixel)."""
    bh, bw = max(1, h // 8), max(1, w // 8)
    m = np.ones((h, w), bool)
    m[bh:h - bh, bw:w - bw] = False
    return m


def object_mask(lum: np.ndarray, background: float) -> np.ndarray:
    """``(H, W)`` bool: within the central half, the tenth of the pixels (at least one) whose
    luminance differs most from ``background``."""
    h, w = lum.shape
    centre = np.zeros((h, w), bool)
    centre[h // 4:h - h // 4 or h, w // 4:w - w // 4 or w] = True
    diff = np.where(centre, np.abs(lum - background), -1.0)
    k = max(1, int(centre.sum()) // 10)
    cut = np.partition(diff.ravel(), -k)[-k]
    return centre & (diff >= cut)


def object_box(lum: np.ndarray, background: float) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` (exclusive ends) of the pixels of ``lum (H, W)`` differing from
    ``background`` by at least :data:`INK` of the largest difference; ``None`` for a flat image."""
    far = np.abs(lum - background)
    if far.max() < FLAT:
        return None
    rows, cols = np.flatnonzero((far >= INK * far.max()).any(1)), np.flatnonzero((far >= INK * far.max()).any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def detail_side(lum: np.ndarray) -> int:
    """The detail side of one ``(H, W)`` luminance image (see the module docstring)."""
    h, w = lum.shape
    im = Image.fromarray(np.asarray(lum, np.float32), "F")
    if min(h, w) > 128:
        im = im.resize((max(1, round(w * 128 / min(h, w))), max(1, round(h * 128 / min(h, w)))), Image.BOX)
    x = np.asarray(im)
    native, spread = min(h, w), float(x.std())
    if spread < 1e-6:
        return native
    for side in LADDER:
        if side >= min(x.shape):
            break
        size = (side, max(1, round(x.shape[0] * side / x.shape[1]))) if x.shape[1] <= x.shape[0] else \
            (max(1, round(x.shape[1] * side / x.shape[0])), side)
        back = np.asarray(im.resize(size, Image.BOX).resize(im.size, Image.BILINEAR))
        if np.sqrt(((back - x) ** 2).mean()) <= DETAIL_ERROR * spread:
            return side
    return native


def measure(rgb: np.ndarray) -> dict[str, Any]:
    """The per-image measures of one ``(H, W, 3)`` uint8 image: ``polarity`` (+1 light-on-dark,
    -1 dark-on-light, 0 flat), ``chroma`` (0..1), ``native_side``, ``side`` (detail), ``extent``, ``brightness``,
    ``contrast``, and its ``background`` / ``object`` colours ``(3,)``."""
    lum = luminance(rgb)
    h, w = lum.shape
    border = border_mask(h, w)
    background = float(np.median(lum[border]))
    obj = object_mask(lum, background)
    score = float(lum[obj].mean() - background)
    chroma = (rgb.max(2).astype(np.float64) - rgb.min(2)).mean() / 255.0
    box = object_box(lum, background)
    extent = float("nan") if box is None else max((box[1] - box[0]) / h, (box[3] - box[2]) / w)
    return {"polarity": 0 if abs(score) < FLAT else int(np.sign(score)), "chroma": float(chroma),
            "native_side": min(h, w), "side": detail_side(lum), "extent": extent, "brightness": float(lum.mean()),
            "contrast": float(lum.std()),
            "background": np.median(rgb[border].astype(np.float64), axis=0),
            "object": rgb[obj].astype(np.float64).mean(0)}


@dataclass
class ImageStats:
    """One domain's statistics (see the module docstring), over ``n`` sampled images.

    Attributes:
        light_on_dark: share of the images with a polarity that are light-on-dark (NaN: none has one).
        polarity: ``"light-on-dark"``, ``"dark-on-light"`` or ``"mixed"``.
        grey_share, colour_share: shares of grey and of colour images; ``colour``: ``"grey"``,
            ``"colour"`` or ``"mixed"``; ``chroma``: the median image chroma.
        native_side, side: median native shorter side and median detail side (pixels).
        extent: median object extent over the frame's side (NaN: every image flat).
        brightness, contrast: median luminance mean and standard deviation (0..255).
        palette: ``(n, 2, 3)`` float64, each image's background and object RGB colours.
    """

    n: int
    light_on_dark: float
    polarity: str
    grey_share: float
    colour_share: float
    colour: str
    chroma: float
    native_side: float
    side: float
    extent: float
    brightness: float
    contrast: float
    palette: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, without the palette, numbers rounded for a report."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items() if k != "palette"}


def domain_stats(items: Sequence[Any], max_items: int = 500, seed: int = 0) -> ImageStats:
    """:class:`ImageStats` of image items (paths or uint8 arrays), over at most ``max_items`` of
    them drawn at random with ``seed`` (all of them when there are fewer).

    Raises:
        ValueError: no items.
    """
    if not len(items):
        raise ValueError("no images to measure")
    idx = np.arange(len(items))
    if len(items) > max_items:
        idx = np.sort(np.random.default_rng(seed).choice(len(items), size=max_items, replace=False))
    rows = [measure(as_rgb(items[i])) for i in idx]
    pol = np.array([r["polarity"] for r in rows])
    decided = pol[pol != 0]
    light = float((decided > 0).mean()) if len(decided) else float("nan")
    polarity = ("light-on-dark" if light >= DECISIVE else "dark-on-light" if light <= 1 - DECISIVE else "mixed")
    chroma = np.array([r["chroma"] for r in rows])
    grey, colour = float((chroma < GREY_CHROMA).mean()), float((chroma >= COLOUR_CHROMA).mean())
    return ImageStats(
        n=len(rows), light_on_dark=light, polarity=polarity if len(decided) else "mixed",
        grey_share=grey, colour_share=colour,
        colour="grey" if grey >= 0.9 else "colour" if colour >= 0.5 else "mixed", chroma=float(np.median(chroma)),
        native_side=float(np.median([r["native_side"] for r in rows])),
        side=float(np.median([r["side"] for r in rows])),
        extent=_nanmedian([r["extent"] for r in rows]),
        brightness=float(np.median([r["brightness"] for r in rows])),
        contrast=float(np.median([r["contrast"] for r in rows])),
        palette=np.stack([np.stack([r["background"], r["object"]]) for r in rows]))


def differences(source: ImageStats, target: ImageStats) -> dict[str, str]:
    """The transforms whose rule (:data:`RULES`) fires for ``source`` -> ``target``, each with the
    reason in figures: ``{"invert": "source light-on-dark (98% of ...), target dark-on-light ..."}``;
    ``{}`` when the domains do not differ obviously."""
    out: dict[str, str] = {}
    pols = {"light-on-dark", "dark-on-light"}
    inverted = source.polarity in pols and target.polarity in pols and source.polarity != target.polarity
    if inverted:
        out["invert"] = (f"source {source.polarity} ({_share(source)}), target {target.polarity} "
                         f"({_share(target)})")
    if source.colour == "grey" and target.colour == "colour":
        out["tint"] = (f"source grey ({source.grey_share:.0%} of images with chroma < {GREY_CHROMA}), target "
                       f"colour ({target.colour_share:.0%} with chroma >= {COLOUR_CHROMA}; median {target.chroma:.3f})")
    elif source.colour == "colour" and target.colour == "grey":
        out["greyscale"] = (f"source colour ({source.colour_share:.0%} of images with chroma >= {COLOUR_CHROMA}), "
                            f"target grey ({target.grey_share:.0%} with chroma < {GREY_CHROMA})")
    if target.side <= SMALLER * source.side:
        out["downsample"] = (f"target's median detail side {target.side:g} px (native {target.native_side:g}), "
                             f"source's {source.side:g} px (native {source.native_side:g})")
    ratio = target.extent / source.extent
    if np.isfinite(ratio) and max(ratio, 1 / max(ratio, 1e-6)) >= EXTENT_RATIO:
        out["reframe"] = f"objects span {source.extent:.2f} of the source's frames, {target.extent:.2f} of the target's"
    brightness = 255.0 - source.brightness if inverted else source.brightness
    ratio = target.contrast / max(source.contrast, 1e-6)
    if max(ratio, 1 / max(ratio, 1e-6)) >= CONTRAST_RATIO or abs(target.brightness - brightness) >= BRIGHTNESS_GAP:
        out["contrast"] = (f"luminance contrast (std) source {source.contrast:.1f}, target {target.contrast:.1f}; "
                           f"brightness source {brightness:.1f}" + (" (inverted)" if inverted else "")
                           + f", target {target.brightness:.1f}")
    return out


def _nanmedian(values: list[float]) -> float:
    v = np.asarray(values, np.float64)
    return float(np.median(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan")


def _share(s: ImageStats) -> str:
    share = s.light_on_dark if s.polarity == "light-on-dark" else 1 - s.light_on_dark
    return f"{share:.0%} of the images with a polarity"
