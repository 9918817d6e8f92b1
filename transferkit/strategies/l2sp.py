"""``l2sp``: fine-tuning regularised towards the starting point, not towards zero.

Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional
Networks", ICML 2018.  Weight decay pulls every weight towards 0, which for a pre-trained
backbone means towards forgetting; L2-SP pulls the backbone towards its pre-trained weights
``w0`` instead and keeps plain L2 for the new head.  The paper adds the penalty to the loss::

    loss = task loss + alpha / 2 * ||w - w0||^2 + beta / 2 * ||w_head||^2

and trains with SGD, where the penalty's gradient ``alpha * (w - w0)`` moves each weight by
``lr * alpha * (w - w0)`` per step whatever the task's gradient.  Under Adam (every fine-tuning
here uses AdamW) the same gradient is divided by the running scale of the *whole* gradient, which
the task loss dominates: with alpha 0.01 and a drift of 1e-3 the penalty's share of a weight's
gradient is about 1e-5 against task gradients of 1e-4 to 1e-2, so the update is the task's alone.
This is why L2-SP with the paper's alpha gave exactly the fine-tuning result on every spam seed
(BENCHMARKS.md, strategies), and it is the argument of Loshchilov & Hutter ("Decoupled Weight
Decay Regularization", ICLR 2019) for decoupling weight decay from Adam's gradient.

So the default here, ``penalty="decoupled"``, applies L2-SP as SGD applies it, after each
optimizer step and outside Adam's scaling, as AdamW applies weight decay but towards ``w0``::

    w <- w + min(lr_g * alpha, 1) * (w0 - w)        (lr_g: the step's rate of the weight's group)

Adam moves a weight by at most about ``lr`` per step, so the pull holds each weight within about
``1 / alpha`` of ``w0`` (alpha 1000: 1e-3, against pre-trained weights of typical size 0.02-0.1),
whatever the budget; it binds once ``lr * steps`` exceeds ``1 / alpha``.  The head's L2 (``beta``)
becomes the head weight's decoupled weight decay.  ``penalty="loss"`` keeps the paper's form.

``alpha`` left unset is chosen on the validation split: each value of ``alpha_grid`` (0, plain
fine-tuning, first) is one fine-tuning with the same seed, split and budget, and the run with the
lowest validation loss (the loss early stopping watches) is the one kept, not refitted; the grid,
each candidate's validation loss and drift, and the choice are in ``fit_info()["alpha_search"]``.
Without a validation split (``val_fraction=0``, too few items) or in a joint fit of several tasks,
``alpha`` is ``DEFAULT_ALPHA``.

Measured (``benchmarks/bench_l2sp.py``, seed 0, 300 test items each, 2 CPU cores shared with other
work): MNIST-5k at 10 digits per class, efficientnet-lite0 at 96 px, the default budget (203 steps,
no validation split): finetune 0.817 (``||w - w0||`` 0.757), the paper's form 0.810 (0.722, -5%),
decoupled alpha 1000 0.793 (0.242, -68%); SpamAssassin at 8 e-mails per class, minilm-l6 on 64
tokens, 60 steps: finetune 0.880 (1.53), the paper's form 0.880 (1.45, -5%), decoupled 0.890 (0.917,
-40%).  The pull now changes the fit; on these two tasks it neither clearly helps nor clearly hurts
(+1 and -2.3 points, within one seed's noise on 300 items): plain fine-tuning of a few hundred steps
does not drift far enough here for the prior to matter, which is why the grid starts at 0.

``w0`` is a copy kept beside the model, not in it: checkpoints hold only what training changes, and
a resumed run takes ``w0`` again from the freshly loaded backbone, which is bitwise the same.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from ..data.dataset import Dataset
from ..training.callbacks import Callback
from .base import STRATEGIES, TransferContext
from .finetune import FineTune, FineTuneParams
from .params import param

Anchors = Sequence[tuple[nn.Parameter, torch.Tensor]]

#: alpha when it is not chosen on validation (no split, joint fits): weights held within ~1e-3 of w0
DEFAULT_ALPHA = 1000.0
#: alpha of ``penalty="loss"`` when it is not set: the paper's
PAPER_ALPHA = 0.01


def l2sp_terms(anchors: Anchors, head: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The two squared norms of L2-SP, differentiable.

    Args:
        anchors: ``(w, w0)`` pairs: a trainable backbone parameter and its starting value
            (same shape).
        head: the new layer (or a ``ModuleDict`` of one per task); all of its parameters (weight
            ``(K, D)`` and bias ``(K,)``) count.

    Returns:
        ``||w - w0||^2`` summed over the anchors, and ``||w_head||^2``; scalars (float32 or wider).
    """
    head_sq = sum((p.float() ** 2).sum() for p in head.parameters())
    if not anchors:
        return torch.zeros((), device=head_sq.device), head_sq
    sp_sq = sum(((w.float() - w0.float()) ** 2).sum() for w, w0 in anchors)
    return sp_sq, head_sq


