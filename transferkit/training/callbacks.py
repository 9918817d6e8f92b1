"""Extensions of the training loop: hooks called at fixed points, with checkpointed state.

A callback never copies the loop; it reads the :class:`~.loop.TrainState` and the logs, may
add to the logs, and may set ``state.should_stop``.  Whatever it must remember across a crash
it returns from :meth:`Callback.state_dict` (tensors, numbers, strings, lists, dicts only):
the loop saves it in every checkpoint and gives it back through ``load_state_dict`` on resume.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable

import torch
from torch import nn


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors training changes: trainable parameters and all (persistent) buffers.

    Buffers are included whole because BatchNorm statistics of trained layers move, and they
    are small next to the weights.  Tensors are detached views, not copies.
    """
    train_names = {n for n, p in model.named_parameters() if p.requires_grad}
    buffer_names = {n for n, _ in model.named_buffers()}
    return {k: v for k, v in model.state_dict().items() if k in train_names or k in buffer_names}


class Callback:
    """Base class: every hook does nothing.

    Hooks are called in the order the callbacks were given.  ``on_train_begin`` runs after a
    resume has restored the callback's state, so it must not reset that state.
    """

    def on_train_begin(self, state) -> None:
        pass

    def on_step_end(self, state, logs: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, state, logs: dict[str, Any]) -> None:
        pass

    def on_train_end(self, state) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Validation(Callback):
    """Evaluate at the end of each epoch; the results enter the logs as ``val_<name>``.

    Args:
        evaluate: ``() -> {"loss": float, "accuracy": float, ...}`` on held-out data; it
            sets eval mode itself (the loop sets train mode again before the next step) and
            must not draw random numbers, so that resumed runs stay exact.
    """

    def __init__(self, evaluate: Callable[[], dict[str, float]]):
        self.evaluate = evaluate

    def on_epoch_end(self, state, logs: dict[str, Any]) -> None:
        logs.update({f"val_{k}": float(v) for k, v in self.evaluate().items()})


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; keep the best weights.

    Args:
        model: the trained modules (the best epoch's trainable state is kept in memory, and in
            checkpoints, to be restored at the end).
        monitor: a log key set before this callback runs (e.g. ``val_loss`` by :class:`Validation`).
        mode: ``"min"`` or ``"max"``.
        patience: epochs without improvement before stopping.
        min_delta: smallest change that counts as an improvement.
        restore_best: load the best epoch's weights when training ends.
        min_steps: never stop before this many optimizer steps (the run's floor: with epochs
            of a few steps each, ``patience`` epochs would otherwise end a run within a few
            dozen steps on the noise of the validation loss); the best epoch is still restored.
    """

    def __init__(self, model: nn.Module, *, monitor: str = "val_loss", mode: str = "min", patience: int = 2,
                 min_delta: float = 0.0, restore_best: bool = True, min_steps: int = 0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        self.model, self.monitor, self.mode = model, monitor, mode
        self.patience, self.min_delta, self.restore_best = patience, min_delta, restore_best
        self.min_steps = min_steps
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.best_weights: dict[str, torch.Tensor] = {}

    def _better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def on_epoch_end(self, state, logs: dict[str, Any]) -> None:
        if self.monitor not in logs:
            return
        value = float(logs[self.monitor])
        if self._better(value):
            self.best, self.best_epoch, self.wait = value, int(state.epoch), 0
            if self.restore_best:
                self.best_weights = {k: v.detach().clone() for k, v in trainable_state(self.model).items()}
        else:
            self.wait += 1
            if self.wait >= self.patience and state.step >= self.min_steps:
                state.should_stop = True
        logs["best_epoch"] = self.best_epoch

    def on_train_end(self, state) -> None:
        if self.restore_best and self.best_weights:
            own = self.model.state_dict()
            with torch.no_grad():
                for k, v in self.best_weights.items():
                    own[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "weights": dict(self.best_weights)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_weights = dict(state["weights"])


#: Callbacks that every :func:`~.loop.train` call inside an :func:`observing` block runs too.
_OBSERVERS: ContextVar[tuple[Callback, ...]] = ContextVar("transferkit_training_observers", default=())


@contextmanager
def observing(*callbacks: Callback) -> Iterator[None]:
    """Run ``callbacks`` in every training loop started inside the block, after the strategy's own.

    For callers that watch a fit without owning the strategy's code (experiment tracking): the
    strategies build their own callback lists, and those that train in several phases call the
    loop more than once, so the observers are handed to the loop rather than to each strategy.
    Observers only read: their checkpointed state (``state_dict``) should be empty, so that a run
    resumed with or without them restores the same thing.
    """
    token = _OBSERVERS.set(_OBSERVERS.get() + callbacks)
    try:
        yield
    finally:
        _OBSERVERS.reset(token)


def observers() -> tuple[Callback, ...]:
    """The callbacks of the enclosing :func:`observing` blocks (``()`` outside any)."""
    return _OBSERVERS.get()
