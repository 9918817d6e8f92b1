"""The resemblyzer speaker encoder as a backbone: weights, layers, partials, and real speech."""
from __future__ import annotations

import importlib
import importlib.util
import shutil

import numpy as np
import pytest
import torch

from tests.test_benchmarks_doc import BENCH
from transferkit.backbones import get_backbone, list_models
from transferkit.backbones.voice_encoder import (
    PARTIAL_FRAMES,
    SpeakerLSTM,
    normalize_volume,
    partial_starts,
    weights_path,
)
from transferkit.errors import UserInputError

# find_spec, not importorskip: resemblyzer's own modules (librosa, webrtcvad) are never imported
pytestmark = pytest.mark.skipif(importlib.util.find_spec("resemblyzer") is None,
                                reason="pip install 'transferkit[audio]' (the resemblyzer weights)")


def test_listed_as_an_offline_audio_model():
    row = next(r for r in list_models() if r["name"] == "resemblyzer")
    assert row["modality"] == "audio" and row["available"] is True and row["dim"] == 256


def test_stages_compute_resemblyzers_stacked_lstm_from_the_pickle_free_load():
    """The three 1-layer LSTMs loaded by name equal torch's 3-layer LSTM on the package's tensors."""
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)["model_state"]
    ref = torch.nn.LSTM(40, 256, 3, batch_first=True)
    ref.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
    mine = SpeakerLSTM()
    mine.load_resemblyzer(state)
    mels = torch.rand(3, PARTIAL_FRAMES, 40)
    with torch.no_grad():
        _, (h, _) = ref(mels)
        e = torch.relu(h[-1] @ state["linear.weight"].T + state["linear.bias"])
        torch.testing.assert_close(mine(mels, 3), e / e.norm(dim=1, keepdim=True))
        for k in range(3):
            torch.testing.assert_close(mine(mels, k), h[k])


def test_partials_cover_the_clip_as_resemblyzer_slices_it():
    assert partial_starts(8000) == [0]  # shorter than one partial: one, zero-padded
    starts = partial_starts(16000 * 5)
    assert starts[0] == 0 and np.diff(starts).tolist() == [77] * (len(starts) - 1)  # 1.3 per second
    assert (starts[-1] + PARTIAL_FRAMES) * 160 >= 16000 * 5 * 0.75


def test_volume_is_raised_never_lowered():
    quiet = np.full(1000, 0.001, np.float32)
    assert np.sqrt(np.mean(normalize_volume(quiet) ** 2)) == pytest.approx(10 ** (-30 / 20), rel=1e-4)
    loud = np.full(1000, 0.5, np.float32)
    assert normalize_volume(loud) is loud
    assert not normalize_volume(np.zeros(10, np.float32)).any()


def test_layers_options_and_identity():
    b = get_backbone("resemblyzer", layer=-1, max_seconds=4)
    assert b.layer is None and b.preprocessing()["vad_trim"] is False and b.preprocessing()["max_seconds"] == 4
    assert get_backbone("resemblyzer", layer=1).layer == 1
    with pytest.raises(UserInputError, match="layers 0-3"):
        get_backbone("resemblyzer", layer=7)
    ident = b.identity()
    assert len(ident["weights_sha256"]) == 64 and b.randomized(0).identity()["weights_sha256"] is None
    assert [n for n, _ in b.layer_groups()] == ["lstm1", "lstm2", "lstm3", "projection"]


