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
- early stopping on a validation split carved from the training data, keeping the best epoch.

Training runs in the one loop (:mod:`transferkit.training.loop`): checkpoints, exact resume,
the non-finite guard, accumulation and clipping come from there.  Variants (``gradual``,
``lp-ft``, ``l2sp``, ``lora``) are subclasses that override one of the hooks (``_trainable_groups``,
``_before_training``, ``_extra_loss``, ``_callbacks``), never a copy of ``_fit``.
"""
from __future__ import annotations

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
from ..training import EarlyStopping, Validation, make_scheduler, plan_steps, train, trainable_state
from ..training.augment import make_augment
from ..training.batchnorm import keep_statistics, release_statistics
from ..training.callbacks import Callback
from ..training.loop import isolated_rng
from ..training.optim import adamw
from ..training.schedules import SCHEDULES
from ._tuning import mark_adapted, recalibrate_batchnorm, used_layer_groups
from .base import STRATEGIES, Strategy, TransferContext
from .params import Params, fraction_or_steps, param
from .probe import CLASS_WEIGHT_HELP, check_class_weight, loss_weights


def saved_head(tensors: dict[str, torch.Tensor], classes: list[str], backbone: Backbone) -> nn.Linear:
    """The saved linear head ``(C, D)``, checked against the classes and the backbone's width."""
    weight = tensors["head.weight"]
    _check(weight.ndim == 2 and weight.shape == (len(classes), backbone.num_features),
           f"the saved head has shape {tuple(weight.shape)}, expected ({len(classes)}, {backbone.num_features})")
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(tensors["head.bias"])
    return head.eval()


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

    epochs: int = param(3, "passes over the training part", ge=1)
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
                                     "stopping; 0 trains on everything", ge=0, le=0.5)
    patience: int | None = param(2, "epochs without a better validation loss before stopping (best epoch kept); "
                                    "null: no early stopping", ge=1)
    grad_accum: int = param(1, "micro-batches per optimizer step", ge=1)
    clip: float | None = param(1.0, "largest gradient norm (null: no clipping)", gt=0)
    max_steps: int | None = param(None, "stop after this many optimizer steps (null: the epochs decide)", ge=1)
    checkpoint_every: int | None = param(None, "checkpoint every N steps as well as at each epoch end", ge=1)
    keep_last: int = param(2, "checkpoints kept", ge=1)
    augment: bool | dict | None = param(None, "null: random resized crop + flip for images, none otherwise; "
                                              "false; true; or {\"crop_scale\": [0.5, 1.0], \"flip\": false}")
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

    def validate(self) -> None:
        if isinstance(self.augment, dict):
            make_augment(self.augment, "image")  # checks the keys and ranges now, not after an hour of setup


@STRATEGIES.register("finetune", needs="backbone",
                     summary="train the backbone (all or its last K layer groups) and a new head; "
                             "discriminative LR, warm-up + cosine, early stopping, exact resume")
