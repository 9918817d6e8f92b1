"""Stable-Baselines3 models as transferkit builds, saves and loads them.

A policy is never stored in SB3's own zip (it holds pickles): its tensors go to
``strategy.safetensors`` through :class:`~transferkit.runs.RunDir` and its card says how to rebuild
the model (algorithm, network shape, hyper-parameters, environment id and parameters, spaces,
seeds, versions).  Loading rebuilds the SB3 model from the card, then loads the state dict
(strictly: every tensor name and shape must match).

Algorithms (SB3's implementations; nothing here is an RL algorithm): ``ppo`` (Schulman et al.
2017; Discrete or Box actions), ``dqn`` (Mnih et al. 2015; Discrete), ``sac`` (Haarnoja et al.
2018; Box).  Their defaults below are SB3's, changed only where classic-control tasks at small
step budgets need it (shorter rollouts, earlier learning starts); ``--param`` overrides any.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UserInputError
from .envs import key_values, require_rl

#: name -> (SB3 class name, action spaces it takes, default hyper-parameters).
ALGORITHMS: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {
    "ppo": ("PPO", ("Discrete", "Box"), {"n_steps": 256, "batch_size": 64, "n_epochs": 10, "learning_rate": 1e-3,
                                         "gamma": 0.98, "gae_lambda": 0.9}),
    "dqn": ("DQN", ("Discrete",), {"learning_starts": 500, "train_freq": 4, "target_update_interval": 250,
                                   "exploration_fraction": 0.2, "learning_rate": 1e-3, "buffer_size": 50_000,
                                   "batch_size": 64}),
    "sac": ("SAC", ("Box",), {"learning_starts": 500, "buffer_size": 50_000, "batch_size": 128,
                              "learning_rate": 1e-3}),
}
DEFAULT_NET_ARCH = (64, 64)
#: Tensors of the algorithm that are not in the policy's state dict but are learned (SAC's entropy temperature).
_EXTRA = {"sac": ("log_ent_coef",)}


@dataclass(frozen=True)
class AlgoSpec:
    """How a model is built: algorithm, hidden layer widths, hyper-parameters (JSON-able)."""

    algorithm: str
    net_arch: tuple[int, ...] = DEFAULT_NET_ARCH
    hyper: tuple[tuple[str, Any], ...] = ()

    def kwargs(self) -> dict[str, Any]:
        return {**ALGORITHMS[self.algorithm][2], **dict(self.hyper)}

    def to_json(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "net_arch": list(self.net_arch), "hyperparameters": self.kwargs()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "AlgoSpec":
        return make_algo(d["algorithm"], d.get("net_arch"), d.get("hyperparameters"))


def make_algo(algorithm: str, net_arch: Any = None, hyper: dict[str, Any] | None = None) -> AlgoSpec:
    """Checked :class:`AlgoSpec`: a known algorithm, positive layer widths, hyper-parameters its SB3 class takes."""
    if algorithm not in ALGORITHMS:
        raise UserInputError(f"unknown --algo {algorithm!r}", hint=f"choose one of {', '.join(ALGORITHMS)}")
    arch = tuple(DEFAULT_NET_ARCH if net_arch is None else net_arch)
    if not arch or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in arch):
        raise UserInputError(f"--net-arch {list(arch)}: give positive layer widths", hint="write --net-arch 64,64")
    hyper = dict(hyper or {})
    _, sb3 = require_rl()
    cls = getattr(sb3, ALGORITHMS[algorithm][0])
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "policy", "env", "seed", "device",
                                                                 "policy_kwargs", "verbose", "tensorboard_log",
                                                                 "_init_setup_model"}
    for key, value in hyper.items():
        if key not in allowed:
            import difflib

            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            raise UserInputError(f"{algorithm} has no hyper-parameter {key!r}" +
                                 (f" (did you mean {close[0]!r}?)" if close else ""),
                                 hint=f"{algorithm} takes: {', '.join(sorted(allowed))}")
        try:
            json.dumps(value)
        except TypeError:
            raise UserInputError(f"--param {key}: give a JSON value") from None
    return AlgoSpec(algorithm, arch, tuple(sorted(hyper.items())))


def parse_hyper(items: list[str] | None) -> dict[str, Any]:
    """``["learning_rate=3e-4", "n_steps=128"]`` -> values parsed as JSON (else kept as text)."""
    out: dict[str, Any] = {}
    for key, text in key_values(items, "--param", "learning_rate=0.0003"):
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def check_action_space(algo: AlgoSpec, env: Any, env_name: str) -> None:
    kind = type(env.action_space).__name__
    if kind not in ALGORITHMS[algo.algorithm][1]:
        fits = [a for a, (_, kinds, _) in ALGORITHMS.items() if kind in kinds]
        raise UserInputError(f"--algo {algo.algorithm} needs {' or '.join(ALGORITHMS[algo.algorithm][1])} actions, "
                             f"but {env_name} has {env.action_space}", hint=f"use --algo {' or '.join(fits)}")


def build_model(algo: AlgoSpec, env: Any, *, seed: int, env_name: str) -> Any:
    """A fresh SB3 model of ``algo`` on ``env`` (CPU: small MLPs run faster there than on a GPU)."""
    _, sb3 = require_rl()
    check_action_space(algo, env, env_name)
    cls = getattr(sb3, ALGORITHMS[algo.algorithm][0])
    try:
        return cls("MlpPolicy", env, seed=seed, device="cpu", verbose=0,
                   policy_kwargs={"net_arch": list(algo.net_arch)}, **algo.kwargs())
    except (ValueError, TypeError, AssertionError) as e:  # SB3 checks its hyper-parameters
        raise UserInputError(f"{algo.algorithm} refused its settings {algo.kwargs()}: {e}") from None


def model_tensors(model: Any, algorithm: str) -> dict[str, torch.Tensor]:
    """Every learned tensor: the policy's state dict plus the algorithm's own (``_algo.*``)."""
    out = {k: v.detach().clone() for k, v in model.policy.state_dict().items()}
    for name in _EXTRA.get(algorithm, ()):
        value = getattr(model, name, None)
        if isinstance(value, torch.Tensor):
            out[f"_algo.{name}"] = value.detach().clone()
    return out


def load_tensors(model: Any, algorithm: str, tensors: dict[str, torch.Tensor], origin: str) -> None:
    """Put ``tensors`` (from :func:`model_tensors`) into ``model``; names and shapes must match exactly."""
    policy = {k: v for k, v in tensors.items() if not k.startswith("_algo.")}
    want = {k: tuple(v.shape) for k, v in model.policy.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in policy.items()}
    if want != have:
        missing = sorted(set(want) - set(have))[:3]
        other = sorted(k for k in set(want) & set(have) if want[k] != have[k])[:3]
        raise UserInputError(f"the policy of {origin} does not fit this model (missing {missing}, other shapes "
                             f"{other})", hint="the algorithm, --net-arch and the environment's spaces must be the "
                                               "source's")
    model.policy.load_state_dict(policy, strict=True)
    for name in _EXTRA.get(algorithm, ()):
        value = tensors.get(f"_algo.{name}")
        current = getattr(model, name, None)
        if value is not None and isinstance(current, torch.Tensor):
            with torch.no_grad():
                current.copy_(value)


def frozen_modules(model: Any, algorithm: str) -> list[torch.nn.Module]:
    """The policy network's feature layers, which ``frozen-features`` keeps: PPO's hidden layers
    (``mlp_extractor``, policy and value sides), DQN's Q-network but its last linear layer, SAC's
    actor body (``latent_pi``; the critics keep learning: they are not the policy)."""
    policy = model.policy
    if algorithm == "ppo":
        return [policy.mlp_extractor]
    if algorithm == "dqn":
        layers = [m for m in policy.q_net.q_net if isinstance(m, torch.nn.Linear)]
        return layers[:-1]
    return [policy.actor.latent_pi]


def freeze_features(model: Any, algorithm: str) -> int:
    """Stop gradients into :func:`frozen_modules`; returns the number of frozen tensors.  The
    optimizers still hold them, but Adam skips a parameter without a gradient."""
    n = 0
    for module in frozen_modules(model, algorithm):
        for p in module.parameters():
            p.requires_grad_(False)
            n += 1
    return n


def optimizers(model: Any) -> dict[str, torch.optim.Optimizer]:
    """The model's optimizers by name (SAC has three), for checkpoints."""
    found = {"policy": getattr(model.policy, "optimizer", None)}
    if hasattr(model, "actor"):
        found = {"actor": model.actor.optimizer, "critic": model.critic.optimizer,
                 "ent_coef": getattr(model, "ent_coef_optimizer", None)}
    return {k: v for k, v in found.items() if v is not None}


def spaces_json(env: Any) -> dict[str, Any]:
    """The spaces a policy was trained on, for the card and the check at load time."""
    obs, act = env.observation_space, env.action_space
    out: dict[str, Any] = {"observation_shape": list(obs.shape), "action_type": type(act).__name__}
    if type(act).__name__ == "Discrete":
        out["action_n"] = int(act.n)
    else:
        out["action_shape"] = list(act.shape)
    return out


def versions_rl() -> dict[str, str]:
    gym, sb3 = require_rl()
    return {"gymnasium": gym.__version__, "stable-baselines3": sb3.__version__}
