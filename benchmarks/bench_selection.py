"""The delivered model (selection on the training data) against the best control and the probe.

One row per real task, each a ``tk.fit`` with its defaults (the linear probe as transfer model,
selection on, every control), seed 0:

- ``spam 80/20`` and ``spam 8/class``: the stratified 1,000-e-mail SpamAssassin subset of
  ``bench_strategies.py`` (seed 0; subject + body; minilm-l6 reading the first 128 tokens), the fit's
  stratified 80/20 split, and 8 labelled e-mails per class drawn from its training part;
- ``MNIST 80/20`` and ``MNIST 10/class``: the stratified 2,000-digit MNIST-5k subset of
  ``bench_strategies.py`` (efficientnet-lite0 at 96 px), 80/20 and 10 labels per class;
- ``spam 2002 -> 2003``: ``--shift-n`` e-mails of 2002 (easy-ham-1 + spam-1) to train on and as many
  of 2003 (easy-ham-2 + spam-2) to test on, each a stratified sample (seed 0);
- ``ink digits 10/class`` (a task the project never benchmarked): ``--ink-n`` MNIST-5k digits
  (stratified, seed 0) turned into dark ink on white: each 28 x 28 image inverted (255 - value),
  resized to 32 x 32 (PIL bilinear) and repeated over three channels (RGB, uint8);
  efficientnet-lite0 with its defaults (224 px); 80/20 split, 10 labels per class;
- ``spam, all 6,046`` (only with ``--spam-full``: two extractions of every e-mail take long on a
  shared CPU): 80/20, minilm-l6 reading 128 tokens, as ``bench_spam_full.py``.

For each row: the delivered model (its name, test accuracy with interval, the candidates' training-
data scores), the best control (the one the verdict uses), the transfer probe, and, as a reference
not used by selection, the ``hybrid`` candidate fitted alone on the same split (``--no-hybrid-test``
skips it; the ``classical`` candidate is the classical control's model, whose test row is the
control's). The best fine-tuned model of each row is read back from the results of earlier
benchmarks (named, with their commit and date); fine-tuning is not re-run here.

Goal (per row): the delivered model's accuracy is at least the best control's minus 1 point, and
above it wherever the probe or the hybrid is; the selection stage takes at most 3x the fit time of
one fine-tuning run on the same task.

Run: ``python benchmarks/bench_selection.py`` (about 15 minutes on 2 idle cores; ``--spam-full`` adds
about 15 more); ``--report-only`` rewrites the section from ``results/selection.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

C.setup_env()
import numpy as np  # noqa: E402

NAME = "selection"
SPAM_OPTS = {"max_length": 128, "max_chunks": 1}
FINETUNED = ("finetune", "lp-ft", "lora", "l2sp")  # strategies that train the backbone


def ink_digits(images: np.ndarray) -> np.ndarray:
    """``(N, 28, 28)`` white-on-black uint8 digits -> ``(N, 32, 32, 3)`` dark ink on white, uint8."""
    from PIL import Image

    out = [np.asarray(Image.fromarray(255 - im).resize((32, 32), Image.BILINEAR)) for im in images]
    return np.repeat(np.stack(out)[..., None], 3, axis=3)


def tasks(a: argparse.Namespace) -> dict[str, dict]:
    """Each row's fit arguments (``train``, optional ``test``, model, options, labels per class)."""
    from transferkit.data import from_arrays

    rows = C.load_spam()
    spam = C.spam_dataset(rows, C.stratified_indices([r["label"] for r in rows], 1000, seed=0))
    images, labels = C.load_mnist()
    idx = C.stratified_indices(labels, 2000, seed=0)
    mnist = from_arrays(images[idx], [str(labels[i]) for i in idx], modality="image")
    y02 = [i for i, r in enumerate(rows) if r["group"] in ("easy-ham-1", "spam-1")]
    y03 = [i for i, r in enumerate(rows) if r["group"] in ("easy-ham-2", "spam-2")]
    s02 = [y02[k] for k in C.stratified_indices([rows[i]["label"] for i in y02], a.shift_n, seed=0)]
    s03 = [y03[k] for k in C.stratified_indices([rows[i]["label"] for i in y03], a.shift_n, seed=0)]
    idx = C.stratified_indices(labels, a.ink_n, seed=0)
    ink = from_arrays(ink_digits(images[idx]), [str(labels[i]) for i in idx], modality="image")
    image = {"model": "efficientnet-lite0", "backbone_options": {"image_size": 96}}
    text = {"model": "minilm-l6", "backbone_options": SPAM_OPTS}
    out = {"spam 80/20": {"train": spam, **text}, "spam 8/class": {"train": spam, "labels_per_class": 8, **text},
           "MNIST 80/20": {"train": mnist, **image},
           "MNIST 10/class": {"train": mnist, "labels_per_class": 10, **image},
           "spam 2002 -> 2003": {"train": C.spam_dataset(rows, s02), "test": C.spam_dataset(rows, s03), **text},
           "ink digits 10/class": {"train": ink, "labels_per_class": 10, "model": "efficientnet-lite0",
                                   "backbone_options": {}}}
    if a.spam_full:
        out["spam, all 6,046"] = {"train": C.spam_dataset(rows), **text}
    return out


