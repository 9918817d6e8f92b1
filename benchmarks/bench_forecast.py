"""Forecasting transfer on real series never seen in pre-training: MASE of tk-forecaster
(zero-shot and fine-tuned) vs seasonal naive vs ETS vs ARIMA vs the same network from scratch.

Targets: every series of ``HELD_OUT_SERIES`` (statsmodels.datasets: elnino, elec_equip, sunspots,
nile, interest_inflation), each its own ``fit_forecast`` (as a user would run it): horizon one
year for monthly (12) and quarterly (4) data, 6 for yearly; 5 rolling-origin windows; the seasonal
period of its sampling.  Prints a per-series table and the averages, writes
benchmarks/results/forecast.json.

    OMP_NUM_THREADS=1 python benchmarks/bench_forecast.py            # ~10 min on a shared CPU
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from transferkit.backbones.forecaster import HELD_OUT_SERIES
from transferkit.data.statsmodels_series import SEASONS, bundled_series
from transferkit.forecast_pipeline import ForecastConfig, fit_forecast

HORIZON = {12: 12, 4: 4, 1: 6}
MODELS = ("transfer", "zero-shot", "scratch", "seasonal-naive", "ets", "arima")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--strategy", default="finetune")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "forecast.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    table, verdicts = {}, {}
    t0 = time.perf_counter()
    for name in HELD_OUT_SERIES:
        m = SEASONS[name]
        for sid, values in bundled_series(name).items():
            cfg = ForecastConfig(data=f"statsmodels:{sid}", horizon=HORIZON[m], windows=a.windows, season=m,
                                 strategy=a.strategy, n_boot=1000)
            t = time.perf_counter()
            run = fit_forecast(cfg, series=[(sid, values)], log=None)
            ps = run.metrics["per_series"][sid]
            table[sid] = {k: ps[k] for k in MODELS}
            verdicts[sid] = {"verdict": run.metrics["verdict"], "control": run.metrics["control"]["name"],
                             "gain_ci": run.metrics["transfer_gain_ci"]}
            print(f"{sid:<28} " + " ".join(f"{k} {ps[k]:.3f}" for k in MODELS)
                  + f"  -> {run.metrics['verdict']} vs {run.metrics['control']['name']} "
                    f"({time.perf_counter() - t:.0f} s)", flush=True)
    avg = {k: float(np.mean([row[k] for row in table.values()])) for k in MODELS}
    print(f"{'average':<28} " + " ".join(f"{k} {avg[k]:.3f}" for k in MODELS))
    wins = {k: sum(row["transfer"] < row[k] for row in table.values()) for k in MODELS if k != "transfer"}
    print("fine-tuned transfer has the lower MASE on: "
          + ", ".join(f"{v}/{len(table)} vs {k}" for k, v in wins.items()))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"per_series": table, "average": avg, "verdicts": verdicts, "wins": wins,
                                       "windows": a.windows, "strategy": a.strategy,
                                       "seconds": time.perf_counter() - t0}, indent=1))
    print(f"wrote {a.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
