"""Transferability scores and domain distances: pure functions of features and labels.

"Choose before you train": each score says, from frozen features (or a backbone's own source
head) and the target labels, how well a pre-trained model is likely to transfer, at the cost
of one feature extraction.  All are float64 and stay finite when N < D.

======================  ====================================  ==================================
function                inputs                                paper
======================  ====================================  ==================================
:func:`logme`           features ``(N, D)``, labels           You et al., JMLR 2022
:func:`hscore`          features, labels                      Bao et al. 2019; Ibrahim et al.,
                                                              ICLR 2022 (shrinkage)
:func:`knn_accuracy`    features, labels                      leave-one-out k-NN, cosine
:func:`leep`            source-head probabilities ``(N, C_s)``  Nguyen et al., ICML 2020
:func:`nce`             source-head argmax ``(N,)``, labels   Tran et al., ICCV 2019
:func:`mmd`             source ``(n, D)``, target ``(m, D)``   Gretton et al., JMLR 2012
:func:`proxy_a_distance`  source, target                     Ben-David et al., NIPS 2006
======================  ====================================  ==================================

:data:`SCORES` registers the transferability scores; its metadata says what each needs
(``inputs``), whether it needs a source head, and that higher is better, so
:func:`transferkit.ranking.rank` iterates over it.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._registry import Registry
from .domain import DomainShift, MMDResult, domain_shift, mmd, proxy_a_distance, shift_reading
from .hscore import hscore
from .knn import knn_accuracy
from .leep_nce import leep, nce
from .logme import logme

__all__ = ["SCORES", "score", "logme", "hscore", "knn_accuracy", "leep", "nce", "mmd", "proxy_a_distance",
           "domain_shift", "shift_reading", "MMDResult", "DomainShift"]

SCORES: Registry[Callable[..., float]] = Registry("score")
"""name -> score function; meta: ``inputs`` (argument names, in order), ``needs_source_head``,
``higher_is_better``, ``title``, ``about`` (one plain-words sentence)."""

SCORES.register(
    "logme", inputs=("features", "labels"), needs_source_head=False, higher_is_better=True, title="LogME",
    about="evidence (per item) that a linear model on the features explains the labels; "
          "compare models on the same data only")(logme)
SCORES.register(
    "hscore", inputs=("features", "labels"), needs_source_head=False, higher_is_better=True,
    title="H-score (shrinkage)",
    about="how far apart the class means are relative to the feature covariance (Ledoit-Wolf shrunk)")(hscore)
SCORES.register(
    "knn", inputs=("features", "labels"), needs_source_head=False, higher_is_better=True, title="kNN accuracy",
    about="leave-one-out accuracy of a k-nearest-neighbour vote with cosine similarity (k = 5 unless set)",
)(knn_accuracy)
SCORES.register(
    "leep", inputs=("source_probs", "labels"), needs_source_head=True, higher_is_better=True, title="LEEP",
    about="log-likelihood of the labels predicted through the source head's classes (<= 0)")(leep)
SCORES.register(
    "nce", inputs=("source_labels", "labels"), needs_source_head=True, higher_is_better=True, title="NCE",
    about="minus the entropy of the label given the source head's top class, in nats (<= 0)")(nce)


def score(name: str, **inputs: Any) -> float:
    """Run a registered score on named inputs (``features``, ``labels``, ``source_probs``...).

    ``source_labels`` is derived from ``source_probs`` when only the latter is given.

    Raises:
        UserInputError: unknown score name (with "did you mean").
        ValueError: an input the score needs is missing.
    """
    entry = SCORES.entry(name)
    if "source_labels" not in inputs and inputs.get("source_probs") is not None:
        inputs["source_labels"] = np.asarray(inputs["source_probs"]).argmax(axis=1)
    missing = [k for k in entry.meta["inputs"] if inputs.get(k) is None]
    if missing:
        raise ValueError(f"score {name!r} needs {', '.join(missing)}")
    return float(entry.obj(*(inputs[k] for k in entry.meta["inputs"])))
