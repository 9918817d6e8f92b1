"""``bench_shifts.py``'s shifts and report: the transforms, disjoint items, and the goal arithmetic.

Nothing is measured and no data set is read: the transforms run on small synthetic images and the
report on a hand-made results dictionary.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from tests.test_benchmarks_doc import BENCH


@pytest.fixture
def mods(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("_shifts"), importlib.import_module("_shifts_report")


def _digit() -> np.ndarray:
    im = np.zeros((28, 28), dtype=np.uint8)
    im[6:22, 12:16] = 255  # a white stroke on black, as MNIST
    return im


def test_inverted_and_coloured_keep_the_digit(mods):
    S, _ = mods
    ims = np.stack([_digit()] * 20)
    inv = S.inverted(ims)
    assert inv.dtype == np.uint8 and inv[0, 0, 0] == 255 and inv[0, 10, 13] == 0
    col = S.coloured(ims, seed=3)
    assert col.shape == (20, 28, 28, 3) and col.dtype == np.uint8
    bg, ink = col[:, 0, 0].astype(float), col[:, 10, 13].astype(float)
    assert (np.linalg.norm(bg - ink, axis=1) >= 119).all()  # ink and background stay apart (rounding: 1)
    assert len({tuple(c) for c in bg}) > 1  # a colour per item, not one for all
    assert np.array_equal(col, S.coloured(ims, seed=3))  # seeded


def test_ink_on_white_is_dark_on_light_rgb(mods):
    S, _ = mods
    d = np.zeros((2, 8, 8))
    d[:, 2:6, 3:5] = 16.0
    out = S.ink_on_white(d)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
    assert out[0, 0, 0, 0] == 255 and out[0, 16, 16, 0] < 40
    assert (out[..., 0] == out[..., 2]).all()


def test_split_is_disjoint_stratified_and_takes_the_rest(mods):
    S, _ = mods
    labels = [i % 4 for i in range(200)]
    a, b, rest = S._split(labels, [40, 80, -1], seed=0)
    assert len(a) == 40 and len(b) == 80 and len(rest) == 80
    assert not (set(a) & set(b)) and not (set(rest) & (set(a) | set(b)))
    assert sorted(np.bincount([labels[i] for i in a])) == [10, 10, 10, 10]


def _row(pred: str, acc: float) -> dict:
    return {"status": "ok", "accuracy": acc, "accuracy_ci": [acc - 0.05, acc + 0.05], "classes": ["a", "b"],
            "pred": pred, "seconds": 1.0, "info": {}}


def test_goal_counts_the_share_of_the_gap_auto_recovers(mods):
    _, R = mods
    y = "0101010101" * 10
    shift = {"modality": "image", "classes": ["a", "b"], "y": y, "protocol": {},
             "rows": {"source-only": {"0": _row("0" * 100, 0.5)}, "reference": {"0": _row(y, 1.0)},
                      "auto-adapt": {"0": _row("01" * 30 + "0" * 40, 0.8)}}}
    g = R.goal(shift)
    assert g["gap"] == pytest.approx(0.5) and g["recovered"] == pytest.approx(0.6) and g["met"] is True
    shift["rows"]["auto-adapt"]["0"] = _row("01" * 10 + "0" * 80, 0.6)
    assert R.goal(shift)["met"] is False
    gain = R.gain(shift, "auto-adapt")
    assert gain["gain"] == pytest.approx(0.1) and gain["gain_ci"][0] > 0  # paired: 10 more right, none worse
    (entry,) = R.summary({"shifts": {"x": shift}})
    assert entry["met"] is False and "x: gap 50.0 pts" in entry["measured"]
    shift["rows"]["reference"]["0"] = _row("0" * 100, 0.52)  # reference within 5 pts: no goal to meet
    assert R.goal(shift)["applies"] is False and R.summary({"shifts": {"x": shift}}) == []
