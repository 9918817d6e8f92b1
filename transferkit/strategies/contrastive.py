"""``contrastive``: SetFit-style contrastive tuning of the encoder, then a logistic head.

Tunstall, Reimers, Jo, Bates, Korat, Wasserblat & Pereg, "Efficient Few-Shot Learning
Without Prompts" (SetFit), 2022: with few labels, first fine-tune the sentence encoder on
pairs of training items - same class: cosine target 1, different classes: target 0, mean
squared error (sentence-transformers' ``CosineSimilarityLoss``) - so that the classes pull
apart in embedding space; then fit a logistic regression on the tuned embeddings.

By default (``pairs="in-batch"``) a step embeds a batch of items once and trains on every
pair among them: SetFit embeds both sides of each pair, so it computes up to two forward
passes per pair where this computes ``2 / (B - 1)``.  With ``pairs="sampled"``, SetFit's own
scheme: pairs are never materialised: pair ``i`` is drawn from a generator seeded by ``(seed, i)``
(anchor ``i // 2 mod N``; even ``i`` a positive partner, odd ``i`` a negative one), so memory
is O(batch) whatever ``num_pairs`` is (SetFit's own generation is O(num_pairs); all pairs would
be O(N^2)), and a resumed run draws exactly the pairs the uninterrupted one would.  Training
goes through the one loop (:func:`transferkit.training.train`): checkpoints, exact resume,
clipping and the non-finite guard come from there.

Imbalanced classes (``class_weight``): the logistic head is fitted with the class weights, as the
probe's; the pair loss weighs each pair by the product of its two items' class weights
(:func:`pair_weights`).  In-batch pairs are pairs of items drawn alike from the training set, so
with ``balanced`` weights every pair of classes then counts as much as it would if the classes
were equally frequent (a rare class's positive pairs are otherwise rarer still: the square of its
share); sampled pairs choose the partner by class, so there the same weights correct only roughly.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones.base import Backbone
from ..data.dataset import Dataset
from ..errors import UserInputError
from ..training import make_scheduler, plan_steps, train, trainable_state
from ..training.optim import adamw
from ..training.schedules import SCHEDULES
from ._tuning import decayed_groups, mark_adapted, training_only
from .base import STRATEGIES, Strategy, TransferContext
from .params import Params, fraction_or_steps, param
from .probe import check_class_weight, fit_logistic, linear_head, loss_weights, softmax

PAIRINGS = ("in-batch", "sampled")


def _pairs_of(n: int) -> int:
    return n * (n - 1) // 2


def pair_weights(ya: torch.Tensor, yb: torch.Tensor, class_weight: torch.Tensor | None) -> torch.Tensor | None:
    """``(P,)`` weight of each pair ``(ya[i], yb[i])`` of class indices: the product of the two
    classes' weights; ``None`` without class weights (every pair once)."""
    if class_weight is None:
        return None
    return class_weight[ya] * class_weight[yb]


