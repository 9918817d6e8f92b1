"""One training run of a policy: SB3's ``learn`` in one call, evaluated and checkpointed at chunk
boundaries, resumable after a kill.

The learning curve is the mean return of ``eval_episodes`` deterministic episodes of a separately
seeded evaluation environment (the same start states at every point), measured before any
training (step 0: the jumpstart's point) and then at the first rollout start past every
``eval_every`` steps, and at the end.

Checkpoints go through :mod:`transferkit.training.checkpoint` (atomic, hashed, pickle-free) at
those same points: every learned tensor (policy state dict, SAC's entropy temperature), every
optimizer's state, SB3's counters (timesteps, updates, episodes), the RNG states and the curve so
far.  A killed run resumes from the newest one and SB3's schedules continue over the whole budget
(``learn`` is called with the remaining steps and ``reset_num_timesteps=False``).  NOT restored:
the episode in progress (the environment is reset), and for ``dqn`` / ``sac`` the replay buffer,
which starts empty again (training continues on fresh experience; with SB3's ``learning_starts``
already passed, updates resume at once on the small buffer).  PPO is checkpointed between rollouts,
so no partial rollout is lost.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserInputError
from ..training.checkpoint import capture_rng, config_hash, load_latest, restore_rng, save_checkpoint
from .envs import EnvSpec, make_env
from .policy import AlgoSpec, build_model, freeze_features, load_tensors, model_tensors, optimizers

EVAL_SEED_OFFSET = 10_000  # evaluation environments never share a seed with training ones


@dataclass
class TrainJob:
    """One policy trained (or, with ``steps=0``, only evaluated) in one environment with one seed.

    Attributes:
        init: tensors to start from (the source policy), or ``None`` (scratch).
        freeze: keep the feature layers of ``init`` (``frozen-features``).
        checkpoint_dir: where to checkpoint and resume from (``None``: no checkpoints).
    """

    algo: AlgoSpec
    env: EnvSpec
    steps: int
    seed: int
    eval_every: int
    eval_episodes: int = 5
    init: dict[str, torch.Tensor] | None = None
    freeze: bool = False
    checkpoint_dir: Path | None = None
    allow_code: bool = False
    identity: dict[str, Any] = field(default_factory=dict)  # what else makes this run (strategy, source hash)

    def config(self) -> dict[str, Any]:
        return {"algo": self.algo.to_json(), "env": self.env.to_json(), "steps": self.steps, "seed": self.seed,
                "eval_every": self.eval_every, "eval_episodes": self.eval_episodes, "freeze": self.freeze,
                **self.identity}


@dataclass
class TrainResult:
    """``steps`` (P,) and ``returns`` (P,) of the learning curve, the final tensors, the model."""

    steps: list[int]
    returns: list[float]
    tensors: dict[str, torch.Tensor]
    model: Any
    resumed_from: int | None = None


def evaluate(model: Any, spec: EnvSpec, *, seed: int, episodes: int, allow_code: bool = False) -> list[float]:
    """Returns of ``episodes`` deterministic episodes on a fresh environment seeded with ``seed``."""
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    env = Monitor(make_env(spec, seed=seed, allow_code=allow_code))
    try:
        returns, _ = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True,
                                     return_episode_rewards=True)
    finally:
        env.close()
    return [float(r) for r in returns]


def check_finite(model: Any, algorithm: str, step: int) -> None:
    """Stop at the first non-finite parameter or logged training loss, naming the step."""
    for name, t in model_tensors(model, algorithm).items():
        if not torch.isfinite(t).all():
            raise UserInputError(f"training diverged at step {step}: the policy's {name} holds NaN or inf",
                                 hint="lower the learning rate (--param learning_rate=...) or check the rewards' "
                                      "scale")
    for key, value in getattr(model.logger, "name_to_value", {}).items():
        if key.startswith("train/") and isinstance(value, float) and not math.isfinite(value):
            raise UserInputError(f"training diverged at step {step}: {key} = {value}",
                                 hint="lower the learning rate (--param learning_rate=...)")


def _state(model: Any) -> dict[str, Any]:
    counters = {"num_timesteps": int(model.num_timesteps), "n_updates": int(getattr(model, "_n_updates", 0)),
                "episode_num": int(getattr(model, "_episode_num", 0)), "n_calls": int(getattr(model, "_n_calls", 0))}
    return {"optimizers": {k: o.state_dict() for k, o in optimizers(model).items()}, "counters": counters,
            "rng": capture_rng()}


def _restore(model: Any, algorithm: str, ckpt: Any, origin: str) -> None:
    load_tensors(model, algorithm, ckpt.model, origin)
    for name, opt in optimizers(model).items():
        opt.load_state_dict(ckpt.state["optimizers"][name])
    c = ckpt.state["counters"]
    model.num_timesteps = c["num_timesteps"]
    model._n_updates, model._episode_num = c["n_updates"], c["episode_num"]
    if hasattr(model, "_n_calls"):
        model._n_calls = c["n_calls"]
    restore_rng(ckpt.state["rng"])


def _callback_class():
    from stable_baselines3.common.callbacks import BaseCallback

    class Chunks(BaseCallback):
        """At rollout starts past a boundary: check finiteness, evaluate, checkpoint."""

        def __init__(self, run: "_Run"):
            super().__init__()
            self.run = run

        def _on_rollout_start(self) -> None:
            self.run.boundary(self.model)

        def _on_step(self) -> bool:
            return True

    return Chunks


class _Run:
    def __init__(self, job: TrainJob, steps: list[int], returns: list[float]):
        self.job, self.steps, self.returns = job, steps, returns
        self.hash = config_hash(job.config())

    def point(self, model: Any) -> None:
        job = self.job
        r = evaluate(model, job.env, seed=job.seed + EVAL_SEED_OFFSET, episodes=job.eval_episodes,
                     allow_code=job.allow_code)
        self.steps.append(int(model.num_timesteps))
        self.returns.append(float(np.mean(r)))

    def boundary(self, model: Any, *, done: bool = False) -> None:
        check_finite(model, self.job.algo.algorithm, int(model.num_timesteps))
        last = self.steps[-1]
        if model.num_timesteps >= last + self.job.eval_every or (done and model.num_timesteps > last):
            self.point(model)
        elif not done:
            return
        self.save(model, done=done)

    def save(self, model: Any, *, done: bool) -> None:
        if self.job.checkpoint_dir is None:
            return
        meta = {"config_hash": self.hash, "config": self.job.config(), "curve": {"steps": self.steps,
                                                                                   "returns": self.returns},
                "done": done}
        save_checkpoint(self.job.checkpoint_dir, step=int(model.num_timesteps),
                        model=model_tensors(model, self.job.algo.algorithm), state=_state(model), meta=meta)


def train(job: TrainJob) -> TrainResult:
    """Train (or resume) ``job``; ``steps=0`` evaluates the starting policy at step 0 only.

    Raises:
        UserInputError: bad environment, settings, or diverged training (naming the step).
    """
    algorithm = job.algo.algorithm
    env = make_env(job.env, seed=job.seed, allow_code=job.allow_code)
    model = build_model(job.algo, env, seed=job.seed, env_name=job.env.env)
    if job.init is not None:
        load_tensors(model, algorithm, job.init, "the source run")
    if job.freeze:
        freeze_features(model, algorithm)
    run = _Run(job, [], [])
    ckpt = load_latest(job.checkpoint_dir, config_hash=run.hash) if job.checkpoint_dir else None
    resumed = None
    if ckpt is not None:
        _restore(model, algorithm, ckpt, str(ckpt.path))
        run.steps, run.returns = list(ckpt.meta["curve"]["steps"]), list(ckpt.meta["curve"]["returns"])
        resumed = int(model.num_timesteps)
        if ckpt.meta.get("done"):
            return TrainResult(run.steps, run.returns, model_tensors(model, algorithm), model, resumed)
    else:
        run.point(model)
        run.save(model, done=job.steps == 0)
    left = job.steps - int(model.num_timesteps)
    if left > 0:
        model.learn(total_timesteps=left, callback=_callback_class()(run), reset_num_timesteps=resumed is None,
                    progress_bar=False)
        run.boundary(model, done=True)
    env.close()
    return TrainResult(run.steps, run.returns, model_tensors(model, algorithm), model, resumed)
