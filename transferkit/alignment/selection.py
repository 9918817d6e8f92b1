"""Choosing a domain-adaptation hyper-parameter without target labels.

Target labels are what unsupervised domain adaptation does not have, so a criterion must
stand in for target accuracy:

* :func:`dev_risk` - Deep Embedded Validation (You, Wang, Chen, Wang & Jordan, "Towards
  Accurate Model Selection in Deep Unsupervised Domain Adaptation", ICML 2019): the loss on
  held-out *labelled source* items, weighted by the density ratio ``p_target(x) / p_source(x)``
  estimated by a domain classifier on the model's own features, with a control variate that
  cuts its variance.  Under covariate shift it is an unbiased estimate of the target risk;
  lower is better.  It is the default: it estimates the quantity we care about.
* :func:`snd` - Soft Neighbourhood Density (Saito, Kim, Teterwak, Sclaroff, Darrell & Saenko,
  "Tune it the Right Way: Unsupervised Validation of Domain Adaptation via Soft Neighborhood
  Density", ICCV 2021): the entropy of each target item's softmax similarity distribution over
  the other target items' predictions; higher means denser clusters.  It needs no held-out
  source items, but a model that collapses the target into confident clusters scores well
  whether or not the clusters are the right classes.
* :func:`entropy` - mean prediction entropy on the target (lower: more confident), the
  simplest and the easiest to fool; reported, never used to choose.
"""
from __future__ import annotations

import warnings

import numpy as np


def _rows(x: np.ndarray, n_max: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= n_max else x[np.sort(rng.choice(len(x), n_max, replace=False))]


def dev_risk(val_losses: np.ndarray, f_val: np.ndarray, f_source: np.ndarray, f_target: np.ndarray, *,
             max_items: int = 2000, seed: int = 0) -> dict[str, float]:
    """Deep Embedded Validation risk of one model.

    Args:
        val_losses: ``(V,)`` per-item loss (cross-entropy) of the model on held-out labelled
            source items.
        f_val: ``(V, H)`` the model's features of those items.
        f_source: ``(n, H)`` its features of the source training items.
        f_target: ``(m, H)`` its features of the unlabelled target items.
        max_items: items of each domain used to fit the domain classifier (seeded subset).

    Returns:
        ``{"risk", "weighted_loss", "source_loss", "eta", "weight_mean", "weight_max"}``;
        ``risk`` (lower is better) is ``mean(w l) + eta mean(w) - eta`` with
        ``eta = -Cov(w l, w) / Var(w)`` (with self-normalised weights, mean(w) = 1, the control
        variate term vanishes and ``risk`` is the weighted loss); ``source_loss`` is the plain
        mean loss; ``weight_max`` shows how much one item can weigh.
    """
    w = dev_weights(f_val, f_source, f_target, max_items=max_items, seed=seed)
    return weighted_risk(val_losses, w)


def dev_weights(f_val: np.ndarray, f_source: np.ndarray, f_target: np.ndarray, *, max_items: int = 2000,
                seed: int = 0) -> np.ndarray:
    """DEV's importance weights ``(V,)`` of held-out source items: the density ratio
    ``p_target(x) / p_source(x)`` at ``f_val`` from a domain classifier on ``f_source (n, H)`` vs
    ``f_target (m, H)``, clipped and self-normalised to mean 1 (:func:`dev_risk` says why).
    Computed once, they score any number of models on the same features (:func:`weighted_risk`)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    fs, ft = _rows(f_source, max_items, rng), _rows(f_target, max_items, rng)
    x = np.vstack([fs, ft]).astype(np.float64)
    d = np.r_[np.zeros(len(fs)), np.ones(len(ft))]
    scaler = StandardScaler().fit(x)
    # A domain classifier that separates the two sets perfectly gives density ratios of 1e4 and
    # more, and one held-out item then decides the risk: its strength is chosen by
    # cross-validated log loss (calibrated probabilities), the ratios clipped, and the weights
    # self-normalised to mean 1 over the validation items (the usual variance cut for
    # importance weighting).
    clf = LogisticRegressionCV(Cs=[1e-3, 1e-2, 1e-1, 1.0], cv=3, scoring="neg_log_loss", max_iter=2000)
    with warnings.catch_warnings():  # scikit-learn 1.8 announces attribute changes we do not use
        warnings.simplefilter("ignore", FutureWarning)
        clf.fit(scaler.transform(x), d)
    p = np.clip(clf.predict_proba(scaler.transform(np.asarray(f_val, np.float64)))[:, 1], 0.01, 0.99)
    w = p / (1.0 - p) * (len(fs) / len(ft))  # density ratio p_t(x) / p_s(x)
    return w / w.mean()


def weighted_risk(val_losses: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """DEV's risk of per-item held-out losses ``(V,)`` under importance weights ``w (V,)``
    (:func:`dev_weights`), with its control variate; the keys of :func:`dev_risk`."""
    wl = w * np.asarray(val_losses, np.float64)
    var = float(np.var(w, ddof=1)) if len(w) > 1 else 0.0
    eta = -float(np.cov(wl, w, ddof=1)[0, 1]) / var if var > 0 else 0.0
    risk = float(wl.mean() + eta * w.mean() - eta)
    return {"risk": risk, "weighted_loss": float(wl.mean()), "source_loss": float(np.mean(val_losses)),
            "eta": eta, "weight_mean": float(w.mean()), "weight_max": float(w.max())}


def snd(proba: np.ndarray, *, temperature: float = 0.05, max_items: int = 1000, seed: int = 0) -> float:
    """Soft neighbourhood density of target predictions ``proba (m, C)``; higher is better.

    Rows are L2-normalised, their cosine similarities (self excluded) divided by
    ``temperature`` and softmaxed per row; the score is the mean entropy of those rows.
    """
    rng = np.random.default_rng(seed)
    p = _rows(np.asarray(proba, np.float64), max_items, rng)
    z = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    s = z @ z.T / temperature
    np.fill_diagonal(s, -np.inf)
    s = s - s.max(1, keepdims=True)
    e = np.exp(s)
    q = e / e.sum(1, keepdims=True)
    return float(-(q * np.log(np.clip(q, 1e-12, None))).sum(1).mean())


def entropy(proba: np.ndarray) -> float:
    """Mean entropy (nats) of the rows of ``proba (m, C)``."""
    p = np.clip(np.asarray(proba, np.float64), 1e-12, 1.0)
    return float(-(p * np.log(p)).sum(1).mean())
