"""Linear heads on fixed features, in numpy: the fit shared by the linear probe and the controls.

Every head standardises the features, chooses its L2 strength by cross-validation on the
training items only, refits on all of them and folds the scaler into one ``(K, D)`` layer over
raw features (:class:`LinearFit`), whatever the task:

- classification: :func:`fit_logistic`, multinomial logistic regression, C by stratified CV;
- regression: :func:`fit_ridge`, ridge on a standardised target, alpha by leave-one-out CV;
- multi-label: one logistic regression per label, C and a decision threshold per label from
  out-of-fold predictions (``_multilabel.py``).
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._fit_cache import fit_key, load_fit, store_fit
from ..errors import UserInputError
from . import _scaling as scaled_module
from ._multilabel import fit_multilabel
from ._scaling import scaled


def class_weights(spec: Any, y: np.ndarray, classes: list[str]) -> np.ndarray | None:
    """The per-class loss weights ``(C,)`` a ``class_weight`` option asks for (classification), or
    the per-label positive weights ``(L,)`` (multi-label), or ``None``.

    Args:
        spec: ``None`` (every item counts once), ``"balanced"`` or ``{name: weight}`` (names not
            given keep weight 1).  Classification: ``balanced`` is scikit-learn's
            ``n_samples / (n_classes * count)``, so each class weighs as much in total.
            Multi-label: the weight of each label's *positive* items (the loss's ``pos_weight``,
            the logistic regression's ``{0: 1, 1: w}``); ``balanced`` is ``n_negative / n_positive``
            clipped to ``[1, 100]``.
        y: ``(N,)`` int labels in ``0..C-1``, or ``(N, L)`` 0/1 label indicators (the training items).
        classes: the ``C`` class names (the ``L`` label names), in ``y``'s order.
    """
    if spec is None:
        return None
    y = np.asarray(y)
    multilabel = y.ndim == 2
    n_classes = len(classes)
    what = "label" if multilabel else "class"
    if spec == "balanced":
        if multilabel:
            pos = y.sum(axis=0).astype(np.float64)
            # n_neg / n_pos makes a label's positives weigh as much as its negatives.  Clipped to
            # [1, 100]: below 1 would push a label that most items carry towards "absent"
            # (balancing is for rare positives, where recall suffers); above 100 the handful of
            # positives of a very rare label would dominate the loss and its gradients.  A label
            # without positives has no positive term to weigh: 1.
            ratio = np.where(pos > 0, (len(y) - pos) / np.maximum(pos, 1), 1.0)
            return np.clip(ratio, 1.0, 100.0)
        counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
        # a class absent from training has no loss term to weigh; 1 keeps the array finite
        return np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 1.0)
    if not isinstance(spec, dict):
        raise UserInputError(f"class_weight must be null, \"balanced\" or {{{what}: weight}}, got {spec!r}",
                             hint='--param class_weight=balanced, or --param class_weight=\'{"spam": 5}\'')
    known = [str(c) for c in classes]
    unknown = sorted(str(k) for k in spec if str(k) not in known)
    if unknown:
        raise UserInputError(f"class_weight names {', '.join(repr(u) for u in unknown)}, which "
                             f"{'is not a ' + what if len(unknown) == 1 else 'are not ' + what + 's'} of the "
                             "training data", hint=f"the {what}s are: {', '.join(known)}")
    out = np.ones(n_classes, dtype=np.float64)
    for k, v in spec.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
            raise UserInputError(f"class_weight of {k!r} is {v!r}; a weight must be a positive number",
                                 hint='e.g. --param class_weight=\'{"spam": 5}\'')
        out[known.index(str(k))] = float(v)
    return out


def fit_logistic(X, y: np.ndarray, *, Cs: tuple[float, ...], cv: int, max_iter: int,
                 seed: int, scale: bool = True,
                 class_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """:func:`_fit_logistic`, read back from the fit cache (:mod:`transferkit._fit_cache`) when the
    same features, labels, options, seed, code and library versions were fitted before: the probe
    of a second fit on cached features, its random-init control and the selection's candidates
    run no cross-validation again.  Shapes and return as :func:`_fit_logistic`."""
    key = _logistic_key(X, y, Cs=Cs, cv=cv, max_iter=max_iter, seed=seed, scale=scale, class_weight=class_weight)
    hit = load_fit("logistic", key)
    if hit is not None and {"W", "b"} <= set(hit[0]):
        return hit[0]["W"].numpy(), hit[0]["b"].numpy(), hit[1]
    W, b, info = _fit_logistic(X, y, Cs=Cs, cv=cv, max_iter=max_iter, seed=seed, scale=scale,
                               class_weight=class_weight)
    store_fit("logistic", key, {"W": np.ascontiguousarray(W), "b": np.ascontiguousarray(b)}, info)
    return W, b, info


def _logistic_key(X, y: np.ndarray, **options: Any) -> str:
    """What a logistic fit depends on: the features' exact values (dense, or a sparse matrix's
    arrays), the labels, the options and seed, this module's code and the libraries' versions."""
    h = hashlib.sha256()
    arrays = [X.data, X.indices, X.indptr] if hasattr(X, "indptr") else [X]
    for a in (*arrays, y):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    cw = options.pop("class_weight")
    parts = {"data": h.hexdigest(), "shape": list(X.shape), "sparse": hasattr(X, "indptr"),
             "class_weight": None if cw is None else np.asarray(cw, np.float64).tolist(),
             **{k: (sorted(v) if k == "Cs" else v) for k, v in options.items()}}
    return fit_key(parts, code=[__file__, scaled_module.__file__], packages=("scikit-learn", "scipy", "numpy"))


def _fit_logistic(X, y: np.ndarray, *, Cs: tuple[float, ...], cv: int, max_iter: int,
                  seed: int, scale: bool = True,
                  class_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Standardise, pick C by stratified CV (log-loss), refit on all data.

    Args:
        X: ``(N, D)`` features (dense; or scipy sparse with ``scale=False``).
        y: ``(N,)`` int labels in ``0..C-1``, every class present.
        scale: standardise features first (the fitted scaler is folded into ``W, b``).
        class_weight: ``(C,)`` weight of each class's items in the loss (:func:`class_weights`),
            in the cross-validation and the refit alike; ``None``: all 1.

    Returns:
        ``W (C, D)`` and ``b (C,)`` acting on *unscaled* X, and facts about the fit.
    """
    from sklearn.linear_model import LogisticRegression

    Xs, scaler = scaled(X, scale)
    n_classes = int(y.max()) + 1
    weights = None if class_weight is None else {i: float(w) for i, w in enumerate(class_weight)}
    folds = min(cv, int(np.bincount(y).min()))
    info: dict[str, Any] = {"Cs": sorted(Cs)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny folds; the refit reports `converged`
        if folds >= 2 and len(Cs) > 1:
            scores = _cv_path(Xs, y, sorted(Cs), folds, seed, weights)
            best = int(np.argmax(scores))
            C = sorted(Cs)[best]
            info.update(cv_folds=folds, cv_neg_log_loss=[float(s) for s in scores])
        else:
            C = sorted(Cs)[len(Cs) // 2]
            info.update(cv_folds=0, cv_note="too few items per class for cross-validation; middle C used")
        clf = LogisticRegression(C=C, max_iter=max_iter, class_weight=weights).fit(Xs, y)
    if weights is not None:
        info["class_weight"] = [float(w) for w in class_weight]
    info.update(C=float(C), n_iter=int(np.max(clf.n_iter_)), converged=bool(np.max(clf.n_iter_) < max_iter))
    coef, intercept = clf.coef_, clf.intercept_
    if n_classes == 2 and coef.shape[0] == 1:  # sklearn's binary form: one logit for class 1
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    if not scale:
        return coef, intercept, info
    W = coef / scaler.scale_
    b = intercept - W @ scaler.mean_
    return W, b, info


def _cv_path(X, y: np.ndarray, Cs: list[float], folds: int, seed: int,
             class_weight: dict[int, float] | None = None) -> np.ndarray:
    """Mean validation log-likelihood of each C (ascending) over stratified folds.

    scikit-learn's ``LogisticRegressionCV`` walks each fold's regularisation path from strong
    to weak, warm-starting every fit from the previous solution; the selection-grade tolerance
    (``tol=1e-3``, 300 iterations) keeps it 3-4x faster than independent fits, with the same
    choice of C on the data we measured.  ``refit=False``: :func:`fit_logistic` refits the
    chosen C on all items itself, at full tolerance.
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    path = LogisticRegressionCV(Cs=list(Cs), cv=cv, scoring="neg_log_loss", l1_ratios=(0.0,), max_iter=300,
                                tol=1e-3, refit=False, use_legacy_attributes=False,
                                class_weight=class_weight).fit(X, y)
    return np.asarray(path.scores_, dtype=np.float64).reshape(folds, len(Cs)).mean(axis=0)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(z)


#: Default options of each task's linear head: the linear probe's (``ProbeParams``) for the
#: logistic heads; for ridge, half-decades of alpha wide enough for standardised features of any
#: width and a few to tens of thousands of items (the penalty is on the summed squared error).
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "classification": {"Cs": (1e-3, 1e-2, 1e-1, 1.0, 10.0), "cv": 5, "max_iter": 2000},
    "regression": {"alphas": tuple(float(a) for a in np.logspace(-2, 6, 17))},
    "multi-label": {"Cs": (1e-3, 1e-2, 1e-1, 1.0, 10.0), "cv": 5, "max_iter": 2000},
}


@dataclass(frozen=True)
class LinearFit:
    """A linear head acting on *unscaled* features: ``outputs = X @ W.T + b``, then the task's link.

    Attributes:
        W: ``(K, D)``: ``K = C`` classes, ``1`` for regression, ``L`` labels for multi-label.
        b: ``(K,)``.
        info: facts about the fit (chosen regularisation, folds, convergence, notes), JSON-able.
        thresholds: ``(L,)`` per-label decision thresholds on the probabilities (multi-label), else None.
        target_mean: regression: the training target's mean (the head is already in the user's
            units; kept for the model card); else None.
        target_scale: regression: the training target's standard deviation; else None.
    """

    W: np.ndarray
    b: np.ndarray
    info: dict[str, Any]
    thresholds: np.ndarray | None = None
    target_mean: float | None = None
    target_scale: float | None = None


def fit_linear(task_name: str, X, y: np.ndarray, *, seed: int, scale: bool = True,
               class_weight: np.ndarray | None = None, **task_options: Any) -> LinearFit:
    """The task's linear head on fixed features, regularisation chosen by cross-validation.

    Args:
        task_name: ``"classification"``, ``"regression"`` or ``"multi-label"``.
        X: ``(N, D)`` features; dense, or scipy sparse with ``scale=False``.
        y: the task's encoding (``Task.encode``): int ``(N,)``, float ``(N,)`` or 0/1 ``(N, L)``.
        seed: seed of the cross-validation folds.
        scale: standardise features first (the scaler is folded into ``W, b``).
        class_weight: :func:`class_weights` of the task: ``(C,)`` per-class weights
            (classification) or ``(L,)`` weights of each label's positive items (multi-label);
            ``None``: unweighted.  Regression has no classes to weigh (``ValueError``).
        task_options: override :data:`DEFAULT_OPTIONS` of the task (``Cs``, ``cv``, ``max_iter``;
            ``alphas`` for regression).

    Returns:
        A :class:`LinearFit`; :func:`linear_outputs` is its forward pass.
    """
    if task_name not in DEFAULT_OPTIONS:
        raise ValueError(f"unknown task {task_name!r}; known: {', '.join(DEFAULT_OPTIONS)}")
    unknown = set(task_options) - set(DEFAULT_OPTIONS[task_name])
    if unknown:
        raise ValueError(f"options {sorted(unknown)} do not apply to {task_name}; "
                         f"allowed: {sorted(DEFAULT_OPTIONS[task_name])}")
    opts = {**DEFAULT_OPTIONS[task_name], **task_options}
    if X.shape[0] != len(y):
        raise ValueError(f"X has {X.shape[0]} rows but y has {len(y)} items")
    if task_name == "classification":
        W, b, info = fit_logistic(X, np.asarray(y, dtype=np.int64), Cs=tuple(opts["Cs"]), cv=opts["cv"],
                                  max_iter=opts["max_iter"], seed=seed, scale=scale, class_weight=class_weight)
        return LinearFit(W, b, info)
    if task_name == "regression":
        if class_weight is not None:
            raise ValueError("class_weight does not apply to regression: a target has no classes")
        return fit_ridge(X, np.asarray(y, dtype=np.float64), alphas=tuple(opts["alphas"]), scale=scale)
    W, b, thresholds, info = fit_multilabel(X, np.asarray(y, dtype=np.uint8), Cs=tuple(opts["Cs"]), cv=opts["cv"],
                                            max_iter=opts["max_iter"], seed=seed, scale=scale,
                                            class_weight=class_weight)
    return LinearFit(W, b, info, thresholds=thresholds)


def fit_ridge(X, y: np.ndarray, *, alphas: tuple[float, ...], scale: bool = True) -> LinearFit:
    """Ridge regression on standardised features and target, alpha by leave-one-out CV.

    scikit-learn's ``RidgeCV`` computes the exact leave-one-out error of every alpha in closed
    form (generalised cross-validation), so the whole grid costs about one fit.  The target is
    standardised so that one alpha grid fits targets of any unit; both scalers are folded back.

    Args:
        X: ``(N, D)`` features (dense; or scipy sparse with ``scale=False``).
        y: ``(N,)`` finite targets, not all equal.

    Returns:
        A :class:`LinearFit` with ``W (1, D)``, ``b (1,)`` giving predictions in ``y``'s units.
    """
    from sklearn.linear_model import RidgeCV

    if not np.all(np.isfinite(y)):
        raise ValueError("regression targets must be finite")
    mean, std = float(y.mean()), float(y.std())
    if not std > 0:
        raise ValueError("the regression target is constant on the training items: nothing to learn")
    Xs, scaler = scaled(X, scale)
    grid = sorted(float(a) for a in alphas)
    ridge = RidgeCV(alphas=grid).fit(Xs, (y - mean) / std)
    coef, intercept = np.asarray(ridge.coef_, np.float64), float(ridge.intercept_)
    if scale:
        coef = coef / scaler.scale_
        intercept = intercept - float(coef @ scaler.mean_)
    info: dict[str, Any] = {"alphas": grid, "alpha": float(ridge.alpha_), "cv": "leave-one-out",
                            "cv_r2": float(1.0 + ridge.best_score_)}
    if ridge.alpha_ in (grid[0], grid[-1]) and len(grid) > 1:
        info["note"] = "the chosen alpha is at the edge of the grid; a wider grid may fit better"
    W = (std * coef)[None, :]
    b = np.array([std * intercept + mean])
    return LinearFit(W, b, info, target_mean=mean, target_scale=std)


def linear_outputs(task_name: str, X, fit: LinearFit) -> np.ndarray:
    """The forward pass of :func:`fit_linear`'s head on ``(N, D)`` features (dense or sparse).

    Returns:
        classification ``(N, C)`` probabilities; regression ``(N,)`` values in the target's units;
        multi-label ``(N, L)`` per-label probabilities.
    """
    z = np.asarray(X @ np.asarray(fit.W, np.float64).T, dtype=np.float64) + np.asarray(fit.b, np.float64)
    if task_name == "classification":
        return softmax(z)
    if task_name == "regression":
        return z[:, 0]
    if task_name == "multi-label":
        return sigmoid(z)
    raise ValueError(f"unknown task {task_name!r}; known: {', '.join(DEFAULT_OPTIONS)}")
