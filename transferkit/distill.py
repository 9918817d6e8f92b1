"""``transferkit distill``: a smaller, faster student trained on a run's soft labels.

Knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
Network", 2015): the student fine-tunes (the one training loop, through :class:`FineTune`) on
``alpha * CE(student, label) + (1 - alpha) * T^2 * KL(teacher_T || student_T)``, where ``_T``
are the distributions softened at temperature ``T``; the teacher's probabilities are turned
into its tempered distribution as ``p^(1/T)`` renormalised (the same as its logits over ``T``).

Beyond the teacher's labelled training items, the student learns the teacher's soft labels on
items without a label (:mod:`.distill_set`: text views of the training items, the user's
``--unlabelled`` items), with the hard-label term on the labelled items only; and, where the
teacher's prediction is a head on pooled features, a feature-matching term ``feature_weight *
(1 - cos(P f_s, f_t))`` pulls the student's pooled features ``f_s`` through a learned projection
``P`` towards the teacher's ``f_t`` (FitNets, Romero et al. 2015, on the pooled output).  The
budget is counted in optimizer steps (``steps``), not epochs: 2 epochs of 320 e-mails were 36
steps, after which the student was 10 points below its teacher (BENCHMARKS.md, distill).

Students: ``NAME@K`` keeps only the first K blocks of a transformers model (``minilm-l6@3``:
half the layers, initialised from the pre-trained ones, as DistilBERT does) or the first K
stages of an EfficientNet-Lite; any zoo name or model directory works (``efficientnet-lite0``
for a ``lite2`` teacher).  Default: the teacher's backbone with a third of its blocks for text
(``minilm-l6@2``), half for images and audio (:func:`default_student`).

The student is written as an ordinary run directory (a ``finetune`` run: predict, evaluate,
serve and export work on it) whose model card and ``distillation.json`` record the teacher,
the settings, and the size, speed and test accuracy of student and teacher side by side on the
teacher's own test split.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import get_backbone
from .data.dataset import Dataset
from .distill_set import build_set
from .errors import UserInputError, shown
from .evaluation import classification_metrics
from .model import TransferModel
from .pipeline import reference_features
from .report import render_report
from .runs import RunDir, load, now_iso, recreate_splits, versions
from .runs.loading import remember_user_backbone
from .strategies.base import TransferContext
from .strategies.finetune import FineTune
from .training.loop import isolated_rng

# Defaults, chosen by measurement (benchmarks/bench_distill.py: spam, minilm-l6 probe teacher).
TEMPERATURE = 2.0
ALPHA = 0.5
LR = 5e-5
# The fewest optimizer steps of a run (more where 3 passes over the labelled items take more): 2
# epochs of 320 e-mails were 36 steps and left minilm-l6@3 10 points below its teacher (0.812 vs
# 0.912); 120 steps (early stopping ended one run at 108) put it 5 to 6 points above.
STEPS = 120
EPOCHS_AT_LEAST = 3
# Text views and feature matching changed nothing measurable on spam at 120 steps (minilm-l6@3:
# 0.975 without views, 0.963 with two; 0.963 with and without feature matching, on 80 test
# e-mails, where one e-mail is 1.25 points), so both are off unless asked for.
TEXT_VIEWS = 0
FEATURE_WEIGHT = 0.0


class Distillation(FineTune):
    """Fine-tuning on a teacher's soft labels (see the module docstring).

    Args:
        teacher_proba: ``(item's content hash) -> (C,) probabilities``, in the class order of
            the labels (sorted class names); every training item must have one.
        temperature: T >= 1 softens both distributions.
        alpha: weight of the hard-label cross-entropy (0: soft labels only); it applies to the
            labelled items only (each item's share of a batch's loss).
        unlabelled: ``(content hash) -> content hash of the labelled item it was made from``
            (a text view) or ``None`` (an unlabelled item); their labels are the teacher's
            choice, never trained on, and views of validation items are not trained on either.
        teacher_features: ``(content hash) -> (D_t,)`` teacher pooled features, for the
            feature-matching term.
        feature_weight: weight of ``1 - cos(P f_s, f_t)``, the cosine distance between the
            student's pooled features ``f_s (D_s,)`` through a learned projection ``P`` (the
            identity at start where ``D_s == D_t``) and the teacher's ``f_t``; 0: none.
        **params: :class:`FineTune` options (epochs, max_steps, lr, batch_size, unfreeze...).
    """

    name = "finetune"  # the student is stored and reloaded as a fine-tuned run
    tasks = ("classification",)  # soft labels are class probabilities: its loss is classification's

    def __init__(self, *, teacher_proba: dict[str, np.ndarray], temperature: float = 2.0, alpha: float = 0.5,
                 unlabelled: dict[str, str | None] | None = None,
                 teacher_features: dict[str, np.ndarray] | None = None, feature_weight: float = 0.0,
                 **params: Any):
        super().__init__(**params)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 1:
            raise UserInputError(f"temperature must be a number >= 1, got {temperature!r}",
                                 hint="1 uses the teacher's probabilities as they are; 2 to 4 soften them")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise UserInputError(f"alpha must be in [0, 1], got {alpha!r}",
                                 hint="0: the teacher's soft labels only; 1: the true labels only")
        if isinstance(feature_weight, bool) or not isinstance(feature_weight, (int, float)) or feature_weight < 0:
            raise UserInputError(f"feature weight must be a number >= 0, got {feature_weight!r}",
                                 hint="0 turns feature matching off")
        if feature_weight and teacher_features is None:
            raise UserInputError("feature matching needs the teacher's features, and this teacher's prediction is "
                                 "not a head on backbone features", hint="set the feature weight to 0")
        self.teacher_proba, self.temperature, self.alpha = teacher_proba, float(temperature), float(alpha)
        self.unlabelled, self.teacher_features = unlabelled or {}, teacher_features
        self.feature_weight = float(feature_weight)
        self._soft = self._labelled = self._tfeat = self._proj = self._seen = None
        self._hook = None

    def _split(self, data: Dataset, ctx: TransferContext) -> tuple[list[int], list[int] | None]:
        """The validation split of the labelled items, as without the others; then every
        unlabelled item and every view of a training item (never one of a validation item)."""
        hashes = data.content_hashes()
        own = [i for i, h in enumerate(hashes) if h not in self.unlabelled]
        if len(own) == len(data):
            return super()._split(data, ctx)
        fit, val = super()._split(data.subset(own), ctx)
        if val is None:
            return list(range(len(data))), None
        val_hashes = {hashes[own[i]] for i in val}
        rest = [i for i, h in enumerate(hashes) if h in self.unlabelled and self.unlabelled[h] not in val_hashes]
        return [own[i] for i in fit] + rest, [own[i] for i in val]

    def _before_training(self, model, fit_ds: Dataset, val_ds: Dataset | None, ctx: TransferContext) -> None:
        super()._before_training(model, fit_ds, val_ds, ctx)
        hashes = fit_ds.content_hashes()
        missing = [h for h in hashes if h not in self.teacher_proba]
        if missing:
            raise UserInputError(f"{len(missing)} training items have no teacher probabilities",
                                 hint="give teacher_proba for every training item (distill computes them)")
        p = np.stack([self.teacher_proba[h] for h in hashes]).astype(np.float64)
        soft = np.clip(p, 1e-12, 1.0) ** (1.0 / self.temperature)
        self._soft = torch.as_tensor(soft / soft.sum(1, keepdims=True), dtype=torch.float32)
        self._labelled = torch.tensor([h not in self.unlabelled for h in hashes])
        if not self.feature_weight:
            return
        self._tfeat = torch.as_tensor(np.stack([self.teacher_features[h] for h in hashes]), dtype=torch.float32)
        d_s, d_t = ctx.backbone.num_features, self._tfeat.shape[1]
        head = model["head"]
        with isolated_rng(ctx.seed):
            self._proj = nn.Linear(d_s, d_t).to(head.weight.device)
        if d_s == d_t:  # the same width: start from "the student's features are the teacher's"
            with torch.no_grad():
                self._proj.weight.copy_(torch.eye(d_s))
                self._proj.bias.zero_()
        # The loss hook sees logits, not features: the head's input is kept as it goes in.
        self._hook = head.register_forward_pre_hook(lambda _m, args: setattr(self, "_seen", args[0]))

    def _param_groups(self, groups, chosen, heads, scratch=None):
        out, rates = super()._param_groups(groups, chosen, heads, scratch)
        if self._proj is not None:
            out.append({"params": list(self._proj.parameters()), "lr": rates["head"], "weight_decay": 0.0,
                        "name": "projection"})
        return out, rates

    def _task_loss(self, logits: torch.Tensor, idx: np.ndarray, y: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        rows = torch.as_tensor(idx)
        soft = self._soft[rows].to(logits.device)
        loss = (1 - self.alpha) * F.kl_div(F.log_softmax(logits / t, dim=1), soft, reduction="batchmean") * t * t
        labelled = None if self._labelled is None else self._labelled[rows]
        if labelled is None or bool(labelled.all()):
            loss = loss + self.alpha * super()._task_loss(logits, idx, y)
        elif self.alpha and bool(labelled.any()):  # mean over the batch, 0 for the items without a label
            m = labelled.to(logits.device)
            ce = super()._task_loss(logits[m], idx[labelled.numpy()], y[m])
            loss = loss + self.alpha * ce * m.float().mean()
        if self._proj is not None and self._seen is not None:
            f_t = self._tfeat[rows].to(logits.device)
            cos = F.cosine_similarity(self._proj(self._seen.float()), f_t, dim=1)
            loss = loss + self.feature_weight * (1 - cos).mean()
        return loss

    def _fit(self, train_ds: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        try:
            super()._fit(train_ds, y, ctx)
        finally:
            if self._hook is not None:
                self._hook.remove()
            self._soft = self._labelled = self._tfeat = self._proj = self._seen = self._hook = None


def default_student(teacher_backbone) -> str:
    """The teacher's backbone with a third of its blocks for text, half for the others (at least one).

    A text transformer's blocks cost alike, on top of a fixed cost (tokenising, embeddings,
    pooling): half of minilm-l6's blocks ran 1.8-1.9x the teacher's speed on spam, short of the
    2x that makes a student worth it; a third (minilm-l6@2) 2.3-2.5x, 2.5-3.8 points above the
    probe teacher (benchmarks/bench_distill.py).  Image backbones keep half: their first stages cost the most,
    and no third was measured."""
    n = len(teacher_backbone.layer_groups()) - 2  # minus embeddings/stem and head
    base = teacher_backbone.name
    if teacher_backbone.layer is not None:
        n = teacher_backbone.layer if teacher_backbone.layer > 0 else n
    return f"{base}@{max(1, n // 3 if teacher_backbone.modality == 'text' else n // 2)}"


def _params(model) -> int:
    return sum(p.numel() for p in model.backbone.module.parameters())


def _throughput(model, data: Dataset) -> float:
    """Items per second of ``model.predict_proba`` (no cache: the backbone runs)."""
    cache = model.feature_cache
    model.feature_cache = None
    try:
        t0 = time.perf_counter()
        model.predict_proba(data)
        return len(data) / (time.perf_counter() - t0)
    finally:
        model.feature_cache = cache


def compare_speed(student, teacher, data: Dataset, repeats: int = 3) -> tuple[float, float]:
    """``(student, teacher)`` items per second on the same items, measured in turns (student,
    teacher, student, ...) and the best of ``repeats`` each: on a machine shared with other work,
    a burst of load then slows both alike instead of whichever model ran during it."""
    _throughput(student, data.subset(range(min(8, len(data)))))  # warm-up (first-call allocations)
    _throughput(teacher, data.subset(range(min(8, len(data)))))
    s, t = [], []
    for _ in range(max(1, repeats)):
        s.append(_throughput(student, data))
        t.append(_throughput(teacher, data))
    return max(s), max(t)


def _check_count(name: str, value: Any, low: int, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserInputError(f"{name} must be a whole number >= {low}, got {value!r}", hint=hint)


def distill(run: str | Path, out: str | Path, *, student: str | None = None, temperature: float = TEMPERATURE,
            alpha: float = ALPHA, steps: int | None = None, epochs: int | None = None, lr: float = LR,
            batch_size: int = 16, seed: int | None = None, unlabelled: str | Path | None = None,
            text_views: int | None = None, feature_weight: float = FEATURE_WEIGHT, speed_items: int = 200,
            speed_repeats: int = 3, log=print, load_options: dict[str, Any] | None = None,
            **finetune: Any) -> dict[str, Any]:
    """Train a student on the teacher run's training split and compare the two on its test split.

    The student is a complete run directory: model card (with the teacher as its lineage),
    weights, config.json (the teacher's data and split, and the distillation settings), metrics,
    report, and the drift reference its server monitors.

    Args:
        steps: optimizer steps of training (default: :data:`STEPS`, or 3 passes over the labelled
            items where that is more; the number of epochs follows from the number of items);
            ``epochs`` instead counts passes over the items.
        unlabelled: a table or folder of items without labels: the student also learns the
            teacher's soft labels on them (test items of the teacher's split are left out).
        text_views: text teachers: views of each training item (random word windows, dropped
            sentences) labelled by the teacher; default :data:`TEXT_VIEWS`.
        feature_weight: weight of the feature-matching term (cosine distance between the
            student's projected pooled features and the teacher's); 0: off.
        speed_repeats: throughput is the best of this many turns of each model on ``speed_items``.
        load_options: passed to :func:`~transferkit.runs.load` for the teacher (``backbone``,
            ``trust_remote_code``, ``allow_pickle``).
        **finetune: further :class:`FineTune` options (``val_fraction``, ``patience``, ...).

    Returns the comparison written to ``out/distillation.json``.
    """
    teacher_dir, student_dir = RunDir(run), RunDir(out)
    if student_dir.path.resolve() == teacher_dir.path.resolve():
        raise UserInputError("the student needs its own --out folder", hint="e.g. --out runs/spam-student")
    if steps is not None and epochs is not None:
        raise UserInputError("give the training length as --steps or as --epochs, not both",
                             hint=f"steps (at least {STEPS} by default) fit any data size; epochs count passes "
                                  "over the items")
    if steps is not None:
        _check_count("steps", steps, 1, f"e.g. --steps {STEPS}")
    if epochs is not None:
        _check_count("epochs", epochs, 1, "e.g. --epochs 10")
    if isinstance(feature_weight, bool) or not isinstance(feature_weight, (int, float)) or feature_weight < 0:
        raise UserInputError(f"feature weight must be a number >= 0, got {feature_weight!r}",
                             hint="0 turns feature matching off; 1 weighs it like the soft-label loss")
    if text_views is not None:
        _check_count("text views", text_views, 0, "0 turns them off; 2 views of each text are a start")
    _check_count("speed items", speed_items, 1, "e.g. 200")
    with student_dir.lock():
        return _distill(teacher_dir, student_dir, student=student, temperature=temperature, alpha=alpha,
                        steps=steps, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, unlabelled=unlabelled,
                        text_views=text_views, feature_weight=feature_weight, speed_items=speed_items,
                        speed_repeats=speed_repeats, log=log, load_options=load_options or {}, finetune=finetune)


def _schedule(n_items: int, n_labelled: int, steps: int | None, epochs: int | None, batch_size: int,
              finetune: dict[str, Any]) -> tuple[int, int | None]:
    """``(epochs, max_steps)``: the passes that hold ``steps`` optimizer steps, and the cap at
    ``steps`` (an epoch-based schedule: ``epochs``, no cap)."""
    if epochs is not None:
        return epochs, finetune.pop("max_steps", None)
    if steps is None:
        passes = math.ceil(math.ceil(n_labelled / batch_size) / finetune.get("grad_accum", 1)) * EPOCHS_AT_LEAST
        steps = max(STEPS, passes)
    # the most the validation split can take (FineTune raises a small fraction up to 20%): more
    # epochs than needed, never fewer; max_steps ends the run at ``steps`` and the schedule spans them
    held_out = math.ceil(max(finetune.get("val_fraction", 0.1), 0.2) * n_labelled)
    per_epoch = math.ceil(math.ceil(max(1, n_items - held_out) / batch_size) / finetune.get("grad_accum", 1))
    return max(1, math.ceil(steps / per_epoch)), steps


def _distill(teacher_dir: RunDir, out: RunDir, *, student, temperature, alpha, steps, epochs, lr, batch_size, seed,
             unlabelled, text_views, feature_weight, speed_items, speed_repeats, log, load_options,
             finetune) -> dict[str, Any]:
    run = teacher_dir.path
    # The run's transfer model (its backbone and head), whichever model selection delivered: the
    # student is made of the teacher's backbone's blocks, and a delivered hand-made-features model
    # is already fast.
    teacher = load(run, which="transfer", **load_options)
    if teacher.task != "classification":
        raise UserInputError(f"the run {shown(run)} is a {teacher.task} model; distillation trains a student on "
                             "a classifier's class probabilities", hint="distil a classification run")
    train_ds, test_ds, cfg = recreate_splits(run)
    if train_ds is None:
        raise UserInputError(f"the run {shown(run)} has no training split to distil on (a zero-shot run on a test set)",
                             hint="fit the teacher with --data")
    seed = cfg.seed if seed is None else seed
    name = student or default_student(teacher.backbone)
    base, _, layer = name.partition("@")
    opts = dict(cfg.backbone_options)
    opts.pop("layer", None)
    if layer:
        try:
            opts["layer"] = int(layer)
        except ValueError:
            raise UserInputError(f"student {name!r}: the part after @ must be a layer number",
                                 hint="e.g. --student minilm-l6@3 (its first 3 blocks)") from None
    sbackbone = get_backbone(base, **opts)
    if sbackbone.modality != teacher.modality:
        raise UserInputError(f"the student {name!r} takes {sbackbone.modality} data, the teacher {teacher.modality}",
                             hint=f"choose a {teacher.modality} backbone as --student")
    log(f"teacher: {teacher.card['backbone']['name']} + {teacher.card['strategy']['name']}; student: {name}")
    views = (TEXT_VIEWS if teacher.modality == "text" else 0) if text_views is None else text_views
    dset = build_set(teacher, train_ds, test_ds, views=views, unlabelled=unlabelled, seed=seed, log=log)
    hashes = dset.data.content_hashes()
    features = None if dset.features is None else dict(zip(hashes, dset.features))
    if feature_weight and features is None:
        log("feature matching is off: this teacher's prediction is not a head on backbone features")
        feature_weight = 0.0
    n_epochs, max_steps = _schedule(len(dset.data), dset.n_labelled, steps, epochs, batch_size, finetune)
    strategy = Distillation(teacher_proba=dict(zip(hashes, dset.proba)), temperature=temperature, alpha=alpha,
                            unlabelled=dset.sources, teacher_features=features, feature_weight=feature_weight,
                            epochs=n_epochs, max_steps=max_steps, lr=lr, batch_size=batch_size, **finetune)
    smodel = TransferModel(sbackbone, strategy, batch_size=cfg.batch_size)
    smodel.ctx.seed = seed
    t0 = time.perf_counter()
    log(f"training the student ({f'{max_steps} steps' if max_steps else f'{n_epochs} epochs'} on "
        f"{len(dset.data)} items) …")
    strategy.fit(dset.data, smodel.ctx)
    train_s = time.perf_counter() - t0
    if strategy.classes_ != teacher.classes:
        raise UserInputError("the student's classes differ from the teacher's",
                             hint="the teacher's training split lacks a class: refit the teacher")
    y = np.array([teacher.classes.index(c) for c in test_ds.labels])
    p_teacher, p_student = teacher.predict_proba(test_ds), smodel.predict_proba(test_ds)
    m_teacher = classification_metrics(y, p_teacher, teacher.classes, n_boot=cfg.n_boot, seed=seed)
    m_student = classification_metrics(y, p_student, teacher.classes, n_boot=cfg.n_boot, seed=seed)
    speed_set = test_ds.subset(range(min(speed_items, len(test_ds))))
    sps, tps = compare_speed(smodel, teacher, speed_set, speed_repeats)
    fit_info = strategy.fit_info()
    settings = {"student": name, "temperature": temperature, "alpha": alpha, "steps": max_steps, "epochs": n_epochs,
                "steps_run": fit_info.get("steps"), "lr": lr, "batch_size": batch_size, "seed": seed,
                "text_views": views, "unlabelled": None if unlabelled is None else str(unlabelled),
                "feature_weight": feature_weight, **finetune}
    teacher_entry = {"run": str(run), "backbone": teacher.card["backbone"]["name"],
                     "strategy": teacher.card["strategy"]["name"], "parameters": _params(teacher),
                     "accuracy": m_teacher["accuracy"], "accuracy_ci": m_teacher["accuracy_ci"],
                     "items_per_s": tps, "weights_bytes": teacher_dir.file("strategy.safetensors").stat().st_size}
    out.begin()
    weights = out.write_weights(strategy.state_tensors(), strategy=strategy.name, classes=strategy.classes_)
    result = {
        "teacher": teacher_entry,
        "student": {"name": name, "parameters": _params(smodel), "accuracy": m_student["accuracy"],
                    "accuracy_ci": m_student["accuracy_ci"], "items_per_s": sps,
                    "weights_bytes": weights["bytes"], "train_s": train_s},
        "agreement": float((p_teacher.argmax(1) == p_student.argmax(1)).mean()),
        "speedup": sps / tps, "size_ratio": _params(smodel) / _params(teacher),
        "settings": {k: v for k, v in settings.items() if k != "student"},
        "n_train": len(train_ds), "n_test": len(test_ds), "distillation_items": dset.counts,
        "speed": {"items": len(speed_set), "repeats": speed_repeats, "measure": "best of the turns, alternating"},
        "note": ("The teacher's weights file of a linear probe holds only its head (the backbone is the "
                 "published one), so weights_bytes compares artifacts, parameters compares models."),
    }
    created = now_iso()
    metrics = {"run": {"name": out.path.name, "created": created, "strategy": "finetune (distilled)",
                       "backbone": name, "modality": teacher.modality, "seed": seed},
               "n_train": len(train_ds), "n_test": len(test_ds), "classes": strategy.classes_,
               "test": m_student, "controls": {"teacher": m_teacher},
               "strategy": {"name": "finetune", "params": strategy.get_params(), "fit": fit_info},
               "distillation": result,
               "notes": [f"Distilled from {shown(run)} ({teacher_entry['backbone']}, {teacher_entry['strategy']}) at "
                         f"temperature {temperature}, alpha {alpha}: the 'teacher' row is the teacher on the same "
                         f"test split. Student {result['speedup']:.2f}x the teacher's speed with "
                         f"{100 * result['size_ratio']:.0f}% of its parameters; the two agree on "
                         f"{100 * result['agreement']:.1f}% of test items.",
                         f"The student trained {fit_info.get('steps')} optimizer steps on {dset.counts['labelled']} "
                         f"labelled items, {dset.counts['views']} text views of them and {dset.counts['unlabelled']} "
                         f"unlabelled items (the last two with the teacher's soft labels only); feature-matching "
                         f"weight {feature_weight}."]}
    card = {
        "created": created,
        "backbone": {"name": base, "options": opts, "identity": sbackbone.identity()},
        "strategy": {"name": "finetune", "params": strategy.get_params()},
        "classes": strategy.classes_, "label_map": {str(i): c for i, c in enumerate(strategy.classes_)},
        "modality": teacher.modality, "text_columns": cfg.text_columns, "label_column": cfg.label_column,
        "data": {"source": cfg.data, "train_hash": train_ds.fingerprint(), "test_hash": test_ds.fingerprint(),
                 "n_train": len(train_ds), "n_test": len(test_ds)},
        "seed": seed, "versions": versions(), "weights": weights,
        "lineage": {"command": "distill", "parent": teacher_dir.lineage_entry()},
        "distilled_from": teacher_entry, "distillation": result["settings"],
    }
    card["drift_reference"] = out.write_reference(reference_features(smodel, train_ds, seed))
    out.write_config({**cfg.to_dict(), "out": str(out.path)}, command="distill")
    out.write_json("distillation.json", result)
    out.write_json("metrics.json", metrics)
    out.write_text("report.html", render_report(metrics, card=card))
    out.write_card(card)
    remember_user_backbone(base)  # the user's --student, or the teacher's own backbone
    log(f"student {name}: accuracy {m_student['accuracy']:.3f} vs teacher {m_teacher['accuracy']:.3f}; "
        f"{result['speedup']:.2f}x faster, {100 * result['size_ratio']:.0f}% of the parameters; "
        f"agreement {100 * result['agreement']:.1f}%; written to {shown(out.path)}/")
    return result
