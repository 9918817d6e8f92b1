"""``transferkit update``: a finished run adapted to new data, written as a NEW run.

A run is a starting point: ``update`` loads its model (the backbone with every tensor the run
adapted, and its head), changes it with the new data alone, and writes a new complete run whose
model card names its parent (path, model-card hash and weight hash).  The parent's directory is
only read.

The mode built today is source-free domain adaptation (``target_unlabelled``): unlabelled items
of the domain the model now meets, and no source item at all (the source data may be gone):

==========  =====================================================================  =================
strategy    what changes (the head stays the parent's)                              paper
==========  =====================================================================  =================
``adabn``   every BatchNorm layer's running statistics, re-estimated on the target  Li et al. 2016
``tent``    normalisation affine parameters, minimising the prediction entropy      Wang et al. 2021
``shot``    the last layer groups: information maximisation + centroid pseudo-      Liang et al. 2020
            labels (:mod:`transferkit.strategies.shot`)
==========  =====================================================================  =================

The parent's model must be a classifier made of a backbone and a linear head on its features
(the runs of ``linear-probe``, ``adabn``, ``tent``, ``shot``, ``finetune`` and its variants,
``lora`` merged first); the new run is a run of the named strategy, loaded like any other (its
saved ``backbone.<name>`` tensors are every tensor that differs from the published weights: the
parent's adaptations and this one's).  With a labelled ``test``, ``metrics.json`` holds the
parent's and the updated model's metrics on it (``test`` is the updated model's) and the verdict
of the update against the parent (paired bootstrap of the accuracy difference).

Measured (2026-12-07, EfficientNet-Lite0 at 96 px, parent: the linear probe on 1000 MNIST-5k
items; 500 target items given unlabelled and as ``--test``; defaults; a 2-core CPU shared with
other jobs): accuracy of the parent -> the update, and the update's time

=============  ======================  ======================  ======================
update         MNIST -> inverted        MNIST -> sk digits      time
=============  ======================  ======================  ======================
(parent)       0.766                   0.378
``shot``       0.846 (+0.080, helped)  0.536 (+0.158, helped)  282 s, 190 s
``tent``       0.770 (+0.004, no diff) 0.232 (-0.146, hurt)    106 s, 259 s
``adabn``      0.204 (-0.562, hurt)    0.166 (-0.212, hurt)    56 s, 107 s
=============  ======================  ======================  ======================

AdaBN in the whole network moves every feature away from the probe fitted under the pre-trained
statistics (as ``adabn``'s own docstring measured: 0.166 with the head on those statistics); a
run fitted with ``adabn --param on=backbone`` has a head fitted for re-estimated statistics.

The second mode learns new *labelled* data (``data=``, with ``naive``, ``ewc``, ``lwf``, ``replay`` or
``joint``): continual learning, domain- or class-incremental, in :mod:`transferkit.continual_update`.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .alignment import entropy
from .backbones import get_backbone
from .backbones.base import Backbone
from .config import FitConfig
from .continual_lineage import found_modality
from .continual_update import CARD_KEEP, QUALIFY, child_card, continual_update, linear_head_of  # noqa: F401
from .data.dataset import Dataset
from .errors import DataValidationError, UserInputError, shown
from .model import TransferModel
from .pipeline import reference_features
from .predict import _read_inputs, read_labelled
from .report import render_report
from .runs import RunDir, load, now_iso, versions
from .runs.loading import CARD_OPTIONS
from .strategies import STRATEGIES
from .strategies._network import HeadNetwork, bounded_subset
from .strategies._tuning import batchnorm_layers, recalibrate_batchnorm
from .strategies.base import Strategy
from .strategies.shot import shot_adapt
from .strategies.tent import adapt_norms
from .tasks import Outputs, get_task
from .training import distributed

Log = Callable[[str], None]

#: The strategies of source-free adaptation, and the parent strategies whose model qualifies.
SOURCE_FREE = ("adabn", "tent", "shot")



def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def update(run: str | os.PathLike, *, out: str | os.PathLike, target_unlabelled: str | os.PathLike | None = None,
           data: str | os.PathLike | None = None, memory: int | None = None, eval_old: list[str] | None = None,
           strategy: str | None = None, params: dict[str, Any] | None = None, test: str | os.PathLike | None = None,
           seed: int | None = None, text_columns: list[str] | None = None, path_column: str | None = None,
           skip_bad: bool = False, log: Log | None = _stderr,
           load_options: dict[str, Any] | None = None) -> TransferModel:
    """Adapt the finished run ``run`` to new data and write the result as the new run ``out``.

    Args:
        target_unlabelled: unlabelled items of the target domain (table, folder or file; labels
            in it are never read): source-free adaptation by ``strategy`` (``shot``, ``tent``,
            ``adabn``) with its options ``params`` (``--param``).
        data: new labelled data: continual learning by ``strategy`` (``naive``, ``ewc``, ``lwf``,
            ``replay``, ``joint``; :mod:`transferkit.continual_update`), options ``params``
            (:class:`~transferkit.continual.ContinualParams`).
        memory: ``replay``: the replay memory's size (default 200, or the parent's).
        eval_old: with ``data``: more labelled test sets to evaluate from this step on.
        strategy: default ``shot`` (``target_unlabelled``) or ``replay`` (``data``).
        test: labelled target data: the parent and the updated model are both evaluated on it
            (with ``data``: the new step's test set, instead of a share held out of ``data``).
        seed: default: the parent run's.
        text_columns, path_column: how to read tables (default: the parent run's).
        load_options: for :func:`~transferkit.runs.load` of the parent (``backbone``,
            ``trust_remote_code``, ``allow_pickle``, ``which``).

    Returns:
        The updated :class:`~transferkit.model.TransferModel`, built as ``tk.load(out)`` builds it
        (the pre-trained backbone, then the saved tensors), with its ``metrics`` and ``card``.
    """
    say = log or (lambda _m: None)
    parent_dir, out_dir = RunDir(run), RunDir(out)
    parent_dir.card()  # a missing, unfinished or foreign directory is refused before anything loads
    parent_path, out_path = parent_dir.path.resolve(), out_dir.path.resolve()
    if out_path == parent_path or parent_path in out_path.parents:
        raise UserInputError(f"--out {shown(out_dir.path)} lies in the run being updated; the parent is never modified",
                             hint="give the new run a folder of its own, e.g. --out runs/NAME-updated")
    if (target_unlabelled is None) == (data is None):
        raise UserInputError("update needs new data: labelled (--data) or unlabelled items of the target domain "
                             "(--target-unlabelled), one of the two",
                             hint="--data TABLE_OR_FOLDER --strategy replay|naive|ewc|lwf|joint, or "
                                  "--target-unlabelled TABLE_OR_FOLDER --strategy shot|tent|adabn")
    if data is not None:
        with out_dir.lock():
            return continual_update(parent_dir, out_dir, data=str(data), strategy=strategy or "replay", memory=memory,
                                    eval_old=list(eval_old or []), params=params, test=test, seed=seed,
                                    text_columns=text_columns, path_column=path_column, skip_bad=skip_bad, say=say,
                                    load_options=dict(load_options or {}))
    strategy = strategy or "shot"
    if strategy not in SOURCE_FREE:
        STRATEGIES.get(strategy)  # an unknown name: the registry's "did you mean"
        raise UserInputError(f"with --target-unlabelled, update adapts without source data, which {strategy!r} "
                             f"cannot do: use one of {', '.join(SOURCE_FREE)}",
                             hint="--strategy shot (strongest, trains the last layer groups), tent (normalisation "
                                  "parameters) or adabn (BatchNorm statistics only, cheapest)")
    updated = STRATEGIES.get(strategy).from_params({**({"on": "backbone"} if strategy == "adabn" else {}),
                                                    **(params or {})})
    if strategy == "adabn" and updated.on != "backbone":
        raise UserInputError("update re-estimates the statistics inside the backbone (on=backbone); on=features "
                             "needs the source features, which a source-free update does not have",
                             hint="drop --param on=features")
    with out_dir.lock():
        return _source_free(parent_dir, out_dir, updated, str(target_unlabelled), test, seed, text_columns,
                            path_column, skip_bad, say, dict(load_options or {}))


def _source_free(parent_dir: RunDir, out_dir: RunDir, updated: Strategy, target_src: str, test, seed, text_columns,
                 path_column, skip_bad: bool, say: Log, load_options: dict[str, Any]) -> TransferModel:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    parent = load(parent_dir.path, **load_options)
    head = linear_head_of(parent, parent_dir)
    seed = int(parent.card.get("seed", 0) if seed is None else seed)
    target = _read_target(parent, target_src, text_columns, skip_bad, path_column)
    if len(target) < 2:
        raise UserInputError(f"the target data {shown(target_src)} has {len(target)} item(s)",
                             hint="give at least a few dozen unlabelled items of the target domain")
    labelled = None
    if test is not None:
        test_ds, y_test, _ = read_labelled(parent, test, text_columns=text_columns, skip_bad=skip_bad,
                                           path_column=path_column)
        labelled = (test_ds, y_test, parent.predict_proba(test_ds))  # the parent's, before anything changes
    timings["load_s"] = time.perf_counter() - t_start

    t = time.perf_counter()
    device = str(distributed.device())
    say(f"{updated.name}: adapting {shown(parent_dir.path)} to {len(target)} unlabelled target items "
        "(no source data) …")
    info = ADAPT[updated.name](parent.backbone, head, target, updated, device, seed)
    timings["adapt_s"] = time.perf_counter() - t

    # the new run: the parent's head and every backbone tensor that differs from the published weights
    pretrained = _pretrained(parent, load_options)
    tensors = {"head.weight": head.weight.detach().cpu().clone(), "head.bias": head.bias.detach().cpu().clone(),
               **changed_tensors(parent.backbone, pretrained)}
    updated.load_state(tensors, parent.classes, pretrained, task=parent.task)
    model = TransferModel(pretrained, updated, batch_size=parent.batch_size)
    model.ctx.seed, model.ctx.device = seed, device

    t = time.perf_counter()
    metrics = _metrics(parent, parent_dir, model, target, info, labelled, seed, out_dir)
    timings["evaluate_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_start
    metrics["timings"] = {k: round(v, 3) for k, v in timings.items()}
    model.metrics = metrics
    model.card = _write(out_dir, parent, parent_dir, model, target, target_src, labelled, test, seed)
    model.run_dir = out_dir.path
    say(metrics["update"]["explanation"] if labelled is not None else
        f"{updated.name}: adapted; no --test was given, so no accuracy was measured")
    return model


def _read_target(parent: TransferModel, src: str, text_columns, skip_bad: bool, path_column) -> Dataset:
    """The unlabelled target items, read as the run reads items to predict; data of another
    modality (which the run's reader takes for something else: a text table for file paths) is
    refused as such."""
    try:
        return _read_inputs(parent, [src], text_columns, skip_bad, path_column)
    except DataValidationError:
        found = found_modality(src)
        if found not in (None, parent.modality):
            raise UserInputError(f"the target data {shown(src)} holds {found} items, and the run's model takes "
                                 f"{parent.modality} data", hint=f"give unlabelled {parent.modality} data of the "
                                                                 "target domain") from None
        raise


# ----- what qualifies, what changed ------------------------------------------------------------------
def changed_tensors(adapted: Backbone, pretrained: Backbone) -> dict[str, torch.Tensor]:
    """``{"backbone.<name>": tensor}``: every ``state_dict`` entry of ``adapted`` that differs from
    the same backbone with its published weights (``pretrained``), so that the new run loads onto
    the pre-trained backbone as the parent's model with this update's changes."""
    base = pretrained.module.state_dict()
    own = adapted.module.state_dict()
    odd = sorted(k for k in own if k not in base or base[k].shape != own[k].shape)
    if odd:
        raise UserInputError(f"the parent's backbone has tensors the published {pretrained.name!r} lacks: "
                             f"{', '.join(odd[:5])}", hint="was the run fitted with another backbone version?")
    return {f"backbone.{k}": v.detach().cpu().clone() for k, v in own.items()
            if not torch.equal(v.detach().cpu(), base[k].detach().cpu())}


def _pretrained(parent: TransferModel, load_options: dict[str, Any]) -> Backbone:
    """The parent's backbone as published (the card's name and options), as :func:`load` builds it."""
    b = parent.card.get("backbone") or {}
    options = {k: v for k, v in (b.get("options") or {}).items() if k in CARD_OPTIONS}
    options.update({k: True for k in ("trust_remote_code", "allow_pickle") if load_options.get(k)})
    return get_backbone(load_options.get("backbone") or b["name"], **options)


# ----- the adaptations (the parent's backbone changes in place; the head never) --------------------------------
def _adabn(backbone: Backbone, head, target: Dataset, s: Strategy, device: str, seed: int) -> dict[str, Any]:
    if not batchnorm_layers(backbone.module):
        raise UserInputError(f"adabn re-estimates BatchNorm statistics, and {backbone.name!r} has no BatchNorm layer "
                             "(LayerNorm normalises each item by its own statistics)",
                             hint="use --strategy tent (normalisation affine parameters) or shot")
    n = recalibrate_batchnorm(backbone, target, s.batch_size, torch.device(device), every_layer=True)
    return {"batchnorm_layers": n, "n_target_used": len(target)}


def _tent(backbone: Backbone, head, target: Dataset, s: Strategy, device: str, seed: int) -> dict[str, Any]:
    subset = bounded_subset(target, s.max_items, seed)
    before = _entropy(backbone, head, subset, device)
    names, run = adapt_norms(backbone, head, subset, s.options(), device, seed=seed)
    return {"parameters": len(names), **run.info(), "target_entropy_before": before,
            "target_entropy_after": _entropy(backbone, head, subset, device)}


def _shot(backbone: Backbone, head, target: Dataset, s: Strategy, device: str, seed: int) -> dict[str, Any]:
    _, facts = shot_adapt(backbone, head, bounded_subset(target, s.max_items, seed), s.shot_options(), device,
                          seed=seed)
    return facts


ADAPT = {"adabn": _adabn, "tent": _tent, "shot": _shot}


def _entropy(backbone: Backbone, head, data: Dataset, device: str) -> float:
    logits = HeadNetwork(backbone, head, device).outputs(data).astype(np.float64)
    z = np.exp(logits - logits.max(1, keepdims=True))
    return entropy(z / z.sum(1, keepdims=True))


# ----- metrics and the run directory ---------------------------------------------------------------
def _metrics(parent: TransferModel, parent_dir: RunDir, model: TransferModel, target: Dataset, info: dict[str, Any],
             labelled, seed: int, out_dir: RunDir) -> dict[str, Any]:
    s = model.strategy
    n_boot = 1000
    u: dict[str, Any] = {"mode": "source-free", "parent": str(parent_dir.path), "strategy": s.name,
                         "n_target_unlabelled": len(target)}
    metrics: dict[str, Any] = {
        "task": parent.task,
        "run": {"name": out_dir.path.name, "created": now_iso(), "strategy": s.name,
                "backbone": (parent.card.get("backbone") or {}).get("name"), "modality": parent.modality,
                "seed": seed, "command": "update"},
        "classes": parent.classes, "n_target_unlabelled": len(target),
        "strategy": {"name": s.name, "params": s.get_params(), "fit": info},
        "update": u,
    }
    notes = [f"Updated from {shown(parent_dir.path)} ({(parent.card.get('strategy') or {}).get('name')}) by "
             f"{s.name} on {len(target)} unlabelled target items, without source data; the head is the parent's."]
    if labelled is not None:
        test_ds, y, p_parent = labelled
        task = get_task(parent.task)
        p_new = model.predict_proba(test_ds)
        m_parent = task.metrics(y, p_parent, parent.classes, n_boot=n_boot, seed=seed)
        m_new = task.metrics(y, p_new, parent.classes, n_boot=n_boot, seed=seed)
        v = task.verdict(y, Outputs(p_new, None), {"parent": Outputs(p_parent, None)}, n_boot=2000, seed=seed)
        lo, hi = v["transfer_gain_ci"]
        word = {"helped": "helped", "hurt": "hurt", "no-difference": "made no clear difference"}[v["verdict"]]
        u.update(parent_test=m_parent, gain=v["transfer_gain"], gain_ci=[lo, hi], verdict=v["verdict"],
                 explanation=f"The update {word}: test accuracy {m_parent['accuracy']:.3f} (parent) vs "
                             f"{m_new['accuracy']:.3f} (updated), gain {v['transfer_gain']:+.3f}, 95% interval "
                             f"[{lo:+.3f}, {hi:+.3f}].")
        metrics.update(test=m_new, n_test=len(test_ds), controls={"parent": m_parent})
        notes.append(u["explanation"])
    metrics["notes"] = notes
    return metrics


def _write(out: RunDir, parent: TransferModel, parent_dir: RunDir, model: TransferModel, target: Dataset,
           target_src: str, labelled, test, seed: int) -> dict[str, Any]:
    """The new run through its :class:`RunDir`, as ``fit`` writes one: weights, drift reference,
    config, metrics, report (with a test set), and last the model card, which names the parent."""
    from .serve.prediction_drift import prediction_reference  # here: `import transferkit` loads no serve module

    s, pc = model.strategy, parent.card
    card = child_card(parent, parent_dir, model)
    card["data"] = {**(pc.get("data") or {}), "target_unlabelled": target_src, "target_hash": target.fingerprint(),
                    "n_target": len(target)}
    card.update(update={"mode": "source-free", "strategy": s.name, "target_unlabelled": target_src,
                        "test": None if test is None else str(test)},
                seed=seed, versions=versions(), timings=model.metrics["timings"])
    shown_on = labelled[0] if labelled is not None else target
    card["prediction_reference"] = prediction_reference(parent.task, model.predict_proba(shown_on), s.classes_,
                                                        seed=seed)
    cfg = FitConfig.from_file(parent_dir.file("config.json"), any_command=True) \
        if parent_dir.file("config.json").is_file() else FitConfig(model=card["backbone"].get("name"))
    out.begin()
    card["drift_reference"] = out.write_reference(reference_features(model, target, seed))
    out.write_config(cfg.replace(out=str(out.path), strategy=s.name, strategy_params=s.get_params(),
                                 target_unlabelled=target_src, seed=seed).to_dict(), command="update")
    out.write_json("metrics.json", model.metrics)
    card["weights"] = out.write_weights(s.state_tensors(), strategy=s.name, classes=s.classes_)
    if labelled is not None:
        out.write_text("report.html", render_report(model.metrics, card=card))
    return out.write_card(card)
