"""FLAC, OGG and MP3 through soundfile; resampling; broken and absurd files in the pre-flight check."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from transferkit.data import ValidationReport, load_audio, prepare_data, read_source, resample
from transferkit.data._mel import deltas, mel_filterbank, mel_spectrogram, mfcc, power_to_db
from transferkit.errors import DataValidationError, UserInputError

from data_fixtures import sine, write_wav

sf = pytest.importorskip("soundfile", reason="pip install 'transferkit[audio]'")

FORMATS = {".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"), ".mp3": ("MP3", "MPEG_LAYER_III")}


def _encode(x: np.ndarray, rate: int, ext: str) -> bytes:
    b = io.BytesIO()
    sf.write(b, x, rate, format=FORMATS[ext][0], subtype=FORMATS[ext][1])
    return b.getvalue()


@pytest.mark.parametrize("ext", list(FORMATS))
def test_compressed_stereo_decodes_to_mono_at_its_rate(tmp_path, ext):
    s = sine(seconds=1.0, rate=22050, freq=300)
    stereo = np.stack([s, 0.5 * s], axis=1)
    (tmp_path / f"a{ext}").write_bytes(_encode(stereo, 22050, ext))
    x, rate = load_audio(str(tmp_path / f"a{ext}"), None)
    assert rate == 22050 and x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 22050) < 2500  # MP3 adds encoder delay and padding
    # the mono mix of (s, s/2) is 0.75 s: its level survives lossy coding within a few percent
    assert np.sqrt(np.mean(x ** 2)) == pytest.approx(0.75 * 0.5 / np.sqrt(2), rel=0.1)


def test_resample_keeps_the_tone_and_changes_the_length():
    x = sine(seconds=1.0, rate=22050, freq=440).astype(np.float32)
    y = resample(x, 22050, 16000)
    assert y.dtype == np.float32 and len(y) == 16000
    peak = np.argmax(np.abs(np.fft.rfft(y))) * 16000 / len(y)
    assert abs(peak - 440) < 2
    assert resample(y, 16000, 16000) is y


def _absurd_rate_wav(rate: int) -> bytes:
    data = np.zeros(100, "<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_broken_files_of_every_format_are_reported_and_skip_bad_leaves_them_out(tmp_path):
    root = tmp_path / "sounds"
    for i, lab in enumerate(("low", "high")):
        (root / lab).mkdir(parents=True)
        for j, ext in enumerate(FORMATS):  # good files of each format, as class folders of images work
            tone = sine(seconds=0.6, rate=16000, freq=(200 if i == 0 else 900) + 20 * j)
            (root / lab / f"ok{j}{ext}").write_bytes(_encode(tone, 16000, ext))
        write_wav(root / lab / "ok.wav", sine(freq=200 if i == 0 else 900))
    flac = (root / "low" / "ok0.flac").read_bytes()
    (root / "low" / "cut.flac").write_bytes(flac[: len(flac) // 2])
    mp3 = _encode(sine(seconds=3.0, rate=16000), 16000, ".mp3")
    (root / "high" / "cut.mp3").write_bytes(mp3[: len(mp3) // 2])
    (root / "high" / "empty.ogg").write_bytes(b"")
    (root / "high" / "notes.ogg").write_bytes(b"this is a text file, not Ogg Vorbis\n" * 20)
    (root / "low" / "rate.wav").write_bytes(_absurd_rate_wav(1))
    r = ValidationReport()
    ds = read_source(root, report=r)
    assert ds.modality == "audio" and len(ds) == 13
    got = {p.origin.split("/", 1)[1]: p for p in r.errors}
    assert {k: p.kind for k, p in got.items()} == {
        "low/cut.flac": "bad-audio", "high/cut.mp3": "truncated", "high/empty.ogg": "empty-file",
        "high/notes.ogg": "bad-audio", "low/rate.wav": "bad-audio"}
    assert "absurd sampling rate" in got["low/rate.wav"].message
    with pytest.raises(DataValidationError):
        prepare_data(str(root))
    prepared = prepare_data(str(root), skip_bad=True)
    kept = prepared.train.origins
    assert len(kept) == 8 and not any("cut" in o or "notes" in o or "rate" in o for o in kept)


def test_an_undecodable_file_at_load_time_names_it():
    with pytest.raises(UserInputError, match="cannot decode audio .*x.flac"):
        load_audio("/nonexistent/x.flac", None)


def test_mel_features_have_the_documented_shapes():
    w = sine(seconds=1.0, rate=16000, freq=500).astype(np.float32)
    mel = mel_spectrogram(w, 16000, 400, 160, 40)
    assert mel.shape == (101, 40) and mel.dtype == np.float32
    assert np.argmax(mel.mean(0)) == np.argmax(mel_filterbank(16000, 400, 40)[:, round(500 / 40)])
    c = mfcc(power_to_db(mel), 13)
    assert c.shape == (101, 13) and deltas(c).shape == c.shape


def test_mel_spectrogram_matches_librosa_where_installed():
    """The speaker encoder was trained on librosa's features: ours must be the same numbers."""
    librosa = pytest.importorskip("librosa", reason="librosa is resemblyzer's requirement, not ours")
    w = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    ref = librosa.feature.melspectrogram(y=w, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    np.testing.assert_allclose(mel_spectrogram(w, 16000, 400, 160, 40), ref, rtol=1e-4, atol=1e-6 * ref.max())
    S = power_to_db(ref.astype(np.float64))
    np.testing.assert_allclose(mfcc(S, 20), librosa.feature.mfcc(S=S.T, n_mfcc=20).T, atol=1e-3)


def test_audio_augment_on_waveforms_and_spectrograms_is_seeded_and_masks():
    import torch

    from transferkit.training.augment import AUGMENTED_INPUTS, AudioAugment, check_augment_options, make_augment

    assert make_augment(None, "audio") is None and isinstance(make_augment(True, "audio"), AudioAugment)
    aug = make_augment({"snr_db": [20, 20], "gain_db": [0, 0], "shift": 0, "time_masks": 1, "time_width": 160,
                        "freq_masks": 0}, "audio")
    spec = torch.rand(3, 160, 40) + 1.0
    torch.manual_seed(0)
    a = aug(spec)
    torch.manual_seed(0)
    assert torch.equal(a, aug(spec)) and a.shape == spec.shape
    wave = torch.sin(torch.arange(16000.0))[None].repeat(2, 1)
    noisy = AudioAugment(gain_db=(0, 0), snr_db=(10, 10), shift=0)(wave)
    snr = 10 * torch.log10(wave.pow(2).mean() / (noisy - wave).pow(2).mean())
    assert abs(float(snr) - 10) < 0.5
    masked = AudioAugment(gain_db=(0, 0), snr_db=None, shift=0, time_masks=0, freq_masks=3, freq_width=40)(spec)
    assert (masked == 0).any()
    assert "mels" in AUGMENTED_INPUTS and "input_values" in AUGMENTED_INPUTS
    check_augment_options({"snr_db": [5, 30]})
    check_augment_options({"flip": False})
    with pytest.raises(UserInputError, match="unknown augment option"):
        check_augment_options({"flip": False, "snr_db": [5, 30]})
    with pytest.raises(UserInputError, match="augment is only implemented for images, audio and time series"):
        make_augment(True, "text")
