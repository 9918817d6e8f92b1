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
:func:`knn_regression`  features, targets ``(N,)``             leave-one-out k-NN mean, R²
:func:`knn_multilabel`  features, indicators ``(N, L)``        per-label k-NN, balanced accuracy
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
from .knn import knn_accuracy, knn_multilabel, knn_regression
from .leep_nce import leep, nce
from .logme import logme, logme_multilabel, logme_regression

__all__ = ["SCORES", "score", "score_for_task", "score_title", "score_about", "logme", "logme_regression",
           "logme_multilabel", "hscore", "knn_accuracy", "knn_regression", "knn_multilabel", "leep", "nce", "mmd",
           "proxy_a_distance", "domain_shift", "shift_reading", "MMDResult", "DomainShift"]

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


# The form of a score for each task other than classification (whose form is the registered
# function), its column title and its one-sentence meaning; a score missing here does not apply.
_FORMS: dict[str, dict[str, tuple[Callable[..., float], str, str]]] = {
    "logme": {
        "regression": (logme_regression, "LogME",
                       "evidence (per item) that a linear model on the features explains the standardised "
                       "target; compare models on the same data only"),
        "multi-label": (logme_multilabel, "LogME (label mean)",
                        "evidence (per item) that a linear model on the features explains each label's presence, "
                        "averaged over the labels; compare models on the same data only"),
    },
    "knn": {
        "regression": (knn_regression, "kNN R²",
                       "leave-one-out R² of predicting each target by the mean of its k most similar items "
                       "(cosine; k = 5 unless set): 1 is perfect, 0 is the mean predictor"),
        "multi-label": (knn_multilabel, "kNN balanced acc. (label mean)",
                        "leave-one-out balanced accuracy of a k-nearest-neighbour vote per label (cosine; k = 5 "
                        "unless set), averaged over the labels: 0.5 is chance"),
    },
}
_WHY_NOT = {
    "hscore": "the H-score compares class means with the feature covariance, and {what}",
    "leep": "LEEP predicts one target class per item through the source head's classes, and {what}",
    "nce": "NCE is the entropy of one target class per item given the source head's top class, and {what}",
}
_WHAT = {"regression": "a regression target has no classes",
         "multi-label": "a multi-label item carries several labels (LogME and kNN score each label instead)"}


def score_for_task(name: str, task: str = "classification") -> tuple[Callable[..., float] | None, str]:
    """``(function, "")`` computing score ``name`` for ``task``'s labels, or ``(None, why)`` where
    it does not apply.  The function takes the registered inputs (``labels`` are class labels,
    ``(N,)`` targets, or ``(N, L)`` 0/1 indicators, by task) and the score's keyword options.

    Raises:
        UserInputError: unknown score name (with "did you mean").
    """
    entry = SCORES.entry(name)
    if task == "classification":
        return entry.obj, ""
    form = _FORMS.get(name, {}).get(task)
    if form is not None:
        return form[0], ""
    why = _WHY_NOT.get(name, "{what}").format(what=_WHAT.get(task, f"it is defined for classification, not {task}"))
    return None, f"{entry.meta['title']} does not apply to {task}: {why}"


def score_title(name: str, task: str = "classification") -> str:
    """The score's column title for ``task`` (``"kNN R²"`` for regression's kNN)."""
    form = _FORMS.get(name, {}).get(task)
    return form[1] if form else SCORES.entry(name).meta["title"]


def score_about(name: str, task: str = "classification") -> str:
    """What the score means for ``task``, in one plain sentence."""
    form = _FORMS.get(name, {}).get(task)
    return form[2] if form else SCORES.entry(name).meta["about"]


def score(name: str, task: str = "classification", **inputs: Any) -> float:
    """Run a registered score on named inputs (``features``, ``labels``, ``source_probs``...), in
    its form for ``task`` (:func:`score_for_task`).

    ``source_labels`` is derived from ``source_probs`` when only the latter is given.

    Raises:
        UserInputError: unknown score name (with "did you mean").
        ValueError: an input the score needs is missing, or the score does not apply to the task.
    """
    entry = SCORES.entry(name)
    fn, why = score_for_task(name, task)
    if fn is None:
        raise ValueError(why)
    if "source_labels" not in inputs and inputs.get("source_probs") is not None:
        inputs["source_labels"] = np.asarray(inputs["source_probs"]).argmax(axis=1)
    missing = [k for k in entry.meta["inputs"] if inputs.get(k) is None]
    if missing:
        raise ValueError(f"score {name!r} needs {', '.join(missing)}")
    return float(fn(*(inputs[k] for k in entry.meta["inputs"])))
