"""Experiment tracking (`fit --track`): a tiny fine-tuning fit reported to a real local MLflow store and
to real TensorBoard event files, each read back with the tracker's own reader."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from transferkit.cli import main
from transferkit.config import FitConfig
from transferkit.errors import MissingDependencyError, UserInputError
from transferkit.tracking import FitTracking, config_params, final_metrics, run_name, store_uri, tensorboard_dir

from conftest import write_toy_mail

# a fine-tuning fit, so that there are optimizer steps to report: 3 steps per epoch, 2 epochs, and
# a validation part big enough for the loop's validation callback (val_* per epoch)
FIT = ["--strategy", "finetune", "--epochs", "2", "--lr", "1e-3", "--batch-size", "8", "--seed", "0",
       "--param", "val_fraction=0.3", "--param", "val_min=6"]


def _toy_csv(tmp_path):
    return write_toy_mail(tmp_path / "toy.csv", 15)  # texts in the column "body"


def test_fit_track_mlflow_writes_a_store_that_mlflow_reads_back(tiny_text_dir, tmp_path, monkeypatch, capsys):
    MlflowClient = pytest.importorskip("mlflow.tracking").MlflowClient
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    store, out = tmp_path / "mlruns", tmp_path / "run"
    assert main(["fit", "--data", str(_toy_csv(tmp_path)), "--text-column", "body", "--model", str(tiny_text_dir),
                 *FIT, "--out", str(out), "--track", "mlflow", "--track-uri", str(store)]) == 0
    capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())
    steps = metrics["strategy"]["fit"]["steps"]
    assert steps >= 4

    client = MlflowClient(tracking_uri=store.as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("transferkit").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    # params: the resolved config, nested options flattened
    p = run.data.params
    assert p["strategy"] == "finetune" and p["model"] == str(tiny_text_dir) and p["seed"] == "0"
    assert p["strategy_params.batch_size"] == "8" and float(p["strategy_params.lr"]) == 1e-3
    assert p["track"] == '["mlflow"]'
    # per-step training metrics: one per optimizer step of the transfer model (the random-init
    # control trains too, and is not reported)
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in loss] == list(range(1, steps + 1))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/lr")] == list(range(1, steps + 1))
    history = metrics["strategy"]["fit"]["history"]
    epoch_loss = client.get_metric_history(run.info.run_id, "epoch/loss")
    assert [m.value for m in epoch_loss] == pytest.approx([h["loss"] for h in history])
    assert [m.step for m in epoch_loss] == [h["step"] for h in history]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "epoch/val_loss")] == pytest.approx(
        [h["val_loss"] for h in history])
    # final metrics with their interval bounds, the controls', the gain; the verdict as a tag
    m, test = run.data.metrics, metrics["test"]
    assert m["test/accuracy"] == pytest.approx(test["accuracy"])
    assert (m["test/accuracy_ci_low"], m["test/accuracy_ci_high"]) == pytest.approx(tuple(test["accuracy_ci"]))
    assert m["test/macro_f1_ci_high"] == pytest.approx(test["macro_f1_ci"][1])
    for name, cm in metrics["controls"].items():
        assert m[f"controls/{name}/accuracy"] == pytest.approx(cm["accuracy"])
    assert m["verdict/transfer_gain"] == pytest.approx(metrics["transfer_gain"])
    assert m["verdict/transfer_gain_ci_low"] == pytest.approx(metrics["transfer_gain_ci"][0])
    assert run.data.tags["verdict"] == metrics["verdict"] in ("helped", "no-difference", "hurt")
    assert run.data.tags["transferkit.run_dir"] == str(out.resolve())
    # the run directory's files as artifacts, byte for byte, and the confusion matrix image
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "model_card.json", "README.md", "metrics.json", "config.json",
            "test_confusion_matrix.png"} <= names
    got = client.download_artifacts(run.info.run_id, "report.html", str(tmp_path))
    assert open(got, "rb").read() == (out / "report.html").read_bytes()
    png = open(client.download_artifacts(run.info.run_id, "test_confusion_matrix.png", str(tmp_path)), "rb").read()
    assert png.startswith(b"\x89PNG")


def test_fit_track_tensorboard_writes_events_that_tensorboard_reads_back(tiny_text_dir, tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    import transferkit as tk

    out = tmp_path / "run"
    model = tk.fit(data=str(_toy_csv(tmp_path)), text_columns="body", model=str(tiny_text_dir), strategy="finetune",
                   strategy_params={"epochs": 2, "lr": 1e-3, "batch_size": 8, "val_fraction": 0.3, "val_min": 6},
                   out=str(out), track="tensorboard", log=None, progress=False)
    events = accumulator.EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    steps = model.metrics["strategy"]["fit"]["steps"]
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, steps + 1))
    history = model.metrics["strategy"]["fit"]["history"]
    assert [e.value for e in events.Scalars("epoch/val_loss")] == pytest.approx([h["val_loss"] for h in history])
    (acc,) = events.Scalars("test/accuracy")
    assert acc.value == pytest.approx(model.metrics["test"]["accuracy"]) and acc.step == steps
    assert events.Scalars("test/accuracy_ci_low")[0].value == pytest.approx(model.metrics["test"]["accuracy_ci"][0])
    assert "test/confusion_matrix" in tags["images"]
    (image,) = events.Images("test/confusion_matrix")
    assert image.encoded_image_string.startswith(b"\x89PNG") and image.width > 100 and image.height > 100
    assert {"config/text_summary", "verdict/text_summary"} <= set(tags["tensors"])
    verdict = events.Tensors("verdict/text_summary")[0].tensor_proto.string_val[0].decode()
    assert model.metrics["verdict"] in verdict


def test_track_options_are_checked():
    assert FitConfig(track="mlflow, tensorboard").track == ["mlflow", "tensorboard"]
    assert FitConfig(track="").track is None
    with pytest.raises(UserInputError, match="distinct trackers among mlflow, tensorboard"):
        FitConfig(track="wandb")
    with pytest.raises(UserInputError, match="two trackers"):
        FitConfig(track=["mlflow", "tensorboard"], track_uri="mlruns")
    with pytest.raises(UserInputError, match="no tracker"):
        FitConfig(track_uri="mlruns")
    with pytest.raises(UserInputError, match="multi-task"):
        FitConfig(track="mlflow", label_column="a,b")


def test_a_missing_tracker_library_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: importing it fails
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'transferkit\[mlflow\]'"):
        FitTracking.open(FitConfig(track="mlflow"))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'transferkit\[tensorboard\]'"):
        FitTracking.open(FitConfig(track="tensorboard"))


def test_a_tracking_store_mlflow_cannot_open_is_a_user_error(tmp_path):
    pytest.importorskip("mlflow")
    with pytest.raises(UserInputError, match="MLflow could not open the tracking store nosuchscheme://x"):
        FitTracking.open(FitConfig(track="mlflow", track_uri="nosuchscheme://x"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserInputError, match="MLflow could not open the tracking store file://"):
        FitTracking.open(FitConfig(track="mlflow", track_uri=str(blocker / "mlruns")))


def test_store_uri_params_and_final_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store_uri("mlruns") == (tmp_path / "mlruns").resolve().as_uri()
    assert store_uri("file:./x") == (tmp_path / "x").resolve().as_uri()
    assert store_uri("http://tracking:5000") == "http://tracking:5000"
    # TensorBoard: a folder per run under --track-uri, else the run directory's tensorboard/
    assert tensorboard_dir(FitConfig(track="tensorboard", track_uri="tb", out="runs/a")) == Path("tb") / "a"
    assert tensorboard_dir(FitConfig(track="tensorboard", out="runs/a")) == Path("runs/a/tensorboard")
    assert re.fullmatch(r"fit-\d{8}-\d{6}", run_name(FitConfig(track="tensorboard")))
    assert tensorboard_dir(FitConfig(track="tensorboard")).parent == Path("tensorboard")
    params = config_params(FitConfig(strategy="finetune", strategy_params={"lr": 1e-3, "unfreeze": ["a", "b"]},
                                     backbone_options={"layer": 3}, text_columns="subject,body"))
    assert params["strategy_params.lr"] == "0.001" and params["strategy_params.unfreeze"] == '["a", "b"]'
    assert params["backbone_options.layer"] == "3" and params["text_columns"] == '["subject", "body"]'
    assert params["test"] == "null" and params["strategy"] == "finetune"
    m = {"test": {"n": 10, "rmse": 1.5, "rmse_ci": [1.0, 2.0], "spearman": float("nan"), "confidence": 0.95,
                  "per_label": {"x": 1.0}, "classes": []},
         "controls": {"mean": {"rmse": 2.5, "rmse_ci": [2.0, 3.0]}},
         "transfer_gain": 1.0, "transfer_gain_ci": [0.5, 1.5], "verdict": "helped"}
    assert final_metrics(m) == {"test/rmse": 1.5, "test/rmse_ci_low": 1.0, "test/rmse_ci_high": 2.0,
                                "controls/mean/rmse": 2.5, "controls/mean/rmse_ci_low": 2.0,
                                "controls/mean/rmse_ci_high": 3.0, "verdict/transfer_gain": 1.0,
                                "verdict/transfer_gain_ci_low": 0.5, "verdict/transfer_gain_ci_high": 1.5}


def test_tracking_costs_no_import_when_off():
    import subprocess

    code = ("import sys, transferkit, transferkit.tracking, transferkit.pipeline\n"
            "sys.exit(3 if {'mlflow', 'tensorboard', 'torch.utils.tensorboard'} & set(sys.modules) else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(Path(__file__).parent.parent), capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr or "importing transferkit imported a tracker's library"


def test_a_fit_that_fails_closes_its_mlflow_run_as_failed(tmp_path, monkeypatch):
    MlflowClient = pytest.importorskip("mlflow.tracking").MlflowClient
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    cfg = FitConfig(track="mlflow", track_uri=str(tmp_path / "mlruns"), strategy="finetune", model="m")
    with pytest.raises(UserInputError, match="bad data"):
        with FitTracking.open(cfg) as tracking:
            tracking.start(cfg)
            tracking.log({"train/loss": 0.5}, 1)
            raise UserInputError("bad data")
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("transferkit").experiment_id])
    assert run.info.status == "FAILED" and run.data.metrics == {"train/loss": 0.5}
    assert "verdict" not in run.data.tags
