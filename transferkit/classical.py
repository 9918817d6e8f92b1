"""Hand-made features of each modality and the linear heads on them, saved without pickle.

What a model without transfer learns from: TF-IDF of word (and character) n-grams for text,
raw grey pixels for images, log-mel and MFCC statistics for audio.  The same code serves the
classical controls (:mod:`transferkit.controls`), the ``classical`` strategy (the control's
model, delivered when it is the best) and the ``hybrid`` strategy (pre-trained features beside
the hand-made ones).  A fitted featurizer saves what it learned as tensors (a vocabulary as
the UTF-8 bytes of a JSON list, never a pickle) and is rebuilt from them exactly.

Each head is the task's linear head of :mod:`transferkit.tasks.linear` (logistic regression,
ridge, one logistic regression per label), its regularisation chosen by cross-validation on the
training items with the folds every head of a fit shares (same seed, same items): so the best
cross-validation scores of the probe, the classical model and the hybrid are comparable, which
is what model selection reads (:func:`cv_score`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch

from ._fit_cache import fit_key, items_sha256, load_fit, store_fit
from .data.dataset import Dataset
from .errors import UserInputError
from .series_features import RocketCore
from .tasks import linear as linear_module
from .tasks.linear import LinearFit, fit_linear, fit_logistic, linear_outputs

#: Character n-grams are read from each text's first ``CHAR_PREFIX`` characters: the whole of a
#: short text (a word, a name, a title, a post), where they matter most, while on long documents,
#: whose words the word n-grams already cover in full, the cap bounds the cost (scikit-learn's
#: character analyser is pure Python: ~40 s for the whole of 6,000 e-mails, ~10 s for 500
#: characters of each, on a loaded 2-core machine).  At most ``CHAR_FEATURES`` n-grams, the most
#: frequent.
CHAR_PREFIX = 500
#: Folds of the heads' cross-validation, the classical control's and the ``classical`` strategy's default.
CV_FOLDS = 5
CHAR_FEATURES = 50_000
WORD_FEATURES = 200_000


def _bytes(obj: Any) -> torch.Tensor:
    """A JSON value as a ``uint8`` tensor of its UTF-8 bytes (strings in a safetensors file)."""
    return torch.frombuffer(bytearray(json.dumps(obj).encode("utf-8")), dtype=torch.uint8).clone()


def _unbytes(t: torch.Tensor) -> Any:
    return json.loads(bytes(t.numpy().astype(np.uint8).tobytes()).decode("utf-8"))


class HandMade(ABC):
    """A hand-made featurizer: ``fit`` on training items, ``transform`` any items to ``(N, D)``
    (dense float64, or scipy sparse where :attr:`sparse`).

    ``head_options`` are the linear head's options on these features (the controls' since
    before this module: TF-IDF rows are unit-length and sparse, so unscaled with larger C;
    pixels and band statistics are standardised, with the probe's grid)."""

    kind: ClassVar[str] = ""
    sparse: ClassVar[bool] = False
    head_options: ClassVar[dict[str, Any]] = {"scale": True, "Cs": (1e-3, 1e-2, 1e-1, 1.0, 10.0)}

    @abstractmethod
    def fit(self, data: Dataset) -> "HandMade": ...

    @abstractmethod
    def transform(self, data: Dataset): ...

    def fit_transform(self, data: Dataset):
        return self.fit(data).transform(data)

    @abstractmethod
    def state(self) -> dict[str, torch.Tensor]:
        """What :meth:`restore` needs, as tensors (no pickle)."""

    @classmethod
    @abstractmethod
    def restore(cls, tensors: dict[str, torch.Tensor]) -> "HandMade": ...

    @abstractmethod
    def describe(self) -> str: ...


