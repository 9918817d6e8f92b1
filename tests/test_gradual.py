"""``gradual`` (ULMFiT): one more layer group per epoch from the top, early stopping and BatchNorm."""
from __future__ import annotations

import numpy as np
import torch

from transferkit.backbones import get_backbone
from transferkit.backbones.zoo import EfficientNetLiteBackbone
from transferkit.data import Dataset
from transferkit.model import TransferModel
from transferkit.strategies.gradual import GradualUnfreezing, unfrozen_at

from strategy_helpers import FAST, fitted, spy_train, text_sets


def test_gradual_unfreezes_one_more_group_per_epoch_from_the_top(tiny_text_dir, monkeypatch):
    seen = []

    def record(model, call):
        trainable = {n.split(".")[1] + ("." + n.split(".")[3] if n.startswith("backbone.encoder") else "")
                     for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")}
        assert model["head"].weight.requires_grad
        seen.append(sorted(trainable))

    spy_train(monkeypatch, each_step=record)
    s = GradualUnfreezing(epochs=4, **FAST)
    fitted(s, tiny_text_dir)
    expected = [[], ["encoder.1"], ["encoder.0", "encoder.1"], ["embeddings", "encoder.0", "encoder.1"]]
    assert seen == [e for e in expected for _ in range(3)]  # 3 steps per epoch
    info = s.fit_info()
    assert info["unfrozen_by_epoch"] == [[], ["encoder.layer.1"], ["encoder.layer.0", "encoder.layer.1"],
                                         ["embeddings", "encoder.layer.0", "encoder.layer.1"]]
    assert [h["unfrozen_groups"] for h in info["history"]] == [0, 1, 2, 3]
    assert unfrozen_at(["a", "b", "c"], 9) == ["a", "b", "c"] and unfrozen_at(["a", "b"], 0) == []


def test_gradual_with_few_epochs_leaves_lower_groups_untouched_and_says_so(tiny_text_dir):
    backbone = get_backbone(str(tiny_text_dir))
    before = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    s = GradualUnfreezing(epochs=2, **FAST)
    model = TransferModel(backbone, s)
    s.fit(text_sets()[0], model.ctx)
    assert s.fit_info()["trained_groups"] == ["encoder.layer.1"]
    keys = set(s.state_tensors()) - {"head.weight", "head.bias"}
    assert keys and all(k.startswith("backbone.encoder.layer.1.") for k in keys)
    for k, v in backbone.module.state_dict().items():
        assert torch.equal(v, before[k]) != k.startswith("encoder.layer.1."), k
    assert any("top 1 of 3" in n for n in model.ctx.notes)


def test_gradual_early_stopping_restores_groups_unfrozen_after_the_best_epoch(tiny_text_dir):
    # patience 1 with a validation split: whatever epoch is best, every group trained after it
    # must come back to its weights at that epoch (pre-trained, for groups not yet unfrozen).
    backbone = get_backbone(str(tiny_text_dir))
    before = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    s = GradualUnfreezing(epochs=4, batch_size=8, val_fraction=0.25, val_min=4, patience=1, lr=5e-2)
    s.fit(text_sets()[0], TransferModel(backbone, s).ctx)
    best = s.fit_info()["best_epoch"]
    assert best < s.fit_info()["epochs_run"] - 1  # (a high rate makes epoch 0 the best: the case that matters)
    untouched = {"encoder.layer.1": 1, "encoder.layer.0": 2, "embeddings": 3}
    for k, v in backbone.module.state_dict().items():
        group = next((g for g in untouched if k.startswith(g + ".")), None)
        if group and untouched[group] > best:
            assert torch.equal(v, before[k]), k


def test_gradual_on_a_cnn_leaves_frozen_batchnorm_statistics_alone(tiny_text_dir):
    rng = np.random.RandomState(0)
    items = [rng.randint(0, 255, (32, 32, 3)).astype(np.uint8) for _ in range(16)]
    data = Dataset(modality="image", inputs=items, labels=["a", "b"] * 8)
    backbone = EfficientNetLiteBackbone("efficientnet-lite0", init="random:0", image_size=32)
    before = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    s = GradualUnfreezing(epochs=2, batch_size=8, val_fraction=0.25, patience=None, lr=1e-3)
    s.fit(data, TransferModel(backbone, s).ctx)
    assert s.fit_info()["trained_groups"] == ["stage8"]
    last = {id(p) for p in backbone.module.stages()[-1].parameters()} | {
        id(b) for b in backbone.module.stages()[-1].buffers()}
    tensors = dict(backbone.module.named_parameters()) | dict(backbone.module.named_buffers())
    for k, v in backbone.module.state_dict().items():
        assert torch.equal(v, before[k]) != (id(tensors[k]) in last), k  # validation's BN refresh included
