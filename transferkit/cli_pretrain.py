"""``transferkit pretrain``: the shell of :func:`transferkit.pretrain.pretrain` (parse, call, print)."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_commands(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add ``pretrain`` to the subcommands ``sub`` and its handler to ``commands``."""
    p = sub.add_parser("pretrain", help="continue a backbone's self-supervised pre-training on unlabelled data "
                                        "(the run is a backbone for `fit --model RUN`)")
    p.add_argument("--data", required=True, help="unlabelled items: a table (with --text-column) or a folder")
    p.add_argument("--text-column", help="text column(s) of the corpus and of --eval-data, comma-separated")
    p.add_argument("--model", required=True, help="zoo name, model directory, hub id, or a finished run")
    p.add_argument("--out", required=True, help="the new run's directory")
    p.add_argument("--objective", choices=["mlm", "simcse", "simclr"],
                   help="text: mlm (default; BERT-family) or simcse; images: simclr (default)")
    p.add_argument("--max-steps", type=int, default=200, help="optimizer-step budget (default 200)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 5e-5 text, 1e-4 images)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per text (longer ones are cut)")
    p.add_argument("--max-items", type=int, help="use at most this many corpus items (seeded sample)")
    p.add_argument("--image-size", type=int, help="image side in pixels (images)")
    p.add_argument("--eval-data", help="labelled data: linear probe on the original vs the pre-trained encoder")
    p.add_argument("--label-column", default="label", help="label column of --eval-data")
    p.add_argument("--eval-labels-per-class", type=int, help="training labels per class of the probe comparison")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start over instead of resuming from OUT's checkpoints")
    p.add_argument("--skip-nonfinite", action="store_true", help="skip a step with a NaN/inf loss instead of stopping")
    p.add_argument("--seed", type=int, default=0)
    commands["pretrain"] = cmd_pretrain


def cmd_pretrain(a: argparse.Namespace) -> int:
    from .pretrain import pretrain

    m = pretrain(a.data, model=a.model, out=a.out, objective=a.objective, text_columns=a.text_column,
                 max_steps=a.max_steps, batch_size=a.batch_size, lr=a.lr, max_length=a.max_length,
                 max_items=a.max_items, seed=a.seed, eval_data=a.eval_data, label_column=a.label_column,
                 eval_labels_per_class=a.eval_labels_per_class, checkpoint_every=a.checkpoint_every,
                 resume=a.resume, nonfinite="skip" if a.skip_nonfinite else "stop",
                 backbone_options={"image_size": a.image_size} if a.image_size else None)
    p = m["pretrain"]
    c = p["corpus"]
    print(f"pretrained {a.model} with {p['objective']}: {p['steps']} steps on {c['n_items']} items "
          f"({c['duplicates']} duplicates, {sum(c['left_out'].values())} left out); loss "
          f"{p['loss_curve'][0] if p['loss_curve'] else float('nan'):.3f} -> "
          f"{p['loss_curve'][-1] if p['loss_curve'] else float('nan'):.3f}; {m['timings']['total_s']:.0f} s")
    if "eval" in m:
        print(m["eval"]["explanation"])
    print(f"run: {a.out}  (use it: transferkit fit --model {a.out} ...)")
    return 0