def pull_towards(optimizer: torch.optim.Optimizer, start: dict[int, torch.Tensor], alpha: float) -> int:
    """One decoupled L2-SP step: every parameter of ``optimizer`` with a starting value in ``start``
    (``{id(parameter): w0}``, same shape) moves ``min(lr * alpha, 1)`` of the way back to it, ``lr``
    being its group's current rate.  Returns the number of tensors pulled."""
    pulled = 0
    with torch.no_grad():
        for group in optimizer.param_groups:
            pairs = [(p, start[id(p)]) for p in group["params"] if id(p) in start]
            weight = min(float(group["lr"]) * alpha, 1.0)
            if pairs and weight > 0:
                torch._foreach_lerp_([p for p, _ in pairs], [w0 for _, w0 in pairs], weight)
                pulled += len(pairs)
    return pulled


class LogDistance(Callback):
    """Adds ``||w - w0||`` (``drift``) at each epoch end to the logs, and with the penalty in the
    loss its value ``alpha / 2 * ||w - w0||^2`` (``l2sp``), for the history."""

    def __init__(self, terms: Callable[[], tuple[torch.Tensor, torch.Tensor]], alpha: float, in_loss: bool):
        self.terms, self.alpha, self.in_loss = terms, alpha, in_loss

    def on_epoch_end(self, state, logs: dict[str, Any]) -> None:
        with torch.no_grad():
            sp_sq = float(self.terms()[0])
        logs["drift"] = sp_sq ** 0.5
        if self.in_loss:
            logs["l2sp"] = self.alpha / 2 * sp_sq


def _check_grid(value: Any) -> str | None:
    if isinstance(value, list) and (value[0] != 0 or sorted(set(value)) != value):
        return "a list of distinct alphas in increasing order starting with 0 (plain fine-tuning, the reference)"
    return None


@dataclass
class L2SPParams(FineTuneParams):
    """:class:`FineTuneParams` plus the strengths of the pull, which replaces weight decay."""

    alpha: float | None = param(
        None, "strength of the pull towards the starting weights: decoupled, each step moves a weight lr * alpha of "
              "the way back (it stays within ~1/alpha of w0); null: chosen on the validation split from alpha_grid",
        ge=0, lt=float("inf"))
    alpha_grid: list[float] = param(
        [0.0, 300.0, 3000.0], "alphas tried when alpha is null, one fine-tuning each (0, plain fine-tuning, first); "
                              "the lowest validation loss wins", ge=0, lt=float("inf"), check=_check_grid)
    penalty: Literal["decoupled", "loss"] = param(
        "decoupled", "decoupled: the pull after each optimizer step (as AdamW's decay, towards w0); loss: the paper's "
                     "alpha/2 ||w - w0||^2 added to the loss (under Adam nearly no effect at the paper's alpha 0.01)",
        choices=("decoupled", "loss"))
    beta: float = param(0.01, "L2 on the head: its decoupled weight decay (penalty=loss: the paper's beta/2 ||w||^2)",
                        ge=0, lt=float("inf"))
    weight_decay: float = param(0.0, "decoupled weight decay towards 0 of the backbone's matrices on top of the pull; "
                                     "0, as the pull replaces it", ge=0)


@STRATEGIES.register("l2sp", needs="backbone",
                     summary="fine-tuning pulled towards the pre-trained weights (L2-SP, Li et al., ICML 2018; "
                             "decoupled, strength chosen on validation)")
