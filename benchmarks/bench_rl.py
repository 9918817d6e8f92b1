"""Policy transfer on Gymnasium's classic-control environments: every strategy against scratch on
Taylor & Stone's metrics, over seeds.

Cases (source -> target; the source trained once, the target budget the same for every strategy):

- ``cartpole``: CartPole-v1 -> a longer, heavier pole (length 0.5 -> 1.0, masspole 0.1 -> 0.3), PPO;
- ``acrobot``: Acrobot-v1 -> heavier links (both masses 1 -> 2), PPO;
- ``pendulum``: Pendulum-v1 -> stronger gravity (10 -> 14), SAC;
- ``reversed``: CartPole-v1 -> the same physics with the action mapping reversed: an unrelated
  shift where the source policy misleads (the goal: a detected "hurt").

Strategies: zero-shot, finetune, frozen-features and randomized-source (a second source pre-trained
over ranges of the changed parameters), each against scratch (``transferkit.rl.commands.fit`` runs
it). Reported per case and strategy: the gains over scratch in jumpstart, time to threshold, area
under the curve and asymptotic return with 95% bootstrap intervals over seeds, the verdict, and the
step budget from which transfer stops mattering (the first evaluation step from which every later
point's paired interval of strategy minus scratch includes 0).

Finished runs are read back from ``--work`` (so cases can run in separate processes with
``--no-write`` and a final run without it collects them).  Run: ``python benchmarks/bench_rl.py``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

C.setup_env()
NAME = "rl"
STRATEGIES = ["zero-shot", "finetune", "frozen-features", "randomized-source"]
#: case -> (algo, env, target params, randomised ranges of the second source (None: no randomized-source),
#: source steps, source evaluation interval, target steps, target evaluation interval)
CASES = {
    "cartpole": ("ppo", "CartPole-v1", {"length": 1.0, "masspole": 0.3},
                 {"length": [0.25, 1.25], "masspole": [0.05, 0.4]}, 10000, 512, 2048, 512),
    "acrobot": ("ppo", "Acrobot-v1", {"link_mass_1": 2.0, "link_mass_2": 2.0},
                {"link_mass_1": [0.5, 2.5], "link_mass_2": [0.5, 2.5]}, 15000, 512, 2048, 512),
    "pendulum": ("sac", "Pendulum-v1", {"gravity": 14.0}, {"gravity": [6.0, 16.0]}, 4000, 500, 1000, 250),
    "reversed": ("ppo", "CartPole-v1", {"reverse_actions": 1.0},
                 {"length": [0.25, 1.25], "masspole": [0.05, 0.4]}, 10000, 512, 2048, 512),
}
SOURCE_OF = {"reversed": "cartpole"}  # the same source policies: only the target differs


def _source(work: Path, case: str, randomized: bool, a) -> Path:
    from transferkit.rl.commands import pretrain
    from transferkit.rl.envs import EnvSpec
    from transferkit.rl.policy import make_algo
    from transferkit.runs.rundir import RunDir

    owner = SOURCE_OF.get(case, case)
    algo, env, _, ranges, steps, every, _, _ = CASES[owner]
    out = work / owner / ("src-rand" if randomized else "src")
    if not RunDir(out).is_complete():
        t = time.perf_counter()
        pretrain(env=EnvSpec(env, ranges=ranges if randomized else {}), algo=make_algo(algo),
                 steps=int(steps * a.scale), out=out, eval_every=every, eval_episodes=a.eval_episodes)
        C.say(f"{owner}: {'randomized ' if randomized else ''}source {int(steps * a.scale)} steps in "
              f"{time.perf_counter() - t:.0f} s")
    return out


def _case(work: Path, case: str, a) -> dict:
    import json

    from transferkit.rl.commands import fit
    from transferkit.rl.envs import EnvSpec
    from transferkit.runs.rundir import RunDir

    algo, env, params, ranges, _, _, steps, every = CASES[case]
    out = work / case / "fit"
    seeds = list(range(a.seeds if case != "pendulum" else min(a.seeds, a.pendulum_seeds)))
    strategies = STRATEGIES if ranges else STRATEGIES[:3]
    if RunDir(out).is_complete():
        m = json.loads((out / "metrics.json").read_text())
        if m["rl"]["seed_list"] == seeds:
            return m
    src = _source(work, case, False, a)
    src_rand = _source(work, case, True, a) if ranges else None
    t = time.perf_counter()
    m = fit(source=src, randomized_source=src_rand, env=EnvSpec(env, params), strategies=strategies,
            steps=int(steps * a.scale), seeds=seeds, out=out, eval_every=every, eval_episodes=a.eval_episodes)
    m["rl"]["wall_s"] = time.perf_counter() - t
    (out / "metrics.json").write_text(json.dumps(m))
    C.say(f"{case}: {len(seeds)} seeds, {len(strategies) + 1} strategies in {m['rl']['wall_s']:.0f} s")
    return m


def stops_mattering(rl: dict, name: str) -> int | None:
    """First evaluation step from which every later paired interval (strategy - scratch) includes 0."""
    import numpy as np

    from transferkit.tasks.base import bootstrap

    diff = np.array(rl["curves"][name]["per_seed"]) - np.array(rl["curves"]["scratch"]["per_seed"])
    _, (ci,) = bootstrap(lambda c: c @ diff / len(diff), len(diff), 2000, 0, 0.95)
    differs = (ci[0] > 0) | (ci[1] < 0)
    later = [i for i in range(len(differs)) if not differs[i:].any()]
    return int(rl["steps"][later[0]]) if later else None


def _gain(v: dict, digits: int = 0) -> str:
    lo, hi = v["gain_ci"]
    return f"{v['gain']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--pendulum-seeds", type=int, default=5, help="SAC is the slowest: fewer seeds where CPU is short")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every step budget")
    ap.add_argument("--eval-episodes", type=int, default=3)
    ap.add_argument("--work", default="/tmp/transferkit-bench-rl", help="runs are kept (and read back) here")
    ap.add_argument("--no-write", action="store_true")
    a = C.parse_args(ap)
    m = C.machine()
    C.warn_if_busy(m)
    work = Path(a.work)
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    t0 = time.perf_counter()
    results = {c: _case(work, c, a) for c in cases}
    rows, per_case, goal_related, goal_hurt = [], {}, [], []
    for case, mm in results.items():
        rl = mm["rl"]
        algo, env, params, *_ = CASES[case]
        per_case[case] = {"algo": algo, "env": env, "params": params, "steps": rl["steps"], "seeds": rl["seeds"],
                          "threshold": rl["threshold"], "strategies": {}}
        for name in [s for s in STRATEGIES if s in rl["verdicts"]]:
            verdict = _verdict_of(rl, name)
            stop = stops_mattering(rl, name)
            per_case[case]["strategies"][name] = {
                k: rl[k][name] for k in ("jumpstart", "time_to_threshold", "area_under_curve", "asymptotic_return")}
            per_case[case]["strategies"][name].update(verdict=verdict, stops_mattering=stop)
            rows.append([case, name, _gain(rl["jumpstart"][name], 1), _gain(rl["time_to_threshold"][name]),
                         _gain(rl["area_under_curve"][name], 1), _gain(rl["asymptotic_return"][name], 1),
                         f"**{verdict}**", "never differed" if stop == 0 else (stop if stop is not None else
                                                                                 "still differs at the end")])
        ft = rl["jumpstart"]["finetune"], rl["time_to_threshold"]["finetune"]
        if case == "reversed":
            hurt = _verdict_of(rl, "finetune") == "hurt"
            goal_hurt.append((case, f"finetune verdict {_verdict_of(rl, 'finetune')}, jumpstart "
                                    f"{ft[0]['gain']:+.0f}", hurt))
        else:
            ok = (ft[0]["gain_ci"][0] > 0) and ft[1]["gain"] > 0
            goal_related.append((case, f"finetune jumpstart {_gain(ft[0])}, time to threshold {ft[1]['gain']:+.0f} "
                                       "steps", ok))
    wall = time.perf_counter() - t0
    seeds_text = ", ".join(f"{c} {results[c]['rl']['seeds']}" for c in cases)
    walls = ", ".join(f"{c} {results[c]['rl'].get('wall_s', float('nan')) / 60:.0f} min" for c in cases)
    summary = []
    if goal_related:
        summary.append(C.one_goal("Policy transfer, related physics shifts",
                                  "finetune: jumpstart interval above 0 and time to threshold shortened",
                                  goal_related, NAME, f"seeds: {seeds_text}"))
    if goal_hurt:
        summary.append(C.one_goal("Policy transfer, unrelated shift (reversed actions)",
                                  "negative transfer detected (verdict hurt)", goal_hurt, NAME))
    res = {"machine": m, "cases": per_case, "wall_s": wall, "summary": summary}
    budget = "; ".join(f"{c}: {CASES[c][0]}, source {int(CASES[SOURCE_OF.get(c, c)][4] * a.scale)} steps, target "
                       f"{int(CASES[c][6] * a.scale)} steps, evaluation every {CASES[c][7]} steps"
                       + ("" if CASES[c][3] else " (no randomized source: CPU)") for c in cases)
    lines = ["## Reinforcement learning: policy transfer (`benchmarks/bench_rl.py`)", "",
             f"{C.machine_line(m)} Gymnasium classic control with Stable-Baselines3 (CPU shared with other "
             f"agents' work; the target runs of each case took {walls} of wall time, sources not counted; this "
             f"collection {wall / 60:.0f} min, runs read back from `--work`). Seeds per case: {seeds_text}; "
             f"{a.eval_episodes} deterministic evaluation episodes per point. Budgets: {budget}. Gains are "
             "strategy minus scratch (time to threshold: steps saved) "
             "with 95% bootstrap intervals over seeds; the verdict is on the area under the curve; \"transfer "
             "stops mattering\" is the first evaluation step from which every later point's paired interval "
             "includes 0.", "",
             C.md_table(["case", "strategy", "jumpstart", "time to threshold (steps saved)", "area under curve",
                         "asymptotic return", "verdict", "transfer stops mattering at step"], rows), "",
             "Scratch's return at step 0 per seed (a randomly initialised policy; the jumpstart is measured "
             "against it): " + "; ".join(
                 f"{c} {', '.join(f'{x:.0f}' for x in results[c]['rl']['jumpstart']['scratch']['per_seed'])}"
                 for c in cases) + ". Time to threshold counts a curve that never reaches the threshold as one "
             "evaluation interval past the budget."]
    C.publish(NAME, res, "\n".join(lines), a.no_write)
    if not a.no_write:
        C.say("\n".join(lines))


def _verdict_of(rl: dict, name: str) -> str:
    return rl["verdicts"][name]["verdict"]


if __name__ == "__main__":
    main()
