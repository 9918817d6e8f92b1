"""``input-invariance``: a linear probe made invariant to the simple input differences the
unlabelled target obviously has, by augmenting the labelled source images.

From the statistics of the source and the target images (:mod:`transferkit.alignment.image_stats`:
polarity, grey vs colour, resolution, framing, brightness and contrast, each measured on at most
``max_measured`` images per domain) one documented rule per difference
(:data:`~transferkit.alignment.image_stats.RULES`) decides which transforms apply: ``invert``
(255 - x), ``tint`` (grey source recoloured with background/ink colour pairs drawn from the
target's own images), ``greyscale`` (colour source, grey target), ``reframe`` (a window
around the object, cropped or padded with the background, so that the object spans the share of
the frame it spans in the target), ``downsample`` (to the target's detail side, then up to its
native side where that is larger; the preprocessing scales it up again, as it does the target's
images) and ``contrast`` (luminance mapped to the target's brightness and contrast).  Up to
``max_augmented`` source items get one copy each carrying every chosen transform at once
(:func:`~transferkit.alignment.image_transforms.composed`), and the probe
(:class:`~transferkit.strategies.probe.LinearProbe`, every task it handles) is fitted on the
cached features of the source items and their copies.  Augmentation for invariance is the
oldest form of domain robustness (e.g. Hendrycks et al., "AugMix", ICLR 2020, for corruptions);
what is particular here is that the augmentations are chosen from the target's statistics.
No rule firing gives the plain probe, and the run says so.  Cost: one extraction of the copies
(``max_augmented`` images) and one probe fit on twice the items.

The probe's cross-validation of the regularisation sees a source item and its copy in
different folds; this favours weaker regularisation a little, and changes nothing else.

Measured (2026-12-07, EfficientNet-Lite0 at ``image_size=96``, defaults; 1,000 labelled source
items, 500 unlabelled target items on which accuracy is then measured with their labels, as in
the DA literature; reference: the probe trained on 10 labelled target items per class from
outside those 500; a 2-core CPU shared with other jobs):

=============================  ===========  ================  ===========  ===============================
shift                          source-only  input-invariance  target 10/c  transforms applied
=============================  ===========  ================  ===========  ===============================
MNIST-5k -> inverted MNIST     0.620        0.902             0.798        invert
MNIST-5k -> coloured MNIST     0.322        0.730             0.526        contrast, tint
MNIST-5k -> sklearn digits     0.394        0.708             0.816        reframe, downsample
sklearn digits -> MNIST-5k     0.278        0.390             0.778        reframe
MNIST-5k -> dark ink on white  0.320        0.686             0.840        reframe, downsample, invert
=============================  ===========  ================  ===========  ===============================

Coloured MNIST: each digit padded to 32x32 RGB with a random ink and background colour (at least
120 apart in RGB); dark ink on white: scikit-learn's 8x8 digits (0..16 scaled to 0..255) enlarged
to 32x32 (bilinear), inverted, RGB.  Each fit took 4-9 minutes here, nearly all of it extracting
the 1,000 copies' features.  On the ink target, invert alone reached 0.358 and invert + downsample
0.452: the framing of the object mattered most.  On coloured MNIST, greyscaling the target
instead (the plain probe on grey target images) reached 0.500, below the tinted copies' 0.730, so
a grey source against a colour target gets tinted copies.  Digits -> MNIST stays far from its
reference: nothing a copy of an 8x8 source can carry adds the detail of a 28x28 target.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..alignment.image_stats import RULES, ImageStats, as_rgb, differences, domain_stats
from ..alignment.image_transforms import NEEDS_TARGET, ORDER, composed, downsample
from ..data.dataset import Dataset
from ..errors import UserInputError
from .base import STRATEGIES, TransferContext
from .params import param
from .probe import LinearProbe, ProbeParams

TRANSFORMS = tuple(ORDER)
#: A copy's shorter side at most (larger source images are area-reduced before the transforms):
#: above the 256 px that EfficientNet-Lite0's preprocessing resizes to, and 1,000 copies of
#: 320 x 427 RGB hold 0.4 GB.
MAX_COPY_SIDE = 320
#: One word for ``transforms``: auto, none, or one transform (forced).
Words = Literal["auto", "none", "reframe", "downsample", "invert", "contrast", "tint", "greyscale"]


def check_transforms(value) -> str | None:
    """A ``check`` for ``transforms``: "auto", "none", or a list of transform names (forced), "auto"
    (detect the rest) and "-name" (forbidden)."""
    ok = "\"auto\", \"none\", a transform or a list of " + ", ".join(TRANSFORMS) + ", \"auto\" and -NAME (forbid NAME)"
    if isinstance(value, str):
        return None if value in ("auto", "none", *TRANSFORMS) else ok
    allowed = {"auto", *TRANSFORMS, *(f"-{t}" for t in TRANSFORMS)}
    return ok if any(v not in allowed for v in value) else None


@dataclass
class InputInvarianceParams(ProbeParams):
    """Options of ``input-invariance``: the probe's, and which transforms to apply."""

    transforms: Words | list[str] = param(
        "auto", "auto: the transforms whose rule fires on the source and target statistics; none: no transform "
                "(the plain probe); or a list: names are applied whatever the statistics say, 'auto' adds the "
                "detected ones, '-NAME' forbids one (e.g. auto,-contrast); names: " + ", ".join(TRANSFORMS),
        check=check_transforms)
    max_augmented: int = param(1000, "source items that get a transformed copy (at most one each, drawn at random): "
                                     "bounds the extra feature extraction", ge=1)
    max_measured: int = param(500, "images per domain whose statistics are measured (drawn at random)", ge=10)


