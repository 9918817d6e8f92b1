"""``shot``: source hypothesis transfer (Liang, Hu & Feng, "Do We Really Need to Access the Source
Data? Source Hypothesis Transfer for Unsupervised Domain Adaptation", ICML 2020).

The source hypothesis is the linear probe fitted on the labelled source items' features
(:class:`~.probe.LinearProbe`).  It is then frozen, and the backbone's last ``unfreeze`` layer
groups (SHOT's feature extractor) train on unlabelled target items alone, minimising

    ``L = L_IM + beta * CE(logits, pseudo-labels)``

where ``L_IM`` is the information-maximisation loss (mean item entropy minus the entropy of the
batch's mean prediction: confident and diverse predictions,
:func:`~transferkit.alignment.information_maximization`) and the pseudo-labels come from the
target's own clusters: class centroids in feature space weighted by the head's probabilities,
cosine distance, one refinement with hard centroids
(:func:`~transferkit.alignment.centroid_pseudo_labels`), recomputed before every epoch.  The
paper's weight ``beta = 0.3`` is the default.  The source data is needed only to fit the head:
``transferkit update RUN --target-unlabelled T --strategy shot`` runs the same adaptation on a
finished run's backbone and head, without any source item (:func:`shot_adapt`).

Departures from the paper, for a CPU: the head is the probe on the pre-trained features (the
paper trains a bottleneck, a weight-normalised classifier and label smoothing on the source);
the target is a seeded subset of at most ``max_items`` items; a few epochs (``epochs``; the
paper runs 15 to 30); SGD's momentum restarts with each epoch (each epoch is one run of the
training loop, between two pseudo-labellings); and by default (``statistics="source"``) the
BatchNorm layers keep the running statistics the head was fitted under, and only the weights
train.  The paper's way (``statistics="target"``: batch statistics while training, running
statistics re-estimated on the target subset after each epoch) moved the features away from
the frozen probe before any weight had changed: on MNIST -> inverted MNIST it fell from 0.766 to
0.53, and to 0.34 with a learning rate ten times smaller, where keeping the statistics rose to
0.846 (measured below).  A head trained with the feature extractor, as the paper's, is used to
the statistics moving; a probe fitted once on frozen features is not.

Cost: per epoch, one forward pass over the subset (pseudo-labels), one forward and backward pass
through the trained groups per batch.  Classification only (class probabilities); other tasks
are refused with the strategies that handle them.

Measured (2026-12-07, EfficientNet-Lite0 at 96 px, 1000 MNIST-5k source items, 500 target items
given unlabelled and scored as the test set, defaults: 256 of them adapted on, 3 epochs; a 2-core
CPU shared with other jobs, so times are high; accuracy with 95% bootstrap intervals):

====================  ====================  ============================  ======================
shift                 source-only probe     shot (fit time, total)        paper's statistics
====================  ====================  ============================  ======================
MNIST -> inverted     0.766 [0.728, 0.802]  0.846 [0.814, 0.876], 247 s   0.530
MNIST -> sk digits    0.378 [0.336, 0.422]  0.536 [0.496, 0.578], 143 s   0.326
====================  ====================  ============================  ======================

``transferkit update`` from the source-only run gives the same accuracies (the same head and the
same seeded adaptation): gains over the parent +0.080 [+0.044, +0.114] and +0.158 [+0.120, +0.196].
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..alignment import centroid_pseudo_labels, information_maximization
from ..backbones.base import Backbone
from ..data.dataset import Dataset, item_hash
from ..tasks.linear import softmax
from ._network import AdaptRun, HeadNetwork, adapt, bounded_subset, changed_names, select_parameters
from ._tuning import mark_adapted
from .base import STRATEGIES, TransferContext
from .params import Params, param
from .probe import LinearProbe, ProbeParams, linear_head
from .tent import Tent, TentOptions


@dataclass
class ShotOptions(Params):
    """How SHOT adapts the backbone (at fit time, and in ``transferkit update``)."""

    unfreeze: int = param(2, "how many last layer groups of the backbone adapt (SHOT's feature extractor; the "
                             "head stays fixed)", ge=1)
    beta: float = param(0.3, "weight of the pseudo-label cross-entropy (the paper's 0.3); 0: information "
                             "maximisation alone", ge=0)
    epochs: int = param(3, "passes over the target items; the pseudo-labels are recomputed before each", ge=1)
    max_items: int = param(256, "target items adapted on at most (a seeded random subset of larger data)", ge=2)
    batch_size: int = param(32, "target items per step (the diversity term reads each batch's mean prediction)",
                            ge=2)
    optimizer: str = param("sgd", "sgd (momentum 0.9, as the paper) or adam", choices=("sgd", "adam"))
    lr: float = param(1e-3, "learning rate of the adapted layer groups (the paper's backbone rate: 1e-3)",
                      gt=0, lt=1)
    statistics: str = param("source", "BatchNorm statistics of the adapted groups: source (kept as the head was "
                                      "fitted under; only weights train) or target (as the paper: batch statistics "
                                      "while training, re-estimated on the target items after each epoch)",
                            choices=("source", "target"))


@dataclass
class ShotParams(ProbeParams, ShotOptions):
    """Options of ``shot``: the source probe's and SHOT's."""


class _PseudoLabelled(HeadNetwork):
    """The network, and the pseudo-label of each item of the batch it last ran on (``rows (B,)``,
    -1 for an item without one), found by the item's content hash: the training loop hands the
    target loss features and logits, not item indices."""

    def __init__(self, backbone: Backbone, head: torch.nn.Module, device, target: Dataset):
        super().__init__(backbone, head, device)
        self._row = {h: i for i, h in enumerate(target.content_hashes())}
        self.labels: np.ndarray | None = None
        self.batch_labels: torch.Tensor | None = None

    def forward(self, items: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.labels is not None:
            rows = [self._row.get(item_hash(x, self.backbone.modality), -1) for x in items]
            self.batch_labels = torch.as_tensor([self.labels[r] if r >= 0 else -1 for r in rows],
                                                device=self.device)
        return super().forward(items)

    def features_and_proba(self, data: Dataset, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(N, D)`` features and ``(N, C)`` head probabilities of ``data``, eval mode, no gradient."""
        was = self.body.training
        self.body.eval()
        feats, logits = [], []
        try:
            with torch.no_grad():
                for s in range(0, len(data), batch_size):
                    f, z = super().forward(data.inputs[s:s + batch_size])
                    feats.append(f.cpu().numpy())
                    logits.append(z.cpu().numpy())
        finally:
            self.body.train(was)
        return np.concatenate(feats), softmax(np.concatenate(logits).astype(np.float64))


