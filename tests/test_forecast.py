"""Forecasting transfer (#22): backtest windows, metrics, controls, the forecaster, the pipeline,
the command line.  Synthetic seasonal series plus one bundled real series (statsmodels' Nile)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from transferkit.errors import UserInputError
from transferkit.tasks.backtest import infer_season, naive_scale, rolling_origins, scaled_pairs, training_windows
from transferkit.tasks.base import Outputs
from transferkit.tasks.forecast import FORECAST, QUANTILES, per_window


def seasonal(n: int, period: int = 4, seed: int = 0, trend: float = 0.05, noise: float = 0.2) -> np.ndarray:
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return 10 + 3 * np.sin(2 * np.pi * t / period) + trend * t + rng.normal(0, noise, n)


def write_long(path, series: dict[str, np.ndarray]) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "time", "value"])
        for sid, v in series.items():
            w.writerows([sid, t, f"{x:.5f}"] for t, x in enumerate(v))
    return str(path)


# ----------------------------------------------------------------------------- pure parts
def test_rolling_origins_expanding_windows_end_at_the_series_end():
    assert rolling_origins(50, 5, 3) == [35, 40, 45]
    assert rolling_origins(50, 5, 3, step=2) == [41, 43, 45]
    with pytest.raises(UserInputError, match="shop-7 has 20 values; 3 backtest windows of 5 steps need at least 23"):
        rolling_origins(20, 5, 3, min_train=8, name="shop-7")


def test_naive_scale_and_season_inference():
    y = np.array([1.0, 2, 3, 1, 2, 3, 1, 2, 4])
    assert naive_scale(y, 3) == pytest.approx(np.mean(np.abs(y[3:] - y[:-3])))
    assert naive_scale(y[:2], 3) == pytest.approx(1.0)  # too short for the season: one-step naive
    assert naive_scale(np.ones(10), 1) > 0  # flat: a floor, never a division by zero
    assert infer_season(seasonal(120, 12)) == 12
    assert infer_season(seasonal(120, 4)) == 4
    assert infer_season(np.random.default_rng(0).normal(size=200).cumsum()) == 1


def test_training_pairs_are_scaled_per_window():
    s = [np.arange(100, dtype=float) * 1000 + 5e6]
    cuts = training_windows(s, 16, 4, min_context=8)
    assert cuts[0] == (0, 8) and cuts[-1] == (0, 96)
    x, y = scaled_pairs(s, cuts, 16, 4)
    assert x.shape == (len(cuts), 2, 16) and y.shape == (len(cuts), 4)
    assert x[0, 1, :8].sum() == 0 and x[0, 1, 8:].all()  # the short first context is padded and masked
    assert np.abs(x[:, 0]).max() < 3 and np.abs(y).max() < 10  # scale-free whatever the level


def test_metrics_by_hand_and_the_verdict():
    y = np.array([[1.0, 2.0], [3.0, 4.0]])
    point = np.array([[1.5, 2.0], [3.0, 5.0]])
    w = per_window(y, point)
    assert w["mase"].tolist() == [0.25, 0.5]
    assert w["smape"][0] == pytest.approx(100 * (2 * 0.5 / 2.5) / 2)
    q = np.stack([point - 1, point - 0.5, point, point + 0.5, point + 1], axis=-1)
    m = FORECAST.metrics(y, q, n_boot=200)
    assert m["mase"] == pytest.approx(0.375) and m["crps"] == pytest.approx(2 * m["pinball"])
    assert m["n_windows"] == 2 and m["horizon"] == 2 and len(m["mase_ci"]) == 2
    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 3))
    good, bad = y + 0.05 * rng.normal(size=y.shape), y + 2 * rng.normal(size=y.shape)
    v = FORECAST.verdict(y, Outputs(good), {"naive": Outputs(bad)}, n_boot=500)
    assert v["verdict"] == "helped" and v["control"]["name"] == "naive" and "MASE" in v["explanation"]
    assert FORECAST.verdict(y, Outputs(bad), {"naive": Outputs(good)}, n_boot=500)["verdict"] == "hurt"


# ----------------------------------------------------------------------------- controls
def test_controls_seasonal_naive_exact_and_ets_arima_beat_it_on_a_trended_season():
    pytest.importorskip("statsmodels")
    from transferkit.forecast_controls import control_forecasts, seasonal_naive

    y = np.array([1.0, 2, 3, 4, 5, 6, 7, 8])
    q = seasonal_naive(y, 6, 4)
    assert q.shape == (6, len(QUANTILES)) and q[:, 2].tolist() == [5, 6, 7, 8, 5, 6]
    assert (np.diff(q, axis=1) >= 0).all()
    s = seasonal(72, 4, trend=0.3, noise=0.1)
    hist, future = s[:64], s[64:]
    out = control_forecasts(hist, 8, 4)
    scale = naive_scale(hist, 4)
    mase = {k: np.abs(q[:, 2] - future).mean() / scale for k, (q, _) in out.items()}
    assert not any(fell for _, fell in out.values())
    assert mase["ets"] < mase["seasonal-naive"] and mase["arima"] < mase["seasonal-naive"]


# ----------------------------------------------------------------------------- the forecaster
def test_forecaster_backbone_contract_and_shipped_weights():
    from transferkit.backbones import BACKBONES, get_backbone
    from transferkit.backbones.forecaster import MAX_HORIZON, ForecasterNet, load_net

    b = get_backbone("tk-forecaster")
    assert b.modality == "timeseries" == BACKBONES.entry("tk-forecaster").meta["modality"]
    items = [np.arange(10.0), np.stack([seasonal(200), np.zeros(200)]).astype(np.float32)]  # short; (C, T)
    f = b.embed(items)
    assert f.shape == (2, b.num_features) and np.isfinite(f.numpy()).all()
    r = b.randomized(0)
    assert r.cache_key() != b.cache_key() and not np.allclose(r.embed(items).numpy(), f.numpy())
    n = sum(p.numel() for p in ForecasterNet().parameters())
    assert BACKBONES.entry("tk-forecaster").meta["params"] == n
    head = b.source_head()
    assert sum(p.numel() for _, ps in b.layer_groups() for p in ps) == n - sum(p.numel() for p in head.parameters())
    assert head.out_features == MAX_HORIZON * len(QUANTILES)
    assert load_net().state_dict().keys() == ForecasterNet().state_dict().keys()
    # the zoo lists it without importing torch (zoo.py spells these out): they must agree with the network
    from transferkit.backbones.forecaster import HIDDEN, PRETRAIN_SERIES

    meta = BACKBONES.entry("tk-forecaster").meta
    assert meta["dim"] == HIDDEN == b.num_features and all(s in meta["source"] for s in PRETRAIN_SERIES)
    assert meta["head"] == f"{MAX_HORIZON}-step quantiles {list(QUANTILES)}"


def test_pretrained_forecaster_beats_its_random_init_on_a_held_out_real_series():
    """Nile flow (statsmodels; never seen in pre-training): zero-shot MASE of the shipped weights
    against the same network untrained, over 5 windows of 10 years."""
    pytest.importorskip("statsmodels")
    from transferkit.backbones.forecaster import HELD_OUT_SERIES, ForecasterNet, load_net
    from transferkit.data.statsmodels_series import bundled_series
    from transferkit.forecast_model import forecast

    assert "nile" in HELD_OUT_SERIES
    nile = bundled_series("nile")["nile/volume"]
    origins = rolling_origins(len(nile), 10, 5)
    hists = [nile[:o] for o in origins]
    y = np.stack([nile[o:o + 10] / naive_scale(nile[:o], 1) for o in origins])

    def mase(net):
        q = forecast(net, hists, 10)
        return FORECAST.metrics(y, q / np.array([naive_scale(h, 1) for h in hists])[:, None, None], n_boot=100)["mase"]

    assert mase(load_net()) < mase(ForecasterNet())


# ----------------------------------------------------------------------------- pipeline and CLI
def test_fit_forecast_cli_run_directory_and_predict(tmp_path, capsys):
    pytest.importorskip("statsmodels")
    from transferkit.cli import main

    data = write_long(tmp_path / "sales.csv", {"north": seasonal(60, 4, 1), "south": seasonal(60, 4, 2, trend=-0.02)})
    out = tmp_path / "run"
    assert main(["fit", "--data", data, "--task", "forecast", "--horizon", "4", "--windows", "2", "--season", "4",
                 "--max-steps", "20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "forecast: MASE" in printed and "verdict:" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "forecast" and m["test"]["n_windows"] == 4 and m["test"]["horizon"] == 4
    for key in ("mase", "smape", "crps", "pinball"):
        assert np.isfinite(m["test"][key])
    assert m["control"]["name"] in ("seasonal-naive", "ets", "arima", "scratch")
    assert m["control"]["mase"] == min(c["mase"] for c in m["controls"].values())
    assert set(m["per_series"]) == {"north", "south"} and "zero-shot" in m["variants"]
    assert m["verdict"] in ("helped", "hurt", "no-difference")
    rows = list(csv.DictReader((out / "forecast.csv").open()))
    assert len(rows) == 8 and rows[0]["series"] == "north" and rows[0]["step"] == "61"
    assert all(float(r["q10"]) <= float(r["forecast"]) <= float(r["q90"]) for r in rows)
    html = (out / "report.html").read_text()
    assert "history and forecast of north" in html and m["verdict"] in html
    assert main(["predict", str(out), data, "--out", str(tmp_path / "pred.csv")]) == 0
    again = list(csv.DictReader((tmp_path / "pred.csv").open()))
    assert [r["forecast"] for r in again] == [r["forecast"] for r in rows]  # the saved model, reloaded
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", data]) == 2
    assert "is a forecasting run: its evaluation is its rolling-origin backtest" in capsys.readouterr().err


def test_forecast_input_errors_name_the_problem(tmp_path, capsys):
    from transferkit.cli import main
    from transferkit.forecast_pipeline import ForecastConfig, fit_forecast

    gap = seasonal(40)
    gap[17] = np.nan
    data = write_long(tmp_path / "gap.csv", {"ok": seasonal(40), "holey": gap})
    with pytest.raises(UserInputError, match="(?s)series have problems.*id 'holey'.*missing"):
        fit_forecast(data=data, horizon=4, windows=2, log=None)
    with pytest.raises(UserInputError, match="1 to 24 steps"):
        ForecastConfig(data=data, horizon=30)
    short = write_long(tmp_path / "short.csv", {"tiny": seasonal(12)})
    with pytest.raises(UserInputError, match="tiny has 12 values"):
        fit_forecast(data=short, horizon=4, windows=3, season=4, log=None)
    assert main(["fit", "--data", data, "--task", "forecast"]) == 2
    assert "needs --horizon" in capsys.readouterr().err


def test_probe_and_zero_shot_runs_save_and_reload(tmp_path):
    """The probe (ridge heads on the frozen embedding) and zero-shot, in memory, without controls:
    the forecast written and the one `predict` recomputes from the saved tensors agree."""
    from transferkit.forecast_pipeline import fit_forecast, predict_forecast

    series = [("a", seasonal(80, 12, 3)), ("b", seasonal(70, 12, 4))]
    data = write_long(tmp_path / "two.csv", dict(series))
    import transferkit as tk

    for strategy in ("probe", "zero-shot"):
        run = (fit_forecast(data="in-memory", horizon=6, windows=2, strategy=strategy, control=False, n_boot=100,
                            series=series, out=str(tmp_path / strategy), log=None) if strategy == "probe" else
               tk.fit(data=data, task="forecast", horizon=6, windows=2, strategy=strategy, control=False, n_boot=100,
                      out=str(tmp_path / strategy), log=None))
        m = run.metrics
        assert "verdict" not in m and m["test"]["n_windows"] == 4 and np.isfinite(m["test"]["mase"])
        assert ("variants" in m) == (strategy != "zero-shot")
        again = predict_forecast(tmp_path / strategy, data)
        assert [r["series"] for r in again] == [r["series"] for r in run.forecast]
        np.testing.assert_allclose([r["q90"] for r in again], [r["q90"] for r in run.forecast], rtol=1e-5)


def test_series_column_table_zero_shot_without_controls(tmp_path, capsys):
    """One series per row in a list column (--series-column), named by its row; no controls, no verdict."""
    from transferkit.cli import main

    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps({"values": [round(float(x), 4) for x in seasonal(48, 4, i)]})
                              for i in range(3)) + "\n")
    out = tmp_path / "run"
    assert main(["fit", "--data", str(data), "--series-column", "values", "--task", "forecast", "--horizon", "3",
                 "--windows", "2", "--strategy", "zero-shot", "--no-control", "--out", str(out)]) == 0
    assert "verdict" not in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_series"] == 3 and m["test"]["n_windows"] == 6 and "control" not in m
    assert len(list(csv.DictReader((out / "forecast.csv").open()))) == 9
