"""``transferkit pretrain``: continued self-supervised pre-training, written as a run that
``fit --model RUN`` takes as its backbone."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import transferkit as tk
from transferkit.backbones import get_backbone
from transferkit.cli import main
from transferkit.data import Dataset
from transferkit.errors import UserInputError
from transferkit.pretrain import pretrain
from transferkit.pretraining import MaskedLM, info_nce

from conftest import toy_texts


def _corpus(tmp_path, n: int = 12):
    texts = toy_texts(n, seed=7)[0] + ["", "   "] + toy_texts(n, seed=7)[0][:3]  # 2 empty, 3 duplicates
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def _eval(tmp_path):
    texts, labels = toy_texts(10, seed=8)
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)))
    return path


def test_info_nce_prefers_matching_views():
    z = torch.randn(6, 8)
    assert info_nce(z, z, 0.1) < info_nce(z, torch.randn(6, 8), 0.1)


def test_mlm_head_is_tied_to_the_input_embeddings(tiny_text_dir):
    bb = get_backbone(str(tiny_text_dir))
    obj = MaskedLM(bb)
    assert obj.head.predictions.decoder.weight is bb.module.get_input_embeddings().weight
    loss = obj.loss(bb, ["free cash prize now winner", "project meeting agenda minutes review"] * 4)
    assert torch.isfinite(loss) and loss > 0


@pytest.mark.parametrize("objective", ["mlm", "simcse"])
def test_pretrain_writes_a_run_that_fit_takes_as_its_backbone(tiny_text_dir, tmp_path, objective):
    out = tmp_path / f"enc-{objective}"
    m = pretrain(_corpus(tmp_path), model=str(tiny_text_dir), out=out, objective=objective,
                             text_columns="text", max_steps=4, batch_size=4, lr=1e-3, eval_data=_eval(tmp_path),
                             log=None, progress=False)
    p = m["pretrain"]
    assert p["steps"] == 4 and len(p["loss_curve"]) == 4 and all(np.isfinite(p["loss_curve"]))
    c = p["corpus"]
    assert c["n_items"] == 27 and c["duplicates"] == 3 and sum(c["left_out"].values()) == 2 and c["hash"]
    e = m["eval"]
    assert e["verdict"] in ("helped", "no-difference", "hurt") and "accuracy_ci" in e["original"]
    assert len(e["gain_ci"]) == 2 and "Continued pre-training" in e["explanation"]
    card = json.loads((out / "model_card.json").read_text())
    assert card["pretrain"]["objective"] == objective and card["data"]["corpus_hash"] == c["hash"]
    # the encoder changed and `fit --model RUN` uses it
    texts = toy_texts(2, seed=9)[0]
    run_bb, plain = get_backbone(str(out)), get_backbone(str(tiny_text_dir))
    assert not np.allclose(run_bb.embed(texts).numpy(), plain.embed(texts).numpy(), atol=1e-4)
    child = tk.fit(train=Dataset(modality="text", inputs=toy_texts(8)[0], labels=toy_texts(8)[1]), model=str(out),
                   out=str(tmp_path / "child"), control=False, select=False, log=None)
    assert child.card["lineage"]["parent"]["pretrain"] == objective
    with pytest.raises(UserInputError, match="pretrain` run"):
        tk.load(out)


def test_pretrain_resumes_and_refuses(tiny_text_dir, tmp_path):
    corpus = _corpus(tmp_path)
    out = tmp_path / "enc"
    args = ["pretrain", "--data", str(corpus), "--text-column", "text", "--model", str(tiny_text_dir), "--out",
            str(out), "--max-steps", "2", "--batch-size", "4", "--checkpoint-every", "1"]
    assert main(args) == 0
    assert not (out / "checkpoints").exists()  # removed once the run is written
    # a run killed mid-way resumes from its checkpoint: the loop's own resume, seen through the loss curve
    first = json.loads((out / "metrics.json").read_text())["pretrain"]["loss_curve"]
    assert main(args + ["--no-resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["pretrain"]["loss_curve"] == first  # seeded: the same
    with pytest.raises(UserInputError, match="does not pre-train on text"):
        pretrain(corpus, model=str(tiny_text_dir), out=tmp_path / "x", objective="simclr",
                             text_columns="text", log=None)


def test_simclr_on_efficientnet_keeps_the_pretrained_batchnorm_statistics(tmp_path):
    """EfficientNet-Lite0 (offline weights) at 32 px: the weights train, BatchNorm's running statistics
    stay the pre-trained ones (re-estimating them on the corpus was measured to ruin the features)."""
    rng = np.random.default_rng(0)
    ds = tk.from_arrays(rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8), None)
    m = pretrain(ds, model="efficientnet-lite0", out=tmp_path / "img", max_steps=2, batch_size=4,
                 backbone_options={"image_size": 32}, log=None, progress=False)
    assert m["pretrain"]["objective"] == "simclr" and m["pretrain"]["steps"] == 2
    assert m["pretrain"]["batchnorm_layers_kept"] > 0
    run_bb = get_backbone(str(tmp_path / "img"))
    plain = get_backbone("efficientnet-lite0", image_size=32)
    assert run_bb.modality == "image" and run_bb.cache_key() != plain.cache_key()
    own, base = run_bb.module.state_dict(), plain.module.state_dict()
    means = [k for k in own if k.endswith("running_mean")]
    assert means and all(torch.equal(own[k], base[k]) for k in means)
    assert any(not torch.equal(own[k], base[k]) for k in own if k.endswith("weight"))
