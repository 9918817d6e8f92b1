"""Distillation beyond the labelled items: unlabelled data, text views, feature matching, a step
budget (tiny random models: fast)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import transferkit as tk
from transferkit.cli import main
from transferkit.data.dataset import Dataset
from transferkit.distill import Distillation, distill
from transferkit.distill_set import build_set, text_views
from transferkit.errors import UserInputError
from transferkit.strategies.base import TransferContext

from conftest import toy_texts


def _write(path, rows, header=("text", "label")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture()
def teacher_run(tiny_text_dir, tmp_path):
    texts, labels = toy_texts(15)
    data = _write(tmp_path / "toy.csv", zip(texts, labels))
    out = tmp_path / "teacher"
    tk.fit(data=str(data), model=str(tiny_text_dir), out=str(out), control=False, log=None)
    return out, texts


def test_text_views_are_distinct_windows_or_sentence_drops():
    text = "Win a prize now. Click the link below! Offer ends today.\nReply to claim your cash prize soon."
    words = text.split()
    views = text_views(text, 6, np.random.default_rng(0))
    assert 2 <= len(views) <= 6 and len(set(views)) == len(views) and text not in views
    sentences = ["Win a prize now.", "Click the link below!", "Offer ends today.",
                 "Reply to claim your cash prize soon."]
    kinds = []
    for v in views:  # a contiguous run of the text's words, or whole sentences in order with some dropped
        n = len(v.split())
        if any(words[i:i + n] == v.split() for i in range(len(words) - n + 1)):
            kinds.append("window")
        else:
            kept = v.split("\n")
            assert kept == [s for s in sentences if s in kept] and 1 <= len(kept) < 4
            kinds.append("sentences")
    assert set(kinds) == {"window", "sentences"}
    assert views == text_views(text, 6, np.random.default_rng(0))  # seeded
    assert text_views("too short to cut", 4, np.random.default_rng(0)) == []


def test_distill_learns_from_unlabelled_items_and_views_with_feature_matching(teacher_run, tmp_path):
    run, texts = teacher_run
    new, _ = toy_texts(10, seed=7)
    # two test items of the teacher's split and one training item: left out of the student's set
    from transferkit.runs import recreate_splits

    train, test, _ = recreate_splits(run)
    unl = _write(tmp_path / "unlabelled.csv", [(t,) for t in new + test.inputs[:2] + train.inputs[:1]], ("text",))
    logs: list[str] = []
    r = distill(run, tmp_path / "student", unlabelled=str(unl), text_views=1, feature_weight=1.0, steps=12,
                batch_size=8, speed_items=4, speed_repeats=1, log=logs.append)
    items = r["distillation_items"]
    n_new = len(set(new) - set(train.inputs) - set(test.inputs))
    assert items["labelled"] == 24 and items["unlabelled"] == n_new and items["unlabelled_dropped"] == 20 - n_new + 3
    assert items["views"] > 0  # toy texts of 8 words or more get one
    assert any("left out" in m for m in logs)
    s = r["settings"]
    assert s["steps"] == 12 and s["steps_run"] == 12 and s["feature_weight"] == 1.0 and s["text_views"] == 1
    student = tk.load(tmp_path / "student")  # the projection is not part of the student
    assert student.predict(["a new text"])[0] in ("ham", "spam")
    card = json.loads((tmp_path / "student" / "model_card.json").read_text())
    assert card["distillation"]["unlabelled"] == str(unl)


def test_split_keeps_views_of_validation_items_out_of_training():
    texts, labels = toy_texts(80)
    texts = [f"{t} {i}" for i, t in enumerate(texts)]  # 160 distinct texts
    views = [t + " again" for t in texts]  # one "view" per labelled item
    ds = Dataset(modality="text", inputs=texts + views + ["an unlabelled one"], labels=labels + labels + ["ham"])
    h = ds.content_hashes()
    sources = {h[160 + i]: h[i] for i in range(160)} | {h[320]: None}
    s = Distillation(teacher_proba={}, unlabelled=sources, val_fraction=0.25)
    ctx = TransferContext(backbone=None, features=None, seed=0)
    fit, val = s._split(ds, ctx)
    assert val is not None and len(val) == 40 and all(i < 160 for i in val) and 320 in fit
    assert sorted(fit + val + [160 + i for i in val]) == list(range(321))  # views of validation items: nowhere
    _, plain_val = Distillation(teacher_proba={}, val_fraction=0.25)._split(ds.subset(range(160)), ctx)
    assert sorted(val) == sorted(plain_val)  # the labelled items split as without the others


def test_loss_trains_labels_only_where_there_are_labels_and_matches_features():
    s = Distillation(teacher_proba={}, temperature=2.0, alpha=0.4, teacher_features={}, feature_weight=0.5)
    soft = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    s._soft = soft
    s._labelled = torch.tensor([True, False, True])
    logits, y = torch.tensor([[1.0, -1.0], [0.5, 0.2], [-0.3, 0.3]]), torch.tensor([0, 1, 1])
    kd = F.kl_div(F.log_softmax(logits / 2, 1), soft, reduction="batchmean") * 4
    ce = F.cross_entropy(logits[[0, 2]], y[[0, 2]]) * 2 / 3  # mean over the batch, 0 for the unlabelled item
    got = s._task_loss(logits, np.array([0, 1, 2]), y)
    assert float(got) == pytest.approx(float(0.6 * kd + 0.4 * ce), rel=1e-6)
    s._proj = torch.nn.Linear(3, 2)
    s._tfeat = torch.randn(3, 2)
    s._seen = torch.randn(3, 3)
    with torch.no_grad():
        cos = F.cosine_similarity(s._proj(s._seen), s._tfeat, dim=1)
        got = s._task_loss(logits, np.array([0, 1, 2]), y)
    assert float(got) == pytest.approx(float(0.6 * kd + 0.4 * ce + 0.5 * (1 - cos).mean()), rel=1e-5)


def test_bad_distillation_options_are_refused_with_a_hint(teacher_run, tmp_path, capsys):
    run, _ = teacher_run
    out = str(tmp_path / "s")
    with pytest.raises(UserInputError, match="not both") as e:
        distill(run, out, steps=10, epochs=2)
    assert e.value.hint
    for kw, what in (({"steps": 0}, "steps"), ({"text_views": -1}, "text views"),
                     ({"feature_weight": -1.0}, "feature weight")):
        with pytest.raises(UserInputError, match=what) as e:
            distill(run, out, **kw)
        assert e.value.hint
    assert main(["distill", str(run), "--out", out, "--unlabelled", str(tmp_path / "nope.csv")]) == 2
    err = capsys.readouterr().err
    assert "nope.csv" in err and "does not exist" in err
    images = Dataset(modality="image", inputs=[np.zeros((8, 8), np.uint8)] * 2, labels=["a", "b"])
    with pytest.raises(UserInputError, match="text views") as e:  # refused before the teacher runs
        build_set(None, images, images, views=1)
    assert "augments images" in e.value.hint
    empty = _write(tmp_path / "empty.csv", [], ("text",))
    assert main(["distill", str(run), "--out", out, "--unlabelled", str(empty)]) == 2
    assert "empty.csv" in capsys.readouterr().err


def test_the_budget_is_in_steps_with_a_floor_and_enough_epochs_to_hold_them():
    from transferkit.distill import STEPS, _schedule

    epochs, steps = _schedule(960, 320, None, None, 16, {})  # 320 labelled + 640 views
    assert steps == STEPS and epochs * ((960 - 64) // 16) >= STEPS  # even with 20% held out
    epochs, steps = _schedule(1000, 1000, None, None, 16, {})  # 3 passes over 1000 items are more
    assert steps == 3 * 63 and epochs >= 3
    assert _schedule(100, 100, 7, None, 16, {}) == (2, 7)
    assert _schedule(100, 100, None, 4, 16, {"max_steps": 9}) == (4, 9)  # epochs as asked
