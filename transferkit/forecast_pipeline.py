"""``fit --task forecast --horizon H``: the pre-trained forecaster against seasonal naive, ETS,
ARIMA and the same network trained from scratch, in a rolling-origin backtest, with a verdict.

    read series -> season per series -> backtest windows -> every model on every window
    -> MASE / sMAPE / pinball / CRPS with intervals over windows -> verdict vs best control
    -> the model refitted on the whole series -> the next H values with quantiles -> run directory

Windows: each series is cut at ``windows`` origins (:func:`~.tasks.backtest.rolling_origins`);
at window k every series' history up to its k-th origin is the training data of that window's
models (one fine-tuning over all series' histories, the statistical controls per series).  Every
window is divided by its own MASE scale before scoring (:mod:`.tasks.forecast`).

The run directory holds ``config.json``, ``metrics.json``, ``forecast.csv`` (the next H values of
every series with their quantiles), ``backtest.csv`` (every window's forecasts), the adapted
network (``strategy.safetensors``), ``report.html`` and the card, written last.  Layer 7.
"""
from __future__ import annotations

import csv
import io
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .backbones.forecaster import ForecasterNet
from .data.readers import read_path
from .data.report import ValidationReport
from .errors import UserInputError
from .forecast_controls import control_forecasts
from .forecast_model import ADAPTATIONS, FINETUNE, SCRATCH, Probe, adapt, check_horizon, forecast, scratch
from .runs import RunDir
from .tasks.backtest import infer_season, naive_scale, rolling_origins
from .tasks.base import Outputs
from .tasks.forecast import FORECAST, QUANTILES, median_of, per_window

CONTROLS = ("seasonal-naive", "ets", "arima", "scratch")
_LONG_ID = re.compile(r" id '(.*)' \(line \d+\)$")
Log = Callable[[str], None]


@dataclass(frozen=True)
class ForecastConfig:
    """A forecasting fit, as ``config.json`` records it.

    Attributes:
        data: a table with one series per row (``series_column``), a long-format table
            ``id,time,value``, or a ``.npy``/``.npz``/``.ts`` file of series.
        horizon: H, the steps to forecast (1 to the forecaster's 24).
        windows: backtest origins per series.
        season: the seasonal period (``None``: inferred per series from its autocorrelation).
        strategy: ``finetune`` (default), ``zero-shot`` or ``probe``.
        finetune_steps / scratch_steps: training steps (``None``: 400 each, :data:`~.forecast_model.FINETUNE`).
    """

    data: str
    horizon: int
    series_column: str | None = None
    windows: int = 5
    season: int | None = None
    strategy: str = "finetune"
    model: str = "tk-forecaster"
    seed: int = 0
    n_boot: int = 1000
    control: bool = True
    out: str | None = None
    finetune_steps: int | None = None
    scratch_steps: int | None = None
    task: str = field(default="forecast", init=False)

    def __post_init__(self):
        check_horizon(self.horizon)
        if self.strategy not in ADAPTATIONS:
            raise UserInputError(f"--strategy {self.strategy}: a forecast adapts the forecaster by "
                                 f"{', '.join(ADAPTATIONS)}", hint="pass --strategy finetune")
        if self.model != "tk-forecaster":
            raise UserInputError(f"--model {self.model}: forecasting transfer uses the zoo's tk-forecaster",
                                 hint="leave out --model (or pass --model tk-forecaster)")
        if self.windows < 1 or (self.season is not None and self.season < 1):
            raise UserInputError("--windows and --season must be >= 1")


@dataclass
class ForecastRun:
    """What :func:`fit_forecast` gives back: ``metrics`` (metrics.json), ``forecast`` rows
    (the next H values per series), ``run_dir``."""

    metrics: dict[str, Any]
    forecast: list[dict[str, Any]]
    run_dir: Path | None = None


