"""Domain adaptation on real shifts: every strategy, the automatic choice and a target-supervised reference.

Shifts (``_shifts.py`` builds them; source, target and pool items disjoint, stratified, seed 0):
MNIST-5k -> scikit-learn digits and back, MNIST-5k -> inverted MNIST-5k, MNIST-5k -> coloured ink
on coloured backgrounds (RGB), MNIST-5k -> scikit-learn digits as dark ink on white 32 x 32 RGB (the
new user's shift), all on efficientnet-lite0 at ``--image-size``; SpamAssassin 2002 -> 2003 on
minilm-l6 (first 128 tokens of subject + body).

Protocol: transductive, as ``bench_adapt.py``: the ``--n-target`` target items are given to every
strategy without their labels (``ctx.target``, what ``--target-unlabelled`` gives) and are the items
scored; their labels are read only to score.  Each row runs the library as ``transferkit fit`` does
(``evidence.new_model`` + ``strategy.fit`` + ``predict_proba``), the strategy's defaults, no tuning.
Rows: ``source-only`` (the linear probe on the source), ``adabn`` (on features), ``adabn-backbone``
(``on=backbone``), ``dann``, ``mmd``, ``coral``, ``self-training``, and the strategies of issue 18 as
they are registered (``input-invariance``, ``tent``, ``shot``, ``mcc``, ``cdan``, ``auto-adapt``); ``reference``:
the linear probe fitted on ``--ref-per-class`` labelled target items drawn from the pool (never scored).
A strategy that refuses a shift (e.g. BatchNorm statistics of a LayerNorm text model) is listed with
its reason.  Accuracy with a 95% bootstrap interval over the scored items; the gain over source-only
with a paired-bootstrap interval; wall time of fit + prediction with the pre-trained features
already cached (extraction timed once per shift, apart; the CPU was shared — see each row's load).

Goal (issue 18): on every image shift where the reference is at least 5 points above source-only,
``auto-adapt`` recovers at least half of that gap.

Run: ``python benchmarks/bench_shifts.py`` (every shift and method; ``--shifts``, ``--methods``,
``--seeds`` select parts; each finished row is saved at once into ``results/shifts.json`` and the
section rewritten, and a rerun skips rows already measured under the same protocol unless
``--fresh``); ``--report-only`` rewrites the section from the results file.  The feature cache
(``--cache``, default a fixed folder under the temp directory) is shared across rows and runs.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

NAME = "shifts"
# row -> (registered strategy, its parameters): defaults everywhere but adabn's documented switch
METHODS = {"source-only": ("linear-probe", {}), "reference": ("linear-probe", {}), "adabn": ("adabn", {}),
           "adabn-backbone": ("adabn", {"on": "backbone"}),
           "dann": ("dann", {}), "mmd": ("mmd", {}), "coral": ("coral", {}), "self-training": ("self-training", {}),
           "input-invariance": ("input-invariance", {}), "tent": ("tent", {}), "shot": ("shot", {}),
           "mcc": ("mcc", {}), "cdan": ("cdan", {}), "auto-adapt": ("auto-adapt", {})}


def _args() -> argparse.Namespace:
    import _shifts

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shifts", default=",".join(_shifts.ALL), help="comma-separated, of: " + ", ".join(_shifts.ALL))
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated rows, of: " + ", ".join(METHODS))
    ap.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (the strategies' and the reference sample's)")
    ap.add_argument("--n-source", type=int, default=1000, help="labelled source items")
    ap.add_argument("--n-target", type=int, default=1000, help="unlabelled target items, scored (at most)")
    ap.add_argument("--ref-per-class", type=int, default=10, help="labelled target items per class of the reference")
    ap.add_argument("--image-size", type=int, default=96, help="efficientnet-lite0 input size")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "tk-bench-shifts-cache"),
                    help="feature cache folder, reused across rows and runs")
    ap.add_argument("--fresh", action="store_true", help="measure the selected rows again")
    ap.add_argument("--report-only", action="store_true", help="rewrite the section from results/shifts.json")
    ap.add_argument("--no-write", action="store_true")
    return C.parse_args(ap)


a = _args()
os.environ["TRANSFERKIT_CACHE"] = a.cache
C.setup_env(fresh_cache=False)
import _shifts  # noqa: E402
import _shifts_report as R  # noqa: E402
import numpy as np  # noqa: E402

LOCK = Path(tempfile.gettempdir()) / "tk-bench-shifts.lock"  # not in results/: nothing to commit


@contextlib.contextmanager
def _locked():
    """Parts run in parallel processes merge their rows into one results file, one at a time."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _load() -> dict:
    return C._load_results(NAME) or {"shifts": {}}


def save(shift: str, meta: dict, row: str | None = None, seed: int | None = None, result: dict | None = None) -> None:
    """Merge one measured row (or a shift's facts) into ``results/shifts.json`` and rewrite the section."""
    if a.no_write:
        return
    with _locked():
        res = _load()
        s = res["shifts"].setdefault(shift, {"rows": {}})
        if s.get("protocol") != meta["protocol"]:
            s = res["shifts"][shift] = {"rows": {}}
        s.update(meta)
        if row is not None:
            s["rows"].setdefault(row, {})[str(seed)] = result
        res["run"], res["machine"] = C.this_run(), MACHINE
        res["summary"] = R.summary(res)
        C.save_result(NAME, res)
        C.update_section(NAME, R.section(res))


def done(shift: str, protocol: dict, row: str, seed: int) -> bool:
    s = _load()["shifts"].get(shift, {})
    return not a.fresh and s.get("protocol") == protocol and str(seed) in s.get("rows", {}).get(row, {})