class FineTune(Strategy):
    """Full or partial fine-tuning with a new linear head.

    Data: labelled items of any modality; the backbone sees raw items through
    ``prepare`` / ``forward_features``. Shapes: items -> features ``(B, D)`` -> dropout ->
    head ``Linear(D, C)`` -> logits ``(B, C)``; cross-entropy loss.  Options:
    :class:`FineTuneParams` (``transferkit strategies finetune``).
    """

    name = "finetune"
    description = ("train the backbone (all or its last K layer groups) and a new head: discriminative rates, "
                   "warm-up + cosine, early stopping, exact resume (Howard & Ruder 2018)")
    Params = FineTuneParams
    uses_features = False
    new_head = True  # the head starts from random (``lp-ft``: from the probe)
    _loss_weight_t: torch.Tensor | None = None  # (C,) class weights of the loss during a fit

    @property
    def tunes_backbone(self) -> bool:
        return True

    # ----- fitting ---------------------------------------------------------------------------
    def _fit(self, train_ds: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        backbone, device = ctx.backbone, torch.device(ctx.device)
        module = backbone.module.to(device)
        # (C,) cross-entropy weights from the whole training part (None: unweighted, as before)
        self.loss_weight_ = loss_weights(self, y, ctx)
        self._loss_weight_t = None if self.loss_weight_ is None else torch.tensor(
            self.loss_weight_, dtype=torch.float32, device=device)
        fit_ds, val_ds = self._split(train_ds, ctx)
        if self.new_head and backbone.layer is not None and backbone.init == "pretrained":
            ctx.notes.append(inner_layer_note(self.name, backbone.layer))
        index = {c: i for i, c in enumerate(self.classes_)}
        y_fit = torch.tensor([index[c] for c in fit_ds.labels], device=device)
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
            with isolated_rng(ctx.seed):  # the head's initialisation is part of the seeded run
                head = nn.Linear(backbone.num_features, len(self.classes_)).to(device)
            model = nn.ModuleDict({"backbone": module, "head": head})
            self._before_training(model, fit_ds, val_ds, ctx)
            scratch = self.scratch_lr if backbone.init != "pretrained" else None
            param_groups, self.lr_by_group_ = self._param_groups(groups, chosen, head, scratch)
            optimizer = adamw(param_groups, lr=self.lr, weight_decay=self.weight_decay)
            _, total = plan_steps(len(fit_ds), batch_size=self.batch_size, grad_accum=self.grad_accum,
                                  epochs=self.epochs, max_steps=self.max_steps)
            scheduler = make_scheduler(optimizer, self.schedule, total, warmup=self.warmup)

            def training_step(idx: np.ndarray) -> torch.Tensor:
                batch = backbone.prepare([fit_ds.inputs[i] for i in idx]).to(device)
                if augment is not None and batch.tensors.get("pixel_values") is not None:
                    batch.tensors["pixel_values"] = augment(batch.tensors["pixel_values"])
                feats = backbone.forward_features(batch)
                logits = head(F.dropout(feats, self.head_dropout, training=True))
                loss = self._task_loss(logits.float(), idx, y_fit[torch.as_tensor(idx, device=device)])
                extra = self._extra_loss(model)
                return loss if extra is None else loss + extra

            evaluate = None
            if val_ds is not None:
                y_val = np.array([index[c] for c in val_ds.labels])

                def evaluate() -> dict[str, float]:
                    # Running BatchNorm averages lag behind the weights; only eval mode reads them,
                    # and the final re-estimation replaces them, so refreshing them here changes
                    # nothing in training but makes the validation loss (and early stopping) honest.
                    recalibrate_batchnorm(backbone, fit_ds, self.batch_size, device)
                    return _scores(self._proba(val_ds, backbone, head, device), y_val, self.loss_weight_)

            callbacks = self._callbacks(model, groups, chosen, evaluate)
            ckpt_dir = getattr(ctx, "checkpoint_dir", None)
            # what determines the result (checkpoint frequency does not): a resume must match it
            params = {k: v for k, v in self.get_params().items() if k not in ("checkpoint_every", "keep_last")}
            run_config = {"strategy": self.name, "params": params, "backbone": backbone.identity(),
                          "data": train_ds.fingerprint(), "classes": self.classes_}
            state = train(model, training_step, len(fit_ds), optimizer, scheduler=scheduler, epochs=self.epochs,
                          max_steps=self.max_steps, batch_size=self.batch_size, grad_accum=self.grad_accum,
                          clip=self.clip, seed=ctx.seed, nonfinite=self.nonfinite, callbacks=callbacks,
                          checkpoint_dir=Path(ckpt_dir) if ckpt_dir else None,
                          checkpoint_every=self.checkpoint_every, keep_last=self.keep_last,
                          resume=getattr(ctx, "resume", True), run_config=run_config, precision=self.precision,
                          progress=ctx.progress, desc=f"{self.name} {backbone.name}")
            recalibrated = recalibrate_batchnorm(backbone, fit_ds, self.batch_size, device)
            self.trained_names_ = sorted(trainable_state(module))
        finally:
            self._loss_weight_t = None
            for p, flag in flags.items():  # leave the module as found, except its weights
                p.requires_grad_(flag)
            release_statistics(kept)
            module.eval()
        self.head_, self.backbone_ = head.eval(), backbone
        best = next((cb.best_epoch for cb in callbacks if isinstance(cb, EarlyStopping)), None)
        self.info_ = {"n_fit": len(fit_ds), "n_val": len(val_ds) if val_ds is not None else 0,
                      "steps": state.step, "total_steps": state.total_steps, "epochs_run": len(state.history),
                      "best_epoch": best, "stopped_early": bool(state.should_stop), "skipped": state.skipped,
                      "resumed_from": state.resumed_from, "history": state.history,
                      "trained_groups": [n for n, _ in groups if n in chosen],
                      "frozen_groups": [n for n, _ in groups if n not in chosen],
                      "unused_parameters": unused, "lr_by_group": self.lr_by_group_,
                      "from_scratch_lr": scratch, "batchnorm_recalibrated": recalibrated,
                      "batchnorm_statistics": ("none" if not bn_layers else "frozen (pre-trained)" if frozen_stats
                                               else "trained and re-estimated")}
        mark_adapted(backbone, self._trained_tensors())

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
        trainable, the seeded ``model["head"]``) and before any checkpoint is loaded or any
        step taken: initialise the head (``lp-ft``), snapshot the starting weights (``l2sp``)."""

    def _extra_loss(self, model: nn.ModuleDict) -> torch.Tensor | None:
        """A regularisation term added to each micro-batch's cross-entropy (``l2sp``); ``None``: none."""
        return None

    def _callbacks(self, model: nn.ModuleDict, groups: list[tuple[str, list[nn.Parameter]]], chosen: set[str],
                   evaluate: Callable[[], dict[str, float]] | None) -> list[Callback]:
        """The run's callbacks: validation and early stopping where there is a validation split
        (``gradual`` adds its unfreezing schedule around them)."""
        if evaluate is None:
            return []
        callbacks: list[Callback] = [Validation(evaluate)]
        if self.patience:
            callbacks.append(EarlyStopping(model, monitor="val_loss", patience=self.patience))
        return callbacks

    def _task_loss(self, logits: torch.Tensor, idx: np.ndarray, y: torch.Tensor) -> torch.Tensor:
        """The loss of a batch: ``logits (B, C)`` of the fit items ``idx`` against their labels ``y (B,)``,
        each class weighted by ``class_weight`` if set (distillation adds the teacher's soft labels here)."""
        return F.cross_entropy(logits, y, weight=self._loss_weight_t)

    def _split(self, data: Dataset, ctx: TransferContext) -> tuple[Dataset, Dataset | None]:
        if not self.val_fraction:
            return data, None
        from ..data.split import stratified_split

        try:
            return stratified_split(data, test_size=self.val_fraction, seed=ctx.seed)
        except UserInputError:
            ctx.notes.append(f"{self.name}: too few training items for a {self.val_fraction:.0%} validation split; "
                             "trained on all of them for the whole budget, without early stopping.")
            return data, None

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

    def _param_groups(self, groups, chosen: set[str], head: nn.Linear,
                      scratch: float | None = None) -> tuple[list[dict], dict[str, float]]:
        """AdamW groups: per-layer rates decaying from the top (one rate ``scratch`` for every
        group and the head when given: random weights); no decay on biases and norms.

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
        out.append({"params": [head.weight], "lr": head_lr, "weight_decay": self.weight_decay, "name": "head"})
        out.append({"params": [head.bias], "lr": head_lr, "weight_decay": 0.0, "name": "head"})
        return out, rates

    # ----- prediction --------------------------------------------------------------------------
    def _proba(self, data: Dataset, backbone: Backbone, head: nn.Linear, device: torch.device) -> np.ndarray:
        """``(N, C)`` probabilities in eval mode, in batches of similar size (less padding)."""
        module = backbone.module
        was_training = module.training, head.training
        module.eval()
        head.eval()
        order = sorted(range(len(data)), key=lambda i: -backbone.sort_key(data.inputs[i]))
        out = np.zeros((len(data), head.out_features), dtype=np.float64)
        step = max(self.batch_size, 32)
        try:
            with torch.no_grad():
                for s in range(0, len(order), step):
                    rows = order[s:s + step]
                    batch = backbone.prepare([data.inputs[i] for i in rows]).to(device)
                    logits = head(backbone.forward_features(batch)).float()
                    out[rows] = torch.softmax(logits, dim=1).double().cpu().numpy()
        finally:
            module.train(was_training[0])
            head.train(was_training[1])
        return out

    def _predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        device = torch.device(ctx.device)
        ctx.backbone.module.to(device)
        return self._proba(data, ctx.backbone, self.head_.to(device), device)

    def torch_head(self) -> nn.Module:
        self._check_fitted()
        return self.head_.eval()

    # ----- persistence -------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """``backbone.<name>`` for every trained tensor (weights, BatchNorm statistics), and the head."""
        self._check_fitted()
        return self._trained_tensors()

    def _trained_tensors(self) -> dict[str, torch.Tensor]:
        own = self.backbone_.module.state_dict()
        out = {f"backbone.{k}": own[k].detach().cpu().clone() for k in self.trained_names_}
        out["head.weight"] = self.head_.weight.detach().cpu().clone()
        out["head.bias"] = self.head_.bias.detach().cpu().clone()
        return out

    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str], backbone: Backbone,
                   task: str = "classification") -> "FineTune":
        """Apply saved fine-tuned tensors to the freshly loaded pre-trained ``backbone``."""
        extra = sorted(k for k in tensors if not k.startswith("backbone.") and k not in ("head.weight", "head.bias"))
        _check(not extra, f"unexpected tensors in a finetune state: {', '.join(extra[:5])}")
        _check("head.weight" in tensors and "head.bias" in tensors, "the finetune state has no head (head.weight)")
        module = backbone.module
        own = module.state_dict()
        sub = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
        bad = [k for k, v in sub.items() if k not in own or own[k].shape != v.shape]
        _check(not bad, f"the saved fine-tuned weights do not fit backbone {backbone.name!r}: "
               f"{', '.join(bad[:5])}" + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""),
               "load the run with the backbone (and options) it was trained with")
        head = saved_head(tensors, classes, backbone)
        with torch.no_grad():
            for k, v in sub.items():
                own[k].copy_(v)
        module.eval()
        self.head_, self.backbone_ = head, backbone
        self.trained_names_ = sorted(sub)
        mark_adapted(backbone, tensors)
        return self._restored(classes, task)


def _scores(proba: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> dict[str, float]:
    """Validation loss (mean cross-entropy; with ``weight (C,)``, weighted as the training loss, so
    that early stopping watches the loss being minimised) and accuracy of ``(N, C)`` probabilities."""
    p = np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0)
    if weight is None:
        loss = float(-np.log(p).mean())
    else:  # torch's weighted mean: sum(w_y * nll) / sum(w_y)
        w = np.asarray(weight, dtype=np.float64)[y]
        loss = float(-(w * np.log(p)).sum() / w.sum())
    return {"loss": loss, "accuracy": float((proba.argmax(1) == y).mean())}
