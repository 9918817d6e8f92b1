"""Source-free adaptation objectives of SHOT: information maximisation and self-supervised
pseudo-labels from class centroids in feature space.

Liang, Hu & Feng, "Do We Really Need to Access the Source Data? Source Hypothesis Transfer for
Unsupervised Domain Adaptation", ICML 2020.  The source hypothesis (the classifier head) is
frozen and the feature extractor is trained on unlabelled target items so that its outputs are

* individually certain (low entropy of each item's prediction) and globally diverse (high
  entropy of the mean prediction: not every item in one class) - :func:`information_maximization`;
* consistent with pseudo-labels that come from the target's own cluster structure rather than
  from the (shifted) classifier alone - :func:`centroid_pseudo_labels`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

_EPS = 1e-5  # SHOT's epsilon inside the logarithms


def information_maximization(logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """SHOT's information-maximisation loss of a batch of class logits ``(B, C)``.

    ``L_IM = mean_i H(p_i) - H(mean_i p_i)``: the mean per-item entropy (minimised: confident
    predictions) minus the entropy of the batch's mean prediction (maximised: the classes stay
    diverse, which rules out the trivial solution of putting every item in one class).  It lies
    in ``[-log C, log C]``; ``-log C`` is reached by one-hot predictions spread evenly over the
    classes.  Equation (2) of Liang et al. (2020), with their ``1e-5`` inside the logarithms.

    Returns:
        the scalar loss (differentiable) and ``{"entropy", "diversity"}``: the two terms as floats
        (``diversity`` is ``H(mean p)``, the term that is subtracted).
    """
    p = F.softmax(logits.float(), dim=1)
    ent = -(p * torch.log(p + _EPS)).sum(1).mean()
    mean = p.mean(0)
    div = -(mean * torch.log(mean + _EPS)).sum()
    return ent - div, {"entropy": float(ent.detach()), "diversity": float(div.detach())}


def _cosine_rows(features: np.ndarray) -> np.ndarray:
    """SHOT's feature space for the centroids: a constant 1 appended to each row, then each row
    scaled to unit length (so cosine distance is one minus a dot product)."""
    f = np.hstack([np.asarray(features, np.float64), np.ones((len(features), 1))])
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def _nearest(f: np.ndarray, weights: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The class (from ``classes``) whose weighted centroid is nearest each row of ``f`` by cosine
    distance; ``weights (N, C)`` weighs each item's share of each class's centroid."""
    centroids = weights.T @ f / (1e-8 + weights.sum(0)[:, None])  # (C, D+1)
    c = centroids[classes]
    # nearest by cosine distance = largest cosine; the rows of f are unit length, the centroids are not
    cos = f @ c.T / np.maximum(np.linalg.norm(c, axis=1), 1e-12)[None, :]
    return classes[np.argmax(cos, axis=1)]


def centroid_pseudo_labels(features: np.ndarray, proba: np.ndarray,
                           rounds: int = 1) -> tuple[np.ndarray, dict[str, Any]]:
    """SHOT's self-supervised pseudo-labels of unlabelled target items.

    Args:
        features: ``(N, D)`` the items' features under the current feature extractor.
        proba: ``(N, C)`` the frozen head's class probabilities of those features.
        rounds: refinements with hard centroids after the first, soft one (SHOT: 1).

    Each class's centroid is the mean of the items' features weighted by their predicted
    probability of the class (equation (4) of Liang et al.), each item takes the class of the
    nearest centroid by cosine distance (5); then, ``rounds`` times, the centroids are the means
    of the items so labelled and the items are labelled again (6).  Only classes that the head
    predicts for at least one item take part (a class no item is predicted as has no cluster).

    Returns:
        ``(N,)`` int class indices, and ``{"changed_from_head", "classes_used", "agreement_rounds"}``:
        the share of items whose pseudo-label differs from the head's argmax, how many classes
        took part, and per refinement round the share of labels that stayed.
    """
    proba = np.asarray(proba, np.float64)
    if proba.ndim != 2 or len(proba) != len(features):
        raise ValueError(f"proba must be (N, C) for the {len(features)} feature rows, got {proba.shape}")
    f = _cosine_rows(features)
    head = proba.argmax(1)
    used = np.flatnonzero(np.bincount(head, minlength=proba.shape[1]) > 0)
    labels = _nearest(f, proba, used)
    stayed = []
    for _ in range(max(0, int(rounds))):
        new = _nearest(f, np.eye(proba.shape[1])[labels], used)
        stayed.append(float(np.mean(new == labels)))
        labels = new
    return labels.astype(np.int64), {"changed_from_head": float(np.mean(labels != head)),
                                     "classes_used": int(len(used)), "agreement_rounds": stayed}
