"""Learning without forgetting (Li & Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI 2017).

Before training on the new data, the parent model's outputs on it are recorded; while training,
the new model's outputs *for the parent's classes* are pulled towards them by knowledge
distillation (Hinton et al. 2015) at temperature ``T``: ``T^2 * KL(softmax(z_old / T) ||
softmax(z_new[:, :C_old] / T))``, the ``T^2`` keeping the gradient's scale independent of ``T``.
No earlier item is needed: the new data stands in for the old.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(new_logits: torch.Tensor, old_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """The LwF term for a batch: ``new_logits (b, C_new)`` whose first ``C_old`` columns are the
    parent's classes, ``old_logits (b, C_old)`` the parent's outputs; mean over the batch."""
    c_old = old_logits.shape[1]
    if new_logits.shape[1] < c_old:
        raise ValueError(f"the new head has {new_logits.shape[1]} outputs, fewer than the parent's {c_old}")
    t = float(temperature)
    target = F.softmax(old_logits / t, dim=1)
    log_new = F.log_softmax(new_logits[:, :c_old] / t, dim=1)
    return F.kl_div(log_new, target, reduction="batchmean") * t * t
