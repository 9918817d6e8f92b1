"""Build the shipped ``tk-forecaster`` weights (transferkit/backbones/weights/tk-forecaster.safetensors).

Pre-training data: the statsmodels series of ``PRETRAIN_SERIES`` (co2 monthly, the 12 quarterly
macrodata series, the 5 Danish quarterly series; each also negated, which per-window scaling
makes another plausible series) plus 400 seeded synthetic series (trend + one or two seasonal
cycles of period 4/7/12/24/52 + AR(1) noise + occasional level shifts, in the spirit of the
synthetic pre-training data of Chronos, Ansari et al. 2024).  The series of ``HELD_OUT_SERIES``
(elnino, elec_equip, sunspots, nile, interest_inflation) are never read: they are the targets of
benchmarks/bench_forecast.py.  Every window with 8 to 64 values of context and 24 of future,
scaled per window, trains the network with the pinball loss through transferkit's training loop.

Reproducible: fixed seeds, CPU, one thread (two builds on 2026-12-07 gave bit-identical tensors; the file
has no metadata, so the same tensors are the same bytes, sha256 af55fc24...):
    OMP_NUM_THREADS=1 python benchmarks/build_forecaster.py        # ~2 min on one shared core
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from safetensors.torch import save_file

from transferkit.backbones.forecaster import CONTEXT, MAX_HORIZON, PRETRAIN_SERIES, WEIGHTS, ForecasterNet
from transferkit.data.statsmodels_series import bundled_series
from transferkit.forecast_model import train_net
from transferkit.tasks.backtest import scaled_pairs, training_windows


def synthetic(n: int, seed: int) -> list[np.ndarray]:
    """``n`` seeded synthetic series of 120-400 values."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = np.arange(int(rng.integers(120, 401)))
        y = rng.normal(0, 1) * t / len(t) * rng.choice([0, 1, 3])
        for period in rng.choice([4, 7, 12, 24, 52], size=int(rng.integers(0, 3)), replace=False):
            y = y + rng.uniform(0.3, 2) * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        phi, e = rng.uniform(-0.2, 0.95), rng.normal(0, rng.uniform(0.05, 0.6), len(t))
        ar = np.zeros(len(t))
        for i in range(1, len(t)):
            ar[i] = phi * ar[i - 1] + e[i]
        shifts = np.cumsum((rng.random(len(t)) < 0.005) * rng.normal(0, 2, len(t)))
        out.append(y + ar + shifts + rng.normal(0, 5))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--out", default=str(WEIGHTS))
    a = ap.parse_args()
    torch.set_num_threads(1)
    real = [v for name in PRETRAIN_SERIES for v in bundled_series(name).values()]
    series = real + [-v for v in real] + synthetic(400, seed=0)
    cuts = training_windows(series, CONTEXT, MAX_HORIZON, min_context=8)
    x, y = scaled_pairs(series, cuts, CONTEXT, MAX_HORIZON)
    print(f"{len(real)} real series ({sum(map(len, real))} values), {len(series) - 2 * len(real)} synthetic; "
          f"{len(x)} windows")
    torch.manual_seed(0)
    net = ForecasterNet()
    t = time.perf_counter()
    train_net(net, series, MAX_HORIZON, steps=a.steps, lr=1e-3, seed=0, batch_size=256, x=x, y=y)
    print(f"trained {a.steps} steps in {time.perf_counter() - t:.0f} s")
    # No safetensors metadata: its header order is not stable between runs, the tensors' bytes are.
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
