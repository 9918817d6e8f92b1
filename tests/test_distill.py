"""``transferkit distill``: a student on a run's soft labels (tiny models: fast)."""
from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import transferkit as tk
from transferkit.cli import main
from transferkit.distill import Distillation
from transferkit.runs import recreate_splits

from conftest import toy_texts


@pytest.fixture()
def teacher_run(tiny_text_dir, tmp_path):
    texts, labels = toy_texts(15)
    data = tmp_path / "toy.csv"
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    out = tmp_path / "teacher"
    tk.fit(data=str(data), model=str(tiny_text_dir), out=str(out), control=False, log=None)
    return out, data


def test_distill_writes_a_loadable_student_with_the_comparison(teacher_run, tiny_text_dir, tmp_path, capsys):
    run, _ = teacher_run
    out = tmp_path / "student"
    assert main(["distill", str(run), "--out", str(out), "--epochs", "2"]) == 0
    r = json.loads((out / "distillation.json").read_text())
    assert r["student"]["name"] == f"{tiny_text_dir}@1"  # half of the teacher's 2 blocks
    assert r["student"]["parameters"] < r["teacher"]["parameters"]
    assert 0 <= r["agreement"] <= 1 and r["speedup"] > 0 and r["n_test"] == 6
    card = json.loads((out / "model_card.json").read_text())
    assert card["distilled_from"]["run"] == str(run) and card["strategy"]["name"] == "finetune"
    student = tk.load(out)
    assert len(student.backbone.module.encoder.layer) == 1
    assert student.predict(["a new text"])[0] in ("ham", "spam")
    assert "teacher" in (out / "report.html").read_text()
    # a complete run: its config rebuilds the teacher's split, its drift reference feeds the server
    config = json.loads((out / "config.json").read_text())
    assert config["command"] == "distill" and config["config"]["data"] == str(run.parent / "toy.csv")
    assert card["drift_reference"]["n"] == 24 and (out / "reference_features.npy").is_file()
    assert card["lineage"]["parent"]["run"] == str(run)
    parent_sha = hashlib.sha256((run / "model_card.json").read_bytes()).hexdigest()
    assert card["lineage"]["parent"]["card_sha256"] == parent_sha
    train, test, _ = recreate_splits(out)
    assert len(train) == 24 and len(test) == 6
    from transferkit.serve.predictor import Predictor

    assert Predictor(out).reference.shape == (24, 32)  # the student's server monitors drift


def test_distillation_loss_is_hinton_kd():
    s = Distillation(teacher_proba={}, temperature=2.0, alpha=0.3)
    s._soft = torch.tensor([[0.9, 0.1], [0.2, 0.8]]) ** 0.5
    s._soft = s._soft / s._soft.sum(1, keepdim=True)
    logits, y = torch.tensor([[1.0, -1.0], [0.5, 0.2]]), torch.tensor([0, 1])
    got = s._task_loss(logits, np.array([0, 1]), y)
    kd = (s._soft * (s._soft.log() - F.log_softmax(logits / 2, 1))).sum(1).mean() * 4
    assert float(got) == pytest.approx(float(0.3 * F.cross_entropy(logits, y) + 0.7 * kd), rel=1e-6)


def test_splits_are_rebuilt_and_changed_data_is_refused(teacher_run):
    run, data = teacher_run
    train, test, cfg = recreate_splits(run)
    card = json.loads((run / "model_card.json").read_text())
    assert train.fingerprint() == card["data"]["train_hash"] and len(test) == 6
    with open(data, "a", newline="") as f:
        csv.writer(f).writerow(["one more text", "spam"])
    with pytest.raises(tk.errors.UserInputError, match="changed since the run"):
        recreate_splits(run)


def test_distill_user_errors(teacher_run, tmp_path, capsys):
    run, _ = teacher_run
    assert main(["distill", str(run), "--out", str(run)]) == 2
    assert "its own --out" in capsys.readouterr().err
    assert main(["distill", str(run), "--out", str(tmp_path / "s"), "--student", "efficientnet-lite0"]) in (2, 3)
    assert main(["distill", str(run), "--out", str(tmp_path / "s"), "--temperature", "0.5"]) == 2
    assert "temperature" in capsys.readouterr().err