# ----------------------------------------------------------------------------- fine-tuned references
def finetuned_reference(row: str) -> dict | None:
    """The best fine-tuned model recorded for ``row`` by an earlier benchmark (seed 0, the same
    subset and split), with where it was read from; ``None`` when none was measured."""
    if row == "spam, all 6,046":
        r = C._load_results("spam_full")
        if r is None:
            return None
        runs = [x for x in r["runs"] if x["strategy"] in FINETUNED]
        best = max(runs, key=lambda x: x["accuracy"])
        return {"strategy": best["strategy"], "accuracy": best["accuracy"], "accuracy_ci": best.get("ci"),
                "fit_s": best["fit_s"], "file": "results/spam_full.json", "commit": best["machine"]["commit"],
                "date": best["machine"]["date"], "how": "80/20 of all 6,046 e-mails, seed 0, 128 tokens"}
    key = {"spam 80/20": ("spam", "80/20"), "spam 8/class": ("spam", "8/class"),
           "MNIST 80/20": ("mnist-5k", "80/20"), "MNIST 10/class": ("mnist-5k", "10/class")}.get(row)
    r = C._load_results("strategies")
    if key is None or r is None:
        return None
    runs = [x for x in r["runs"] if (x["task"], x["variant"]) == key and x["seed"] == 0 and x["strategy"] in FINETUNED]
    if not runs:
        return None
    best = max(runs, key=lambda x: x["accuracy"])
    return {"strategy": best["strategy"], "accuracy": best["accuracy"], "accuracy_ci": None, "fit_s": best["fit_s"],
            "file": "results/strategies.json", "commit": best["measured"]["commit"],
            "date": best["measured"]["run_started"], "how": "seed 0, the same subset and split; defaults"
            + (f", {best['params']['epochs']} epochs" if best.get("params", {}).get("epochs") else "")}


# ----------------------------------------------------------------------------- one row
def _acc(m: dict) -> dict:
    return {"accuracy": m["accuracy"], "accuracy_ci": m.get("accuracy_ci"), "macro_f1": m.get("macro_f1")}


def run_row(name: str, spec: dict, hybrid_test: bool) -> dict:
    import transferkit as tk

    C.say(f"== {name}")
    t = time.perf_counter()
    model = tk.fit(seed=0, log=lambda s: C.say(f"   {s}"), progress=False, **spec)
    wall = time.perf_counter() - t
    mt = model.metrics
    d = mt["delivered"]
    bc = mt["control"]["name"]
    row = {"task": name, "n_train": mt["n_train"], "n_test": mt["n_test"], "model": spec["model"],
           "backbone_options": spec["backbone_options"], "wall_s": wall, "timings": mt["timings"],
           "probe": _acc(mt["test"]),
           "controls": {k: _acc(v) for k, v in mt["controls"].items()},
           "best_control": bc, "verdict": mt["verdict"],
           "transfer_gain": mt["transfer_gain"], "transfer_gain_ci": mt["transfer_gain_ci"],
           "delivered": {"name": d["name"], "strategy": d["strategy"], "chosen_by": d["chosen_by"],
                         "protocol": d["protocol"], "metric": d["metric"], "candidates": d["candidates"],
                         "test": _acc(d["test"])},
           "delivered_vs_controls": mt.get("delivered_vs_controls")}
    if hybrid_test:
        t = time.perf_counter()
        h = tk.fit(seed=0, strategy="hybrid", select=False, control=False, log=None, progress=False, **spec)
        row["hybrid"] = {**_acc(h.metrics["test"]), "wall_s": time.perf_counter() - t,
                         "fit_s": h.metrics["timings"]["fit_s"]}
    row["finetuned"] = finetuned_reference(name)
    row.update(goal_check(row))
    C.say(f"   -> delivered {d['name']} {row['delivered']['test']['accuracy']:.3f}; best control {bc} "
          f"{row['controls'][bc]['accuracy']:.3f}; probe {row['probe']['accuracy']:.3f}; "
          f"select {row['timings']['select_s']:.1f} s; whole fit {wall:.0f} s")
    return row


