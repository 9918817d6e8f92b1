"""The time-series encoder, ROCKET and DTW, the controls, and a fit on a real UCR set."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import transferkit as tk
from transferkit.backbones import get_backbone, list_models
from transferkit.backbones.timeseries import WEIGHTS, load_encoder
from transferkit.classical import Rocket, load_handmade, save_handmade
from transferkit.controls import BASELINES
from transferkit.data import from_arrays, prepare_data
from transferkit.errors import UserInputError
from transferkit.series_features import dtw_distances

UCR = Path(__file__).parent / "data" / "ucr" / "UnitTest"


def _naive_dtw(a: np.ndarray, b: np.ndarray) -> float:
    """Textbook DTW (no band) of two z-normalised univariate series."""
    za, zb = [(x - x.mean()) / x.std() for x in (a, b)]
    d = np.full((len(za) + 1, len(zb) + 1), np.inf)
    d[0, 0] = 0
    for i in range(1, len(za) + 1):
        for j in range(1, len(zb) + 1):
            d[i, j] = (za[i - 1] - zb[j - 1]) ** 2 + min(d[i - 1, j], d[i, j - 1], d[i - 1, j - 1])
    return float(d[-1, -1])


def test_zoo_lists_the_encoder_offline():
    row = next(r for r in list_models() if r["name"] == "ts-fcn-ucr")
    assert (row["modality"], row["dim"], row["available"]) == ("timeseries", 128, True)
    assert WEIGHTS.stat().st_size < 2_000_000


def test_encoder_masks_padding_normalises_and_pools_channels():
    b = get_backbone("ts-fcn-ucr")
    rng = np.random.default_rng(0)
    short, long_ = rng.normal(size=(1, 40)).astype(np.float32), rng.normal(size=(1, 90)).astype(np.float32)
    alone = b.embed([short])
    padded = b.embed([short, long_])[:1]  # padded to 90 steps in this batch
    assert torch.allclose(alone, padded, atol=1e-5)
    assert torch.allclose(b.embed([short * 7.0 + 3.0]), alone, atol=1e-4)  # z-normalised
    two = np.concatenate([short, short[:, ::-1].copy()])
    both = b.embed([two])
    assert torch.allclose(both, (alone + b.embed([short[:, ::-1].copy()])) / 2, atol=1e-5)
    assert b.embed([rng.normal(size=(1, 2000))]).shape == (1, 128)  # resampled to max_length
    assert [n for n, _ in b.layer_groups()] == ["block0", "block1", "block2"]
    assert get_backbone("ts-fcn-ucr", layer=0).embed([short]).shape == (1, 64)
    with pytest.raises(UserInputError, match="missing"):
        b.embed([np.array([[1.0, np.nan, 2.0, 3.0]], np.float32)])


def test_weights_are_checked_against_their_sha256(tmp_path):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(WEIGHTS.read_bytes()[:-1] + b" ")
    with pytest.raises(UserInputError, match="sha256"):
        load_encoder(bad)


def test_dtw_matches_the_textbook_recursion_with_a_full_band():
    rng = np.random.default_rng(1)
    a = [rng.normal(size=(1, 12)), rng.normal(size=(1, 9))]
    b = [rng.normal(size=(1, 10)), a[0]]
    got = dtw_distances(a, b, window=1.0)
    want = np.array([[_naive_dtw(x[0], y[0]) for y in b] for x in a])
    assert np.allclose(got, want, rtol=1e-4) and got[0, 1] == pytest.approx(0, abs=1e-6)


def test_rocket_state_round_trips_without_pickle():
    X = np.random.default_rng(0).normal(size=(6, 2, 30)).astype(np.float32)
    ds = from_arrays(X, None, modality="timeseries")
    r = Rocket(n_kernels=50, seed=3).fit(ds)
    again = load_handmade(save_handmade(r, "h."), "h.")
    assert isinstance(again, Rocket) and np.array_equal(r.transform(ds), again.transform(ds))
    assert r.transform(ds).shape == (6, 100)


def test_classical_controls_on_a_real_ucr_set():
    p = prepare_data(UCR, skip_bad=True)
    classes = p.train.classes
    y = np.array([classes.index(v) for v in p.train.labels])
    yt = np.array([classes.index(v) for v in p.test.labels])
    for name in ("rocket-logreg", "dtw-1nn"):
        out, _ = BASELINES.get(name)(p.train, y, p.test, 0)
        assert out.shape == (len(p.test), 2)
        assert (out.argmax(1) == yt).mean() >= 0.8, name  # Chinatown: both are above 0.9 in the literature


def test_fit_on_series_reports_transfer_and_three_controls(tmp_path):
    out = tmp_path / "run"
    tk.fit(data=str(UCR), skip_bad=True, out=str(out), log=None, select=False)
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["controls"]) == {"random-init", "rocket-logreg", "dtw-1nn"}
    assert m["test"]["accuracy"] >= 0.7
    assert json.loads((out / "config.json").read_text())["config"]["model"] == "ts-fcn-ucr"


def test_lora_adapts_the_encoders_1d_convolutions():
    from transferkit.backbones.timeseries import FCNEncoder
    from transferkit.strategies.lora import default_targets

    assert default_targets(FCNEncoder()) == ["blocks.0.0", "blocks.1.0", "blocks.2.0"]


def test_series_augment_keeps_padding_and_channels_together():
    from transferkit.backbones.timeseries import prepare_series
    from transferkit.training.augment import SeriesAugment, make_augment

    rng = np.random.default_rng(0)
    one = rng.normal(size=(1, 30)).astype(np.float32)
    values, mask, c = prepare_series([np.concatenate([one, one]), rng.normal(size=(2, 20)).astype(np.float32)])
    torch.manual_seed(0)
    out = SeriesAugment(jitter=0.0, scaling=0.2, window=0.5)(values, mask, c)
    assert out.shape == values.shape and torch.all(out[~mask.unsqueeze(1)] == 0)  # padding stays zero
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], values[0])  # one series: one window
    with pytest.raises(UserInputError, match="jitter, scaling, window"):
        make_augment({"crop_scale": [0.5, 1]}, "timeseries")


def test_finetune_with_series_augmentation_runs(tmp_path):
    model = tk.fit(data=str(UCR), skip_bad=True, strategy="finetune", log=None, control=False, select=False,
                   strategy_params={"augment": {"jitter": 0.05, "window": 0.8}, "epochs": 2, "min_steps": 1})
    assert model.metrics["test"]["accuracy"] > 0.5


def test_rank_reports_the_nearest_pretraining_set():
    from transferkit.backbones.timeseries import PRETRAIN_SETS
    from transferkit.ranking import rank

    r = rank(str(UCR), ["ts-fcn-ucr", "ts-fcn-ucr@0"], skip_bad=True, log=None)
    sim = r.data["source_similarity"]
    assert set(sim) == set(PRETRAIN_SETS) and all(v >= 0 for v in sim.values())
    assert any(n.startswith(f"Nearest pre-training set of ts-fcn-ucr: {min(sim, key=sim.get)}") for n in r.notes)
    assert [row.dim for row in sorted(r.rows, key=lambda row: row.dim)] == [64, 128]
