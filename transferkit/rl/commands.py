"""``transferkit rl pretrain | fit | evaluate`` as library functions, writing run directories.

Strategies of ``fit`` (each against ``scratch``, the control it always runs itself: the same
algorithm, network, step budget and seeds, from a random initialisation in the target):

- ``zero-shot``: the source policy as it is (its curve is flat: the policy never changes, and every
  evaluation point plays the same seeded episodes);
- ``finetune``: the source policy trained on in the target;
- ``frozen-features``: the same with the policy network's feature layers kept
  (:func:`transferkit.rl.policy.frozen_modules`);
- ``randomized-source``: fine-tuning a source pre-trained over ranges of physics
  (``rl pretrain --env-param-range length=0.5:1.5``: domain randomisation, Tobin et al. 2017).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserInputError, shown
from ..runs.rundir import RunDir, now_iso, versions
from ..training.checkpoint import prune_after_run
from .envs import EnvSpec, make_env
from .metrics import mean_ci, transfer_metrics
from .policy import AlgoSpec, build_model, load_tensors, spaces_json, versions_rl
from .train import EVAL_SEED_OFFSET, TrainJob, evaluate, train

KIND = "transferkit-rl-policy"
STRATEGIES = ("scratch", "zero-shot", "finetune", "frozen-features", "randomized-source")


def _card(algo: AlgoSpec, env: EnvSpec, space: dict, weights: dict, **extra: Any) -> dict[str, Any]:
    return {"kind": KIND, "created": now_iso(), **algo.to_json(), "env": env.to_json(), "spaces": space,
            "weights": weights, "classes": [], "versions": {**versions(), **versions_rl()}, **extra}


def _default_eval_every(steps: int) -> int:
    return max(1, steps // 10)


def pretrain(*, env: EnvSpec, algo: AlgoSpec, steps: int, out: str | os.PathLike, seed: int = 0,
             eval_every: int | None = None, eval_episodes: int = 5, allow_code: bool = False) -> dict[str, Any]:
    """Train the source policy on ``env`` (its ranges randomised at every reset) and write the run.

    Returns: the model card.
    """
    _check_budget(steps, 1)
    rd = RunDir(out)
    with rd.lock():
        rd.begin()
        rd.write_config({"env": env.to_json(), **algo.to_json(), "steps": steps, "seed": seed},
                        command="rl pretrain")
        job = TrainJob(algo, env, steps, seed, eval_every or _default_eval_every(steps), eval_episodes,
                       checkpoint_dir=rd.checkpoint_dir("source"), allow_code=allow_code,
                       identity={"strategy": "source"})
        result = train(job)
        weights = rd.write_weights(result.tensors, strategy=algo.algorithm, classes=[])
        rd.write_json("metrics.json", {"rl": {"curve": {"steps": result.steps, "returns": result.returns}}})
        card = _card(algo, env, spaces_json(result.model), weights,
                     strategy={"name": "source"}, seeds=[seed], steps=steps, randomized=bool(env.ranges))
        card = rd.write_card(card)
        prune_after_run(rd.checkpoints)
    return card


def read_policy(run: str | os.PathLike) -> tuple[RunDir, dict[str, Any], AlgoSpec, dict[str, Any]]:
    """A policy run's card, algorithm and tensors (hash-checked against the card; never a pickle)."""
    rd = RunDir(run)
    card = rd.card()
    if card.get("kind") != KIND:
        raise UserInputError(f"{shown(rd.path)} is not a policy run (written by `transferkit rl pretrain` or "
                             "`rl fit`)", hint="give the --out directory of an `rl pretrain` or `rl fit`")
    return rd, card, AlgoSpec.from_json(card), rd.read_weights(card)


