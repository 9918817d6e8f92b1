"""Augmentation hooks applied to prepared batches during training (never at evaluation).

Time series: window slicing, scaling and jitter (:class:`SeriesAugment`), on request only.

Images: random resized crop and horizontal flip, on the backbone's already normalised
``(B, C, H, W)`` tensor (both are geometric, so they commute with the per-channel
normalisation).  Audio: gain, white noise at a drawn SNR, a circular time shift and
SpecAugment-style time and frequency masks, on a waveform ``(B, T)`` or a (power) spectrogram
``(B, T, F)``.  Draws come from torch's global generator, which the loop seeds and
checkpoints, so augmented runs resume exactly.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..errors import UserInputError

Augment = Callable[[torch.Tensor], torch.Tensor]
#: The batch tensor each backbone kind's augmentation acts on (the first one a batch has).
AUGMENTED_INPUTS = ("pixel_values", "mels", "input_values")


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


class AudioAugment:
    """Gain, additive white noise, time shift and SpecAugment masks (Park et al., Interspeech 2019,
    "SpecAugment: A Simple Data Augmentation Method for Automatic Speech Recognition").

    Args:
        gain_db: range of the gain drawn per clip, in dB.
        snr_db: range of the signal-to-noise ratio of the added white noise, in dB; ``None``: no noise.
        shift: largest circular time shift, as a share of the clip's length.
        time_masks, time_width: masks over at most ``time_width`` time steps (spectrograms only).
        freq_masks, freq_width: masks over at most ``freq_width`` frequency bands (spectrograms only).

    Shapes: a waveform ``(B, T) -> (B, T)``, or a power spectrogram ``(B, T, F) -> (B, T, F)``
    (gain and noise in power units there: noise power is the clip's mean power over the SNR,
    drawn per bin from an exponential distribution, as white noise's periodogram is).
    """

    def __init__(self, gain_db: tuple[float, float] = (-6.0, 6.0), snr_db: tuple[float, float] | None = (10.0, 40.0),
                 shift: float = 0.1, time_masks: int = 2, time_width: int = 10, freq_masks: int = 2,
                 freq_width: int = 5):
        lo, hi = (float(v) for v in gain_db)
        if lo > hi:
            raise UserInputError(f"augment gain_db must be [low, high], got {list(gain_db)}")
        if snr_db is not None and float(snr_db[0]) > float(snr_db[1]):
            raise UserInputError(f"augment snr_db must be [low, high], got {list(snr_db)}")
        if not 0 <= shift < 1:
            raise UserInputError(f"augment shift is a share of the clip, 0 <= shift < 1, got {shift}")
        if min(time_masks, time_width, freq_masks, freq_width) < 0:
            raise UserInputError("augment mask counts and widths must be >= 0")
        self.gain_db, self.shift = (lo, hi), float(shift)
        self.snr_db = None if snr_db is None else (float(snr_db[0]), float(snr_db[1]))
        self.time_masks, self.time_width = int(time_masks), int(time_width)
        self.freq_masks, self.freq_width = int(freq_masks), int(freq_width)

    def _uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand(()))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        spec = x.dim() == 3
        out = []
        for clip in x:
            power_units = 10.0 if spec else 20.0
            clip = clip * 10.0 ** (self._uniform(*self.gain_db) / power_units)
            if self.snr_db is not None:
                level = (clip.mean() if spec else clip.pow(2).mean()) / 10.0 ** (self._uniform(*self.snr_db) / 10.0)
                noise = torch.empty_like(clip).exponential_() if spec else torch.randn_like(clip)
                clip = clip + (noise * level if spec else noise * level.sqrt())
            n = clip.shape[0]
            if self.shift and n > 1:
                clip = clip.roll(int(torch.randint(-int(self.shift * n), int(self.shift * n) + 1, ())), dims=0)
            if spec:
                clip = clip.clone()
                masks = ((self.time_masks, self.time_width, 0), (self.freq_masks, self.freq_width, 1))
                for count, width, axis in masks:
                    size = clip.shape[axis]
                    for _ in range(count):
                        w = int(torch.randint(0, min(width, size) + 1, ()))
                        start = int(torch.randint(0, size - w + 1, ()))
                        if axis == 0:
                            clip[start:start + w] = 0
                        else:
                            clip[:, start:start + w] = 0
            out.append(clip)
        return torch.stack(out)


SERIES_OPTIONS = frozenset({"jitter", "scaling", "window"})
_OPTIONS = {"image": (ImageAugment, {"crop_scale", "ratio", "flip"}),
            "audio": (AudioAugment, {"gain_db", "snr_db", "shift", "time_masks", "time_width", "freq_masks",
                                     "freq_width"}),
            "timeseries": (SeriesAugment, set(SERIES_OPTIONS))}


def check_augment_options(option: Any) -> None:
    """Check an ``augment`` dict before any setup: its keys must all be the options of one kind
    (image, audio or time series), in their ranges.

    Raises:
        UserInputError: unknown keys, a mix of kinds, or a value out of range."""
    if not isinstance(option, dict):
        return
    for modality, (_cls, allowed) in _OPTIONS.items():
        if set(option) <= allowed:
            make_augment(option, modality)
            return
    raise UserInputError(f"unknown augment option {', '.join(sorted(set(option) - _OPTIONS['image'][1]))}",
                         hint="; ".join(f"{m}: " + ", ".join(sorted(allowed)) for m, (_c, allowed) in _OPTIONS.items()))


def augment_batch(augment: Any, batch: Any) -> None:
    """Apply ``augment`` in place to a prepared training batch: series (``values`` with their
    ``mask``), or the first of :data:`AUGMENTED_INPUTS` the batch has (images, audio)."""
    t = batch.tensors
    if isinstance(augment, SeriesAugment):
        if "values" in t:
            t["values"] = augment(t["values"], t["mask"], int(batch.extra.get("channels", 1)))
        return
    key = next((k for k in AUGMENTED_INPUTS if t.get(k) is not None), None)
    if key is not None:
        t[key] = augment(t[key])


def make_augment(option: Any, modality: str) -> Augment | None:
    """The augmentation a strategy's ``augment`` option asks for.

    Args:
        option: ``None`` (default: on for images, off otherwise), ``False``, ``True``, or a dict
            of :class:`ImageAugment` arguments (``{"crop_scale": [0.5, 1], "flip": false}``), of
            :class:`AudioAugment` ones (``{"snr_db": [10, 30]}``) or, for time series, of
            :class:`SeriesAugment` ones (``{"jitter": 0.05, "window": 0.8}``).
        modality: the backbone's modality.
    """
    if option is False or (option is None and modality != "image"):
        return None
    if modality not in _OPTIONS:
        raise UserInputError(f"augment is only implemented for images, audio and time series, not {modality}",
                             hint=f"leave augment unset for {modality}")
    cls, allowed = _OPTIONS[modality]
    if option is None or option is True:
        return cls()
    if isinstance(option, dict):
        unknown = sorted(set(option) - allowed)
        if unknown:
            raise UserInputError(f"unknown augment option {', '.join(unknown)} for {modality}",
                                 hint=f"allowed: {', '.join(sorted(allowed))}")
        return cls(**option)
    raise UserInputError(f"augment must be true, false or a dict of options, not {option!r}")
