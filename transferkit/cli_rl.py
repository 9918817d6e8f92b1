"""``transferkit rl pretrain | fit | evaluate``: reinforcement-learning policy transfer
(:mod:`transferkit.rl`; needs ``pip install 'transferkit[rl]'``).  Argument parsing only: the work is
in :mod:`transferkit.rl.commands`, imported when a command runs (gymnasium stays unloaded otherwise)."""
from __future__ import annotations

import argparse
import json
from typing import Any, Callable

ENV_HELP = ("registered Gymnasium id (CartPole-v1, Acrobot-v1, MountainCar-v0, Pendulum-v1) or an entry point "
            "my_pkg.envs:MyEnv of your own environment (needs --allow-code)")
PARAM_HELP = ("change the environment: physics (CartPole: length, masspole, masscart, gravity, force_mag, tau; "
              "Acrobot: link_mass_1/2, link_length_1/2; MountainCar: gravity, force; Pendulum: gravity, mass, "
              "length) or any env's action_noise, obs_noise, reverse_actions=1")


def _env_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--env", required=required, help=ENV_HELP)
    p.add_argument("--env-param", action="append", metavar="KEY=VALUE", help=PARAM_HELP)
    p.add_argument("--allow-code", action="store_true",
                   help="allow an entry-point --env (or one named by a run's card): imports and runs that code")


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give integers separated by commas") from None


def add_commands(sub: Any) -> Callable[[argparse.Namespace], int]:
    """Adds ``rl`` and its sub-commands to the top-level subparsers; returns the command's function."""
    rl = sub.add_parser("rl", help="reinforcement learning: transfer a policy to changed physics (pip install "
                                   "'transferkit[rl]')")
    rsub = rl.add_subparsers(dest="rl_command", required=True, metavar="RL_COMMAND")

    pre = rsub.add_parser("pretrain", help="train the source policy (Stable-Baselines3 on a Gymnasium environment)")
    _env_options(pre)
    pre.add_argument("--env-param-range", action="append", metavar="KEY=LOW:HIGH",
                     help="domain randomisation: sample this parameter uniformly at every reset (for the "
                          "randomized-source strategy)")
    pre.add_argument("--algo", default="ppo", help="ppo (default), dqn (discrete actions) or sac (continuous)")
    pre.add_argument("--net-arch", type=_ints, metavar="W,W", help="hidden layer widths (default 64,64)")
    pre.add_argument("--param", action="append", metavar="KEY=VALUE", help="an SB3 hyper-parameter (JSON value)")
    pre.add_argument("--steps", type=int, required=True, help="environment steps")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--eval-every", type=int, help="steps between evaluations and checkpoints (default steps/10)")
    pre.add_argument("--eval-episodes", type=int, default=5)
    pre.add_argument("--out", required=True, help="run directory to write")

    f = rsub.add_parser("fit", help="transfer a source policy to the target, against scratch, with metrics + verdict")
    f.add_argument("--source", required=True, help="run directory of `rl pretrain`")
    _env_options(f)
    f.add_argument("--strategy", default="finetune",
                   help="zero-shot, finetune (default), frozen-features or randomized-source; several, comma-"
                        "separated, are compared in one report (scratch always runs as the control)")
    f.add_argument("--randomized-source", metavar="RUN", help="the source of randomized-source (an `rl pretrain "
                                                               "--env-param-range` run; default --source)")
    f.add_argument("--steps", type=int, required=True, help="environment steps in the target, per seed")
    f.add_argument("--seeds", type=_ints, default=[0, 1, 2], metavar="S,S", help="training seeds (default 0,1,2)")
    f.add_argument("--threshold", type=float, help="return of time-to-threshold (default: 80%% of the way from "
                                                   "scratch's start to the best final return)")
    f.add_argument("--eval-every", type=int, help="steps between evaluations and checkpoints (default steps/10)")
    f.add_argument("--eval-episodes", type=int, default=5)
    f.add_argument("--out", required=True, help="run directory to write")

    ev = rsub.add_parser("evaluate", help="returns of a run's policy over episodes, with an interval")
    ev.add_argument("run", help="run directory of `rl pretrain` or `rl fit`")
    _env_options(ev, required=False)
    ev.add_argument("--episodes", type=int, default=100)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--json", action="store_true", help="print JSON")
    return cmd_rl


def _spec(a: argparse.Namespace, ranges: bool = False):
    from .rl.envs import EnvSpec, parse_params, parse_ranges

    return EnvSpec(a.env, parse_params(a.env_param), parse_ranges(a.env_param_range) if ranges else {})


def cmd_rl(a: argparse.Namespace) -> int:
    from .rl import commands
    from .rl.policy import make_algo, parse_hyper

    if a.rl_command == "pretrain":
        card = commands.pretrain(env=_spec(a, ranges=True), algo=make_algo(a.algo, a.net_arch, parse_hyper(a.param)),
                                 steps=a.steps, out=a.out, seed=a.seed, eval_every=a.eval_every,
                                 eval_episodes=a.eval_episodes, allow_code=a.allow_code)
        print(f"source policy ({card['algorithm']}, {card['steps']} steps on {card['env']['env']}) written to {a.out}")
        return 0
    if a.rl_command == "fit":
        strategies = [s.strip() for s in a.strategy.split(",") if s.strip()]
        m = commands.fit(source=a.source, env=_spec(a), strategies=strategies, steps=a.steps, seeds=a.seeds,
                         out=a.out, threshold=a.threshold, eval_every=a.eval_every, eval_episodes=a.eval_episodes,
                         allow_code=a.allow_code, randomized_source=a.randomized_source)
        for name, v in m["rl"]["verdicts"].items():
            print(f"{name}: {v['explanation']}")
        print(f"run written to {a.out} (report.html, metrics.json)")
        return 0
    if a.env_param and not a.env:
        from .errors import UserInputError

        raise UserInputError("--env-param needs --env", hint="name the environment too: --env CartPole-v1 "
                                                             "--env-param length=1.0")
    r = commands.evaluate_run(a.run, env=_spec(a) if a.env else None, episodes=a.episodes, seed=a.seed,
                              allow_code=a.allow_code)
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        lo, hi = r["mean_return_ci"]
        print(f"mean return {r['mean_return']:.1f} (95% CI [{lo:.1f}, {hi:.1f}]) over {r['episodes']} episodes on "
              f"{r['env']['env']} {r['env']['params'] or ''}")
    return 0
