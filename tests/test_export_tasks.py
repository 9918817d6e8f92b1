"""ONNX export of regression and multi-label linear-probe runs: the graph gives the task's outputs
(values in the target's units; per-label sigmoid probabilities), parity with PyTorch is checked
on the run's rebuilt test split, and ``predict --backend onnx`` decides as PyTorch does."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="pip install 'transferkit[export]'")

from test_tasks_pipeline import _counted_mail, _topic_mail

import transferkit as tk
from transferkit.cli import main
from transferkit.errors import UserInputError
from transferkit.export import export_onnx

from task_data import digit_pairs

LONG = "goal team cash bank soup " * 80  # several windows of 16 tokens


def _fit(data, tiny_text_dir, out, **options):
    return tk.fit(data=str(data), model=str(tiny_text_dir), out=str(out), control=False, log=None,
                  backbone_options={"max_length": 16}, select=False, **options)  # the transfer model's graph


def test_regression_export_gives_values_in_the_targets_units(tiny_text_dir, tmp_path):
    data = _counted_mail(tmp_path / "counts.csv")
    out = tmp_path / "reg"
    model = _fit(data, tiny_text_dir, out, label_column="target", task="regression")
    assert model.task == "regression"
    entry = export_onnx(out, quantize="int8", log=lambda m: None)
    assert entry["task"] == "regression" and entry["output"].startswith("value (items,)")
    assert entry["parity"]["on"] == "test split" and entry["parity"]["max_abs_diff"] < 1e-4
    q = entry["int8"]
    assert q["metric"] == "rmse" and q["test_items"] == entry["parity"]["items"]
    assert q["metric_change"] == pytest.approx(q["metric_int8"] - q["metric_fp32"])
    onnx = tk.load(out, backend="onnx")
    texts = ["cash cash cash meeting", "agenda report notes", LONG, "cash"]
    got, want = onnx.predict_outputs(texts), model.predict_outputs(texts)
    assert got.shape == (4,) and want.shape == (4,)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.ptp(want) > 0  # not a constant: the head, not only its bias, is in the graph
    assert all(isinstance(v, float) for v in onnx.predict(texts))
    with pytest.raises(UserInputError, match="regression"):
        onnx.predict_proba(texts)
    assert tk.load(out, backend="onnx-int8").predict_outputs([LONG]).shape == (1,)


def test_multi_label_export_gives_per_label_probabilities(tiny_text_dir, tmp_path):
    data = _topic_mail(tmp_path / "topics.jsonl")
    out = tmp_path / "ml"
    model = _fit(data, tiny_text_dir, out)
    assert model.task == "multi-label" and model.classes == ["food", "money", "sport"]
    entry = export_onnx(out, log=lambda m: None)
    assert entry["task"] == "multi-label" and entry["output"].startswith("proba (items, labels)")
    assert entry["parity"]["on"] == "test split" and entry["parity"]["max_abs_diff"] < 1e-4
    onnx = tk.load(out, backend="onnx")
    texts = ["goal team match score", "bread soup cash bank", LONG]
    got, want = onnx.predict_proba(texts), model.predict_proba(texts)
    assert got.shape == (3, 3)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert not np.allclose(got.sum(1), 1.0)  # sigmoids per label, not a softmax over labels
    assert onnx.predict(texts) == model.predict(texts)


def test_multi_label_image_export_on_real_digit_pairs(tiny_image_dir, tmp_path):
    train = digit_pairs(60, seed=0)
    out = tmp_path / "pairs"
    model = tk.fit(train=train, model=str(tiny_image_dir), out=str(out), control=False, log=None, select=False)
    entry = export_onnx(out, log=lambda m: None)
    assert entry["parity"]["on"].startswith("synthetic items")  # in-memory data: no split to rebuild
    onnx = tk.load(out, backend="onnx")
    items = train.subset(range(7))
    got = onnx.predict_proba(items)
    assert got.shape == (7, len(model.classes))
    np.testing.assert_allclose(got, model.predict_proba(items), atol=1e-4)


@pytest.mark.parametrize("task", ["regression", "multi-label"])
def test_predict_backend_onnx_gives_torchs_predictions(task, tiny_text_dir, tmp_path, capsys):
    if task == "regression":
        data, options = _counted_mail(tmp_path / "d.csv"), {"label_column": "target", "task": "regression"}
    else:
        data, options = _topic_mail(tmp_path / "d.jsonl"), {}
    out = tmp_path / "run"
    _fit(data, tiny_text_dir, out, **options)
    assert main(["export", str(out)]) == 0
    capsys.readouterr()
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["predict", str(out), str(data), "--out", str(a)]) == 0
    assert main(["predict", str(out), str(data), "--backend", "onnx", "--out", str(b)]) == 0
    ra, rb = list(csv.DictReader(open(a))), list(csv.DictReader(open(b)))
    assert len(ra) == len(rb) == 60 and set(ra[0]) == set(rb[0])
    if task == "regression":
        diffs = [abs(float(x["prediction"]) - float(y["prediction"])) for x, y in zip(ra, rb)]
        assert max(diffs) < 1e-4
    else:
        assert [r["prediction"] for r in ra] == [r["prediction"] for r in rb]
        cols = [k for k in ra[0] if k.startswith("p(")]
        assert len(cols) == 3
        assert max(abs(float(x[k]) - float(y[k])) for x, y in zip(ra, rb) for k in cols) < 1e-4
    assert json.loads((out / "model_card.json").read_text())["export"]["task"] == task


@pytest.mark.parametrize("strategy", ["finetune", "lora"])
def test_a_fine_tuned_regression_run_exports_with_its_trained_backbone(strategy, tiny_text_dir, tmp_path):
    """The fine-tuning family's regression head (scaling folded into it) and its trained backbone
    (lora: merged) are what the graph computes: values in the target's units, as PyTorch gives."""
    data = _counted_mail(tmp_path / "counts.csv")
    out = tmp_path / strategy
    model = _fit(data, tiny_text_dir, out, label_column="target", task="regression", strategy=strategy,
                 strategy_params={"max_steps": 4, "batch_size": 8})
    entry = export_onnx(out, log=lambda m: None)
    assert entry["task"] == "regression" and entry["parity"]["max_abs_diff"] < 1e-4
    texts = ["cash cash cash meeting", "agenda report notes", "cash"]
    np.testing.assert_allclose(tk.load(out, backend="onnx").predict_outputs(texts), model.predict_outputs(texts),
                               atol=1e-4)
