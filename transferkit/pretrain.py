"""``transferkit pretrain``: continue a backbone's self-supervised pre-training on the user's unlabelled
in-domain data (domain-adaptive pre-training, Gururangan et al. 2020), written as a run that
``fit --model RUN`` takes as its backbone (:class:`~transferkit.runs.RunBackbone`).

Objectives (:mod:`transferkit.pretraining`): ``mlm`` (text, the default; BERT-family encoders, a
BertForMaskedLM-style head tied to the input embeddings), ``simcse`` (text, any encoder; dropout noise
as the augmentation), ``simclr`` (images, the default; BatchNorm running statistics kept: the pre-trained
ones, see :mod:`transferkit.pretraining.image`).  Training runs through THE training loop: checkpoints under
``OUT/checkpoints/pretrain`` (re-running a killed command resumes; removed once the run is written),
a progress bar with ETA, a ``max_steps`` budget, non-finite losses stopped or skipped.

The run holds the encoder (``strategy.safetensors``: every ``backbone.<name>`` tensor of the module;
the objective's head is dropped), ``metrics.json`` (corpus facts, steps, the loss curve per optimizer
step, with ``eval_data`` the linear probe on the original and on the pre-trained encoder and the
verdict), ``config.json`` and last the model card (``pretrain``: objective, corpus hash and size).
The corpus is read as ``fit`` reads data without labels, with ``skip_bad``: empty items are dropped
and reported, duplicates reported (they stay: the objective sees them twice).
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .backbones import get_backbone
from .backbones.base import Backbone
from .data import prepare_data
from .data.dataset import Dataset
from .data.split import few_shot_sample, stratified_split
from .errors import UserInputError, shown
from .features import extract_features
from .pretraining import OBJECTIVES
from .runs import RunDir, now_iso, versions
from .runs.loading import remember_user_backbone
from .strategies._network import apply_tensors
from .strategies._tuning import batchnorm_layers
from .tasks import Outputs, get_task
from .tasks.linear import fit_linear, linear_outputs
from .training import distributed, train
from .training.batchnorm import keep_statistics, release_statistics
from .training.callbacks import Callback
from .training.checkpoint import prune_after_run

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class LossCurve(Callback):
    """The loss of every optimizer step (kept in checkpoints, so a resumed run has the whole curve)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step_end(self, state, logs: dict[str, Any]) -> None:
        self.losses.append(round(float(logs["loss"]), 5))

    def state_dict(self) -> dict[str, Any]:
        return {"losses": list(self.losses)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses = list(state.get("losses", []))


def pretrain(data: Any, *, model: str, out: str | os.PathLike, objective: str | None = None,
             text_columns: list[str] | str | None = None, max_steps: int = 200, batch_size: int = 16,
             lr: float | None = None, max_length: int = 128, max_items: int | None = None, seed: int = 0,
             backbone_options: dict[str, Any] | None = None, eval_data: Any = None, label_column: str = "label",
             eval_labels_per_class: int | None = None, checkpoint_every: int = 50, resume: bool = True,
             nonfinite: str = "stop", log: Log | None = _stderr, progress: bool | None = None) -> dict[str, Any]:
    """Continue pre-training ``model`` on the unlabelled items of ``data``; write the run ``out``.

    Args:
        data: a table, folder or Dataset of unlabelled items (labels in it are never read).
        model: a zoo name, model directory, hub id, or a finished run (its adapted backbone).
        objective: ``mlm`` or ``simcse`` (text; default ``mlm``), ``simclr`` (images, the default).
        max_steps: the optimizer-step budget; batch_size: items per step; lr: AdamW's rate
            (default 5e-5 for text, 1e-4 for images); max_length: tokens per text for ``mlm``.
        max_items: use at most this many corpus items (seeded sample).
        eval_data: labelled data: the linear probe on the original and on the pre-trained encoder,
            on the same split (``eval_labels_per_class``: that many training labels per class).

    Returns:
        What ``metrics.json`` holds.
    """
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    run = RunDir(out)
    corpus, facts = read_corpus(data, text_columns, max_items, seed)
    opts = dict(backbone_options or {})  # the run's card keeps these: how `fit --model RUN` reads items
    # training reads each text's first max_length tokens, one window (the objectives see single windows)
    backbone = get_backbone(model, **opts, **({"max_length": max_length, "max_chunks": 1}
                                              if corpus.modality == "text" else {}))
    if backbone.modality != corpus.modality:
        raise UserInputError(f"model {model!r} takes {backbone.modality} data but {shown(str(data))} holds "
                             f"{corpus.modality} items", hint="pick a model of the data's modality")
    objective = objective or {"text": "mlm", "image": "simclr"}.get(corpus.modality)
    if objective not in OBJECTIVES or OBJECTIVES[objective][1] != corpus.modality:
        fits = [k for k, (_, m) in OBJECTIVES.items() if m == corpus.modality]
        raise UserInputError(f"objective {objective!r} does not pre-train on {corpus.modality} data",
                             hint=f"use one of: {', '.join(fits) or 'none yet for this modality'}")
    if max_steps < 1 or batch_size < 2:
        raise UserInputError("pretrain needs max_steps >= 1 and batch_size >= 2 (contrastive objectives contrast "
                             "the items of a batch)")
    lr = lr or (5e-5 if corpus.modality == "text" else 1e-4)
    with run.lock():
        say(f"pretrain: {objective} on {len(corpus)} {corpus.modality} items, {max_steps} steps of {batch_size} …")
        info, curve = _train(backbone, corpus, objective, max_steps=max_steps, batch_size=batch_size, lr=lr,
                             max_length=max_length, seed=seed, run=run, checkpoint_every=checkpoint_every,
                             resume=resume, nonfinite=nonfinite, progress=progress, model=model)
        tensors = {f"backbone.{k}": v.detach().cpu().clone() for k, v in backbone.module.state_dict().items()}
        original = get_backbone(model, **opts)
        train_s = time.perf_counter() - t0
        metrics: dict[str, Any] = {
            "run": {"name": run.path.name, "created": now_iso(), "command": "pretrain", "backbone": model,
                    "modality": corpus.modality, "seed": seed},
            "pretrain": {"objective": objective, **info, "corpus": facts, "lr": lr, "batch_size": batch_size,
                         "loss_curve": curve},
        }
        if eval_data is not None:
            say("pretrain: linear probe on the original and on the pre-trained encoder …")
            adapted = get_backbone(model, **opts)  # read as the original is, with the trained tensors
            apply_tensors(adapted, tensors, "pretrain")  # (which also gives it a cache key of its own)
            metrics["eval"] = evaluate_probe(original, adapted, eval_data, text_columns=text_columns,
                                             label_column=label_column, labels_per_class=eval_labels_per_class,
                                             seed=seed)
            say(metrics["eval"]["explanation"])
        metrics["timings"] = {"train_s": round(train_s, 2), "total_s": round(time.perf_counter() - t0, 2)}
        _write(run, metrics, tensors, original, model, opts, corpus, data, objective, seed)
        prune_after_run(run.checkpoints)  # only a killed run needs them
        remember_user_backbone(model)  # the user's own model directory: their runs may load it again
    return metrics


def read_corpus(data: Any, text_columns, max_items: int | None, seed: int) -> tuple[Dataset, dict[str, Any]]:
    """The unlabelled items, read as ``fit`` reads data (empty and unreadable items dropped and listed),
    with the corpus facts: size, hash, empty/bad items left out, duplicates."""
    prepared = prepare_data(data, text_columns=text_columns, label_column=None, require_labels=False,
                            skip_bad=True)
    ds = prepared.train
    if max_items is not None and len(ds) > max_items:
        ds = ds.subset(sorted(np.random.default_rng(seed).choice(len(ds), max_items, replace=False).tolist()))
    if len(ds) < 2:
        raise UserInputError(f"the corpus {shown(str(data))} has {len(ds)} usable item(s)",
                             hint="continued pre-training needs hundreds to thousands of unlabelled items")
    keys = [x if isinstance(x, str) else repr(x) for x in ds.inputs]
    dup = sum(c - 1 for c in Counter(keys).values() if c > 1)
    skipped = Counter(s.get("kind") or "other" for s in prepared.report.skipped)
    facts = {"source": str(data) if isinstance(data, (str, os.PathLike)) else getattr(data, "source", None),
             "hash": ds.fingerprint(), "n_items": len(ds), "duplicates": dup, "left_out": dict(skipped),
             "warnings": sorted({p.kind for p in prepared.report.warnings})}
    if ds.modality == "text":
        facts["mean_chars"] = round(float(np.mean([len(t) for t in ds.inputs])), 1)
    return ds, facts


def _train(backbone: Backbone, corpus: Dataset, objective: str, *, max_steps: int, batch_size: int, lr: float,
           max_length: int, seed: int, run: RunDir, checkpoint_every: int, resume: bool, nonfinite: str,
           progress: bool | None, model: str) -> tuple[dict[str, Any], list[float]]:
    device = distributed.device()
    torch.manual_seed(seed)  # the objective's head initialisation
    obj = OBJECTIVES[objective][0](backbone, max_length=max_length)
    net = nn.ModuleDict({"backbone": backbone.module, "objective": obj}).to(device)
    for p in net.parameters():
        p.requires_grad_(True)
    kept = keep_statistics(m for _, m in batchnorm_layers(backbone.module)) if objective == "simclr" else []
    opt = torch.optim.AdamW(list(net.parameters()), lr=lr, weight_decay=0.01)
    curve = LossCurve()
    items = corpus.inputs

    def step(idx: np.ndarray) -> torch.Tensor:
        return obj.loss(backbone, [items[int(i)] for i in idx])

    per_epoch = max(1, len(corpus) // batch_size)
    try:
        state = train(net, step, len(corpus), opt, epochs=math.ceil(max_steps / per_epoch), max_steps=max_steps,
                      batch_size=batch_size, seed=seed, nonfinite=nonfinite, callbacks=[curve],
                      checkpoint_dir=run.checkpoint_dir("pretrain"), checkpoint_every=checkpoint_every,
                      resume=resume, run_config={"command": "pretrain", "model": model, "objective": objective,
                                                 "corpus": corpus.fingerprint(), "lr": lr},
                      progress=progress, desc=f"pretrain {objective}")
    finally:
        release_statistics(kept)
    backbone.module.eval()
    info = {"steps": int(state.step), **obj.info}
    if kept:
        info["batchnorm_layers_kept"] = len(kept)
    return info, curve.losses


def evaluate_probe(original: Backbone, adapted: Backbone, data: Any, *, text_columns=None, label_column="label",
                   labels_per_class: int | None = None, test_size: float = 0.2, seed: int = 0,
                   split: tuple[Dataset, Dataset] | None = None) -> dict[str, Any]:
    """The linear probe (``tasks.linear.fit_linear``, as ``linear-probe`` fits it) on the original and on
    the pre-trained encoder's features of the same split, each with its test metrics and intervals,
    and the verdict of the pre-trained encoder against the original (paired bootstrap).

    ``split``: ``(train, test)`` labelled Datasets, instead of reading ``data`` and splitting it
    (stratified, ``test_size``; ``labels_per_class``: a seeded few-shot sample of the training part).
    """
    if split is None:
        prepared = prepare_data(data, text_columns=text_columns, label_column=label_column)
        tr, te = (prepared.train, prepared.test) if prepared.test is not None else \
            stratified_split(prepared.train, test_size, seed)
    else:
        tr, te = split
    if labels_per_class:
        tr = few_shot_sample(tr, labels_per_class, seed)
    task = get_task("classification")
    classes = sorted({str(c) for c in tr.labels})
    y_tr, y_te = task.encode([str(c) for c in tr.labels], classes), task.encode([str(c) for c in te.labels], classes)
    out: dict[str, Any] = {"n_train": len(tr), "n_test": len(te), "labels_per_class": labels_per_class}
    probs = {}
    for name, bb in (("original", original), ("pretrained", adapted)):
        x_tr, x_te = extract_features(bb, tr, progress=False)[0], extract_features(bb, te, progress=False)[0]
        probs[name] = linear_outputs("classification", x_te, fit_linear("classification", x_tr, y_tr, seed=seed))
        out[name] = task.metrics(y_te, probs[name], classes, n_boot=1000, seed=seed)
    v = task.verdict(y_te, Outputs(probs["pretrained"], None), {"original": Outputs(probs["original"], None)},
                     n_boot=2000, seed=seed)
    lo, hi = v["transfer_gain_ci"]
    word = {"helped": "helped", "hurt": "hurt", "no-difference": "made no clear difference"}[v["verdict"]]
    out.update(gain=v["transfer_gain"], gain_ci=[lo, hi], verdict=v["verdict"],
               explanation=f"Continued pre-training {word}: linear-probe test accuracy "
                           f"{out['original']['accuracy']:.3f} (original) vs {out['pretrained']['accuracy']:.3f} "
                           f"(pre-trained), gain {v['transfer_gain']:+.3f}, 95% interval [{lo:+.3f}, {hi:+.3f}].")
    return out


def _write(run: RunDir, metrics: dict[str, Any], tensors: dict[str, torch.Tensor], original: Backbone, model: str,
           opts: dict[str, Any], corpus: Dataset, data: Any, objective: str, seed: int) -> None:
    """The run: config, metrics, the encoder's tensors, and last the card (``fit --model RUN`` reads it)."""
    run.begin()
    run.write_config({"data": str(data) if isinstance(data, (str, os.PathLike)) else None, "model": model,
                      "objective": objective, "backbone_options": opts, "seed": seed}, command="pretrain")
    run.write_json("metrics.json", metrics)
    weights = run.write_weights(tensors, strategy=f"pretrain:{objective}", classes=[])
    p = metrics["pretrain"]
    run.write_card({
        "created": metrics["run"]["created"],
        "backbone": {"name": model, "options": opts, "identity": original.identity()},
        "modality": corpus.modality, "classes": [],
        "pretrain": {"objective": objective, "steps": p["steps"], "corpus": p["corpus"],
                     "final_loss": p["loss_curve"][-1] if p["loss_curve"] else None,
                     **({"verdict": metrics["eval"]["verdict"]} if "eval" in metrics else {})},
        "data": {"source": p["corpus"]["source"], "corpus_hash": corpus.fingerprint(), "n_corpus": len(corpus)},
        "lineage": {"command": "pretrain", **original.lineage()},
        "weights": weights, "seed": seed, "versions": versions(), "timings": metrics["timings"],
    })
