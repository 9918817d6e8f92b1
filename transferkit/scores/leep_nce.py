"""LEEP and NCE: transferability from a backbone's own source-task classifier.

Both need the predictions of the pre-training head on the target items (EfficientNet-Lite's
ImageNet classifier, for instance), not the features: they ask how well the source classes
explain the target classes.

* LEEP — Nguyen, Hassner, Seeger, Archambeau, "LEEP: A New Measure to Evaluate
  Transferability of Learned Representations", ICML 2020.
* NCE — Tran, Nguyen, Hassner, "Transferability and Hardness of Supervised Classification
  Tasks", ICCV 2019.
"""
from __future__ import annotations

import numpy as np

from ._common import class_sums, encode_labels

__all__ = ["leep", "nce"]


def leep(source_probs, labels) -> float:
    """Log Expected Empirical Prediction.

    With ``theta(x)`` the source head's probabilities over the source classes ``z``, the
    empirical joint ``P(y, z) = 1/N sum_i theta(x_i)_z [y_i = y]`` gives the conditional
    ``P(y | z)``; LEEP is the mean log-likelihood of the "expected empirical predictor"
    ``p(y | x) = sum_z P(y | z) theta(x)_z`` on the target labels.

    Args:
        source_probs: ``(N, C_s)`` probabilities of the source classes (rows sum to 1).
        labels: ``(N,)`` target labels of any type.

    Returns:
        LEEP, a float <= 0 (higher is better; 0 means the source head predicts the target
        labels perfectly through ``P(y | z)``).

    Raises:
        ValueError: shapes that do not match, or probabilities that are negative or not finite.
    """
    p = np.asarray(source_probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"source_probs must be (N, C_s), got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("source_probs must be finite and non-negative (softmax outputs)")
    codes, c_t = encode_labels(labels, p.shape[0])
    joint = class_sums(p, codes, c_t) / p.shape[0]  # (C_t, C_s)
    p_z = joint.sum(axis=0)  # (C_s,)
    # A source class no item puts mass on has no conditional; its column is never used.
    cond = np.divide(joint, p_z, out=np.zeros_like(joint), where=p_z > 0)  # P(y | z)
    eep = np.einsum("nz,nz->n", p, cond[codes].reshape(len(codes), -1))  # p(y_i | x_i)
    return float(np.mean(np.log(eep)))


def nce(source_labels, labels) -> float:
    """Negative Conditional Entropy ``-H(Y | Z)`` of the target labels given the source labels.

    Args:
        source_labels: ``(N,)`` hard source-class predictions (``argmax`` of the source head).
        labels: ``(N,)`` target labels of any type.

    Returns:
        NCE, a float <= 0 in nats (higher is better; 0 when the source label determines the
        target label).
    """
    z, _ = encode_labels(source_labels, len(np.asarray(labels)))
    y, c_t = encode_labels(labels, len(z))
    n = len(y)
    joint = np.zeros((c_t, int(z.max()) + 1))
    np.add.at(joint, (y, z), 1.0 / n)
    p_z = joint.sum(axis=0)
    cond = np.divide(joint, p_z, out=np.zeros_like(joint), where=p_z > 0)
    log_cond = np.log(cond, out=np.zeros_like(cond), where=cond > 0)  # 0 log 0 = 0
    return float(np.sum(joint * log_cond))
