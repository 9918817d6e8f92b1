"""Data-parallel training across processes, GPUs and machines, inside the one loop.

``torchrun`` and ``accelerate launch`` start one process per device and tell each where it
stands through the environment: ``WORLD_SIZE`` (processes in all), ``RANK`` (this one, 0-based),
``LOCAL_RANK`` (this one on its machine: its GPU) and ``MASTER_ADDR``/``MASTER_PORT`` (where
they meet).  Every process runs the same ``fit``; this module is what lets them share the work.
Without a launcher every function here says "one process" and does nothing, so a plain run is
exactly what it was.

How the processes split a step (see :func:`shard`).  The user's ``batch_size`` stays the
*global* micro-batch: the loop cuts the epoch's seeded permutation exactly as a single process
would, and each process takes its near-equal share of every micro-batch.  Each share's loss is
weighted by its share of the step's items and the gradients are *summed* over the processes, so
every optimizer step sees the gradient of the same items with the same weights as one process
would: the same number of steps, the same schedule, the same checkpoints.  What differs is the
order of floating-point additions (per-share partial sums, then the all-reduce), about 1e-7
relative per step, and whatever draws random numbers per item (dropout, augmentation: each
process has its own generator, derived from the seed by :func:`rank_seed`), and BatchNorm,
which normalises over each process's share of the batch (as under DDP without SyncBatchNorm).

Why gradients are all-reduced by hand rather than by ``DistributedDataParallel``: DDP arms its
gradient hooks in its own ``forward``, but a strategy's ``training_step`` calls its modules
directly (the backbone's ``forward_features``, then the head), so a DDP wrapper would never run.
A bucketed all-reduce after the accumulation window also keeps accumulation (no ``no_sync``),
clipping, the fp16 scaler and the non-finite guard exactly where they are: they see the
summed gradient, identical on every process, so every process makes the same decision.

Process 0 alone writes checkpoints and the run directory; the others wait for it.  On resume,
process 0 reads the newest checkpoint and sends it to the others, so machines need no shared
file system.
"""
from __future__ import annotations

import atexit
import os
import pickle
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

T = TypeVar("T")
_BUCKET_ELEMENTS = 1 << 24  # 16M values (64 MB of fp32) per all-reduce: bounded extra memory


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def launched() -> bool:
    """A launcher started more than one process (or the caller set up a process group itself)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size() > 1
    return (_env_int("WORLD_SIZE", 1) > 1 and "RANK" in os.environ and "MASTER_ADDR" in os.environ)


def active() -> bool:
    """Processes are training together now (the process group is up, with more than one)."""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def world_size() -> int:
    """How many processes train together (1 without a launcher)."""
    if active():
        return torch.distributed.get_world_size()
    return _env_int("WORLD_SIZE", 1) if launched() else 1


def rank() -> int:
    """This process's number, 0-based (0 without a launcher)."""
    if active():
        return torch.distributed.get_rank()
    return _env_int("RANK", 0) if launched() else 0


def local_rank() -> int:
    """This process's number on its machine: which GPU it uses."""
    return _env_int("LOCAL_RANK", 0) if launched() else 0


def is_main() -> bool:
    """Process 0: the one that writes files and prints."""
    return rank() == 0


def device() -> torch.device:
    """This process's device: GPU ``LOCAL_RANK`` under a launcher on a CUDA machine, else the CPU."""
    if launched() and torch.cuda.is_available():
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


def init() -> bool:
    """Join the launcher's process group once (later calls do nothing); True when training together.

    The group serves both kinds of tensors: gloo for CPU ones, NCCL for CUDA ones when there
    are GPUs.  It is taken down at exit.
    """
    if not launched():
        return False
    if not torch.distributed.is_initialized():
        backend = "gloo"
        if torch.cuda.is_available() and torch.distributed.is_nccl_available():
            torch.cuda.set_device(device())
            backend = "cpu:gloo,cuda:nccl"
        torch.distributed.init_process_group(backend=backend)
        atexit.register(_shutdown)
    return active()


