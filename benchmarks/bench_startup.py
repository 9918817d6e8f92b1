"""Start-up: whole-process wall time of ``transferkit --help`` (and ``transferkit models``) against
``python -c "import numpy"``, the old package and the new one side by side in one run.

The old package is the tree of ``--base`` (the commit before issue #25's lazy imports), extracted
with ``git archive`` into a temporary folder and put first on ``PYTHONPATH``; the new one is this
checkout.  Every command runs ``--repeats`` times in a fresh interpreter, the commands interleaved
(so that a burst of load from other processes hits them all alike); reported: the median.

Run: ``python benchmarks/bench_startup.py [--repeats 15] [--base cad4b8e]``
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

GOAL = 4.0  # the goal: --help at most 4x the time of importing numpy


def old_tree(base: str) -> Path:
    """The ``transferkit`` package of commit ``base``, extracted into a temporary folder."""
    d = Path(tempfile.mkdtemp(prefix="tk-bench-startup-"))
    arch = subprocess.run(["git", "archive", base, "transferkit"], cwd=C.REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(d)], input=arch.stdout, check=True)
    return d


def wall(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    # cwd = the tree on PYTHONPATH: ``python -m`` puts the working directory first on sys.path
    subprocess.run(cmd, env=env, cwd=env["PYTHONPATH"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--base", default="cad4b8e", help="the commit whose package is 'old'")
    ap.add_argument("--no-write", action="store_true")
    a = C.parse_args(ap)
    C.setup_env()
    load = C.OtherLoad()
    m = C.machine()
    C.say(C.machine_line(m))
    py = sys.executable
    env_new = dict(os.environ, PYTHONPATH=str(C.REPO))
    env_old = dict(os.environ, PYTHONPATH=str(old_tree(a.base)))
    cli = [py, "-m", "transferkit.cli"]
    cases = {
        "python -c pass": ([py, "-c", "pass"], env_new),
        'python -c "import numpy"': ([py, "-c", "import numpy"], env_new),
        "transferkit --help (old)": ([*cli, "--help"], env_old),
        "transferkit --help (new)": ([*cli, "--help"], env_new),
        "transferkit models (old)": ([*cli, "models"], env_old),
        "transferkit models (new)": ([*cli, "models"], env_new),
    }
    for cmd, env in cases.values():  # warm the page cache once: every case then starts alike
        wall(cmd, env)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(a.repeats):
        for k, (cmd, env) in cases.items():
            times[k].append(wall(cmd, env))
    med = {k: statistics.median(v) for k, v in times.items()}
    numpy_s = med['python -c "import numpy"']
    ratios = {k: v / numpy_s for k, v in med.items()}
    for k in cases:
        C.say(f"{k:32s} median {1000 * med[k]:7.0f} ms  = {ratios[k]:5.2f}x numpy import")
    m["cpu_other_during_pct"] = load.pct()
    new_ratio = ratios["transferkit --help (new)"]
    res = {"machine": m, "repeats": a.repeats, "base": a.base, "seconds": times, "median_s": med,
           "ratio_to_numpy": ratios,
           "summary": [{"item": "`transferkit --help`, whole process", "goal": f"<= {GOAL:g}x `python -c \"import "
                        "numpy\"`", "measured": f"{new_ratio:.1f}x ({1000 * med['transferkit --help (new)']:.0f} ms "
                        f"vs {1000 * numpy_s:.0f} ms; before: {ratios['transferkit --help (old)']:.1f}x)",
                        "met": new_ratio <= GOAL, "anchor": "startup"}]}
    body = report(res)
    C.publish("startup", res, body, a.no_write)
    if not a.no_write:
        C.say(body)


def report(res: dict) -> str:
    med, r = res["median_s"], res["ratio_to_numpy"]
    rows = [[f"`{k}`", f"{1000 * v:.0f}", f"{r[k]:.2f}x"] for k, v in med.items()]
    new = r["transferkit --help (new)"]
    return f"""## Start-up

{C.machine_line(res["machine"])} The CPU was shared with other agents' work (8 at once): the ratios
to the numpy import, measured interleaved in the same run, are the figures to read.

Whole-process wall time, median of {res["repeats"]} fresh interpreters per command (interleaved);
"old" is the package at commit `{res["base"]}` (eager imports of torch, transformers, scikit-learn),
"new" this checkout (the public API and the command line import heavy libraries only when a command
needs them: `transferkit/__init__.py` resolves its names on first use, the zoo lists itself
without torch).

{C.md_table(["command", "ms", "x `import numpy`"], rows)}

Goal: `transferkit --help` <= {GOAL:g}x `python -c "import numpy"`: {"met" if new <= GOAL else "**NOT met**"}
({new:.2f}x; before {r["transferkit --help (old)"]:.2f}x). A test (tests/test_startup.py) checks that
`--help`, `models` and argument errors import no torch, transformers or scikit-learn.
"""


if __name__ == "__main__":
    main()
