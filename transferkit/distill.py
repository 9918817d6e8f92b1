"""``transferkit distill``: a smaller, faster student trained on a run's soft labels.

Knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
Network", 2015): the student fine-tunes (the one training loop, through :class:`FineTune`) on
``alpha * CE(student, label) + (1 - alpha) * T^2 * KL(teacher_T || student_T)``, where ``_T``
are the distributions softened at temperature ``T``; the teacher's probabilities are turned
into its tempered distribution as ``p^(1/T)`` renormalised (the same as its logits over ``T``).

Students: ``NAME@K`` keeps only the first K blocks of a transformers model (``minilm-l6@3``:
half the layers, initialised from the pre-trained ones, as DistilBERT does) or the first K
stages of an EfficientNet-Lite; any zoo name or model directory works (``efficientnet-lite0``
for a ``lite2`` teacher).  Default: the teacher's backbone with half its blocks.

The student is written as an ordinary run directory (a ``finetune`` run: predict, evaluate,
serve and export work on it) whose model card and ``distillation.json`` record the teacher,
the settings, and the size, speed and test accuracy of student and teacher side by side on the
teacher's own test split.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .backbones import get_backbone
from .data.dataset import Dataset
from .errors import UserInputError, shown
from .evaluation import classification_metrics
from .model import TransferModel
from .pipeline import reference_features
from .report import render_report
from .runs import RunDir, load, now_iso, recreate_splits, versions
from .runs.loading import remember_user_backbone
from .strategies.base import TransferContext
from .strategies.finetune import FineTune


class Distillation(FineTune):
    """Fine-tuning on a teacher's soft labels (see the module docstring).

    Args:
        teacher_proba: ``(teacher items' content hash) -> (C,) probabilities``, in the class
            order of the labels (sorted class names); every training item must have one.
        temperature: T >= 1 softens both distributions.
        alpha: weight of the hard-label cross-entropy (0: soft labels only).
        **params: :class:`FineTune` options (epochs, lr, batch_size, unfreeze...).
    """

    name = "finetune"  # the student is stored and reloaded as a fine-tuned run
    tasks = ("classification",)  # soft labels are class probabilities: its loss is classification's

    def __init__(self, *, teacher_proba: dict[str, np.ndarray], temperature: float = 2.0, alpha: float = 0.5,
                 **params: Any):
        super().__init__(**params)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 1:
            raise UserInputError(f"temperature must be a number >= 1, got {temperature!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise UserInputError(f"alpha must be in [0, 1], got {alpha!r}")
        self.teacher_proba, self.temperature, self.alpha = teacher_proba, float(temperature), float(alpha)

    def _before_training(self, model, fit_ds: Dataset, val_ds: Dataset | None, ctx: TransferContext) -> None:
        super()._before_training(model, fit_ds, val_ds, ctx)
        missing = [h for h in fit_ds.content_hashes() if h not in self.teacher_proba]
        if missing:
            raise UserInputError(f"{len(missing)} training items have no teacher probabilities")
        p = np.stack([self.teacher_proba[h] for h in fit_ds.content_hashes()]).astype(np.float64)
        soft = np.clip(p, 1e-12, 1.0) ** (1.0 / self.temperature)
        self._soft = torch.as_tensor(soft / soft.sum(1, keepdims=True), dtype=torch.float32)

    def _task_loss(self, logits: torch.Tensor, idx: np.ndarray, y: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        soft = self._soft[torch.as_tensor(idx)].to(logits.device)
        kd = F.kl_div(F.log_softmax(logits / t, dim=1), soft, reduction="batchmean") * t * t
        return self.alpha * super()._task_loss(logits, idx, y) + (1 - self.alpha) * kd

    def _fit(self, train_ds: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        try:
            super()._fit(train_ds, y, ctx)
        finally:
            self._soft = None


def default_student(teacher_backbone) -> str:
    """The teacher's backbone with half its blocks (at least one)."""
    n = len(teacher_backbone.layer_groups()) - 2  # minus embeddings/stem and head
    base = teacher_backbone.name
    if teacher_backbone.layer is not None:
        n = teacher_backbone.layer if teacher_backbone.layer > 0 else n
    return f"{base}@{max(1, n // 2)}"


def _params(model) -> int:
    return sum(p.numel() for p in model.backbone.module.parameters())


def _throughput(model, data: Dataset, repeats: int = 1) -> float:
    """Items per second of ``model.predict_proba`` (no cache: the backbone runs)."""
    cache = model.feature_cache
    model.feature_cache = None
    try:
        t0 = time.perf_counter()
        for _ in range(repeats):
            model.predict_proba(data)
        return repeats * len(data) / (time.perf_counter() - t0)
    finally:
        model.feature_cache = cache


def distill(run: str | Path, out: str | Path, *, student: str | None = None, temperature: float = 2.0,
            alpha: float = 0.5, epochs: int = 3, lr: float = 5e-5, batch_size: int = 16, seed: int | None = None,
            speed_items: int = 200, log=print, load_options: dict[str, Any] | None = None,
            **finetune: Any) -> dict[str, Any]:
    """Train a student on the teacher run's training split and compare the two on its test split.

    The student is a complete run directory: model card (with the teacher as its lineage),
    weights, config.json (the teacher's data and split, and the distillation settings), metrics,
    report, and the drift reference its server monitors.

    Args:
        load_options: passed to :func:`~transferkit.runs.load` for the teacher (``backbone``,
            ``trust_remote_code``, ``allow_pickle``).

    Returns the comparison written to ``out/distillation.json``.
    """
    teacher_dir, student_dir = RunDir(run), RunDir(out)
    if student_dir.path.resolve() == teacher_dir.path.resolve():
        raise UserInputError("the student needs its own --out folder", hint="e.g. --out runs/spam-student")
    with student_dir.lock():
        return _distill(teacher_dir, student_dir, student=student, temperature=temperature, alpha=alpha,
                        epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, speed_items=speed_items, log=log,
                        load_options=load_options or {}, finetune=finetune)


def _distill(teacher_dir: RunDir, out: RunDir, *, student, temperature, alpha, epochs, lr, batch_size, seed,
             speed_items, log, load_options, finetune) -> dict[str, Any]:
    run = teacher_dir.path
    teacher = load(run, **load_options)
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
            raise UserInputError(f"student {name!r}: the part after @ must be a layer number") from None
    sbackbone = get_backbone(base, **opts)
    if sbackbone.modality != teacher.modality:
        raise UserInputError(f"the student {name!r} takes {sbackbone.modality} data, the teacher {teacher.modality}")
    log(f"teacher: {teacher.card['backbone']['name']} + {teacher.card['strategy']['name']}; student: {name}")
    log(f"teacher soft labels for {len(train_ds)} training items …")
    p_train = teacher.predict_proba(train_ds)
    soft = dict(zip(train_ds.content_hashes(), p_train))
    strategy = Distillation(teacher_proba=soft, temperature=temperature, alpha=alpha, epochs=epochs, lr=lr,
                            batch_size=batch_size, **finetune)
    smodel = TransferModel(sbackbone, strategy, batch_size=cfg.batch_size)
    smodel.ctx.seed = seed
    t0 = time.perf_counter()
    log(f"training the student ({epochs} epochs) …")
    strategy.fit(train_ds, smodel.ctx)
    train_s = time.perf_counter() - t0
    if strategy.classes_ != teacher.classes:
        raise UserInputError("the student's classes differ from the teacher's")
    y = np.array([teacher.classes.index(c) for c in test_ds.labels])
    p_teacher, p_student = teacher.predict_proba(test_ds), smodel.predict_proba(test_ds)
    m_teacher = classification_metrics(y, p_teacher, teacher.classes, n_boot=cfg.n_boot, seed=seed)
    m_student = classification_metrics(y, p_student, teacher.classes, n_boot=cfg.n_boot, seed=seed)
    speed_set = test_ds.subset(range(min(speed_items, len(test_ds))))
    _throughput(smodel, speed_set.subset(range(min(8, len(speed_set)))))  # warm-up
    sps, tps = _throughput(smodel, speed_set), _throughput(teacher, speed_set)
    settings = {"student": name, "temperature": temperature, "alpha": alpha, "epochs": epochs, "lr": lr,
                "batch_size": batch_size, "seed": seed, **finetune}
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
        "settings": {k: settings[k] for k in ("temperature", "alpha", "epochs", "lr", "batch_size", "seed")},
        "n_train": len(train_ds), "n_test": len(test_ds),
        "note": ("The teacher's weights file of a linear probe holds only its head (the backbone is the "
                 "published one), so weights_bytes compares artifacts, parameters compares models."),
    }
    created = now_iso()
    metrics = {"run": {"name": out.path.name, "created": created, "strategy": "finetune (distilled)",
                       "backbone": name, "modality": teacher.modality, "seed": seed},
               "n_train": len(train_ds), "n_test": len(test_ds), "classes": strategy.classes_,
               "test": m_student, "controls": {"teacher": m_teacher},
               "strategy": {"name": "finetune", "params": strategy.get_params(), "fit": strategy.fit_info()},
               "distillation": result,
               "notes": [f"Distilled from {shown(run)} ({teacher_entry['backbone']}, {teacher_entry['strategy']}) at "
                         f"temperature {temperature}, alpha {alpha}: the 'teacher' row is the teacher on the same "
                         f"test split. Student {result['speedup']:.2f}x the teacher's speed with "
                         f"{100 * result['size_ratio']:.0f}% of its parameters; the two agree on "
                         f"{100 * result['agreement']:.1f}% of test items."]}
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
