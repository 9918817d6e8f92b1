"""The part of the model that travels: a low-rank feature adapter and a linear head on the frozen
backbone's cached features, trained through the project's one training loop.

Shapes: features ``x (N, D)``; adapter ``A (r, D)``, ``B (D, r)``; head ``W (C, D)``, ``b (C,)``;
``logits = (x + x A^T B^T) W^T + b``.  ``B`` starts at zero, so every client starts from the
plain linear head.  The adapter is linear, so adapter and head fold into one ``(C, D)`` head
over raw features (:func:`fold`): the delivered run is an ordinary ``linear-probe`` run.

Aggregation (McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS 2017, FedAvg; Li et al., "Federated Optimization in Heterogeneous
Networks", MLSys 2020, FedProx: the proximal term ``mu/2 ||w - w_global||^2``; Arivazhagan et
al., "Federated Learning with Personalization Layers", 2019, FedPer: the adapter is shared, each
client keeps its own head).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..training import TrainState, train
from ..training.optim import adamw

#: The arrays of the trainable part, in the order they travel.
ADAPTER = ("adapter.A", "adapter.B")
HEAD = ("head.weight", "head.bias")


def shapes(n_classes: int, dim: int, rank: int) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every array of the trainable part (no adapter when ``rank`` is 0)."""
    out: dict[str, tuple[int, ...]] = {}
    if rank:
        out.update({"adapter.A": (rank, dim), "adapter.B": (dim, rank)})
    out.update({"head.weight": (n_classes, dim), "head.bias": (n_classes,)})
    return out


def shared_names(n_classes: int, dim: int, rank: int, personal_head: bool) -> list[str]:
    """The arrays that travel: all, or (FedPer) the adapter alone."""
    names = list(shapes(n_classes, dim, rank))
    return [n for n in names if n not in HEAD] if personal_head else names


def initial_arrays(n_classes: int, dim: int, rank: int, seed: int) -> dict[str, np.ndarray]:
    """The common starting point (server, local-only and centralised runs all use it): ``A``
    seeded Gaussian with variance ``1/D``, ``B``, ``W`` and ``b`` zero."""
    rng = np.random.default_rng(seed)
    out = {name: np.zeros(shape, np.float32) for name, shape in shapes(n_classes, dim, rank).items()}
    if rank:
        out["adapter.A"] = (rng.standard_normal((rank, dim)) / np.sqrt(dim)).astype(np.float32)
    return out


class AdaptedHead(nn.Module):
    """``x (N, D) -> logits (N, C)`` through the adapter (if any) and the head."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        super().__init__()
        self.names = list(arrays)
        for name, value in arrays.items():
            self.register_parameter(name.replace(".", "_"), nn.Parameter(torch.tensor(np.asarray(value, np.float32))))

    def param(self, name: str) -> nn.Parameter:
        return getattr(self, name.replace(".", "_"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "adapter.A" in self.names:
            x = x + (x @ self.param("adapter.A").T) @ self.param("adapter.B").T
        return x @ self.param("head.weight").T + self.param("head.bias")

    def arrays(self, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Copies of the named arrays (all by default) as float32 numpy."""
        return {n: self.param(n).detach().cpu().numpy().copy() for n in (names or self.names)}

    def assign(self, arrays: dict[str, np.ndarray]) -> None:
        """Put ``arrays`` (a subset of the names, same shapes) into the module."""
        with torch.no_grad():
            for name, value in arrays.items():
                self.param(name).copy_(torch.as_tensor(np.asarray(value, np.float32)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class indices ``(N,)``."""
        with torch.no_grad():
            return self(torch.as_tensor(X, dtype=torch.float32)).argmax(1).numpy()


def train_local(net: AdaptedHead, X: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch_size: int,
                seed: int, mu: float = 0.0) -> TrainState:
    """Train every array of ``net`` on ``X (N, D)``, ``y (N,)`` through :func:`~transferkit.training.train`:
    cross-entropy, plus FedProx's ``mu/2 ||w - w_start||^2`` over the arrays as they were on entry."""
    Xt = torch.as_tensor(np.asarray(X, np.float32))
    yt = torch.as_tensor(np.asarray(y, np.int64))
    anchor = {n: p.detach().clone() for n, p in net.named_parameters()} if mu else {}

    def step(idx: np.ndarray) -> torch.Tensor:
        loss = F.cross_entropy(net(Xt[idx]), yt[idx])
        if mu:
            loss = loss + mu / 2 * sum(((p - anchor[n]) ** 2).sum() for n, p in net.named_parameters())
        return loss

    opt = adamw(list(net.parameters()), lr=lr, weight_decay=0.0)
    return train(net, step, len(Xt), opt, epochs=epochs, batch_size=batch_size, seed=seed, clip=None,
                 progress=False, desc="federated client")


def fold(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Adapter and head as one linear head over raw features: ``W (I + B A) = W + (W B) A``,
    returns ``(W' (C, D), b (C,))`` float32."""
    W = np.asarray(arrays["head.weight"], np.float64)
    if "adapter.A" in arrays:
        W = W + (W @ np.asarray(arrays["adapter.B"], np.float64)) @ np.asarray(arrays["adapter.A"], np.float64)
    return W.astype(np.float32), np.asarray(arrays["head.bias"], np.float32)


def check_update(names: list[str], arrays: list[np.ndarray], expected: dict[str, tuple[int, ...]]) -> str | None:
    """Why an update must be rejected (wrong count, wrong shape, NaN/inf), or ``None`` if it is good."""
    if len(arrays) != len(names):
        return f"{len(arrays)} arrays where {len(names)} ({', '.join(names)}) were expected"
    for name, a in zip(names, arrays):
        if tuple(a.shape) != tuple(expected[name]):
            return f"{name} has shape {tuple(a.shape)}, expected {tuple(expected[name])}"
        if not np.all(np.isfinite(a)):
            return f"{name} holds NaN or inf values"
    return None


def nbytes(arrays: list[np.ndarray]) -> int:
    """Bytes of the arrays' data (what a message carries, less its framing)."""
    return int(sum(np.asarray(a).nbytes for a in arrays))


def accuracy_ci(y: np.ndarray, pred: np.ndarray, n_classes: int, seed: int = 0) -> list[float]:
    """The percentile-bootstrap 95% interval of the accuracy of ``pred (N,)`` on ``y (N,)``
    (:func:`~transferkit.evaluation.classification_metrics`'s, from hard predictions)."""
    from ..evaluation import classification_metrics

    onehot = np.eye(n_classes)[np.asarray(pred)]
    return list(classification_metrics(np.asarray(y), onehot, [str(i) for i in range(n_classes)], n_boot=1000,
                                       seed=seed)["accuracy_ci"])