class L2SPFineTune(FineTune):
    """Fine-tuning with the L2-SP pull towards the starting weights.

    Data: labelled items of any modality, every task of :class:`FineTune`. Shapes as
    :class:`FineTune`: items -> features ``(B, D)`` -> head ``Linear(D, K)``. The pull covers
    every trainable backbone parameter (the groups chosen by ``unfreeze``; frozen ones cannot
    move; biases and norms too: pulling them to ``w0`` is no harm, unlike pulling them to 0); the
    head gets plain L2 (every task's head in a joint fit).

    On the random-init control, ``w0`` is the random initialisation: the same recipe, whose
    prior then says nothing about the task; that is what the control measures.

    ``fit_info()``: ``alpha`` (the one used), ``alpha_chosen_by`` (``user``, ``validation`` or
    ``default (...)``), ``alpha_search`` (per candidate: ``alpha``, ``val_loss``, the task's
    validation metric, ``drift``; only when chosen on validation), ``l2sp_distance``
    (``||w - w0||`` over the trained backbone), ``relative_drift`` (that over ``||w0||``),
    ``head_norm``.

    Options: :class:`L2SPParams`.
    """

    name = "l2sp"
    description = ("fine-tuning pulled towards the pre-trained weights (L2-SP, Li et al., ICML 2018), applied "
                   "decoupled from Adam, its strength chosen on the validation split")
    Params = L2SPParams

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._anchors: list[tuple[nn.Parameter, torch.Tensor]] = []
        self._head: nn.Module | None = None
        self._alpha_run = DEFAULT_ALPHA  # the alpha of the run in progress (a candidate, or the one chosen)
        self._hook = None

    # ----- the hooks of FineTune's one training loop ---------------------------------------------
    def _before_training(self, model: nn.ModuleDict, fit_ds: Dataset, val_ds: Dataset | None,
                         ctx: TransferContext) -> None:
        # Before any checkpoint is loaded: these are the weights the backbone was loaded with.
        self._anchors = [(p, p.detach().clone()) for p in model["backbone"].parameters() if p.requires_grad]
        self._head = model["head"]
        if self.penalty == "decoupled" and self._alpha_run > 0:
            start = {id(p): w0 for p, w0 in self._anchors}
            alpha = self._alpha_run

            # The optimizer is made after this hook; a global post-step hook sees every step it
            # takes (never a step skipped for a non-finite gradient or an fp16 overflow) with the
            # rate each group just used.  Optimizers holding none of these weights are left alone.
            def after_step(optimizer, args, kwargs) -> None:
                pull_towards(optimizer, start, alpha)

            self._hook = register_optimizer_step_post_hook(after_step)

    def penalty_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(||w - w0||^2, ||w_head||^2)`` of the run in progress (see :func:`l2sp_terms`)."""
        return l2sp_terms(self._anchors, self._head)

    def _extra_loss(self, model: nn.ModuleDict) -> torch.Tensor | None:
        if self.penalty != "loss":
            return None
        sp_sq, head_sq = self.penalty_terms()
        return self._alpha_run / 2 * sp_sq + self.beta / 2 * head_sq

    def _param_groups(self, groups, chosen: set[str], heads: list[nn.Linear],
                      scratch: float | None = None) -> tuple[list[dict], dict[str, float]]:
        out, rates = super()._param_groups(groups, chosen, heads, scratch)
        if self.penalty == "decoupled":  # the head's plain L2, decoupled as the pull is
            for g in out:
                if g["name"] == "head" and g["params"][0].ndim > 1:
                    g["weight_decay"] = self.beta
        return out, rates

    def _callbacks(self, model: nn.ModuleDict, groups, chosen: set[str],
                   evaluate: Callable[[], dict[str, float]] | None) -> list[Callback]:
        return [*super()._callbacks(model, groups, chosen, evaluate),
                LogDistance(self.penalty_terms, self._alpha_run, self.penalty == "loss")]

    def _run_config(self, train_ds: Dataset, runs, backbone) -> dict[str, Any]:
        # alpha may be null in the options: the checkpoints of each candidate carry the value it ran with
        return dict(super()._run_config(train_ds, runs, backbone), alpha_run=self._alpha_run)

    # ----- fitting ------------------------------------------------------------------------------
    def _fit(self, train_ds: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        if self.alpha is not None:
            self._alpha_run, how = float(self.alpha), "user"
        elif self.penalty == "loss":  # the grid is in the decoupled pull's units
            self._alpha_run, how = PAPER_ALPHA, "default (the paper's, penalty=loss)"
        elif self._joint is not None:
            self._alpha_run, how = DEFAULT_ALPHA, "default (joint fit of several tasks: no search)"
        else:
            _, val_idx = self._split(train_ds, dataclasses.replace(ctx, notes=[]))  # the split FineTune will make
            if val_idx is not None:
                self._search(train_ds, y, ctx, train_ds.subset(val_idx))
                return
            self._alpha_run, how = DEFAULT_ALPHA, "default (no validation split)"
        self._one_run(train_ds, y, ctx)
        self.info_.update(alpha=self._alpha_run, alpha_chosen_by=how)

    def _one_run(self, train_ds: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        """One fine-tuning with ``self._alpha_run``; adds the drift facts to ``info_``."""
        try:
            super()._fit(train_ds, y, ctx)
            with torch.no_grad():
                sp_sq, head_sq = self.penalty_terms()
                w0_sq = sum(float((w0.float() ** 2).sum()) for _, w0 in self._anchors)
            self.info_.update(penalty=self.penalty, l2sp_distance=float(sp_sq) ** 0.5,
                              relative_drift=(float(sp_sq) / w0_sq) ** 0.5 if w0_sq else 0.0,
                              head_norm=float(head_sq) ** 0.5)
        finally:  # the copy of w0 is as large as the trained part of the backbone: let it go
            if self._hook is not None:
                self._hook.remove()
            self._anchors, self._head, self._hook = [], None, None

    def _search(self, train_ds: Dataset, y: np.ndarray, ctx: TransferContext, val_ds: Dataset) -> None:
        """Fine-tune once per alpha of the grid from the same start; keep the run with the lowest
        validation loss (the first of equals: the weakest pull).  Each candidate checkpoints in a
        folder of its own (``alpha-<value>``), so an interrupted search resumes candidate by candidate."""
        backbone, module = ctx.backbone, ctx.backbone.module
        start = {k: v.detach().clone() for k, v in module.state_dict().items()}
        adapted, base_dir, n_notes = backbone.adapted, ctx.checkpoint_dir, len(ctx.notes)
        tried: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        try:
            for i, alpha in enumerate(self.alpha_grid):
                if i:  # every candidate starts from the loaded weights
                    module.load_state_dict(start)
                    backbone.adapted = adapted
                del ctx.notes[n_notes:]
                ctx.checkpoint_dir = None if base_dir is None else Path(base_dir) / f"alpha-{alpha:g}"
                self._alpha_run = float(alpha)
                self._one_run(train_ds, y, ctx)
                unit = self.task_head_
                scores = unit.scores(self._predict_outputs(val_ds, ctx), unit.encode(list(val_ds.labels)))
                tried.append({"alpha": float(alpha), **{f"val_{k}": float(v) for k, v in scores.items()},
                              "drift": self.info_["l2sp_distance"], "steps": self.info_["steps"]})
                if best is None or scores["loss"] < best["loss"]:
                    own = module.state_dict()
                    best = {"loss": scores["loss"], "alpha": float(alpha), "adapted": backbone.adapted,
                            "notes": ctx.notes[n_notes:],
                            "attrs": {k: v for k, v in vars(self).items() if k.endswith("_") and not
                                      k.startswith("_")},
                            "tensors": {k: own[k].detach().clone() for k in self.trained_names_}}
        finally:
            ctx.checkpoint_dir = base_dir
            del ctx.notes[n_notes:]
        own = module.state_dict()
        with torch.no_grad():  # the chosen run's weights and fitted attributes, as it left them
            for k, v in best["tensors"].items():
                own[k].copy_(v)
        for k, v in best["attrs"].items():
            setattr(self, k, v)
        backbone.adapted, self._alpha_run = best["adapted"], best["alpha"]
        ctx.notes.extend(best["notes"])
        grid = ", ".join(f"{a:g}" for a in self.alpha_grid)
        ctx.notes.append(f"{self.name}: alpha chosen on the validation split ({len(val_ds)} items) among {grid}: "
                         f"{best['alpha']:g} (validation loss {best['loss']:.4f}"
                         + ("; 0 is plain fine-tuning: the pull did not help here)" if best["alpha"] == 0 else ")"))
        self.info_ = dict(self.info_, alpha=best["alpha"], alpha_chosen_by="validation", alpha_search=tried)