def _sha(tensors: dict[str, Any]) -> str:
    """A short hash of a policy's tensors: checkpoints of a run from another source are not resumed."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _check_budget(steps: int, seeds: int) -> None:
    if steps < 0:
        raise UserInputError(f"--steps {steps}: give a number of environment steps >= 0")
    if seeds < 1:
        raise UserInputError("give at least one seed (--seeds 0,1)")


def _check_spaces(card: dict[str, Any], env: EnvSpec, allow_code: bool, origin: str) -> None:
    probe = make_env(env, seed=0, allow_code=allow_code)
    have = spaces_json(probe)
    probe.close()
    if have != card.get("spaces"):
        raise UserInputError(f"{env.env} has spaces {have}, but the policy of {origin} was trained on "
                             f"{card.get('spaces')}", hint="transfer needs the same observation and action spaces")


def _align(steps: list[int], curve_steps: list[int], returns: list[float]) -> list[float]:
    """A curve on the control's evaluation steps (they coincide for one algorithm and budget;
    a curve measured elsewhere is interpolated, a flat zero-shot curve is repeated)."""
    if list(curve_steps) == list(steps):
        return list(returns)
    return np.interp(steps, curve_steps, returns).tolist()


def fit(*, source: str | os.PathLike, env: EnvSpec, strategies: list[str], steps: int, seeds: list[int],
        out: str | os.PathLike, threshold: float | None = None, eval_every: int | None = None,
        eval_episodes: int = 5, allow_code: bool = False,
        randomized_source: str | os.PathLike | None = None) -> dict[str, Any]:
    """Transfer the policy of ``source`` to ``env`` with each of ``strategies`` and with ``scratch``,
    over ``seeds``; write the run (the first strategy's seed-0 policy, metrics, report).
    ``randomized_source``: the source of ``randomized-source`` (default ``source``), so that it is
    compared with the others in one run (one scratch control for all).

    Returns: ``metrics.json``'s content.
    """
    _check_budget(steps, len(seeds))
    if not strategies:
        raise UserInputError("give a --strategy", hint=f"one or more of {', '.join(STRATEGIES)}, comma-separated")
    for s in strategies:
        if s not in STRATEGIES:
            raise UserInputError(f"unknown --strategy {s!r}", hint=f"choose among {', '.join(STRATEGIES)}")
    src_dir, src_card, algo, src_tensors = read_policy(source)
    _check_spaces(src_card, env, allow_code, shown(src_dir.path))
    inits = {name: src_tensors for name in strategies}
    if "randomized-source" in strategies:
        rand_dir, rand_card, rand_algo, inits["randomized-source"] = (
            read_policy(randomized_source) if randomized_source else (src_dir, src_card, algo, src_tensors))
        if not (rand_card.get("env") or {}).get("ranges"):
            raise UserInputError(f"--strategy randomized-source needs a source pre-trained over ranges of physics, "
                                 f"but {shown(rand_dir.path)} was trained on fixed ones",
                                 hint="pre-train it with `transferkit rl pretrain ... --env-param-range "
                                      "length=0.5:1.5` (and name it with --randomized-source)")
        if rand_algo != algo:
            raise UserInputError(f"{shown(rand_dir.path)} has another algorithm or network than {shown(src_dir.path)}"
                                 f" ({rand_algo.to_json()} vs {algo.to_json()})",
                                 hint="pre-train both sources with the same --algo, --net-arch and --param")
        _check_spaces(rand_card, env, allow_code, shown(rand_dir.path))
    every = eval_every or _default_eval_every(steps)
    names = list(dict.fromkeys([*strategies, "scratch"]))
    rd = RunDir(out)
    with rd.lock():
        rd.begin()
        rd.write_config({"source": str(src_dir.path), "randomized_source": randomized_source and str(randomized_source),
                         "env": env.to_json(), "strategies": names, "steps": steps,
                         "seeds": seeds, "threshold": threshold, "eval_every": every,
                         "eval_episodes": eval_episodes}, command="rl fit")
        results = {}
        for name in names:
            for seed in seeds:
                transfer = name != "scratch"
                job = TrainJob(algo, env, 0 if name == "zero-shot" else steps, seed, every, eval_episodes,
                               init=inits[name] if transfer else None, freeze=name == "frozen-features",
                               checkpoint_dir=rd.checkpoint_dir(f"{name}-seed{seed}"), allow_code=allow_code,
                               identity={"strategy": name,
                                         "source": _sha(inits[name]) if transfer else None})
                results[(name, seed)] = train(job)
        grid = results[("scratch", seeds[0])].steps
        curves = {name: np.array([_align(grid, results[(name, s)].steps, results[(name, s)].returns)
                                  for s in seeds]) for name in names}
        rl = transfer_metrics(grid, curves, threshold=threshold)
        primary = strategies[0]
        metrics = {"rl": {**rl, "strategy": primary, "algorithm": algo.algorithm, "seed_list": list(seeds),
                          "env": env.to_json(), "source_env": src_card.get("env")},
                   "verdict": rl["verdicts"].get(primary) if primary != "scratch" else None}
        rd.write_json("metrics.json", metrics)
        delivered = results[(primary, seeds[0])]
        weights = rd.write_weights(delivered.tensors, strategy=algo.algorithm, classes=[])
        from .report import write_report

        write_report(rd, metrics)
        rd.write_card(_card(algo, env, spaces_json(delivered.model), weights, strategy={"name": primary},
                            seeds=list(seeds),
                            steps=steps, lineage=src_dir.lineage_entry(),
                            randomized_lineage=RunDir(randomized_source).lineage_entry() if randomized_source else None,
                            verdict=(metrics["verdict"] or {}).get("verdict")))
        prune_after_run(rd.checkpoints)
    return metrics


def evaluate_run(run: str | os.PathLike, *, env: EnvSpec | None = None, episodes: int = 100, seed: int = 0,
                 allow_code: bool = False) -> dict[str, Any]:
    """Returns of ``episodes`` deterministic episodes of a run's policy on ``env`` (default: the card's),
    with a bootstrap interval of the mean.  An entry-point environment in the card still needs the
    caller's ``allow_code``: a card never enables code."""
    if episodes < 1:
        raise UserInputError(f"--episodes {episodes}: give at least one episode")
    rd, card, algo, tensors = read_policy(run)
    spec = env or EnvSpec.from_json(card["env"])
    _check_spaces(card, spec, allow_code, shown(rd.path))
    model = build_model(algo, make_env(spec, seed=seed, allow_code=allow_code), seed=seed, env_name=spec.env)
    load_tensors(model, algo.algorithm, tensors, shown(rd.path))
    returns = evaluate(model, spec, seed=seed + EVAL_SEED_OFFSET, episodes=episodes, allow_code=allow_code)
    mean, ci = mean_ci(np.asarray(returns), 2000, seed, 0.95)
    return {"run": str(Path(run)), "env": spec.to_json(), "episodes": episodes, "mean_return": mean,
            "mean_return_ci": ci, "returns": returns}
