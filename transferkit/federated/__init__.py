"""Federated transfer learning on Flower (``transferkit federate``): one frozen pre-trained
backbone on every client, a small trainable part (a low-rank feature adapter and a linear head,
:mod:`.head`) trained on each client's cached features and aggregated by Flower's strategies
(:mod:`.server`: FedAvg, FedProx, FedPer), the clients as Flower clients (:mod:`.client`), the
one-machine mode with its controls (:mod:`.local`, :mod:`.run`).

Flower (``flwr``) is imported only by :mod:`.server` and :mod:`.client`: :func:`require_flower`
names the install when it is missing.
"""
from __future__ import annotations

from ..errors import MissingDependencyError


def require_flower() -> None:
    """Raise :class:`MissingDependencyError` unless Flower is installed."""
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise MissingDependencyError("federated learning (transferkit federate)", "'transferkit[federated]'") from None
