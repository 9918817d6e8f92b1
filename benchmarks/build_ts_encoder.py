"""Build the shipped time-series encoder (``transferkit/backbones/weights/ts-fcn-ucr.safetensors``).

Multi-data-set supervised pre-training in the manner of Fawaz et al. (2018): one FCN encoder
(``transferkit.backbones.timeseries.FCNEncoder``) shared by every pre-training set, a linear head
per set; each step takes one batch of one set (sets in a seeded random order, every set's batches
once per epoch), cross-entropy of that set's head.  The train *and* test files of the sets in
``PRETRAIN_SETS`` are used (they are never transfer targets); the sets of ``TARGET_SETS`` are not
read at all.  The heads are thrown away: only the encoder ships.

Reproducible: seeded, single-threaded CPU; the same torch version gives the same bytes.  The
script prints the file's sha256, which ``WEIGHTS_SHA256`` in ``backbones/timeseries.py`` must hold.

Run: ``TRANSFERKIT_UCR_DIR=.../aeon/datasets/data python benchmarks/build_ts_encoder.py``
(without the variable, aeon's installed data folder; aeon 1.6.0's wheel can be unpacked for it:
``pip download aeon==1.6.0 --no-deps`` and unzip ``aeon/datasets/data``).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from transferkit.backbones.timeseries import PRETRAIN_SETS, SOURCES, WEIGHTS, FCNEncoder, prepare_series
from transferkit.data import prepare_data
from transferkit.data._series import bundled_ucr_dir
from transferkit.series_features import class_prototypes


def load_sets(root: Path) -> dict[str, tuple[list, torch.Tensor]]:
    """Each pre-training set, train and test together: ``(series, class indices)``."""
    out = {}
    for name in PRETRAIN_SETS:
        p = prepare_data(root / name, skip_bad=True)
        items = p.train.inputs + p.test.inputs
        labels = p.train.labels + p.test.labels
        classes = sorted(set(labels))
        out[name] = (items, torch.tensor([classes.index(v) for v in labels]))
    return out


def write_prototypes(sets: dict[str, tuple[list, torch.Tensor]], path: Path) -> None:
    """Each pre-training set's class prototypes ``(K, 64)``, for ``rank``'s data-set similarity."""
    protos = {}
    for name, (items, y) in sets.items():
        protos[name] = torch.from_numpy(np.concatenate(class_prototypes(items, [str(v) for v in y.tolist()])))
    save_file(protos, str(path))
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--prototypes-only", action="store_true", help="only (re)write the class prototypes file")
    a = ap.parse_args()
    root = bundled_ucr_dir()
    if root is None:
        sys.exit("no UCR data: set TRANSFERKIT_UCR_DIR to aeon's datasets/data folder (see the docstring)")
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    sets = load_sets(root)
    write_prototypes(sets, a.out.parent / SOURCES.name)
    if a.prototypes_only:
        return 0
    encoder = FCNEncoder()
    heads = nn.ModuleDict({n: nn.Linear(encoder.blocks[-1][0].out_channels, int(y.max()) + 1)
                           for n, (_, y) in sets.items()})
    opt = torch.optim.Adam([*encoder.parameters(), *heads.parameters()], lr=a.lr)
    gen = torch.Generator().manual_seed(a.seed)
    t0 = time.time()
    for epoch in range(a.epochs):
        batches = [(n, idx) for n, (items, _) in sets.items()
                   for idx in torch.randperm(len(items), generator=gen).split(a.batch_size)]
        order = torch.randperm(len(batches), generator=gen).tolist()
        encoder.train()
        correct = {n: 0 for n in sets}
        for k in order:
            name, idx = batches[k]
            items, y = sets[name]
            values, mask, c = prepare_series([items[i] for i in idx])
            feats = encoder(values, mask).view(len(idx), c, -1).mean(dim=1)
            logits = heads[name](feats)
            loss = nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            correct[name] += int((logits.argmax(1) == y[idx]).sum())
        acc = ", ".join(f"{n} {correct[n] / len(sets[n][0]):.2f}" for n in sets)
        print(f"epoch {epoch + 1}/{a.epochs} ({time.time() - t0:.0f} s): training accuracy {acc}", flush=True)
    state = {k: v.detach().clone().contiguous() for k, v in encoder.state_dict().items()}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    # No metadata: safetensors writes a metadata dict in hash-map order, which changes the file's bytes
    # (and sha256) from run to run although the tensors are the same.
    save_file(state, str(a.out))
    digest = hashlib.sha256(a.out.read_bytes()).hexdigest()
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e3:.0f} kB), sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
