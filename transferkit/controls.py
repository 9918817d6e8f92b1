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
that the linear probe uses.  Regression also has the ``mean`` control, for any modality: the
training mean for every item, the floor every regression model must beat.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._registry import Registry
from .data.dataset import Dataset
from .tasks.linear import fit_linear, fit_logistic, linear_outputs, softmax

#: name -> ``fn(train, y_train, test, seed, task="classification") -> (outputs, info)``, ``y_train``
#: encoded by the task and ``outputs`` the task's (:meth:`Strategy.predict_outputs` shapes), with
#: ``info["thresholds"]`` ``(L,)`` for multi-label.  A classification strategy fitted with a
#: ``class_weight`` passes the same ``(C,)`` weights as ``class_weight=`` (only then), so that the
#: control is weighted as the transfer is.  Metadata: ``modality`` (``"any"``: every one),
#: ``tasks`` it handles, ``names`` (task -> the name it is reported under, where the model differs).
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


def _linear(task: str, Xtr, y: np.ndarray, Xte, seed: int, *, Cs: tuple[float, ...], scale: bool = True,
            max_iter: int = 3000, class_weight: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The task's linear head on classical features ``Xtr (N, D)`` (dense, or sparse with
    ``scale=False``), applied to ``Xte``: classification the logistic regression as before
    tasks existed (``Cs`` by CV, each class weighted by ``class_weight (C,)`` if given),
    regression ridge (its own alpha grid by CV), multi-label one logistic regression per label
    (``Cs`` by CV) with thresholds in ``info["thresholds"]``."""
    if task == "classification":
        W, b, info = fit_logistic(Xtr, y, Cs=Cs, cv=5, max_iter=max_iter, seed=seed, scale=scale,
                                  class_weight=class_weight)
        return softmax(np.asarray(Xte @ W.T) + b), info
    options: dict[str, Any] = {} if task == "regression" else {"Cs": Cs, "cv": 5, "max_iter": max_iter}
    fit = fit_linear(task, Xtr, y, seed=seed, scale=scale, **options)
    info = dict(fit.info)
    if fit.thresholds is not None:
        info["thresholds"] = np.asarray(fit.thresholds, dtype=np.float64)
    return linear_outputs(task, Xte, fit), info


@BASELINES.register("tfidf-logreg", modality="text", tasks=ALL_TASKS, names={"regression": "tfidf-ridge"},
                    summary="TF-IDF of word 1-2-grams + logistic regression (ridge for regression), "
                            "regularisation by cross-validation")
def tfidf_logreg(train: Dataset, y: np.ndarray, test: Dataset, seed: int,
                 task: str = "classification", class_weight: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2 if len(train) >= 50 else 1,
                          max_features=200_000, dtype=np.float32)
    try:
        Xtr = vec.fit_transform(train.inputs)
    except ValueError:  # no term occurs twice (single words, ids): keep every term rather than fail
        vec.set_params(min_df=1)
        Xtr = vec.fit_transform(train.inputs)
    out, info = _linear(task, Xtr, y, vec.transform(test.inputs), seed, Cs=(1.0, 10.0, 100.0, 1000.0), scale=False,
                        class_weight=class_weight)
    info["vocabulary"] = len(vec.vocabulary_)
    return out, info


def _pixels(ds: Dataset, side: int) -> np.ndarray:
    from .data import load_image

    rows = []
    for x in ds.inputs:
        im = load_image(x).convert("L").resize((side, side))
        rows.append(np.asarray(im, dtype=np.float32).ravel() / 255.0)
    return np.stack(rows)


@BASELINES.register("pixels-logreg", modality="image", tasks=ALL_TASKS, names={"regression": "pixels-ridge"},
                    summary="raw grey pixels (at most 32x32) standardised + logistic regression (ridge for "
                            "regression), regularisation by cross-validation")
def pixels_logreg(train: Dataset, y: np.ndarray, test: Dataset, seed: int,
                  task: str = "classification", class_weight: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    from .data import load_image

    side = min(32, max(load_image(train.inputs[0]).size))
    out, info = _linear(task, _pixels(train, side), y, _pixels(test, side), seed, Cs=(1e-3, 1e-2, 1e-1, 1.0, 10.0),
                        class_weight=class_weight)
    info["side"] = side
    return out, info


def _band_stats(ds: Dataset, sr: int = 16000, n_bands: int = 40) -> np.ndarray:
    """Mean and std over time of log energies in linear frequency bands: ``(N, 2 * n_bands)``."""
    from .data import load_audio

    rows = []
    for x in ds.inputs:
        w, rate = load_audio(x, sr)
        frame, hop = int(0.025 * rate), int(0.010 * rate)
        if len(w) < frame:
            w = np.pad(w, (0, frame - len(w)))
        n = 1 + (len(w) - frame) // hop
        frames = np.stack([w[i * hop:i * hop + frame] for i in range(n)]) * np.hanning(frame)
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        bands = np.log(np.stack([b.sum(1) for b in np.array_split(power, n_bands, axis=1)], 1) + 1e-10)
        rows.append(np.concatenate([bands.mean(0), bands.std(0)]))
    return np.stack(rows)


@BASELINES.register("spectrum-logreg", modality="audio", tasks=ALL_TASKS, names={"regression": "spectrum-ridge"},
                    summary="log band-energy statistics + logistic regression (ridge for regression), "
                            "regularisation by cross-validation")
def spectrum_logreg(train: Dataset, y: np.ndarray, test: Dataset, seed: int,
                    task: str = "classification", class_weight: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    return _linear(task, _band_stats(train), y, _band_stats(test), seed, Cs=(1e-3, 1e-2, 1e-1, 1.0, 10.0),
                   class_weight=class_weight)


@BASELINES.register("mean", modality="any", tasks=("regression",),
                    summary="the training items' mean target, predicted for every item (regression)")
def mean_target(train: Dataset, y: np.ndarray, test: Dataset, seed: int,
                task: str = "regression") -> tuple[np.ndarray, dict]:
    """``(N_test,)`` copies of the mean of ``y (N_train,)``: the control with no features at all."""
    if task != "regression":
        raise ValueError(f"the mean control is for regression, not {task}")
    mean = float(np.mean(y))
    return np.full(len(test), mean), {"mean": mean}
