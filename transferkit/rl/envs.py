"""Environments of policy transfer: a Gymnasium environment built from ``--env``, its physics
changed by ``--env-param`` (or randomised over ``--env-param-range``), and guarded so that a
misbehaving environment stops training with a clear error naming the step.

``--env`` is a registered Gymnasium id (``CartPole-v1``) or an entry point ``pkg.module:Class``
of the user's own environment class.  An entry point imports and runs the user's code, so it is
refused unless the caller passes ``allow_code=True`` (``--allow-code``); a run's card can never
set it (as ``trust_remote_code`` for backbones, :mod:`transferkit.runs.loading`).

The physics parameters each classic-control environment takes are listed in :data:`transferkit.rl.physics.PHYSICS`
(friendly name -> attribute of the unwrapped environment).  Any environment also takes the
wrapper parameters of :data:`~transferkit.rl.physics.WRAPPER_PARAMS`: ``action_noise``, ``obs_noise`` and
``reverse_actions``.  An environment not in the table may set any numeric attribute its
unwrapped instance already has; anything else is refused with the names that exist.
"""
from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import MissingDependencyError, UserInputError, shown
from .physics import PHYSICS, WRAPPER_PARAMS, known_params

_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def require_rl():
    """Import gymnasium and stable-baselines3, or say how to install them."""
    try:
        import gymnasium
        import stable_baselines3
    except ImportError:
        raise MissingDependencyError("reinforcement learning (transferkit rl)", "'transferkit[rl]'") from None
    return gymnasium, stable_baselines3


