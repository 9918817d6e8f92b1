"""THE training loop: every strategy that trains weights goes through :func:`train`.

Read it top to bottom.  A strategy supplies ``training_step(indices) -> loss``; everything
else is here, once: the seeded data order, gradient accumulation, clipping, mixed precision,
the non-finite guard, the schedule, checkpoints and exact resume.  Extensions (validation,
early stopping, logging) are :class:`Callback` objects, never copies of the loop.

Data order.  Epoch ``e`` visits the items in ``permutation(n)`` drawn from a generator seeded
by ``(seed, e)`` alone, cut into near-equal micro-batches of at most ``batch_size`` items
(never a lone item, which would break BatchNorm); ``grad_accum`` consecutive micro-batches form
one optimizer step.  So "epoch ``e``, step ``k`` of it" is a complete description of where the
data stands, and a resumed run sees exactly the batches the uninterrupted run would have.

Exact resume.  A checkpoint holds what training changes (trainable weights, buffers such as
BatchNorm statistics, optimizer, scheduler, grad scaler, callbacks, the torch/numpy/Python RNG
states) and is written only between optimizer steps.  On CPU, a run killed at any moment and
resumed from its newest complete checkpoint ends with weights bitwise equal to a run never
interrupted (``tests/test_resume.py`` kills one to show it).

Data parallel.  Under ``torchrun`` or ``accelerate launch`` the same loop runs in every process
(:mod:`.distributed`): ``batch_size`` stays the global micro-batch, each process trains on its
share of it, gradients are summed over the processes before clipping, and process 0 alone
writes checkpoints.  The steps, the schedule and the checkpoints are those of a single process.
"""
from __future__ import annotations

import math
import random
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import TransferkitError, UserInputError
from . import checkpoint as ckpt
from . import distributed as dist
from .batchnorm import statistics_frozen
from .callbacks import Callback, observers, trainable_state


class NonFiniteLossError(TransferkitError):
    """The loss or the gradients became NaN/inf; no update was applied (the weights stay good)."""


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint's manifest.

    Attributes:
        epoch: the current epoch (0-based; after the last one, ``epochs``).
        position: optimizer steps done in the current epoch.
        step: optimizer steps done in all (skipped steps included: they use up data).
        done: training is over (budget spent, or a callback stopped it).
        should_stop: set by a callback to end training after the current step.
        skipped: micro-batches (or steps) skipped for a non-finite loss (``nonfinite="skip"``).
        history: one dict of logs per epoch (``loss``, ``val_*``...).
        resumed_from: the step of the checkpoint this run resumed from.
    """

    epoch: int = 0
    position: int = 0
    step: int = 0
    done: bool = False
    should_stop: bool = False
    skipped: int = 0
    loss_sum: float = 0.0
    loss_items: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    steps_per_epoch: int = 0
    total_steps: int = 0


# ----- the data order ----------------------------------------------------------------------
def epoch_batches(n_items: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The micro-batches of epoch ``epoch``: index arrays of near-equal sizes <= ``batch_size``."""
    order = np.random.default_rng([seed, epoch]).permutation(n_items)
    return np.array_split(order, math.ceil(n_items / batch_size))


def plan_steps(n_items: int, *, batch_size: int, grad_accum: int = 1, epochs: int = 1,
               max_steps: int | None = None) -> tuple[int, int]:
    """``(steps_per_epoch, total_steps)`` of a run: what a schedule must span."""
    micro = math.ceil(n_items / batch_size)
    per_epoch = math.ceil(micro / grad_accum)
    total = per_epoch * epochs
    return per_epoch, min(total, max_steps) if max_steps else total