def transform_plan(spec: str | list[str], detected: dict[str, str]) -> tuple[list[str], list[str]]:
    """The transforms to apply (in :data:`ORDER`) and the forced ones, from the ``transforms``
    option and the rules that fired (``detected``)."""
    if spec == "none":
        return [], []
    words = [spec] if isinstance(spec, str) else list(spec)
    forced = [w for w in words if w in TRANSFORMS]
    forbidden = {w[1:] for w in words if w.startswith("-")}
    chosen = set(forced) | (set(detected) if "auto" in words else set())
    return [t for t in ORDER if t in chosen - forbidden], forced


@STRATEGIES.register("input-invariance", needs="features", target=True)
class InputInvariance(LinearProbe):
    """:class:`LinearProbe` fitted on the source items and copies of them transformed toward the
    target's input statistics (images only).

    Data: labelled source images, unlabelled target images in ``ctx.target`` (without them, and
    without forced transforms, it is the plain probe and says so).  Shapes: features ``(N, D)``
    -> head ``(K, D)``, as the probe.  ``fit_info()["input_invariance"]``: both domains'
    statistics, the rules that fired, the transforms applied and how many copies.
    Options: :class:`InputInvarianceParams`.
    """

    name = "input-invariance"
    description = ("linear probe on source images plus copies made to look like the unlabelled target (inverted, "
                   "tinted, greyscale, reframed, downsampled, contrast-matched: chosen from image statistics); "
                   "images only")
    Params = InputInvarianceParams
    needs_target = True
    tasks = ("classification", "regression", "multi-label")

    def _fit(self, train: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        target = ctx.target if ctx.target is not None and len(ctx.target) else None
        forcing = self.transforms not in ("auto", "none")
        if train.modality != "image" and (target is not None or forcing):
            raise UserInputError(
                f"input-invariance transforms images, and the training data is {train.modality}: its statistics "
                "(polarity, colour, resolution, contrast) have no meaning there",
                hint="use adabn, mmd, dann, coral or self-training for a shift between "
                     f"{train.modality} domains")
        if target is not None and target.modality != "image":
            raise UserInputError(f"input-invariance compares image statistics, and the unlabelled target is "
                                 f"{target.modality}",
                                 hint="give target images of the same kind as the training images")
        if self.transforms == "none" or (target is None and not forcing):
            super()._fit(train, y, ctx)
            why = "transforms=none" if target is not None else "no unlabelled target data was given"
            self.info_["input_invariance"] = {"applied": [], "reason": why}
            ctx.notes.append(f"input-invariance: {why}, so this is the plain linear probe.")
            return
        src = domain_stats(train.inputs, self.max_measured, ctx.seed)
        tgt = None if target is None else domain_stats(target.inputs, self.max_measured, ctx.seed + 1)
        detected = {} if tgt is None else differences(src, tgt)
        chosen, forced = transform_plan(self.transforms, detected)
        blocked = [t for t in chosen if t in NEEDS_TARGET and tgt is None]
        if blocked:
            raise UserInputError(f"input-invariance: {', '.join(blocked)} match(es) the source to the target's "
                                 "statistics, and no unlabelled target data was given",
                                 hint="pass --target-unlabelled, or force only invert / greyscale")
        about = {"source": src.to_dict(), "target": None if tgt is None else tgt.to_dict(), "detected": detected,
                 "forced": forced, "applied": chosen, "rules": {t: RULES[t] for t in chosen if t in RULES}}
        if not chosen:
            super()._fit(train, y, ctx)
            about["n_augmented"] = 0
            self.info_["input_invariance"] = about
            ctx.notes.append("input-invariance: the target differs from the source in none of polarity, colour, "
                             f"resolution, framing or contrast by the rules' thresholds ({_figures(src, tgt)}), "
                             "so this is the plain linear probe.")
            return
        copies, idx = self._copies(train, chosen, tgt, ctx.seed)
        both = Dataset(modality="image", inputs=list(train.inputs) + copies,
                       origins=list(train.origins) + [f"{train.origins[i]} ({'+'.join(chosen)})" for i in idx],
                       source=f"{train.source} + transformed copies")
        super()._fit(both, np.concatenate([y, y[idx]]), ctx)
        about["n_augmented"] = len(copies)
        self.info_["input_invariance"] = about
        reasons = "; ".join(f"{t}: {detected[t]}" if t in detected else f"{t}: forced" for t in chosen)
        ctx.notes.append(f"input-invariance: {len(copies)} of the {len(train)} source images got a copy with "
                         f"{' + '.join(chosen)} ({reasons}); the probe was fitted on the source images and the "
                         f"copies ({_figures(src, tgt)}).")

    def _copies(self, train: Dataset, chosen: list[str], tgt: ImageStats | None,
                seed: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Transformed copies ``(H', W', 3)`` uint8 of at most ``max_augmented`` source items drawn
        at random (each first reduced to a shorter side of :data:`MAX_COPY_SIDE` if larger), and
        those items' indices ``(M,)``."""
        rng = np.random.default_rng(seed)
        idx = np.arange(len(train))
        if len(train) > self.max_augmented:
            idx = np.sort(rng.choice(len(train), size=self.max_augmented, replace=False))
        apply = composed(chosen, tgt, rng)
        # copies live in memory until their features are extracted: large photographs are reduced first
        return [apply(downsample(as_rgb(train.inputs[i]), MAX_COPY_SIDE)) for i in idx], idx

    def source_only(self) -> LinearProbe:
        """The plain probe on the source features: the comparison the run reports."""
        names = ProbeParams.names()
        return LinearProbe(**{k: v for k, v in self.get_params().items() if k in names})


def _figures(src: ImageStats, tgt: ImageStats | None) -> str:
    if tgt is None:
        return f"source: {src.polarity}, {src.colour}, side {src.side:g} px"
    return (f"source / target: polarity {src.polarity} / {tgt.polarity}, colour {src.colour} / {tgt.colour}, "
            f"detail side {src.side:g} / {tgt.side:g} px, object extent {src.extent:.2f} / {tgt.extent:.2f}, "
            f"brightness {src.brightness:.0f} / {tgt.brightness:.0f}, "
            f"contrast {src.contrast:.0f} / {tgt.contrast:.0f}")
