"""Audio files: decoding to a mono float waveform, resampling, and the pre-flight check.

WAV is decoded by ``scipy.io.wavfile`` (PCM 8/16/24/32-bit and 32/64-bit float, also in the
extensible format, RIFX (big-endian) and RF64); FLAC, OGG (Vorbis, Opus) and MP3 by
``soundfile`` (libsndfile, bundled in its wheel: the ``audio`` extra).  Channels are mixed down
to mono.  No resampling is done on loading: the audio backbone resamples to its model's rate
(:func:`resample`, polyphase).
"""
from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Sequence
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import wavfile

from ..errors import UserInputError
from ..errors import shown as printable
from ._filecheck import FileCheck, read_for_check, sha256

WAV_EXTENSIONS = (".wav", ".wave")
#: Decoded by soundfile (the ``audio`` extra); WAV needs nothing beyond scipy.
SOUNDFILE_EXTENSIONS = (".flac", ".ogg", ".oga", ".opus", ".mp3")
AUDIO_EXTENSIONS = WAV_EXTENSIONS + SOUNDFILE_EXTENSIONS
#: Files longer than this are refused by the check without decoding them (a clip classifier
#: reads seconds; an hour is a recording to cut first, or an absurd header).
MAX_FILE_SECONDS = 3600.0
#: Sampling rates outside this range are an absurd header, not audio.
RATE_RANGE = (1000, 768_000)
_CONVERT_HINT = "convert it to 16-bit PCM WAV, e.g. `ffmpeg -i in.mp3 -ar 16000 out.wav`"
_SOUNDFILE_HINT = "pip install 'transferkit[audio]' (soundfile) to read it, or " + _CONVERT_HINT


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


def _decode_soundfile(data: bytes) -> tuple[np.ndarray, int, bool]:
    """FLAC/OGG/MP3 bytes -> ``(mono float32 (T,), rate, truncated?)`` by libsndfile.

    Raises:
        ValueError: not audio libsndfile can decode, or an absurd header.
        ImportError: soundfile is not installed.
    """
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
        _check_header(info.samplerate, info.channels, info.frames)
        x, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, TypeError) as e:  # libsndfile says why in words
        raise ValueError(str(e).split(": ", 1)[-1].strip() or type(e).__name__) from None
    # MP3's header length is an estimate (within ~1%): a shortfall beyond that is a cut file.
    truncated = info.frames > 0 and len(x) < info.frames * (0.9 if info.format == "MP3" else 1.0)
    return x.mean(axis=1).astype(np.float32) if x.shape[1] else np.zeros(0, np.float32), int(rate), truncated


def _check_header(rate: int, channels: int, frames: int) -> None:
    if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        raise ValueError(f"absurd sampling rate in the header: {rate} Hz")
    if not 1 <= channels <= 64:
        raise ValueError(f"absurd channel count in the header: {channels}")
    if frames / rate > MAX_FILE_SECONDS:
        raise ValueError(f"the header says {frames / rate / 3600:.1f} hours, over the "
                         f"{MAX_FILE_SECONDS / 3600:.0f}-hour limit (cut long recordings into clips)")


def decode_audio(data: bytes, suffix: str) -> tuple[np.ndarray, int, bool]:
    """Bytes of a file with extension ``suffix`` -> ``(mono float32 (T,) in [-1, 1], rate,
    truncated?)``: WAV by scipy, anything else by soundfile.

    Raises:
        ValueError: undecodable bytes or an absurd header.
        ImportError: a non-WAV file without soundfile installed.
    """
    if suffix.lower() in WAV_EXTENSIONS or data[:4] in (b"RIFF", b"RIFX", b"RF64"):
        x, rate, truncated = _decode_wav(data)
        if x.size or not truncated:
            _check_header(rate, 1, len(x))
        return x, rate, truncated
    return _decode_soundfile(data)


def check_wavs(paths: Sequence[str]) -> list[FileCheck]:
    """Decode each audio file once and drop the samples: one :class:`FileCheck` per path."""
    return [_check_audio(p) for p in paths]


def _check_audio(path: str) -> FileCheck:
    data = read_for_check(path, "check the path", "delete or replace it")
    if isinstance(data, FileCheck):
        return data
    digest = sha256(data)
    try:
        wave_, _, truncated = decode_audio(data, Path(path).suffix)
    except ImportError:
        return FileCheck("bad-audio", "soundfile is not installed, so this format cannot be read",
                         _SOUNDFILE_HINT, sha256=digest)
    except ValueError as e:
        return FileCheck("bad-audio", f"not a readable audio file ({e})", _CONVERT_HINT, sha256=digest)
    if truncated:
        return FileCheck("truncated", "the audio file is shorter than its header says",
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
        item: a path (WAV: PCM 8/16/24/32-bit or float; FLAC, OGG, MP3 with soundfile) or a
            waveform array ``(T,)`` (or ``(T, C)``, mixed to mono).
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
        x, rate, truncated = decode_audio(Path(item).read_bytes(), Path(item).suffix)
    except ImportError:
        raise UserInputError(f"cannot decode audio {printable(str(item))}: soundfile is not installed",
                             _SOUNDFILE_HINT) from None
    except (OSError, ValueError) as e:
        raise UserInputError(f"cannot decode audio {printable(str(item))}: {e}",
                             "run the data check (prepare_data) to list every bad file") from None
    if truncated and x.size == 0:
        raise UserInputError(f"cannot decode audio {printable(str(item))}: the file is cut short",
                             "run the data check (prepare_data) to list every bad file")
    return x, rate


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``wave (T,)`` at ``rate`` Hz -> float32 at ``target`` Hz (polyphase, Kaiser window)."""
    if int(rate) == int(target):
        return wave.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = gcd(int(rate), int(target))
    return resample_poly(wave, int(target) // g, int(rate) // g).astype(np.float32)


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
