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
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones.base import Backbone
from ..data.dataset import Dataset
from ..errors import UserInputError
from ..training import make_scheduler, plan_steps, train, trainable_state
from ..training.schedules import SCHEDULES
from ..training.optim import adamw
from ._tuning import mark_adapted, used_layer_groups
from .base import STRATEGIES, Strategy, TransferContext
from .probe import fit_logistic, linear_head, softmax


PAIRINGS = ("in-batch", "sampled")


def _pairs_of(n: int) -> int:
    return n * (n - 1) // 2


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


@STRATEGIES.register("contrastive", needs="backbone",
                     summary="SetFit: contrastive tuning of the encoder on streamed same/different-class pairs "
                             "(cosine loss), then logistic regression on the tuned embeddings")
class ContrastiveTuning(Strategy):
    """Contrastive few-shot tuning of the encoder plus a logistic head.

    Data: labelled items (text above all: it is SetFit's setting; any modality works).
    Shapes: pair batch ``(B,)`` indices -> features of both sides ``(B, D)`` -> cosine ``(B,)``
    -> MSE against 1 (same class) / 0; afterwards tuned features ``(N, D)`` -> head ``(C, D)``.

    Args:
        pairs: ``"in-batch"`` (default): each step embeds a batch of ``batch_size`` items once
            and uses every pair among them (``B (B - 1) / 2`` pairs for ``B`` forward passes;
            the loss averages positives and negatives with equal weight), ``num_iterations``
            passes over the items; memory O(B^2), whatever the data size.  ``"sampled"``:
            SetFit's scheme, ``2 N R`` streamed pairs per epoch, ``batch_size`` pairs per step.
        num_iterations: SetFit's R: with ``sampled``, pairs per training item and kind
            (``2 * N * R`` pairs); with ``in-batch``, passes over the items.
        epochs: passes over all of that.
        lr: learning rate of the encoder (SetFit: 2e-5 over ~2.5x more pair-steps).  1e-4 with 10
            in-batch passes: on spam with 8 labels per class, 0.891 ± 0.016 over 5 seeds against
            the SetFit package's 0.884 ± 0.035 over 3, in 114 s of training against 728 s, side
            by side (BENCHMARKS.md, section adapt).
        batch_size: pairs per step.
        unfreeze: ``"all"`` or the number K of last layer groups that train.
        train_max_chunks: text windows per item during tuning (1: the first ``max_length``
            tokens, as SetFit); the head and predictions embed whole texts as usual.
        weight_decay, warmup, schedule, clip: AdamW decay on matrices, warm-up share or steps,
            learning-rate schedule (``cosine``...), gradient-norm clipping.
        max_steps: stop after this many optimizer steps.
        Cs, cv: the head's logistic regression, C chosen by cross-validation as the probe.
        checkpoint_every, keep_last, precision, nonfinite: as for ``finetune``.
    """

    name = "contrastive"
    uses_features = False

    def __init__(self, *, pairs: str = "in-batch", num_iterations: int = 10, epochs: int = 1, lr: float = 1e-4,
                 batch_size: int = 16,
                 unfreeze: str | int = "all", train_max_chunks: int | None = 1, weight_decay: float = 0.01,
                 warmup: float = 0.1, schedule: str = "cosine", clip: float | None = 1.0,
                 max_steps: int | None = None, Cs: tuple[float, ...] | list[float] = (1e-2, 1e-1, 1.0, 10.0),
                 cv: int = 5, checkpoint_every: int | None = None, keep_last: int = 2, precision: str = "auto",
                 nonfinite: str = "stop"):
        super().__init__()
        self.pairs = pairs
        self.num_iterations, self.epochs, self.lr, self.batch_size = num_iterations, epochs, lr, batch_size
        self.unfreeze, self.train_max_chunks, self.weight_decay = unfreeze, train_max_chunks, weight_decay
        self.warmup, self.schedule, self.clip, self.max_steps = warmup, schedule, clip, max_steps
        self.Cs = list(Cs) if isinstance(Cs, (list, tuple)) else Cs
        self.cv, self.checkpoint_every, self.keep_last = cv, checkpoint_every, keep_last
        self.precision, self.nonfinite = precision, nonfinite
        self._validate()

    def _validate(self) -> None:
        def pos_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= 1

        if self.pairs not in PAIRINGS:
            raise UserInputError(f"pairs must be one of {', '.join(PAIRINGS)}, got {self.pairs!r}",
                                 hint="in-batch: every pair of the items in a batch (default); sampled: SetFit's "
                                      "streamed pairs")
        for k in ("num_iterations", "epochs", "batch_size", "keep_last"):
            if not pos_int(getattr(self, k)):
                raise UserInputError(f"{k} must be a positive integer, got {getattr(self, k)!r}")
        for k in ("max_steps", "checkpoint_every", "train_max_chunks"):
            if getattr(self, k) is not None and not pos_int(getattr(self, k)):
                raise UserInputError(f"{k} must be a positive integer or null, got {getattr(self, k)!r}")
        if not isinstance(self.lr, (int, float)) or not 0 < self.lr < 1:
            raise UserInputError(f"lr must be a number in (0, 1), got {self.lr!r}", hint="1e-4 by default; SetFit uses 2e-5 with more steps")
        u = self.unfreeze
        if u != "all" and not (isinstance(u, int) and not isinstance(u, bool) and u >= 1):
            raise UserInputError(f"unfreeze must be 'all' or a number of last layer groups >= 1, got {u!r}")
        if self.schedule not in SCHEDULES:
            raise UserInputError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise UserInputError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.clip is not None and (not isinstance(self.clip, (int, float)) or self.clip <= 0):
            raise UserInputError(f"clip must be a positive number or null, got {self.clip!r}")
        if not isinstance(self.Cs, list) or not self.Cs or not all(
                isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0 for c in self.Cs):
            raise UserInputError(f"Cs must be a non-empty list of positive numbers, got {self.Cs!r}")
        if not pos_int(self.cv) or self.cv < 2:
            raise UserInputError(f"cv must be an integer >= 2, got {self.cv!r}")
        if self.nonfinite not in ("stop", "skip"):
            raise UserInputError(f"nonfinite must be 'stop' or 'skip', got {self.nonfinite!r}")

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
        n_pairs = self.num_pairs(len(train_ds))
        n_units, epochs = self._units(len(train_ds))
        y_t = torch.as_tensor(y, device=device)
        groups, _ = used_layer_groups(backbone, train_ds.inputs[:2], device)
        chosen = groups if self.unfreeze == "all" else groups[-self.unfreeze:]
        flags = {p: p.requires_grad for p in module.parameters()}
        try:
            for p in module.parameters():
                p.requires_grad_(False)
            params = [p for _, ps in chosen for p in ps]
            for p in params:
                p.requires_grad_(True)
            optimizer = adamw(
                [{"params": [p for p in params if p.ndim > 1], "weight_decay": self.weight_decay},
                 {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}], lr=self.lr)
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
                # positives and negatives weigh the same, whatever their counts in the batch
                parts = [err[m].mean() for m in (same, ~same) if m.any()]
                return torch.stack(parts).mean()

            def training_step(idx: np.ndarray) -> torch.Tensor:
                a, b, target = sampler.batch(idx)
                uniq, inv = np.unique(np.concatenate([a, b]), return_inverse=True)  # each item embedded once
                feats = backbone.forward_features(backbone.prepare([train_ds.inputs[i] for i in uniq]).to(device))
                inv = torch.as_tensor(inv, device=device)
                cos = F.cosine_similarity(feats[inv[:len(a)]].float(), feats[inv[len(a):]].float(), dim=1)
                return F.mse_loss(cos, torch.as_tensor(target, device=device))

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
        finally:
            for p, flag in flags.items():
                p.requires_grad_(flag)
            module.eval()
        self.backbone_ = backbone
        mark_adapted(backbone, self._backbone_tensors())  # tuned features get a cache key of their own
        X = ctx.features(train_ds)
        W, b, head_info = fit_logistic(X, y, Cs=tuple(float(c) for c in self.Cs), cv=self.cv, max_iter=2000,
                                       seed=ctx.seed)
        self.head_weight_, self.head_bias_ = W.astype(np.float32), b.astype(np.float32)
        self.info_ = {"n_pairs": n_pairs, "steps": state.step, "total_steps": state.total_steps,
                      "resumed_from": state.resumed_from, "history": state.history,
                      "trained_groups": [n for n, _ in chosen], "head": head_info}

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
                   backbone: Backbone) -> "ContrastiveTuning":
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
        return self._restored(classes)
