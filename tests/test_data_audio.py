"""WAV decoding by scipy.io.wavfile: the formats users hand over, and the broken files they have."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from transferkit.data import ValidationReport, load_audio, read_source
from transferkit.errors import UserInputError

from data_fixtures import float_wav_bytes, sine, write_wav


def _extensible_24bit(samples: np.ndarray, rate: int = 16000, channels: int = 2) -> bytes:
    """WAVE_FORMAT_EXTENSIBLE (tag 0xFFFE) with 24-bit PCM: what many recorders write."""
    x = np.repeat(np.asarray(samples)[:, None], channels, axis=1)
    v = np.clip(np.round(x * (2**23 - 1)), -(2**23), 2**23 - 1).astype("<i4").reshape(-1)
    data = v.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    pcm_guid = struct.pack("<HHI", 1, 0x0000, 0x00100000) + bytes.fromhex("800000aa00389b71")
    fmt = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * 3 * channels, 3 * channels, 24)
    fmt += struct.pack("<HHI", 22, 24, 0) + pcm_guid
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + \
        struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_extensible_24bit_stereo_and_float64_decode_to_mono_float32(tmp_path):
    s = sine()
    (tmp_path / "ext.wav").write_bytes(_extensible_24bit(s))
    x, rate = load_audio(str(tmp_path / "ext.wav"), None)
    assert rate == 16000 and x.dtype == np.float32 and x.shape == s.shape
    assert np.abs(x - s).max() < 1e-5
    data = np.asarray(s, "<f8").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 8000 * 8, 8, 64)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    (tmp_path / "f64.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    x, rate = load_audio(str(tmp_path / "f64.wav"), None)
    assert rate == 8000 and x.dtype == np.float32 and np.abs(x - s).max() < 1e-6


def test_cut_files_are_truncated_wherever_the_cut_falls(tmp_path):
    root = tmp_path / "sounds"
    for lab in ("a", "b"):
        (root / lab).mkdir(parents=True)
        write_wav(root / lab / "ok.wav", sine(freq=300 if lab == "a" else 600))
    good = (root / "a" / "ok.wav").read_bytes()
    (root / "a" / "cut-mid-sample.wav").write_bytes(good[: len(good) // 2 + 1])  # odd: half a sample
    (root / "b" / "header-only.wav").write_bytes(good[:44])
    (root / "b" / "float-cut.wav").write_bytes(float_wav_bytes(sine())[:1001])
    r = ValidationReport()
    read_source(root, report=r)
    assert {p.origin: p.kind for p in r.errors} == {
        "sounds/a/cut-mid-sample.wav": "truncated", "sounds/b/header-only.wav": "truncated",
        "sounds/b/float-cut.wav": "truncated"}
    with pytest.raises(UserInputError, match="cut-mid-sample.wav"):
        load_audio(str(root / "a" / "cut-mid-sample.wav"), None)


def test_nan_samples_and_unsupported_encodings_are_bad_audio(tmp_path):
    root = tmp_path / "sounds"
    for lab in ("a", "b"):
        (root / lab).mkdir(parents=True)
        write_wav(root / lab / "ok.wav", sine())
    s = sine()
    s[10] = np.nan
    (root / "a" / "nan.wav").write_bytes(float_wav_bytes(s))
    mulaw = bytearray(float_wav_bytes(sine()))
    mulaw[20:22] = struct.pack("<H", 7)  # format tag 7: mu-law, not PCM or float
    (root / "b" / "mulaw.wav").write_bytes(bytes(mulaw))
    # headers on which scipy itself trips (found by fuzzing): no data chunk, zero channels
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
    (root / "a" / "no-data.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    zero = bytearray((root / "a" / "ok.wav").read_bytes())
    zero[22:24] = b"\x00\x00"  # channels = 0
    (root / "a" / "zero-channels.wav").write_bytes(bytes(zero))
    r = ValidationReport()
    read_source(root, report=r)
    got = {p.origin: (p.kind, p.message) for p in r.errors}
    assert got["sounds/a/nan.wav"][0] == "bad-audio" and "NaN" in got["sounds/a/nan.wav"][1]
    assert got["sounds/b/mulaw.wav"][0] == "bad-audio"
    assert got["sounds/a/no-data.wav"][0] == got["sounds/a/zero-channels.wav"][0] == "bad-audio"
    with pytest.raises(UserInputError, match="mulaw.wav"):
        load_audio(str(root / "b" / "mulaw.wav"), None)
