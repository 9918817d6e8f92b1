"""The optional abilities declared in the strategy and backbone contracts, instead of ``hasattr``
probes and private attributes written onto other objects."""
from __future__ import annotations

import gc

import pytest
from torch import nn

from transferkit.backbones import get_backbone
from transferkit.backbones.base import Backbone
from transferkit.backbones.zoo import EfficientNetLiteBackbone
from transferkit.data import Dataset
from transferkit.errors import NotFittedError
from transferkit.model import TransferModel
from transferkit.strategies import STRATEGIES, Strategy, get_strategy
from transferkit.training import set_train_mode
from transferkit.training.batchnorm import keep_statistics, release_statistics, statistics_frozen

from conftest import toy_texts


def test_every_strategy_answers_every_contract_word_without_hasattr():
    for entry in STRATEGIES:
        s = get_strategy(entry.name)
        assert isinstance(s.tunes_backbone, bool) and isinstance(s.transforms_features, bool)
        assert s.check_labels(Dataset(modality="text", inputs=["x"], labels=["a"])) is None  # accepted
        # their source-only model is the plain probe
        if s.needs_target and entry.name not in ("adabn", "tent", "shot", "input-invariance", "auto-adapt"):
            assert type(s.source_only()) is type(s)
        if not s.needs_target:
            with pytest.raises(NotImplementedError, match="does not adapt to a target domain"):
                s.source_only()
        if not s.transforms_features:
            with pytest.raises(NotImplementedError, match="no features of its own"):
                s.transform(None, None)
        with pytest.raises(NotFittedError):
            s.merged_for_export()
    # who tunes the backbone: the fine-tuning family and contrastive always, alignment only on it
    tuning = {e.name for e in STRATEGIES if get_strategy(e.name).tunes_backbone}
    assert tuning == {"finetune", "gradual", "lp-ft", "l2sp", "lora", "contrastive", "tent", "shot", "protonet"}
    assert get_strategy("dann", {"on": "backbone"}).tunes_backbone and not get_strategy("dann").tunes_backbone
    assert {e.name for e in STRATEGIES if STRATEGIES.get(e.name).transforms_features} == {
        "dann", "mmd", "coral", "self-training", "mcc", "cdan"}


def test_a_fitted_probe_is_its_own_export_form_and_accepts_any_labels(tiny_text_dir):
    texts, labels = toy_texts(6)
    s = get_strategy("linear-probe")
    s.fit(Dataset(modality="text", inputs=texts, labels=labels), TransferModel(get_backbone(str(tiny_text_dir)), s).ctx)
    assert s.merged_for_export() is s
    s.check_labels(Dataset(modality="text", inputs=["x"], labels=["never seen"]))


def test_zero_shot_refuses_undescribed_labels_through_the_contract():
    from transferkit.errors import UserInputError

    s = get_strategy("zero-shot", {"labels": "spam: ads,ham: mail"})
    with pytest.raises(UserInputError, match="does not describe: eggs"):
        s.check_labels(Dataset(modality="text", inputs=["x", "y"], labels=["spam", "eggs"]))


def test_base_strategy_declares_the_defaults():
    assert Strategy.transforms_features is False and Strategy.needs_labels and not Strategy.needs_target


def test_backbone_contract_declares_tokenizer_chunking_and_feature_map(tiny_text_dir):
    text = get_backbone(str(tiny_text_dir))
    assert text.tokenizer is not None and text.chunk_batch == 32 and text.feature_map_module() is None
    cnn = EfficientNetLiteBackbone("efficientnet-lite0", init="random:0", image_size=32)
    assert cnn.tokenizer is None and cnn.chunk_batch is None and Backbone.chunk_batch is None
    assert cnn.feature_map_module() is cnn.module.stages()[-1]
    assert EfficientNetLiteBackbone("efficientnet-lite0", init="random:0", layer=4).feature_map_module() is not None


def test_frozen_statistics_are_declared_not_written_onto_modules():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.ReLU())
    bn = model[1]
    kept = keep_statistics([bn])
    try:
        assert statistics_frozen(bn) and "_tk_frozen_stats" not in vars(bn)
        set_train_mode(model)
        assert model.training and model[0].training and not bn.training  # its parameters still train
        assert all(p.requires_grad for p in bn.parameters())
        assert keep_statistics([bn]) == []  # already kept: a nested keep does not take it away
    finally:
        release_statistics(kept)
    assert not statistics_frozen(bn)
    set_train_mode(model)
    assert bn.training
    # weak: a module that goes away leaves the set
    other = nn.BatchNorm1d(3)
    keep_statistics([other])
    from transferkit.training import batchnorm

    n = len(batchnorm._FROZEN)
    del other
    gc.collect()
    assert len(batchnorm._FROZEN) == n - 1
