"""``lp-ft``: the head starts as the linear probe, and its options are checked."""
from __future__ import annotations

import numpy as np
import pytest

from transferkit.backbones import get_backbone
from transferkit.errors import UserInputError
from transferkit.model import TransferModel
from transferkit.strategies import LinearProbe
from transferkit.strategies.lpft import LinearProbeFineTune

from strategy_helpers import FAST, fitted, spy_train, text_sets


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
    with_val = LinearProbeFineTune(epochs=1, batch_size=8, val_fraction=0.25, val_min=4)  # a split of 24 items
    fitted(with_val, tiny_text_dir)
    assert 0 <= with_val.fit_info()["probe"]["val_accuracy"] <= 1


def test_lpft_options_are_checked():
    for bad, match in (({"probe_Cs": []}, "probe_Cs"), ({"probe_Cs": [0.1, -1]}, "probe_Cs"),
                       ({"probe_cv": 1}, "probe_cv"), ({"lr": 5}, "lr")):
        with pytest.raises(UserInputError, match=match):
            LinearProbeFineTune(**bad)
