"""Adaptation strategies, one module per family, all in one registry.

Importing a module registers its strategies; ``lora`` imports PEFT only when used.
"""
from . import (  # noqa: F401 (registration)
    adabn,
    auto_adapt,
    cdan,
    contrastive,
    feature_alignment,
    gradual,
    handmade,
    input_invariance,
    l2sp,
    lora,
    lpft,
    mcc,
    protonet,
    prototype,
    selftrain,
    shot,
    tent,
    zeroshot,
)
from .base import STRATEGIES, Strategy, TransferContext
from .finetune import FineTune
from .probe import LinearProbe

__all__ = ["STRATEGIES", "Strategy", "TransferContext", "LinearProbe", "FineTune", "get_strategy"]


def get_strategy(name: str, params: dict | None = None) -> Strategy:
    """A new strategy by registry name, with validated hyper-parameters."""
    return STRATEGIES.get(name).from_params(dict(params or {}))
