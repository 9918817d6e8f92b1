"""Transfer metrics of reinforcement learning (Taylor & Stone 2009, "Transfer Learning for
Reinforcement Learning Domains: A Survey", JMLR 10, section 2.1), over seeds, with bootstrap
intervals and the helped / no-difference / hurt verdict.

Every strategy's curve is a ``(S, P)`` array of evaluation returns: S seeds (the same seeds for
every strategy, so seed i of a strategy is paired with seed i of ``scratch``) at P evaluation
steps (the same steps: same algorithm and budget).  Per seed:

- ``jumpstart``: the return at step 0; the strategy's *gain* is its jumpstart over scratch's.
- ``asymptotic_return``: the mean return over the last fifth of the evaluation points (at least one).
- ``area_under_curve``: the trapezoid area under the curve divided by the steps it spans, i.e. the
  mean return over training (in return units, so negative-reward environments read the same way).
- ``time_to_threshold``: the first evaluation step whose return reaches the threshold; a curve that
  never reaches it counts as the budget plus one evaluation interval (censored: the saving is
  then a lower bound).  The default
  threshold is 80% of the way from scratch's mean initial return to the best mean asymptotic return
  of the compared strategies (``--threshold`` sets it).
- ``transfer_ratio``: T&S's (area_transfer - area_scratch) / area_scratch, with areas measured above
  the lowest return of all curves (so they are non-negative).

Intervals are percentile bootstraps over seeds (``tasks.base.bootstrap``: the seeds are resampled
with replacement, pairs kept together).  The verdict uses the area under the curve, T&S's "total
reward": ``helped`` when the whole interval of its gain over scratch is above 0, ``hurt`` when it is
below 0, else ``no-difference`` - as the supervised verdict does with its accuracy gain.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..tasks.base import bootstrap, json_float, json_interval

METRICS = ("jumpstart", "asymptotic_return", "area_under_curve", "time_to_threshold")
#: For which metrics a lower value is better (a gain is then scratch minus the strategy).
LOWER_IS_BETTER = {"time_to_threshold"}


def per_seed(steps: np.ndarray, returns: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """The four metrics of each seed: ``steps (P,)``, ``returns (S, P)`` -> name -> ``(S,)``."""
    steps = np.asarray(steps, dtype=np.float64)
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != len(steps) or len(steps) == 0:
        raise ValueError(f"returns must be (S, {len(steps)}), got {r.shape}")
    tail = max(1, math.ceil(r.shape[1] / 5))
    span = steps[-1] - steps[0]
    if span > 0:
        area = ((r[:, 1:] + r[:, :-1]) / 2 * np.diff(steps)).sum(axis=1) / span
    else:  # a single point (zero-shot without training): the area is that return
        area = r[:, 0].copy()
    reached = r >= threshold
    # never reached: one evaluation interval past the budget, the earliest the next point could have shown it
    censored = steps[-1] + (steps[-1] - steps[-2] if len(steps) > 1 else 0)
    first = np.where(reached.any(axis=1), steps[np.argmax(reached, axis=1)], censored)
    return {"jumpstart": r[:, 0], "asymptotic_return": r[:, -tail:].mean(axis=1), "area_under_curve": area,
            "time_to_threshold": first, "reached": reached.any(axis=1).astype(np.float64)}


def default_threshold(curves: dict[str, np.ndarray], scratch: str = "scratch") -> float:
    """80% of the way from scratch's mean initial return to the best mean asymptotic return."""
    lo = float(np.mean(np.asarray(curves[scratch])[:, 0]))
    hi = max(float(np.mean(np.asarray(c)[:, -max(1, math.ceil(np.shape(c)[1] / 5)):])) for c in curves.values())
    return lo + 0.8 * (hi - lo)


def mean_ci(values: np.ndarray, n_boot: int, seed: int, confidence: float) -> tuple[float, list | None]:
    """Mean of ``values (n,)`` and its percentile-bootstrap interval."""
    n = len(values)
    point, (ci,) = bootstrap(lambda counts: counts @ values / n, n, n_boot, seed, confidence)
    return float(point), json_interval(ci)


