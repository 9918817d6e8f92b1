"""Speech synthesised with espeak-ng and perturbed with sox: offline audio classification tasks.

Synthesised speech is NOT recorded speech: espeak-ng is a formant synthesiser, its voices are
variants of one engine, and no microphone, room or human speaker is involved (sox adds tempo and
pitch changes, reverberation, a channel's colouring, a telephone band; numpy adds white noise
at a chosen SNR and a time shift).  Figures on these tasks say how models compare on this data,
not how they do on real recordings.

Tasks (one class folder of 16 kHz mono WAV files each, cached on disk, never committed):

* ``keyword``: 10 command words (yes, no, up, down, left, right, on, off, stop, go), each clip a
  random English voice and variant, speaking rate, pitch, tempo, pitch shift, reverberation, noise;
* ``speaker``: 10 voice variants ("speakers": an espeak-ng English voice with a variant and a
  base pitch and rate of its own) saying random phrases, each clip perturbed as the others are
  (pitch shift within a semitone);
* ``language``: 10 languages speaking random numbers (espeak-ng reads digits in the voice's
  language), random variant, rate, pitch and perturbation.

Run ``python benchmarks/_speech.py TASK --per-class N`` to build one (prints the folder).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy.io import wavfile

VERSION = 3  # bump when a clip's recipe changes: it enters the cache folder's name
RATE = 16000
KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
ENGLISH = ["en-us", "en-gb", "en-029", "en-gb-scotland", "en-gb-x-rp", "en-us-nyc"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
            "Andy", "Annie", "Gene", "Lee", "Michael", "aunty", "boris", "david", "ed", "john", "linda", "max",
            "paul", "rob", "robert", "steph", "travis", "victor", "zac"]
# speaker name -> (voice, variant, base pitch 0-99, base rate words/min)
SPEAKERS = {"s01": ("en-us", "m1", 40, 165), "s02": ("en-us", "f2", 60, 175), "s03": ("en-gb", "m3", 35, 150),
            "s04": ("en-gb", "f4", 70, 160), "s05": ("en-029", "klatt", 50, 170),
            "s06": ("en-gb-scotland", "m7", 45, 155), "s07": ("en-us", "Annie", 55, 180),
            "s08": ("en-gb-x-rp", "david", 30, 160), "s09": ("en-us-nyc", "linda", 65, 170),
            "s10": ("en-us", "travis", 50, 150)}
LANGUAGES = {"english": "en-us", "german": "de", "french": "fr-fr", "spanish": "es", "italian": "it",
             "portuguese": "pt", "dutch": "nl", "polish": "pl", "swedish": "sv", "turkish": "tr"}
PHRASE_WORDS = ["the", "red", "house", "seven", "green", "boxes", "quickly", "moved", "under", "table", "water",
                "morning", "light", "river", "paper", "window", "open", "closed", "yellow", "garden", "music"]


def available() -> str | None:
    """``None`` when espeak-ng and sox are installed, else why not."""
    missing = [c for c in ("espeak-ng", "sox") if shutil.which(c) is None]
    return f"{' and '.join(missing)} not installed (make speech; apt-get install espeak-ng sox)" if missing else None


def say(path: Path, text: str, *, voice: str, rate: int = 160, pitch: int = 50, tempo: float = 1.0,
        cents: int = 0, reverb: int = 0, snr_db: float | None = None, shift_s: float = 0.0,
        eq: list | None = None, telephone: bool = False, seed: int = 0) -> str:
    """Speak ``text`` into ``path`` (16 kHz mono 16-bit WAV) and perturb it; returns the path.

    ``tempo``/``cents``/``reverb``/``eq``/``telephone`` by sox (tempo without pitch change; pitch
    shift in cents; reverberance 0-100; one peaking band ``[Hz, dB]``; a 300-3400 Hz band), then
    ``shift_s`` of leading silence and white noise at ``snr_db``."""
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp, "raw.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(raw), text],
                       check=True, capture_output=True)
        effects = ["rate", str(RATE), "channels", "1"]
        if tempo != 1.0:
            effects += ["tempo", f"{tempo:.3f}"]
        if cents:
            effects += ["pitch", str(cents)]
        if reverb:
            effects += ["reverb", str(reverb)]
        if eq:
            effects += ["equalizer", str(eq[0]), "1q", f"{eq[1]:.1f}"]
        if telephone:
            effects += ["sinc", "300-3400"]
        subprocess.run(["sox", str(raw), "-b", "16", str(path), *effects], check=True, capture_output=True)
    sr, x = wavfile.read(path)
    w = x.astype(np.float32) / 32768.0
    rng = np.random.default_rng(seed)
    if shift_s > 0:
        w = np.concatenate([np.zeros(int(shift_s * sr), np.float32), w])
    if snr_db is not None:
        power = float(np.mean(w ** 2)) or 1e-8
        w = w + rng.standard_normal(len(w)).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))
    peak = float(np.abs(w).max()) or 1.0
    wavfile.write(path, sr, (np.clip(w / max(peak, 1.0), -1, 1) * 32767).astype(np.int16))
    return str(path)


def _perturbation(rng: random.Random) -> dict:
    # the channel: a microphone's or line's colouring (one peaking band of +-10 dB) and, for a third
    # of the clips, a telephone band (300-3400 Hz)
    return {"tempo": rng.uniform(0.85, 1.15), "cents": rng.randint(-200, 200),
            "reverb": rng.choice([0, 0, 20, 50]), "snr_db": rng.uniform(5, 30), "shift_s": rng.uniform(0, 0.3),
            "eq": [rng.randint(300, 4000), rng.uniform(-10, 10)], "telephone": rng.random() < 1 / 3}


def _recipe(task: str, label: str, i: int, rng: random.Random) -> dict:
    if task == "keyword":
        return {"text": label, "voice": f"{rng.choice(ENGLISH)}+{rng.choice(VARIANTS)}",
                "rate": rng.randint(120, 220), "pitch": rng.randint(20, 80), **_perturbation(rng)}
    if task == "speaker":
        voice, variant, pitch, rate = SPEAKERS[label]
        text = " ".join(rng.sample(PHRASE_WORDS, rng.randint(3, 6)))
        # the channel varies as much as for the other tasks (the voice's own pitch shifted by up to a
        # semitone): the speaker must be told through tempo, reverberation and noise
        return {"text": text, "voice": f"{voice}+{variant}", "rate": rate + rng.randint(-20, 20),
                "pitch": pitch + rng.randint(-6, 6), **_perturbation(rng), "cents": rng.randint(-100, 100)}
    if task == "language":
        text = " ".join(str(rng.randint(0, 999)) for _ in range(rng.randint(1, 3)))
        return {"text": text, "voice": f"{LANGUAGES[label]}+{rng.choice(VARIANTS)}",
                "rate": rng.randint(130, 200), "pitch": rng.randint(25, 75), **_perturbation(rng)}
    raise ValueError(f"unknown task {task!r}: keyword, speaker or language")


def labels_of(task: str) -> list[str]:
    return {"keyword": KEYWORDS, "speaker": list(SPEAKERS), "language": list(LANGUAGES)}[task]


def build(task: str, per_class: int, root: Path | None = None, seed: int = 0, workers: int = 2) -> Path:
    """The task's class folders (``per_class`` clips each), built once and cached under ``root``
    (default ``$TRANSFERKIT_SPEECH`` or ``~/.cache/transferkit/speech``); returns the folder."""
    why = available()
    if why:
        raise RuntimeError(why)
    root = Path(root or os.environ.get("TRANSFERKIT_SPEECH") or Path.home() / ".cache" / "transferkit" / "speech")
    key = hashlib.sha256(json.dumps([VERSION, task, per_class, seed]).encode()).hexdigest()[:10]
    out = root / f"{task}-{per_class}-s{seed}-{key}"
    if (out / "recipes.json").exists():
        return out
    rng = random.Random(f"{task}:{seed}")
    jobs = [(out / label / f"{label}_{i:03d}.wav", _recipe(task, label, i, rng), rng.randrange(2 ** 31))
            for label in labels_of(task) for i in range(per_class)]
    for label in labels_of(task):
        (out / label).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(lambda j: say(j[0], j[1]["text"], seed=j[2], **{k: v for k, v in j[1].items() if k != "text"}),
                    jobs))
    (out / "recipes.json").write_text(json.dumps({str(p.relative_to(out)): r for p, r, _ in jobs}, indent=0))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("task", choices=["keyword", "speaker", "language"])
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(build(a.task, a.per_class, seed=a.seed))