def _shutdown() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (nothing without a launcher)."""
    if active():
        torch.distributed.barrier()


def rank_seed(seed: int, which: int | None = None) -> int:
    """The seed of process ``which``'s random draws (dropout, augmentation): ``seed`` itself for
    process 0, so that a single process draws exactly what it always did; an independent stream,
    derived from ``(seed, rank)``, for each other process."""
    which = rank() if which is None else which
    if which == 0:
        return seed
    return int(np.random.SeedSequence([seed, which]).generate_state(1, dtype=np.uint64)[0] % 2**63)


def shard(indices: np.ndarray, which: int | None = None, world: int | None = None) -> np.ndarray:
    """This process's near-equal share of a global micro-batch (all of it for a single process).

    The shares of all processes, in rank order, concatenate back to ``indices``; a share may be
    empty when the micro-batch has fewer items than there are processes.
    """
    world = world_size() if world is None else world
    if world == 1:
        return indices
    return np.array_split(indices, world)[rank() if which is None else which]


# ----- collectives (each is a no-op for a single process) ----------------------------------
def all_sum(value: float, on: torch.device | None = None) -> float:
    """The sum of ``value`` over the processes, in float64 (a NaN or inf anywhere shows in it)."""
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device(on))
    torch.distributed.all_reduce(t)
    return float(t.item())


def all_reduce_gradients(params: Sequence[nn.Parameter]) -> None:
    """Sum every parameter's gradient over the processes, in place.

    A gradient missing here (``None``: this process's share never used the parameter) but
    present on another process becomes zeros, so every process takes the same step; one
    missing on every process stays ``None``, and the optimizer skips it as it would alone.
    """
    if not active() or not params:
        return
    have = torch.tensor([p.grad is not None for p in params], dtype=torch.uint8, device=_comm_device(params[0].device))
    torch.distributed.all_reduce(have, op=torch.distributed.ReduceOp.MAX)
    for p, h in zip(params, have.tolist()):
        if h and p.grad is None:
            p.grad = torch.zeros_like(p)
    _coalesced([p.grad for p in params if p.grad is not None], torch.distributed.all_reduce)


def broadcast_module(model: nn.Module) -> None:
    """Give every process process 0's parameters and buffers (start of training; BatchNorm
    statistics after each step, as DDP's ``broadcast_buffers`` does)."""
    if not active():
        return
    with torch.no_grad():
        _coalesced(list(model.parameters()) + list(model.buffers()), lambda t: torch.distributed.broadcast(t, 0))


def broadcast_buffers(model: nn.Module) -> None:
    """Process 0's buffers (BatchNorm running statistics) on every process."""
    if active():
        with torch.no_grad():
            _coalesced(list(model.buffers()), lambda t: torch.distributed.broadcast(t, 0))


def gather_objects(obj: Any) -> list[Any] | None:
    """Every process's ``obj`` on process 0, in rank order (``None`` on the others)."""
    if not active():
        return [obj]
    out = [None] * world_size() if is_main() else None
    torch.distributed.gather_object(obj, out, dst=0)
    return out


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on process 0 alone (writing files) and give every process its result.

    An exception raised there is raised on every process, so none waits forever for a
    process that failed.  The others wait meanwhile: this is also a barrier.
    """
    if not active():
        return fn()
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except Exception as e:
            error = e
    sent = [result, _portable(error) if error is not None else None]
    torch.distributed.broadcast_object_list(sent, src=0)
    if error is not None:
        raise error
    if sent[1] is not None:
        raise sent[1]
    return sent[0]


def _portable(error: Exception) -> Exception:
    """``error`` if it survives pickling, else a plain error with its message."""
    from ..errors import TransferkitError

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return TransferkitError(f"process 0 failed: {type(error).__name__}: {error}")


def _comm_device(on: torch.device | None) -> torch.device:
    """Where a collective's own small tensors live: NCCL takes only CUDA tensors, gloo CPU ones."""
    if on is not None and on.type == "cuda":
        return on
    return torch.device("cpu")


def _coalesced(tensors: Iterable[torch.Tensor], op: Callable[[torch.Tensor], Any]) -> None:
    """Apply the in-place collective ``op`` to ``tensors`` through flat buckets (few large
    messages instead of one per tensor), per device and dtype, in a fixed order."""
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    for (dev, _dtype), ts in groups.items():
        if dev.type not in ("cpu", "cuda"):
            raise RuntimeError(f"data-parallel training supports CPU and CUDA tensors, not {dev.type}")
        bucket: list[torch.Tensor] = []
        size = 0
        for t in ts + [None]:
            if t is not None and (size + t.numel() <= _BUCKET_ELEMENTS or not bucket):
                bucket.append(t)
                size += t.numel()
                continue
            flat = torch.cat([b.reshape(-1) for b in bucket])
            op(flat)
            for b, part in zip(bucket, flat.split([b.numel() for b in bucket])):
                b.copy_(part.view_as(b))
            bucket, size = ([t], t.numel()) if t is not None else ([], 0)
