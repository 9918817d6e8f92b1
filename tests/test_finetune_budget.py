"""Training budgets that fit the data (issue 17): a floor in optimizer steps, validation splits
big enough to steer early stopping (or none), and the held-out items recorded for model selection."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.backbones import get_backbone
from transferkit.data import Dataset
from transferkit.model import TransferModel
from transferkit.strategies import finetune as ft_module
from transferkit.strategies.finetune import MIN_STEPS, FineTune
from transferkit.strategies.gradual import GradualUnfreezing
from transferkit.training import Callback, EarlyStopping, plan_budget, train

from conftest import toy_texts


def texts(n_per_class: int) -> Dataset:
    """``2 * n_per_class`` toy texts, each made unique by its number (to map items back to positions)."""
    tx, ly = toy_texts(n_per_class)
    return Dataset(modality="text", inputs=[f"{t} n{i}" for i, t in enumerate(tx)], labels=ly)


# ----- the budget ---------------------------------------------------------------------------------
def test_the_budget_is_raised_to_min_steps_in_whole_epochs_and_max_steps_still_caps():
    # issue 17's run: 90 items at batch 16 are 6 steps per epoch, so 3 epochs were 18 steps
    assert plan_budget(90, batch_size=16, epochs=3).steps == 18
    b = plan_budget(90, batch_size=16, epochs=3, min_steps=200)
    assert (b.epochs, b.steps, b.steps_per_epoch, b.epochs_asked, b.reason) == (34, 204, 6, 3, "min_steps")
    assert "raised to 34 epochs (204 steps)" in b.describe() and "only 18 optimizer steps" in b.describe()
    capped = plan_budget(90, batch_size=16, epochs=3, min_steps=200, max_steps=50)
    assert (capped.steps, capped.reason) == (50, "max_steps")
    big = plan_budget(1600, batch_size=16, epochs=3, min_steps=200)  # large data: the epochs decide
    assert (big.epochs, big.steps, big.reason) == (3, 300, "epochs")
    accum = plan_budget(90, batch_size=8, grad_accum=2, epochs=1, min_steps=20)  # 12 micro-batches: 6 steps
    assert (accum.steps_per_epoch, accum.epochs, accum.steps) == (6, 4, 24)


def test_a_90_item_fit_runs_at_least_min_steps_and_says_why(tiny_text_dir):
    assert FineTune().min_steps == MIN_STEPS and FineTune().epochs is None
    s = FineTune(min_steps=40, lr=1e-3)
    model = TransferModel(get_backbone(str(tiny_text_dir)), s, progress=False)
    s.fit(texts(45), model.ctx)
    info = s.fit_info()
    per_epoch = math.ceil(90 / 16)  # the 10% split would be 9 items: too few, so all 90 train
    assert info["n_fit"] == 90 and info["steps"] >= 40 and info["epochs_run"] == math.ceil(40 / per_epoch)
    assert info["budget"] == {"epochs_asked": 3, "epochs": 7, "steps_per_epoch": 6, "steps_planned": 42,
                              "min_steps": 40, "max_steps": None, "reason": "min_steps",
                              "validation": "none: too few items (see the notes)"}
    assert any("raised to 7 epochs (42 steps) to reach min_steps" in n for n in model.ctx.notes)


def test_explicit_epochs_run_exactly_as_given(tiny_text_dir):
    s = FineTune(epochs=1, lr=1e-3)
    model = TransferModel(get_backbone(str(tiny_text_dir)), s, progress=False)
    s.fit(texts(45), model.ctx)
    assert s.fit_info()["steps"] == 6 and s.fit_info()["budget"]["reason"] == "epochs"
    assert not any("min_steps" in n for n in model.ctx.notes)


def test_gradual_starts_from_its_own_four_epochs():
    b = plan_budget(90, batch_size=16, epochs=GradualUnfreezing.base_epochs, min_steps=0)
    assert GradualUnfreezing().epochs is None and b.epochs == 4


# ----- validation that means something ----------------------------------------------------------------
def test_a_tiny_validation_split_trains_everything_without_early_stopping_and_says_so(tiny_text_dir):
    s = FineTune(min_steps=12, lr=1e-3, patience=1)
    model = TransferModel(get_backbone(str(tiny_text_dir)), s, progress=False)
    s.fit(texts(45), model.ctx)  # 10%: 9 items, under the 30 needed
    info = s.fit_info()
    assert info["n_val"] == 0 and not info["stopped_early"] and info["best_epoch"] is None
    assert all("val_loss" not in h for h in info["history"])
    assert s.validation_items() is None
    note = next(n for n in model.ctx.notes if "validation split" in n)
    assert "90 training items are too few" in note and "30 items, 3 per class" in note
    assert "without early stopping, keeping the last weights" in note


@pytest.mark.parametrize(("n", "task", "expect"), [
    (100, "classification", None),  # 10 per class: a 10-item split would hold one per class
    (160, "classification", 30),    # 10% is 16: raised to 30 (19%)
    (400, "classification", 40),    # 10% is enough as it is
    (100, "regression", None),
    (200, "regression", 30),
])
def test_the_validation_split_is_raised_to_val_min_within_a_fifth_of_the_data(n, task, expect):
    rng = np.random.default_rng(0)
    labels = [str(i % 10) for i in range(n)] if task == "classification" else list(rng.normal(size=n))
    ds = Dataset(modality="text", inputs=[f"t{i}" for i in range(n)], labels=labels, task=task)
    fit, val, why = FineTune()._validation_split(ds, seed=0)
    if expect is None:
        assert val is None and fit == list(range(n)) and "too few" in why
    else:
        assert why is None and len(val) == expect and sorted(fit + val) == list(range(n))
    if task == "classification" and val is not None:
        assert min(np.unique([labels[i] for i in val], return_counts=True)[1]) >= 3


def test_a_class_too_rare_for_three_validation_items_means_no_split():
    labels = ["a"] * 190 + ["b"] * 10  # 10% of 200 is 20, raised to 30: "b" gets 1 or 2 of them
    ds = Dataset(modality="text", inputs=[f"t{i}" for i in range(200)], labels=labels)
    _, val, why = FineTune()._validation_split(ds, seed=0)
    assert val is None and "fewer than 3 items of class(es) b" in why


def test_early_stopping_cannot_end_a_run_before_min_steps():
    torch.manual_seed(0)
    X, Y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    table = [0.5, 0.4, 0.45, 0.47, 0.9, 0.9, 0.9, 0.9]  # best at epoch 1: patience 2 would stop after epoch 3

    class FakeValidation(Callback):
        def on_epoch_end(self, state, logs):
            logs["val_loss"] = table[state.epoch]

    def run(min_steps):
        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        stopper = EarlyStopping(model, patience=2, min_steps=min_steps)
        state = train(model, lambda i: nn.functional.cross_entropy(model(X[i]), Y[i]), 32, opt, epochs=8,
                      batch_size=8, callbacks=[FakeValidation(), stopper])
        return state, stopper

    state, _ = run(0)
    assert state.step == 16 and state.should_stop  # 4 epochs of 4 steps
    state, stopper = run(26)  # not before step 26: stops at the end of epoch 7 (28 steps)
    assert state.step == 28 and state.should_stop and stopper.best_epoch == 1


# ----- the held-out items, for model selection --------------------------------------------------------
def test_validation_items_are_the_held_out_items_and_none_of_them_trained(tiny_text_dir, monkeypatch):
    data = texts(80)  # 160 items: a 30-item split
    trained: set[str] = set()
    real_train = ft_module.train

    def spying(model, training_step, n_items, *args, **kw):
        backbone = s_model.ctx.backbone
        real_prepare, inside = backbone.prepare, [False]

        def prepare(items):
            if inside[0]:
                trained.update(items)
            return real_prepare(items)

        def step(idx):
            inside[0] = True
            try:
                return training_step(idx)
            finally:
                inside[0] = False
        monkeypatch.setattr(backbone, "prepare", prepare)
        return real_train(model, step, n_items, *args, **kw)

    monkeypatch.setattr(ft_module, "train", spying)
    s = FineTune(min_steps=10, lr=1e-3)
    s_model = TransferModel(get_backbone(str(tiny_text_dir)), s, progress=False)
    s.fit(data, s_model.ctx)
    val = s.validation_items()
    assert val.dtype == np.int64 and len(val) == 30 == s.fit_info()["n_val"]
    held = {data.inputs[i] for i in val}
    assert trained and not trained & held and trained | held == set(data.inputs)
    assert s.fit_info()["budget"]["validation"] == "early stopping"
