"""/predict on an audio run: WAV and FLAC uploads, and the limits on what is uploaded."""
from __future__ import annotations

import importlib.util
import io

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs pip install 'transferkit[serve]'")
pytest.importorskip("httpx", reason="needs pip install 'transferkit[serve]'")
sf = pytest.importorskip("soundfile", reason="pip install 'transferkit[audio]'")
pytestmark = pytest.mark.skipif(importlib.util.find_spec("resemblyzer") is None,
                                reason="pip install 'transferkit[audio]' (the resemblyzer weights)")

import transferkit as tk  # noqa: E402
from tests.test_serve import Served  # noqa: E402


def _tone(freq: float, seconds: float = 0.5, rate: int = 16000, i: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * freq * (1 + 0.02 * i) * t) + 0.01 * np.random.default_rng(i).standard_normal(len(t))


def _encoded(x: np.ndarray, rate: int, fmt: str) -> bytes:
    b = io.BytesIO()
    sf.write(b, x, rate, format=fmt)
    return b.getvalue()


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-audio")
    for label, freq in (("low", 220.0), ("high", 1760.0)):
        (root / "d" / label).mkdir(parents=True)
        for i in range(6):
            sf.write(root / "d" / label / f"{i}.wav", _tone(freq, i=i), 16000)
    tk.fit(data=str(root / "d"), model="resemblyzer", strategy="linear-probe", out=str(root / "run"), control=False,
           log=None, progress=False)
    return root / "run"


def test_audio_uploads_of_any_format_and_rate_are_predicted_and_bad_ones_refused(audio_run):
    with Served(audio_run, max_items=4, max_audio_ms=2000) as c:
        files = [("files", ("a.flac", _encoded(_tone(1760.0, rate=22050, i=9), 22050, "FLAC"))),
                 ("files", ("b.wav", _encoded(_tone(220.0, i=8), 16000, "WAV")))]
        r = c.post("/predict", files=files)
        assert r.status_code == 200, r.text
        assert [p["label"] for p in r.json()["predictions"]] == ["high", "low"]
        long = _encoded(_tone(220.0, seconds=3.0), 16000, "WAV")
        r = c.post("/predict", files=[("files", ("long.wav", long))])
        assert r.status_code == 422 and r.json()["error"] == "audio-too-long" and "2 s" in r.json()["message"]
        r = c.post("/predict", files=[("files", ("notes.ogg", b"not audio at all" * 50))])
        assert r.status_code == 422 and r.json()["error"] == "not-audio"
        wav = _encoded(_tone(220.0), 16000, "WAV")
        r = c.post("/predict", files=[("files", ("cut.wav", wav[: len(wav) // 3]))])
        assert r.status_code == 422 and r.json()["error"] == "truncated-audio"
        r = c.post("/predict", json={"texts": ["hello"]})
        assert r.status_code == 415 and "audio files as multipart/form-data" in r.json()["message"]
