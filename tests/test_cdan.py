"""``cdan`` (CDAN+E, Long et al. NeurIPS 2018): the conditional adversarial loss on constructed
features and logits, and the strategy on served random features (fast)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_adapt import _acc, _shifted_problem

from transferkit.alignment import ConditionalDomainAdversarialLoss, DomainAdversarialLoss
from transferkit.errors import UserInputError
from transferkit.strategies import get_strategy


def _trained(loss: torch.nn.Module, *inputs: torch.Tensor, steps: int = 150) -> float:
    """The loss after its discriminator trained ``steps`` Adam steps on fixed inputs."""
    opt = torch.optim.Adam(loss.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        value = loss(*inputs)
        value.backward()
        opt.step()
    return float(loss(*inputs).detach())


def test_the_discriminator_tells_domains_apart_by_class_where_dann_cannot():
    # the same features in both domains, but the source predicted as class 0 and the target as
    # class 1: only the conditioned discriminator can separate them
    torch.manual_seed(0)
    f = torch.randn(16, 4)
    z_s, z_t = torch.tensor([[3.0, -3.0]]).repeat(16, 1), torch.tensor([[-3.0, 3.0]]).repeat(16, 1)
    cdan = _trained(ConditionalDomainAdversarialLoss(4, 2, hidden=16), f, f, z_s, z_t)
    dann = _trained(DomainAdversarialLoss(4, hidden=16), f, f)
    assert cdan < 0.1 and dann == pytest.approx(math.log(2), abs=0.01), (cdan, dann)


def test_features_get_the_reversed_gradient_and_entropy_weighs_confident_items_more():
    torch.manual_seed(0)
    loss = ConditionalDomainAdversarialLoss(4, 3, hidden=8)
    f = torch.randn(6, 4, requires_grad=True)
    z = torch.randn(6, 3, requires_grad=True)
    loss(f[:3], f[3:], z[:3], z[3:], coeff=0.0).backward()
    assert float(f.grad.abs().sum()) == 0.0 and z.grad is None  # the predictions condition, detached
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in loss.parameters())
    # uniform predictions: every weight 1, CDAN+E equals CDAN; mixed confidence: they differ
    plain = ConditionalDomainAdversarialLoss(4, 3, hidden=8, entropy_conditioning=False)
    plain.load_state_dict(loss.state_dict())
    with torch.no_grad():
        flat = torch.zeros(6, 3)
        assert float(loss(f[:3], f[3:], flat[:3], flat[3:])) == pytest.approx(float(plain(f[:3], f[3:], flat[:3],
                                                                                           flat[3:])))
        mixed = torch.cat([torch.eye(3) * 8, torch.zeros(3, 3)])
        assert float(loss(f[:3], f[3:], mixed[:3], mixed[3:])) != pytest.approx(
            float(plain(f[:3], f[3:], mixed[:3], mixed[3:])), rel=1e-3)


def test_wide_joint_maps_are_randomized():
    big = ConditionalDomainAdversarialLoss(256, 20, hidden=8)  # 5120 > 4096
    assert big.randomized and big.discriminator[0].in_features == 1024
    small = ConditionalDomainAdversarialLoss(256, 10, hidden=8)
    assert not small.randomized and small.discriminator[0].in_features == 2560
    out = big(torch.randn(3, 256), torch.randn(2, 256), torch.randn(3, 20), torch.randn(2, 20))
    assert out.ndim == 0 and torch.isfinite(out)


def test_cdan_fits_chooses_its_weight_and_survives_saving():
    src, test, make_ctx = _shifted_problem(n=80)
    s = get_strategy("cdan", {"trade_off": [0.0, 0.3], "steps": 30})
    ctx = make_ctx()
    s.fit(src, ctx)
    sel = s.fit_info()["selection"]
    assert sel["criterion"] == "dev" and [r["trade_off"] for r in sel["scores"]] == [0.0, 0.3]
    assert s.fit_info()["trade_off"] == sel["chosen"]
    base = s.source_only()
    assert base.trade_off == 0.0 and base.entropy_conditioning and base.selection == "none"
    again = get_strategy("cdan", s.get_params()).load_state(s.state_tensors(), s.classes_)
    np.testing.assert_allclose(again.predict_proba(test, ctx), s.predict_proba(test, ctx), atol=1e-6)
    assert 0.0 <= _acc(again, test, ctx) <= 1.0
    with pytest.raises(UserInputError, match="softmax"):
        get_strategy("cdan").check_task("regression")
    with pytest.raises(UserInputError, match="trade_off"):
        get_strategy("cdan", {"trade_off": -0.1})
