"""Audio files: WAV decoding (by ``scipy.io.wavfile``) to a mono float waveform, and its check.

Only WAV is decoded: PCM 8/16/24/32-bit and 32/64-bit float, also in the extensible format,
RIFX (big-endian) and RF64.  No resampling is done here: the audio backbone resamples to its
model's rate.
"""
from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import wavfile

from ..errors import UserInputError
from ..errors import shown as printable
from ._filecheck import FileCheck, read_for_check, sha256

AUDIO_EXTENSIONS = (".wav", ".wave")
_CONVERT_HINT = "convert it to 16-bit PCM WAV, e.g. `ffmpeg -i in.mp3 -ar 16000 out.wav`"


def _riff_cut(data: bytes) -> bool:
    """True when the RIFF header announces more bytes than the file holds."""
    if len(data) < 8 or data[:4] not in (b"RIFF", b"RIFX"):
        return False
    size = struct.unpack("<I" if data[:4] == b"RIFF" else ">I", data[4:8])[0]
    return size not in (0, 0xFFFFFFFF) and size + 8 > len(data)  # 0 / ~0: a streamed file


def _decode_wav(data: bytes) -> tuple[np.ndarray, int, bool]:
    """WAV bytes -> ``(mono float32 waveform (T,) in [-1, 1], rate, truncated?)``.

    Raises:
        ValueError: the bytes are not a WAV file scipy can decode.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rate, x = wavfile.read(io.BytesIO(data))
        # Malformed headers make scipy raise ValueError, struct.error, EOFError, and also
        # ZeroDivisionError or UnboundLocalError (fuzzed): whatever it is, the file is bad.
        except Exception as e:
            if _riff_cut(data):  # e.g. cut in the middle of a sample: scipy cannot frame it
                return np.zeros(0, np.float32), 0, True
            raise ValueError(str(e) or type(e).__name__) from None
    truncated = any("EOF prematurely" in str(w.message) for w in caught)
    return to_float_mono(x), int(rate), truncated


def to_float_mono(x: np.ndarray) -> np.ndarray:
    """scipy's samples ``(T,)`` or ``(T, C)`` -> float32 mono ``(T,)`` in [-1, 1].

    8-bit WAV is unsigned; 24-bit comes from scipy left-aligned in int32, so every integer
    type is scaled by its own range.
    """
    if x.dtype == np.uint8:
        f = (x.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(x.dtype, np.integer):
        f = x.astype(np.float32) / float(-np.iinfo(x.dtype).min)
    else:
        f = x.astype(np.float32)
    if f.ndim == 2:
        f = f.mean(axis=1) if f.shape[1] else np.zeros(len(f), np.float32)
    return np.clip(f.reshape(-1), -1.0, 1.0).astype(np.float32)


def check_wavs(paths: Sequence[str]) -> list[FileCheck]:
    """Decode each WAV file once and drop the samples: one :class:`FileCheck` per path."""
    return [_check_wav(p) for p in paths]


def _check_wav(path: str) -> FileCheck:
    data = read_for_check(path, "check the path", "delete or replace it")
    if isinstance(data, FileCheck):
        return data
    digest = sha256(data)
    try:
        wave_, _, truncated = _decode_wav(data)
    except ValueError as e:
        return FileCheck("bad-audio", f"not a readable WAV file ({e})", _CONVERT_HINT,
                         sha256=digest)
    if truncated:
        return FileCheck("truncated", "the WAV file is shorter than its header says",
                         "re-export or re-download it", sha256=digest)
    if wave_.size == 0:
        return FileCheck("bad-audio", "the recording has no samples", "delete it", sha256=digest)
    if not np.isfinite(wave_).all():
        return FileCheck("bad-audio", "the recording contains NaN or infinite samples",
                         "re-export it", sha256=digest)
    return FileCheck(None, sha256=digest)


def load_audio(item: Any, sampling_rate: int | None) -> tuple[np.ndarray, int]:
    """Decode one audio item.

    Args:
        item: a ``.wav`` path (PCM 8/16/24/32-bit or float) or a waveform array ``(T,)``
            (or ``(T, C)``, mixed to mono).
        sampling_rate: the rate of an in-memory array (ignored for files: the header says).

    Returns:
        ``(waveform, rate)``: float32 mono ``(T,)`` in [-1, 1] and its sampling rate in Hz.
        No resampling is done.

    Raises:
        UserInputError: the file cannot be decoded, or an array comes without a rate.
    """
    if isinstance(item, np.ndarray):
        if not sampling_rate:
            raise UserInputError("an audio array needs its sampling_rate",
                                 "pass sampling_rate=16000 (or the real rate)")
        x = audio_array(item)
        return (x.mean(axis=1) if x.ndim == 2 else x).astype(np.float32), int(sampling_rate)
    try:
        x, rate, truncated = _decode_wav(Path(item).read_bytes())
    except (OSError, ValueError) as e:
        raise UserInputError(f"cannot decode audio {printable(str(item))}: {e}",
                             "run the data check (prepare_data) to list every bad file") from None
    if truncated and x.size == 0:
        raise UserInputError(f"cannot decode audio {printable(str(item))}: the file is cut short",
                             "run the data check (prepare_data) to list every bad file")
    return x, rate


def audio_array(a: np.ndarray) -> np.ndarray:
    """Integer PCM is scaled by its type's range; floats beyond [-1, 1] by their peak."""
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        x = a.astype(np.float32)
        return (x - 128.0) / 128.0 if info.min == 0 and info.bits == 8 else x / float(-info.min or info.max)
    x = a.astype(np.float32)
    peak = float(np.abs(x).max()) if x.size else 0.0
    return x / peak if peak > 1.0 and np.isfinite(peak) else x