def goal_check(row: dict) -> dict:
    """Whether the row meets the accuracy goal and the time goal (``None``: no fine-tuned reference)."""
    dl = row["delivered"]["test"]["accuracy"]
    bc = row["controls"][row["best_control"]]["accuracy"]
    above = [n for n, acc in (("probe", row["probe"]["accuracy"]),
                              ("hybrid", (row.get("hybrid") or {}).get("accuracy"))) if acc is not None and acc > bc]
    met = dl >= bc - 0.01 - 1e-9 and (dl > bc if above else True)
    ft = row.get("finetuned")
    time_met = None if ft is None else row["timings"]["select_s"] <= 3 * ft["fit_s"]
    return {"candidates_above_control": above, "accuracy_goal_met": met, "time_goal_met": time_met}


# ----------------------------------------------------------------------------- report
def _ci(x: dict | None) -> str:
    if x is None:
        return "—"
    ci = x.get("accuracy_ci")
    return C.fmt_ci(x["accuracy"], ci) if ci else f"{x['accuracy']:.3f} (no interval recorded)"


def summary(res: dict) -> list[dict]:
    rows = res["rows"]
    acc = C.one_goal(
        "selection: the delivered model on the test set", "at least the best control - 1 pt on every task, and above "
        "it where any candidate is",
        [(r["task"], f"{r['delivered']['name']} {r['delivered']['test']['accuracy']:.3f} vs {r['best_control']} "
          f"{r['controls'][r['best_control']]['accuracy']:.3f}", r["accuracy_goal_met"]) for r in rows], NAME)
    timed = [r for r in rows if r["time_goal_met"] is not None]
    out = [acc]
    if timed:
        out.append(C.one_goal(
            "selection: its time", "the selection stage within 3x one fine-tuning run",
            [(r["task"], f"{r['timings']['select_s']:.1f} s vs {r['finetuned']['strategy']} "
              f"{r['finetuned']['fit_s']:.0f} s", r["time_goal_met"]) for r in timed], NAME,
            context="fine-tuning times read back from earlier runs"))
    return out


