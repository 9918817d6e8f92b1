"""The optimizer every trainable strategy uses: AdamW, fused where PyTorch has the kernel.

``torch.optim.AdamW`` without ``fused`` or ``foreach`` runs its per-tensor Python loop on CPU
(``_single_tensor_adam``): for minilm-l6 that was about 0.35 s of a 5.5 s step on one core,
against 0.06 s for the fused kernel (profiled side by side, 2026-11-22), and it is what made
transferkit's fine-tuning step slower than a hand-written loop with ``fused=True`` and than
transformers' ``Trainer`` (whose default optimizer is ``adamw_torch_fused``).
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

_FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu")
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _params(groups: Iterable[Any]) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for g in groups:
        if isinstance(g, dict):
            out.extend(g["params"])
        else:
            out.append(g)
    return out


def adamw(groups: list[Any], *, lr: float, weight_decay: float = 0.01) -> torch.optim.AdamW:
    """``torch.optim.AdamW(groups, lr=..., weight_decay=...)``, with ``fused=True`` when every
    parameter is a floating tensor on a device with the fused kernel (else PyTorch's default)."""
    groups = list(groups)
    params = _params(groups)
    fused = bool(params) and all(p.device.type in _FUSED_DEVICES and p.dtype in _FUSED_DTYPES and p.is_leaf
                                 for p in params) and len({p.device.type for p in params}) == 1
    if fused:
        try:
            return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, ValueError, TypeError):  # a build or device without the kernel
            pass
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
