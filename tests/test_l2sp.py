"""``l2sp``: the penalty towards the starting weights."""
from __future__ import annotations

import pytest
import torch

from transferkit.errors import UserInputError
from transferkit.strategies import finetune as ft_module
from transferkit.strategies.l2sp import L2SPFineTune, l2sp_terms

from strategy_helpers import FAST, fitted, spy_train


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