def section(res: dict) -> str:
    rows = res["rows"]
    parts = [f"## Selection: the delivered model vs the controls, the probe and fine-tuning "
             f"(`benchmarks/bench_{NAME}.py`)", "", C.machine_line(res["machine"]), "",
             "Each row is one `tk.fit` with its defaults (the linear probe as the transfer model, selection on the "
             "training data, every control), seed 0; test accuracy with 95% bootstrap intervals. Spam rows: the "
             "stratified 1,000-e-mail subset of the strategies section (seed 0), minilm-l6 reading 128 tokens; "
             "MNIST rows: its stratified 2,000-digit subset, efficientnet-lite0 at 96 px; 8 (10) labels per class "
             "are drawn from the 80/20 split's training part, tested on the same 20%. Spam 2002 -> 2003: "
             f"{res['shift_n']} e-mails of 2002 (easy-ham-1 + spam-1) to train, {res['shift_n']} of 2003 "
             "(easy-ham-2 + spam-2) to test, each a stratified sample. Ink digits (new): "
             f"{res['ink_n']} MNIST-5k digits (stratified, seed 0), each inverted (255 - value), resized to "
             "32 x 32 (PIL bilinear) and repeated over 3 channels: dark ink on white, RGB; efficientnet-lite0 with "
             "its defaults (224 px); 80/20 split, 10 labels per class. All rows share one fresh feature cache: a "
             "row on the data of an earlier row reads its features back (its probe-fit time is mostly cache hits)."
             + ("" if any(r["task"] == "spam, all 6,046" for r in rows) else
                " The whole spam set is not in this run (`--spam-full` adds it)."), ""]
    table = []
    for r in rows:
        bc = r["best_control"]
        ft = r["finetuned"]
        table.append([
            r["task"], f"{r['n_train']} / {r['n_test']}",
            f"**{r['delivered']['name']}** {_ci(r['delivered']['test'])}",
            f"{bc} {_ci(r['controls'][bc])}", _ci(r["probe"]),
            _ci(r.get("hybrid")) if r.get("hybrid") else "—",
            f"{ft['strategy']} {_ci(ft)}, `{ft['file'].removeprefix('results/')}` `{ft['commit']}`" if ft
            else "none measured",
            "yes" if r["accuracy_goal_met"] else "**NO**"])
    parts += ["**Test accuracy** (train / test items)", "",
              C.md_table(["task", "items", "delivered", "best control", "transfer: probe", "hybrid (alone)",
                          "best fine-tuned (read back)", "goal met?"], table), "",
              "Goal per row: delivered ≥ best control − 1 point, and delivered > best control where the probe or the "
              "hybrid is above it on the test set. The hybrid column is the hybrid candidate fitted alone on the same "
              "split (a reference: selection never sees the test set); the classical candidate is the classical "
              "control's model, so its test accuracy is that control's.", ""]
    table = []
    for r in rows:
        tm, ft = r["timings"], r["finetuned"]
        table.append([r["task"], f"{tm['fit_s']:.1f}", f"{tm['select_s']:.1f}", f"{tm.get('controls_s', 0):.1f}",
                      f"{r['wall_s']:.0f}", f"{r['hybrid']['wall_s']:.0f}" if r.get("hybrid") else "—",
                      f"{ft['strategy']} {ft['fit_s']:.0f}" if ft else "—",
                      "—" if r["time_goal_met"] is None else ("yes" if r["time_goal_met"] else "**NO**")])
    parts += ["**Time (s)**: the probe's fit (extraction included), the selection stage, the controls, the whole "
              "`tk.fit`; the hybrid fitted alone; the fine-tuned model's fit as recorded by its run (another commit, "
              "another load: indicative only)", "",
              C.md_table(["task", "probe fit", "selection", "controls", "whole fit", "hybrid alone",
                          "fine-tuning fit (read back)", "selection ≤ 3x fine-tuning?"], table), ""]
    table = []
    for r in rows:
        d = r["delivered"]
        cands = ", ".join(f"{c['name']} {c['score']:.4f}" if c["score"] is not None else f"{c['name']} —"
                          for c in d["candidates"])
        table.append([r["task"], d["name"], d["protocol"], cands])
    parts += ["**What selection saw** (training data only; higher is better)", "",
              C.md_table(["task", "delivered", "protocol", "candidates' scores"], table), "",
              "Protocol `cv`: every candidate a linear head scored by the same cross-validation folds; `holdout`: a "
              "held-out part of the training items.", ""]
    refs = sorted({(r["finetuned"]["file"], r["finetuned"]["commit"], r["finetuned"]["date"], r["finetuned"]["how"])
                   for r in rows if r["finetuned"]})
    if refs:
        parts += ["Fine-tuned models read back (not re-run here; fine-tuning budgets changed since, see the "
                  "strategies section), each the most accurate of the fine-tuning strategies (finetune, lp-ft, "
                  "lora, l2sp) on its row: " + "; ".join(f"`benchmarks/{f}` (commit `{c}`, {d}; {h})"
                                                         for f, c, d, h in refs)
                  + ". The spam 2002 -> 2003 and ink-digit rows have no fine-tuned run on record.", ""]
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated row names to run (default: all)")
    ap.add_argument("--shift-n", type=int, default=500, help="e-mails of 2002 to train on and of 2003 to test on")
    ap.add_argument("--ink-n", type=int, default=2000, help="MNIST-5k digits made into ink-on-white images")
    ap.add_argument("--spam-full", action="store_true", help="add the row on all 6,046 e-mails (two long extractions)")
    ap.add_argument("--no-hybrid-test", action="store_true", help="skip the hybrid fitted alone (reference column)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the section from results/selection.json")
    ap.add_argument("--no-write", action="store_true")
    a = C.parse_args(ap)
    if a.report_only:  # nothing measured: the section again from the recorded run (which it keeps)
        res = C._load_results(NAME)
        if res is None:
            sys.exit(f"no results/{NAME}.json to report from: run the benchmark first")
        res["summary"] = summary(res)
        if a.no_write:
            print(section(res))
            return
        C.save_result(NAME, res)
        C.update_section(NAME, section(res))
        return
    m = C.machine()
    C.warn_if_busy(m)
    load = C.OtherLoad()
    specs = tasks(a)
    if a.only:
        unknown = set(a.only.split(",")) - set(specs)
        if unknown:
            sys.exit(f"unknown rows {sorted(unknown)}; choose among {list(specs)}")
        specs = {k: v for k, v in specs.items() if k in a.only.split(",")}
    t0 = time.perf_counter()
    res: dict = {"machine": m, "shift_n": a.shift_n, "ink_n": a.ink_n, "rows": []}
    for name, spec in specs.items():
        res["rows"].append(run_row(name, spec, not a.no_hybrid_test))
    res["total_s"] = time.perf_counter() - t0
    m["cpu_other_during_pct"] = load.pct()
    res["summary"] = summary(res)
    print(json.dumps([{k: r[k] for k in ("task", "accuracy_goal_met", "time_goal_met")} for r in res["rows"]],
                     indent=1))
    C.publish(NAME, res, section(res), a.no_write)


if __name__ == "__main__":
    main()
