"""fit -> run directory -> load/predict/evaluate, end to end on a tiny model (fast)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import transferkit as tk
from transferkit.cli import main

from conftest import write_toy_mail


@pytest.fixture()
def toy_csv(tmp_path):
    return write_toy_mail(tmp_path / "toy.csv")


def test_fit_writes_a_complete_run(tiny_text_dir, toy_csv, tmp_path):
    out = tmp_path / "run"
    model = tk.fit(data=str(toy_csv), text_columns="subject,body", model=str(tiny_text_dir), out=str(out), log=None)
    for f in ("config.json", "metrics.json", "model_card.json", "strategy.safetensors", "report.html",
              "skipped.json", "validation.json", "README.md"):
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    for key in ("transfer_gain", "verdict", "n_train", "n_test"):
        assert key in m
    assert {"accuracy", "macro_f1", "ece", "per_class", "confusion_matrix"} <= set(m["test"])
    assert m["control"]["name"] in ("random-init", "tfidf-logreg") and "accuracy" in m["control"]
    assert set(m["controls"]) == {"random-init", "tfidf-logreg"}
    assert m["verdict"] in ("helped", "no-difference", "hurt")
    assert m["n_train"] + m["n_test"] == 30 and m["n_test"] == 6
    card = json.loads((out / "model_card.json").read_text())
    assert card["backbone"]["identity"]["weights_sha256"] and card["label_map"] == {"0": "ham", "1": "spam"}
    assert card["data"]["train_hash"] and card["versions"]["torch"]
    # loads without the training data and predicts the same as the fitted object
    again = tk.load(out)
    texts = ["free cash prize now", "project meeting agenda"]
    np.testing.assert_allclose(again.predict_proba(texts), model.predict_proba(texts), atol=1e-6)


def test_config_reruns_exactly(tiny_text_dir, toy_csv, tmp_path):
    tk.fit(data=str(toy_csv), text_columns="subject,body", model=str(tiny_text_dir), out=str(tmp_path / "a"),
           log=None)
    cfg = tk.FitConfig.load(tmp_path / "a" / "config.json")
    tk.fit(cfg, out=str(tmp_path / "b"), log=None)
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["test"] == b["test"] and a["controls"] == b["controls"] and a["verdict"] == b["verdict"]


def test_no_control_and_few_shot(tiny_text_dir, toy_csv):
    model = tk.fit(data=str(toy_csv), text_columns="subject,body", model=str(tiny_text_dir), control=False,
                   labels_per_class=3, log=None)
    assert "verdict" not in model.metrics and model.metrics["n_train"] == 6
    assert any("Few-shot" in n for n in model.metrics["notes"])


def test_in_memory_arrays(tiny_image_dir):
    rng = np.random.RandomState(0)
    X = rng.randint(0, 255, (24, 16, 16), dtype=np.uint8)
    X[12:, :8] = 255  # class b has a bright top half
    y = ["a"] * 12 + ["b"] * 12
    model = tk.fit(train=tk.from_arrays(X, y), model=str(tiny_image_dir), log=None)
    assert set(model.metrics["controls"]) == {"random-init", "pixels-logreg"}
    assert len(model.predict(X[:3])) == 3


def test_cli_fit_predict_evaluate(tiny_text_dir, toy_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "--data", str(toy_csv), "--text-column", "subject,body", "--model", str(tiny_text_dir),
                 "--out", str(out), "--seed", "1"]) == 0
    assert "verdict:" in capsys.readouterr().out
    new = tmp_path / "new.csv"
    new.write_text("subject,body\nhello,free cash prize\nhi,agenda for the review\n")
    preds = tmp_path / "p.csv"
    assert main(["predict", str(out), str(new), "--out", str(preds)]) == 0
    rows = list(csv.DictReader(open(preds)))
    assert len(rows) == 2 and {"origin", "prediction", "p(ham)", "p(spam)"} <= set(rows[0])
    assert main(["predict", str(out), str(new), "--out", str(tmp_path / "p.json")]) == 0
    assert len(json.loads((tmp_path / "p.json").read_text())) == 2
    assert main(["evaluate", str(out), "--data", str(toy_csv), "--out", str(tmp_path / "e.json")]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["n"] == 30


def test_cli_user_errors_exit_2_without_traceback(tiny_text_dir, toy_csv, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "transferkit.cli", *args], capture_output=True, text=True,
                              env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                   "TRANSFERKIT_CACHE": str(tmp_path / "c")})

    r = run("fit", "--data", str(toy_csv), "--text-column", "nope", "--model", str(tiny_text_dir))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "subject" in r.stderr  # names present columns
    r = run("fit", "--data", str(tmp_path / "missing.csv"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run("fit", "--data", str(toy_csv), "--text-column", "body", "--model", "minilm-l7")
    assert r.returncode == 2 and "did you mean 'minilm-l6'" in r.stderr
    r = run("predict", str(tmp_path), str(toy_csv))
    assert r.returncode == 2 and "not a transferkit run" in r.stderr
    r = run("fit", "--data", str(toy_csv), "--text-column", "body", "--model", str(tiny_text_dir),
            "--param", "Cs=[-1]")
    assert r.returncode == 2 and "Cs must be a non-empty list of numbers > 0, got [-1]" in r.stderr


def test_models_command_lists_the_zoo(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("minilm-l6", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"):
        assert name in out


def test_image_run_predicts_folders_and_files(tiny_image_dir, tmp_path):
    from PIL import Image

    rng = np.random.RandomState(1)
    data = tmp_path / "imgs"
    for label in ("dark", "light"):
        (data / label).mkdir(parents=True)
        for i in range(8):
            base = 40 if label == "dark" else 200
            Image.fromarray((base + rng.randint(0, 40, (20, 20))).astype(np.uint8)).save(data / label / f"{i}.png")
    out = tmp_path / "run"
    assert main(["fit", "--data", str(data), "--model", str(tiny_image_dir), "--out", str(out), "--no-control"]) == 0
    new = tmp_path / "new"
    new.mkdir()
    Image.fromarray(np.full((30, 24), 230, np.uint8)).save(new / "a.png")
    Image.fromarray(np.full((30, 24), 30, np.uint8)).convert("P").save(new / "b.png")
    (new / "broken.png").write_bytes(b"\x89PNG not really")
    from transferkit.errors import DataValidationError
    from transferkit.predict import predict_files

    with pytest.raises(DataValidationError, match="broken.png"):
        predict_files(out, [str(new)])
    rows = predict_files(out, [str(new)], skip_bad=True)
    assert [r["origin"].rsplit("/", 1)[-1] for r in rows] == ["a.png", "b.png"]
    assert [r["prediction"] for r in rows] == ["light", "dark"]
    one = predict_files(out, [str(new / "a.png")])
    assert one[0]["prediction"] == "light" and one[0]["p(light)"] == rows[0]["p(light)"]


def test_in_memory_audio_is_resampled_from_its_own_rate(tiny_audio_dir):
    from scipy.signal import resample_poly

    from transferkit.backbones import get_backbone
    from transferkit.features import extract_features

    t = np.arange(8000) / 8000
    clip = np.sin(2 * np.pi * 300 * t).astype(np.float32)
    ds = tk.from_arrays(clip[None, :], modality="audio", sampling_rate=8000)
    b = get_backbone(str(tiny_audio_dir))
    feats, _ = extract_features(b, ds, cache=False)
    expect = b.embed([resample_poly(clip, 2, 1).astype(np.float32)]).numpy()
    np.testing.assert_allclose(feats, expect, atol=1e-4)


def test_report_says_when_texts_were_chunked_or_cut(tiny_text_dir, tmp_path):
    texts = ["short one", "short two"] * 5 + [" ".join(["word"] * 40)] * 2 + [" ".join(["term"] * 90)] * 2
    labels = ["a", "b"] * 7
    ds = tk.Dataset(modality="text", inputs=[f"{t} {i}" for i, t in enumerate(texts)], labels=labels)
    model = tk.fit(train=ds, model=str(tiny_text_dir), backbone_options={"max_length": 32, "max_chunks": 2},
                   control=False, log=None, out=str(tmp_path / "run"))
    notes = " ".join(model.metrics["notes"])
    assert "4 of 14 texts were longer than one 32-token window" in notes
    assert "Of those, 2 had more than 2 chunks" in notes
    assert "4 of 14 texts" in (tmp_path / "run" / "report.html").read_text()
