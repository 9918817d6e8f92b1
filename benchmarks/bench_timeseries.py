"""Time-series classification transfer on UCR/UEA sets never seen in pre-training.

Targets: the classification sets bundled with aeon 1.6.0 that ``ts-fcn-ucr`` was not pre-trained on
(``TARGET_SETS`` of ``transferkit/backbones/timeseries.py``), each with its official train/test split
(items that are exact copies of a training series left out of the test set, ``--skip-bad``).
Per target, ``transferkit fit`` as the command runs it (``select=False``: the verdict's model is
the one scored), twice: ``linear-probe`` and ``finetune`` on ``ts-fcn-ucr``, defaults, seed 0.  Each
fit brings its controls: ``random-init`` (the same strategy on the randomly initialised encoder),
``rocket-logreg`` (ROCKET, 1,000 kernels + cross-validated logistic regression) and ``dtw-1nn``.
Accuracy with 95% bootstrap intervals over the test items; "helped" = the paired-bootstrap gain
interval over the control lies above zero, "hurt" = below.  The source column is the pre-training
set nearest to the target by Fawaz et al. (2018)'s prototype DTW distance (informative: the encoder
is pre-trained on all four together).

Run: ``TRANSFERKIT_UCR_DIR=.../aeon/datasets/data python benchmarks/bench_timeseries.py``
(``--sets`` a subset; ``--no-write`` prints the section only).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

C.setup_env()

from transferkit import fit  # noqa: E402
from transferkit.backbones.timeseries import PRETRAIN_SETS, TARGET_SETS  # noqa: E402
from transferkit.data import prepare_data  # noqa: E402
from transferkit.data._series import bundled_ucr_dir  # noqa: E402
from transferkit.series_features import class_prototypes, dataset_distance  # noqa: E402

STRATEGIES = ("linear-probe", "finetune")
CONTROLS = ("random-init", "rocket-logreg", "dtw-1nn")


def nearest_source(root: Path, target: str, protos: dict[str, list]) -> tuple[str, dict[str, float]]:
    p = prepare_data(root / target, skip_bad=True)
    mine = class_prototypes(p.train.inputs, p.train.labels)
    d = {s: dataset_distance(mine, pr) for s, pr in protos.items()}
    return min(d, key=d.get), d


def one_fit(root: Path, name: str, strategy: str, work: Path) -> dict:
    out = work / f"{name}-{strategy}"
    t = time.perf_counter()
    fit(data=str(root / name), strategy=strategy, skip_bad=True, select=False, out=str(out), log=None)
    m = json.loads((out / "metrics.json").read_text())
    row = {"set": name, "strategy": strategy, "n_train": m["n_train"], "n_test": m["n_test"],
           "accuracy": m["test"]["accuracy"], "ci": m["test"]["accuracy_ci"], "verdict": m["verdict"],
           "best_control": m["control"]["name"], "seconds": round(time.perf_counter() - t, 1),
           "controls": {c: {"accuracy": m["controls"][c]["accuracy"], "ci": m["controls"][c]["accuracy_ci"],
                            "gain": m["controls_gain"][c]["gain"], "gain_ci": m["controls_gain"][c]["gain_ci"]}
                        for c in CONTROLS}}
    C.say(f"{name} {strategy}: {C.fmt_ci(row['accuracy'], row['ci'])}; " + ", ".join(
        f"{c} {row['controls'][c]['accuracy']:.3f}" for c in CONTROLS) + f" ({row['seconds']} s)")
    return row


def outcome(gain_ci) -> str:
    return "helped" if gain_ci[0] > 0 else "hurt" if gain_ci[1] < 0 else "no difference"


def render(res: dict) -> str:
    rows = []
    for r in res["rows"]:
        c = r["controls"]
        rows.append([r["set"], f"{r['n_train']}/{r['n_test']}", res["sources"][r["set"]], r["strategy"],
                     C.fmt_ci(r["accuracy"], r["ci"]), C.fmt_ci(c["random-init"]["accuracy"], c["random-init"]["ci"]),
                     C.fmt_ci(c["rocket-logreg"]["accuracy"], c["rocket-logreg"]["ci"]),
                     C.fmt_ci(c["dtw-1nn"]["accuracy"], c["dtw-1nn"]["ci"]),
                     f"{outcome(c['random-init']['gain_ci'])}", r["verdict"]])
    table = C.md_table(["target", "train/test", "nearest source", "strategy", "transfer", "random-init",
                        "ROCKET", "1-NN DTW", "vs random-init", "verdict (vs best control)"], rows)
    counts = []
    for s in STRATEGIES:
        rs = [r for r in res["rows"] if r["strategy"] == s]
        vs_rand = sum(outcome(r["controls"]["random-init"]["gain_ci"]) == "helped" for r in rs)
        hurt_rand = sum(outcome(r["controls"]["random-init"]["gain_ci"]) == "hurt" for r in rs)
        vs_best = sum(r["verdict"] == "helped" for r in rs)
        counts.append(f"- `{s}`: helped against its random-init control on {vs_rand} of {len(rs)} targets "
                      f"(hurt on {hurt_rand}); helped against the best control (random-init, ROCKET, DTW) on "
                      f"{vs_best} of {len(rs)}.")
    return "\n".join([
        "## Time-series classification transfer (`benchmarks/bench_timeseries.py`)", "",
        f"`ts-fcn-ucr` (FCN, 92k parameters) pre-trained on {', '.join(PRETRAIN_SETS)} (train + test); targets: "
        "the other classification sets bundled with aeon 1.6.0, official splits (test copies of training "
        "series left out).  `transferkit fit` defaults, seed 0, no model selection; accuracy with 95% "
        "bootstrap intervals; helped / hurt = the paired-bootstrap gain interval above / below zero.  "
        "Nearest source: Fawaz et al. (2018)'s prototype DTW distance (the encoder is pre-trained on all four "
        "together; the column is for reading).", "",
        table, "", *counts, "",
        f"Whole run {res['seconds'] / 60:.1f} min on a CPU shared with other agents (2 cores, load far above 2).",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default=",".join(TARGET_SETS))
    ap.add_argument("--no-write", action="store_true")
    a = C.parse_args(ap)
    root = bundled_ucr_dir()
    if root is None:
        sys.exit("no UCR data: set TRANSFERKIT_UCR_DIR to aeon's datasets/data folder (see build_ts_encoder.py)")
    m = C.machine()
    C.say(C.machine_line(m))
    t0 = time.perf_counter()
    protos = {}
    for s in PRETRAIN_SETS:
        p = prepare_data(root / s, skip_bad=True)
        protos[s] = class_prototypes(p.train.inputs, p.train.labels)
    res = {"machine": m, "args": vars(a), "rows": [], "sources": {}, "distances": {}}
    work = Path(tempfile.mkdtemp(prefix="tk-bench-ts-"))
    for name in a.sets.split(","):
        res["sources"][name], res["distances"][name] = nearest_source(root, name, protos)
        for strategy in STRATEGIES:
            res["rows"].append(one_fit(root, name, strategy, work))
    res["seconds"] = time.perf_counter() - t0
    helped = sum(r["verdict"] == "helped" for r in res["rows"])
    res["summary"] = [{"item": f"time-series transfer on {len(a.sets.split(','))} unseen UCR/UEA sets",
                       "goal": "report how often transfer helped (no goal)", "met": None,
                       "measured": f"helped against the best control in {helped} of {len(res['rows'])} fits"}]
    C.publish("timeseries", res, render(res), a.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