def transfer_metrics(steps: list[int], curves: dict[str, np.ndarray], *, threshold: float | None = None,
                     scratch: str = "scratch", n_boot: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, Any]:
    """``metrics.json``'s ``rl`` section (and each strategy's verdict) from the curves.

    Args:
        steps: the P evaluation steps shared by every curve.
        curves: strategy -> ``(S, P)`` returns; must hold ``scratch``.
        threshold: the return of ``time_to_threshold`` (default :func:`default_threshold`).

    Returns:
        ``{"threshold", "seeds", "steps", "<metric>": {name: {"mean", "ci", "per_seed", "gain",
        "gain_ci"}}, "transfer_ratio": {name: float|None}, "reached": {name: share}, "curves": {name:
        {"mean", "ci"}}, "verdicts": {name: verdict}}``; ``gain`` is the strategy minus scratch
        (scratch minus the strategy for time to threshold: steps saved), 0 for scratch itself.
    """
    if scratch not in curves:
        raise ValueError(f"the curves must include {scratch!r}")
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in curves.items()}
    n_seeds = {a.shape[0] for a in arrays.values()}
    if len(n_seeds) != 1:
        raise ValueError(f"every strategy needs the same number of seeds, got {sorted(n_seeds)}")
    thr = default_threshold(arrays, scratch) if threshold is None else float(threshold)
    each = {k: per_seed(np.asarray(steps), a, thr) for k, a in arrays.items()}
    out: dict[str, Any] = {"threshold": thr, "steps": [int(s) for s in steps], "seeds": int(next(iter(n_seeds))),
                           "confidence": confidence}
    for metric in METRICS:
        out[metric] = {}
        for name, values in each.items():
            mean, ci = mean_ci(values[metric], n_boot, seed, confidence)
            diff = values[metric] - each[scratch][metric]
            if metric in LOWER_IS_BETTER:
                diff = -diff
            gain, gain_ci = mean_ci(diff, n_boot, seed, confidence)
            out[metric][name] = {"mean": mean, "ci": ci, "per_seed": values[metric].tolist(), "gain": gain,
                                 "gain_ci": gain_ci}
    low = min(float(a.min()) for a in arrays.values())
    base = float(np.mean(each[scratch]["area_under_curve"])) - low
    out["transfer_ratio"] = {name: (json_float((np.mean(v["area_under_curve"]) - low - base) / base) if base > 0
                                    else None) for name, v in each.items()}
    out["reached"] = {name: float(v["reached"].mean()) for name, v in each.items()}
    out["curves"] = {}
    for name, a in arrays.items():
        point, (ci,) = bootstrap(lambda counts, a=a: counts @ a / len(a), len(a), n_boot, seed, confidence)
        out["curves"][name] = {"mean": np.asarray(point).tolist(), "ci": np.asarray(ci).tolist(),
                               "per_seed": a.tolist()}
    out["verdicts"] = {name: verdict(out, name, scratch) for name in arrays if name != scratch}
    return out


def verdict(m: dict[str, Any], name: str, scratch: str = "scratch") -> dict[str, Any]:
    """helped / no-difference / hurt from the area-under-curve gain's interval, explained with the
    jumpstart and time-to-threshold gains."""
    auc = m["area_under_curve"][name]
    lo, hi = auc["gain_ci"] or [0.0, 0.0]
    level = f"{100 * m['confidence']:g}%"
    js, tt = m["jumpstart"][name], m["time_to_threshold"][name]
    detail = (f"area under the curve (mean return over training) {auc['gain']:+.1f} vs {scratch}, {level} CI "
              f"[{lo:+.1f}, {hi:+.1f}] over {m['seeds']} seeds; jumpstart {js['gain']:+.1f}; time to the "
              f"threshold {m['threshold']:.1f}: {tt['gain']:+.0f} steps saved")
    if lo > 0:
        v, text = "helped", f"Transfer helped: {detail}."
    elif hi < 0:
        v, text = "hurt", f"Transfer hurt (negative transfer): {detail}; training from scratch does better here."
    else:
        v, text = "no-difference", (f"No clear difference: {detail}; the interval includes zero, so more seeds or "
                                    "steps would be needed to tell.")
    return {"verdict": v, "explanation": text, "metric": "area_under_curve", "gain": auc["gain"],
            "gain_ci": auc["gain_ci"], "control": scratch, "confidence": m["confidence"]}
