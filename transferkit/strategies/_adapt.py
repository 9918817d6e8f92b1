"""Machinery of the domain-adaptation strategies on cached features (``--on features``).

A small adapter MLP and a head are trained on frozen features of the labelled source items
and of the unlabelled target items (``ctx.target``), through the one training loop.  The
strategy's hyper-parameter that trades classification against alignment (its "knob": a loss
weight, or a confidence threshold) may be a list: one value is then chosen without target
labels (:mod:`transferkit.alignment.selection`, DEV by default) and the model refit on all
source items with it.  ``source_only()`` gives the same model with adaptation switched off,
the comparison every adaptation run reports.

Domain-specific standardisation (``normalize="domain"``; default ``"source"``): source
features are standardised with the source's statistics and target features with the
target's, the feature-level form of AdaBN (Li et al., "Revisiting Batch Normalization for
Practical Domain Adaptation", 2016); the fitted model keeps the target's statistics (it is a
model for the target domain), and ``transform(..., domain="source")`` embeds source items with
the source's.  It is not the default here because it hurt this MLP adapter where it helps a
linear probe: on EfficientNet-Lite0 features, MNIST-5k -> digits, the adapter fell from 0.13 to
0.07 with it (it put most target items in one class) while a logistic regression rose from 0.11
to 0.35 (measured 2026-11-22); the probe form is the ``adabn`` strategy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..alignment import dev_risk, entropy, snd
from ..data.dataset import Dataset
from ..errors import UserInputError
from ..tasks import get_task
from ..tasks._multilabel import best_f1_threshold
from ..training import Callback, train
from ..training.loop import isolated_rng
from ..training.optim import adamw
from ._network import apply_tensors, backbone_tensors
from ._tuning import mark_adapted, used_layer_groups
from .base import Strategy, TransferContext
from .params import Params, param
from .probe import CLASS_WEIGHT_HELP, check_class_weight, loss_weights

SELECTIONS = ("dev", "snd", "none")


class FeatureAdapter(nn.Module):
    """``x (B, D)`` -> standardised with source statistics -> ``Linear(D, H)`` -> ReLU -> dropout
    -> ``f (B, H)`` (:meth:`embed`) -> head ``Linear(H, K)`` -> ``(B, K)`` (:meth:`forward`): class
    logits (``K = C``), per-label logits (``K = L``) or, for regression, the value in the target's
    units (``K = 1``; the training target's standardisation is folded into the head)."""

    def __init__(self, d: int, hidden: int, n_classes: int, dropout: float = 0.1):
        super().__init__()
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("std", torch.ones(d))
        self.body = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class _Items:
    """Raw items whose features a partly trainable backbone computes on demand (``on="backbone"``).

    Shares one backbone among source, target and their subsets; ``restore`` puts the
    pre-trained weights back (each knob candidate trains from them).
    """

    def __init__(self, data: Dataset, backbone, trainable: list, initial: dict, device: torch.device,
                 idx: np.ndarray | None = None):
        self.data, self.backbone, self.trainable, self.initial, self.device = data, backbone, trainable, initial, device
        self.idx = np.arange(len(data)) if idx is None else np.asarray(idx)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, idx) -> "_Items":
        return _Items(self.data, self.backbone, self.trainable, self.initial, self.device, self.idx[np.asarray(idx)])

    def features(self, i: torch.Tensor) -> torch.Tensor:
        items = [self.data.inputs[int(self.idx[j])] for j in i.tolist()]
        return self.backbone.forward_features(self.backbone.prepare(items).to(self.device)).float()

    def embedded(self, batch_size: int = 32) -> np.ndarray:
        """Features ``(N, D)`` of every item under the current weights, eval mode, no gradient."""
        module = self.backbone.module
        was = module.training
        module.eval()
        try:
            with torch.no_grad():
                return np.concatenate([self.features(torch.arange(s, min(s + batch_size, len(self))))
                                       .cpu().numpy() for s in range(0, len(self), batch_size)])
        finally:
            module.train(was)

    def restore(self) -> None:
        with torch.no_grad():
            own = self.backbone.module.state_dict()
            for k, v in self.initial.items():
                own[k].copy_(v)


