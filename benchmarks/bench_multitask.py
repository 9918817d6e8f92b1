"""Several label columns on one backbone: joint training against separate single-task runs.

Real data: SpamAssassin e-mails (stdlib-js packaging, Apache-2.0) with two label columns of
the same items: ``label`` (spam or ham) and ``group`` (which of five mailboxes the e-mail came
from: easy-ham-1/2, hard-ham-1, spam-1/2, a harder task that the first one is part of).  A
stratified sample of ``--items`` e-mails, split 80/20 once (stratified on ``group``) and written
as train/test tables, so that every fit below sees exactly the same items:

1. the multi-task linear probe (``--label-column label,group``) with every control: transfer vs
   each control per column, with intervals;
2. ``--strategy`` (``finetune`` by default) trained jointly on both columns (one backbone, two
   heads, the summed loss), and the same strategy trained twice, once per column; per column, a
   paired bootstrap of the primary metric says whether sharing the backbone helped.

The fine-tuned runs skip the controls (``control=False``): the comparison here is joint vs
separate, and the random-init fine-tuning controls would triple the time.

Run: ``python benchmarks/bench_multitask.py`` (about 10 minutes on 2 idle cores).
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
NAME = "multitask"
COLUMNS = ["label", "group"]


def _tables(items: int, seed: int, d: Path) -> tuple[Path, Path]:
    rows = C.load_spam()
    idx = C.stratified_indices([r["group"] for r in rows], items, seed)
    n_test = items // 5
    test_idx = C.stratified_indices([rows[i]["group"] for i in idx], n_test, seed + 1)
    test = [idx[k] for k in test_idx]
    chosen = set(test)
    train = [i for i in idx if i not in chosen]
    return (C.write_jsonl_gz([rows[i] for i in train], d / "train.jsonl.gz"),
            C.write_jsonl_gz([rows[i] for i in test], d / "test.jsonl.gz"))


def _outputs(model, test_path: Path, column: str):
    """The model's test outputs and thresholds, and the column's encoded test labels."""
    from transferkit.data import prepare_data
    from transferkit.tasks import get_task

    ds = prepare_data(str(test_path), None, text_columns=["subject", "body"], label_column=column,
                      task=model.task).train
    y = get_task(model.task).encode(ds.labels, model.classes)
    return model.predict_outputs(ds.inputs), model.strategy.thresholds_, y


def _test_figures(m: dict) -> dict:
    return {k: v for k, v in m["test"].items() if k not in ("per_class", "per_label", "predictions",
                                                            "confusion_matrix", "calibration")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=500, help="e-mails sampled (80%% train, 20%% test)")
    ap.add_argument("--strategy", default="finetune", help="the backbone-training strategy compared")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=128, help="tokens per e-mail read by the backbone")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true")
    a = C.parse_args(ap)
    import transferkit as tk
    from transferkit.tasks import Outputs, get_task

    m = C.machine()
    C.warn_if_busy(m)
    res: dict = {"machine": m, "items": a.items, "strategy": a.strategy, "epochs": a.epochs,
                 "max_length": a.max_length}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        train, test = _tables(a.items, a.seed, d)
        common = dict(data=str(train), test=str(test), text_columns="subject,body", model="minilm-l6",
                      backbone_options={"max_length": a.max_length}, seed=a.seed, log=C.say)
        C.say("probe, both columns, every control …")
        t0 = time.perf_counter()
        probe = tk.fit(label_column="label,group", out=str(d / "probe"), **common)
        res["probe"] = {"seconds": time.perf_counter() - t0, "columns": {}}
        for c in COLUMNS:
            mt = probe.models[c].metrics
            res["probe"]["columns"][c] = {
                "task": mt["task"], "n_train": mt["n_train"], "n_test": mt["n_test"], "test": _test_figures(mt),
                "controls": {k: {kk: vv for kk, vv in v.items() if kk in ("accuracy", "accuracy_ci", "macro_f1")}
                             for k, v in mt["controls"].items()},
                "verdict": mt["verdict"], "verdict_explanation": mt["verdict_explanation"]}
        params = {"epochs": a.epochs}
        C.say(f"{a.strategy}, both columns jointly …")
        t0 = time.perf_counter()
        joint = tk.fit(label_column="label,group", strategy=a.strategy, strategy_params=params, control=False,
                       out=str(d / "joint"), **common)
        res["joint_seconds"] = time.perf_counter() - t0
        res["columns"] = {}
        for c in COLUMNS:
            C.say(f"{a.strategy}, {c} alone …")
            t0 = time.perf_counter()
            alone = tk.fit(label_column=c, strategy=a.strategy, strategy_params=params, control=False,
                           out=str(d / f"alone-{c}"), **common)
            seconds = time.perf_counter() - t0
            task = get_task(alone.task)
            oj, tj, y = _outputs(joint.models[c], test, c)
            oa, ta, _ = _outputs(alone, test, c)
            v = task.verdict(y, Outputs(oj, tj), {"separate": Outputs(oa, ta)}, n_boot=2000, seed=a.seed)
            res["columns"][c] = {
                "task": alone.task, "n_classes": len(alone.classes), "separate_seconds": seconds,
                "joint": _test_figures(joint.models[c].metrics), "separate": _test_figures(alone.metrics),
                "gain": v["transfer_gain"], "gain_ci": v["transfer_gain_ci"], "sharing": v["verdict"],
                "metric": v["metric"]}
    res["summary"] = [{
        "item": f"multi-task, SpamAssassin label + group ({a.strategy} on minilm-l6): joint vs separate runs",
        "goal": "report whether sharing the backbone helped, per column",
        "measured": "; ".join(f"{c}: {r['metric']} {r['joint'][r['metric']]:.3f} joint vs "
                              f"{r['separate'][r['metric']]:.3f} separate ({r['sharing']})"
                              for c, r in res["columns"].items()),
        "met": None, "anchor": NAME}]
    print(json.dumps({c: {k: r[k] for k in ("gain", "gain_ci", "sharing")} for c, r in res["columns"].items()},
                     indent=1))
    C.publish(NAME, res, _section(res), a.no_write)


def _section(res: dict) -> str:
    parts = [f"## Several label columns: joint vs separate training (`benchmarks/bench_{NAME}.py`)", "",
             C.machine_line(res["machine"]), "",
             f"SpamAssassin, {res['items']} e-mails sampled stratified by mailbox, one 80/20 split (stratified on "
             "`group`) for every fit; two label columns of the same items: `label` (spam/ham) and `group` (which of "
             f"five mailboxes); minilm-l6 reading {res['max_length']} tokens; 95% bootstrap intervals.", "",
             f"**The multi-task linear probe and its controls** (one extraction, a head per column; "
             f"{res['probe']['seconds']:.0f} s with every control)", ""]
    rows = []
    for c, r in res["probe"]["columns"].items():
        rows.append([c, "transfer: linear probe", C.fmt_ci(r["test"]["accuracy"], r["test"]["accuracy_ci"]),
                     f"{r['test']['macro_f1']:.3f}", r["verdict"]])
        rows += [[c, f"control: {k}", C.fmt_ci(v["accuracy"], v["accuracy_ci"]), f"{v['macro_f1']:.3f}", ""]
                 for k, v in r["controls"].items()]
    parts += [C.md_table(["column", "model", "accuracy", "macro-F1", "verdict"], rows), ""]
    parts += [f"**{res['strategy']}, {res['epochs']} epochs: one backbone for both columns vs one run per column** "
              f"(joint {res['joint_seconds']:.0f} s; separate "
              + " + ".join(f"{r['separate_seconds']:.0f} s" for r in res["columns"].values()) + ")", ""]
    rows = []
    for c, r in res["columns"].items():
        k = r["metric"]
        lo, hi = r["gain_ci"]
        rows.append([c, f"{r['task']}, {r['n_classes']} classes", C.fmt_ci(r["joint"][k], r["joint"].get(f"{k}_ci")),
                     C.fmt_ci(r["separate"][k], r["separate"].get(f"{k}_ci")),
                     f"{r['gain']:+.3f} [{lo:+.3f}, {hi:+.3f}]", r["sharing"]])
    parts += [C.md_table(["column", "task", "joint", "separate", "joint − separate (paired)", "sharing"], rows), "",
              "The paired difference is a bootstrap over the same test items; `helped` / `hurt` only when its "
              "interval excludes zero.", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    main()
