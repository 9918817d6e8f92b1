"""Controls: what the same data gives without transfer.

Every fit is compared with (a) the same strategy on the same architecture randomly
initialised (run by the pipeline with ``backbone.randomized()``), and (b) a classical
baseline of the modality, registered here.  A control gets the same care as the transfer:
features are scaled and the regularisation is chosen by the same cross-validation.  A straw
man would make every transfer look good.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._registry import Registry
from .data.dataset import Dataset
from .tasks.linear import fit_logistic, softmax

#: name -> ``fn(train, y_train, test, seed) -> (proba (N_test, C), info)``
BASELINES: Registry = Registry("baseline")

Baseline = Callable[[Dataset, np.ndarray, Dataset, int], tuple[np.ndarray, dict[str, Any]]]


def baseline_for(modality: str) -> str:
    for e in BASELINES:
        if e.meta["modality"] == modality:
            return e.name
    raise KeyError(modality)


@BASELINES.register("tfidf-logreg", modality="text",
                    summary="TF-IDF of word 1-2-grams + logistic regression, C by cross-validation")
def tfidf_logreg(train: Dataset, y: np.ndarray, test: Dataset, seed: int) -> tuple[np.ndarray, dict]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2 if len(train) >= 50 else 1,
                          max_features=200_000, dtype=np.float32)
    Xtr = vec.fit_transform(train.inputs)
    W, b, info = fit_logistic(Xtr, y, Cs=(1.0, 10.0, 100.0, 1000.0), cv=5, max_iter=3000, seed=seed, scale=False)
    info["vocabulary"] = len(vec.vocabulary_)
    return softmax(np.asarray(vec.transform(test.inputs) @ W.T) + b), info


def _pixels(ds: Dataset, side: int) -> np.ndarray:
    from .data import load_image

    rows = []
    for x in ds.inputs:
        im = load_image(x).convert("L").resize((side, side))
        rows.append(np.asarray(im, dtype=np.float32).ravel() / 255.0)
    return np.stack(rows)


@BASELINES.register("pixels-logreg", modality="image",
                    summary="raw grey pixels (at most 32x32) standardised + logistic regression, C by cross-validation")
def pixels_logreg(train: Dataset, y: np.ndarray, test: Dataset, seed: int) -> tuple[np.ndarray, dict]:
    from .data import load_image

    side = min(32, max(load_image(train.inputs[0]).size))
    W, b, info = fit_logistic(_pixels(train, side), y, Cs=(1e-3, 1e-2, 1e-1, 1.0, 10.0), cv=5, max_iter=3000,
                              seed=seed)
    info["side"] = side
    return softmax(_pixels(test, side) @ W.T + b), info


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


@BASELINES.register("spectrum-logreg", modality="audio",
                    summary="log band-energy statistics + logistic regression, C by cross-validation")
def spectrum_logreg(train: Dataset, y: np.ndarray, test: Dataset, seed: int) -> tuple[np.ndarray, dict]:
    W, b, info = fit_logistic(_band_stats(train), y, Cs=(1e-3, 1e-2, 1e-1, 1.0, 10.0), cv=5, max_iter=3000,
                              seed=seed)
    return softmax(_band_stats(test) @ W.T + b), info
