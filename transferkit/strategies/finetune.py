"""``finetune``: train the backbone (all of it, or its top layer groups) with a new head.

The standard recipe of transfer by fine-tuning (Yosinski et al., "How transferable are
features in deep neural networks?", NeurIPS 2014; Devlin et al., BERT, 2019), with the
refinements that make it work on small data:

- partial unfreezing of the last K layer groups (or named groups); the rest stays frozen, and
  frozen BatchNorm layers stay in eval mode;
- discriminative learning rates (Howard & Ruder, ULMFiT, ACL 2018): the top group trains at
  ``lr``, each group below at ``layer_decay`` times the one above; the new head at ``head_lr``;
- AdamW with decoupled weight decay, not applied to biases and norm scales (Loshchilov &
  Hutter, "Decoupled Weight Decay Regularization", ICLR 2019);
- linear warm-up then cosine decay (SGDR), or one-cycle / slanted triangular;
- a budget counted in optimizer steps with a floor (``min_steps``): ``epochs`` alone made the length
  of a run depend on the data's size (3 epochs of 90 items at batch 16 are 18 steps, in which a
  new head from random barely leaves chance: issue 17's LoRA at 0.282 on 100 digits);
- early stopping on a validation split carved from the training data, keeping the best epoch,
  only where that split is big enough to steer it (``val_min`` items and 3 per class); below
  that, every item trains for the whole budget and the last weights are kept (the schedule has
  annealed the rate to zero by then, so the last iterate is the settled one).

Training runs in the one loop (:mod:`transferkit.training.loop`): checkpoints, exact resume,
the non-finite guard, accumulation and clipping come from there.  Variants (``gradual``,
``lp-ft``, ``l2sp``, ``lora``) are subclasses that override one of the hooks (``_trainable_groups``,
``_before_training``, ``_extra_loss``, ``_callbacks``), never a copy of ``_fit``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._studies import study
from ..backbones.base import Backbone
from ..data.dataset import Dataset
from ..errors import UserInputError
from ..training import EarlyStopping, Validation, make_scheduler, plan_budget, train, trainable_state
from ..training.augment import augment_batch, check_augment_options, make_augment
from ..training.batchnorm import keep_statistics, release_statistics
from ..training.callbacks import Callback
from ..training.loop import isolated_rng
from ..training.optim import adamw
from ..training.schedules import SCHEDULES
from ._joint import check_task_weights, fit_joint
from ._task_head import HeadRun, TaskHead, _scores, head_outputs, head_tensor_names, load_task_head, make_task_head
from ._tuning import mark_adapted, recalibrate_batchnorm, used_layer_groups
from .base import STRATEGIES, Strategy, TransferContext
from .params import Params, fraction_or_steps, param
from .probe import CLASS_WEIGHT_HELP, check_class_weight, loss_weights

__all__ = ["FineTune", "FineTuneParams", "_scores", "inner_layer_note", "MIN_STEPS", "MIN_VAL_ITEMS",
           "MIN_VAL_PER_CLASS"]

#: Default floor of a run, in optimizer steps (the ``min_steps`` option).  Measured on 100 MNIST-5k
#: digits inverted to dark ink on white (32x32 RGB, 10 per class), efficientnet-lite0 at 96 px, 300
#: test digits, seed 0, LoRA defaults: 18 steps (the old 3 epochs) 0.663, 70 steps 0.857, 140 steps
#: 0.877, 203 steps 0.897 (the linear probe 0.743): still rising at 200, which costs a few minutes on
#: a CPU for a few-shot set and is under 3 epochs of any set of more than ~1,000 items.
MIN_STEPS = 200
#: Fewest validation items worth early stopping on (the ``val_min`` option): on fewer, one item is
#: more than 3 points of accuracy and the validation loss of an epoch is mostly noise, so "no
#: better for ``patience`` epochs" stops runs that were still learning.
MIN_VAL_ITEMS = 30
#: Fewest validation items of every class (classification): a class seen once in validation
#: decides early stopping on one item.
MIN_VAL_PER_CLASS = 3
#: Largest share of the training data held out to reach ``val_min`` (when ``val_fraction`` is smaller).
MAX_VAL_SHARE = 0.2


def inner_layer_note(strategy: str, layer: int) -> str:
    """The run note of a new head trained from an inner layer, citing the study that measured it
    (the figures come from ``studies.json``, written by the benchmark)."""
    s = study("inner_layer_finetune")
    shown = sorted(s["layers"], key=int)[0]  # the shallowest layer measured: the clearest case
    r = s["layers"][shown]
    return (f"{strategy} from layer {layer}: a new head on an inner layer's features learns slowly in a short "
            f"budget (BENCHMARKS.md, {s.get('section', s['source'])}: {s['backbone']} fine-tuned from layer {shown} "
            f"reached {r['finetune']:.3f} on {s['task']} where its linear probe reached {r['probe']:.3f}); compare "
            "with --strategy linear-probe, or lp-ft, whose head starts as the probe.")


def _check(ok: bool, message: str, hint: str | None = None) -> None:
    if not ok:
        raise UserInputError(message, hint=hint)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass
class FineTuneParams(Params):
    """Options of ``finetune`` and of its variants (which re-declare the defaults they change)."""

    epochs: int | None = param(None, "passes over the training part; null: 3 (gradual: 4), raised until the run "
                                     "takes min_steps optimizer steps; a number: exactly that many", ge=1)
    # A new head from random needs a couple of hundred Adam steps whatever the size of the data
    # (3 epochs of 90 items are 18); MIN_STEPS says where the figure comes from.
    min_steps: int = param(MIN_STEPS, "with epochs unset, the fewest optimizer steps of a run (epochs are raised to "
                                      "reach it, and early stopping cannot end the run sooner); max_steps still caps",
                           ge=0)
    lr: float = param(5e-5, "learning rate of the top unfrozen backbone group (transformers 1e-5..1e-4, "
                            "CNNs 1e-4..1e-3)", gt=0, lt=1)
    head_lr: float = param(1e-3, "learning rate of the new head (it starts from random, so it moves faster)",
                           gt=0, lt=1)
    batch_size: int = param(16, "items per micro-batch", ge=1)
    unfreeze: Literal["all"] | int | list[str] = param(
        "all", "'all', the number K of last layer groups to train (0: the head only), or layer-group names", ge=0)
    layer_decay: float = param(0.8, "discriminative LR factor per group from the top (1: one rate for all)",
                               gt=0, le=1)
    weight_decay: float = param(0.01, "AdamW decoupled weight decay on weight matrices (not biases or norms)", ge=0)
    warmup: float | int = param(0.1, "warm-up share of the steps (below 1) or number of steps", check=fraction_or_steps)
    schedule: str = param("cosine", "learning-rate schedule: warm-up then cosine, one-cycle, slanted triangular "
                                    "or constant", choices=SCHEDULES)
    head_dropout: float = param(0.1, "dropout on the pooled features before the head", ge=0, lt=1)
    val_fraction: float = param(0.1, "share of the training data held out (stratified) for validation and early "
                                     "stopping, raised to reach val_min items (up to 20%); 0 trains on everything",
                                ge=0, le=0.5)
    val_min: int = param(MIN_VAL_ITEMS, "fewest validation items (and 3 per class) worth early stopping on; a "
                                        "smaller data set trains on all its items for the whole budget", ge=1)
    patience: int | None = param(2, "epochs without a better validation loss before stopping (best epoch kept); "
                                    "null: no early stopping", ge=1)
    grad_accum: int = param(1, "micro-batches per optimizer step", ge=1)
    clip: float | None = param(1.0, "largest gradient norm (null: no clipping)", gt=0)
    max_steps: int | None = param(None, "stop after this many optimizer steps (null: the epochs decide)", ge=1)
    checkpoint_every: int | None = param(None, "checkpoint every N steps as well as at each epoch end", ge=1)
    keep_last: int = param(2, "checkpoints kept", ge=1)
    augment: bool | dict | None = param(None, "null: random resized crop + flip for images, none otherwise; "
                                              "false; true (audio: gain, noise, shift, SpecAugment masks); or "
                                              "{\"crop_scale\": [0.5, 1.0], \"flip\": false} / {\"snr_db\": [10, 30]}; "
                                              "series: true or {\"jitter\": 0.03, \"scaling\": 0.1, \"window\": 0.9}")
    nonfinite: str = param("stop", "on a NaN/inf loss: stop, or skip such batches and count them",
                           choices=("stop", "skip"))
    precision: str = param("auto", "auto (mixed precision on CUDA), fp32, bf16 or fp16",
                           choices=("auto", "fp32", "bf16", "fp16"))
    # ``frozen`` keeps the pre-trained statistics (the layers normalise in inference mode; their
    # scale and shift still train), as Keras' transfer-learning guide advises: statistics
    # re-estimated from a few batches of a small data set replace ImageNet's and change every
    # feature the head was fitted to.  ``auto``: frozen for pre-trained weights, train for a
    # randomly initialised network (the control, whose initial statistics mean nothing).
    batchnorm: str = param("auto", "BatchNorm running statistics: frozen (pre-trained kept), train (updated, then "
                                   "re-estimated), auto (frozen for pre-trained weights)",
                           choices=("auto", "frozen", "train"))
    # Discriminative rates exist to protect pre-trained lower layers; the small ``lr`` that suits
    # pre-trained weights leaves random ones where they started within the same budget (the
    # strategies table in BENCHMARKS.md measures the random-init control both ways).
    class_weight: Literal["balanced"] | dict | None = param(None, CLASS_WEIGHT_HELP, check=check_class_weight)
    scratch_lr: float | None = param(1e-3, "one learning rate for every group and the head when the backbone is "
                                           "randomly initialised (the control); null: as the transfer run",
                                     gt=0, lt=1)
    task_weights: dict | None = param(None, "several tasks: loss weight per label column; null: equal (regression "
                                            "targets standardised)", check=check_task_weights)

    def validate(self) -> None:
        if isinstance(self.augment, dict):
            check_augment_options(self.augment)  # the keys and ranges now, not after an hour of setup


@STRATEGIES.register("finetune", needs="backbone",
                     summary="train the backbone (all or its last K layer groups) and a new head; "
                             "discriminative LR, warm-up + cosine, early stopping, exact resume")
class FineTune(Strategy):
    """Full or partial fine-tuning with a new linear head, for every task.

    Data: labelled items of any modality; the backbone sees raw items through
    ``prepare`` / ``forward_features``. Shapes: items -> features ``(B, D)`` -> dropout ->
    head ``Linear(D, K)`` -> logits ``(B, K)``; per task (:mod:`._task_head`): classification
    ``K = C``, cross-entropy; regression ``K = 1``, MSE on the standardised target (the head is
    folded into the target's units after training); multi-label ``K = L``, BCE with logits and
    per-label thresholds chosen on the validation split.  :meth:`fit_joint` trains one backbone
    with one head per task.  Options: :class:`FineTuneParams` (``transferkit strategies finetune``).
    """

    name = "finetune"
    description = ("train the backbone (all or its last K layer groups) and a new head: discriminative rates, "
                   "warm-up + cosine, early stopping, exact resume (Howard & Ruder 2018)")
    Params = FineTuneParams
    uses_features = False
    tasks = ("classification", "regression", "multi-label")
    new_head = True  # the head starts from random (``lp-ft``: from the probe)
    base_epochs = 3  # the passes of a run whose ``epochs`` is unset, before ``min_steps`` raises them
    _active_head: TaskHead | None = None  # the single task's head during a fit (its loss)
    _joint: list[HeadRun] | None = None  # the tasks of a joint fit, while it runs (fit_joint)
    _runs: tuple[HeadRun, ...] | list[HeadRun] = ()  # every task's head during a fit (hooks such as lp-ft's read them)
    _peers: list["FineTune"] | None = None  # the models of one joint fit (they share the backbone)

    @property
    def tunes_backbone(self) -> bool:
        return True

    # ----- fitting ---------------------------------------------------------------------------
    def _fit(self, train_ds: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        if self._joint is not None:
            runs = self._joint
        else:
            # (C,) class weights or (L,) positive weights from the whole training part (None: unweighted)
            self.loss_weight_ = loss_weights(self, y, ctx)
            runs = [HeadRun("", self, train_ds, make_task_head(self.task_, self.classes_, self.loss_weight_))]
        backbone, device = ctx.backbone, torch.device(ctx.device)
        module = backbone.module.to(device)
        fit_idx, val_idx = self._split(runs[0].data, ctx)
        # (V,) positions in train_ds of the held-out items: model selection scores candidates on them
        self.validation_idx_ = None if val_idx is None else np.asarray(val_idx, dtype=np.int64)
        fit_ds = train_ds.subset(fit_idx)
        budget = plan_budget(len(fit_ds), batch_size=self.batch_size, grad_accum=self.grad_accum,
                             epochs=self.epochs or self.base_epochs, min_steps=self._min_steps(),
                             max_steps=self.max_steps)
        if budget.reason == "min_steps":
            ctx.notes.append(f"{self.name}: {budget.describe()} (min_steps={self.min_steps}; set epochs to run an "
                             "exact number of passes).")

        val_ds = None if val_idx is None else train_ds.subset(val_idx)
        if self.new_head and backbone.layer is not None and backbone.init == "pretrained":
            ctx.notes.append(inner_layer_note(self.name, backbone.layer))
        targets = [r.unit.bind([r.data.labels[i] for i in fit_idx], device) for r in runs]
        for r in runs:
            r.y_fit = r.unit.encode([r.data.labels[i] for i in fit_idx])
            r.y_val = None if val_idx is None else r.unit.encode([r.data.labels[i] for i in val_idx])
        augment = make_augment(self.augment, backbone.modality)

        groups, unused = used_layer_groups(backbone, fit_ds.inputs[:2], device)
        groups = [(n, ps) for n, ps in self._trainable_groups(groups) if ps]
        chosen = self._chosen(groups)
        flags = {p: p.requires_grad for p in module.parameters()}
        frozen_stats = self.batchnorm == "frozen" or (self.batchnorm == "auto" and backbone.init == "pretrained")
        bn_layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        kept: list[nn.Module] = []
        try:
            kept = keep_statistics(bn_layers if frozen_stats else ())  # read by the loop and re-estimation
            for p in module.parameters():
                p.requires_grad_(False)
            for name, params in groups:
                for p in params if name in chosen else ():
                    p.requires_grad_(True)
            with isolated_rng(ctx.seed):  # the heads' initialisation is part of the seeded run
                for r in runs:
                    r.head = nn.Linear(backbone.num_features, r.unit.width).to(device)
            heads = [r.head for r in runs]
            single = self._joint is None
            # one task: {"backbone", "head"} as always (checkpoints unchanged); several: a head per task
            model = nn.ModuleDict({"backbone": module, "head": heads[0] if single else
                                   nn.ModuleDict({str(i): h for i, h in enumerate(heads)})})
            self._runs, self._active_head = runs, runs[0].unit if single else None
            self._before_training(model, fit_ds, val_ds, ctx)
            scratch = self.scratch_lr if backbone.init != "pretrained" else None
            param_groups, self.lr_by_group_ = self._param_groups(groups, chosen, heads, scratch)
            optimizer = adamw(param_groups, lr=self.lr, weight_decay=self.weight_decay)
            scheduler = make_scheduler(optimizer, self.schedule, budget.steps, warmup=self.warmup)

            def training_step(idx: np.ndarray) -> torch.Tensor:
                batch = backbone.prepare([fit_ds.inputs[i] for i in idx]).to(device)
                if augment is not None:
                    augment_batch(augment, batch)
                feats = F.dropout(backbone.forward_features(batch), self.head_dropout, training=True)
                rows = torch.as_tensor(idx, device=device)
                if single:
                    loss = self._task_loss(heads[0](feats).float(), idx, targets[0][rows])
                else:  # the weighted sum of the tasks' losses (regression targets standardised)
                    loss = sum(r.weight * r.unit.loss(r.head(feats).float(), t[rows]) for r, t in zip(runs, targets))
                extra = self._extra_loss(model)
                return loss if extra is None else loss + extra

            evaluate = None
            if val_ds is not None:
                def evaluate() -> dict[str, float]:
                    # Running BatchNorm averages lag behind the weights; only eval mode reads them,
                    # and the final re-estimation replaces them, so refreshing them here changes
                    # nothing in training but makes the validation loss (and early stopping) honest.
                    recalibrate_batchnorm(backbone, fit_ds, self.batch_size, device)
                    outs = self._outputs(val_ds, backbone, runs, device)
                    if single:
                        return runs[0].unit.scores(outs[0], runs[0].y_val)
                    logs: dict[str, float] = {"loss": 0.0}
                    for r, out in zip(runs, outs):  # early stopping watches the weighted sum
                        scores = r.unit.scores(out, r.y_val)
                        logs["loss"] += r.weight * scores["loss"]
                        logs.update({f"{r.key}.{k}": v for k, v in scores.items()})
                    return logs

            callbacks = self._callbacks(model, groups, chosen, evaluate)
            ckpt_dir = getattr(ctx, "checkpoint_dir", None)
            state = train(model, training_step, len(fit_ds), optimizer, scheduler=scheduler, epochs=budget.epochs,
                          max_steps=self.max_steps, batch_size=self.batch_size, grad_accum=self.grad_accum,
                          clip=self.clip, seed=ctx.seed, nonfinite=self.nonfinite, callbacks=callbacks,
                          checkpoint_dir=Path(ckpt_dir) if ckpt_dir else None,
                          checkpoint_every=self.checkpoint_every, keep_last=self.keep_last,
                          resume=getattr(ctx, "resume", True), run_config=self._run_config(train_ds, runs, backbone),
                          precision=self.precision, progress=ctx.progress, desc=f"{self.name} {backbone.name}")
            recalibrated = recalibrate_batchnorm(backbone, fit_ds, self.batch_size, device)
            self.trained_names_ = sorted(trainable_state(module))
            self._finish_heads(runs, val_ds, backbone, device, ctx)
        finally:
            self._active_head, self._runs = None, ()
            for r in runs:
                r.unit.release()
            for p, flag in flags.items():  # leave the module as found, except its weights
                p.requires_grad_(flag)
            release_statistics(kept)
            module.eval()
        self.backbone_ = backbone
        best = next((cb.best_epoch for cb in callbacks if isinstance(cb, EarlyStopping)), None)
        self.info_ = {"n_fit": len(fit_ds), "n_val": len(val_ds) if val_ds is not None else 0,
                      "steps": state.step, "total_steps": state.total_steps, "epochs_run": len(state.history),
                      "budget": {"epochs_asked": budget.epochs_asked, "epochs": budget.epochs,
                                 "steps_per_epoch": budget.steps_per_epoch, "steps_planned": budget.steps,
                                 "min_steps": self._min_steps(), "max_steps": self.max_steps, "reason": budget.reason,
                                 "validation": ("early stopping" if self.patience else "monitored")
                                 if val_ds is not None else "none: too few items (see the notes)"
                                 if self.val_fraction else "none (val_fraction=0)"},
                      "best_epoch": best, "stopped_early": bool(state.should_stop), "skipped": state.skipped,
                      "resumed_from": state.resumed_from, "history": state.history,
                      "trained_groups": [n for n, _ in groups if n in chosen],
                      "frozen_groups": [n for n, _ in groups if n not in chosen],
                      "unused_parameters": unused, "lr_by_group": self.lr_by_group_,
                      "from_scratch_lr": scratch, "batchnorm_recalibrated": recalibrated,
                      "batchnorm_statistics": ("none" if not bn_layers else "frozen (pre-trained)" if frozen_stats
                                               else "trained and re-estimated"),
                      "head_params": sum(p.numel() for h in heads for p in h.parameters())}
        if single:
            self.info_.update(runs[0].facts)
        mark_adapted(backbone, self._trained_tensors())

    def _min_steps(self) -> int:
        """The floor in force: ``min_steps`` when ``epochs`` is unset; an explicit epochs count runs as given."""
        return self.min_steps if self.epochs is None else 0

    def _run_config(self, train_ds: Dataset, runs: list[HeadRun], backbone: Backbone) -> dict[str, Any]:
        """What determines the result (checkpoint frequency does not): a resume must match it."""
        params = {k: v for k, v in self.get_params().items() if k not in ("checkpoint_every", "keep_last")}
        config = {"strategy": self.name, "params": params, "backbone": backbone.identity(),
                  "data": train_ds.fingerprint(), "classes": self.classes_}
        if self._joint is not None:
            config.update(data={r.key: r.data.fingerprint() for r in runs},
                          classes={r.key: r.unit.classes for r in runs}, tasks={r.key: r.unit.task for r in runs},
                          task_weights={r.key: r.weight for r in runs})
        return config

    def _finish_heads(self, runs: list[HeadRun], val_ds: Dataset | None, backbone: Backbone,
                      device: torch.device, ctx: TransferContext) -> None:
        """After training: each task's decision rules (thresholds on the validation split) and the
        head in its final form (regression: in the target's units), handed to its model."""
        needs_val = val_ds is not None and any(r.unit.task == "multi-label" for r in runs)
        outs = self._outputs(val_ds, backbone, runs, device) if needs_val else [None] * len(runs)
        for r, out in zip(runs, outs):
            label = f"{self.name} ({r.key})" if r.key else self.name
            r.facts.update(r.unit.finish(r.head, out, r.y_val, ctx.notes, label))
            r.member.head_, r.member.task_head_ = r.head.eval(), r.unit
            r.member.thresholds_ = r.unit.thresholds

    def fit_joint(self, datasets: dict[str, Dataset], ctx: TransferContext,
                  task_weights: dict[str, float] | None = None) -> dict[str, "FineTune"]:
        """Train one backbone with one head per task, through the one training loop.

        Args:
            datasets: ``{task name (label column): Dataset}``, all holding the same items in the
                same order, each with its own labels and ``task``.
            ctx: the context (backbone, seed, device, checkpoints) of the one fit.
            task_weights: ``{task name: weight >= 0}`` of each task's loss in the sum (tasks not
                named: 1); ``None``: this strategy's ``task_weights`` option, else 1 each.

        The loss of a step is ``sum_t w_t * loss_t`` (regression losses on the standardised
        target, so equal weights are comparable); one validation split of the items, stratified on
        the first task, serves every task, and early stopping watches the weighted sum of the
        validation losses.  ``class_weight`` applies to each task with classes (labels) it names.

        Returns:
            ``{task name: fitted model}``: objects of this class with these options, sharing the
            trained backbone, each with its own head, ``task_``, ``classes_``, ``thresholds_`` and
            ``info_`` (``info_["joint"]``: the tasks, their weights, each one's validation history).
            Each one's :meth:`state_tensors` restores that task's model alone (the backbone's
            trained tensors are in each).

        Raises:
            UserInputError: data sets that differ in their items, a task this strategy cannot learn,
                weights naming unknown tasks, or a variant whose loss is not the task's own.
        """
        if type(self)._task_loss is not FineTune._task_loss:
            raise UserInputError(f"{type(self).__name__} trains a loss of its own for one task; it cannot train "
                                 "several tasks at once", hint="use finetune, gradual, lp-ft, l2sp or lora")
        return fit_joint(self, datasets, ctx, task_weights)

    def _share_fit(self, driver: "FineTune") -> None:
        """Take the shared facts of a joint fit from the model that ran it (the trained backbone)."""
        self.backbone_, self.trained_names_ = driver.backbone_, driver.trained_names_
        self.lr_by_group_ = driver.lr_by_group_
        self.validation_idx_ = driver.validation_idx_

    # ----- hooks: a variant overrides one, so that there is no second training loop ----------
    def _trainable_groups(self, groups: list[tuple[str, list[nn.Parameter]]]
                          ) -> list[tuple[str, list[nn.Parameter]]]:
        """The layer groups restricted to the parameters this strategy trains (default: all).

        ``lora`` keeps only its adapter matrices; groups left empty are dropped.
        """
        return groups

    def _before_training(self, model: nn.ModuleDict, fit_ds: Dataset, val_ds: Dataset | None,
                         ctx: TransferContext) -> None:
        """Called once the run is assembled (``model["backbone"]`` with the chosen groups
        trainable, the seeded ``model["head"]``: one ``Linear``, or a ``ModuleDict`` of one per
        task in a joint fit; each task's head, labels and facts in ``self._runs``) and before any
        checkpoint is loaded or any step taken: initialise the heads (``lp-ft``), snapshot the
        starting weights (``l2sp``)."""

    def _extra_loss(self, model: nn.ModuleDict) -> torch.Tensor | None:
        """A regularisation term added to each micro-batch's task loss (``l2sp``); ``None``: none."""
        return None

    def _callbacks(self, model: nn.ModuleDict, groups: list[tuple[str, list[nn.Parameter]]], chosen: set[str],
                   evaluate: Callable[[], dict[str, float]] | None) -> list[Callback]:
        """The run's callbacks: validation and early stopping (on the task's validation loss; the
        weighted sum in a joint fit) where there is a validation split (``gradual`` adds its
        unfreezing schedule around them)."""
        if evaluate is None:
            return []
        callbacks: list[Callback] = [Validation(evaluate)]
        if self.patience:
            callbacks.append(EarlyStopping(model, monitor="val_loss", patience=self.patience,
                                           min_steps=self._min_steps()))
        return callbacks

    def _task_loss(self, logits: torch.Tensor, idx: np.ndarray, y: torch.Tensor) -> torch.Tensor:
        """The loss of a batch of one task: ``logits (B, K)`` of the fit items ``idx`` against their
        targets ``y`` (:mod:`._task_head`: cross-entropy with class weights, MSE on the standardised
        target, BCE with per-label positive weights); distillation adds the teacher's soft labels here."""
        if self._active_head is None:  # outside a fit (a variant's own tests): plain cross-entropy
            return F.cross_entropy(logits, y)
        return self._active_head.loss(logits, y)

    def _split(self, data: Dataset, ctx: TransferContext) -> tuple[list[int], list[int] | None]:
        """Indices of the items trained on and of the validation items (``None``: no split),
        stratified on ``data``'s labels (classes, target bins or rarest label); the run notes
        say why there is none where ``val_fraction`` asked for one (:meth:`_validation_split`)."""
        fit, val, why = self._validation_split(data, ctx.seed)
        if why:
            ctx.notes.append(f"{self.name}: {why}; trained on all {len(data)} items for the whole budget without early "
                             "stopping, keeping the last weights.")
        return fit, val

    def _validation_split(self, data: Dataset, seed: int) -> tuple[list[int], list[int] | None, str | None]:
        """:meth:`_split`'s indices, and why there is no split where ``val_fraction`` asked for one
        (``None`` otherwise).

        The split holds ``val_fraction`` of the items, raised to ``val_min`` (classification: and
        3 per class) where that stays within 20% of the data; a data set too small for that trains
        on every item: a split of 10 items, one per class, decides early stopping on noise and
        takes a tenth of a few-shot set away from training.
        """
        everything = list(range(len(data)))
        if not self.val_fraction:
            return everything, None, None
        from ..data.split import split_indices

        n = len(data)
        classes = sorted(set(data.labels)) if data.task == "classification" else []
        per_class = MIN_VAL_PER_CLASS if classes else 0
        need = max(self.val_min, per_class * len(classes))
        asked = math.ceil(self.val_fraction * n)
        share = max(self.val_fraction, MAX_VAL_SHARE)
        if need > max(asked, math.floor(share * n)):
            rule = f"{need} items" + (f", {per_class} per class" if per_class else "")
            return everything, None, (f"{n} training items are too few for a validation split worth early stopping "
                                      f"on (at least {rule}, within {share:.0%} of the data; option val_min)")
        # the split of the items' positions: one split serves every task of a joint fit; the fraction
        # itself where it is big enough (the split runs have always had), else the count needed
        positions = Dataset(modality=data.modality, inputs=everything, labels=data.labels, task=data.task)
        try:
            fit, val = split_indices(positions, self.val_fraction if asked >= need else need, seed)
        except UserInputError:
            return everything, None, f"no stratified validation split of {need} items could be drawn"
        if per_class:
            counts = {c: 0 for c in classes}
            for i in val:
                counts[data.labels[i]] += 1
            rare = sorted(c for c, k in counts.items() if k < per_class)
            if rare:
                return everything, None, (f"a validation split would hold fewer than {per_class} items of class(es) "
                                          f"{', '.join(map(str, rare[:5]))}")
        return fit, val, None

    def _chosen(self, groups: list[tuple[str, list[nn.Parameter]]]) -> set[str]:
        names = [n for n, _ in groups]
        if self.unfreeze == "all":
            return set(names)
        if _is_int(self.unfreeze):
            _check(self.unfreeze <= len(names), f"unfreeze={self.unfreeze} but the backbone has only "
                   f"{len(names)} trainable layer groups", f"they are: {', '.join(names)}")
            return set(names[len(names) - self.unfreeze:])
        unknown = [n for n in self.unfreeze if n not in names]
        _check(not unknown, f"unfreeze names unknown layer groups: {', '.join(unknown)}",
               f"the backbone's groups are: {', '.join(names)}")
        return set(self.unfreeze)

    def _param_groups(self, groups, chosen: set[str], heads: list[nn.Linear],
                      scratch: float | None = None) -> tuple[list[dict], dict[str, float]]:
        """AdamW groups: per-layer rates decaying from the top (one rate ``scratch`` for every
        group and the heads when given: random weights); no decay on biases and norms.

        Parameters of one dimension (biases, LayerNorm/BatchNorm scales) are excluded from
        weight decay: shrinking them towards zero is not a useful prior (timm/BERT practice).
        """
        out, rates = [], {}
        for depth, (name, params) in enumerate(reversed(groups)):  # depth 0: the top group
            if name not in chosen:
                continue
            rate = scratch if scratch is not None else self.lr * self.layer_decay ** depth
            rates[name] = rate
            for decay, ps in ((self.weight_decay, [p for p in params if p.ndim > 1]),
                              (0.0, [p for p in params if p.ndim <= 1])):
                if ps:
                    out.append({"params": ps, "lr": rate, "weight_decay": decay, "name": name})
        rates["head"] = head_lr = scratch if scratch is not None else self.head_lr
        for head in heads:
            out.append({"params": [head.weight], "lr": head_lr, "weight_decay": self.weight_decay, "name": "head"})
            out.append({"params": [head.bias], "lr": head_lr, "weight_decay": 0.0, "name": "head"})
        return out, rates

    # ----- prediction --------------------------------------------------------------------------
    def _outputs(self, data: Dataset, backbone: Backbone, runs: list[HeadRun], device: torch.device
                 ) -> list[np.ndarray]:
        return head_outputs(data, backbone, runs, device, max(self.batch_size, 32))

    def _predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        return self._predict_outputs(data, ctx)

    def _predict_outputs(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        device = torch.device(ctx.device)
        ctx.backbone.module.to(device)
        run = HeadRun("", self, None, self.task_head_, head=self.head_.to(device))
        return self._outputs(data, ctx.backbone, [run], device)[0]

    def torch_head(self) -> nn.Module:
        """``Linear(D, K)``: classification logits, multi-label logits (the caller applies the
        sigmoid), regression ``(N, 1)`` values already in the target's units."""
        self._check_fitted()
        return self.head_.eval()

    # ----- persistence -------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """``backbone.<name>`` for every trained tensor (weights, BatchNorm statistics), and the
        head (``head.weight``, ``head.bias``, and the task's: ``probe.TASK_TENSORS``)."""
        self._check_fitted()
        return self._trained_tensors()

    def _head_tensors(self) -> dict[str, torch.Tensor]:
        out = {"head.weight": self.head_.weight.detach().cpu().clone(),
               "head.bias": self.head_.bias.detach().cpu().clone()}
        out.update(self.task_head_.extra_tensors())
        return out

    def _trained_tensors(self) -> dict[str, torch.Tensor]:
        own = self.backbone_.module.state_dict()
        out = {f"backbone.{k}": own[k].detach().cpu().clone() for k in self.trained_names_}
        out.update(self._head_tensors())
        return out

    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str], backbone: Backbone,
                   task: str = "classification") -> "FineTune":
        """Apply saved fine-tuned tensors of a model of ``task`` to the freshly loaded pre-trained ``backbone``."""
        self.check_task(task)
        allowed = head_tensor_names(task)
        extra = sorted(k for k in tensors if not k.startswith("backbone.") and k not in allowed)
        _check(not extra, f"unexpected tensors in a {self.name} state of a {task} model: {', '.join(extra[:5])}")
        _check("head.weight" in tensors and "head.bias" in tensors, "the finetune state has no head (head.weight)")
        module = backbone.module
        own = module.state_dict()
        sub = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
        bad = [k for k, v in sub.items() if k not in own or own[k].shape != v.shape]
        _check(not bad, f"the saved fine-tuned weights do not fit backbone {backbone.name!r}: "
               f"{', '.join(bad[:5])}" + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""),
               "load the run with the backbone (and options) it was trained with")
        head, unit = load_task_head(tensors, task, classes, backbone.num_features, self.name)
        with torch.no_grad():
            for k, v in sub.items():
                own[k].copy_(v)
        module.eval()
        self.head_, self.task_head_, self.backbone_ = head, unit, backbone
        self.trained_names_ = sorted(sub)
        mark_adapted(backbone, tensors)
        return self._restored(classes, task, unit.thresholds)