class _Progress(Callback):
    """Optimizer steps done, for ramps that depend on training progress (restored on resume)."""

    def __init__(self) -> None:
        self.step = 0

    def on_train_begin(self, state) -> None:
        self.step = state.step

    def on_step_end(self, state, logs) -> None:
        self.step = state.step


@dataclass
class AdaptationParams(Params):
    """Options shared by the domain-adaptation strategies on cached features."""

    hidden: int = param(256, "H, the adapter's width", ge=1)
    dropout: float = param(0.1, "dropout on the adapter's output during training", ge=0, lt=1)
    steps: int = param(1000, "optimizer steps per training run", ge=1)
    batch_size: int = param(64, "source items per step (and as many target items)", ge=1)
    lr: float = param(1e-3, "AdamW learning rate of the adapter and head", gt=0, lt=1)
    weight_decay: float = param(1e-4, "AdamW weight decay", ge=0)
    selection: str = param("dev", "how a knob given as a list is chosen without target labels: dev (deep "
                                  "embedded validation), snd (soft neighbourhood density) or none (the first value)",
                           choices=SELECTIONS)
    val_fraction: float = param(0.2, "share of the source items held out for dev while choosing", gt=0, lt=1)
    on: str = param("features", "features: an adapter on cached frozen features (seconds); backbone: the last "
                                "unfreeze layer groups train too (minutes to hours on a CPU)",
                    choices=("features", "backbone"))
    unfreeze: Literal["all"] | int = param(2, "with on=backbone: 'all' or how many last layer groups train", ge=1)
    backbone_lr: float = param(2e-5, "with on=backbone: the learning rate of those groups", gt=0, lt=1)
    normalize: str = param("source", "source: both domains standardised with the source's statistics; domain: "
                                      "each with its own (AdaBN on features; cached features only)",
                           choices=("domain", "source"))

    class_weight: Literal["balanced"] | dict | None = param(
        None, CLASS_WEIGHT_HELP + "; it weighs the labelled source loss (and the held-out source loss DEV reads)",
        check=check_class_weight)

    def validate(self) -> None:
        if self.normalize == "domain" and self.on == "backbone":
            raise UserInputError("normalize='domain' works on cached features only (with on=backbone the "
                                 "features move while training)", hint="use normalize=source")


