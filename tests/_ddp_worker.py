"""Worker of ``test_distributed.py``: the same training alone or under ``torchrun``.

Usage: ``python tests/_ddp_worker.py OUT_DIR MODEL_DIR`` (alone), or the same after
``python -m torch.distributed.run --standalone --nproc_per_node=2``.  Each process writes
``OUT_DIR/<run>-rank<R>.safetensors`` and ``OUT_DIR/info-rank<R>.json`` for three runs:

- ``mlp``: the loop API on a tiny MLP without dropout or BatchNorm (so a single process and
  several compute the same thing up to float summation order): 37 items, so shares are uneven,
  batch 8, grad_accum 2, clipping that bites, AdamW with warm-up + cosine, checkpoints;
- ``uninterrupted`` / ``resumed``: an MLP *with* dropout and BatchNorm, once straight through
  and once stopped after step 5 and resumed from its step-4 checkpoint in a fresh model;
- ``bert``: ``FineTune`` of a tiny BERT (built without dropout) with a validation split and
  early stopping, through :class:`TransferModel` as the pipeline does;
- ``OUT_DIR/run``: ``tk.fit`` of the same, without controls: the run directory.

``info-rank<R>.json`` also counts the checkpoints and run directories each process wrote.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)  # the same arithmetic in every process, and light on a shared machine

from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import transferkit as tk  # noqa: E402
from transferkit import pipeline  # noqa: E402
from transferkit.backbones import get_backbone  # noqa: E402
from transferkit.data import Dataset  # noqa: E402
from transferkit.model import TransferModel  # noqa: E402
from transferkit.strategies.finetune import FineTune  # noqa: E402
from transferkit.training import (  # noqa: E402
    Callback,
    distributed,
    make_scheduler,
    train,
)
from transferkit.training import checkpoint as ckpt  # noqa: E402

from conftest import toy_texts  # noqa: E402

WRITES = {"checkpoints": 0, "run_dirs": 0}


def counted(fn, what: str):
    def wrapper(*args, **kwargs):
        WRITES[what] += 1
        return fn(*args, **kwargs)
    return wrapper


ckpt.save_checkpoint = counted(ckpt.save_checkpoint, "checkpoints")
pipeline.write_stage = counted(pipeline.write_stage, "run_dirs")

N = 37
X = torch.randn(N, 6, generator=torch.Generator().manual_seed(0))
Y = (X[:, 0] + X[:, 1] > 0).long()


class Stop(Exception):
    pass


class StopAfter(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, state, logs) -> None:
        if state.step == self.step:
            raise Stop  # every process stops at the same step, as a killed job would


def mlp_run(ckpt_dir: Path | None, *, dropout: float, bn: bool, callbacks=(), clip: float = 0.5):
    torch.manual_seed(1)
    norm = [nn.BatchNorm1d(16)] if bn else []
    model = nn.Sequential(nn.Linear(6, 16), *norm, nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = make_scheduler(opt, "cosine", 9, warmup=0.2)
    state = train(model, lambda idx: nn.functional.cross_entropy(model(X[idx]), Y[idx]), N, opt, scheduler=sched,
                  epochs=3, batch_size=8, grad_accum=2, clip=clip, seed=5, callbacks=callbacks,
                  checkpoint_dir=ckpt_dir, checkpoint_every=2, progress=False)
    return model, state


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def main() -> None:
    out, model_dir = Path(sys.argv[1]), sys.argv[2]
    out.mkdir(parents=True, exist_ok=True)
    distributed.init()
    rank = distributed.rank()
    info: dict = {"world_size": distributed.world_size(), "rank": rank}

    model, state = mlp_run(out / "ck-mlp", dropout=0.0, bn=False)
    save_file(weights(model), out / f"mlp-rank{rank}.safetensors")
    info["mlp"] = {"steps": state.step, "history": state.history}

    model, _ = mlp_run(None, dropout=0.3, bn=True)
    save_file(weights(model), out / f"uninterrupted-rank{rank}.safetensors")
    try:
        mlp_run(out / "ck-resume", dropout=0.3, bn=True, callbacks=[StopAfter(5)])
        raise AssertionError("the run did not stop")
    except Stop:
        pass
    model, state = mlp_run(out / "ck-resume", dropout=0.3, bn=True)
    save_file(weights(model), out / f"resumed-rank{rank}.safetensors")
    info["resumed_from"] = state.resumed_from

    texts, labels = toy_texts(12)
    s = FineTune(epochs=2, lr=1e-4, head_lr=1e-3, batch_size=8, head_dropout=0.0, val_fraction=0.25, patience=1)
    tm = TransferModel(get_backbone(model_dir), s)
    tm.ctx.checkpoint_dir = out / "ck-bert"
    s.fit(Dataset(modality="text", inputs=texts, labels=labels), tm.ctx)
    save_file(s.state_tensors(), out / f"bert-rank{rank}.safetensors")
    info["bert"] = {k: s.fit_info()[k] for k in ("steps", "history", "best_epoch")}

    fitted = tk.fit(train=Dataset(modality="text", inputs=texts, labels=labels), model=model_dir, strategy="finetune",
                    strategy_params={"epochs": 1, "lr": 1e-4, "batch_size": 8, "head_dropout": 0.0},
                    control=False, out=str(out / "run"), log=None)
    info["fit_card_sha256"] = fitted.card["weights"]["sha256"]  # every process gets the card as written
    info["writes"] = WRITES
    (out / f"info-rank{rank}.json").write_text(json.dumps(info, indent=1, default=float))


if __name__ == "__main__":
    main()
