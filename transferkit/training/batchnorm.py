"""Which BatchNorm layers keep their running statistics during a run: a declared registry.

A strategy that freezes statistics (``finetune(batchnorm="frozen")``) enrols the layers with
:func:`keep_statistics` for the length of its training and takes them out with
:func:`release_statistics`; the loop's :func:`~.loop.set_train_mode` and the strategies'
re-estimation ask :func:`statistics_frozen`.  The set holds weak references, so nothing is
written onto the modules and a layer that goes away leaves it by itself.
"""
from __future__ import annotations

import weakref
from typing import Iterable

from torch import nn

_FROZEN: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


def keep_statistics(layers: Iterable[nn.Module]) -> list[nn.Module]:
    """From now on ``layers`` (BatchNorm modules) keep their running statistics: they stay in eval
    mode in training and are not re-estimated.  Returns the layers enrolled by this call (pass them
    to :func:`release_statistics`)."""
    mine = [m for m in layers if m not in _FROZEN]
    _FROZEN.update(mine)
    return mine


def release_statistics(layers: Iterable[nn.Module]) -> None:
    """Undo :func:`keep_statistics` for ``layers``."""
    for m in layers:
        _FROZEN.discard(m)


def statistics_frozen(module: nn.Module) -> bool:
    """Whether a strategy keeps ``module``'s running statistics for the run in progress."""
    return module in _FROZEN