@dataclass(frozen=True)
class EnvSpec:
    """Everything that builds one environment: JSON-able, written to the policy card.

    Attributes:
        env: Gymnasium id or ``pkg.module:Class``.
        params: parameter -> value (physics and wrapper parameters).
        ranges: parameter -> ``[low, high]``: sampled uniformly at every reset (domain randomisation).
    """

    env: str
    params: dict[str, float] = field(default_factory=dict)
    ranges: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"env": self.env, "params": dict(self.params), "ranges": {k: list(v) for k, v in self.ranges.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "EnvSpec":
        return cls(env=str(d["env"]), params=dict(d.get("params") or {}), ranges=dict(d.get("ranges") or {}))


def _number(key: str, text: str, option: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise UserInputError(f"{option} {key}={text}: {text!r} is not a number",
                             hint=f"write {option} {key}=1.5") from None
    if not math.isfinite(v):
        raise UserInputError(f"{option} {key}={text}: the value must be finite")
    return v


def key_values(items: list[str] | None, option: str, example: str) -> list[tuple[str, str]]:
    """``KEY=VALUE`` options split, in order; anything else is refused with ``example``."""
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserInputError(f"{option} {item!r} is not KEY=VALUE", hint=f"write {option} {example}")
        out.append((key.strip(), value.strip()))
    return out


def parse_params(items: list[str] | None) -> dict[str, float]:
    """``["length=1.0", "masspole=0.3"]`` -> ``{"length": 1.0, "masspole": 0.3}``."""
    return {k: _number(k, v, "--env-param") for k, v in key_values(items, "--env-param", "length=1.0")}


def parse_ranges(items: list[str] | None) -> dict[str, list[float]]:
    """``["length=0.5:1.5"]`` -> ``{"length": [0.5, 1.5]}`` (low <= high)."""
    out: dict[str, list[float]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        lo, colon, hi = value.partition(":")
        if not sep or not colon or not key.strip():
            raise UserInputError(f"--env-param-range {item!r} is not KEY=LOW:HIGH",
                                 hint="write --env-param-range length=0.5:1.5")
        low, high = (_number(key.strip(), v.strip(), "--env-param-range") for v in (lo, hi))
        if low > high:
            raise UserInputError(f"--env-param-range {item}: the low end {low:g} is above the high end {high:g}")
        out[key.strip()] = [low, high]
    return out


def _check_names(spec: EnvSpec, unwrapped: Any) -> None:
    table = known_params(unwrapped)
    for name in list(spec.params) + list(spec.ranges):
        if name not in table and name not in WRAPPER_PARAMS:
            import difflib

            close = difflib.get_close_matches(name, list(table) + list(WRAPPER_PARAMS), n=1)
            raise UserInputError(
                f"{spec.env} has no parameter {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                hint=f"{spec.env} takes: {', '.join(sorted(table)) or '(no physics parameters)'}; any environment "
                     f"takes {', '.join(WRAPPER_PARAMS)} (docs: transferkit/rl/physics.py)")
    for name, value in spec.params.items():
        if name in table and value <= 0 and type(unwrapped).__name__ in PHYSICS:  # masses, lengths, forces, steps
            raise UserInputError(f"--env-param {name}={value:g}: a physical {name} must be positive")
        if name == "action_noise" and not 0 <= value <= 1 and _is_discrete(unwrapped.action_space):
            raise UserInputError(f"--env-param action_noise={value:g}: for discrete actions it is a probability "
                                 "in [0, 1]")
        if name in ("obs_noise",) and value < 0:
            raise UserInputError(f"--env-param {name}={value:g} must be >= 0")


def _is_discrete(space: Any) -> bool:
    from gymnasium import spaces

    return isinstance(space, spaces.Discrete)


def _make_base(spec: EnvSpec, allow_code: bool) -> Any:
    gym, _ = require_rl()
    if ":" in spec.env:
        if not _ENTRY_POINT.match(spec.env):
            raise UserInputError(f"--env {shown(spec.env)} is neither a Gymnasium id nor an entry point",
                                 hint="write a registered id (CartPole-v1) or my_pkg.envs:MyEnv")
        if not allow_code:
            raise UserInputError(
                f"--env {shown(spec.env)} is an entry point: building it imports and runs that module's code",
                hint="pass --allow-code (allow_code=True) if you trust that code; a run's card never enables it")
        module, _, name = spec.env.partition(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise UserInputError(f"cannot import the environment {shown(spec.env)}: {e}",
                                 hint="is the package installed, or on PYTHONPATH?") from None
        try:
            env = cls()
        except Exception as e:  # user code: any failure is theirs to fix
            raise UserInputError(f"the environment {shown(spec.env)} failed to construct: "
                                 f"{type(e).__name__}: {e}") from None
        if not isinstance(env, gym.Env):
            raise UserInputError(f"{shown(spec.env)} is not a gymnasium.Env (got {type(env).__name__})",
                                 hint="subclass gymnasium.Env with observation_space and action_space")
        return env
    try:
        return gym.make(spec.env)
    except gym.error.Error as e:
        import difflib

        close = difflib.get_close_matches(spec.env, list(gym.registry), n=3)
        raise UserInputError(f"--env {shown(spec.env)}: {e}",
                             hint=f"did you mean {', '.join(close)}?" if close else
                             "give a registered Gymnasium id (CartPole-v1, Acrobot-v1, Pendulum-v1...)") from None


def make_env(spec: EnvSpec, *, seed: int, allow_code: bool = False) -> Any:
    """The environment of ``spec``, shifted and guarded, seeded with ``seed``.

    Raises:
        UserInputError: unknown id, refused entry point, unknown or bad parameter, unusable spaces.
    """
    env = _make_base(spec, allow_code)
    _check_spaces(spec.env, env)
    _check_names(spec, env.unwrapped)
    from .wrappers import GuardWrapper, ShiftWrapper

    env = GuardWrapper(ShiftWrapper(env, spec, seed=seed), spec.env)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def _check_spaces(name: str, env: Any) -> None:
    from gymnasium import spaces

    obs, act = env.observation_space, env.action_space
    if not isinstance(obs, spaces.Box) or len(obs.shape) != 1:
        raise UserInputError(f"the environment {shown(name)} has observation space {obs}: transferkit rl takes a "
                             "flat Box (a vector of numbers)",
                             hint="flatten it with gymnasium.wrappers.FlattenObservation")
    if not isinstance(act, (spaces.Box, spaces.Discrete)):
        raise UserInputError(f"the environment {shown(name)} has action space {act}: Discrete or Box is needed")
