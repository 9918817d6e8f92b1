"""What every fine-tuning variant (``gradual``, ``lp-ft``, ``l2sp``, ``lora``) must do on tiny random
models: learn the toy problem, and resume bitwise after being killed mid-training."""
from __future__ import annotations

import pytest
import torch

from transferkit.strategies import finetune as ft_module
from transferkit.strategies import get_strategy

from strategy_helpers import FAST, accuracy, fitted, needs_peft, spy_train, text_sets


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
