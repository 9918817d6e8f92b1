"""Continual learning: ``transferkit update RUN --data D --strategy naive|ewc|lwf|replay|joint``
(issue 19): the pure pieces (accuracy-matrix metrics, the replay memory, EWC, LwF) on hand-made
inputs, then whole updates on a tiny random-init BERT, and one on real weights and digits."""
from __future__ import annotations

import csv
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import transferkit as tk
from transferkit.cli import main
from transferkit.continual import (
    ContinualParams,
    HeadData,
    ReplayMemory,
    continual_metrics,
    distillation_loss,
    ewc_penalty,
    fisher_diagonal,
    initial_head,
    train_head,
)
from transferkit.continual.classes import class_clashes
from transferkit.errors import UserInputError
from transferkit.runs import recreate_splits

WORDS = {"ham": ["meeting", "agenda", "report", "project"], "spam": ["free", "winner", "cash", "prize"],
         "sport": ["goal", "match", "team", "score"], "food": ["pasta", "pizza", "bread", "cheese"],
         "Spam": ["free", "winner", "cash", "prize"], "art": ["paint", "museum", "canvas", "sculpture"],
         "music": ["guitar", "song", "piano", "concert"]}


def _mail(path: Path, classes: list[str], n: int = 12, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for c in classes:
            for _ in range(n):
                w.writerow([" ".join(rng.choice(WORDS[c]) for _ in range(6)), c])
    return path


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


# ----- pure pieces ---------------------------------------------------------------------------------
def test_metrics_of_a_hand_built_accuracy_matrix():
    R = [[0.9, None, None],
         [0.6, 0.8, None],
         [0.5, 0.7, 0.9]]
    m = continual_metrics(R, first=[0, 1, 2])
    assert m["average_accuracy"] == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert m["forgetting_per_set"][0] == pytest.approx(0.4) and m["forgetting_per_set"][1] == pytest.approx(0.1)
    assert m["forgetting_per_set"][2] is None and m["forgetting"] == pytest.approx(0.25)
    assert m["backward_transfer"] == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert m["forward_transfer"] is None  # no row before a set's step was measured
    # forward transfer: the entries just before each set's step, against the baselines
    R2 = [[0.9, 0.3], [0.8, 0.95]]
    m2 = continual_metrics(R2, first=[0, 1], baseline=[0.5, 0.5])
    assert m2["forward_transfer"] == pytest.approx(0.3 - 0.5)
    assert m2["forgetting"] == pytest.approx(0.1) and m2["backward_transfer"] == pytest.approx(-0.1)
    # forgetting is the largest drop from the best earlier accuracy, not from the first one
    m3 = continual_metrics([[0.5], [0.9], [0.6]], first=[0])
    assert m3["forgetting"] == pytest.approx(0.3) and m3["backward_transfer"] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        continual_metrics(R, first=[0, 5, 2])


def _offer(mem: ReplayMemory, counts: dict[str, int], seed: int, start: int = 0) -> None:
    labels = [c for c, n in counts.items() for _ in range(n)]
    ids = [f"item{start + i}" for i in range(len(labels))]
    feats = np.arange(start, start + len(labels), dtype=np.float32)[:, None].repeat(3, 1)
    mem.offer(ids, labels, ids, ids, feats, seed)


def test_replay_memory_is_bounded_class_balanced_and_uniform_within_a_class():
    mem = ReplayMemory(capacity=20)
    _offer(mem, {"a": 50, "b": 5}, seed=0)
    assert len(mem) == 15 and mem.per_class() == {"a": 10, "b": 5}  # b has only 5: it cannot fill its share
    _offer(mem, {"c": 40, "d": 40}, seed=1, start=100)
    assert len(mem) <= 20 and mem.per_class() == {"a": 5, "b": 5, "c": 5, "d": 5}
    assert mem.features.shape == (20, 3)
    for s, f in zip(mem.slots, mem.features):  # features stay aligned with their slots
        assert s["input"] == f"item{int(f[0])}"
    # Algorithm R: over many seeds every item of a class is kept about equally often
    kept = np.zeros(100)
    for seed in range(300):
        m = ReplayMemory(capacity=10)
        _offer(m, {"a": 50}, seed=seed)
        _offer(m, {"a": 50}, seed=seed + 1000, start=50)  # the same class again (domain-incremental)
        for s in m.slots:
            kept[int(s["input"][4:])] += 1
    assert kept[:50].mean() == pytest.approx(kept[50:].mean(), rel=0.15)  # old items not pushed out first
    # written and read back, with a smaller capacity that shrinks at the next offer
    again = ReplayMemory.from_manifest(json.loads(json.dumps(mem.manifest())), mem.features, capacity=8)
    assert again.per_class() == mem.per_class() and again.seen == mem.seen
    _offer(again, {"e": 3}, seed=2, start=500)
    assert len(again) <= 8 and set(again.per_class()) == {"a", "b", "c", "d", "e"}
    with pytest.raises(UserInputError, match="arrays"):
        ReplayMemory(5).offer([np.zeros((2, 2))], ["a"], ["o"], ["h"], np.zeros((1, 3)), 0)
    with pytest.raises(UserInputError):
        ReplayMemory(0)


def _blobs(classes, n=40, d=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = {c: rng.normal(0, 3, d) for c in range(10)}
    X = np.concatenate([centres[c] + rng.normal(0, 1, (n, d)) for c in classes]).astype(np.float32)
    return X, np.repeat(classes, n).astype(np.int64)


def _old_head(X, y, C_old):
    head = initial_head(np.zeros((C_old, X.shape[1]), np.float32), np.zeros(C_old, np.float32), C_old)
    train_head(head, HeadData(X, y), "naive", ContinualParams(epochs=40), seed=0)
    return head


def test_ewc_fisher_is_nonzero_and_the_penalty_reduces_drift():
    X0, y0 = _blobs([0, 1])
    old = _old_head(X0, y0, 2)
    fisher = fisher_diagonal(old, torch.as_tensor(X0))
    assert set(fisher) == {"weight", "bias"} and float(fisher["weight"].sum()) > 0
    # the exact true Fisher of a linear softmax head: E_x[p_c (1 - p_c) x_d^2]
    p = torch.softmax(old(torch.as_tensor(X0)), 1).detach()
    expect = ((p * (1 - p))[:, :, None] * torch.as_tensor(X0)[:, None, :] ** 2).mean(0)
    torch.testing.assert_close(fisher["weight"], expect, rtol=1e-4, atol=1e-6)
    anchor = {k: v.detach().clone() for k, v in old.named_parameters()}
    X1, y1 = _blobs([2, 3], seed=1)
    drift = {}
    for strategy in ("naive", "ewc"):
        head = initial_head(old.weight.detach().numpy(), old.bias.detach().numpy(), 4)
        assert float(ewc_penalty(head, anchor, fisher).detach()) == 0.0  # at the anchor; the new rows are free
        info = train_head(head, HeadData(X1, y1, fisher=fisher, anchor=anchor), strategy,
                          ContinualParams(epochs=30, ewc_lambda=100.0), seed=0)
        drift[strategy] = float(ewc_penalty(head, anchor, fisher).detach())
        if strategy == "ewc":
            assert info["last_ewc_penalty"] > 0
    assert drift["ewc"] < 0.5 * drift["naive"]


def test_lwf_distillation_keeps_the_old_outputs_closer():
    z = torch.randn(8, 3)
    assert float(distillation_loss(torch.cat([z, torch.randn(8, 2)], 1), z)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(torch.randn(8, 5), z)) > 0
    with pytest.raises(ValueError):
        distillation_loss(torch.randn(8, 2), z)
    X0, y0 = _blobs([0, 1])
    old = _old_head(X0, y0, 2)
    X1, y1 = _blobs([2, 3], seed=1)
    with torch.no_grad():
        old_logits = old(torch.as_tensor(X1)).numpy()
        old_on_old = torch.softmax(old(torch.as_tensor(X0)), 1)
    gap = {}
    for strategy in ("naive", "lwf"):
        head = initial_head(old.weight.detach().numpy(), old.bias.detach().numpy(), 4)
        train_head(head, HeadData(X1, y1, old_logits=old_logits), strategy, ContinualParams(epochs=30, lwf_lambda=5.0),
                   seed=0)
        with torch.no_grad():
            now = torch.softmax(head(torch.as_tensor(X0))[:, :2], 1)
        gap[strategy] = float((now - old_on_old).abs().mean())
    assert gap["lwf"] < gap["naive"]


def test_class_clashes_are_found():
    c = class_clashes(["ham", "spam"], ["Spam ", "ham"])
    assert c["case"] == [["spam", "Spam "]] and c["vanished"] == ["spam"]
    assert class_clashes(["ham", "spam"], ["sport", "food"]) == {"case": [], "vanished": []}


# ----- whole updates on a tiny random-init BERT ----------------------------------------------------------
@pytest.fixture(scope="module")
def lineage(tiny_text_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("continual")
    tk.fit(data=str(_mail(d / "a.csv", ["ham", "spam"])), model=str(tiny_text_dir), out=str(d / "p"), control=False,
           select=False, log=None)
    return {"dir": d, "parent": d / "p", "b": _mail(d / "b.csv", ["sport", "food"], seed=1),
            "c": _mail(d / "c.csv", ["art", "music"], seed=2)}


def test_class_incremental_replay_extends_the_head_keeps_old_classes_and_carries_the_memory(lineage):
    d, parent = lineage["dir"], lineage["parent"]
    before = _hashes(parent)
    old = tk.load(parent)
    model = tk.update(parent, out=d / "r1", data=lineage["b"], strategy="replay", memory=10, log=None)
    assert _hashes(parent) == before  # the parent is only read
    assert model.classes == ["ham", "spam", "food", "sport"]  # old classes keep their outputs, new ones appended
    W = model.strategy.head_weight_
    assert W.shape[0] == 4 and W.shape[1] == old.strategy.head_weight_.shape[1]
    m = json.loads((d / "r1" / "metrics.json").read_text())
    c = m["continual"]
    assert c["test_sets"] == ["step 0 test", "step 1 test"] and len(c["accuracy_matrix"]) == 2
    assert all(v is not None for v in c["accuracy_matrix"][0]) and c["accuracy_matrix"][0][1] == 0.0  # unseen classes
    assert {"average_accuracy", "forgetting", "backward_transfer", "forward_transfer"} <= set(c)
    assert set(m["test"]["per_class"]) == {"ham", "spam", "food", "sport"}  # test.accuracy over all classes so far
    assert m["update"]["scenario"] == "class-incremental" and c["verdict"]["against"] == "naive"
    mem = json.loads((d / "r1" / "memory.json").read_text())
    assert mem["n"] <= 10 and set(mem["per_class"]) == {"ham", "spam", "food", "sport"}
    assert max(mem["per_class"].values()) - min(mem["per_class"].values()) <= 1
    assert all(isinstance(s["input"], str) and s["origin"] for s in mem["slots"])
    card = json.loads((d / "r1" / "model_card.json").read_text())
    assert card["lineage"]["parent"]["run"] == str(parent) and card["update"]["mode"] == "continual"
    assert (d / "r1" / "report.html").read_text().count("Continual learning") >= 1
    train, test, _ = recreate_splits(d / "r1")  # its config.json rebuilds this step's split (hashes checked)
    assert len(train) + len(test) == 24 and set(test.classes) == {"food", "sport"}
    # the run loads on its own and predicts as the returned model
    texts = ["goal match team", "free cash prize", "pasta pizza"]
    np.testing.assert_allclose(tk.load(d / "r1").predict_proba(texts), model.predict_proba(texts), atol=1e-5)
    # a second update: the memory and the lineage are carried forward, the matrix grows
    tk.update(d / "r1", out=d / "r2", data=lineage["c"], strategy="replay", log=None)
    mem2 = json.loads((d / "r2" / "memory.json").read_text())
    assert mem2["capacity"] == 10 and mem2["n"] <= 10
    assert set(mem2["per_class"]) == {"ham", "spam", "food", "sport", "art", "music"}
    m2 = json.loads((d / "r2" / "metrics.json").read_text())["continual"]
    assert len(m2["accuracy_matrix"]) == 3 and m2["test_sets"][-1] == "step 2 test"
    assert m2["accuracy_matrix"][1] == c["accuracy_matrix"][1] + [m2["accuracy_matrix"][1][2]]
    assert tk.load(d / "r2").classes == ["ham", "spam", "food", "sport", "art", "music"]


def test_ewc_lwf_joint_naive_and_the_cli(lineage):
    d, parent = lineage["dir"], lineage["parent"]
    for s in ("ewc", "lwf", "joint"):
        tk.update(parent, out=d / s, data=lineage["b"], strategy=s, log=None)
        m = json.loads((d / s / "metrics.json").read_text())
        assert m["update"]["strategy"] == s and len(m["continual"]["accuracy_matrix"]) == 2
    assert "training data" in json.loads((d / "ewc" / "metrics.json").read_text())["update"]["fit"]["fisher_source"]
    assert (d / "ewc" / "fisher.safetensors").is_file()
    joint = json.loads((d / "joint" / "metrics.json").read_text())["update"]["fit"]
    assert joint["n_earlier"] > 0 and joint["n_train"] == joint["n_new"] + joint["n_earlier"]
    out = d / "cli"
    assert main(["update", str(parent), "--data", str(lineage["b"]), "--strategy", "naive", "--eval-old",
                 str(d / "a.csv"), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["continual"]["test_sets"][-1] == f"--eval-old {d / 'a.csv'}" and "naive" not in m["continual"]


def test_clashes_and_bad_updates_are_refused_before_training(lineage, tmp_path, capsys):
    parent = lineage["parent"]
    clash = _mail(tmp_path / "clash.csv", ["Spam", "ham"])
    with pytest.raises(UserInputError, match="only by case"):
        tk.update(parent, out=tmp_path / "x", data=clash, strategy="naive", log=None)
    said = []
    tk.update(parent, out=tmp_path / "y", data=clash, strategy="naive", params={"allow_class_clash": True},
              log=said.append)
    assert any("'Spam'" in s and "two classes" in s for s in said) and any("absent" in s for s in said)
    with pytest.raises(UserInputError, match="differ from the ones this run was trained with"):  # another backbone
        tk.update(parent, out=tmp_path / "v", data=lineage["b"], strategy="naive", log=None,
                  load_options={"backbone": "minilm-l6"})
    with pytest.raises(UserInputError, match="naive, ewc, lwf, replay, joint"):
        tk.update(parent, out=tmp_path / "z", data=lineage["b"], strategy="shot", log=None)
    with pytest.raises(UserInputError, match="one of the two"):
        tk.update(parent, out=tmp_path / "z", data=lineage["b"], target_unlabelled=lineage["b"], log=None)
    images = tmp_path / "imgs"
    for c in ("a", "b"):
        (images / c).mkdir(parents=True)
        for i in range(3):
            from PIL import Image
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(images / c / f"{i}.png")
    with pytest.raises(UserInputError, match="holds image items, and the run's model takes text"):
        tk.update(parent, out=tmp_path / "w", data=images, strategy="naive", log=None)
    assert not (tmp_path / "x").exists() or not (tmp_path / "x" / "model_card.json").exists()


def test_a_finetuned_parent_keeps_its_backbone_and_a_domain_step_keeps_feature_memory(tiny_text_dir, tmp_path):
    """A run whose backbone was fine-tuned: the update trains the head on the tuned backbone's
    features and the new run loads with the same tuned tensors; a same-classes step is
    domain-incremental; a features memory is saved as safetensors and carried forward."""
    a = _mail(tmp_path / "a.csv", ["ham", "spam"])
    tk.fit(data=str(a), model=str(tiny_text_dir), strategy="finetune", out=str(tmp_path / "ft"), control=False,
           select=False, log=None, strategy_params={"max_steps": 2, "val_fraction": 0})
    parent = tk.load(tmp_path / "ft")
    b = _mail(tmp_path / "b.csv", ["ham", "spam"], seed=5)
    model = tk.update(tmp_path / "ft", out=tmp_path / "u", data=b, strategy="replay", memory=6,
                      params={"memory_kind": "features", "epochs": 3}, log=None)
    m = json.loads((tmp_path / "u" / "metrics.json").read_text())
    assert m["update"]["scenario"] == "domain-incremental" and m["update"]["new_classes"] == []
    again = tk.load(tmp_path / "u")
    assert again.strategy.name == "finetune" and again.classes == ["ham", "spam"]
    tuned, kept = parent.strategy.state_tensors(), again.strategy.state_tensors()
    names = [k for k in tuned if not k.startswith("head.")]
    assert names and all(torch.equal(tuned[k], kept[k]) for k in names)  # the tuned backbone, unchanged
    X = torch.as_tensor(parent.ctx.features(parent.as_dataset(["free cash now"])))
    np.testing.assert_allclose(again.ctx.features(again.as_dataset(["free cash now"])), X.numpy(), atol=1e-5)
    texts = ["free cash now", "project meeting agenda"]
    np.testing.assert_allclose(again.predict_proba(texts), model.predict_proba(texts), atol=1e-5)
    assert (tmp_path / "u" / "memory.safetensors").is_file()
    mem = json.loads((tmp_path / "u" / "memory.json").read_text())
    assert mem["kind"] == "features" and mem["n"] == 6 and "input" not in mem["slots"][0]
    tk.update(tmp_path / "u", out=tmp_path / "u2", data=b, strategy="replay", params={"epochs": 3}, log=None)
    mem2 = json.loads((tmp_path / "u2" / "memory.json").read_text())
    assert mem2["kind"] == "features" and mem2["capacity"] == 6 and mem2["seen"]["ham"] > mem["seen"]["ham"]


def test_real_digits_replay_keeps_old_classes_that_naive_forgets(tmp_path):
    """EfficientNet-Lite0 (offline weights) at 32 px on MNIST-5k digits 0-1, then 2-3: replay keeps
    the first step's digits, naive fine-tuning on the new digits alone loses them."""
    import gzip

    from PIL import Image

    from conftest import shared_file

    with gzip.open(shared_file("mnist_5k.csv.gz"), "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
    images, digits = rows[:, :784].reshape(-1, 28, 28).astype(np.uint8), rows[:, 784]
    for name, pair in (("a", (0, 1)), ("b", (2, 3))):
        for d in pair:
            (tmp_path / name / str(d)).mkdir(parents=True)
            for i in np.flatnonzero(digits == d)[:40]:
                Image.fromarray(images[i]).save(tmp_path / name / str(d) / f"{i}.png")
    tk.fit(data=str(tmp_path / "a"), model="efficientnet-lite0", backbone_options={"image_size": 32},
           out=str(tmp_path / "p"), control=False, select=False, log=None)
    tk.update(tmp_path / "p", out=tmp_path / "replay", data=tmp_path / "b", strategy="replay", memory=40, log=None)
    m = json.loads((tmp_path / "replay" / "metrics.json").read_text())["continual"]
    R, naive = m["accuracy_matrix"], m["naive"]["last_row"]
    assert R[0][0] >= 0.9 and R[0][1] == 0.0  # the parent: its digits well, the new ones not at all
    assert R[1][0] >= naive[0] + 0.3 and m["forgetting"] < m["naive"]["forgetting"]
    assert m["verdict"]["verdict"] == "helped"


def test_tune_backbone_trains_the_tuned_tensors_of_a_finetuned_parent(tiny_text_dir, tmp_path):
    a = _mail(tmp_path / "a.csv", ["ham", "spam"])
    tk.fit(data=str(a), model=str(tiny_text_dir), strategy="finetune", out=str(tmp_path / "ft"), control=False,
           select=False, log=None, strategy_params={"max_steps": 2, "val_fraction": 0})
    before = _hashes(tmp_path / "ft")
    parent = tk.load(tmp_path / "ft")
    b = _mail(tmp_path / "b.csv", ["sport", "food"], seed=1)
    model = tk.update(tmp_path / "ft", out=tmp_path / "u", data=b, strategy="ewc",
                      params={"tune_backbone": True, "max_steps": 3, "fisher_items": 4}, log=None)
    assert _hashes(tmp_path / "ft") == before
    m = json.loads((tmp_path / "u" / "metrics.json").read_text())
    fit = m["update"]["fit"]
    assert fit["steps"] == 3 and fit["tuned_backbone_tensors"] > 0 and "one label drawn" in fit["fisher_source"]
    old, new = parent.strategy.state_tensors(), tk.load(tmp_path / "u").strategy.state_tensors()
    tuned = [k for k in old if k.startswith("backbone.")]
    assert tuned and any(not torch.equal(old[k], new[k]) for k in tuned)  # the tuned tensors moved
    assert set(new) == set(old)  # the same tensors saved: the run loads as a finetune run
    texts = ["goal match team", "free cash prize"]
    np.testing.assert_allclose(tk.load(tmp_path / "u").predict_proba(texts), model.predict_proba(texts), atol=1e-5)
    np.testing.assert_allclose(tk.load(tmp_path / "ft").predict_proba(texts), parent.predict_proba(texts), atol=1e-6)
    assert len(m["continual"]["accuracy_matrix"]) == 2 and "naive" in m["continual"]
    with pytest.raises(UserInputError, match="tuned none"):
        tk.update(_probe_run(tmp_path, a, tiny_text_dir), out=tmp_path / "x", data=b, strategy="naive",
                  params={"tune_backbone": True}, log=None)


def _probe_run(tmp_path: Path, data: Path, tiny: Path) -> Path:
    tk.fit(data=str(data), model=str(tiny), out=str(tmp_path / "probe"), control=False, select=False, log=None)
    return tmp_path / "probe"