def shot_adapt(backbone: Backbone, head: torch.nn.Module, target: Dataset, options: dict[str, Any], device, *,
               seed: int = 0, checkpoint_dir: str | Path | None = None, resume: bool = True,
               progress: bool | None = False) -> tuple[list[str], dict[str, Any]]:
    """SHOT on ``target`` (already bounded: :func:`~._network.bounded_subset`): the last
    ``options["unfreeze"]`` layer groups of ``backbone`` train under the fixed ``head`` (``(N, D)``
    features -> ``(N, C)`` logits) on information maximisation + ``beta`` x pseudo-label
    cross-entropy, ``epochs`` times: pseudo-label every item, then one pass of the training loop.

    Returns:
        the trained parameters' names (``state_dict`` keys) and the facts of the run: per epoch
        the mean loss, the pseudo-labels' share changed from the head's argmax, and the mean
        information-maximisation terms on the subset before and after.
    """
    network = _PseudoLabelled(backbone, head, device, target)
    names, params, groups = select_parameters(backbone, int(options["unfreeze"]), target.inputs, device)
    beta = float(options["beta"])
    batch = max(2, min(int(options["batch_size"]), len(target)))
    per_epoch = -(-len(target) // batch)

    def loss(_features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        im, _ = information_maximization(logits)
        if not beta:
            return im
        y = network.batch_labels
        return im + beta * F.cross_entropy(logits.float(), y, ignore_index=-1)

    epochs: list[dict[str, Any]] = []
    steps = 0
    for e in range(int(options["epochs"])):
        network.labels = None
        feats, proba = network.features_and_proba(target, batch)
        network.labels, facts = centroid_pseudo_labels(feats, proba)
        run: AdaptRun = adapt(
            network, target, loss, params, optimizer=options["optimizer"], lr=float(options["lr"]), steps=per_epoch,
            batch_size=batch, seed=seed + e, batch_statistics=options["statistics"] == "target",
            checkpoint_dir=None if checkpoint_dir is None else
            Path(checkpoint_dir) / f"epoch-{e}", resume=resume, run_config={"strategy": "shot", "epoch": e, **options},
            progress=progress, desc=f"shot epoch {e + 1}")
        steps += run.steps
        epochs.append({"loss": run.losses[-1] if run.losses else None, "im": _im(proba),
                       "pseudo_labels_changed_from_head": facts["changed_from_head"],
                       "classes_used": facts["classes_used"]})
    network.labels = None
    _, proba = network.features_and_proba(target, batch)
    return names, {"steps": steps, "n_target_used": len(target), "trained_groups": groups,
                   "parameters": len(names), "epochs": epochs, "im_before": epochs[0]["im"], "im_after": _im(proba)}


def _im(proba: np.ndarray) -> float:
    """The information-maximisation loss of probabilities ``(N, C)`` over the whole set."""
    z = torch.as_tensor(np.log(np.clip(proba, 1e-12, 1.0)))
    return float(information_maximization(z)[0])


@STRATEGIES.register("shot", needs="backbone", target=True)
class Shot(Tent):
    """:class:`LinearProbe` on source features, then SHOT on the target: the backbone's last layer
    groups learn confident, diverse, cluster-consistent predictions of the frozen head.

    Data: labelled source items, unlabelled target items in ``ctx.target`` (without them it is the
    plain linear probe, and says so).  Shapes: features ``(N, D)`` -> head ``(C, D)``; the run
    also holds every adapted tensor ``backbone.<name>`` of the trained layer groups (weights and
    their BatchNorm layers' re-estimated statistics).  Options: :class:`ShotParams`.

    A probe whose backbone adapted to the target, saved and loaded as :class:`~.tent.Tent`'s
    (the head, and the changed backbone tensors put back onto the pre-trained backbone), with
    the same source-only comparison (the plain probe); only the adaptation differs.  At use
    time (``predict --tent``) a shot run adapts by TENT with TENT's default options.
    """

    name = "shot"
    description = ("SHOT (Liang et al. 2020): the linear probe is frozen as the source hypothesis; the backbone's "
                   "last layer groups train on the unlabelled target by information maximisation and centroid "
                   "pseudo-labels; needs --target-unlabelled (source-free: transferkit update)")
    Params = ShotParams

    def shot_options(self) -> dict[str, Any]:
        """SHOT's own options (:class:`ShotOptions`), as :func:`shot_adapt` takes them."""
        return {k: getattr(self, k) for k in ShotOptions.names()}

    def options(self) -> dict[str, Any]:
        """TENT's default options: what ``predict --tent`` / ``serve --tent`` adapt a shot run with
        (SHOT's own options are not TENT's)."""
        return TentOptions().as_dict()

    def _fit(self, train: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        LinearProbe._fit(self, train, y, ctx)  # the source hypothesis: the probe on pre-trained features
        self.backbone_, self.tuned_names_ = None, []
        target = getattr(ctx, "target", None)
        if target is None or not len(target):
            ctx.notes.append("shot: no unlabelled target data was given, so this is the plain linear probe.")
            self.info_.update(adapted=False)
            return
        subset = bounded_subset(target, self.max_items, ctx.seed)
        names, facts = shot_adapt(ctx.backbone, linear_head(self.head_weight_, self.head_bias_), subset,
                                  self.shot_options(), ctx.device, seed=ctx.seed, checkpoint_dir=ctx.checkpoint_dir,
                                  resume=ctx.resume, progress=ctx.progress)
        self.backbone_, self.tuned_names_ = ctx.backbone, changed_names(ctx.backbone, names)
        mark_adapted(ctx.backbone, self._backbone_tensors())  # adapted features get a cache key of their own
        self.info_.update(adapted=True, n_target=len(target), **facts)
        ctx.notes.append(f"shot: the last {self.unfreeze} layer groups ({', '.join(facts['trained_groups'])}) adapted "
                         f"on {len(subset)} of the {len(target)} unlabelled target items ({facts['steps']} steps over "
                         f"{self.epochs} epochs); information-maximisation loss on them {facts['im_before']:.3f} -> "
                         f"{facts['im_after']:.3f} (the model is for the target domain).")
