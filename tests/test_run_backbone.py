"""``fit --model RUN_DIR``: a finished run's adapted backbone as the starting point of a new fit."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import transferkit as tk
from transferkit.backbones import get_backbone
from transferkit.cli import main
from transferkit.data import Dataset
from transferkit.errors import UserInputError
from transferkit.features import extract_features
from transferkit.runs import RunBackbone

from conftest import shared_file, toy_texts


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def _toy(n: int = 10, seed: int = 0) -> Dataset:
    texts, labels = toy_texts(n, seed)
    return Dataset(modality="text", inputs=texts, labels=labels)


@pytest.fixture(scope="module")
def parent(tiny_text_dir, tmp_path_factory) -> Path:
    """A fine-tuning run of the tiny random BERT (every backbone tensor trained)."""
    out = tmp_path_factory.mktemp("parent") / "ft"
    tk.fit(train=_toy(), model=str(tiny_text_dir), strategy="finetune", strategy_params={"epochs": 2, "lr": 1e-2},
           out=str(out), control=False, select=False, log=None)
    return out


def test_a_fit_starts_from_the_runs_adapted_backbone(parent, tiny_text_dir, tmp_path):
    before = _hashes(parent)
    texts = toy_texts(4, seed=3)[0]
    plain = get_backbone(str(tiny_text_dir))
    run_bb = get_backbone(str(parent))
    assert isinstance(run_bb, RunBackbone) and not run_bb.loaded  # naming it loads nothing
    # the run's fine-tuned tensors are the ones used: features differ from the published backbone's
    # and equal the parent's own model's backbone features
    own = tk.load(parent).backbone
    np.testing.assert_allclose(run_bb.embed(texts).numpy(), own.embed(texts).numpy(), atol=1e-5)
    assert not np.allclose(run_bb.embed(texts).numpy(), plain.embed(texts).numpy(), atol=1e-3)
    # an identity of its own: named by the run, its own weight hash and the parent's lineage
    ident, pid = run_bb.identity(), plain.identity()
    assert ident["name"] == str(parent.resolve()) and ident["weights_sha256"] != pid["weights_sha256"]
    assert ident["start"]["card_sha256"] == hashlib.sha256((parent / "model_card.json").read_bytes()).hexdigest()
    assert run_bb.cache_key() != plain.cache_key()
    # the feature cache keeps them apart
    ds = Dataset(modality="text", inputs=texts)
    f_plain, f_run = extract_features(plain, ds)[0], extract_features(get_backbone(str(parent)), ds)[0]
    assert not np.allclose(f_plain, f_run, atol=1e-3)
    # the control is the same architecture at random, as for the published backbone
    rnd = run_bb.randomized(0)
    assert rnd.init == "random:0" and rnd.cache_key() == plain.randomized(0).cache_key()

    out = tmp_path / "child"
    model = tk.fit(train=_toy(8, 1), test=_toy(4, 2), model=str(parent), out=str(out), select=False, log=None)
    card = json.loads((out / "model_card.json").read_text())
    pcard = (parent / "model_card.json").read_bytes()
    assert card["lineage"]["command"] == "fit"
    p = card["lineage"]["parent"]
    assert p["run"] == str(parent.resolve()) and p["card_sha256"] == hashlib.sha256(pcard).hexdigest()
    assert p["weights_sha256"] == json.loads(pcard)["weights"]["sha256"] and p["model"] == "finetune"
    assert card["backbone"]["identity"]["name"] == str(parent.resolve())
    # the child loads again (its backbone rebuilt from the parent) and predicts the same
    again = tk.load(out)
    assert isinstance(again.backbone, RunBackbone)
    np.testing.assert_allclose(again.predict_proba(texts), model.predict_proba(texts), atol=1e-5)
    assert _hashes(parent) == before  # the parent is never modified


def test_fine_tuning_on_top_of_a_run_keeps_the_parents_tensors_below(parent, tmp_path):
    out = tmp_path / "ft2"
    model = tk.fit(train=_toy(8, 1), test=_toy(4, 2), model=str(parent), strategy="finetune",
                   strategy_params={"epochs": 1, "lr": 1e-3}, out=str(out), control=False, select=False, log=None)
    texts = toy_texts(3, seed=4)[0]
    np.testing.assert_allclose(tk.load(out).predict_proba(texts), model.predict_proba(texts), atol=1e-5)


def test_a_run_refuses_what_it_cannot_be(parent, tiny_text_dir, tmp_path):
    unfinished = tmp_path / "half"
    unfinished.mkdir()
    (unfinished / "config.json").write_text(json.dumps({"transferkit_version": "x", "command": "fit", "config": {}}))
    with pytest.raises(UserInputError, match="model_card.json is missing"):
        get_backbone(str(unfinished))
    with pytest.raises(UserInputError, match="names another network"):
        get_backbone(str(parent), modality="image")
    with pytest.raises(UserInputError, match="takes text data but the data is image"):
        tk.fit(train=tk.from_arrays(np.zeros((8, 8, 8, 3), np.uint8), ["a", "b"] * 4), model=str(parent), log=None)
    # tensors of another architecture than the published backbone the card names
    bb = RunBackbone(parent)
    with pytest.raises(UserInputError, match="another architecture"):
        bb._put(torch.nn.Linear(2, 2), {"backbone.nothing.weight": torch.zeros(1)})


def test_cli_fit_with_a_run_as_model(parent, tmp_path, capsys):
    texts, labels = toy_texts(8, 5)
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in zip(texts, labels)))
    out = tmp_path / "cli"
    assert main(["fit", "--data", str(data), "--model", str(parent), "--out", str(out), "--no-control"]) == 0
    assert json.loads((out / "model_card.json").read_text())["lineage"]["parent"]["run"] == str(parent.resolve())


def test_a_real_run_as_a_backbone(tmp_path):
    """The zoo MiniLM fine-tuned for two epochs on 40 real mails, then a probe on it vs on the
    published encoder: the run's features are the fine-tuned ones."""
    import gzip

    rows = [json.loads(line) for line in gzip.open(shared_file("spamassassin.jsonl.gz"), "rt")]
    rows = [r for r in rows if r["group"] == "spam-1"][:30] + [r for r in rows if r["group"] == "easy-ham-1"][:30]
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    texts = [f"{r['subject']}\n{r['body']}"[:300] for r in rows]
    ds = Dataset(modality="text", inputs=texts[:40], labels=[str(r["label"]) for r in rows[:40]])
    run = tmp_path / "spam"
    tk.fit(train=ds, model="minilm-l6", backbone_options={"max_length": 64}, strategy="finetune",
           strategy_params={"epochs": 1}, out=str(run), control=False, select=False, log=None)
    child = tk.fit(train=ds, test=Dataset(modality="text", inputs=texts[40:], labels=[str(r["label"]) for r in
                                                                                       rows[40:]]),
                   model=str(run), out=str(tmp_path / "child"), control=False, select=False, log=None)
    plain = get_backbone("minilm-l6", max_length=64)
    assert not np.allclose(child.backbone.embed(texts[:2]).numpy(), plain.embed(texts[:2]).numpy(), atol=1e-4)
    assert child.metrics["test"]["accuracy"] >= 0.5


