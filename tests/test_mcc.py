"""``mcc`` (Minimum Class Confusion, Jin et al. ECCV 2020): the loss on constructed logits, the
strategy on served random features (a known shift), and one fit on a tiny random backbone."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_adabn_backbone import images, tiny_cnn
from test_adapt import _acc, _shifted_problem

from transferkit.alignment import MinimumClassConfusionLoss
from transferkit.errors import UserInputError
from transferkit.model import TransferModel
from transferkit.strategies import _adapt, get_strategy


# ----- the loss --------------------------------------------------------------------------------
def test_confident_distinct_predictions_have_no_confusion_and_spread_ones_do():
    loss = MinimumClassConfusionLoss(temperature=2.5)
    confident = torch.eye(5).repeat(3, 1) * 100.0  # every class, each item sure of its own
    assert float(loss(confident)) == pytest.approx(0.0, abs=1e-6)
    uniform = torch.zeros(15, 5)
    assert float(loss(uniform)) == pytest.approx(4 / 5, abs=1e-6)  # (C - 1) / C
    # two classes confused by half the items: more confusion than none, less than uniform
    mixed = confident.clone()
    mixed[:6, :2] = 3.0
    assert 0.01 < float(loss(mixed)) < float(loss(uniform))
    # a higher temperature softens confident logits of moderate size into some confusion
    moderate = torch.eye(5).repeat(3, 1) * 4.0
    assert float(MinimumClassConfusionLoss(1.0)(moderate)) < float(MinimumClassConfusionLoss(5.0)(moderate))
    with pytest.raises(ValueError, match="temperature"):
        MinimumClassConfusionLoss(0.0)


def test_the_gradient_lowers_the_confusion_and_the_item_weights_get_none():
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(32, 4, generator=g) * 0.5).requires_grad_(True)
    loss = MinimumClassConfusionLoss()
    before = loss(z)
    before.backward()
    assert torch.isfinite(z.grad).all() and float(z.grad.abs().sum()) > 0
    with torch.no_grad():
        after = loss(z - 5.0 * z.grad)
    assert float(after) < float(before.detach())
    # logits so large that an unpredicted class's column underflows: finite, not NaN
    extreme = torch.eye(3, 5) * 1e4
    assert torch.isfinite(loss(extreme))


# ----- the strategy on served features ----------------------------------------------------------
def test_mcc_beats_source_only_on_a_known_shift_and_survives_saving():
    src, test, make_ctx = _shifted_problem()
    s = get_strategy("mcc", {"trade_off": 1.0, "steps": 300})
    ctx = make_ctx()
    s.fit(src, ctx)
    base = s.source_only()
    assert base.trade_off == 0.0 and base.selection == "none" and base.temperature == s.temperature
    base.fit(src, make_ctx())
    assert base.fit_info()["trade_off"] == 0.0
    adapted, plain = _acc(s, test, ctx), _acc(base, test, ctx)
    assert plain < 0.75 and adapted > plain + 0.15, (adapted, plain)
    # saved as tensors and loaded: the same predictions
    again = get_strategy("mcc", s.get_params()).load_state(s.state_tensors(), s.classes_)
    np.testing.assert_allclose(again.predict_proba(test, ctx), s.predict_proba(test, ctx), atol=1e-6)


def test_the_weight_is_chosen_without_target_labels_and_explained():
    src, _, make_ctx = _shifted_problem(n=80)
    assert get_strategy("mcc").trade_off == [0.0, 0.3, 1.0, 3.0]
    s = get_strategy("mcc", {"trade_off": [0.0, 1.0], "steps": 30})
    ctx = make_ctx()
    s.fit(src, ctx)
    sel = s.fit_info()["selection"]
    assert sel["criterion"] == "dev" and [r["trade_off"] for r in sel["scores"]] == [0.0, 1.0]
    assert all("target_entropy" in r and np.isfinite(r["score"]) for r in sel["scores"])
    assert s.fit_info()["trade_off"] == sel["chosen"] and any("without target labels" in n for n in ctx.notes)


def test_the_other_strategies_ignore_the_head_and_mcc_refuses_non_classification():
    # the head reaches the transfer loss; dann, mmd and coral do not read it
    src, _, make_ctx = _shifted_problem(n=80)
    for name in ("mmd", "dann"):
        s = get_strategy(name, {"trade_off": 1.0, "steps": 5})
        s.fit(src, make_ctx())
        align = s._alignment(4)
        f = torch.randn(8, 4)
        assert torch.isfinite(s._transfer_loss(align, f, f + 1, 0.5, head=None))
    for task in ("regression", "multi-label"):
        with pytest.raises(UserInputError, match="softmax") as e:
            get_strategy("mcc").check_task(task)
        assert "adabn" in e.value.hint
    with pytest.raises(UserInputError, match="temperature"):
        get_strategy("mcc", {"temperature": 0})


# ----- on the backbone ---------------------------------------------------------------------------
def test_on_backbone_trains_the_last_group_within_its_bounds_and_reloads(monkeypatch):
    runs = []
    real_train = _adapt.train

    def counted(*args, **kwargs):
        runs.append(kwargs["max_steps"])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(_adapt, "train", counted)
    backbone = tiny_cnn()
    before = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    params = {"on": "backbone", "unfreeze": 1, "trade_off": [0.0, 1.0], "steps": 10_000, "backbone_steps": 3,
              "max_target": 6, "batch_size": 4, "hidden": 16, "backbone_lr": 1e-3}
    s = get_strategy("mcc", params)
    model = TransferModel(backbone, s, progress=False)
    target = images(5, 1, invert=True)
    model.ctx.target = target
    s.fit(images(6, 0), model.ctx)
    info = s.fit_info()
    assert runs == [3, 3, 3]  # two DEV candidates and the refit, each backbone_steps long
    assert info["on"] == "backbone" and len(info["trained_groups"]) == 1 and info["n_target"] == 6
    assert any("6 of the 10 unlabelled target items" in n for n in model.ctx.notes)
    tuned = {k[len("backbone."):] for k in s.state_tensors() if k.startswith("backbone.")}
    changed = {k for k, v in backbone.module.state_dict().items() if not torch.equal(v, before[k])}
    assert tuned and any(k in changed for k in tuned)
    p = s.predict_proba(target, model.ctx)
    # a fresh pre-trained backbone with the saved tensors predicts the same
    fresh = tiny_cnn()
    again = get_strategy("mcc", s.get_params()).load_state(s.state_tensors(), s.classes_, backbone=fresh)
    np.testing.assert_allclose(again.predict_proba(target, TransferModel(fresh, again, progress=False).ctx), p,
                               atol=1e-5)