@dataclass(frozen=True)
class Budget:
    """A run's length in optimizer steps, and why (:func:`plan_budget`).

    Attributes:
        epochs: passes over the data the run may take (after raising for ``min_steps``).
        steps: optimizer steps planned: what the schedule spans.
        steps_per_epoch: optimizer steps of one pass.
        epochs_asked: the ``epochs`` option as given.
        reason: ``"epochs"`` (the epochs decided), ``"min_steps"`` (epochs raised to reach it) or
            ``"max_steps"`` (the cap ended it).
    """

    epochs: int
    steps: int
    steps_per_epoch: int
    epochs_asked: int
    reason: str

    def describe(self) -> str:
        """One line for run notes: what was planned and why."""
        if self.reason == "min_steps":
            return (f"{self.epochs_asked} epoch(s) would be only {self.epochs_asked * self.steps_per_epoch} optimizer "
                    f"steps of {self.steps_per_epoch} per epoch; raised to {self.epochs} epochs ({self.steps} steps) "
                    "to reach min_steps")
        if self.reason == "max_steps":
            return f"{self.steps} optimizer steps (max_steps), {self.steps_per_epoch} per epoch"
        return f"{self.epochs} epochs of {self.steps_per_epoch} optimizer steps ({self.steps} steps)"


def plan_budget(n_items: int, *, batch_size: int, grad_accum: int = 1, epochs: int = 1, min_steps: int = 0,
                max_steps: int | None = None) -> Budget:
    """The run's budget: ``epochs`` passes, raised until the run takes at least ``min_steps``
    optimizer steps (whole epochs, so it may pass ``min_steps`` by less than one epoch), then
    capped at ``max_steps``.

    A budget counted in epochs alone depends on the data's size: 3 epochs of 90 items at batch 16
    are 18 steps, too few for a new head to learn anything, while 3 epochs of 100,000 items are
    thousands.  ``min_steps`` gives small data sets a floor counted in the unit that matters.
    """
    per_epoch, _ = plan_steps(n_items, batch_size=batch_size, grad_accum=grad_accum, epochs=1)
    run_epochs, reason = epochs, "epochs"
    if min_steps and per_epoch * epochs < min_steps:
        run_epochs, reason = math.ceil(min_steps / per_epoch), "min_steps"
    _, total = plan_steps(n_items, batch_size=batch_size, grad_accum=grad_accum, epochs=run_epochs,
                          max_steps=max_steps)
    if max_steps and total < per_epoch * run_epochs:
        reason = "max_steps"
    return Budget(epochs=run_epochs, steps=total, steps_per_epoch=per_epoch, epochs_asked=epochs, reason=reason)


# ----- modes, precision, RNG ------------------------------------------------------------------
def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, except BatchNorm layers whose parameters are all frozen, or whose
    statistics a strategy keeps (:func:`~.batchnorm.frozen_statistics`, ``finetune(batchnorm=...)``).

    A frozen BatchNorm in train mode would still normalise with the statistics of each small
    batch and overwrite its running averages, changing the frozen layer after all.
    """
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if statistics_frozen(m) or (params and not any(p.requires_grad for p in params)):
                m.eval()


def _precision(precision: str, device: torch.device):
    """``(autocast dtype or None, GradScaler or None)`` for ``precision`` on ``device``."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise UserInputError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    if precision == "auto":  # mixed precision where the device has it; CPU stays fp32 (exact resume)
        if device.type != "cuda":
            return None, None
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp32":
        return None, None
    if precision == "bf16":
        return torch.bfloat16, None
    if device.type != "cuda":
        raise UserInputError("fp16 mixed precision needs a CUDA device", hint="use precision='bf16' or 'fp32'")
    return torch.float16, torch.amp.GradScaler("cuda")


@contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Seed torch, numpy and ``random`` for the block, then give the caller back its own states."""
    outer = ckpt.capture_rng()
    try:
        _seed_all(seed)
        yield
    finally:
        ckpt.restore_rng(outer)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# ----- the loop ----------------------------------------------------------------------------------
def train(model: nn.Module, training_step: Callable[[np.ndarray], torch.Tensor], n_items: int,
          optimizer: torch.optim.Optimizer, *, scheduler: Any = None, epochs: int = 1,
          max_steps: int | None = None, batch_size: int = 16, grad_accum: int = 1, clip: float | None = 1.0,
          seed: int = 0, nonfinite: str = "stop", callbacks: Sequence[Callback] = (),
          checkpoint_dir: str | Path | None = None, checkpoint_every: int | None = None, keep_last: int = 2,
          resume: bool = True, run_config: dict[str, Any] | None = None, precision: str = "auto",
          progress: bool | None = None, desc: str = "train") -> TrainState:
    """Train ``model`` by calling ``training_step`` on seeded micro-batches of item indices.

    Args:
        model: every module that trains (backbone and head); its trainable parameters and
            buffers are what checkpoints hold. Train mode is set per step (:func:`set_train_mode`).
        training_step: ``indices (b,) int64 -> loss`` scalar, the mean over the ``b`` items;
            it builds the batch (decode, augment, forward) itself.
        n_items: N, the size of the training set that the indices point into.
        optimizer: over the trainable parameters (param groups carry per-layer rates).
        scheduler: anything with ``step()``/``state_dict()``/``load_state_dict()``, stepped
            once per optimizer step (see :mod:`.schedules`).
        epochs / max_steps: the budget; ``max_steps`` ends it early, mid-epoch if need be.
        batch_size: items per micro-batch; ``grad_accum`` micro-batches per optimizer step.
            Under a launcher it is the global micro-batch, split among the processes.
            Each micro-batch loss is weighted by its share of the step's items, so accumulation
            gives the gradient of the mean over all of them, as one big batch would.
        clip: largest global gradient L2 norm (``None``: no clipping).
        seed: data order, dropout and augmentation draws; the caller's RNG states are restored
            on return.
        nonfinite: ``"stop"`` raises :class:`NonFiniteLossError` before any update with a
            non-finite loss or gradient; ``"skip"`` drops that micro-batch (or step) and counts it.
        callbacks: :class:`Callback` objects, called in order; then those of the enclosing
            :func:`~.callbacks.observing` blocks (experiment tracking).
        checkpoint_dir: where checkpoints go (``None``: none are written).
        checkpoint_every: also checkpoint every N optimizer steps (always at each epoch end).
        keep_last: complete checkpoints kept.
        resume: continue from the newest complete checkpoint in ``checkpoint_dir``; ``False``
            removes the checkpoints there and starts over.
        run_config: JSON-able configuration of the run; resuming from checkpoints written
            under another configuration is refused.
        precision: ``auto`` (bf16/fp16 autocast on CUDA, fp32 elsewhere), ``fp32``, ``bf16``, ``fp16``.
        progress: show a progress bar with loss and validation metrics (default: on a terminal;
            process 0 only).

    Returns:
        The final :class:`TrainState` (``history`` holds the per-epoch logs).

    Raises:
        NonFiniteLossError: with ``nonfinite="stop"``, on the first NaN/inf loss or gradient.
    """
    if nonfinite not in ("stop", "skip"):
        raise UserInputError(f"nonfinite must be 'stop' or 'skip', not {nonfinite!r}")
    callbacks = [*callbacks, *observers()]  # watchers of the whole fit (`observing`): experiment tracking
    if n_items < 1 or batch_size < 1 or grad_accum < 1 or epochs < 1 or keep_last < 1:
        raise UserInputError("n_items, batch_size, grad_accum, epochs and keep_last must be >= 1")
    per_epoch, total = plan_steps(n_items, batch_size=batch_size, grad_accum=grad_accum, epochs=epochs,
                                  max_steps=max_steps)
    state = TrainState(steps_per_epoch=per_epoch, total_steps=total)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    dist.init()  # under a launcher: join the other processes (once); alone: nothing
    world, rank = dist.world_size(), dist.rank()
    device = params[0].device if params else torch.device("cpu")
    amp_dtype, scaler = _precision(precision, device)
    config = dict(run_config or {}, seed=seed, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                  grad_accum=grad_accum, n_items=n_items)
    chash = ckpt.config_hash(config)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else None

    def save() -> None:
        # Every process holds the same weights and optimizer state; only the RNG states differ,
        # so process 0 writes the checkpoint with all of them, and the others wait for it.
        rng = dist.gather_objects(ckpt.capture_rng())

        def write() -> None:
            meta = dict(asdict(state), config_hash=chash, config=config)
            tensors = {
                "optimizer": optimizer.state_dict(), "rng": rng[0],
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "callbacks": {f"{i}:{type(cb).__name__}": cb.state_dict() for i, cb in enumerate(callbacks)},
            }
            if world > 1:
                tensors["rng_by_rank"] = rng
            ckpt.save_checkpoint(ckpt_dir, step=state.step, model=trainable_state(model), state=tensors,
                                 meta=meta, keep_last=keep_last)

        dist.on_main(write)

    def latest() -> ckpt.Checkpoint | None:
        if ckpt_dir is not None and not resume:
            ckpt.clear_checkpoints(ckpt_dir)
        return ckpt.load_latest(ckpt_dir, config_hash=chash) if ckpt_dir is not None and resume else None

    with isolated_rng(dist.rank_seed(seed, rank)):
        # 1. resume: weights, optimizer, schedule, callbacks, RNG and data position, all at once
        found = dist.on_main(latest)  # process 0 reads it and sends it to the others
        if found is not None:
            state = _resume(found, model, optimizer, scheduler, scaler, callbacks)
            if world > 1:
                _resume_rank_rng(found, seed, rank, world, state.step)
        dist.broadcast_module(model)  # every process starts from process 0's weights, as under DDP
        for cb in callbacks:
            cb.on_train_begin(state)

        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=state.step, desc=desc, unit="step", leave=False, dynamic_ncols=True,
                   disable=True if rank else (not progress) if progress is not None else None)
        try:
            while not state.done:
                windows = epoch_batches(n_items, batch_size, seed, state.epoch)
                windows = [windows[i:i + grad_accum] for i in range(0, len(windows), grad_accum)]
                for window in windows[state.position:]:
                    # 2. one optimizer step over `grad_accum` micro-batches
                    set_train_mode(model)
                    optimizer.zero_grad(set_to_none=True)
                    n_window = sum(len(idx) for idx in window)
                    step_loss, step_items = 0.0, 0
                    # Forward passes move BatchNorm statistics: a batch that turns out non-finite
                    # must leave no trace, so buffers are snapshot and put back on failure.
                    window_start = _snapshot(model)
                    for i, idx in enumerate(window):
                        before = window_start if i == 0 else _snapshot(model)
                        mine = dist.shard(idx, rank, world)  # this process's share (all of it, alone)
                        loss = None
                        if len(mine):
                            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
                                loss = training_step(mine)
                        # the micro-batch's loss sum; a NaN on any process makes it NaN on all of them
                        batch_loss = dist.all_sum(loss.item() * len(mine) if loss is not None else 0.0, device)
                        if not math.isfinite(batch_loss):
                            _restore(window_start if nonfinite == "stop" else before)
                            _nonfinite(nonfinite, state, f"loss {batch_loss / len(idx)}", ckpt_dir)
                            continue  # skip mode: as if this micro-batch had never been seen
                        if loss is not None:
                            weighted = loss * (len(mine) / n_window)
                            (scaler.scale(weighted) if scaler is not None else weighted).backward()
                        step_loss += batch_loss
                        step_items += len(idx)
                    if step_items:
                        # processes: sum the shares' gradients (weighted by n_window, the whole step's items)
                        dist.all_reduce_gradients(params)
                        if scaler is not None:
                            scaler.unscale_(optimizer)
                        # inf max_norm measures without rescaling: non-finite gradients are caught either way
                        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
                        if scaler is None and not torch.isfinite(norm):
                            _restore(window_start)
                            optimizer.zero_grad(set_to_none=True)
                            _nonfinite(nonfinite, state, f"gradient norm {norm.item()}", ckpt_dir)
                        elif scaler is not None:
                            scaler.step(optimizer)  # fp16 overflow: the scaler skips the step and backs off
                            scaler.update()
                        else:
                            optimizer.step()
                    if scheduler is not None:
                        scheduler.step()
                    dist.broadcast_buffers(model)  # BatchNorm statistics: process 0's everywhere, as DDP
                    state.step += 1
                    state.position += 1
                    state.loss_sum += step_loss
                    state.loss_items += step_items
                    logs = {"loss": step_loss / max(step_items, 1), "lr": max(g["lr"] for g in optimizer.param_groups)}
                    for cb in callbacks:
                        cb.on_step_end(state, logs)
                    bar.update(1)
                    bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)
                    budget_spent = max_steps is not None and state.step >= max_steps
                    if state.position == len(windows) or budget_spent or state.should_stop:
                        break  # the epoch-end checkpoint below covers this step
                    if ckpt_dir is not None and checkpoint_every and state.step % checkpoint_every == 0:
                        save()

                # 3. epoch end (or budget spent mid-epoch): validation, early stopping, checkpoint
                logs = {"epoch": state.epoch, "step": state.step,
                        "loss": state.loss_sum / state.loss_items if state.loss_items else float("nan")}
                for cb in callbacks:
                    cb.on_epoch_end(state, logs)
                state.history.append(logs)
                bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if k == "loss" or k.startswith("val_")})
                state.epoch += 1
                state.position, state.loss_sum, state.loss_items = 0, 0.0, 0
                state.done = (state.should_stop or state.epoch >= epochs
                              or (max_steps is not None and state.step >= max_steps))
                if ckpt_dir is not None:
                    save()
        finally:
            bar.close()
        for cb in callbacks:
            cb.on_train_end(state)
    return state


def _resume(found: ckpt.Checkpoint, model: nn.Module, optimizer, scheduler, scaler,
            callbacks: Sequence[Callback]) -> TrainState:
    """Put everything back as it was when ``found`` was written; the RNG states last."""
    _load_weights(model, found.model, found.path)
    optimizer.load_state_dict(found.state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(found.state["scheduler"])
    if scaler is not None and found.state.get("scaler"):
        scaler.load_state_dict(found.state["scaler"])
    for i, cb in enumerate(callbacks):
        cb.load_state_dict(found.state["callbacks"].get(f"{i}:{type(cb).__name__}", {}))
    state = TrainState(**{k: v for k, v in found.meta.items() if k in TrainState.__dataclass_fields__})
    state.resumed_from = state.step
    ckpt.restore_rng(found.state["rng"])
    return state


def _resume_rank_rng(found: ckpt.Checkpoint, seed: int, rank: int, world: int, step: int) -> None:
    """Each process's own RNG states; a run resumed under another number of processes gives the
    others fresh streams derived from the seed and the step instead."""
    by_rank = found.state.get("rng_by_rank")
    if by_rank and len(by_rank) == world:
        ckpt.restore_rng(by_rank[rank])
    elif rank:
        _seed_all(dist.rank_seed(seed + step, rank))


def _snapshot(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Copies of the model's buffers (BatchNorm statistics: small next to the weights)."""
    return [(b, b.detach().clone()) for b in model.buffers()]


def _restore(snapshot: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for b, saved in snapshot:
            b.copy_(saved)


def _nonfinite(mode: str, state: TrainState, what: str, ckpt_dir: Path | None) -> None:
    if mode == "skip":
        state.skipped += 1
        return
    last = ckpt.complete_checkpoints(ckpt_dir) if ckpt_dir is not None else []
    kept = f"; the last good checkpoint is {last[-1]}" if last else ""
    raise NonFiniteLossError(
        f"training stopped at step {state.step + 1} (epoch {state.epoch + 1}): {what} is not finite; "
        f"no update was applied{kept}. Lower the learning rate, clip harder, or pass nonfinite='skip' "
        "to skip such batches and count them")


def _load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], origin: Path) -> None:
    """Copy checkpointed tensors into ``model``: every saved name must exist with the same shape."""
    own = model.state_dict()
    bad = [k for k, v in tensors.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise UserInputError(f"checkpoint {origin} does not fit this model: {', '.join(bad[:5])}"
                             + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""),
                             hint="it was written for another model; start over with resume=False")
    with torch.no_grad():
        for k, v in tensors.items():
            own[k].copy_(v)
