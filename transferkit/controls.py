"""Controls: what the same data gives without transfer.

Every fit is compared with (a) the same strategy on the same architecture randomly
initialised (run by the pipeline with ``backbone.randomized()``), and (b) a classical
baseline of the modality, registered here.  A control gets the same care as the transfer:
features are scaled and the regularisation is chosen by the same cross-validation.  A straw
man would make every transfer look good.

Each baseline learns the task it is given on its classical features: classification a
(multinomial) logistic regression, regression a ridge regression (reported under the name in
its ``names`` metadata, ``tfidf-ridge`` for instance), multi-label one logistic regression per
label with per-label thresholds; all through the linear heads of :mod:`transferkit.tasks.linear`
that the linear probe uses, on the hand-made features of :mod:`transferkit.classical` (whose
``classical`` strategy is the same model, saved, for when it is the one delivered).
Regression also has the ``mean`` control, for any modality: the training mean for every item,
the floor every regression model must beat.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._registry import Registry
from .classical import fit_handmade_model
from .data.dataset import Dataset
from .series_features import dtw_1nn

#: name -> ``fn(train, y_train, test, seed, task="classification") -> (outputs, info)``, ``y_train``
#: encoded by the task and ``outputs`` the task's (:meth:`Strategy.predict_outputs` shapes), with
#: ``info["thresholds"]`` ``(L,)`` for multi-label.  A classification strategy fitted with a
#: ``class_weight`` passes the same ``(C,)`` weights as ``class_weight=`` (only then), so that the
#: control is weighted as the transfer is.  Metadata: ``modality`` (``"any"``: every one),
#: ``tasks`` it handles, ``names`` (task -> the name it is reported under, where the model differs),
#: ``standalone`` (not the modality's hand-made model, which the ``classical`` strategy also fits).
BASELINES: Registry = Registry("baseline")

Baseline = Callable[..., tuple[np.ndarray, dict[str, Any]]]

ALL_TASKS = ("classification", "regression", "multi-label")


def baseline_for(modality: str) -> str:
    """The classical baseline of ``modality`` (classification); ``KeyError`` where there is none."""
    for e in BASELINES:
        if e.meta["modality"] == modality:
            return e.name
    raise KeyError(modality)


def baselines_for(modality: str, task: str) -> list[str]:
    """The baselines that handle ``task`` on ``modality``: the modality's own first, then those
    for any modality (``mean`` for regression)."""
    own = [e.name for e in BASELINES if e.meta["modality"] == modality and task in e.meta["tasks"]]
    return own + [e.name for e in BASELINES if e.meta["modality"] == "any" and task in e.meta["tasks"]]


def control_name(baseline: str, task: str) -> str:
    """The name a baseline's control is reported under for ``task`` (``tfidf-logreg`` learns a
    ridge regression for regression, reported as ``tfidf-ridge``)."""
    return BASELINES.entry(baseline).meta.get("names", {}).get(task, baseline)


def _handmade(train: Dataset, y: np.ndarray, test: Dataset, seed: int, task: str,
              class_weight: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """The classical model of the modality (:func:`~transferkit.classical.fit_handmade_model`)
    fitted on ``train`` and applied to ``test``: ``(outputs, info)``, with ``info["thresholds"]``
    for multi-label.  ``test`` is only transformed, never consulted."""
    model = fit_handmade_model(task, train, y, seed, class_weight=class_weight)
    info = dict(model.info)
    if model.head.thresholds is not None:
        info["thresholds"] = np.asarray(model.head.thresholds, dtype=np.float64)
    return model.outputs(test), info


@BASELINES.register("tfidf-logreg", modality="text", tasks=ALL_TASKS, names={"regression": "tfidf-ridge"},
                    summary="TF-IDF of word 1-2-grams, plus character 2-5-grams where cross-validation on the "
                            "training items prefers them, + logistic regression (ridge for regression), "
                            "regularisation by cross-validation")
def tfidf_logreg(train: Dataset, y: np.ndarray, test: Dataset, seed: int,
                 task: str = "classification", class_weight: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """The text control, on whichever TF-IDF feature set scores better by cross-validation on
    ``train``; ``info["features"]`` names the set used, ``info["feature_selection"]`` holds both
    scores."""
    return _handmade(train, y, test, seed, task, class_weight)


@BASELINES.register("pixels-logreg", modality="image", tasks=ALL_TASKS, names={"regression": "pixels-ridge"},
                    summary="raw grey pixels (at most 32x32) standardised + logistic regression (ridge for "
                            "regression), regularisation by cross-validation")
def pixels_logreg(train: Dataset, y: np.ndarray, test: Dataset, seed: int,
                  task: str = "classification", class_weight: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    return _handmade(train, y, test, seed, task, class_weight)


@BASELINES.register("mfcc-logreg", modality="audio", tasks=ALL_TASKS, names={"regression": "mfcc-ridge"},
                    summary="log-mel + MFCC + delta statistics (mean, std over time) standardised + logistic "
                            "regression (ridge for regression), regularisation by cross-validation")
def mfcc_logreg(train: Dataset, y: np.ndarray, test: Dataset, seed: int,
                    task: str = "classification", class_weight: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    return _handmade(train, y, test, seed, task, class_weight)


@BASELINES.register("rocket-logreg", modality="timeseries", tasks=ALL_TASKS, names={"regression": "rocket-ridge"},
                    summary="ROCKET random convolutional kernels (1,000; PPV + max) standardised + logistic "
                            "regression (ridge for regression), regularisation by cross-validation")
def rocket_logreg(train: Dataset, y: np.ndarray, test: Dataset, seed: int,
                  task: str = "classification", class_weight: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    return _handmade(train, y, test, seed, task, class_weight)


@BASELINES.register("dtw-1nn", modality="timeseries", tasks=("classification",), standalone=True,
                    summary="1-nearest neighbour under dynamic time warping (Sakoe-Chiba band 10%), "
                            "z-normalised series")
def dtw_1nn_control(train: Dataset, y: np.ndarray, test: Dataset, seed: int,
                    task: str = "classification", class_weight: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """One-hot ``(N_test, C)`` of the nearest training series' class (no parameters to fit, no
    class weights: a neighbour has one class)."""
    n_classes = int(max(y)) + 1 if len(y) else 0
    return dtw_1nn(list(train.inputs), np.asarray(y), list(test.inputs), n_classes), {"features": "DTW distance"}


@BASELINES.register("mean", modality="any", tasks=("regression",),
                    summary="the training items' mean target, predicted for every item (regression)")
def mean_target(train: Dataset, y: np.ndarray, test: Dataset, seed: int,
                task: str = "regression") -> tuple[np.ndarray, dict]:
    """``(N_test,)`` copies of the mean of ``y (N_train,)``: the control with no features at all."""
    if task != "regression":
        raise ValueError(f"the mean control is for regression, not {task}")
    mean = float(np.mean(y))
    return np.full(len(test), mean), {"mean": mean}