def test_rank_takes_a_run_as_a_candidate(parent, tiny_text_dir):
    from transferkit.ranking import rank

    result = rank(_toy(8, 6), [str(tiny_text_dir), str(parent)], scores=("knn",), log=None)
    names = {json.dumps(r, default=str) for r in result.to_dict()["rows"]}
    assert len(names) == 2 and any(str(parent) in n for n in names)


def test_a_lora_run_gives_its_merged_backbone_and_the_parent_keeps_its_adapters(tiny_text_dir, tmp_path):
    run = tmp_path / "lora"
    tk.fit(train=_toy(), model=str(tiny_text_dir), strategy="lora", strategy_params={"epochs": 2, "lr": 1e-2},
           out=str(run), control=False, select=False, log=None)
    before = _hashes(run)
    texts = toy_texts(3, seed=6)[0]
    parent = tk.load(run)
    parent.strategy.merged_for_export()
    run_bb = get_backbone(str(run))
    np.testing.assert_allclose(run_bb.embed(texts).numpy(), parent.backbone.embed(texts).numpy(), atol=1e-5)
    assert not any("lora" in k for k in run_bb.module.state_dict())  # a plain network: the adapters merged
    assert not np.allclose(run_bb.embed(texts).numpy(), get_backbone(str(tiny_text_dir)).embed(texts).numpy(),
                           atol=1e-4)
    assert _hashes(run) == before
