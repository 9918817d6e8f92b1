"""Shared pieces of the fine-tuning variant tests (``gradual``, ``lp-ft``, ``l2sp``, ``lora``):
the toy text problem, a fitted-model helper and a spy on the one training loop."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from transferkit.backbones import get_backbone
from transferkit.data import Dataset
from transferkit.model import TransferModel
from transferkit.strategies import finetune as ft_module

from conftest import toy_texts

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