def _weighted_mean(err: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    return err.mean() if w is None else (err * w).sum() / w.sum()


class PairSampler:
    """Pair ``i`` of ``num_pairs``, computed on demand: ``(anchor, partner, target)``.

    Args:
        y: ``(N,)`` int labels. Memory: the labels and one index array per class, O(N).
        seed: with ``i``, seeds the partner's draw.
    """

    def __init__(self, y: np.ndarray, seed: int):
        self.y, self.seed = np.asarray(y), seed
        self.members = [np.flatnonzero(self.y == c) for c in range(int(self.y.max()) + 1)]

    def __call__(self, i: int) -> tuple[int, int, float]:
        n = len(self.y)
        a = (i // 2) % n
        rng = np.random.default_rng([self.seed, i])
        same = self.members[self.y[a]]
        if i % 2 == 0:  # positive: another item of the anchor's class (itself if it is alone)
            others = same[same != a]
            return a, int(others[rng.integers(len(others))]) if len(others) else a, 1.0
        while True:  # negative: uniform over items of other classes (rejection: ~C/(C-1) draws)
            b = int(rng.integers(n))
            if self.y[b] != self.y[a]:
                return a, b, 0.0

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``anchors (B,)``, ``partners (B,)``, ``targets (B,)`` float32 for pair indices ``idx``."""
        rows = [self(int(i)) for i in idx]
        return (np.array([r[0] for r in rows]), np.array([r[1] for r in rows]),
                np.array([r[2] for r in rows], dtype=np.float32))


@contextmanager
def _max_chunks(backbone: Backbone, k: int | None) -> Iterator[None]:
    """Texts cut to their first ``k`` windows inside the block (SetFit truncates at 256 tokens)."""
    old = getattr(backbone, "max_chunks", None)
    if k is None or old is None:
        yield
        return
    backbone.max_chunks = k
    try:
        yield
    finally:
        backbone.max_chunks = old


@dataclass
class ContrastiveParams(Params):
    """Options of ``contrastive``."""

    pairs: str = param("in-batch", "in-batch: every pair among a batch of items embedded once (B(B-1)/2 pairs "
                                   "for B passes); sampled: SetFit's 2 N R streamed pairs per epoch",
                       choices=PAIRINGS)
    num_iterations: int = param(10, "SetFit's R: with sampled, pairs per item and kind; with in-batch, passes "
                                    "over the items", ge=1)
    epochs: int = param(1, "passes over all of that", ge=1)
    # 1e-4 with 10 in-batch passes matched the SetFit package's accuracy on spam with 8 labels per
    # class in a fraction of its training time (BENCHMARKS.md, section adapt).
    lr: float = param(1e-4, "learning rate of the encoder (SetFit: 2e-5 over more pair-steps)", gt=0, lt=1)
    batch_size: int = param(16, "items (in-batch) or pairs (sampled) per step", ge=1)
    unfreeze: Literal["all"] | int = param("all", "'all' or the number K of last layer groups that train", ge=1)
    train_max_chunks: int | None = param(1, "text windows per item during tuning (1: the first max_length tokens, "
                                            "as SetFit); the head embeds whole texts", ge=1)
    weight_decay: float = param(0.01, "AdamW decay on weight matrices", ge=0)
    warmup: float | int = param(0.1, "warm-up share of the steps (below 1) or number of steps", check=fraction_or_steps)
    schedule: str = param("cosine", "learning-rate schedule", choices=SCHEDULES)
    clip: float | None = param(1.0, "largest gradient norm (null: no clipping)", gt=0)
    max_steps: int | None = param(None, "stop after this many optimizer steps", ge=1)
    Cs: list[float] = param([1e-2, 1e-1, 1.0, 10.0], "the head's inverse L2 strengths, one chosen by "
                                                      "cross-validation as the probe's", gt=0)
    cv: int = param(5, "folds of that cross-validation", ge=2)
    checkpoint_every: int | None = param(None, "checkpoint every N steps as well as at each epoch end", ge=1)
    keep_last: int = param(2, "checkpoints kept", ge=1)
    precision: str = param("auto", "auto (mixed precision on CUDA), fp32, bf16 or fp16",
                           choices=("auto", "fp32", "bf16", "fp16"))
    nonfinite: str = param("stop", "on a NaN/inf loss: stop, or skip such batches and count them",
                           choices=("stop", "skip"))
    class_weight: Literal["balanced"] | dict | None = param(
        None, "weight of each class (null | balanced | {\"class\": weight}): the logistic head's loss, and each "
              "pair of the contrastive loss by the product of its two items' weights; the controls get the same",
        check=check_class_weight)


@STRATEGIES.register("contrastive", needs="backbone")
class ContrastiveTuning(Strategy):
    """Contrastive few-shot tuning of the encoder plus a logistic head.

    Data: labelled items (text above all: it is SetFit's setting; any modality works).
    Shapes: pair batch ``(B,)`` indices -> features of both sides ``(B, D)`` -> cosine ``(B,)``
    -> MSE against 1 (same class) / 0; afterwards tuned features ``(N, D)`` -> head ``(C, D)``.
    With ``pairs="in-batch"`` the loss averages positives and negatives with equal weight and
    memory is O(B^2) whatever the data size.  Options: :class:`ContrastiveParams`.
    """

    name = "contrastive"
    description = ("SetFit: contrastive tuning of the encoder on same/different-class pairs (cosine loss), then "
                   "logistic regression on the tuned embeddings (Tunstall et al. 2022)")
    Params = ContrastiveParams
    uses_features = False

    @property
    def tunes_backbone(self) -> bool:
        return True

    # ----- fitting ---------------------------------------------------------------------------
    def num_pairs(self, n_items: int) -> int:
        """Pairs seen over training: ``sampled``: ``2 N R`` per epoch; ``in-batch``: every pair of
        each batch of items, ``R`` passes over the items per epoch."""
        if self.pairs == "sampled":
            return 2 * n_items * self.num_iterations * self.epochs
        full, rest = divmod(n_items, min(self.batch_size, n_items))
        per_pass = full * _pairs_of(min(self.batch_size, n_items)) + _pairs_of(rest)
        return per_pass * self.num_iterations * self.epochs

    def _units(self, n_items: int) -> tuple[int, int]:
        """``(units per epoch, epochs)`` of the loop: pair indices (sampled) or item indices (in-batch)."""
        if self.pairs == "sampled":
            return 2 * n_items * self.num_iterations, self.epochs
        return n_items, self.num_iterations * self.epochs

    def _fit(self, train_ds: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        backbone, device = ctx.backbone, torch.device(ctx.device)
        module = backbone.module.to(device)
        sampler = PairSampler(y, ctx.seed)
        weights = loss_weights(self, y, ctx)  # (C,) or None
        w_t = None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=device)
        n_pairs = self.num_pairs(len(train_ds))
        n_units, epochs = self._units(len(train_ds))
        y_t = torch.as_tensor(y, device=device)
        with training_only(backbone, train_ds.inputs[:2], device, self.unfreeze) as (chosen, params):
            optimizer = adamw(decayed_groups(params, self.weight_decay), lr=self.lr)
            _, total = plan_steps(n_units, batch_size=self.batch_size, epochs=epochs, max_steps=self.max_steps)
            scheduler = make_scheduler(optimizer, self.schedule, total, warmup=self.warmup)

            def in_batch_step(idx: np.ndarray) -> torch.Tensor:
                feats = backbone.forward_features(backbone.prepare([train_ds.inputs[i] for i in idx]).to(device))
                z = F.normalize(feats.float(), dim=1)
                iu = torch.triu_indices(len(idx), len(idx), 1, device=device)
                if iu.shape[1] == 0:  # a lone item at an epoch's end: no pair, no gradient
                    return feats.sum() * 0.0
                cos = (z[iu[0]] * z[iu[1]]).sum(1)
                yb = y_t[torch.as_tensor(idx, device=device)]
                same = (yb[iu[0]] == yb[iu[1]])
                err = (cos - same.float()) ** 2
                w = pair_weights(yb[iu[0]], yb[iu[1]], w_t)
                # positives and negatives weigh the same, whatever their counts in the batch
                parts = [_weighted_mean(err[m], None if w is None else w[m]) for m in (same, ~same) if m.any()]
                return torch.stack(parts).mean()

            def training_step(idx: np.ndarray) -> torch.Tensor:
                a, b, target = sampler.batch(idx)
                uniq, inv = np.unique(np.concatenate([a, b]), return_inverse=True)  # each item embedded once
                feats = backbone.forward_features(backbone.prepare([train_ds.inputs[i] for i in uniq]).to(device))
                inv = torch.as_tensor(inv, device=device)
                cos = F.cosine_similarity(feats[inv[:len(a)]].float(), feats[inv[len(a):]].float(), dim=1)
                if w_t is None:
                    return F.mse_loss(cos, torch.as_tensor(target, device=device))
                w = pair_weights(y_t[torch.as_tensor(a, device=device)], y_t[torch.as_tensor(b, device=device)], w_t)
                return _weighted_mean((cos - torch.as_tensor(target, device=device)) ** 2, w)

            ckpt = getattr(ctx, "checkpoint_dir", None)
            params_cfg = {k: v for k, v in self.get_params().items() if k not in ("checkpoint_every", "keep_last")}
            run_config = {"strategy": self.name, "params": params_cfg, "backbone": backbone.identity(),
                          "data": train_ds.fingerprint(), "classes": self.classes_}
            with _max_chunks(backbone, self.train_max_chunks):
                step = training_step if self.pairs == "sampled" else in_batch_step
                state = train(module, step, n_units, optimizer, scheduler=scheduler, epochs=epochs,
                              max_steps=self.max_steps, batch_size=self.batch_size, clip=self.clip, seed=ctx.seed,
                              nonfinite=self.nonfinite, checkpoint_dir=Path(ckpt) if ckpt else None,
                              checkpoint_every=self.checkpoint_every, keep_last=self.keep_last,
                              resume=getattr(ctx, "resume", True), run_config=run_config,
                              precision=self.precision, progress=ctx.progress, desc=f"{self.name} {backbone.name}")
            self.trained_names_ = sorted(trainable_state(module))
        self.backbone_ = backbone
        mark_adapted(backbone, self._backbone_tensors())  # tuned features get a cache key of their own
        X = ctx.features(train_ds)
        W, b, head_info = fit_logistic(X, y, Cs=tuple(float(c) for c in self.Cs), cv=self.cv, max_iter=2000,
                                       seed=ctx.seed, class_weight=weights)
        self.head_weight_, self.head_bias_ = W.astype(np.float32), b.astype(np.float32)
        self.info_ = {"n_pairs": n_pairs, "steps": state.step, "total_steps": state.total_steps,
                      "resumed_from": state.resumed_from, "history": state.history,
                      "trained_groups": [n for n, _ in chosen], "head": head_info}
        if weights is not None:
            self.info_["class_weight"] = [float(v) for v in weights]

    def _backbone_tensors(self) -> dict[str, torch.Tensor]:
        own = self.backbone_.module.state_dict()
        return {f"backbone.{k}": own[k].detach().cpu().clone() for k in self.trained_names_}

    def _predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        X = ctx.features(data).astype(np.float64)
        return softmax(X @ self.head_weight_.T.astype(np.float64) + self.head_bias_)

    def torch_head(self) -> torch.nn.Module:
        self._check_fitted()
        return linear_head(self.head_weight_, self.head_bias_)

    # ----- persistence -------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """``backbone.<name>`` for every tuned tensor, and the head ``(C, D)``, ``(C,)``."""
        self._check_fitted()
        return {**self._backbone_tensors(), "head.weight": torch.from_numpy(self.head_weight_),
                "head.bias": torch.from_numpy(self.head_bias_)}

    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str],
                   backbone: Backbone, task: str = "classification") -> "ContrastiveTuning":
        """Apply the tuned encoder tensors to the freshly loaded pre-trained ``backbone``."""
        sub = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
        own = backbone.module.state_dict()
        bad = [k for k, v in sub.items() if k not in own or own[k].shape != v.shape]
        if bad or "head.weight" not in tensors:
            raise UserInputError(f"the saved contrastive state does not fit backbone {backbone.name!r}: "
                                 f"{', '.join(bad[:5]) or 'no head'}",
                                 hint="load the run with the backbone (and options) it was trained with")
        W = tensors["head.weight"].numpy()
        if W.shape != (len(classes), backbone.num_features):
            raise UserInputError(f"the saved head has shape {W.shape}, expected ({len(classes)}, "
                                 f"{backbone.num_features})")
        with torch.no_grad():
            for k, v in sub.items():
                own[k].copy_(v)
        backbone.module.eval()
        self.backbone_, self.trained_names_ = backbone, sorted(sub)
        mark_adapted(backbone, self._backbone_tensors())
        self.head_weight_, self.head_bias_ = W, tensors["head.bias"].numpy()
        return self._restored(classes, task)
