"""Elastic weight consolidation (Kirkpatrick et al., "Overcoming catastrophic forgetting in
neural networks", PNAS 2017).

After learning the earlier data, each parameter's importance is the diagonal of the Fisher
information of the model's predictive distribution, ``F_k = E_x sum_y p(y|x) (d log p(y|x) /
d theta_k)^2`` (the true Fisher, the expectation over the model's own labels taken exactly for
the ``C`` classes, not sampled); learning the new data then adds ``lambda / 2 * sum_k F_k
(theta_k - theta*_k)^2`` to the loss, ``theta*`` the earlier parameters.  Over several updates
the Fishers add up (online EWC, Schwarz et al., "Progress & Compress", ICML 2018, with decay 1),
anchored at the latest parameters.  A parameter that grew (new classes add head rows) has no
Fisher for its new entries: they learn freely.
"""
from __future__ import annotations

import torch
from torch import nn


def fisher_diagonal(module: nn.Module, inputs: torch.Tensor, *, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """The diagonal true Fisher of ``module`` (inputs ``(N, ...)`` -> logits ``(N, C)``) over the
    ``N`` items: ``{parameter name: tensor of its shape}``, the mean over items.

    Per-item gradients of every class's log-probability come from ``torch.func`` (``jacrev``
    vmapped over the items), so the cost is one Jacobian ``(C, P)`` per item.
    """
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in module.named_parameters() if v.requires_grad}
    if not params or len(inputs) == 0:
        raise ValueError("the Fisher needs trainable parameters and at least one item")

    def log_probs(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(functional_call(module, p, (x.unsqueeze(0),)).squeeze(0), dim=-1)

    jac = vmap(jacrev(log_probs), in_dims=(None, 0))
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    was = module.training
    module.eval()
    try:
        for start in range(0, len(inputs), batch_size):
            x = inputs[start:start + batch_size]
            with torch.no_grad():
                p = torch.softmax(module(x), dim=-1)  # (b, C)
            grads = jac(params, x)  # name -> (b, C, *shape)
            for k, g in grads.items():
                w = p.reshape(*p.shape, *([1] * (g.dim() - 2)))
                total[k] += (w * g.detach() ** 2).sum(dim=(0, 1))
    finally:
        module.train(was)
    return {k: v / len(inputs) for k, v in total.items()}


def grown(t: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """``t`` zero-padded at the end of each dimension to ``shape`` (a head with more classes)."""
    if tuple(t.shape) == tuple(shape):
        return t
    if len(shape) != t.dim() or any(a > b for a, b in zip(t.shape, shape)):
        raise ValueError(f"cannot grow a tensor of shape {tuple(t.shape)} to {tuple(shape)}")
    out = torch.zeros(shape, dtype=t.dtype)
    out[tuple(slice(0, n) for n in t.shape)] = t
    return out


def ewc_penalty(module: nn.Module, anchor: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor]) -> torch.Tensor:
    """``1/2 sum_k F_k (theta_k - theta*_k)^2`` over the parameters named in ``fisher`` (anchor and
    Fisher grown with zeros to the parameter's shape: new entries are free)."""
    total = torch.zeros(())
    params = dict(module.named_parameters())
    for k, f in fisher.items():
        p = params[k]
        a = grown(anchor[k], p.shape).to(p.device, p.dtype)
        total = total + 0.5 * (grown(f, p.shape).to(p.device, p.dtype) * (p - a) ** 2).sum()
    return total