class TfidfText(HandMade):
    """Sublinear-tf TF-IDF of word 1-2-grams, with character 2-5-grams of each text's first
    :data:`CHAR_PREFIX` characters when ``chars``.

    A term must occur in two texts (from 50 texts on): one seen once says nothing about another
    item.  Where no term occurs twice (single words, ids), every term is kept rather than fail."""

    kind = "tfidf"
    sparse = True
    head_options = {"scale": False, "Cs": (1.0, 10.0, 100.0, 1000.0)}

    def __init__(self, chars: bool = False):
        self.chars = chars

    @staticmethod
    def _vectorizer(**options: Any):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(sublinear_tf=True, dtype=np.float32, **options)

    @staticmethod
    def _fit_one(texts: list[str], **options: Any):
        """One vectorizer fitted on ``texts``, read back from the fit cache (:mod:`._fit_cache`)
        when the same texts were fitted with the same options before (the control, the
        selection's candidates and a second fit all fit the same vocabularies)."""
        digest = items_sha256(hashlib.sha256(t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts)
        key = fit_key({"texts": digest, "n": len(texts), "options": options}, code=[__file__],
                      packages=("scikit-learn", "numpy"))
        hit = load_fit("tfidf", key)
        if hit is not None and {"vocabulary", "idf"} <= set(hit[0]):
            return TfidfText._restore_one(hit[0], {k: v for k, v in options.items() if k != "max_features"})
        vec = TfidfText._vectorizer(min_df=2 if len(texts) >= 50 else 1, **options)
        try:
            vec.fit(texts)
        except ValueError:
            vec.set_params(min_df=1)
            vec.fit(texts)
        store_fit("tfidf", key, TfidfText._state_one(vec), {"min_df": vec.min_df})
        return vec

    @staticmethod
    def _state_one(vec) -> dict[str, torch.Tensor]:
        terms = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
        return {"vocabulary": _bytes(terms), "idf": torch.from_numpy(np.asarray(vec.idf_, dtype=np.float32))}

    @staticmethod
    def _restore_one(tensors: dict[str, torch.Tensor], options: dict[str, Any]):
        terms = _unbytes(tensors["vocabulary"])
        vec = TfidfText._vectorizer(vocabulary=terms, **options)
        vec.vocabulary_ = {t: i for i, t in enumerate(terms)}  # what fit would set (transform checks it)
        vec.fixed_vocabulary_ = True
        vec.idf_ = tensors["idf"].numpy().astype(np.float32)  # as fitted (dtype float32)
        return vec

    WORDS: ClassVar[dict[str, Any]] = {"ngram_range": (1, 2)}
    CHARS: ClassVar[dict[str, Any]] = {"analyzer": "char_wb", "ngram_range": (2, 5)}

    def fit(self, data: Dataset) -> "TfidfText":
        texts = [str(x) for x in data.inputs]
        self.words_ = self._fit_one(texts, max_features=WORD_FEATURES, **self.WORDS)
        self.chars_ = (self._fit_one([t[:CHAR_PREFIX] for t in texts], max_features=CHAR_FEATURES, **self.CHARS)
                       if self.chars else None)
        return self

    def transform(self, data: Dataset):
        from scipy.sparse import hstack

        texts = [str(x) for x in data.inputs]
        X = self.words_.transform(texts)
        if self.chars_ is not None:
            X = hstack([X, self.chars_.transform([t[:CHAR_PREFIX] for t in texts])], format="csr")
        return X.tocsr()

    @property
    def vocabulary(self) -> dict[str, int]:
        """How many terms each part holds."""
        out = {"words": len(self.words_.vocabulary_)}
        if self.chars_ is not None:
            out["chars"] = len(self.chars_.vocabulary_)
        return out

    def state(self) -> dict[str, torch.Tensor]:
        out = {}
        for part, vec in (("words", self.words_), ("chars", self.chars_)):
            if vec is not None:
                out.update({f"{part}.{k}": v for k, v in self._state_one(vec).items()})
        return out

    @classmethod
    def restore(cls, tensors: dict[str, torch.Tensor]) -> "TfidfText":
        self = cls(chars="chars.vocabulary" in tensors)
        for part, options in (("words", cls.WORDS), ("chars", cls.CHARS)):
            if f"{part}.vocabulary" not in tensors:
                setattr(self, f"{part}_", None)
                continue
            setattr(self, f"{part}_", cls._restore_one({k: tensors[f"{part}.{k}"] for k in ("vocabulary", "idf")},
                                                       options))
        return self

    def describe(self) -> str:
        return "TF-IDF word 1-2-grams" + (f" + char 2-5-grams (first {CHAR_PREFIX} characters)" if self.chars else "")


class Pixels(HandMade):
    """Raw grey pixels, the image resized to ``side x side`` (the first training image's larger
    side, at most 32), scaled to [0, 1]: ``(N, side * side)``."""

    kind = "pixels"

    def __init__(self, side: int | None = None):
        self.side = side

    def fit(self, data: Dataset) -> "Pixels":
        from .data import load_image

        if self.side is None:
            self.side = min(32, max(load_image(data.inputs[0]).size))
        return self

    def transform(self, data: Dataset) -> np.ndarray:
        from .data import load_image

        rows = []
        for x in data.inputs:
            im = load_image(x).convert("L").resize((self.side, self.side))
            rows.append(np.asarray(im, dtype=np.float32).ravel() / 255.0)
        return np.stack(rows).astype(np.float64)

    def state(self) -> dict[str, torch.Tensor]:
        return {"side": torch.tensor([self.side], dtype=torch.int64)}

    @classmethod
    def restore(cls, tensors: dict[str, torch.Tensor]) -> "Pixels":
        return cls(int(tensors["side"].reshape(-1)[0]))

    def describe(self) -> str:
        return f"grey pixels {self.side}x{self.side}"


class BandStats(HandMade):
    """Mean and standard deviation over time of log energies in ``n_bands`` linear frequency
    bands (25 ms frames, 10 ms hop): ``(N, 2 * n_bands)``."""

    kind = "spectrum"

    def __init__(self, sr: int = 16000, n_bands: int = 40):
        self.sr, self.n_bands = sr, n_bands

    def fit(self, data: Dataset) -> "BandStats":
        return self

    def transform(self, data: Dataset) -> np.ndarray:
        from .data import load_audio

        rows = []
        for x in data.inputs:
            w, rate = load_audio(x, self.sr)
            frame, hop = int(0.025 * rate), int(0.010 * rate)
            if len(w) < frame:
                w = np.pad(w, (0, frame - len(w)))
            n = 1 + (len(w) - frame) // hop
            frames = np.stack([w[i * hop:i * hop + frame] for i in range(n)]) * np.hanning(frame)
            power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
            bands = np.log(np.stack([b.sum(1) for b in np.array_split(power, self.n_bands, axis=1)], 1) + 1e-10)
            rows.append(np.concatenate([bands.mean(0), bands.std(0)]))
        return np.stack(rows).astype(np.float64)

    def state(self) -> dict[str, torch.Tensor]:
        return {"sr": torch.tensor([self.sr], dtype=torch.int64), "n_bands": torch.tensor([self.n_bands])}

    @classmethod
    def restore(cls, tensors: dict[str, torch.Tensor]) -> "BandStats":
        return cls(int(tensors["sr"].reshape(-1)[0]), int(tensors["n_bands"].reshape(-1)[0]))

    def describe(self) -> str:
        return f"log band-energy statistics ({self.n_bands} bands)"


class Rocket(RocketCore, HandMade):
    """ROCKET random-kernel features of time series (:mod:`transferkit.series_features`), standardised."""

    kind = "rocket"

    def fit(self, data: Dataset) -> "Rocket":
        return RocketCore.fit(self, data)


class MfccStats(HandMade):
    """Speech features of the classical recognisers: per clip (resampled to ``sr``), 40-band
    log-mel (dB) and its first ``n_mfcc`` MFCCs with their deltas, every 10 ms over 25 ms windows,
    summarised by mean and standard deviation over time: ``(N, 2 * (40 + 2 * n_mfcc))``.
    (:class:`BandStats`, the earlier audio control, still loads for runs that saved it.)"""

    kind = "mfcc"
    N_MELS = 40

    def __init__(self, sr: int = 16000, n_mfcc: int = 20):
        self.sr, self.n_mfcc = sr, n_mfcc

    def fit(self, data: Dataset) -> "MfccStats":
        return self

    def transform(self, data: Dataset) -> np.ndarray:
        from .data import load_audio, resample
        from .data._mel import deltas, mel_spectrogram, mfcc, power_to_db

        rows = []
        for x in data.inputs:
            w, rate = load_audio(x, self.sr)
            w = resample(w, rate, self.sr)
            n_fft, hop = int(0.025 * self.sr), int(0.010 * self.sr)
            db = power_to_db(mel_spectrogram(w, self.sr, n_fft, hop, self.N_MELS).astype(np.float64))
            c = mfcc(db, self.n_mfcc)
            frames = np.concatenate([db, c, deltas(c)], axis=1)
            rows.append(np.concatenate([frames.mean(0), frames.std(0)]))
        return np.stack(rows).astype(np.float64)

    def state(self) -> dict[str, torch.Tensor]:
        return {"sr": torch.tensor([self.sr], dtype=torch.int64), "n_mfcc": torch.tensor([self.n_mfcc])}

    @classmethod
    def restore(cls, tensors: dict[str, torch.Tensor]) -> "MfccStats":
        return cls(int(tensors["sr"].reshape(-1)[0]), int(tensors["n_mfcc"].reshape(-1)[0]))

    def describe(self) -> str:
        return f"log-mel ({self.N_MELS} bands) + {self.n_mfcc} MFCC + deltas, mean and std over time"


#: The featurizer kinds, by the name saved with a model.
KINDS: dict[str, type[HandMade]] = {c.kind: c for c in (TfidfText, Pixels, BandStats, MfccStats, Rocket)}
#: The hand-made features of each modality.
BY_MODALITY: dict[str, type[HandMade]] = {"text": TfidfText, "image": Pixels, "audio": MfccStats,
                                          "timeseries": Rocket}


def handmade_for(modality: str) -> type[HandMade]:
    """The featurizer class of ``modality``.

    Raises:
        UserInputError: a modality without hand-made features."""
    try:
        return BY_MODALITY[modality]
    except KeyError:
        raise UserInputError(f"there are no hand-made features for {modality} data",
                             hint=f"the classical and hybrid models take {', '.join(BY_MODALITY)}") from None


def save_handmade(f: HandMade, prefix: str) -> dict[str, torch.Tensor]:
    """``f``'s state under ``prefix`` (``"handmade."``), with its kind."""
    return {f"{prefix}kind": _bytes(f.kind), **{prefix + k: v for k, v in f.state().items()}}


def load_handmade(tensors: dict[str, torch.Tensor], prefix: str) -> HandMade:
    """The featurizer :func:`save_handmade` wrote under ``prefix``.

    Raises:
        UserInputError: the tensors name no known kind (a damaged or foreign file)."""
    if f"{prefix}kind" not in tensors:
        raise UserInputError("the saved weights lack the hand-made features' description",
                             hint="the weights file is incomplete or belongs to another strategy: fit again")
    kind = _unbytes(tensors[f"{prefix}kind"])
    if kind not in KINDS:
        raise UserInputError(f"unknown hand-made features {kind!r} in the saved weights",
                             hint="was it written by a newer transferkit?")
    return KINDS[kind].restore({k[len(prefix):]: v for k, v in tensors.items()
                                if k.startswith(prefix) and k != f"{prefix}kind"})


# ----- heads ------------------------------------------------------------------------------------
def fit_head(task: str, X, y: np.ndarray, seed: int, *, Cs: tuple[float, ...], cv: int = 5, scale: bool = True,
             max_iter: int = 3000, class_weight: np.ndarray | None = None,
             alphas: tuple[float, ...] | None = None) -> LinearFit:
    """The task's linear head on ``X (N, D)`` (dense, or sparse with ``scale=False``):
    classification a logistic regression (``Cs`` by stratified ``cv``-fold CV, each class
    weighted by ``class_weight (C,)``), regression ridge (``alphas`` by leave-one-out, the
    default grid without), multi-label one logistic regression per label with thresholds.
    The scaler, if any, is folded into the returned :class:`LinearFit`."""
    if task == "classification":
        W, b, info = fit_logistic(X, y, Cs=Cs, cv=cv, max_iter=max_iter, seed=seed, scale=scale,
                                  class_weight=class_weight)
        return LinearFit(W, b, info)
    if task == "regression":
        return fit_linear(task, X, y, seed=seed, scale=scale, **({"alphas": alphas} if alphas else {}))
    return fit_linear(task, X, y, seed=seed, scale=scale, Cs=Cs, cv=cv, max_iter=max_iter, class_weight=class_weight)


def cv_score(task: str, info: dict[str, Any]) -> float | None:
    """The best cross-validation score of a fitted head (higher is better), from its ``info``:
    classification the mean validation log-likelihood, regression the leave-one-out R², multi-label
    minus the per-label validation log-loss averaged over the labels; ``None`` where the head
    had too few items to cross-validate."""
    if task == "classification":
        scores = info.get("cv_neg_log_loss")
        return float(max(scores)) if scores else None
    if task == "regression":
        return float(info["cv_r2"]) if "cv_r2" in info else None
    losses = [min(e["cv_log_loss"]) for e in info.get("labels", []) if "cv_log_loss" in e]
    return -float(np.mean(losses)) if losses else None


#: What :func:`cv_score` measures, per task.
CV_METRIC = {"classification": "mean validation log-likelihood (stratified k-fold)",
             "regression": "R² (leave-one-out)",
             "multi-label": "minus the mean per-label validation log-loss (stratified k-fold)"}


def head_tensors(task: str, fit: LinearFit, prefix: str = "head.") -> dict[str, torch.Tensor]:
    """A fitted head as tensors: weight, bias and (multi-label) thresholds, in float64 as fitted
    (a reloaded model predicts exactly what the fitted one did)."""
    out = {f"{prefix}weight": torch.from_numpy(np.asarray(fit.W, np.float64)),
           f"{prefix}bias": torch.from_numpy(np.asarray(fit.b, np.float64))}
    if task == "multi-label":
        out[f"{prefix}thresholds"] = torch.from_numpy(np.asarray(fit.thresholds, np.float32))
    return out


def head_from_tensors(task: str, tensors: dict[str, torch.Tensor], n_out: int, prefix: str = "head.") -> LinearFit:
    """The head :func:`head_tensors` saved, its shapes checked against ``n_out`` outputs.

    Raises:
        UserInputError: missing tensors or shapes of another run."""
    need = [f"{prefix}weight", f"{prefix}bias"] + ([f"{prefix}thresholds"] if task == "multi-label" else [])
    missing = [k for k in need if k not in tensors]
    if missing:
        raise UserInputError(f"the saved weights lack {', '.join(missing)}, which a {task} head needs",
                             hint="the weights file is incomplete or belongs to another task: fit again")
    W = tensors[f"{prefix}weight"].numpy().astype(np.float64)
    b = tensors[f"{prefix}bias"].numpy().astype(np.float64)
    if W.ndim != 2 or W.shape[0] != n_out or b.shape != (n_out,):
        raise UserInputError(f"the saved {task} head has shape {tuple(W.shape)}, expected ({n_out}, D)",
                             hint="the weights belong to another run: fit again")
    thresholds = tensors[f"{prefix}thresholds"].numpy().astype(np.float64) if task == "multi-label" else None
    return LinearFit(W, b, {}, thresholds=thresholds)


# ----- the classical model: hand-made features + the task's head ----------------------------------
class HandMadeModel:
    """A fitted featurizer and the task's linear head on its features.

    Attributes:
        featurizer: the fitted :class:`HandMade`.
        head: the :class:`LinearFit` over the featurizer's (unscaled) features.
        info: the head's fit facts, with ``features`` (what the features are) and, for text,
            ``feature_selection`` (both candidate sets' CV scores).
    """

    def __init__(self, task: str, featurizer: HandMade, head: LinearFit, info: dict[str, Any]):
        self.task, self.featurizer, self.head, self.info = task, featurizer, head, info

    def outputs(self, data: Dataset) -> np.ndarray:
        """The task's outputs on ``data`` (:meth:`Strategy.predict_outputs` shapes)."""
        return linear_outputs(self.task, self.featurizer.transform(data), self.head)


#: The two feature sets the text model chooses between, by cross-validation on its training items.
WORDS = "word 1-2-grams"
WORDS_CHARS = "word 1-2-grams + char 2-5-grams"


def fit_handmade_model(task: str, train: Dataset, y: np.ndarray, seed: int, *, cv: int = CV_FOLDS,
                       class_weight: np.ndarray | None = None, cache: bool = True) -> HandMadeModel:
    """The classical model of ``train``'s modality learning ``task`` from ``y`` (the task's encoding)
    (:func:`_fit_handmade_model`), read back from the fit cache (:mod:`._fit_cache`) when an
    identical fit (same items, targets, options, seed, code and library versions) stored it: a
    second fit on the same data refits no TF-IDF and runs no cross-validation."""
    key = _model_key(task, train, y, seed, cv, class_weight) if cache else None
    hit = load_fit("classical", key) if key else None
    if hit is not None:
        tensors, info = hit
        try:
            return HandMadeModel(task, load_handmade(tensors, "handmade."),
                                 head_from_tensors(task, tensors, int(tensors["head.weight"].shape[0])), info)
        except (UserInputError, KeyError):
            pass  # an entry of another layout: fitted again and overwritten
    model = _fit_handmade_model(task, train, y, seed, cv=cv, class_weight=class_weight)
    if key:
        store_fit("classical", key, {**save_handmade(model.featurizer, "handmade."), **head_tensors(task, model.head)},
                  model.info)
    return model


def _model_key(task: str, train: Dataset, y: np.ndarray, seed: int, cv: int, class_weight: np.ndarray | None) -> str:
    """What a classical fit depends on: its items' contents, targets, options, seed, the code that
    fits (this module and the linear heads) and the numerical libraries' versions."""
    y = np.ascontiguousarray(y)
    parts = {"task": task, "modality": train.modality, "sampling_rate": getattr(train, "sampling_rate", None),
             "items": items_sha256(train.content_hashes()), "n": len(train), "seed": int(seed), "cv": int(cv),
             "y": [str(y.dtype), list(y.shape), hashlib.sha256(y.tobytes()).hexdigest()],
             "class_weight": None if class_weight is None else np.asarray(class_weight, np.float64).tolist()}
    return fit_key(parts, code=[__file__, linear_module.__file__], packages=("scikit-learn", "scipy", "numpy"))


def _fit_handmade_model(task: str, train: Dataset, y: np.ndarray, seed: int, *, cv: int = CV_FOLDS,
                        class_weight: np.ndarray | None = None) -> HandMadeModel:
    """The classical model of ``train``'s modality learning ``task`` from ``y`` (the task's encoding).

    Text chooses between word n-grams and word + character n-grams by the better best-CV score on
    the training items (ties, or too few items to cross-validate: words alone, the simpler set):
    word n-grams alone make a straw man of short texts, where an unseen single word shares no term
    with any training word (measured on the VADER lexicon: RMSE 1.703, the mean's, against 1.36
    with character n-grams).  Images and audio have one feature set each."""
    from threadpoolctl import threadpool_limits

    kind = handmade_for(train.modality)
    if kind is not TfidfText:
        f = kind().fit(train)
        head = fit_head(task, f.transform(train), y, seed, cv=cv, class_weight=class_weight, **f.head_options)
        info = {**head.info, "features": f.describe()}
        if isinstance(f, Pixels):
            info["side"] = f.side
        return HandMadeModel(task, f, head, info)
    # The logistic fits on sparse TF-IDF run sparse products and small dense vector operations,
    # for which BLAS threads are pure overhead: one thread halved this model's time on 800
    # e-mails on 2 cores (bench_cache).  Ridge (regression) eigen-decomposes a dense n x n
    # matrix, which the threads do speed up, so it keeps them.
    limit = threadpool_limits(limits=1, user_api="blas") if task != "regression" else contextlib.nullcontext()
    words = TfidfText(chars=False).fit(train)
    both = TfidfText(chars=True)
    texts = [str(x)[:CHAR_PREFIX] for x in train.inputs]
    both.words_ = words.words_  # the same word vocabulary: fitted once
    both.chars_ = TfidfText._fit_one(texts, max_features=CHAR_FEATURES, **TfidfText.CHARS)
    fits = {}
    with limit:
        for name, f in ((WORDS, words), (WORDS_CHARS, both)):
            fits[name] = (f, fit_head(task, f.transform(train), y, seed, cv=cv, class_weight=class_weight,
                                      **f.head_options))
    scores = {name: cv_score(task, head.info) for name, (_, head) in fits.items()}
    better = scores[WORDS] is not None and scores[WORDS_CHARS] is not None and scores[WORDS_CHARS] > scores[WORDS]
    chosen = WORDS_CHARS if better else WORDS
    f, head = fits[chosen]
    info = {**head.info, "features": chosen, "vocabulary": int(sum(f.vocabulary.values())),
            "feature_selection": {"metric": CV_METRIC[task], "scores": scores,
                                  "rule": "the better best-CV score on the training items; ties and "
                                          "scores missing (too few items): word n-grams alone",
                                  "vocabulary": fits[WORDS_CHARS][0].vocabulary,
                                  "char_prefix": CHAR_PREFIX}}
    return HandMadeModel(task, f, head, info)
