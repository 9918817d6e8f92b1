"""The server's backend choice (the run's checked ONNX graphs first), its output cache and its
window cap for texts (issue #25).  Tiny random models; one real export of a tiny run."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs pip install 'transferkit[serve]'")
pytest.importorskip("onnxruntime", reason="pip install 'transferkit[export]'")

from test_serve import Served

import transferkit as tk
from transferkit.errors import UserInputError
from transferkit.export import export_onnx
from transferkit.serve.backend import OutputCache, choose_backend, content_key, int8_accepted
from transferkit.serve.predictor import Predictor

from conftest import toy_texts

LONG = "a long text that needs several windows " * 120


def _card(drop: float | None = 0.0, features: bool = True) -> dict:
    e = {"model": "delivered", "file": "model.onnx", "int8": {"file": "model.int8.onnx"}}
    if features:
        e["features_output"] = "features (items, dim)"
    if drop is not None:
        e["int8"].update(accuracy_fp32=0.9, accuracy_int8=0.9 - drop, accuracy_change=-drop)
    return {"export": e}


@pytest.fixture
def files(tmp_path):
    for f in ("model.onnx", "model.int8.onnx"):
        (tmp_path / f).write_bytes(b"x")
    return tmp_path


def test_auto_takes_int8_only_where_the_export_check_kept_accuracy(files):
    assert choose_backend(_card(0.005), files)["name"] == "onnx-int8"
    fp32 = choose_backend(_card(0.02), files)
    assert fp32["name"] == "onnx" and "beyond 1 point" in fp32["why"]
    assert choose_backend(_card(None), files)["name"] == "onnx"  # no measured change: not trusted
    assert choose_backend({"export": {**_card()["export"], "int8": {"accepted": False, "check": "-3 pts"}}},
                          files)["name"] == "onnx"
    assert choose_backend(_card(0.02), files, "onnx-int8")["name"] == "onnx-int8"  # the user's own choice


def test_auto_falls_back_to_pytorch_with_the_reason(files):
    assert "no ONNX export" in choose_backend({}, files)["why"]
    assert choose_backend(_card(), files, tent=True)["name"] == "torch"
    assert "delivered model, not the transfer one" in choose_backend(_card(), files, which="transfer")["why"]
    assert "predates" in choose_backend(_card(features=False), files, needs_features=True)["why"]
    assert choose_backend(_card(features=False), files)["name"] == "onnx-int8"  # no drift: features not needed
    (files / "model.int8.onnx").unlink()
    assert "missing" in choose_backend(_card(), files)["why"]
    with pytest.raises(UserInputError, match="no ONNX export"):
        choose_backend({}, files, "onnx")
    with pytest.raises(UserInputError, match="backend must be"):
        choose_backend({}, files, "gpu")


def test_output_cache_is_lru_by_content():
    c = OutputCache(2)
    a, b, d = content_key("spam"), content_key(b"spam"), content_key(np.zeros((2, 2), np.uint8))
    assert len({a, b, d, content_key(np.zeros((4,), np.uint8))}) == 4  # text, bytes, pixels, shape all count
    c.put(a, np.ones(2), None)
    c.put(b, np.zeros(2), None)
    assert c.get(a) is not None  # a is now the most recent: b goes first
    c.put(d, np.ones(2), None)
    assert c.get(b) is None and c.get(d) is not None
    assert c.describe() == {"capacity": 2, "held": 2, "hits": 2, "misses": 1}


@pytest.fixture(scope="module")
def exported_run(tiny_text_dir, tmp_path_factory):
    texts, labels = toy_texts(30)
    out = tmp_path_factory.mktemp("serve-onnx") / "run"
    tk.fit(train=tk.Dataset(modality="text", inputs=texts, labels=labels), model=str(tiny_text_dir), out=str(out),
           control=False, select=False, log=None, backbone_options={"max_length": 16})
    export_onnx(out, quantize="int8", log=lambda *_: None)
    return out


def test_server_runs_the_exported_graph_and_says_so(exported_run):
    card = json.loads((exported_run / "model_card.json").read_text())
    ok, _ = int8_accepted(card["export"])
    texts = ["free cash prize winner", LONG, "budget review minutes"]
    with Served(exported_run, cache_items=0) as c:
        serving = c.get("/metadata").json()["serving"]
        assert serving["backend"]["name"] == ("onnx-int8" if ok else "onnx") and serving["cache"] is None, serving
        body = c.post("/predict", json={"texts": texts}).json()
    got = np.array([[p["probabilities"][k] for k in body["classes"]] for p in body["predictions"]])
    graph = tk.load(exported_run, backend="onnx-int8" if ok else "onnx", cache=False)
    np.testing.assert_allclose(got, graph.predict_proba(texts), atol=1e-6)
    torch_p = tk.load(exported_run, cache=False).predict_proba(texts)
    assert np.abs(got - torch_p).max() < (0.2 if ok else 1e-4)
    # the drift monitor's features come from the same graph run, as PyTorch computes them (fp32)
    p = Predictor(exported_run, backend="onnx")
    out, feats = p.predict(texts)
    ref, _ = tk.extract_features(p.model.backbone, tk.Dataset(modality="text", inputs=texts), cache=False)
    np.testing.assert_allclose(feats, ref, atol=1e-4)
    with Served(exported_run, backend="torch") as c:
        assert c.get("/metadata").json()["serving"]["backend"]["why"] == "asked for (--backend torch)"


def test_repeated_items_are_answered_from_the_cache(exported_run):
    with Served(exported_run, backend="torch", cache_items=8) as c:
        first = c.post("/predict", json={"texts": ["alpha beta", "gamma"]}).json()
        again = c.post("/predict", json={"texts": ["gamma", "alpha beta", "new one"]}).json()
        metrics = c.get("/metrics").text
        cache = c.get("/metadata").json()["serving"]["cache"]
    assert again["predictions"][0] == first["predictions"][1] and again["predictions"][1] == first["predictions"][0]
    assert "transferkit_serve_cache_hits_total 2.0" in metrics
    assert cache["hits"] == 2 and cache["capacity"] == 8


def test_max_chunks_caps_the_windows_of_a_text(exported_run, image_run_dir):
    p = Predictor(exported_run, backend="torch", max_chunks=1)
    assert p.serving()["max_chunks"] == 1
    assert len(p.model.backbone.prepare([LONG]).owner) == 1
    assert len(Predictor(exported_run, backend="torch").model.backbone.prepare([LONG]).owner) > 1
    with Served(exported_run, max_chunks=2) as c:
        assert c.get("/metadata").json()["serving"]["max_chunks"] == 2
    with pytest.raises(UserInputError, match="max-chunks applies to text runs"):
        Predictor(image_run_dir, max_chunks=2)


@pytest.fixture(scope="module")
def image_run_dir(tiny_image_dir, tmp_path_factory):
    rng = np.random.RandomState(0)
    X = rng.randint(0, 120, (12, 32, 32, 3), dtype=np.uint8)
    out = tmp_path_factory.mktemp("serve-image-chunks") / "run"
    tk.fit(train=tk.from_arrays(X, ["a"] * 6 + ["b"] * 6), model=str(tiny_image_dir), out=str(out), control=False,
           log=None)
    return out
