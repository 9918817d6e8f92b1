"""The command line of forecasting: ``fit --task forecast --horizon H`` and ``predict`` on a
forecasting run (:mod:`transferkit.forecast_pipeline`).  Layer 8, beside ``cli``."""
from __future__ import annotations

import argparse
import sys

from .errors import UserInputError


def add_fit_options(f: argparse.ArgumentParser) -> None:
    """``fit``'s forecasting options (used with ``--task forecast``)."""
    g = f.add_argument_group("forecasting (--task forecast)")
    g.add_argument("--horizon", type=int, metavar="H", help="steps ahead to forecast (1-24)")
    g.add_argument("--windows", type=int, metavar="N", help="rolling-origin backtest windows per series (default 5)")
    g.add_argument("--season", type=int, metavar="M", help="seasonal period, e.g. 12 for monthly data (default: "
                                                           "inferred per series from its autocorrelation)")


def cmd_fit_forecast(a: argparse.Namespace) -> int:
    from .forecast_pipeline import ForecastConfig, fit_forecast

    if a.horizon is None:
        raise UserInputError("--task forecast needs --horizon H (the steps ahead to forecast)",
                             hint="e.g. --horizon 12 for a year of monthly data")
    if not a.data:
        raise UserInputError("--task forecast needs --data (series: --series-column NAME, or long format "
                             "id,time,value)")
    opts = {k: v for k, v in (("windows", a.windows), ("season", a.season), ("seed", a.seed), ("out", a.out),
                              ("strategy", a.strategy), ("finetune_steps", a.max_steps),
                              ("scratch_steps", a.max_steps)) if v is not None}
    cfg = ForecastConfig(data=a.data, horizon=a.horizon, series_column=a.text_column, control=not a.no_control,
                         **({"model": a.model} if a.model else {}), **opts)
    run = fit_forecast(cfg, log=lambda m: print(m, file=sys.stderr))
    m = run.metrics
    t = m["test"]
    print(f"forecast: MASE {t['mase']:.3f} [{t['mase_ci'][0]:.3f}, {t['mase_ci'][1]:.3f}], sMAPE {t['smape']:.1f}%"
          + (f", scaled CRPS {t['crps']:.3f}" if "crps" in t else "") + f" over {t['n_windows']} backtest windows")
    for name, v in m.get("variants", {}).items():
        print(f"  {name}: MASE {v['mase']:.3f}")
    for name, v in m.get("controls", {}).items():
        print(f"  control {name}: MASE {v['mase']:.3f}")
    if "verdict" in m:
        print(f"verdict: {m['verdict'].upper()} — {m['verdict_explanation']}")
    if run.run_dir:
        print(f"run written to {run.run_dir}/ (forecast: {run.run_dir / 'forecast.csv'}; report: "
              f"{run.run_dir / 'report.html'})")
    return 0


def cmd_predict_forecast(a: argparse.Namespace) -> int:
    from .forecast_pipeline import predict_forecast
    from .predict import write_predictions

    rows = [r for data in a.inputs for r in predict_forecast(a.run, data, series_column=a.text_column)]
    write_predictions(rows, a.out)
    if a.out:
        print(f"{len(rows)} forecast rows written to {a.out}", file=sys.stderr)
    return 0