def test_long_clips_are_cut_and_counted_and_rates_converted():
    b = get_backbone("resemblyzer", max_seconds=2).randomized(0)
    rng = np.random.default_rng(0)
    batch = b.prepare([(0.1 * rng.standard_normal(16000 * 5)).astype(np.float32),
                       ((0.1 * rng.standard_normal(44100)).astype(np.float32), 44100)])
    assert batch.units.tolist() == [[32000, 80000], [16000, 16000]]
    assert b.forward_features(batch).shape == (2, 256)


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                    reason="espeak-ng and sox are not installed (make speech installs them)")
def test_real_weights_tell_synthetic_voices_apart(tmp_path, monkeypatch):
    """Synthesised speech (espeak-ng), not recorded speech: 2 voices x 3 sentences each. The
    pre-trained embeddings of one voice are closer to each other than to the other voice's."""
    monkeypatch.syspath_prepend(str(BENCH))
    speech = importlib.import_module("_speech")
    clips = {v: [speech.say(tmp_path / f"{v}{i}.wav", text, voice=v, rate=160, pitch=50)
                 for i, text in enumerate(["the cat sat on the mat", "seven green boxes", "stop and go left"])]
             for v in ("en-us+m3", "en-gb+f2")}
    f = get_backbone("resemblyzer").embed(clips["en-us+m3"] + clips["en-gb+f2"]).numpy()
    sim = f @ f.T
    same = np.mean([sim[i, j] for i in range(6) for j in range(6) if i != j and (i < 3) == (j < 3)])
    cross = np.mean([sim[i, j] for i in range(3) for j in range(3, 6)])
    assert same > cross + 0.05


def test_fit_on_audio_class_folders_of_mixed_formats_with_the_mfcc_control(tmp_path):
    """End to end: class folders of WAV and FLAC, the probe with its controls and verdict, a run
    that reloads and predicts the same classes (the MFCC control's features saved as tensors)."""
    import soundfile as sf

    import transferkit as tk
    from transferkit.controls import BASELINES

    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    for label, freq in (("low", 220.0), ("high", 1760.0)):
        (tmp_path / "d" / label).mkdir(parents=True)
        for i in range(8):
            x = 0.3 * np.sin(2 * np.pi * freq * (1 + 0.02 * i) * t) + 0.02 * rng.standard_normal(len(t))
            sf.write(tmp_path / "d" / label / f"{i}.{'flac' if i % 2 else 'wav'}", x, 16000)
    model = tk.fit(data=str(tmp_path / "d"), model="resemblyzer", strategy="linear-probe", seed=0, log=None,
                   progress=False, out=str(tmp_path / "run"))
    m = model.metrics
    assert set(m["controls"]) == {"mfcc-logreg", "random-init"} and m["verdict"] in ("helped", "no-difference", "hurt")
    assert "MFCC" in BASELINES.entry("mfcc-logreg").meta["summary"]
    assert m["test"]["accuracy"] == 1.0  # two tones three octaves apart
    again = tk.load(str(tmp_path / "run"))
    files = [str(tmp_path / "d" / "low" / "1.flac"), str(tmp_path / "d" / "high" / "2.wav")]
    assert list(again.predict(files)) == ["low", "high"]
    # occlusion over time and frequency, drawn on the spectrogram, for the run's transfer model
    from transferkit.explain import explain

    [e] = explain(str(tmp_path / "run"), [files[1]])
    assert e.method == "occlusion" and e.target == e.predicted == "high"
    assert e.heatmap.shape[0] == 40 and e.heatmap.max() == 1.0 and e.heatmap.min() >= 0
    png = (tmp_path / "run" / "explanations" / e.files[0]).read_bytes()
    assert png.startswith(b"\x89PNG")
    with pytest.raises(UserInputError, match="audio gets occlusion"):
        explain(str(tmp_path / "run"), [files[1]], method="gradcam")
    # ONNX: partials and the per-item mean in one graph, parity checked by the export itself
    pytest.importorskip("onnxruntime", reason="pip install 'transferkit[export]'")
    from transferkit.export import export_onnx

    card = export_onnx(str(tmp_path / "run"), log=lambda _m: None)
    assert card["inputs"] == ["mels", "pool"] and card["parity"]["max_abs_diff"] < 1e-4
    onnx_model = tk.load(str(tmp_path / "run"), backend="onnx", which="transfer")
    assert list(onnx_model.predict(files)) == ["low", "high"]
