"""``l2sp``: the pull towards the starting weights (decoupled by default), and its strength chosen
on the validation split."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.optim import optimizer as torch_optimizer

from transferkit.backbones import get_backbone
from transferkit.errors import UserInputError
from transferkit.strategies import finetune as ft_module
from transferkit.strategies.finetune import FineTune
from transferkit.strategies.l2sp import DEFAULT_ALPHA, L2SPFineTune, l2sp_terms, pull_towards

from strategy_helpers import FAST, fitted, spy_train, text_sets

TINY = dict(FAST, epochs=3, lr=1e-3)  # 9 steps on the toy problem: a free weight drifts up to ~9e-3


def test_l2sp_terms_are_the_squared_distances():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    head = torch.nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.fill_(1.0)
        head.bias.fill_(0.5)
    sp, h = l2sp_terms([(w, torch.tensor([1.0, 0.0]))], head)
    assert sp.item() == 4.0 and h.item() == 4.5 and sp.requires_grad
    assert l2sp_terms([(w, w.detach().clone())], head)[0].item() == 0.0


def test_pull_towards_moves_lr_times_alpha_of_the_way_back_per_group_and_never_past_w0():
    a, b, other = (torch.nn.Parameter(torch.tensor(v)) for v in ([1.0, 2.0], [4.0], [3.0]))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b, other], "lr": 1.0}], lr=0.1)
    start = {id(a): torch.zeros(2), id(b): torch.zeros(1)}
    assert pull_towards(opt, start, alpha=2.0) == 2
    assert torch.allclose(a.detach(), torch.tensor([0.8, 1.6]))  # 0.1 * 2 = a fifth of the way
    assert b.item() == 0.0 and other.item() == 3.0  # lr * alpha = 2 clamps at 1 (w0 itself); unknown: untouched
    assert pull_towards(opt, start, alpha=0.0) == 0


def drift(s):
    return s.fit_info()["l2sp_distance"]


def test_the_decoupled_pull_measurably_holds_the_weights_where_the_papers_loss_penalty_barely_does(tiny_text_dir):
    """Same seed, data and budget: ``finetune``, the paper's form (alpha 0.01 in the loss, under
    Adam) and the decoupled pull at its default alpha; drift ``||w - w0||`` over the backbone."""
    plain = FineTune(**TINY)
    m = fitted(plain, tiny_text_dir)
    w0 = get_backbone(str(tiny_text_dir)).module.state_dict()
    own = m.ctx.backbone.module.state_dict()
    free = sum(float(((own[n] - w0[n]) ** 2).sum()) for n, _ in m.ctx.backbone.module.named_parameters()) ** 0.5
    paper = L2SPFineTune(alpha=0.01, penalty="loss", beta=0.0, **TINY)
    fitted(paper, tiny_text_dir)
    pulled = L2SPFineTune(alpha=DEFAULT_ALPHA, **TINY)
    fitted(pulled, tiny_text_dir)
    # measured: 0.36 (finetune), 0.31 (the paper's form), 0.045 (decoupled, alpha 1000)
    assert free > 0
    assert drift(paper) > 0.75 * free
    assert drift(pulled) < 0.25 * min(free, drift(paper))
    assert pulled.fit_info()["alpha_chosen_by"] == "user" and pulled.fit_info()["penalty"] == "decoupled"
    history = pulled.fit_info()["history"]
    assert all(h["drift"] > 0 for h in history) and "l2sp" not in history[0]  # no loss term to log


def test_the_loss_penalty_starts_at_zero_grows_and_a_huge_alpha_stays_near_w0(tiny_text_dir, monkeypatch):
    starts = []
    real = spy_train(monkeypatch, before=lambda model: starts.append(s.penalty_terms()[0].item()))
    s = L2SPFineTune(penalty="loss", alpha=0.01, **TINY)
    fitted(s, tiny_text_dir)
    monkeypatch.setattr(ft_module, "train", real)
    assert starts == [0.0]
    penalties = [h["l2sp"] for h in s.fit_info()["history"]]
    assert 0 < penalties[0] < penalties[-1]
    free = L2SPFineTune(penalty="loss", alpha=0.0, **TINY)
    fitted(free, tiny_text_dir)
    tied = L2SPFineTune(penalty="loss", alpha=1e4, **TINY)
    fitted(tied, tiny_text_dir)
    assert drift(tied) < 0.25 * drift(free)


def test_alpha_is_chosen_on_the_validation_split_and_the_chosen_run_is_the_one_kept(tiny_text_dir, tmp_path):
    hooks = len(torch_optimizer._global_optimizer_post_hooks)
    s = L2SPFineTune(**dict(TINY, val_fraction=0.25, val_min=4, patience=None), alpha_grid=[0.0, 1000.0])
    model = fitted(s, tiny_text_dir, checkpoint_dir=tmp_path / "ck")
    info = s.fit_info()
    assert info["alpha_chosen_by"] == "validation"
    tried = info["alpha_search"]
    assert [t["alpha"] for t in tried] == [0.0, 1000.0]
    assert tried[1]["drift"] < tried[0]["drift"]
    losses = [t["val_loss"] for t in tried]
    assert info["alpha"] == tried[int(np.argmin(losses))]["alpha"]
    assert info["l2sp_distance"] == tried[int(np.argmin(losses))]["drift"]
    # the weights and head in place are the chosen candidate's: its validation loss again
    val = s.validation_items()
    if val is None:  # a FineTune that does not record its split: the split it makes
        val = s._split(text_sets()[0], model.ctx)[1]
    data = text_sets()[0].subset(list(val))
    unit = s.task_head_
    again = unit.scores(s.predict_outputs(data, model.ctx), unit.encode(list(data.labels)))["loss"]
    assert again == pytest.approx(min(losses), rel=1e-5)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["alpha-0", "alpha-1000"]
    assert any("alpha chosen on the validation split" in n for n in model.ctx.notes)
    assert len(torch_optimizer._global_optimizer_post_hooks) == hooks  # the pull's hook is gone


def test_without_a_validation_split_alpha_is_the_default_and_says_so(tiny_text_dir):
    s = L2SPFineTune(**TINY)  # FAST: val_fraction 0
    fitted(s, tiny_text_dir)
    assert s.fit_info()["alpha"] == DEFAULT_ALPHA
    assert s.fit_info()["alpha_chosen_by"].startswith("default (no validation split")
    assert "alpha_search" not in s.fit_info()


@pytest.mark.parametrize("bad", [{"alpha": -1}, {"beta": float("nan")}, {"alpha": "big"}, {"alpha_grid": [100, 0]},
                                 {"alpha_grid": [0, 10, 10]}, {"penalty": "l1"}])
def test_bad_options_are_refused(bad):
    with pytest.raises(UserInputError, match="alpha|beta|penalty"):
        L2SPFineTune(**bad)
