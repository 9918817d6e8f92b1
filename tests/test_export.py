"""ONNX export, int8, and the onnx backend (tiny models: fast)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="pip install 'transferkit[export]'")

import transferkit as tk
from transferkit.cli import main
from transferkit.data import from_arrays

from conftest import toy_texts

LONG = "a long text that needs several windows " * 120


@pytest.fixture(scope="module")
def toy_csv(tmp_path_factory):
    texts, labels = toy_texts(15)
    p = tmp_path_factory.mktemp("xdata") / "toy.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    return p


@pytest.mark.parametrize("strategy,params", [("linear-probe", {}), ("finetune", {"epochs": 1, "val_fraction": 0}),
                                             ("lora", {"epochs": 1, "val_fraction": 0})])
def test_text_export_matches_pytorch_including_long_texts(strategy, params, tiny_text_dir, toy_csv, tmp_path):
    if strategy == "lora":
        pytest.importorskip("peft")
    out = tmp_path / "run"
    model = tk.fit(data=str(toy_csv), model=str(tiny_text_dir), strategy=strategy, strategy_params=params, select=False,
                   backbone_options={"max_length": 16}, out=str(out), control=False, log=None)
    assert main(["export", str(out), "--quantize", "int8"]) == 0
    card = json.loads((out / "model_card.json").read_text())
    e = card["export"]
    assert e["parity"]["on"] == "test split" and e["parity"]["max_abs_diff"] < 1e-4
    assert e["int8"]["bytes"] < e["bytes"] and e["int8"]["test_items"] == 6
    assert e["int8"]["accuracy_change"] == pytest.approx(e["int8"]["accuracy_int8"] - e["int8"]["accuracy_fp32"])
    onnx = tk.load(out, backend="onnx")
    for texts in (["one"], ["short", LONG, "x y z", LONG[:90], "b", "c", "d"]):  # dynamic items, windows, tokens
        np.testing.assert_allclose(onnx.predict_proba(texts), model.predict_proba(texts), atol=1e-4)
    assert tk.load(out, backend="onnx-int8").predict_proba([LONG]).shape == (1, 2)
    # runs split so that each holds at most chunk_batch windows: the same probabilities
    onnx.onnx.backbone.chunk_batch = 3
    many = ["short", LONG, "x y z", LONG[:90], "b", LONG[:300], "d"]
    np.testing.assert_allclose(onnx.predict_proba(many), model.predict_proba(many), atol=1e-4)
    if strategy == "linear-probe":  # more texts than one preparation pool: every row back in its place
        rows = [LONG[: 7 * (i % 40) + 1] for i in range(270)]
        np.testing.assert_allclose(onnx.predict_proba(rows), model.predict_proba(rows), atol=1e-4)


def test_predict_backend_onnx_on_the_command_line(tiny_text_dir, toy_csv, tmp_path, capsys):
    out = tmp_path / "run"
    model = tk.fit(data=str(toy_csv), model=str(tiny_text_dir), out=str(out), control=False, log=None)
    # on a tiny random model the hand-made features win the selection: the delivered model has no
    # graph, the transfer model (the probe) is the one exported, and --which transfer runs it
    handmade = model.transfer is not None and model.strategy.name in ("hybrid", "classical")
    which = ["--which", "transfer"] if handmade else []
    assert main(["predict", str(out), str(toy_csv), "--backend", "onnx", *which]) == 2
    assert "transferkit export" in capsys.readouterr().err  # not exported yet: says how
    if handmade:
        assert main(["predict", str(out), str(toy_csv), "--backend", "onnx"]) == 2
        assert "--which transfer" in capsys.readouterr().err  # the delivered model has no graph: says which has
    assert main(["export", str(out)]) == 0
    said = capsys.readouterr()
    assert ("exporting the transfer model" in said.err) == handmade and ("--which transfer" in said.out) == handmade
    assert json.loads((out / "model_card.json").read_text())["export"]["model"] == ("transfer" if handmade
                                                                                     else "delivered")
    assert main(["predict", str(out), str(toy_csv), "--out", str(tmp_path / "a.csv"), *which]) == 0
    assert main(["predict", str(out), str(toy_csv), "--backend", "onnx", "--out", str(tmp_path / "b.csv"),
                 *which]) == 0
    a = list(csv.DictReader(open(tmp_path / "a.csv")))
    b = list(csv.DictReader(open(tmp_path / "b.csv")))
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b]
    assert max(abs(float(x["confidence"]) - float(y["confidence"])) for x, y in zip(a, b)) < 1e-4


def test_image_export_with_dynamic_batch(tiny_image_dir, tmp_path):
    rng = np.random.RandomState(0)
    imgs = rng.randint(0, 255, (12, 32, 32, 3), dtype=np.uint8)
    out = tmp_path / "img"
    model = tk.fit(train=from_arrays(imgs, ["a", "b"] * 6, modality="image"), model=str(tiny_image_dir),
                   out=str(out), control=False, log=None, select=False)
    from transferkit.export import export_onnx

    entry = export_onnx(out, log=lambda m: None)
    assert entry["parity"]["on"].startswith("synthetic items")  # in-memory data: no split to rebuild
    onnx = tk.load(out, backend="onnx")
    for n in (1, 7):
        np.testing.assert_allclose(onnx.predict_proba(imgs[:n]), model.predict_proba(imgs[:n]), atol=1e-4)


def test_export_user_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "model_card.json is missing" in capsys.readouterr().err


# ----- the onnx backend for feature extraction ------------------------------------------------------
def test_onnx_feature_extraction_matches_torch_text_and_image(tiny_text_dir, tiny_image_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    from transferkit.backbones import get_backbone
    from transferkit.features import extract_features

    texts = from_arrays(["short", LONG, "x y z " * 7, LONG[:90], "b"], modality="text")
    rng = np.random.RandomState(1)
    images = from_arrays(rng.randint(0, 255, (5, 20, 30, 3), dtype=np.uint8), modality="image")
    for model_dir, data, opts in ((tiny_text_dir, texts, {"max_length": 16}), (tiny_image_dir, images, {})):
        bb = get_backbone(str(model_dir), **opts)
        ref, _ = extract_features(bb, data, cache=False)
        got, stats = extract_features(bb, data, cache=False, backend="onnx")
        np.testing.assert_allclose(got, ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
        if data.modality == "text":
            assert stats.chunked >= 1  # windows pooled per item outside the graph, as in PyTorch
        graphs = list((tmp_path / "cache" / "onnx").glob(f"{bb.cache_key()}.onnx"))
        assert len(graphs) == 1  # exported once per cache key, then reused
        mtime = graphs[0].stat().st_mtime_ns
        extract_features(get_backbone(str(model_dir), **opts), data, cache=False, backend="onnx")
        assert graphs[0].stat().st_mtime_ns == mtime


def test_fit_with_onnx_backend_and_refusals(tiny_text_dir, tiny_audio_dir, toy_csv, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    a = tk.fit(data=str(toy_csv), model=str(tiny_text_dir), control=False, log=None, cache=False)
    b = tk.fit(data=str(toy_csv), model=str(tiny_text_dir), control=False, log=None, cache=False, backend="onnx")
    np.testing.assert_allclose(b.predict_proba(["one", LONG]), a.predict_proba(["one", LONG]), atol=1e-3)
    with pytest.raises(tk.UserInputError, match="backend must be torch or onnx"):
        tk.fit(data=str(toy_csv), model=str(tiny_text_dir), control=False, log=None, backend="tensorrt")
    from transferkit.backbones import get_backbone
    from transferkit.features import extract_features

    audio = from_arrays([np.zeros(1600, np.float32)], modality="audio", sampling_rate=16000)
    with pytest.raises(tk.UserInputError, match="onnx backend does not support"):
        extract_features(get_backbone(str(tiny_audio_dir)), audio, cache=False, backend="onnx")
    assert main(["fit", "--data", str(toy_csv), "--model", str(tiny_text_dir), "--no-control", "--backend", "onnx",
                 "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["backend"] == "onnx"