def _info(strategy) -> dict:
    """The fitted strategy's own account (chosen knob, auto-adapt's candidates...), JSON-safe and small."""
    try:
        info = json.loads(json.dumps(strategy.fit_info() or {}, default=str))
    except Exception as e:  # an account that cannot be read is said, not fatal
        return {"unreadable": repr(e)}
    if len(json.dumps(info)) < 20000:
        return info
    small = {k: v for k, v in info.items() if len(json.dumps(v)) < 2000}  # the choice and the scalars stay
    return {**small, "left_out": sorted(set(info) - set(small))}


def run_row(sh, method: str, seed: int, ref) -> dict:
    from transferkit.backbones import get_backbone
    from transferkit.config import FitConfig
    from transferkit.data import Dataset
    from transferkit.errors import UserInputError
    from transferkit.evaluation import classification_metrics
    from transferkit.evidence import new_model
    from transferkit.strategies import STRATEGIES, get_strategy

    name, params = METHODS[method]
    if name not in STRATEGIES:
        return {"status": "not registered", "message": f"no strategy {name!r} registered at this commit"}
    cfg = FitConfig(model=sh.model, backbone_options=sh.options, strategy=name, strategy_params=params, seed=seed)
    target = Dataset(modality=sh.target.modality, inputs=sh.target.inputs, labels=None, source=sh.target.source)
    train = ref if method == "reference" else sh.source
    load = C.OtherLoad()
    t = time.perf_counter()
    try:
        s = get_strategy(name, params)
        m = new_model(get_backbone(sh.model, **sh.options), s, cfg, progress=False,
                      target=None if method in ("reference", "source-only") else target)
        s.fit(train, m.ctx)
        proba = s.predict_proba(sh.target, m.ctx)
    except UserInputError as e:
        return {"status": "refused", "message": str(e), "seconds": time.perf_counter() - t}
    except Exception as e:  # one failing strategy must not lose the others' rows: said in the section
        traceback.print_exc()
        return {"status": "error", "message": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - t}
    secs = time.perf_counter() - t
    classes = list(s.classes_)
    y = np.array([classes.index(v) for v in sh.target.labels])
    mt = classification_metrics(y, proba, classes, n_boot=1000, seed=0)
    return {"status": "ok", "accuracy": mt["accuracy"], "accuracy_ci": mt["accuracy_ci"],
            "macro_f1": mt["macro_f1"], "seconds": secs, "classes": classes,
            "pred": "".join(chr(48 + int(k)) for k in proba.argmax(1)), "info": _info(s),
            "n_train": len(train), "measured": {"commit": MACHINE["commit"], "cpu_other_pct": load.pct(),
                                                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}}


def prepare(sh) -> dict:
    """Extract (and cache) the pre-trained features of the source and target items once; the shift's distance."""
    from transferkit.backbones import get_backbone
    from transferkit.config import FitConfig
    from transferkit.evidence import new_model
    from transferkit.scores.domain import domain_shift
    from transferkit.strategies import get_strategy

    m = new_model(get_backbone(sh.model, **sh.options), get_strategy("linear-probe"),
                  FitConfig(model=sh.model, backbone_options=sh.options), progress=False)
    t = time.perf_counter()
    fs, ft = m.ctx.features(sh.source), m.ctx.features(sh.target)  # the reference's few items: in its row
    secs = time.perf_counter() - t
    d = domain_shift(fs, ft, n_permutations=200, max_items=1000, seed=0).to_dict()
    classes = sorted(set(sh.target.labels))
    return {"extract_s": secs, "shift": {k: d[k] for k in ("mmd2", "mmd_p_value", "a_distance", "level")},
            "modality": sh.modality, "classes": classes,
            "y": "".join(chr(48 + classes.index(v)) for v in sh.target.labels)}


def main() -> None:
    from transferkit.data import few_shot_sample

    if a.report_only:
        res = _load()
        res["summary"] = R.summary(res)
        if a.no_write:
            print(R.section(res))
            return
        C.save_result(NAME, res)
        C.update_section(NAME, R.section(res))
        return
    methods = [x.strip() for x in a.methods.split(",") if x.strip()]
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        sys.exit(f"unknown method row(s) {bad}; choose among {', '.join(METHODS)}")
    C.warn_if_busy(MACHINE)
    shifts = _shifts.build([x.strip() for x in a.shifts.split(",") if x.strip()], a.n_source, a.n_target,
                           a.image_size)
    for sh in shifts.values():
        if sh.modality == "image" and a.image_size != 96:  # another size is another row of the table
            sh.name = f"{sh.name} @{a.image_size}px"
        protocol = {"n_source": a.n_source, "n_target": a.n_target, "ref_per_class": a.ref_per_class,
                    "model": sh.model, "options": sh.options, "sizes": sh.sizes}
        C.say(f"== {sh.name}: {sh.sizes} ({sh.model} {sh.options})")
        meta = {"protocol": protocol, "how": sh.how, **prepare(sh)}
        C.say(f"   features of every item in {meta['extract_s']:.0f} s; shift {meta['shift']}")
        save(sh.name, meta)
        for seed in range(a.seeds):
            ref = few_shot_sample(sh.pool, a.ref_per_class, seed=seed)
            for method in methods:
                if done(sh.name, protocol, method, seed):
                    continue
                r = run_row(sh, method, seed, ref)
                acc = f"{r['accuracy']:.3f}" if r["status"] == "ok" else f"{r['status']}: {r['message'][:120]}"
                C.say(f"   seed {seed} {method:<16} {acc}  ({r.get('seconds', 0):.0f} s)")
                save(sh.name, meta, method, seed, r)


MACHINE = C.machine()
if __name__ == "__main__":
    main()
