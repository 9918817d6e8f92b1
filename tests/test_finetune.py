"""``finetune`` on tiny random models: it learns, freezes what it should, keeps frozen BatchNorm
in eval mode, reloads exactly, and gives the adapted backbone an identity of its own."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.backbones import get_backbone
from transferkit.backbones.zoo import EfficientNetLiteBackbone
from transferkit.data import Dataset
from transferkit.errors import UserInputError
from transferkit.model import TransferModel
from transferkit.strategies import finetune as ft_module
from transferkit.strategies.finetune import FineTune
from transferkit.training.augment import ImageAugment, make_augment
from transferkit.training.batchnorm import statistics_frozen

from conftest import toy_texts


def text_sets():
    tx, ly = toy_texts(12)
    tx2, ly2 = toy_texts(10, seed=1)
    return Dataset(modality="text", inputs=tx, labels=ly), Dataset(modality="text", inputs=tx2, labels=ly2)


def image_set(n_per_class: int, seed: int) -> Dataset:
    """Two colour classes of 32x32 noise images: separable, and indifferent to crops and flips."""
    rng = np.random.RandomState(seed)
    items, labels = [], []
    for label, channel in (("blue", 2), ("red", 0)):
        for _ in range(n_per_class):
            img = rng.randint(0, 100, (32, 32, 3)).astype(np.uint8)
            img[..., channel] += 120
            items.append(img)
            labels.append(label)
    return Dataset(modality="image", inputs=items, labels=labels)


def tiny_cnn() -> EfficientNetLiteBackbone:
    return EfficientNetLiteBackbone("efficientnet-lite0", init="random:0", image_size=32)


def accuracy(strategy, data, ctx) -> float:
    return float(np.mean(np.array(strategy.predict(data, ctx)) == np.array(data.labels)))


def test_text_finetune_learns_a_separable_problem(tiny_text_dir):
    train, test = text_sets()
    backbone = get_backbone(str(tiny_text_dir))
    s = FineTune(epochs=8, lr=1e-3, head_lr=1e-2, batch_size=8, val_fraction=0)
    model = TransferModel(backbone, s)
    s.fit(train, model.ctx)
    losses = [h["loss"] for h in s.fit_info()["history"]]
    assert losses[-1] < 0.5 * losses[0]
    assert accuracy(s, test, model.ctx) >= 0.9  # chance is 0.5
    # the module is left as found, apart from its weights
    assert all(p.requires_grad for p in backbone.module.parameters()) and not backbone.module.training


def test_unused_pooler_is_not_a_layer_group_and_unfreeze_k_takes_the_last_k(tiny_text_dir):
    train, _ = text_sets()
    backbone = get_backbone(str(tiny_text_dir))
    pretrained = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    s = FineTune(epochs=1, unfreeze=1, lr=1e-3, val_fraction=0)
    s.fit(train, TransferModel(backbone, s).ctx)
    info = s.fit_info()
    assert info["trained_groups"] == ["encoder.layer.1"]  # not the pooler, which mean pooling never uses
    assert info["frozen_groups"] == ["embeddings", "encoder.layer.0"] and info["unused_parameters"] == 2
    keys = set(s.state_tensors())
    assert keys - {"head.weight", "head.bias"} and all(
        k.startswith("backbone.encoder.layer.1.") for k in keys - {"head.weight", "head.bias"})
    now = backbone.module.state_dict()
    for k, v in pretrained.items():
        assert torch.equal(now[k], v) != k.startswith("encoder.layer.1."), k


def test_identity_changes_after_finetuning_and_reloading_restores_it(tiny_text_dir):
    train, test = text_sets()
    backbone = get_backbone(str(tiny_text_dir))
    pristine = backbone.cache_key()
    s = FineTune(epochs=1, val_fraction=0)
    model = TransferModel(backbone, s)
    s.fit(train, model.ctx)
    assert backbone.cache_key() != pristine and "finetuned:" in json.dumps(backbone.identity())
    fresh = get_backbone(str(tiny_text_dir))
    again = FineTune(**s.get_params()).load_state(s.state_tensors(), s.classes_, fresh)
    assert fresh.cache_key() == backbone.cache_key()
    np.testing.assert_allclose(again.predict_proba(test, TransferModel(fresh, again).ctx),
                               s.predict_proba(test, model.ctx), atol=1e-6)


def test_load_state_is_strict_about_names_and_shapes(tiny_text_dir):
    train, _ = text_sets()
    s = FineTune(epochs=1, val_fraction=0)
    s.fit(train, TransferModel(get_backbone(str(tiny_text_dir)), s).ctx)
    tensors = s.state_tensors()
    bad = dict(tensors, **{"backbone.no.such.weight": torch.zeros(2)})
    with pytest.raises(UserInputError, match="no.such.weight"):
        FineTune().load_state(bad, s.classes_, get_backbone(str(tiny_text_dir)))
    with pytest.raises(UserInputError, match="head"):
        FineTune().load_state(tensors, ["a", "b", "c"], get_backbone(str(tiny_text_dir)))


def test_partial_unfreeze_of_a_cnn_keeps_frozen_batchnorm_in_eval_mode(monkeypatch):
    seen = {}
    real_train = ft_module.train

    def spying_train(model, training_step, *args, **kw):
        def step(idx):
            if not seen:  # at the first step, inside the loop: modes as the loop set them
                seen["bn"] = {n: m.training for n, m in model.named_modules()
                              if isinstance(m, nn.BatchNorm2d)}
                seen["grad"] = {n: p.requires_grad for n, p in model.named_parameters()}
            return training_step(idx)
        return real_train(model, step, *args, **kw)

    monkeypatch.setattr(ft_module, "train", spying_train)
    backbone = tiny_cnn()
    stages = backbone.module.stages()
    before = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    s = FineTune(epochs=1, unfreeze=2, lr=1e-3, batch_size=8, val_fraction=0)
    s.fit(image_set(8, 0), TransferModel(backbone, s).ctx)
    assert s.fit_info()["trained_groups"] == ["stage7", "stage8"]

    names = {id(m): n for n, m in backbone.module.named_modules()}
    for i, stage in enumerate(stages):
        for m in stage.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert seen["bn"][f"backbone.{names[id(m)]}"] == (i >= 7), (i, names[id(m)])
                key = f"{names[id(m)]}.running_mean"
                moved = not torch.equal(backbone.module.state_dict()[key], before[key])
                assert moved == (i >= 7)  # frozen statistics stay put; trained ones move
    assert all(p.requires_grad for p in backbone.module.parameters())  # flags restored after fit
    trainable = {n for n, g in seen["grad"].items() if g}
    assert "head.weight" in trainable and not any(n.startswith("backbone._fc") for n in trainable)
    stage_of = {id(p): i for i, st in enumerate(stages) for p in st.parameters()}
    for n, p in backbone.module.named_parameters():
        if id(p) in stage_of:
            assert seen["grad"][f"backbone.{n}"] == (stage_of[id(p)] >= 7), n
            assert torch.equal(p.detach(), before[n]) == (stage_of[id(p)] < 7), n


def test_cnn_finetune_learns_and_reloads_with_the_same_predictions():
    train, test = image_set(16, 0), image_set(8, 1)
    backbone = tiny_cnn()
    s = FineTune(epochs=4, unfreeze=3, lr=1e-3, head_lr=1e-2, batch_size=16, val_fraction=0)
    model = TransferModel(backbone, s)
    s.fit(train, model.ctx)
    assert accuracy(s, test, model.ctx) >= 0.9
    tensors = s.state_tensors()
    assert not any(k.startswith("backbone._fc") or k.startswith("backbone._conv_stem") for k in tensors)
    fresh = tiny_cnn()
    again = FineTune(**s.get_params()).load_state(tensors, s.classes_, fresh)
    assert fresh.cache_key() == backbone.cache_key() != tiny_cnn().cache_key()
    np.testing.assert_allclose(again.predict_proba(test, TransferModel(fresh, again).ctx),
                               s.predict_proba(test, model.ctx), atol=1e-6)


def test_checkpoints_go_where_the_context_says_and_a_rerun_resumes(tiny_text_dir, tmp_path):
    train, test = text_sets()

    def fit(**ctx_fields):
        s = FineTune(epochs=2, batch_size=8, checkpoint_every=1)
        model = TransferModel(get_backbone(str(tiny_text_dir)), s)
        for k, v in ctx_fields.items():
            setattr(model.ctx, k, v)
        s.fit(train, model.ctx)
        return s, s.predict_proba(test, model.ctx)

    first, p1 = fit(checkpoint_dir=tmp_path / "ck")
    assert len(list((tmp_path / "ck").glob("ckpt-*/manifest.json"))) == 2
    again, p2 = fit(checkpoint_dir=tmp_path / "ck")
    assert again.fit_info()["resumed_from"] == first.fit_info()["steps"]
    np.testing.assert_array_equal(p1, p2)
    over, _ = fit(checkpoint_dir=tmp_path / "ck", resume=False)
    assert over.fit_info()["resumed_from"] is None


@pytest.mark.parametrize("params, match", [
    ({"epochs": 0}, "epochs"), ({"lr": 2.0}, "lr"), ({"unfreeze": -1}, "unfreeze"),
    ({"unfreeze": "some"}, "unfreeze"), ({"layer_decay": 0}, "layer_decay"), ({"schedule": "linear"}, "schedule"),
    ({"val_fraction": 0.9}, "val_fraction"), ({"patience": 0}, "patience"), ({"warmup": 1.5}, "warmup"),
    ({"nonfinite": "ignore"}, "nonfinite"), ({"augment": {"zoom": 2}}, "zoom"), ({"clip": 0}, "clip"),
    ({"scratch_lr": 0}, "scratch_lr"), ({"scratch_lr": "fast"}, "scratch_lr"),
])
def test_bad_hyperparameters_are_refused_at_construction(params, match):
    with pytest.raises(UserInputError, match=match):
        FineTune(**params)


def test_unknown_or_too_many_groups_are_refused_at_fit(tiny_text_dir):
    train, _ = text_sets()
    for params, match in (({"unfreeze": ["encoder.layer.9"]}, "encoder.layer.9"), ({"unfreeze": 7}, "only 3")):
        s = FineTune(**params)
        with pytest.raises(UserInputError, match=match) as err:
            s.fit(train, TransferModel(get_backbone(str(tiny_text_dir)), s).ctx)
        assert "embeddings" in str(err.value)  # the hint lists the groups there are


def test_image_augment_keeps_shapes_and_is_seeded():
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    a = ImageAugment()(x)
    torch.manual_seed(0)
    assert a.shape == x.shape and torch.equal(a, ImageAugment()(x)) and not torch.equal(a, x)
    assert torch.equal(ImageAugment(crop_scale=(1, 1), flip=False)(x), x)
    assert make_augment(None, "text") is None and make_augment(None, "image") is not None
    with pytest.raises(UserInputError, match="crop_scale"):
        make_augment({"crop_scale": [0.5, 2]}, "image")


def test_finetune_walks_the_pipeline_with_its_random_init_control(tiny_text_dir, tmp_path):
    import transferkit as tk

    texts, labels = toy_texts(10)
    out = tmp_path / "run"
    model = tk.fit(train=Dataset(modality="text", inputs=texts, labels=labels), model=str(tiny_text_dir),
                   strategy="finetune", strategy_params={"epochs": 2, "lr": 1e-3}, out=str(out), log=None)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["controls"]) == {"random-init", "tfidf-logreg"}
    assert metrics["strategy"]["fit"]["steps"] == 2 and metrics["strategy"]["params"]["epochs"] == 2
    card = json.loads((out / "model_card.json").read_text())
    assert "finetuned:" in json.dumps(card["backbone"]["identity"])
    again = tk.load(out)
    np.testing.assert_allclose(again.predict_proba(texts[:4]), model.predict_proba(texts[:4]), atol=1e-6)
    assert again.backbone.cache_key() == model.backbone.cache_key()


@pytest.mark.parametrize("mode, init, moves", [("frozen", "random:0", False), ("train", "random:0", True),
                                               ("auto", "random:0", True), ("auto", "pretrained", False)])
def test_batchnorm_statistics_follow_the_option(monkeypatch, mode, init, moves):
    """Pre-trained statistics are kept by default (a few batches would replace ImageNet's);
    a random-init network (the control) trains them, since its initial ones mean nothing."""
    backbone = tiny_cnn()
    if init == "pretrained":  # same architecture; pretend its (random) weights were pre-trained
        monkeypatch.setattr(backbone, "init", "pretrained")
    before = {k: v.clone() for k, v in backbone.module.state_dict().items() if k.endswith("running_mean")}
    s = FineTune(epochs=1, lr=1e-3, batch_size=8, val_fraction=0, batchnorm=mode)
    s.fit(image_set(8, 0), TransferModel(backbone, s).ctx)
    after = backbone.module.state_dict()
    moved = [k for k in before if not torch.equal(after[k], before[k])]
    assert bool(moved) == moves
    assert s.fit_info()["batchnorm_statistics"] == ("trained and re-estimated" if moves else "frozen (pre-trained)")
    assert not any(statistics_frozen(m) for m in backbone.module.modules())  # released after the fit


def test_batchnorm_option_is_checked():
    with pytest.raises(UserInputError, match="batchnorm must be"):
        FineTune(batchnorm="sometimes")


@pytest.mark.parametrize("init, scratch_lr", [("random:0", 1e-3), ("random:0", None), ("pretrained", 1e-3)])
def test_a_random_init_backbone_trains_from_scratch_at_one_rate(monkeypatch, init, scratch_lr):
    """The random-init control is not handicapped by rates meant to protect pre-trained weights:
    every group and the head train at ``scratch_lr``; pre-trained weights keep the decaying rates."""
    backbone = tiny_cnn()
    if init == "pretrained":
        monkeypatch.setattr(backbone, "init", "pretrained")
    s = FineTune(epochs=1, lr=1e-4, head_lr=5e-3, layer_decay=0.5, batch_size=8, val_fraction=0,
                 scratch_lr=scratch_lr)
    s.fit(image_set(8, 0), TransferModel(backbone, s).ctx)
    rates = s.fit_info()["lr_by_group"]
    groups = [v for k, v in rates.items() if k != "head"]
    if init == "random:0" and scratch_lr is not None:
        assert set(rates.values()) == {1e-3} and s.fit_info()["from_scratch_lr"] == 1e-3
    else:
        assert rates["head"] == 5e-3 and max(groups) == 1e-4 and min(groups) < 1e-4
        assert s.fit_info()["from_scratch_lr"] is None


@pytest.mark.parametrize("strategy, layer, warned", [("finetune", 1, True), ("finetune", None, False),
                                                     ("lp-ft", 1, False)])
def test_a_new_head_on_an_inner_layer_gets_a_note(tiny_text_dir, strategy, layer, warned):
    """Fine-tuning from an inner layer with a random head fell far below the probe in the
    transferability study: the run says so and names the alternatives."""
    from transferkit.strategies import get_strategy

    train, _ = text_sets()
    backbone = get_backbone(str(tiny_text_dir), **({"layer": layer} if layer is not None else {}))
    s = get_strategy(strategy, {"epochs": 1, "val_fraction": 0})
    ctx = TransferModel(backbone, s).ctx
    s.fit(train, ctx)
    notes = [n for n in ctx.notes if "inner layer" in n]
    assert bool(notes) == warned
    if warned:
        assert notes[0].startswith("finetune from layer 1") and "linear-probe" in notes[0] and "lp-ft" in notes[0]


def test_inner_layer_note_cites_the_study_not_copied_figures(monkeypatch):
    """The figures of the note come from studies.json (written by the benchmark), never from the code."""
    from transferkit._studies import study

    real = study("inner_layer_finetune")
    r = real["layers"][sorted(real["layers"], key=int)[0]]
    note = ft_module.inner_layer_note("finetune", 4)
    assert f"{r['finetune']:.3f}" in note and f"{r['probe']:.3f}" in note and "linear-probe" in note
    fake = dict(real, task="task-x", backbone="net-y", layers={"5": {"finetune": 0.111, "probe": 0.999}})
    monkeypatch.setattr(ft_module, "study", lambda name: fake)
    note = ft_module.inner_layer_note("lora", 2)
    assert note.startswith("lora from layer 2:")
    assert "net-y fine-tuned from layer 5 reached 0.111 on task-x where its linear probe reached 0.999" in note
