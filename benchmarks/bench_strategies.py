"""Every strategy on real data, with controls: linear probe vs finetune vs lp-ft vs lora vs l2sp.

Tasks: SpamAssassin spam vs ham (subject + body, minilm-l6, the first 128 tokens of each e-mail)
and MNIST-5k (efficientnet-lite0 at 96 px), stratified subsets of ``--items`` e-mails and
``--mnist-items`` digits (seed 0).
Variants: the 80/20 split (``tk.fit``'s stratified split, seeded) and few-shot (K labelled items
per class sampled from that training part: 8 for spam, 10 for MNIST).  Every strategy runs with
its defaults through ``tk.fit`` over seeds 0..S-1 (the seed moves the split, the sample and the
training); few-shot runs train 20 epochs instead of the default 3, so that fine-tuning gets more
than a handful of optimizer steps.  Controls: the linear probe runs with both controls on every
seed (the same probe on the randomly initialised network, and the tuned classical baseline:
TF-IDF or raw pixels + logistic regression); ``finetune`` runs with its random-init control
(the same architecture trained from scratch with the same budget, at one rate ``scratch_lr`` for
every layer) on seed 0.

The table is also the evidence behind ``--model auto``'s choice of strategy
(:mod:`transferkit.auto`): where does fine-tuning start to beat the probe?

Run: ``python benchmarks/bench_strategies.py`` (about 80 minutes on 2 idle cores with the defaults);
``--quick`` for a smoke run that writes nothing; ``--report-only`` rewrites the section (and the
``strategies`` study of ``transferkit/studies.json``) from ``results/strategies.json``.  Every finished
run is appended to ``--runs-log`` (a JSON-lines file, by default ``results/strategies-runs.jsonl``,
committed with the results) with the commit and start time of the invocation that measured it: a run
that is stopped and started again with the same arguments skips what is there and goes on, and the
section says which runs were read back and when they were measured.
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

STRATEGIES = ["linear-probe", "finetune", "lp-ft", "lora", "l2sp"]
FEW_SHOT_EPOCHS = 20
BACKBONES = {"spam": "minilm-l6", "mnist-5k": "efficientnet-lite0"}


def tasks(n: int, n_mnist: int) -> dict:
    from transferkit.data import from_arrays

    rows = C.load_spam()
    idx = C.stratified_indices([r["label"] for r in rows], n, seed=0)
    spam = C.spam_dataset(rows, idx)
    images, labels = C.load_mnist()
    idx = C.stratified_indices(labels, n_mnist, seed=0)
    mnist = from_arrays(images[idx], [str(labels[i]) for i in idx], modality="image")
    return {"spam": (spam, BACKBONES["spam"], {"max_length": 128, "max_chunks": 1}, 8),
            "mnist-5k": (mnist, BACKBONES["mnist-5k"], {"image_size": 96}, 10)}


def run_one(ds, model: str, opts: dict, strategy: str, seed: int, shots: int | None, control: bool,
            max_steps: int | None) -> dict:
    import transferkit as tk

    params = {}
    if strategy != "linear-probe":
        if shots:
            params["epochs"] = FEW_SHOT_EPOCHS
        if max_steps:
            params["max_steps"] = max_steps
    t = time.perf_counter()
    m = tk.fit(train=ds, model=model, backbone_options=opts, strategy=strategy, strategy_params=params,
               labels_per_class=shots, seed=seed, control=control, log=None, progress=False)
    wall = time.perf_counter() - t
    met = m.metrics
    out = {"accuracy": met["test"]["accuracy"], "n_train": met["n_train"], "n_test": met["n_test"],
           "fit_s": met["timings"].get("fit_s"), "wall_s": wall, "params": params}
    if control:
        out["controls"] = {k: v["accuracy"] for k, v in met["controls"].items()}
        out["verdict"] = met.get("verdict")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=1000, help="spam e-mails in the subset")
    ap.add_argument("--mnist-items", type=int, default=2000, help="MNIST-5k digits in the subset")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--runs-log", default=str(C.RESULTS / "strategies-runs.jsonl"),
                    help="JSON-lines file of finished runs; a restarted run with the same arguments skips them "
                         "(name a new file to measure every run afresh)")
    ap.add_argument("--only", help="comma-separated tasks (spam, mnist-5k)")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run; writes nothing")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the section from results/strategies.json (nothing is measured)")
    a = C.parse_args(ap)
    if a.report_only:
        report(json.loads((C.RESULTS / "strategies.json").read_text()))
        return
    load = C.OtherLoad()
    m = C.machine()
    C.say(C.machine_line(m))
    all_tasks = tasks(60 if a.quick else a.items, 60 if a.quick else a.mnist_items)
    if a.only:
        all_tasks = {k: v for k, v in all_tasks.items() if k in a.only.split(",")}
    seeds = range(1 if a.quick else a.seeds)
    runs = []
    t0 = time.perf_counter()
    size = {"spam": a.items, "mnist-5k": a.mnist_items}
    done: dict[tuple, dict] = {}
    log = Path(a.runs_log)
    if not a.quick and log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            done[(r["task"], r["items"], r["variant"], r["strategy"], r["seed"])] = r
        C.say(f"{len(done)} finished runs in {log}")
    prior_s = sum(r.get("wall_s", 0) for r in done.values())
    reused = 0  # runs read back from the log rather than run now
    for name, (ds, model, opts, k) in all_tasks.items():
        for variant, shots in (("80/20", None), (f"{k}/class", 2 if a.quick else k)):
            for strategy in STRATEGIES:
                for seed in seeds:
                    key = (name, size[name], variant, strategy, seed)
                    if key in done:
                        runs.append(dict(done[key], read_back=True))
                        reused += 1
                        continue
                    control = strategy == "linear-probe" or (strategy == "finetune" and seed == 0)
                    r = run_one(ds, model, opts, strategy, seed, shots, control, 2 if a.quick else None)
                    r.update(task=name, items=size[name], variant=variant, strategy=strategy, seed=seed,
                             measured={"commit": m["commit"], "run_started": m["date"]})
                    runs.append(r)
                    if not a.quick:
                        with log.open("a") as f:
                            f.write(json.dumps(r) + "\n")
                    C.say(f"{name:8} {variant:9} {strategy:12} seed {seed}: acc {r['accuracy']:.3f} "
                          f"({r['n_train']} train, {r['fit_s']:.0f} s)" +
                          (f" controls {r['controls']}" if "controls" in r else ""))
        # Recorded after each task, so a long run that is stopped keeps what it finished.
        m["cpu_other_during_pct"] = load.pct()
        m["seconds"] = round(time.perf_counter() - t0 + prior_s, 1)
        res = {"machine": m, "args": vars(a), "run": C.this_run(), "runs": runs, "lora_lr": LoRA_LR(),
               "reused_runs": reused}
        if not a.quick:
            report(res)


def LoRA_LR() -> float:
    from transferkit.strategies.lora import LoRA

    return LoRA().lr


def _agg(xs: list[float]) -> str:
    return f"{np.mean(xs):.3f} ± {np.std(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def report(res: dict) -> None:
    runs, m = res["runs"], res["machine"]
    n_reused = res.get("reused_runs", 0)
    reused = _read_back_text(res) if n_reused else ""
    keys = sorted({(r["task"], r["variant"]) for r in runs}, key=lambda k: (k[0], k[1] != "80/20"))
    rows, summary, table, goal_cases = [], [], {}, []
    for task, variant in keys:
        sel = [r for r in runs if r["task"] == task and r["variant"] == variant]
        probe = [r for r in sel if r["strategy"] == "linear-probe"]
        base_name = [k for k in probe[0]["controls"] if k != "random-init"][0]
        cells = {}
        for s in STRATEGIES:
            rs = [r for r in sel if r["strategy"] == s]
            accs = [r["accuracy"] for r in rs]
            cells[s] = (float(np.mean(accs)), float(np.std(accs)))
            rows.append([task, variant, s, rs[0]["n_train"], _agg(accs),
                         f"{np.mean([r['fit_s'] for r in rs]):.0f}"])
        base = [r["controls"][base_name] for r in probe]
        rand_probe = [r["controls"]["random-init"] for r in probe]
        ft0 = next(r for r in sel if r["strategy"] == "finetune" and "controls" in r)
        rows.append([task, variant, f"control: {base_name}", probe[0]["n_train"], _agg(base), ""])
        rows.append([task, variant, "control: random-init linear-probe", probe[0]["n_train"], _agg(rand_probe), ""])
        rows.append([task, variant, "control: random-init finetune (seed 0)", ft0["n_train"],
                     f"{ft0['controls']['random-init']:.3f}", ""])
        table[(task, variant)] = cells
        best = max(cells, key=lambda s: cells[s][0])
        measured = (f"{best} {cells[best][0]:.3f}; probe {cells['linear-probe'][0]:.3f}, finetune "
                    f"{cells['finetune'][0]:.3f}, lp-ft {cells['lp-ft'][0]:.3f}, lora "
                    f"{cells['lora'][0]:.3f}, l2sp {cells['l2sp'][0]:.3f}; {base_name} {np.mean(base):.3f}")
        if variant == "80/20":
            goal_cases.append((task, measured, bool(max(cells[s][0] for s in ("finetune", "lp-ft", "lora", "l2sp")) >
                                                    max(cells["linear-probe"][0], float(np.mean(base))))))
        else:  # few-shot: recorded, no goal
            summary.append({"item": f"{task} {variant}: best strategy (mean over seeds)", "goal": "record",
                            "measured": measured, "met": None, "anchor": "strategies"})
    if goal_cases:
        summary.insert(0, C.one_goal("80/20 subsets: the best strategy (mean over seeds) against the probe and the "
                                     "classical baseline", "fine-tuning beats both (reference points on spam: "
                                     "TF-IDF ~0.985, probe ~0.964)", goal_cases, "strategies"))
    from transferkit.strategies.lora import LoRA

    lora_lr, lora_now = res.get("lora_lr"), LoRA().lr
    lora_note = "" if lora_lr == lora_now else (
        f"\n**LoRA here ran with lr {lora_lr:g}, its default then; the default is now {lora_now:g}** "
        "(`benchmarks/bench_lora.py`, section lora, measures LoRA against full fine-tuning with it).\n")
    spam8 = table.get(("spam", "80/20"))
    if spam8:
        gap = spam8["finetune"][0] - spam8["lora"][0]
        summary.append({"item": f"LoRA accuracy vs full fine-tuning, spam 80/20 (lora lr {lora_lr:g})",
                        "goal": "within 1 point",
                        "measured": f"lora {spam8['lora'][0]:.3f} vs finetune {spam8['finetune'][0]:.3f} "
                                    f"({100 * -gap:+.1f} pts)", "met": bool(gap <= 0.01), "anchor": "strategies"})
    res["summary"] = summary
    n_seeds = res["args"]["seeds"]
    body = f"""<a id="strategies"></a>
