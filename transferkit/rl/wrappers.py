"""The wrappers of :mod:`transferkit.rl.envs`: the shift (physics, randomisation, noise, reversed
actions) and the guard that turns a misbehaving environment into a clear error.  Imports
gymnasium, so only :func:`transferkit.rl.envs.make_env` imports this module."""
from __future__ import annotations

from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..errors import UserInputError, shown
from .physics import WRAPPER_PARAMS, apply_physics

if TYPE_CHECKING:
    from .envs import EnvSpec


class ShiftWrapper(gym.Wrapper):
    """Applies the physics of ``spec.params`` once, samples ``spec.ranges`` at every reset, and adds
    action noise, observation noise and the reversed action mapping."""

    def __init__(self, env, spec: EnvSpec, seed: int):
        super().__init__(env)
        self.spec_ = spec
        self._rng = np.random.default_rng(seed + 7919)  # its own stream: the env's RNG stays the env's
        self._physics = {k: v for k, v in spec.params.items() if k not in WRAPPER_PARAMS}
        apply_physics(env.unwrapped, self._physics)
        self._ranged = {k: v for k, v in spec.ranges.items() if k not in WRAPPER_PARAMS}
        self._noise = {k: float(spec.params.get(k, 0.0)) for k in WRAPPER_PARAMS}
        self._current: dict[str, float] = {}

    def _wrapper_value(self, name: str) -> float:
        if name in self.spec_.ranges:
            return float(self._current.get(name, 0.0))
        return self._noise[name]

    def reset(self, **kwargs):
        self._current = {k: float(self._rng.uniform(lo, hi)) for k, (lo, hi) in self.spec_.ranges.items()}
        apply_physics(self.env.unwrapped, {k: v for k, v in self._current.items() if k in self._ranged})
        obs, info = self.env.reset(**kwargs)
        return self._observe(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(self._act(action))
        return self._observe(obs), reward, terminated, truncated, info

    def _act(self, action):
        space = self.env.action_space
        noise, reverse = self._wrapper_value("action_noise"), self._wrapper_value("reverse_actions") >= 0.5
        if isinstance(space, spaces.Discrete):
            a = int(np.asarray(action).reshape(-1)[0])
            if reverse:
                a = space.start + space.n - 1 - (a - space.start)
            if noise > 0 and self._rng.random() < noise:
                a = int(space.start + self._rng.integers(space.n))
            return a
        a = np.asarray(action, dtype=np.float64)
        if reverse:
            a = space.low + space.high - a
        if noise > 0:
            a = a + self._rng.normal(0.0, noise, size=a.shape) * (space.high - space.low) / 2
        return np.clip(a, space.low, space.high).astype(space.dtype)

    def _observe(self, obs):
        std = self._wrapper_value("obs_noise")
        if std > 0:
            obs = (obs + self._rng.normal(0.0, std, size=np.shape(obs))).astype(self.observation_space.dtype)
        return obs

class GuardWrapper(gym.Wrapper):
    """Turns a misbehaving environment (an exception, a non-finite or out-of-space observation, a
    non-finite reward) into a :class:`UserInputError` naming the step and the episode."""

    def __init__(self, env, name: str):
        super().__init__(env)
        self._name, self._steps, self._episodes = name, 0, 0

    def _where(self) -> str:
        return f"the environment {shown(self._name)} at step {self._steps} (episode {self._episodes})"

    def _check(self, obs, what: str):
        space = self.observation_space
        arr = np.asarray(obs)
        if arr.shape != space.shape:
            raise UserInputError(f"{self._where()}: {what} returned an observation of shape {arr.shape}, but "
                                 f"its observation space says {space.shape}",
                                 hint="make the observations match observation_space")
        if not np.all(np.isfinite(arr)):
            raise UserInputError(f"{self._where()}: {what} returned a non-finite observation {arr.tolist()}",
                                 hint="the environment's state blew up (NaN or inf): check its dynamics")
        return arr.astype(space.dtype, copy=False)

    def _call(self, fn, what: str, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserInputError:
            raise
        except Exception as e:  # user code: any failure is reported with where it happened
            raise UserInputError(f"{self._where()}: {what} raised {type(e).__name__}: {e}",
                                 hint="fix the environment's code; training stopped there") from None

    def reset(self, **kwargs):
        self._episodes += 1
        obs, info = self._call(self.env.reset, "reset()", **kwargs)
        return self._check(obs, "reset()"), info

    def step(self, action):
        self._steps += 1
        out = self._call(self.env.step, "step()", action)
        if not isinstance(out, tuple) or len(out) != 5:
            raise UserInputError(f"{self._where()}: step() returned {type(out).__name__} of length "
                                 f"{len(out) if isinstance(out, tuple) else '?'}, not the 5-tuple "
                                 "(obs, reward, terminated, truncated, info) of Gymnasium")
        obs, reward, terminated, truncated, info = out
        try:
            finite = np.isfinite(float(reward))
        except (TypeError, ValueError):
            finite = False
        if not finite:
            raise UserInputError(f"{self._where()}: step() returned the reward {reward!r}",
                                 hint="rewards must be finite numbers")
        return self._check(obs, "step()"), float(reward), bool(terminated), bool(truncated), info
