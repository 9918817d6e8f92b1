"""Label-free corrections of zero-shot scores: pure numpy over logits, no labels read.

Two corrections, each an additive ``(C,)`` bias on the logits ``(N, C)`` (cosines / temperature):

* **contextual** (Zhao et al., "Calibrate Before Use: Improving Few-Shot Performance of Language
  Models", ICML 2021): the class probabilities of content-free inputs ("N/A", "", "[MASK]") show
  what the label descriptions favour whatever the item; dividing them out (adding ``-log p_cf``)
  leaves content-free inputs at a uniform prediction.  Needs no item at all.
* **prior** (Saerens, Latinne & Decaestecker, "Adjusting the Outputs of a Classifier to New a
  Priori Probabilities: A Simple Procedure", Neural Computation 2002): EM over unlabelled items
  re-estimates the class priors, taking the (contextually corrected) posteriors as calibrated
  under a uniform prior; the bias is ``log(pi * C)``.  It amplifies whatever bias is left in the
  posteriors (EM drifts toward the classes the model already over-predicts), which is why it is
  not the default on its own.
"""
from __future__ import annotations

import numpy as np

from ..tasks.linear import softmax

#: Stop EM when no prior moves by more than this between two iterations.
EM_TOL = 1e-8
EM_MAX_ITER = 500


def contextual_bias(content_free_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(K, C)`` logits of K content-free inputs -> ``(bias (C,), p_cf (C,))``.

    ``p_cf`` is the mean of their class probabilities; ``bias = -log p_cf``, shifted to sum to zero
    (a constant shift changes no probability), so ``softmax(logits + bias)`` of the mean
    content-free input is uniform.
    """
    p_cf = softmax(np.asarray(content_free_logits, dtype=np.float64)).mean(axis=0)
    bias = -np.log(np.maximum(p_cf, 1e-300))
    return bias - bias.mean(), p_cf


def em_prior(logits: np.ndarray) -> tuple[np.ndarray, int]:
    """Saerens et al.'s EM on ``(N, C)`` logits of unlabelled items -> ``(priors (C,), iterations)``.

    The posteriors ``softmax(logits)`` are read as calibrated under a uniform prior ``1/C``; each
    step reweights them by ``pi_c * C`` and sets ``pi`` to their mean, until ``pi`` moves by less
    than :data:`EM_TOL`.  A prior never reaches exactly 0 (floored at 1e-12).
    """
    p = softmax(np.asarray(logits, dtype=np.float64))
    n_classes = p.shape[1]
    pi = np.full(n_classes, 1.0 / n_classes)
    for it in range(1, EM_MAX_ITER + 1):
        q = p * (pi * n_classes)
        q /= q.sum(axis=1, keepdims=True)
        new = np.maximum(q.mean(axis=0), 1e-12)
        new /= new.sum()
        done = np.abs(new - pi).max() < EM_TOL
        pi = new
        if done:
            return pi, it
    return pi, EM_MAX_ITER


def prior_bias(priors: np.ndarray) -> np.ndarray:
    """``(C,)`` estimated priors -> the ``(C,)`` logit bias ``log(pi * C)`` (zero for uniform priors)."""
    priors = np.asarray(priors, dtype=np.float64)
    return np.log(priors * len(priors))