def read_forecast_series(data: str, series_column: str | None) -> list[tuple[str, np.ndarray]]:
    """``[(name, values (T,) float64)]``: the first channel of every series in ``data``.

    Raises:
        UserInputError: unreadable rows, or a series with missing values (named by id).
    """
    report = ValidationReport()
    ds = read_path(Path(data), [series_column] if series_column else None, None, "timeseries", report, "data",
                   label_optional=True)
    if isinstance(ds, tuple):
        ds = ds[0]
    if report.errors:
        raise UserInputError(f"{data}: the series have problems (a forecast needs every series complete):\n"
                             f"{report.summary()}", hint="fix or remove those series")
    out = []
    for origin, item in zip(ds.origins, ds.inputs):
        v = np.asarray(item, dtype=np.float64)[0]
        if not np.isfinite(v).all():
            k = int(np.flatnonzero(~np.isfinite(v))[0])
            raise UserInputError(f"{origin}: the series has a missing value at step {k + 1} (of {len(v)})",
                                 hint="fill the gaps (e.g. interpolate) or cut the series after the last gap: "
                                      "the statistical controls need complete series")
        found = _LONG_ID.search(str(origin))  # long format: the id itself names the series
        out.append((found.group(1) if found else str(origin), v))
    if not out:
        raise UserInputError(f"{data} holds no series")
    return out


def _scaled(values: np.ndarray, loc: float, scale: float) -> np.ndarray:
    return (np.asarray(values, dtype=np.float64) - loc) / scale


def backtest(series: list[tuple[str, np.ndarray]], cfg: ForecastConfig, seasons: list[int],
             say: Log) -> dict[str, Any]:
    """Every model on every window.  Returns ``{"y": (W, H), "models": {name: (W, H, Q)}`` (all
    divided by each window's MASE scale), ``"rows"`` (backtest.csv), ``"fallbacks"``}."""
    H = cfg.horizon
    origins = [rolling_origins(len(v), H, cfg.windows, min_train=max(2 * m, 8), name=name)
               for (name, v), m in zip(series, seasons)]
    models: dict[str, list[np.ndarray]] = {}
    ys, rows, fallbacks, scales = [], [], {"ets": 0, "arima": 0}, []
    variants = ["transfer"] + (["zero-shot"] if cfg.strategy != "zero-shot" else [])
    for k in range(cfg.windows):
        t = time.perf_counter()
        hist = [v[:o[k]] for (_, v), o in zip(series, origins)]
        net, probe = adapt(cfg.strategy, hist, H, seed=cfg.seed + k, steps=cfg.finetune_steps)
        got = {"transfer": forecast(net, hist, H, probe)}
        if "zero-shot" in variants:
            got["zero-shot"] = forecast(adapt("zero-shot", hist, H)[0], hist, H)
        if cfg.control:
            got["scratch"] = forecast(scratch(hist, H, seed=cfg.seed + k, steps=cfg.scratch_steps), hist, H)
        for i, ((name, v), m) in enumerate(zip(series, seasons)):
            o = origins[i][k]
            scale = naive_scale(hist[i], m)
            future = v[o:o + H]
            per = {key: got[key][i] for key in got}
            if cfg.control:
                for c, (q, fell) in control_forecasts(hist[i], H, m).items():
                    per[c] = q
                    if c in fallbacks:
                        fallbacks[c] += int(fell)
            ys.append(_scaled(future, 0.0, scale))
            scales.append(scale)
            for key, q in per.items():
                models.setdefault(key, []).append(_scaled(q, 0.0, scale))
                mid = median_of(q[None])[0]
                rows.extend({"series": name, "window": k + 1, "origin": o, "step": h + 1, "model": key,
                             "actual": float(future[h]), "forecast": float(mid[h]),
                             "q10": float(q[h, 0]), "q90": float(q[h, -1])} for h in range(H))
        say(f"window {k + 1}/{cfg.windows}: {len(series)} series, {time.perf_counter() - t:.1f} s")
    return {"y": np.stack(ys), "models": {k: np.stack(v) for k, v in models.items()}, "rows": rows,
            "fallbacks": fallbacks, "origins": origins, "scales": scales}


