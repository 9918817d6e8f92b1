"""``protonet``: episodic fine-tuning of the encoder (prototypical networks), then prototypes.

Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017: train the
encoder over many small N-way K-shot episodes drawn from the training classes: in each, the
prototypes are the means of the K support embeddings per class, and the loss is the cross-entropy
of the query items' softmax over their similarities to the prototypes.  The encoder learns an
embedding in which class means separate, which is what the nearest-prototype classifier then uses:
after training, the ``prototype`` strategy (:class:`~.prototype.Prototype`: SimpleShot's centred,
L2-normalised class means, cosine) is fitted on the tuned encoder's features of all training items,
so classes added later from a few examples need no retraining.

Similarity: cosine / ``episode_temperature`` (the prototype head's measure, so training and
prediction agree) rather than the paper's squared Euclidean distance.  Episodes are the loop's
"items": episode ``i`` is drawn from a generator seeded by ``(seed, i)`` (classes without
replacement, then support and query items of each class), so a resumed run draws exactly the
episodes the uninterrupted one would; training goes through the one loop (checkpoints, clipping,
non-finite guard).  A class with fewer than two items cannot give a support and a query item and
sits out the episodes (it still gets its prototype).  Chen et al. (2019, "A Closer Look at Few-shot
Classification") found a fine-tuned baseline competitive with episodic training: compare with
``prototype`` on the untouched encoder and with ``finetune``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones.base import Backbone
from ..data.dataset import Dataset
from ..errors import UserInputError
from ..training import train, trainable_state
from ..training.optim import adamw
from ._network import apply_tensors, backbone_tensors
from ._tuning import decayed_groups, mark_adapted, training_only
from .base import STRATEGIES, TransferContext
from .contrastive import _max_chunks
from .params import param
from .prototype import Prototype, PrototypeParams


@dataclass
class ProtoNetParams(PrototypeParams):
    """Options of ``protonet``: the episodes, the encoder's training, and the prototype head's."""

    n_way: int = param(5, "classes per episode (fewer when the training data has fewer)", ge=2)
    k_shot: int = param(5, "support items per class and episode (fewer when a class has fewer)", ge=1)
    n_query: int = param(5, "query items per class and episode", ge=1)
    episodes: int = param(100, "episodes (optimizer steps) of training", ge=1)
    lr: float = param(1e-4, "learning rate of the encoder", gt=0, lt=1)
    episode_temperature: float = param(0.1, "divides the cosines to the prototypes in the episode loss", gt=0)
    unfreeze: Literal["all"] | int = param("all", "'all' or the number K of last layer groups that train", ge=1)
    train_max_chunks: int | None = param(1, "text windows per item during episodes (the head embeds whole texts)",
                                         ge=1)
    weight_decay: float = param(0.01, "AdamW decay on weight matrices", ge=0)
    clip: float | None = param(1.0, "largest gradient norm (null: no clipping)", gt=0)
    checkpoint_every: int | None = param(None, "checkpoint every N episodes as well as at the end", ge=1)
    nonfinite: str = param("stop", "on a NaN/inf loss: stop, or skip such episodes and count them",
                           choices=("stop", "skip"))


class EpisodeSampler:
    """Episode ``i``: ``(support, query)`` item indices ``(n, k)`` and ``(n, q)`` lists per chosen class.

    Args:
        y: ``(N,)`` int labels; only classes with at least two items take part.
    """

    def __init__(self, y: np.ndarray, n_way: int, k_shot: int, n_query: int, seed: int):
        self.members = [np.flatnonzero(y == c) for c in range(int(y.max()) + 1)]
        self.eligible = [c for c, m in enumerate(self.members) if len(m) >= 2]
        self.n_way, self.k_shot, self.n_query, self.seed = min(n_way, len(self.eligible)), k_shot, n_query, seed

    def __call__(self, i: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        rng = np.random.default_rng([self.seed, i])
        classes = rng.choice(self.eligible, self.n_way, replace=False)
        support, query = [], []
        for c in classes:
            m = rng.permutation(self.members[c])
            k = min(self.k_shot, len(m) - 1)  # at least one query item
            support.append(m[:k])
            query.append(m[k:k + self.n_query])
        return support, query


def episode_loss(feats: torch.Tensor, n_support: list[int], n_query: list[int], temperature: float) -> torch.Tensor:
    """Prototypical loss of one episode.

    Shapes: ``feats (S + Q, D)``: the support items of class 0, 1, ... then the query items in the
    same class order; ``n_support[j]``, ``n_query[j]`` items of class j -> scalar mean CE of the queries.
    """
    z = F.normalize(feats.float(), dim=1)
    s, q = z[:sum(n_support)], z[sum(n_support):]
    protos = F.normalize(torch.stack([part.mean(0) for part in torch.split(s, n_support)]), dim=1)
    target = torch.repeat_interleave(torch.arange(len(n_query), device=z.device),
                                     torch.as_tensor(n_query, device=z.device))
    return F.cross_entropy(q @ protos.T / temperature, target)


@STRATEGIES.register("protonet", needs="backbone")
class ProtoNet(Prototype):
    """Episodic fine-tuning of the encoder, then the nearest-prototype classifier on it.

    Data: labelled items of any modality, at least two classes with two items each.
    Shapes: episode -> ``(n_way (k_shot + n_query), D)`` features -> prototypes ``(n_way, D)`` ->
    query logits ``(n_way n_query, n_way)``; afterwards as ``prototype``.  Options:
    :class:`ProtoNetParams`.
    """

    name = "protonet"
    description = ("prototypical networks: the encoder fine-tuned over N-way K-shot episodes, then nearest class "
                   "mean by cosine (Snell et al. 2017)")
    Params = ProtoNetParams
    uses_features = False

    @property
    def tunes_backbone(self) -> bool:
        return True

    def _fit(self, train_ds: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        backbone, device = ctx.backbone, torch.device(ctx.device)
        sampler = EpisodeSampler(y, self.n_way, self.k_shot, self.n_query, ctx.seed)
        if len(sampler.eligible) < 2:
            raise UserInputError("protonet needs at least two classes with two or more training items each "
                                 "(a support and a query item per class)",
                                 hint="give more labelled items, or use --strategy prototype")
        module = backbone.module.to(device)
        with training_only(backbone, train_ds.inputs[:2], device, self.unfreeze) as (chosen, params):
            optimizer = adamw(decayed_groups(params, self.weight_decay), lr=self.lr)

            def step(idx: np.ndarray) -> torch.Tensor:
                support, query = sampler(int(idx[0]))
                order = np.concatenate(support + query)
                feats = backbone.forward_features(backbone.prepare([train_ds.inputs[i] for i in order]).to(device))
                return episode_loss(feats, [len(s) for s in support], [len(q) for q in query],
                                    self.episode_temperature)

            ckpt = getattr(ctx, "checkpoint_dir", None)
            run_config = {"strategy": self.name, "params": {k: v for k, v in self.get_params().items()
                                                            if k != "checkpoint_every"},
                          "backbone": backbone.identity(), "data": train_ds.fingerprint(), "classes": self.classes_}
            with _max_chunks(backbone, self.train_max_chunks):
                state = train(module, step, self.episodes, optimizer, epochs=1, batch_size=1, clip=self.clip,
                              seed=ctx.seed, nonfinite=self.nonfinite, checkpoint_dir=Path(ckpt) if ckpt else None,
                              checkpoint_every=self.checkpoint_every, resume=getattr(ctx, "resume", True),
                              run_config=run_config, progress=ctx.progress, desc=f"{self.name} {backbone.name}")
            self.trained_names_ = sorted(trainable_state(module))
        self.backbone_ = backbone
        mark_adapted(backbone, backbone_tensors(backbone, self.trained_names_))  # tuned features: a key of their own
        super()._fit(train_ds, y, ctx)  # the prototypes, on the tuned encoder's features
        self.info_.update(episodes=state.step, n_way=sampler.n_way, history=state.history,
                          trained_groups=[n for n, _ in chosen])

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """``backbone.<name>`` for every tuned tensor, and the prototype head's tensors."""
        return {**backbone_tensors(self.backbone_, self.trained_names_), **super().state_tensors()}

    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str], backbone: Backbone,
                   task: str = "classification") -> "ProtoNet":
        """Put the tuned encoder tensors into the freshly loaded pre-trained ``backbone``, then the head."""
        self.backbone_ = backbone
        self.trained_names_ = apply_tensors(backbone, tensors, self.name)
        return super().load_state({k: v for k, v in tensors.items() if not k.startswith("backbone.")}, classes,
                                  backbone, task)