class FeatureAdaptation(Strategy):
    """Base of ``dann``, ``mmd``, ``coral`` and ``self-training`` (see their docstrings).

    Data: labelled source items, unlabelled target items in ``ctx.target`` (without them the
    strategy trains source-only and says so in the notes). Shapes: cached features ``(N, D)``
    -> adapter ``(N, H)`` -> head ``(N, C)``.  Options: :class:`AdaptationParams` and the
    knob of each subclass; ``on="backbone"`` makes the alignment shape the backbone's own
    features, and every knob candidate is then a training run from the pre-trained weights.
    """

    Params = AdaptationParams
    uses_features = True
    needs_target = True
    transforms_features = True
    #: name of the hyper-parameter chosen without target labels, and its "no adaptation" value
    knob: ClassVar[str] = "trade_off"
    #: a classification-only method: what it reads that a regression or multi-label target lacks
    #: (``{name}``, ``{task}`` filled in), which its refusal says; "" for methods of every task
    classification_only_because: ClassVar[str] = ""

    @classmethod
    def check_task(cls, task: str) -> None:
        try:
            super().check_task(task)
        except UserInputError as e:
            if not cls.classification_only_because or task not in ("regression", "multi-label"):
                raise
            why = cls.classification_only_because.format(name=cls.name, task=task)
            raise UserInputError(e.message, hint=f"{why}; adabn, dann, mmd and coral adapt to the target for it"
                                 + (f" ({e.hint})" if e.hint else "")) from None

    @property
    def tunes_backbone(self) -> bool:
        return self.on == "backbone"

    # ----- hooks --------------------------------------------------------------------------------
    def knob_values(self) -> list[float]:
        """The candidates of the knob: its one value, or the list given."""
        v = getattr(self, self.knob)
        return list(v) if isinstance(v, list) else [v]

    def source_only(self) -> "FeatureAdaptation":
        """The same model with adaptation switched off: the comparison of every adaptation run."""
        return type(self)(**{**self.get_params(), **self._source_only_params(), "selection": "none",
                             "normalize": "source"})

    def _source_only_params(self) -> dict[str, Any]:
        return {self.knob: 0.0}

    def _alignment(self, hidden: int) -> nn.Module | None:
        """The alignment loss module over ``(f_s, f_t)``; ``None``: none."""
        return None

    def _transfer_loss(self, align: nn.Module, f_s: torch.Tensor, f_t: torch.Tensor, progress: float,
                       head: nn.Module) -> torch.Tensor:
        """The alignment term of a step: ``f_s (n, H)``, ``f_t (m, H)`` adapter features, training
        progress in ``[0, 1]``, and the head (``head(f_t)``: the target's outputs, for losses on them)."""
        return align(f_s, f_t)

    def _n_steps(self, tuned: bool) -> int:
        """Optimizer steps of one training run (``tuned``: the backbone trains too)."""
        return self.steps

    def _train_candidate(self, Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray | None, value: float,
                         seed: int) -> tuple[FeatureAdapter, dict[str, Any]]:
        """One model for one knob value (a loss weight here; self-training overrides this)."""
        return self._train_adapter(Xs, ys, Xt if value > 0 else None, value, seed), {}

    # ----- training -----------------------------------------------------------------------------
    def _train_adapter(self, Xs, ys: np.ndarray, Xt, weight: float, seed: int,
                       stats: tuple[np.ndarray, np.ndarray] | None = None) -> FeatureAdapter:
        """Source cross-entropy (+ ``weight`` x the alignment loss on a target batch of the same
        size, when ``Xt`` is given), ``steps`` AdamW steps through the one training loop.

        ``Xs``/``Xt`` are cached feature arrays, or with ``on="backbone"`` :class:`_Items`
        whose features the (partly trainable) backbone computes at every step."""
        tuned = isinstance(Xs, _Items)
        if stats is None:
            stats = self._stats_ if tuned else (Xs.mean(0), Xs.std(0) + 1e-6)
        mean, std = stats
        with isolated_rng(seed):
            model = FeatureAdapter(len(mean), self.hidden, self._n_outputs(), self.dropout)
            align = self._alignment(self.hidden) if Xt is not None else None
        with torch.no_grad():
            model.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            model.std.copy_(torch.as_tensor(std, dtype=torch.float32))
        parts = {"model": model, **({"align": align} if align is not None else {})}
        groups = [{"params": list(nn.ModuleDict(parts).parameters()), "lr": self.lr}]
        if tuned:
            Xs.restore()  # every candidate starts from the pre-trained weights
            parts["backbone"] = Xs.backbone.module
            groups.append({"params": Xs.trainable, "lr": self.backbone_lr})
        modules = nn.ModuleDict(parts)
        optimizer = adamw(groups, lr=self.lr, weight_decay=self.weight_decay)
        xs = Xs if tuned else torch.as_tensor(Xs, dtype=torch.float32)
        xt = Xt if Xt is None or tuned else torch.as_tensor(Xt, dtype=torch.float32)
        yt = self._targets(ys)
        w_t = None if self.loss_weight_ is None else torch.as_tensor(self.loss_weight_, dtype=torch.float32)
        progress = _Progress()
        steps = self._n_steps(tuned)

        def rows(x, i: torch.Tensor) -> torch.Tensor:
            return x.features(i) if tuned else x[i]

        def training_step(idx: np.ndarray) -> torch.Tensor:
            i = torch.as_tensor(idx)
            f_s = model.embed(rows(xs, i))
            loss = self._source_loss(model.head(f_s), yt[i], w_t)
            if xt is not None and align is not None:
                f_t = model.embed(rows(xt, torch.randint(len(xt), (len(idx),))))  # seeded and checkpointed by the loop
                loss = loss + weight * self._transfer_loss(align, f_s, f_t, progress.step / steps, model.head)
            return loss

        batch = min(self.batch_size, len(Xs))
        per_epoch = math.ceil(len(Xs) / batch)
        try:
            train(modules, training_step, len(Xs), optimizer, epochs=math.ceil(steps / per_epoch),
                  max_steps=steps, batch_size=batch, clip=1.0 if tuned else None, seed=seed,
                  callbacks=[progress], precision="fp32", progress=False, desc=self.name)
        finally:
            if tuned:
                Xs.backbone.module.eval()
        if self.task_ == "regression":  # the head gives values in the target's units from here on
            mean_y, std_y = self.target_stats_
            with torch.no_grad():
                model.head.weight.mul_(std_y)
                model.head.bias.mul_(std_y).add_(mean_y)
        return model.eval()

    # ----- the task: outputs, training targets, losses ------------------------------------------
    def _n_outputs(self) -> int:
        return 1 if self.task_ == "regression" else len(self.classes_)

    def _targets(self, y: np.ndarray) -> torch.Tensor:
        """Training targets of the encoded labels: ``(N,)`` long class indices; ``(N,)`` float, the
        standardised regression target; ``(N, L)`` float 0/1 label indicators."""
        if self.task_ == "classification":
            return torch.as_tensor(y, dtype=torch.long)
        if self.task_ == "regression":
            mean_y, std_y = self.target_stats_
            return torch.as_tensor((np.asarray(y, np.float64) - mean_y) / std_y, dtype=torch.float32)
        return torch.as_tensor(np.asarray(y), dtype=torch.float32)

    def _source_loss(self, z: torch.Tensor, y: torch.Tensor, class_weight: torch.Tensor | None) -> torch.Tensor:
        """Loss of head outputs ``z (B, K)``: cross-entropy (each class weighted by ``class_weight``),
        squared error on the standardised target, or the mean binary cross-entropy of the labels."""
        if self.task_ == "classification":
            return F.cross_entropy(z, y, weight=class_weight)
        if self.task_ == "regression":
            return F.mse_loss(z[:, 0], y)
        return F.binary_cross_entropy_with_logits(z, y)

    def _outputs(self, model: FeatureAdapter, X) -> np.ndarray:
        """The task's outputs: ``(N, C)`` probabilities, ``(N,)`` values, ``(N, L)`` per-label probabilities."""
        if self.task_ == "classification":
            return self._proba(model, X)
        X = X.embedded() if isinstance(X, _Items) else X
        model.eval()
        with torch.no_grad():
            z = model(torch.as_tensor(X, dtype=torch.float32)).double()
        return z[:, 0].numpy() if self.task_ == "regression" else torch.sigmoid(z).numpy()

    def _item_losses(self, out: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``(V,)`` per-item loss of outputs on held-out labelled source items (DEV reads them), in the
        training loss's units: cross-entropy (class-weighted), squared standardised error, or mean
        binary cross-entropy over the labels."""
        if self.task_ == "classification":
            losses = -np.log(np.clip(out[np.arange(len(y)), y], 1e-12, None))
            if self.loss_weight_ is not None:  # the loss the model was trained on, weighted alike
                losses = losses * self.loss_weight_[y]
            return losses
        if self.task_ == "regression":
            return ((out - y) / self.target_stats_[1]) ** 2
        p = np.clip(out, 1e-12, 1 - 1e-12)
        return -(y * np.log(p) + (1 - y) * np.log1p(-p)).mean(1)

    @staticmethod
    def _proba(model: FeatureAdapter, X) -> np.ndarray:
        X = X.embedded() if isinstance(X, _Items) else X
        model.eval()
        with torch.no_grad():
            return torch.softmax(model(torch.as_tensor(X, dtype=torch.float32)), 1).double().numpy()

    @staticmethod
    def _embed(model: FeatureAdapter, X) -> np.ndarray:
        X = X.embedded() if isinstance(X, _Items) else X
        model.eval()
        with torch.no_grad():
            return model.embed(torch.as_tensor(X, dtype=torch.float32)).numpy()

    # ----- fit: choose the knob without target labels, then refit --------------------------------
    def _fit(self, train_ds: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        self.loss_weight_ = loss_weights(self, y, ctx)  # (C,) class weights of the source loss, or None
        self.target_stats_ = ((float(np.mean(y)), float(np.std(y))) if self.task_ == "regression" else None)
        if self.task_ != "classification" and self.selection == "snd" and len(self.knob_values()) > 1:
            raise UserInputError(f"selection='snd' scores class probabilities of the target; a {self.task_} target "
                                 "has none", hint="use --param selection=dev (or none) for this task")
        self._held_out: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        Xs = ctx.features(train_ds).astype(np.float32)
        target = getattr(ctx, "target", None)
        Xt = ctx.features(target).astype(np.float32) if target is not None and len(target) else None
        self.backbone_ = None
        if self.on == "backbone":
            Xs, Xt = self._items(train_ds, target if Xt is not None else None, Xs, ctx)
        self.source_stats_ = None
        domain_stats = None
        if Xt is not None and self.on == "features" and self._normalizes_domains():
            # each domain standardised with its own statistics; everything below sees both in
            # the same standard units, and the final model gets the target's statistics back
            ms, ss = Xs.mean(0), Xs.std(0) + 1e-6
            mt, st = Xt.mean(0), Xt.std(0) + 1e-6
            Xs, Xt = (Xs - ms) / ss, (Xt - mt) / st
            domain_stats = (ms, ss, mt, st)
        values = self.knob_values()
        self.selection_: dict[str, Any] = {"knob": self.knob, "candidates": values, "criterion": None}
        if Xt is None:
            value = None
            ctx.notes.append(f"{self.name}: no unlabelled target data was given, so nothing was adapted: "
                             "this is the source-only model.")
        elif len(values) == 1 or self.selection == "none":
            value = values[0]
            self.selection_["reason"] = "one value given" if len(values) == 1 else "selection='none': first value"
        else:
            value = self._select(Xs, y, Xt, values, ctx)
        self.model_, extra = self._fit_model(Xs, y, Xt, value, ctx.seed)
        if self.task_ == "multi-label":
            self.thresholds_, extra["thresholds"] = self._choose_thresholds(Xs, y, Xt, value, ctx.seed)
        if domain_stats is not None:
            ms, ss, mt, st = (torch.as_tensor(a, dtype=torch.float32) for a in domain_stats)
            with torch.no_grad():  # raw x -> (x - m_dom) / s_dom -> the model's own (u - m) / s, in one step
                m, sd = self.model_.mean.clone(), self.model_.std.clone()
                self.model_.mean.copy_(mt + st * m)
                self.model_.std.copy_(st * sd)
            self.source_stats_ = ((ms + ss * m).numpy(), (ss * sd).numpy())
            ctx.notes.append(f"{self.name}: source and target features were each standardised with their own "
                             "statistics (AdaBN on features); the model keeps the target's.")
        if self.loss_weight_ is not None:
            extra["class_weight"] = [float(w) for w in self.loss_weight_]
        if self.task_ == "regression":
            extra["target_mean"], extra["target_scale"] = self.target_stats_
        self.info_ = {"on": self.on, self.knob: value, "selection": self.selection_, **extra,
                      "normalize": "domain" if domain_stats is not None else "source",
                      "n_source": len(Xs), "n_target": 0 if Xt is None else len(Xt)}
        if self.on == "backbone":
            self.backbone_ = ctx.backbone
            self.trained_names_ = sorted(self._trained_names)
            mark_adapted(ctx.backbone, self._backbone_tensors())  # tuned features get a cache key of their own
            self.info_["trained_groups"] = self._trained_groups

    def _items(self, train_ds: Dataset, target: Dataset | None, Xs0: np.ndarray,
               ctx: TransferContext) -> tuple[_Items, _Items | None]:
        """Source and target as raw items on the backbone, its last ``unfreeze`` groups trainable."""
        backbone, device = ctx.backbone, torch.device(ctx.device)
        module = backbone.module.to(device)
        groups, _ = used_layer_groups(backbone, train_ds.inputs[:2], device)
        chosen = groups if self.unfreeze == "all" else groups[-self.unfreeze:]
        trainable = [p for _, ps in chosen for p in ps]
        for p in module.parameters():
            p.requires_grad_(False)
        for p in trainable:
            p.requires_grad_(True)
        ids = {id(p) for p in trainable}
        self._trained_names = [n for n, p in module.named_parameters() if id(p) in ids]
        self._trained_groups = [n for n, _ in chosen]
        initial = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self._stats_ = (Xs0.mean(0), Xs0.std(0) + 1e-6)  # the pre-trained features' statistics
        src = _Items(train_ds, backbone, trainable, initial, device)
        tgt = _Items(target, backbone, trainable, initial, device) if target is not None else None
        return src, tgt

    def _backbone_tensors(self) -> dict[str, torch.Tensor]:
        return backbone_tensors(self.backbone_, self.trained_names_)

    def _fit_model(self, Xs, y: np.ndarray, Xt, value: float | None, seed: int) -> tuple[FeatureAdapter, dict]:
        """The model of one knob value; ``None``: no target data, the source-only model."""
        if value is None:
            return self._train_adapter(Xs, y, None, 0.0, seed), {}
        return self._train_candidate(Xs, y, Xt, value, seed)

    def _choose_thresholds(self, Xs, Y: np.ndarray, Xt, value: float | None,
                           seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        """``(L,)`` per-label thresholds maximising F1 on held-out labelled *source* items (never
        the test set): the predictions of the chosen knob's model that DEV held out, or else of a
        model of that value trained on the other ``1 - val_fraction`` of the source items."""
        if value in self._held_out:
            val_idx, out = self._held_out[value]
            how = "the chosen value's DEV model"
        else:
            n_val = max(1, int(round(self.val_fraction * len(Y))))
            perm = np.random.default_rng(seed).permutation(len(Y))
            val_idx, fit_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
            model, _ = self._fit_model(Xs[fit_idx], Y[fit_idx], Xt, value, seed)
            out = self._outputs(model, Xs[val_idx])
            how = "a model trained on the other source items"
        thresholds, rows = np.full(Y.shape[1], 0.5), []
        for j in range(Y.shape[1]):
            y = Y[val_idx, j]
            if 0 < y.sum() < len(y):
                thresholds[j], f1 = best_f1_threshold(y, out[:, j])
                rows.append({"threshold": float(thresholds[j]), "held_out_f1": f1})
            else:  # a label all or none of the held-out items have: no F1 to trade off
                rows.append({"threshold": 0.5, "note": "constant on the held-out items: 0.5 used"})
        info = {"rule": f"per label, maximises F1 on {len(val_idx)} held-out labelled source items ({how})",
                "labels": rows}
        return thresholds.astype(np.float32), info

    def _select(self, Xs: np.ndarray, y: np.ndarray, Xt: np.ndarray, values: list[float],
                ctx: TransferContext) -> float:
        criterion = self.selection
        fit_idx = val_idx = None
        if criterion == "dev":
            from sklearn.model_selection import train_test_split

            try:
                fit_idx, val_idx = train_test_split(np.arange(len(y)), test_size=self.val_fraction,
                                                    stratify=y if self.task_ == "classification" else None,
                                                    random_state=ctx.seed)
            except ValueError:
                criterion = "snd"
                ctx.notes.append(f"{self.name}: too few source items per class to hold out a validation part "
                                 "for DEV; the knob was chosen by SND instead.")
        rows = []
        for v in values:
            if criterion == "dev":
                model, _ = self._train_candidate(Xs[fit_idx], y[fit_idx], Xt, v, ctx.seed)
                p_val = self._outputs(model, Xs[val_idx])
                self._held_out[v] = (val_idx, p_val)
                losses = self._item_losses(p_val, y[val_idx])
                r = dev_risk(losses, self._embed(model, Xs[val_idx]), self._embed(model, Xs[fit_idx]),
                             self._embed(model, Xt), seed=ctx.seed)
                score = r["risk"]
            else:
                model, _ = self._train_candidate(Xs, y, Xt, v, ctx.seed)
                r = {}
                score = snd(self._proba(model, Xt), seed=ctx.seed)
            if self.task_ == "classification":
                r["target_entropy"] = entropy(self._proba(model, Xt))
            rows.append({self.knob: v, "score": score, **r})
        scores = [r["score"] for r in rows]
        best = int(np.argmin(scores)) if criterion == "dev" else int(np.argmax(scores))
        why = ("DEV (You et al., ICML 2019): importance-weighted loss on held-out labelled source items, an "
               "estimate of the target risk; lowest wins" if criterion == "dev" else
               "SND (Saito et al., ICCV 2021): soft neighbourhood density of target predictions; highest wins")
        self.selection_.update(criterion=criterion, scores=rows, chosen=values[best], why=why)
        off = values[best] == self._source_only_params().get(self.knob, object())
        ctx.notes.append(f"{self.name}: {self.knob} = {values[best]:g} chosen among "
                         f"{', '.join(f'{v:g}' for v in values)} without target labels by {why}." +
                         (" That value switches adaptation off: the criterion expects aligning the domains to "
                          f"cost {get_task(self.task_).primary_label} here (a change in class proportions "
                          "between the domains is a common cause), so this is the source-only model." if off else ""))
        return values[best]

    # ----- prediction and persistence ---------------------------------------------------------------
    def _predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        return self._proba(self.model_, ctx.features(data).astype(np.float32))

    def _predict_outputs(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        return self._outputs(self.model_, ctx.features(data).astype(np.float32))

    def transform(self, data: Dataset, ctx: TransferContext, domain: str = "target") -> np.ndarray:
        """The adapter's features ``(N, H)`` of ``data`` (to measure the domain distance after adaptation).

        ``domain="source"``: ``data`` comes from the source domain; with domain-specific
        standardisation it is standardised with the source's statistics."""
        self._check_fitted()
        X = ctx.features(data).astype(np.float32)
        stats = getattr(self, "source_stats_", None)
        if domain == "source" and stats is not None:
            X = (X - stats[0]) / stats[1] * self.model_.std.numpy() + self.model_.mean.numpy()
        return self._embed(self.model_, X)

    def _normalizes_domains(self) -> bool:
        return self.normalize == "domain"

    def torch_head(self) -> nn.Module:
        self._check_fitted()
        return self.model_.eval()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        out = {f"adapter.{k}": v.detach().cpu().clone() for k, v in self.model_.state_dict().items()}
        if getattr(self, "source_stats_", None) is not None:
            out["source.mean"], out["source.std"] = (torch.as_tensor(a, dtype=torch.float32).clone()
                                                     for a in self.source_stats_)
        if getattr(self, "backbone_", None) is not None:
            out.update(self._backbone_tensors())
        if self.task_ == "multi-label":
            out["head.thresholds"] = torch.as_tensor(np.asarray(self.thresholds_, np.float32)).clone()
        return out

    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str], backbone=None,
                   task: str = "classification") -> "FeatureAdaptation":
        """Restore the adapter of a model of ``task``: its head has ``C`` classes, ``L`` labels (and
        ``head.thresholds (L,)``) or one regression output already in the target's units."""
        self.check_task(task)
        sub = {k[len("adapter."):]: v for k, v in tensors.items() if k.startswith("adapter.")}
        try:
            h, d = sub["body.0.weight"].shape
            model = FeatureAdapter(d, h, 1 if task == "regression" else len(classes), self.dropout)
            model.load_state_dict(sub)
        except (KeyError, RuntimeError, ValueError) as e:
            raise UserInputError(f"the saved {self.name} adapter does not fit: {e}",
                                 hint="the weights belong to another run or task: fit again") from None
        thresholds = None
        if task == "multi-label":
            thresholds = tensors.get("head.thresholds")
            if thresholds is None or tuple(thresholds.shape) != (len(classes),):
                raise UserInputError(f"the saved {self.name} model lacks per-label thresholds for its "
                                     f"{len(classes)} labels", hint="the weights file is incomplete: fit again")
            thresholds = thresholds.numpy()
        self.model_ = model.eval()
        self.source_stats_ = ((tensors["source.mean"].numpy(), tensors["source.std"].numpy())
                              if "source.mean" in tensors and "source.std" in tensors else None)
        # on="backbone": the tuned tensors go into the freshly loaded pre-trained backbone
        tuned = apply_tensors(backbone, tensors, self.name)
        self.backbone_ = backbone if tuned else None
        if tuned:
            self.trained_names_ = tuned
        return self._restored(classes, task, thresholds)
