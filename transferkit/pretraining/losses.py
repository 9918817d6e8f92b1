"""The contrastive loss of SimCLR and SimCSE."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (Chen et al. 2020, SimCLR; the unsupervised SimCSE loss of Gao et al. 2021 with the
    other view's items as extra negatives): each of the ``2N`` embeddings must pick its partner
    view among the other ``2N - 1`` by cosine similarity / ``temperature``.

    Shapes: ``z1, z2 (N, D)`` (row i of both: two views of item i), N >= 2 -> scalar mean loss.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, partner)