def _per_series(series, cfg: ForecastConfig, bt: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each series' MASE per model, averaged over its windows (windows are ordered k-major)."""
    out = {}
    n = len(series)
    for i, (name, _) in enumerate(series):
        idx = [k * n + i for k in range(cfg.windows)]
        out[name] = {key: float(per_window(bt["y"][idx], q[idx])["mase"].mean()) for key, q in bt["models"].items()}
    return out


def fit_forecast(cfg: ForecastConfig | None = None, *, series: list[tuple[str, np.ndarray]] | None = None,
                 log: Log | None = print, **fields: Any) -> ForecastRun:
    """Backtest, compare, refit on the whole series and forecast the next H values (see the module).

    Args:
        cfg: a :class:`ForecastConfig`; or its fields as keywords (``data=..., horizon=12``).
        series: ``[(name, values (T,))]`` in memory instead of reading ``cfg.data`` (then
            ``data`` only names them in config.json).
        log: where progress lines go (``None``: silent).
    """
    cfg = cfg or ForecastConfig(**fields)
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    if series is None:
        series = read_forecast_series(cfg.data, cfg.series_column)
    else:
        series = [(str(n), np.asarray(v, dtype=np.float64).reshape(-1)) for n, v in series]
    seasons = [cfg.season or infer_season(v) for _, v in series]
    say(f"{len(series)} series; horizon {cfg.horizon}; {cfg.windows} backtest windows; seasonal period "
        f"{', '.join(sorted({str(m) for m in seasons}))}{'' if cfg.season else ' (inferred; --season to set)'}")
    run = RunDir(cfg.out) if cfg.out else None
    if run is not None:
        run.begin()
    bt = backtest(series, cfg, seasons, say)
    y, models = bt["y"], bt["models"]
    kw = {"n_boot": cfg.n_boot, "seed": cfg.seed}
    metrics: dict[str, Any] = {
        "task": "forecast", "horizon": cfg.horizon, "windows": cfg.windows, "strategy": cfg.strategy,
        "model": cfg.model, "n_series": len(series), "seasons": {n: m for (n, _), m in zip(series, seasons)},
        "quantiles": list(QUANTILES), "test": FORECAST.metrics(y, models["transfer"], **kw)}
    if "zero-shot" in models:
        metrics["variants"] = {"zero-shot": FORECAST.metrics(y, models["zero-shot"], **kw)}
    if cfg.control:
        controls = {c: Outputs(models[c]) for c in CONTROLS}
        v = FORECAST.verdict(y, Outputs(models["transfer"]), controls, n_boot=max(cfg.n_boot, 2000), seed=cfg.seed)
        metrics.update(controls={c: FORECAST.metrics(y, models[c], **kw) for c in CONTROLS}, control=v["control"],
                       controls_gain=v["controls"], transfer_gain=v["transfer_gain"],
                       transfer_gain_ci=v["transfer_gain_ci"], verdict=v["verdict"],
                       verdict_explanation=v["explanation"],
                       fallbacks=bt["fallbacks"])
    metrics["per_series"] = _per_series(series, cfg, bt)
    say(f"backtest MASE {metrics['test']['mase']:.3f}" + (
        f"; best control {metrics['control']['name']} {metrics['control']['mase']:.3f}; verdict: {metrics['verdict']}"
        if cfg.control else ""))
    histories = [v for _, v in series]
    net, probe = adapt(cfg.strategy, histories, cfg.horizon, seed=cfg.seed, steps=cfg.finetune_steps)
    ahead = forecast(net, histories, cfg.horizon, probe)
    rows = forecast_rows([n for n, _ in series], histories, ahead)
    metrics["timings"] = {"total_s": time.perf_counter() - t0}
    if run is not None:
        _write(run, cfg, metrics, bt, rows, series, net, probe)
    return ForecastRun(metrics, rows, run.path if run is not None else None)


def forecast_rows(names: list[str], histories: list[np.ndarray], q: np.ndarray) -> list[dict[str, Any]]:
    """One row per series and step ahead: ``series, step, forecast`` (the median) and ``q10 ... q90``."""
    rows = []
    for name, h, qs in zip(names, histories, q):
        for step in range(qs.shape[0]):
            row = {"series": name, "step": len(h) + step + 1, "forecast": float(median_of(qs[None])[0, step])}
            row.update({f"q{round(100 * tau):02d}": float(qs[step, j]) for j, tau in enumerate(QUANTILES)})
            rows.append(row)
    return rows


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _model_tensors(net: ForecasterNet, probe: Probe | None) -> dict[str, torch.Tensor]:
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    if probe is not None:
        tensors.update({"probe.coef": torch.from_numpy(probe.ridge_.coef_), "probe.intercept":
                        torch.from_numpy(np.atleast_1d(probe.ridge_.intercept_)),
                        "probe.offsets": torch.from_numpy(probe.offsets_)})
    return tensors


def _write(run: RunDir, cfg: ForecastConfig, metrics, bt, rows, series, net, probe) -> None:
    from .report.forecast import render_forecast_report

    run.write_config({k: v for k, v in asdict(cfg).items()})
    run.write_json("metrics.json", metrics)
    run.write_text("forecast.csv", _csv(rows))
    run.write_text("backtest.csv", _csv(bt["rows"]))
    weights = run.write_weights(_model_tensors(net, probe), strategy=f"forecast-{cfg.strategy}", classes=[])
    run.write_text("report.html", render_forecast_report(metrics, series, rows))
    run.write_card({"task": "forecast", "strategy": cfg.strategy, "horizon": cfg.horizon, "model": cfg.model,
                    "quantiles": list(QUANTILES), "seasons": metrics["seasons"], "weights": weights,
                    "metrics": {"test.mase": metrics["test"]["mase"], "verdict": metrics.get("verdict")}})


def is_forecast_run(path: str | Path) -> bool:
    """Whether ``path`` holds a finished forecasting run."""
    run = RunDir(path)
    return run.is_complete() and run.card().get("task") == "forecast"


def load_forecaster(path: str | Path) -> tuple[dict[str, Any], ForecasterNet, Probe | None]:
    """A forecasting run's card, network and probe (from its safetensors file, hash-checked)."""
    run = RunDir(path)
    card = run.card()
    tensors = run.read_weights(card)
    net = ForecasterNet()
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    net.eval()
    probe = None
    if "probe.coef" in tensors:
        from sklearn.linear_model import Ridge

        probe = Probe()
        probe.ridge_ = Ridge()
        probe.ridge_.coef_ = tensors["probe.coef"].numpy()
        probe.ridge_.intercept_ = tensors["probe.intercept"].numpy()
        probe.ridge_.n_features_in_ = probe.ridge_.coef_.shape[1]
        probe.offsets_ = tensors["probe.offsets"].numpy()
    return card, net, probe


def predict_forecast(run: str | Path, data: str, *, series_column: str | None = None,
                     horizon: int | None = None) -> list[dict[str, Any]]:
    """The next ``horizon`` (default: the run's) values of every series in ``data`` with their
    quantiles, by the run's adapted forecaster: rows as ``forecast.csv``."""
    card, net, probe = load_forecaster(run)
    h = horizon or int(card["horizon"])
    check_horizon(h)
    if probe is not None and h > card["horizon"]:
        raise UserInputError(f"--horizon {h}: this run's probe was fitted for {card['horizon']} steps",
                             hint=f"pass --horizon {card['horizon']} or less")
    series = read_forecast_series(data, series_column)
    histories = [v for _, v in series]
    return forecast_rows([n for n, _ in series], histories, forecast(net, histories, h, probe))


__all__ = ["FINETUNE", "SCRATCH", "ForecastConfig", "ForecastRun", "fit_forecast", "is_forecast_run",
           "predict_forecast", "read_forecast_series"]
