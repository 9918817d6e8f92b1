"""Spectrograms of a waveform in numpy: short-time power spectrum, mel filterbank, MFCC.

The conventions are librosa's defaults (periodic Hann window, centred frames zero-padded at
the ends, Slaney mel scale with Slaney area normalisation, orthonormal DCT-II of the log-mel in
decibels), so that a model trained on librosa's features (the Resemblyzer speaker encoder) gets
the same input here without librosa; ``tests/test_audio_encoder.py`` checks the match where
librosa is installed.  Shapes: a waveform ``(T,)`` -> frames ``(F, ...)`` with
``F = 1 + T // hop``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (Auditory Toolbox)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=16)
def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)``, each scaled to unit area (Slaney)."""
    fmax = sr / 2.0 if fmax is None else fmax
    fft_freqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    mel_freqs = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_freqs[2:n_mels + 2] - mel_freqs[:n_mels]))[:, None]
    weights.setflags(write=False)
    return weights


def power_spectrogram(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``|STFT|^2`` ``(F, n_fft // 2 + 1)`` float64 of a waveform ``(T,)``: periodic Hann window
    of ``n_fft`` samples, frames centred on ``t * hop`` (zeros padded at both ends)."""
    w = np.pad(np.asarray(wave, dtype=np.float64), (n_fft // 2, n_fft // 2))
    n = 1 + (len(w) - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(w, shape=(n, n_fft), strides=(w.strides[0] * hop, w.strides[0]),
                                             writeable=False)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    return np.abs(np.fft.rfft(frames * window, axis=1)) ** 2


def mel_spectrogram(wave: np.ndarray, sr: int, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    """Mel power spectrogram ``(F, n_mels)`` float32 (not logarithmic)."""
    return (power_spectrogram(wave, n_fft, hop) @ mel_filterbank(sr, n_fft, n_mels).T).astype(np.float32)


def power_to_db(power: np.ndarray, top_db: float = 80.0) -> np.ndarray:
    """``10 log10(power)``, floored ``top_db`` below the peak (librosa's ``power_to_db``)."""
    db = 10.0 * np.log10(np.maximum(power, 1e-10))
    return np.maximum(db, db.max() - top_db) if db.size else db


def mfcc(mel_db: np.ndarray, n_mfcc: int) -> np.ndarray:
    """The first ``n_mfcc`` cepstral coefficients ``(F, n_mfcc)`` of a log-mel ``(F, n_mels)``
    in dB: the orthonormal DCT-II over the mel axis."""
    from scipy.fft import dct

    return dct(mel_db, type=2, axis=1, norm="ortho")[:, :n_mfcc]


def deltas(x: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression slope over ``+-width`` frames along axis 0 (edges repeated): ``(F, D)``."""
    if len(x) == 0:
        return x
    padded = np.pad(x, ((width, width), (0, 0)), mode="edge")
    k = np.arange(-width, width + 1)
    num = sum(k_ * padded[width + k_: width + k_ + len(x)] for k_ in k if k_)
    return num / float((k ** 2).sum())
