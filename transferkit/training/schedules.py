"""Learning-rate schedules as multipliers of each parameter group's base rate.

Each schedule is a small callable object ``f(step) -> float`` (not a lambda), so that
``LambdaLR.state_dict()`` stores its fields as plain numbers and a checkpoint never needs
pickle; :func:`make_scheduler` wraps one in :class:`torch.optim.lr_scheduler.LambdaLR`.
Because the multiplier applies to every group's own rate, discriminative (layer-wise) rates
keep their ratios through the whole schedule.

``step`` counts optimizer steps from 0 to ``total - 1``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import UserInputError

SCHEDULES = ("cosine", "onecycle", "slanted", "constant")


def _warmup_steps(total: int, warmup: float | int) -> int:
    """A fraction of ``total`` (``0 <= warmup < 1``) or a count of steps (``>= 1``)."""
    if isinstance(warmup, int) and not isinstance(warmup, bool) and warmup >= 1:
        return min(warmup, total)
    return int(round(float(warmup) * total))


@dataclass
class WarmupCosine:
    """Linear warm-up from 0, then a cosine decay to ``min_ratio`` (SGDR without restarts).

    Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017;
    the warm-up avoids large early updates of Adam before its moment estimates settle.

    Args:
        total: optimizer steps of the whole run.
        warmup: steps of warm-up (a fraction of ``total`` below 1, else a count).
        min_ratio: multiplier reached at the last step.
    """

    total: int
    warmup: float = 0.1
    min_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        w = _warmup_steps(self.total, self.warmup)
        if step < w:
            return (step + 1) / (w + 1)  # never exactly 0: a zero first step wastes a batch
        span = max(self.total - w, 1)
        progress = min((step - w) / span, 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class OneCycle:
    """The 1cycle policy: cosine rise from ``1/div`` to 1, then cosine fall to ``1/(div*final_div)``.

    Smith & Topin, "Super-Convergence", 2018 (the shape of ``torch.optim.lr_scheduler.OneCycleLR``
    with ``anneal_strategy="cos"``; momentum is not cycled here).

    Args:
        total: optimizer steps of the whole run.
        pct_start: share of steps spent rising.
        div: initial rate is ``max / div``.
        final_div: final rate is ``initial / final_div``.
    """

    total: int
    pct_start: float = 0.3
    div: float = 25.0
    final_div: float = 1e4

    def __call__(self, step: int) -> float:
        up = max(int(round(self.pct_start * self.total)) - 1, 1)
        start, end = 1.0 / self.div, 1.0 / (self.div * self.final_div)
        if step <= up:
            t = step / up
            return 1.0 + (start - 1.0) * 0.5 * (1.0 + math.cos(math.pi * t))
        t = min((step - up) / max(self.total - 1 - up, 1), 1.0)
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass
class SlantedTriangular:
    """ULMFiT's slanted triangular rates: a short linear rise, a long linear decay.

    Howard & Ruder, "Universal Language Model Fine-tuning for Text Classification", ACL 2018,
    eq. 3: ``cut = floor(T * cut_frac)``; ``p = t / cut`` before the cut, else
    ``1 - (t - cut) / (cut * (1 / cut_frac - 1))``; ``lr = lr_max * (1 + p (ratio - 1)) / ratio``.

    Args:
        total: optimizer steps ``T``.
        cut_frac: share of steps spent rising (paper: 0.1).
        ratio: how much smaller the lowest rate is than the peak (paper: 32).
    """

    total: int
    cut_frac: float = 0.1
    ratio: float = 32.0

    def __call__(self, step: int) -> float:
        cut = max(int(math.floor(self.total * self.cut_frac)), 1)
        if step < cut:
            p = step / cut
        else:
            p = 1.0 - (step - cut) / max(cut * (1.0 / self.cut_frac - 1.0), 1.0)
        p = min(max(p, 0.0), 1.0)
        return (1.0 + p * (self.ratio - 1.0)) / self.ratio


@dataclass
class Constant:
    """Linear warm-up, then the base rate unchanged."""

    total: int
    warmup: float = 0.0

    def __call__(self, step: int) -> float:
        w = _warmup_steps(self.total, self.warmup)
        return (step + 1) / (w + 1) if step < w else 1.0


def schedule_fn(name: str, total: int, *, warmup: float = 0.1):
    """The multiplier ``f(step)`` of schedule ``name`` over ``total`` optimizer steps.

    ``warmup`` applies to ``cosine`` and ``constant``; ``onecycle`` and ``slanted`` use it as
    their rising share (``pct_start`` / ``cut_frac``) when it is positive.
    """
    if total < 1:
        raise UserInputError(f"a schedule needs at least one step, got total={total}")
    if name == "cosine":
        return WarmupCosine(total, warmup)
    if name == "onecycle":
        return OneCycle(total, pct_start=float(warmup) if 0 < float(warmup) < 1 else 0.3)
    if name == "slanted":
        return SlantedTriangular(total, cut_frac=float(warmup) if 0 < float(warmup) < 1 else 0.1)
    if name == "constant":
        return Constant(total, warmup)
    raise UserInputError(f"unknown schedule {name!r}", hint=f"use one of {', '.join(SCHEDULES)}")


def make_scheduler(optimizer: torch.optim.Optimizer, name: str, total: int, *,
                   warmup: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`schedule_fn` to every parameter group's base rate."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_fn(name, total, warmup=warmup))
