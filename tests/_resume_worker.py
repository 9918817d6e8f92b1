"""Worker of ``test_resume.py``: fine-tune a tiny CNN, checkpointing every step.

Usage: ``python tests/_resume_worker.py OUT_FILE [CHECKPOINT_DIR]``. Prints ``writing N`` just
before a checkpoint's manifest is renamed into place (after sleeping ``TK_TEST_MANIFEST_DELAY``
seconds, so that a kill can land between the data files and the manifest) and ``saved N`` after.
Writes the fine-tuned tensors to OUT_FILE (safetensors) at the end.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch

torch.set_num_threads(1)  # the same arithmetic in every process, and light on a shared machine

from safetensors.torch import save_file  # noqa: E402

from transferkit.backbones.zoo import EfficientNetLiteBackbone  # noqa: E402
from transferkit.data import Dataset  # noqa: E402
from transferkit.model import TransferModel  # noqa: E402
from transferkit.strategies.finetune import FineTune  # noqa: E402
from transferkit.training import checkpoint as ckpt  # noqa: E402

DELAY = float(os.environ.get("TK_TEST_MANIFEST_DELAY", "0"))
_write_manifest = ckpt._write_manifest


def slow_manifest(path, meta, files):
    print(f"writing {meta['step']}", flush=True)
    time.sleep(DELAY)
    _write_manifest(path, meta, files)
    print(f"saved {meta['step']}", flush=True)


ckpt._write_manifest = slow_manifest


def images(n_per_class: int = 20, seed: int = 0) -> Dataset:
    rng = np.random.RandomState(seed)
    items, labels = [], []
    for label, channel in (("blue", 2), ("red", 0)):
        for _ in range(n_per_class):
            img = rng.randint(0, 100, (32, 32, 3)).astype(np.uint8)
            img[..., channel] += 120
            items.append(img)
            labels.append(label)
    return Dataset(modality="image", inputs=items, labels=labels)


def main() -> None:
    out = sys.argv[1]
    backbone = EfficientNetLiteBackbone("efficientnet-lite0", init="random:0", image_size=32)
    # Everything that draws random numbers or keeps state is on: augmentation, head dropout,
    # a validation split with early stopping (best weights in the callback's state), trained and
    # frozen BatchNorm layers, a warm-up + cosine schedule.
    s = FineTune(epochs=3, unfreeze=2, lr=1e-3, head_lr=1e-2, batch_size=8, val_fraction=0.2, patience=2,
                 checkpoint_every=1, keep_last=2)
    model = TransferModel(backbone, s)
    if len(sys.argv) > 2:
        model.ctx.checkpoint_dir = sys.argv[2]
    s.fit(images(), model.ctx)
    save_file(s.state_tensors(), out)
    print(f"resumed_from {s.fit_info()['resumed_from']}", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()
