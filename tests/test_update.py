"""``transferkit update RUN --target-unlabelled T``: source-free adaptation of a finished run,
written as a new run with lineage; the parent's files never change."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_adabn_backbone import images

import transferkit as tk
from transferkit.backbones import get_backbone
from transferkit.cli import main
from transferkit.data import Dataset
from transferkit.errors import UserInputError
from transferkit.model import TransferModel
from transferkit.runs import RunDir
from transferkit.strategies import get_strategy

from conftest import toy_texts


def _save(ds: Dataset, folder: Path, labelled: bool = False) -> Path:
    """The images as PNG files: flat (unlabelled) or in one folder per class (labelled)."""
    for i, (img, label) in enumerate(zip(ds.inputs, ds.labels)):
        where = folder / label if labelled else folder
        where.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(where / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> dict[str, Path]:
    """A linear-probe run on the pre-trained EfficientNet-Lite0 (offline weights) at 32x32, two colour
    classes; the target domain is the same images inverted."""
    d = tmp_path_factory.mktemp("update")
    run = d / "parent"
    tk.fit(train=images(8, 0), test=images(5, 2), model="efficientnet-lite0", backbone_options={"image_size": 32},
           out=str(run), control=False, select=False, log=None)
    return {"run": run, "target": _save(images(6, 1, invert=True), d / "target"),
            "test": _save(images(5, 2, invert=True), d / "test", labelled=True), "dir": d}


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_update_writes_a_new_run_with_lineage_and_leaves_the_parent_untouched(parent):
    before = _hashes(parent["run"])
    out = parent["dir"] / "adabn"
    model = tk.update(parent["run"], out=out, target_unlabelled=parent["target"], strategy="adabn",
                      test=parent["test"], log=None)
    assert _hashes(parent["run"]) == before
    card = json.loads((out / "model_card.json").read_text())
    pcard_bytes = (parent["run"] / "model_card.json").read_bytes()
    lineage = card["lineage"]
    assert lineage["command"] == "update" and lineage["parent"]["run"] == str(parent["run"])
    assert lineage["parent"]["card_sha256"] == hashlib.sha256(pcard_bytes).hexdigest()
    assert lineage["parent"]["weights_sha256"] == json.loads(pcard_bytes)["weights"]["sha256"]
    assert card["strategy"]["name"] == "adabn" and card["data"]["n_target"] == 12
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["test"]) >= {"accuracy", "accuracy_ci"} and m["update"]["verdict"] in ("helped", "no-difference",
                                                                                          "hurt")
    assert m["update"]["parent_test"]["accuracy"] == m["controls"]["parent"]["accuracy"]
    assert m["strategy"]["fit"]["batchnorm_layers"] > 0 and (out / "report.html").is_file()
    assert json.loads((out / "config.json").read_text())["command"] == "update"
    # the new run loads on its own and predicts as the returned model; its head is the parent's
    again, parent_model = tk.load(out), tk.load(parent["run"])
    items = list(images(3, 3, invert=True).inputs)
    np.testing.assert_allclose(again.predict_proba(items), model.predict_proba(items), atol=1e-5)
    np.testing.assert_array_equal(again.strategy.head_weight_, parent_model.strategy.head_weight_)
    saved = again.strategy.state_tensors()
    assert any(k.endswith("running_mean") for k in saved) and all(
        k.startswith("backbone.") or k.startswith("head.") for k in saved)
    assert again.backbone.cache_key() != parent_model.backbone.cache_key()


def test_shot_through_the_command_line_without_a_test_set(parent, capsys):
    out = parent["dir"] / "shot"
    rc = main(["update", str(parent["run"]), "--target-unlabelled", str(parent["target"]), "--strategy", "shot",
               "--param", "epochs=1", "--param", "batch_size=6", "--param", "unfreeze=1", "--out", str(out)])
    assert rc == 0 and "updated run written to" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    fit = m["strategy"]["fit"]
    assert "test" not in m and not (out / "report.html").exists()
    assert len(fit["epochs"]) == 1 and fit["n_target_used"] == 12 and len(fit["trained_groups"]) == 1
    card = json.loads((out / "model_card.json").read_text())
    assert card["prediction_reference"]["n"] == 12  # the target's predictions, with no test set
    again = tk.load(out)
    saved = [k for k in again.strategy.state_tensors() if k.startswith("backbone.")]
    assert saved and not any(k.endswith("running_mean") for k in saved)  # statistics kept (the default)
    assert again.strategy.name == "shot" and set(again.predict(list(images(2, 4, invert=True).inputs))) <= {"blue",
                                                                                                           "red"}


def test_tent_updates_only_normalisation_tensors(parent):
    out = parent["dir"] / "tent"
    tk.update(parent["run"], out=out, target_unlabelled=parent["target"], strategy="tent",
              params={"batch_size": 6}, log=None)
    again = tk.load(out)
    names = {k[len("backbone."):] for k in again.strategy.state_tensors() if k.startswith("backbone.")}
    assert names and all(n.rsplit(".", 1)[-1] in ("weight", "bias", "running_mean", "running_var",
                                                  "num_batches_tracked") for n in names)
    assert all(".bn" in n or "bn" in n.split(".")[-2] for n in names)


def test_refusals_of_the_run_the_strategy_and_the_data(parent, tmp_path):
    common = {"target_unlabelled": parent["target"], "log": None}
    with pytest.raises(UserInputError, match="is not a directory"):
        tk.update(tmp_path / "nowhere", out=tmp_path / "x", **common)
    with pytest.raises(UserInputError, match="lies in the run being updated"):
        tk.update(parent["run"], out=parent["run"] / "sub", **common)
    with pytest.raises(UserInputError, match="adapts without source data.*use one of adabn, tent, shot"):
        tk.update(parent["run"], out=tmp_path / "x", strategy="dann", **common)
    with pytest.raises(UserInputError, match="did you mean"):
        tk.update(parent["run"], out=tmp_path / "x", strategy="shoot", **common)
    with pytest.raises(UserInputError, match="update needs new data"):
        tk.update(parent["run"], out=tmp_path / "x", log=None)
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in toy_texts(3)[0]))
    with pytest.raises(UserInputError, match="holds text items, and the run.s model takes image data"):
        tk.update(parent["run"], out=tmp_path / "x", target_unlabelled=texts, log=None)
    assert not (tmp_path / "x").exists()


def _hand_made_run(folder: Path, backbone_dir: Path, strategy: str, data: Dataset) -> Path:
    """A run of ``strategy`` on the tiny text backbone, written through RunDir as a fit writes one."""
    backbone = get_backbone(str(backbone_dir))
    s = get_strategy(strategy)
    s.fit(data, TransferModel(backbone, s).ctx)
    rd = RunDir(folder)
    weights = rd.write_weights(s.state_tensors(), strategy=strategy, classes=s.classes_)
    rd.write_card({"backbone": {"name": str(backbone_dir), "options": {}, "identity": backbone.identity()},
                   "strategy": {"name": strategy, "params": s.get_params()}, "classes": s.classes_,
                   "task": data.task, "weights": weights})
    return folder


@pytest.mark.parametrize("strategy, task, why", [
    ("prototype", "classification", "ends in a CosineHead, not a linear head"),
    ("zero-shot", "classification", "ends in a CosineHead, not a linear head"),
    ("linear-probe", "regression", "is a regression run"),
])
def test_runs_that_are_not_a_classifier_with_a_linear_head_are_refused(strategy, task, why, tiny_text_dir, tmp_path):
    texts, labels = toy_texts(6)
    ys = labels if task == "classification" else [float(len(t)) for t in texts]
    run = _hand_made_run(tmp_path / "run", tiny_text_dir, strategy, Dataset("text", texts, ys, task=task))
    target = tmp_path / "t.jsonl"
    target.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    with pytest.raises(UserInputError, match=why) as e:
        tk.update(run, out=tmp_path / "new", target_unlabelled=target, load_options={"backbone": str(tiny_text_dir)},
                  log=None)
    assert task != "classification" or "linear-probe, adabn, tent, shot, finetune" in e.value.hint