## Strategies side by side, with controls (`benchmarks/bench_strategies.py`)

{C.machine_line(m)} Whole run: {m['seconds'] / 60:.1f} min.{reused}

`tk.fit(train=<subset>, model=..., strategy=S, labels_per_class=K, seed=s)` with each strategy's
defaults, seeds 0..{n_seeds - 1} (the seed moves the split, the few-shot sample and the training).
Spam: a stratified subset of {res['args']['items']} of the 6,046 SpamAssassin e-mails, subject + body,
minilm-l6 on the first 128 tokens (`max_length=128, max_chunks=1`, to keep fine-tuning affordable on
2 CPU cores; the TF-IDF control reads the whole e-mail). MNIST-5k: a stratified subset of
{res['args'].get('mnist_items', res['args']['items'])} digits, efficientnet-lite0 at 96 px, last layer.
80/20: `tk.fit`'s stratified split; few-shot: K per class from its training part, same test part.
Fine-tuning strategies train 3 epochs on 80/20 (their default) and {FEW_SHOT_EPOCHS} epochs few-shot.
Accuracy is mean ± std over seeds; time is the mean seconds of `fit` (extraction included, controls
excluded).
{lora_note}
{C.md_table(['task', 'variant', 'strategy / control', 'train items', 'test accuracy', 'fit time (s)'], rows)}
"""
    C.save_result("strategies", res)
    C.update_section("strategies", body)
    write_study(res)
    C.say(body)


def _read_back_text(res: dict) -> str:
    """Which runs were read back from the runs log, and when and where they were measured."""
    runs, log = res["runs"], res["args"].get("runs_log") or ""
    back = [r for r in runs if r.get("read_back")]
    try:
        log = str(Path(log).resolve().relative_to(C.REPO))
    except ValueError:
        pass
    groups: dict[tuple, int] = {}
    for r in back:
        mm = r.get("measured") or {}
        k = (mm.get("commit", "commit not recorded"), mm.get("run_started", "date not recorded"), mm.get("evidence"))
        groups[k] = groups.get(k, 0) + 1
    kept = res.get("runs_log_copy")
    log_text = f"`{log}`" + (f" (its runs are kept in `{kept}`)" if kept else "")
    where = "; ".join(f"{n} measured by the invocation started {d} at transferkit {c}" + (f" ({e})" if e else "")
                      for (c, d, e), n in groups.items())
    return (f" {len(back)} of the {len(runs)} runs were read back from the runs log {log_text} rather than run again "
            f"(an interrupted or extended study goes on where it stopped): {where}; the other "
            f"{len(runs) - len(back)} ran in this invocation.")


def write_study(res: dict) -> None:
    """The figures ``--model auto`` cites go to ``transferkit/studies.json`` (study ``strategies``)."""
    C.write_study("strategies", study_figures(res), res["machine"], "strategies")


def study_figures(res: dict) -> dict:
    """Study ``strategies`` of ``transferkit/studies.json`` from a results dict: the seeds and, per task
    variant, each strategy's mean accuracy over them (3 decimals, as the section shows them)."""
    keys = sorted({(r["task"], r["variant"]) for r in res["runs"]}, key=lambda k: (k[0] != "spam", k[1] != "80/20"))
    variants = []
    for task, variant in keys:
        sel = [r for r in res["runs"] if r["task"] == task and r["variant"] == variant]
        variants.append({"task": task, "variant": variant, "backbone": BACKBONES[task],
                         "train_items": sel[0]["n_train"],
                         "accuracy": {s: round(float(np.mean([r["accuracy"] for r in sel if r["strategy"] == s])), 3)
                                      for s in STRATEGIES}})
    return {"seeds": res["args"]["seeds"], "variants": variants}


if __name__ == "__main__":
    main()
