"""``transferkit update RUN --data D --strategy naive|ewc|lwf|replay|joint``: continual learning.

The labelled mode of :func:`transferkit.update.update`: a finished classification run learns new
labelled data, of the same classes (domain-incremental: next year's mail) or of new ones
(class-incremental: new classes extend the head; an old class keeps its output), and is written
as a NEW run whose card names its parent; the parent's directory is only read.

What is supported: runs whose model is a backbone with a linear head on its features (the runs
of linear-probe, finetune and its variants, contrastive, adabn, tent, shot).  By default the
backbone stays as the parent left it (published or fine-tuned weights): the update trains the head
on the backbone's cached features (:mod:`transferkit.continual.head`), which costs seconds where a
re-fit of a fine-tuned backbone costs minutes.  With ``tune_backbone`` a run whose backbone was
fine-tuned trains the backbone tensors it tuned and the head together, on the raw items, every
strategy the same way (:mod:`transferkit.continual.network`, bounded by ``max_steps``); asked of a
run that tuned no backbone tensor, or with a memory of features only, it is refused.  Regression
and multi-label runs and runs on hand-made features are refused, each with the reason.

The lineage (``continual.json``, carried from run to run) lists each step's training data and
every test set met so far as references (files, with the split's seed and share, checked by
hash); after each update every one of them still readable is evaluated again, and ``metrics.json``
gets the accuracy matrix and its summary (:mod:`transferkit.continual.metrics`).  The replay
memory (``memory.json``, ``memory.safetensors`` for features) and the EWC Fisher
(``fisher.safetensors``) live in the new run and are carried forward to the next update.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .config import FitConfig
from .continual import (
    CONTINUAL,
    ContinualParams,
    HeadData,
    ReplayMemory,
    continual_metrics,
    fisher_diagonal,
    initial_head,
    square,
    train_head,
)
from .continual.classes import class_clashes
from .continual.ewc import grown
from .continual.network import tune_update, updated_model
from .continual_lineage import Refs, file_ref, read_labelled_any, root_lineage
from .data import stratified_split
from .data.dataset import Dataset
from .errors import UserInputError, shown
from .model import TransferModel
from .pipeline import reference_features
from .report import render_report
from .runs import RunDir, load, now_iso, versions
from .strategies.params import build_params
from .tasks import Outputs, get_task

Log = Callable[[str], None]
LINEAGE, MEMORY, MEMORY_TENSORS, FISHER = "continual.json", "memory.json", "memory.safetensors", "fisher.safetensors"
DEFAULT_MEMORY = 200
#: Model-card entries the new run takes from its parent: what the model reads and predicts.
CARD_KEEP = ("task", "classes", "label_map", "label_sep", "modality", "text_columns", "path_column", "label_column",
             "data")
QUALIFY = ("linear-probe, adabn, tent, shot, finetune, gradual, lpft, l2sp, lora or contrastive (a backbone "
           "with a linear head on its features)")


# ----- what qualifies ------------------------------------------------------------------------------
def linear_head_of(parent: TransferModel, where: RunDir) -> torch.nn.Linear:
    """The parent's head as ``Linear(D, C)`` (LoRA adapters merged into the backbone first).

    Raises:
        UserInputError: a task other than classification, or a model that is not a backbone
            with a linear head on its features (the message names what qualifies).
    """
    s = parent.strategy
    if parent.task != "classification":
        raise UserInputError(f"{shown(where.path)} is a {parent.task} run; update adapts a classifier "
                             "(its objectives read class probabilities)", hint="update a classification run")
    if parent.onnx is not None:
        raise UserInputError("update trains in PyTorch, not through an ONNX graph",
                             hint="load the run with the torch backend")
    why = None
    if not s.head_on_features:
        why = f"its delivered model ({s.name}) reads hand-made features, outside the network"
    else:
        head = s.merged_for_export().torch_head()
        if type(head) is not torch.nn.Linear:
            why = f"its model ({s.name}) ends in a {type(head).__name__}, not a linear head on the backbone's features"
    if why is not None:
        raise UserInputError(f"{shown(where.path)} cannot be updated: {why}",
                             hint=f"update runs of {QUALIFY}" + ("; or --which transfer, the run's transfer model"
                                                                if not s.head_on_features else ""))
    return head.cpu().eval()


def _saved_head(parent: TransferModel, head: torch.nn.Linear, where: RunDir) -> dict[str, torch.Tensor]:
    """The parent's saved tensors, whose ``head.weight``/``head.bias`` the update replaces: they
    must be the linear head itself (a merged LoRA's saved head is not the one its outputs use)."""
    tensors = dict(parent.strategy.state_tensors())
    w, b = tensors.get("head.weight"), tensors.get("head.bias")
    if w is None or b is None or tuple(w.shape) != tuple(head.weight.shape) or not torch.allclose(
            w.float().cpu(), head.weight.detach().float(), atol=1e-6):
        raise UserInputError(f"{shown(where.path)} cannot be updated with --data: its saved model "
                             f"({parent.strategy.name}) does not keep its linear head as head.weight/head.bias",
                             hint=f"update runs of {QUALIFY} (lora: fit with --param merge=true)")
    return tensors


# ----- the update ----------------------------------------------------------------------------------
def continual_update(parent_dir: RunDir, out_dir: RunDir, *, data: str, strategy: str, memory: int | None,
                     eval_old: list[str], params: dict[str, Any] | None, test, seed, text_columns, path_column,
                     skip_bad: bool, say: Log, load_options: dict[str, Any]) -> TransferModel:
    """The labelled update (module docstring); :func:`transferkit.update.update` checks the
    directories and holds ``out``'s lock."""
    if strategy not in CONTINUAL:
        raise UserInputError(f"with --data, update learns new labelled data by one of {', '.join(CONTINUAL)}, "
                             f"not {strategy!r}", hint="--strategy replay --memory 200 keeps earlier items; naive "
                                                      "is the forgetting control; joint retrains on all data")
    if memory is not None and int(memory) < 1:
        raise UserInputError(f"--memory must be at least 1, got {memory}", hint="e.g. --memory 200")
    p = build_params(ContinualParams, dict(params or {}), f"update --strategy {strategy}")
    t_start, timings, notes = time.perf_counter(), {}, []
    parent = load(parent_dir.path, **load_options)
    head = linear_head_of(parent, parent_dir)
    saved = _saved_head(parent, head, parent_dir)
    seed = int(parent.card.get("seed", 0) if seed is None else seed)
    lineage = parent_dir.read_json(LINEAGE, None) or root_lineage(parent_dir, parent, notes)
    refs = Refs(parent, skip_bad, notes)
    reader = {"text_columns": text_columns, "path_column": path_column}

    new = read_labelled_any(parent, str(data), text_columns, path_column, skip_bad)
    step = len(lineage["steps"])
    if test is not None:
        train_ds, test_ds = new, read_labelled_any(parent, str(test), text_columns, path_column, skip_bad)
        train_ref = file_ref(data, train_ds, reader, None, f"step {step} training data")
        test_ref = file_ref(test, test_ds, reader, None, f"step {step} test")
    else:
        train_ds, test_ds = stratified_split(new, test_size=p.test_size, seed=seed)
        split = {"test_size": p.test_size, "seed": seed}
        train_ref = file_ref(data, train_ds, reader, {**split, "part": "train"}, f"step {step} training data")
        test_ref = file_ref(data, test_ds, reader, {**split, "part": "test"}, f"step {step} test")

    clashes = class_clashes(parent.classes, train_ds.classes)
    if clashes["case"] and not p.allow_class_clash:
        pairs = ", ".join(f"{a!r} (parent) vs {b!r} (new data)" for a, b in clashes["case"][:5])
        raise UserInputError(f"{shown(data)}: class names differ from the parent's only by case or spaces: {pairs}",
                             hint="write the labels as the parent does, or --param allow_class_clash=true to keep "
                                  "them as separate classes")
    for a, b in clashes["case"]:
        say(f"warning: {b!r} in the new data and {a!r} in the parent are kept as two classes (allow_class_clash)")
    if clashes["vanished"]:
        say(f"warning: the parent's classes {', '.join(map(repr, clashes['vanished']))} are absent from "
            f"{shown(data)}, which has others of its classes: renamed or lost? (the head keeps them)")
    new_classes = sorted(set(train_ds.classes) - set(parent.classes))
    classes = [*parent.classes, *new_classes]
    scenario = "class-incremental" if new_classes else "domain-incremental"
    task = get_task("classification")
    extra = []
    for src in eval_old or []:
        ds = read_labelled_any(parent, str(src), text_columns, path_column, skip_bad)
        unknown = sorted(set(ds.labels) - set(classes))
        if unknown:
            raise UserInputError(f"--eval-old {shown(src)}: labels neither the parent nor this update knows: "
                                 f"{', '.join(unknown[:10])}", hint=f"known classes: {', '.join(classes)}")
        extra.append(file_ref(src, ds, reader, None, f"--eval-old {src}"))
    timings["load_s"] = time.perf_counter() - t_start

    # ----- the training set of the strategy ------------------------------------------------------
    t = time.perf_counter()
    feats = parent.ctx.features
    X_new = feats(train_ds).astype(np.float32)
    y_new = task.encode(train_ds.labels, classes)
    parent_train = refs.get(lineage["train_sets"][-1])
    mem = _memory(parent_dir, parent, memory, p.memory_kind, strategy, parent_train, seed, notes)
    X, y, facts, inputs = X_new, y_new, {"n_new": len(y_new)}, list(train_ds.inputs)
    if strategy == "replay" and mem is not None and len(mem):
        X = np.concatenate([X_new, mem.features])
        y = np.concatenate([y_new, task.encode(mem.labels, classes)])
        facts["n_replayed"], inputs = len(mem), inputs + [s.get("input") for s in mem.slots]
    if strategy == "joint":
        earlier = [ds for ds in (refs.get(r) for r in lineage["train_sets"]) if ds is not None]
        facts["n_earlier"] = sum(len(ds) for ds in earlier)
        if earlier:
            X = np.concatenate([X_new, *(feats(ds).astype(np.float32) for ds in earlier)])
            y = np.concatenate([y_new, *(task.encode(ds.labels, classes) for ds in earlier)])
            inputs += [x for ds in earlier for x in ds.inputs]
        else:
            notes.append("joint: none of the earlier training data is available, so joint trained on the new data "
                         "alone (as naive)")
    hd = HeadData(X, y)
    if strategy == "lwf":
        with torch.no_grad():
            hd.old_logits = head(torch.as_tensor(X_new)).numpy()
    tuned = _tuned_names(parent, saved, parent_dir, inputs, mem) if p.tune_backbone else None
    if strategy == "ewc" and tuned is None:
        hd.fisher, hd.anchor, facts["fisher_source"] = _fisher(parent_dir, parent, head, parent_train, mem)
    timings["features_s"] = time.perf_counter() - t

    t = time.perf_counter()
    say(f"{strategy}: updating {shown(parent_dir.path)} ({scenario}, {len(parent.classes)} -> {len(classes)} classes) "
        f"on {len(X)} training items{' (backbone and head)' if tuned else ''} …")
    control = strategy != "naive" and p.naive_control
    if tuned is None:
        new_head = initial_head(head.weight.detach().numpy(), head.bias.detach().numpy(), len(classes))
        info = {**facts, **train_head(new_head, hd, strategy, p, seed)}
        model = updated_model(parent, saved, new_head, classes, parent.backbone, seed)
        naive = None
        if control:
            naive = initial_head(head.weight.detach().numpy(), head.bias.detach().numpy(), len(classes))
            train_head(naive, HeadData(X_new, y_new), "naive", p, seed)
        new_probs, naive_probs = _head_probs(new_head, feats), naive and _head_probs(naive, feats)
    else:
        fisher_items = list(parent_train.inputs) if parent_train is not None else \
            [s_["input"] for s_ in (mem.slots if mem is not None else [])]
        model, run = tune_update(parent, head, saved, tuned, classes, inputs, y, strategy, p, seed, hd, fisher_items)
        info = {**facts, **run}
        new_probs, naive_probs = model.predict_proba, None
        if control:
            naive_model, _ = tune_update(parent, head, saved, tuned, classes, list(train_ds.inputs), y_new, "naive",
                                         p, seed, HeadData(X_new, y_new), [])
            naive_probs = naive_model.predict_proba
    timings["train_s"] = time.perf_counter() - t
    if mem is not None:
        mem.offer(list(train_ds.inputs), list(train_ds.labels), list(train_ds.origins), train_ds.content_hashes(),
                  X_new, seed + step)

    # ----- the new model, evaluated on every test set the lineage knows ---------------------------
    t = time.perf_counter()
    sets = [*lineage["test_sets"], *({"name": r["name"], "ref": r, "first": step} for r in (test_ref, *extra))]
    cont, test_metrics, n_test = _evaluate(lineage, sets, refs, classes, _head_probs(head, feats), new_probs,
                                           naive_probs, seed, step)
    timings["evaluate_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_start
    u = {"mode": "continual", "strategy": strategy, "parent": str(parent_dir.path), "scenario": scenario,
         "step": step, "data": str(data), "new_classes": new_classes, "clashes": clashes, "fit": info,
         "params": p.as_dict(),
         "memory": None if mem is None else {k: v for k, v in mem.manifest().items() if k != "slots"}}
    notes.insert(0, f"Updated from {shown(parent_dir.path)} by {strategy} ({scenario}) on {len(train_ds)} new "
                    f"labelled items of {shown(data)}; " + (
                        f"the {len(tuned)} backbone tensors the parent tuned and the head trained together on the "
                        "items" if tuned else "the backbone is the parent's, the head was trained on its features")
                + ".")
    if cont.get("explanation"):
        notes.append(cont["explanation"])
    model.metrics = {
        "task": "classification", "classes": classes,
        "run": {"name": out_dir.path.name, "created": now_iso(), "strategy": model.strategy.name,
                "backbone": (parent.card.get("backbone") or {}).get("name"), "modality": parent.modality,
                "seed": seed, "command": "update"},
        "strategy": {"name": model.strategy.name, "params": model.strategy.get_params(), "fit": info},
        "update": u, "continual": cont, "test": test_metrics, "n_test": n_test, "notes": notes,
        "timings": {k: round(v, 3) for k, v in timings.items()}}
    lineage = {"steps": [*lineage["steps"], {"run": str(out_dir.path), "command": "update", "strategy": strategy,
                                             "data": str(data), "classes": classes, "new_classes": new_classes}],
               "train_sets": [*lineage["train_sets"], train_ref], "test_sets": sets,
               "accuracy_matrix": cont["accuracy_matrix"], "baseline": cont["baseline"]}
    model.card = _write(out_dir, parent, parent_dir, model, train_ds, test_ds, data, test, p, seed, lineage, mem,
                        hd if strategy == "ewc" else None)
    model.run_dir = out_dir.path
    say(cont.get("explanation") or f"{strategy}: average accuracy {cont['average_accuracy']}")
    return model


def _tuned_names(parent: TransferModel, saved: dict[str, torch.Tensor], where: RunDir, inputs: list,
                 mem: ReplayMemory | None) -> list[str]:
    """``tune_backbone``: the backbone tensors the parent's run tuned (those it saved), which the
    update trains again; refused for a run that tuned none, or with a memory of features (they
    belong to the backbone before the update)."""
    names = sorted(k[len("backbone."):] for k in saved if k.startswith("backbone."))
    if not names:
        raise UserInputError(f"tune_backbone trains the backbone tensors the parent tuned, and {shown(where.path)} "
                             f"({parent.strategy.name}) tuned none: its backbone is the published one",
                             hint="drop --param tune_backbone=true (the head learns on the cached features), or "
                                  "update a finetune run")
    if any(x is None for x in inputs) or (mem is not None and mem.kind == "features"):
        raise UserInputError("tune_backbone trains on the items themselves, and the replay memory keeps only their "
                             "features", hint="a memory of kind items (--param memory_kind=items), or drop "
                                              "tune_backbone")
    return names


def _head_probs(head: torch.nn.Linear, feats) -> Callable[[Dataset], np.ndarray]:
    """``data -> (N, C)`` probabilities of ``head`` on the cached features ``feats(data)``."""
    def probs(ds: Dataset) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(head(torch.as_tensor(feats(ds).astype(np.float32))), 1).numpy()
    return probs


def _memory(parent_dir: RunDir, parent: TransferModel, capacity: int | None, kind: str, strategy: str,
            parent_train: Dataset | None, seed: int, notes: list[str]) -> ReplayMemory | None:
    """The replay memory carried from the parent (resized to ``capacity``), or a new one filled
    from the parent's training data; ``None`` when neither replay nor ``--memory`` asks for one."""
    manifest = parent_dir.read_json(MEMORY, None)
    if strategy != "replay" and capacity is None and manifest is None:
        return None
    cap = int(capacity or (manifest or {}).get("capacity") or DEFAULT_MEMORY)
    if manifest is not None:
        if manifest.get("kind") == "features":
            from safetensors.torch import load_file
            rows = load_file(str(parent_dir.file(MEMORY_TENSORS)))["features"].numpy()
        else:
            items = [s["input"] for s in manifest.get("slots") or []]
            ds = Dataset(parent.modality, items, [s["label"] for s in manifest["slots"]],
                         [s["origin"] for s in manifest["slots"]], source=str(parent_dir.file(MEMORY)))
            rows = parent.ctx.features(ds).astype(np.float32) if items else None
        mem = ReplayMemory.from_manifest(manifest, rows, cap)
        mem.kind = kind if capacity is not None else mem.kind
        return mem
    mem = ReplayMemory(cap, kind)
    if parent_train is not None:
        mem.offer(list(parent_train.inputs), list(parent_train.labels), list(parent_train.origins),
                  parent_train.content_hashes(), parent.ctx.features(parent_train).astype(np.float32), seed)
    else:
        notes.append("the replay memory starts empty: the parent has none and its training data is not available")
    return mem


def _fisher(parent_dir: RunDir, parent: TransferModel, head: torch.nn.Linear, parent_train: Dataset | None,
            mem: ReplayMemory | None) -> tuple[dict, dict, str]:
    """EWC's Fisher of the parent's head: on the parent's training data, else its replay memory,
    plus the Fisher the parent carries from earlier steps (online EWC); the anchor is the parent's head."""
    if parent_train is not None:
        X, source = parent.ctx.features(parent_train), f"the parent's training data ({len(parent_train)} items)"
    elif mem is not None and len(mem):
        X, source = mem.features, f"the replay memory ({len(mem)} items)"
    else:
        raise UserInputError("ewc estimates how much each weight mattered on the parent's data, and neither the "
                             "parent's training data nor a replay memory is available",
                             hint="restore the parent's data files, pass --memory N to a run that keeps one, or use "
                                  "--strategy lwf (needs no earlier item)")
    fisher = fisher_diagonal(head, torch.as_tensor(np.asarray(X, np.float32)))
    if parent_dir.file(FISHER).is_file():
        from safetensors.torch import load_file
        earlier = load_file(str(parent_dir.file(FISHER)))
        fisher = {k: v + grown(earlier[k], v.shape) if k in earlier else v for k, v in fisher.items()}
        source += " + the Fisher the parent carries from earlier steps"
    anchor = {k: v.detach().clone() for k, v in head.named_parameters()}
    return fisher, anchor, source


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float((p.argmax(1) == y).mean())


def _evaluate(lineage, sets: list[dict], refs: Refs, classes, parent_probs, new_probs, naive_probs, seed: int,
              step: int) -> tuple[dict[str, Any], dict[str, Any], int]:
    """The accuracy matrix extended by this step's row (and the parent's row by its accuracy on
    the new sets: forward transfer), its summary, and the metrics over all sets together."""
    task = get_task("classification")
    rows = square(lineage["accuracy_matrix"], len(sets))
    new_row, naive_row, baseline = [], [], list(lineage.get("baseline") or [])
    ys, ps, pn, old_mask = [], [], [], []
    for j, s in enumerate(sets):
        ds = refs.get(s["ref"])
        if ds is None:
            new_row.append(None)
            naive_row.append(None)
            baseline += [None] * (j >= len(baseline))
            continue
        y, p = task.encode(ds.labels, classes), new_probs(ds)
        q = naive_probs(ds) if naive_probs else None
        if rows[-1][j] is None:  # the parent's row: a set it meets now (its classes only, others count as
            # wrong: forward transfer), or the root's own test set, measured at its first update
            old = parent_probs(ds)
            rows[-1][j] = _accuracy(np.pad(old, ((0, 0), (0, len(classes) - old.shape[1]))), y)
        if j >= len(baseline):
            baseline.append(float(np.bincount(y).max() / len(y)))
        new_row.append(_accuracy(p, y))
        naive_row.append(None if q is None else _accuracy(q, y))
        ys.append(y), ps.append(p), old_mask.append(np.full(len(y), s["first"] < step))
        if q is not None:
            pn.append(q)
    first = [s["first"] for s in sets]
    matrix = [*rows, new_row]
    cont: dict[str, Any] = {"accuracy_matrix": matrix, "test_sets": [s["name"] for s in sets], "first_step": first,
                            "baseline": baseline, "baseline_kind": "majority-class share of each test set",
                            **continual_metrics(matrix, first, baseline)}
    y_all, p_all = np.concatenate(ys), np.concatenate(ps)
    metrics = task.metrics(y_all, p_all, classes, n_boot=1000, seed=seed)
    if naive_probs:
        naive = continual_metrics([*rows, naive_row], first, baseline)
        cont["naive"] = {"last_row": naive_row, **naive}
        old = np.concatenate(old_mask)
        if old.any():
            v = task.verdict(y_all[old], Outputs(p_all[old], None), {"naive": Outputs(np.concatenate(pn)[old], None)},
                             n_boot=2000, seed=seed)
            lo, hi = v["transfer_gain_ci"]
            word = {"helped": "reduced forgetting", "hurt": "forgot more",
                    "no-difference": "made no clear difference to forgetting"}[v["verdict"]]
            cont["verdict"] = {"against": "naive", "verdict": v["verdict"], "gain": v["transfer_gain"],
                               "gain_ci": [lo, hi], "n_items": int(old.sum())}
            cont["explanation"] = (f"Against naive fine-tuning on the same new data, the update {word}: accuracy on "
                                   f"the earlier test sets {v['transfer_gain']:+.3f} (95% interval [{lo:+.3f}, "
                                   f"{hi:+.3f}], {int(old.sum())} items); forgetting {_num(cont['forgetting'])} vs "
                                   f"{_num(naive['forgetting'])} (naive); average accuracy "
                                   f"{_num(cont['average_accuracy'])} vs {_num(naive['average_accuracy'])}.")
    return cont, metrics, int(len(y_all))


def child_card(parent: TransferModel, parent_dir: RunDir, model: TransferModel) -> dict[str, Any]:
    """The model card of a run made from ``parent`` (both modes of ``update``): what the model reads
    and predicts (:data:`CARD_KEEP`), the backbone's identity, the strategy, and the lineage naming
    the parent (path, card hash, weight hash, model)."""
    s, pc = model.strategy, parent.card
    entry = (pc.get("delivered") or {}).get("weights") or pc.get("weights") or {}
    card = {k: pc[k] for k in CARD_KEEP if k in pc}
    card.update(created=model.metrics["run"]["created"],
                backbone={**(pc.get("backbone") or {}), "identity": model.backbone.identity()},
                strategy={"name": s.name, "params": s.get_params()},
                lineage={"command": "update", "parent": {**parent_dir.lineage_entry(),
                                                         "weights_sha256": entry.get("sha256"),
                                                         "model": (pc.get("delivered") or {}).get("name")
                                                         or (pc.get("strategy") or {}).get("name")}})
    return card


def _write(out: RunDir, parent: TransferModel, parent_dir: RunDir, model: TransferModel, train_ds: Dataset,
           test_ds: Dataset, data, test, p: ContinualParams, seed: int, lineage: dict[str, Any],
           mem: ReplayMemory | None, ewc: HeadData | None) -> dict[str, Any]:
    """The new run as ``fit`` writes one (weights, drift reference, config that rebuilds this step's
    split, metrics, report, lineage, memory and Fisher), and last the model card naming the parent."""
    from .serve.prediction_drift import prediction_reference  # here: `import transferkit` loads no serve module

    s = model.strategy
    card = child_card(parent, parent_dir, model)
    card.update(classes=s.classes_, label_map={str(i): c for i, c in enumerate(s.classes_)},
                data={"train": str(data), "test": None if test is None else str(test),
                      "train_hash": train_ds.fingerprint(), "test_hash": test_ds.fingerprint(),
                      "n_train": len(train_ds), "n_test": len(test_ds)},
                update={"mode": "continual", "strategy": model.metrics["update"]["strategy"], "data": str(data),
                        "test": None if test is None else str(test), "scenario": model.metrics["update"]["scenario"],
                        "fisher_source": model.metrics["update"]["fit"].get("fisher_source"),
                        "memory": MEMORY if mem is not None else None, "lineage": LINEAGE},
                seed=seed, versions=versions(), timings=model.metrics["timings"])
    card["prediction_reference"] = prediction_reference("classification", model.predict_proba(test_ds), s.classes_,
                                                        seed=seed)
    cfg = FitConfig.from_file(parent_dir.file("config.json"), any_command=True) \
        if parent_dir.file("config.json").is_file() else FitConfig(model=card["backbone"].get("name"))
    out.begin()
    card["drift_reference"] = out.write_reference(reference_features(model, train_ds, seed))
    reader = lineage["train_sets"][-1]  # this step's columns, so that the config rebuilds this step's split
    out.write_config(cfg.replace(out=str(out.path), data=str(data), test=None if test is None else str(test),
                                 test_size=p.test_size, seed=seed, labels_per_class=None, strategy=s.name,
                                 text_columns=reader.get("text_columns") or cfg.text_columns,
                                 path_column=reader.get("path_column") or cfg.path_column,
                                 strategy_params=s.get_params()).to_dict(), command="update")
    out.write_json("metrics.json", model.metrics)
    out.write_json(LINEAGE, lineage)
    if mem is not None:
        out.write_json(MEMORY, mem.manifest())
        if mem.tensors():
            from safetensors.torch import save
            out.write_bytes(MEMORY_TENSORS, save(mem.tensors()))
    if ewc is not None:
        from safetensors.torch import save
        out.write_bytes(FISHER, save({k: v.contiguous() for k, v in ewc.fisher.items()}))
    card["weights"] = out.write_weights(s.state_tensors(), strategy=s.name, classes=s.classes_)
    out.write_text("report.html", render_report(model.metrics, card=card))
    return out.write_card(card)
