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

import contextlib
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


def _head(task: str, Xtr, y: np.ndarray, seed: int, *, Cs: tuple[float, ...], scale: bool = True,
          max_iter: int = 3000, class_weight: np.ndarray | None = None
          ) -> tuple[Callable[[Any], np.ndarray], dict[str, Any]]:
    """The task's linear head on classical features ``Xtr (N, D)`` (dense, or sparse with
    ``scale=False``): classification the logistic regression as before tasks existed (``Cs`` by
    CV, each class weighted by ``class_weight (C,)`` if given), regression ridge (its own alpha
    grid by CV), multi-label one logistic regression per label (``Cs`` by CV; each label's
    positives weighted by ``class_weight (L,)`` if given) with thresholds in ``info["thresholds"]``.
    Returns ``(outputs, info)``: ``outputs(X (M, D))`` gives the task's outputs on other items."""
    if task == "classification":
        W, b, info = fit_logistic(Xtr, y, Cs=Cs, cv=5, max_iter=max_iter, seed=seed, scale=scale,
                                  class_weight=class_weight)
        return (lambda X: softmax(np.asarray(X @ W.T) + b)), info
    options: dict[str, Any] = {} if task == "regression" else {"Cs": Cs, "cv": 5, "max_iter": max_iter,
                                                               "class_weight": class_weight}
    fit = fit_linear(task, Xtr, y, seed=seed, scale=scale, **options)
    info = dict(fit.info)
    if fit.thresholds is not None:
        info["thresholds"] = np.asarray(fit.thresholds, dtype=np.float64)
    return (lambda X: linear_outputs(task, X, fit)), info


def _linear(task: str, Xtr, y: np.ndarray, Xte, seed: int, **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`_head` fitted on ``Xtr (N, D)`` and applied to ``Xte (M, D)``: ``(outputs, info)``."""
    outputs, info = _head(task, Xtr, y, seed, **options)
    return outputs(Xte), info


#: The two feature sets the text control chooses between, by cross-validation on its training items.
WORDS = "word 1-2-grams"
WORDS_CHARS = "word 1-2-grams + char 2-5-grams"
#: Character n-grams are read from each text's first ``CHAR_PREFIX`` characters: the whole of a
#: short text (a word, a name, a title, a post), where they matter most, while on long documents,
#: whose words the word n-grams already cover in full, the cap bounds the cost (scikit-learn's
#: character analyser is pure Python: ~40 s for the whole of 6,000 e-mails, ~10 s for 500
#: characters of each, on a loaded 2-core machine).  At most ``CHAR_FEATURES`` n-grams, the most
#: frequent.
CHAR_PREFIX = 500
CHAR_FEATURES = 50_000


def _tfidf(texts: list[str], **options: Any):
    """A fitted sublinear-tf ``TfidfVectorizer`` and its ``(N, V)`` sparse matrix of ``texts``.

    A term must occur in two texts (from 50 texts on): one seen once says nothing about another
    item.  Where no term occurs twice (single words, ids), every term is kept rather than fail."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(sublinear_tf=True, min_df=2 if len(texts) >= 50 else 1, dtype=np.float32, **options)
    try:
        return vec, vec.fit_transform(texts)
    except ValueError:
        vec.set_params(min_df=1)
        return vec, vec.fit_transform(texts)


def _cv_score(task: str, info: dict[str, Any]) -> float | None:
    """The best cross-validation score of a fitted head (higher is better), from its ``info``:
    classification the mean validation log-likelihood, regression the leave-one-out R², multi-label
    minus the per-label validation log-loss averaged over the labels; ``None`` where the head
    had too few items to cross-validate."""
    if task == "classification":
        scores = info.get("cv_neg_log_loss")
        return float(max(scores)) if scores else None
    if task == "regression":
        return float(info["cv_r2"])
    losses = [min(e["cv_log_loss"]) for e in info["labels"] if "cv_log_loss" in e]
    return -float(np.mean(losses)) if losses else None


_CV_METRIC = {"classification": "mean validation log-likelihood (stratified 5-fold)",
              "regression": "R² (leave-one-out)",
              "multi-label": "minus the mean per-label validation log-loss (stratified 5-fold)"}


@BASELINES.register("tfidf-logreg", modality="text", tasks=ALL_TASKS, names={"regression": "tfidf-ridge"},
                    summary="TF-IDF of word 1-2-grams, plus character 2-5-grams where cross-validation on the "
                            "training items prefers them, + logistic regression (ridge for regression), "
                            "regularisation by cross-validation")
def tfidf_logreg(train: Dataset, y: np.ndarray, test: Dataset, seed: int,
                 task: str = "classification", class_weight: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """The text control, on whichever feature set scores better by cross-validation on ``train``.

    Word n-grams alone make a straw man of short texts: an unseen single word shares no term
    with any training word, and the control predicts the mean (measured on the VADER lexicon:
    RMSE 1.703, the mean's, against 1.36 with character n-grams).  Both candidate sets go through
    the task's head with the same folds, and the better best-CV score wins (ties, or too few
    items to cross-validate: words alone, the simpler set).  ``test`` is only transformed, never
    consulted.  ``info["features"]`` names the set used, ``info["feature_selection"]`` holds
    both scores."""
    from scipy.sparse import hstack
    from threadpoolctl import threadpool_limits

    texts = [str(x) for x in train.inputs]
    words, Xw = _tfidf(texts, ngram_range=(1, 2), max_features=200_000)
    chars, Xc = _tfidf([t[:CHAR_PREFIX] for t in texts], analyzer="char_wb", ngram_range=(2, 5),
                       max_features=CHAR_FEATURES)
    options = {"Cs": (1.0, 10.0, 100.0, 1000.0), "scale": False, "class_weight": class_weight}
    # The logistic fits on sparse TF-IDF run sparse products and small dense vector operations,
    # for which BLAS threads are pure overhead: one thread halved this control's time on 800
    # e-mails on 2 cores (bench_cache).  Ridge (regression) eigen-decomposes a dense n x n
    # matrix, which the threads do speed up, so it keeps them.
    limit = threadpool_limits(limits=1, user_api="blas") if task != "regression" else contextlib.nullcontext()
    with limit:
        heads = {WORDS: _head(task, Xw, y, seed, **options),
                 WORDS_CHARS: _head(task, hstack([Xw, Xc], format="csr"), y, seed, **options)}
    scores = {name: _cv_score(task, info) for name, (_, info) in heads.items()}
    better = scores[WORDS] is not None and scores[WORDS_CHARS] is not None and scores[WORDS_CHARS] > scores[WORDS]
    chosen = WORDS_CHARS if better else WORDS
    test_texts = [str(x) for x in test.inputs]
    Xte = words.transform(test_texts)
    if chosen == WORDS_CHARS:
        Xte = hstack([Xte, chars.transform([t[:CHAR_PREFIX] for t in test_texts])], format="csr")
    outputs, info = heads[chosen]
    info = {**info, "features": chosen, "vocabulary": int(Xte.shape[1]),
            "feature_selection": {"metric": _CV_METRIC[task], "scores": scores,
                                  "rule": "the better best-CV score on the training items; ties and "
                                          "scores missing (too few items): word n-grams alone",
                                  "vocabulary": {"words": len(words.vocabulary_), "chars": len(chars.vocabulary_)},
                                  "char_prefix": CHAR_PREFIX}}
    return outputs(Xte), info


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
