"""``adabn`` with ``on="backbone"``: AdaBN as in the paper, every BatchNorm layer's statistics
re-estimated on the target items, on a tiny random EfficientNet-Lite0."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_finetune import image_set

import transferkit as tk
from transferkit.backbones import get_backbone
from transferkit.backbones.zoo import EfficientNetLiteBackbone
from transferkit.data import Dataset
from transferkit.errors import UserInputError
from transferkit.model import TransferModel
from transferkit.strategies import get_strategy
from transferkit.strategies._tuning import batchnorm_layers


def images(n_per_class: int, seed: int, invert: bool = False) -> Dataset:
    """Two colour classes of 32x32 noise images (test_finetune's); ``invert``: the shifted
    domain (255 - pixel)."""
    ds = image_set(n_per_class, seed)
    if not invert:
        return ds
    return Dataset(modality="image", inputs=[255 - x for x in ds.inputs], labels=ds.labels)


def tiny_cnn() -> EfficientNetLiteBackbone:
    return EfficientNetLiteBackbone("efficientnet-lite0", init="random:0", image_size=32)


def fitted(target: Dataset, **params):
    backbone = tiny_cnn()
    s = get_strategy("adabn", {"on": "backbone", **params})
    model = TransferModel(backbone, s)
    model.ctx.target = target
    s.fit(images(6, 0), model.ctx)
    return s, model, backbone


def test_every_batchnorm_layer_takes_the_targets_statistics():
    target = images(5, 1, invert=True)
    s, model, backbone = fitted(target)
    layers = batchnorm_layers(backbone.module)
    assert layers and s.fit_info()["batchnorm_layers"] == len(layers)
    # the first BatchNorm layer's running mean is the mean over the target of its input
    name, bn = layers[0]
    seen = []
    hook = bn.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    with torch.no_grad():
        backbone.module.eval()
        backbone.forward_features(backbone.prepare(list(target.inputs)))
    hook.remove()
    x = torch.cat(seen)
    np.testing.assert_allclose(bn.running_mean.numpy(), x.mean((0, 2, 3)).numpy(), rtol=1e-3, atol=1e-4)
    fresh = tiny_cnn()
    assert not torch.allclose(dict(batchnorm_layers(fresh.module))[name].running_mean, bn.running_mean)
    assert backbone.cache_key() != fresh.cache_key()  # adapted features are cached apart
    assert all(not p.requires_grad or p.grad is None for p in backbone.module.parameters())
    keys = set(s.state_tensors()) - {"head.weight", "head.bias"}
    assert f"backbone.{name}.running_mean" in keys and all(k.startswith("backbone.") for k in keys)


def test_the_head_on_source_or_pretrained_statistics_differs_and_both_predict():
    target = images(5, 1, invert=True)
    a, ma, _ = fitted(target)
    b, mb, _ = fitted(target, source_statistics=False)
    assert a.fit_info()["source_statistics"] and not b.fit_info()["source_statistics"]
    assert not np.allclose(a.head_weight_, b.head_weight_)
    for s, m in ((a, ma), (b, mb)):
        assert set(s.predict(target, m.ctx)) <= {"blue", "red"}


def test_a_layernorm_backbone_is_refused_with_the_reason(tiny_text_dir):
    from conftest import toy_texts

    tx, ly = toy_texts(6)
    s = get_strategy("adabn", {"on": "backbone"})
    model = TransferModel(get_backbone(str(tiny_text_dir)), s)
    model.ctx.target = Dataset(modality="text", inputs=tx)
    with pytest.raises(UserInputError, match="no BatchNorm layer.*LayerNorm") as e:
        s.fit(Dataset(modality="text", inputs=tx, labels=ly), model.ctx)
    assert "on=features" in e.value.hint


def test_save_and_load_predict_the_same():
    target = images(5, 1, invert=True)
    s, model, backbone = fitted(target)
    fresh = tiny_cnn()
    again = get_strategy("adabn", s.get_params()).load_state(s.state_tensors(), s.classes_, fresh)
    ctx = TransferModel(fresh, again).ctx
    np.testing.assert_allclose(again.predict_proba(target, ctx), s.predict_proba(target, model.ctx), atol=1e-5)
    assert fresh.cache_key() == backbone.cache_key()


def test_through_the_pipeline_with_source_only_and_reload(tmp_path):
    """The pre-trained EfficientNet-Lite0 (offline weights) at 32x32, so the run reloads with its weight check."""
    from PIL import Image

    tgt = tmp_path / "target"
    tgt.mkdir()
    for i, img in enumerate(images(6, 1, invert=True).inputs):
        Image.fromarray(img).save(tgt / f"{i}.png")
    out = tmp_path / "run"
    model = tk.fit(train=images(8, 0), test=images(5, 2, invert=True), target_unlabelled=str(tgt),
                   model="efficientnet-lite0", backbone_options={"image_size": 32},
                   strategy="adabn", strategy_params={"on": "backbone"}, out=str(out), control=False, log=None)
    d = model.metrics["domain"]
    assert {"accuracy"} <= set(d["source_only"]) and d["adaptation_verdict"] in ("helped", "no-difference", "hurt")
    assert model.metrics["strategy"]["fit"]["on"] == "backbone"
    again = tk.load(out)
    items = list(images(3, 3, invert=True).inputs)
    np.testing.assert_allclose(again.predict_proba(items), model.predict_proba(items), atol=1e-5)
    assert again.backbone.cache_key() == model.backbone.cache_key()
