"""``self-training``: iterated, class-balanced pseudo-labelling of the unlabelled target.

Class-balanced self-training (Zou, Yu, Kumar & Wang, "Unsupervised Domain Adaptation for
Semantic Segmentation via Class-Balanced Self-Training", ECCV 2018), on cached features: a
source-only adapter + head labels the target; in round r of R, each class takes at most
``max_portion * r / R * m / C`` of the target items predicted as it (so a class the source
model favours cannot swamp the others), most confident first and only above ``threshold``;
a fresh model (same seed) is trained on the source plus these pseudo-labelled items, and
labels the target for the next round.  Retraining from scratch each round, rather than
continuing, keeps early wrong pseudo-labels from compounding in the weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ._adapt import AdaptationParams, FeatureAdaptation, FeatureAdapter
from .base import STRATEGIES
from .params import param
from .probe import CLASS_WEIGHT_HELP, check_class_weight


@dataclass
class SelfTrainingParams(AdaptationParams):
    """:class:`AdaptationParams` plus the pseudo-labelling schedule; cached features only."""

    on: str = param("features", "self-training adapts on cached features only (dann, mmd and coral can adapt "
                                "the backbone)", choices=("features",))
    threshold: float | list[float] = param([0.5, 0.8, 0.95], "least confidence (max probability) of a pseudo-label, "
                                                             "or candidates chosen by selection", ge=0, lt=1)
    rounds: int = param(3, "pseudo-labelling rounds (0: source-only)", ge=0)
    max_portion: float = param(0.6, "share of the target pseudo-labelled in the last round (per class, of m / C); "
                                    "earlier rounds take proportionally less", gt=0, le=1)
    class_weight: Literal["balanced"] | dict | None = param(
        None, CLASS_WEIGHT_HELP + "; the weights come from the labelled source items and weigh every item of a "
                                  "class in the loss, source and pseudo-labelled alike (the pseudo-labels are "
                                  "class-balanced by their quota already)", check=check_class_weight)


@STRATEGIES.register("self-training", needs="features", target=True)
class SelfTraining(FeatureAdaptation):
    """Self-training on target pseudo-labels.

    Shapes: source ``(n, D)`` + selected target ``(k, D)`` features with (pseudo-)labels ->
    adapter ``(., H)`` -> head ``(., C)``.  Options: :class:`SelfTrainingParams`.
    """

    name = "self-training"
    description = ("iterated class-balanced pseudo-labels of the unlabelled target above a confidence threshold, "
                   "adapter + head on cached features (Zou et al., ECCV 2018)")
    Params = SelfTrainingParams
    knob = "threshold"

    # classification only: a pseudo-label is the class the model is most confident of
    classification_only_because = ("self-training pseudo-labels target items with their most confident class, "
                                   "which a {task} target does not have")

    def _source_only_params(self) -> dict[str, Any]:
        return {"rounds": 0}

    def _train_candidate(self, Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray | None, value: float,
                         seed: int) -> tuple[FeatureAdapter, dict[str, Any]]:
        stats = (Xs.mean(0), Xs.std(0) + 1e-6)  # source statistics in every round
        model = self._train_adapter(Xs, ys, None, 0.0, seed, stats)
        per_round: list[dict[str, Any]] = []
        if Xt is None:
            return model, {"rounds": per_round}
        n_classes = len(self.classes_)
        for r in range(1, self.rounds + 1):
            proba = self._proba(model, Xt)
            conf, pred = proba.max(1), proba.argmax(1)
            quota = int(self.max_portion * r / self.rounds * len(Xt) / n_classes)
            chosen = []
            for c in range(n_classes):
                idx = np.flatnonzero((pred == c) & (conf >= value))
                chosen.append(idx[np.argsort(-conf[idx], kind="stable")][:quota])
            sel = np.sort(np.concatenate(chosen))
            per_round.append({"round": r, "selected": int(len(sel)),
                              "per_class": [int(len(ch)) for ch in chosen], "quota_per_class": quota})
            if not len(sel):
                break
            model = self._train_adapter(np.concatenate([Xs, Xt[sel]]), np.concatenate([ys, pred[sel]]), None, 0.0,
                                        seed, stats)
        return model, {"rounds": per_round}
