"""Do transferability scores predict the accuracy a candidate reaches?  (weighted Kendall tau)

For each task (SpamAssassin spam vs ham, MNIST-5k, scikit-learn digits) and each variant (the
80/20 split of a stratified subset, and few-shot: K labelled items per class sampled from that
training part), every candidate backbone (pre-trained models at several layers, and randomly
initialised copies) is

1. scored on the training part only, with ``transferkit.ranking.rank`` (LogME, H-score, kNN,
   and LEEP / NCE where the candidate has its ImageNet head at the scored layer), and
2. trained as a linear probe (``linear-probe``, C picked by cross-validation) and tested on
   the held-out part: the subset's 20% plus ``--test-items`` in all, the others drawn
   (stratified) from outside the subset, so that sampling noise does not decide the ranking.

Then, per task variant, ``scipy.stats.weightedtau`` between each score and the probe accuracy
over the candidates (LogME's paper reports a mean of 0.67 over its tasks).  The same run also
records, per variant, which candidate ``--model auto`` would pick (by ``transferkit.auto.AUTO_SCORES``:
the best kNN score among pre-trained candidates, ties broken by LogME) and how far its accuracy is
from the best candidate's, next to the LogME winner's.

With ``--finetune`` the same image candidates are also fine-tuned (``finetune`` with its
defaults: 3 epochs on 80/20, 20 epochs few-shot) on the same splits, and tau is computed again
against that accuracy.  It reuses the scores and probe accuracies recorded in
``results/transferability.json`` (same subsets and seeds), so only the fine-tuning runs; every
finished run goes to ``--runs-log`` and a restarted run skips it.  Text candidates are not
fine-tuned here: six MiniLM fine-tunings on 480 e-mails of two 256-token windows take hours on
2 CPU cores.

Run: ``python benchmarks/bench_transferability.py`` (about an hour on 2 idle cores;
``--quick`` for a 2-minute smoke run that does not touch BENCHMARKS.md);
``--finetune [--variants "mnist-5k 80/20"]`` afterwards (one to six minutes per candidate on 2
cores; 32 image fine-tunings in all).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

C.setup_env()
import numpy as np  # noqa: E402

IMAGE_CANDIDATES = ["efficientnet-lite0", "efficientnet-lite0@4", "efficientnet-lite0@6", "efficientnet-lite1",
                    "efficientnet-lite1@6", "efficientnet-lite2", "random:efficientnet-lite0",
                    "random:efficientnet-lite0@6"]
TEXT_CANDIDATES = ["minilm-l6", "minilm-l6@4", "minilm-l6@2", "minilm-l6@1", "random:minilm-l6",
                   "random:minilm-l6@4"]
SCORES = ["logme", "hscore", "knn", "leep", "nce"]


def _extra(labels, chosen: list[int], k: int) -> list[int]:
    """``k`` more indices with the class proportions of ``labels``, none of them in ``chosen``."""
    taken = set(chosen)
    rest = [i for i in range(len(labels)) if i not in taken]
    k = min(k, len(rest))
    return [rest[j] for j in C.stratified_indices([labels[i] for i in rest], k, seed=1)] if k > 0 else []


def tasks(n: int, test_items: int = 0):
    """``name -> (Dataset, extra test Dataset, candidates, backbone options, shots)``.

    The Dataset is a stratified subset of n (split 80/20 later); the extra test items are
    stratified too, drawn from outside that subset, so that the 20% part plus them make
    ``test_items`` (none when ``test_items`` is not above the 20% part).
    """
    from transferkit.data import from_arrays

    k = max(0, test_items - math.ceil(0.2 * n))
    rows = C.load_spam()
    labels = [r["label"] for r in rows]
    idx = C.stratified_indices(labels, n, seed=0)
    spam = [C.spam_dataset(rows, ix) if len(ix) else None for ix in (idx, _extra(labels, idx, k))]
    images, labels = C.load_mnist()
    idx = C.stratified_indices(labels, n, seed=0)
    mnist = [from_arrays(images[ix], [str(labels[i]) for i in ix], modality="image")
             if len(ix) else None for ix in (idx, _extra(list(labels), idx, k))]
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = C.stratified_indices(d.target, n, seed=0)
    digits = [from_arrays((d.images[ix] * (255.0 / 16.0)).round().astype(np.uint8),
                          [str(d.target[i]) for i in ix], modality="image")
              if len(ix) else None for ix in (idx, _extra(list(d.target), idx, k))]
    img = {"image_size": 128}
    return {"spam": (*spam, TEXT_CANDIDATES, {"max_chunks": 2}, 8),
            "mnist-5k": (*mnist, IMAGE_CANDIDATES, img, 10),
            "digits": (*digits, IMAGE_CANDIDATES, img, 10)}


def split(ds, extra):
    """The subset's 80/20 split (seed 0), its test part grown by the extra test items."""
    from transferkit.data import stratified_split
    from transferkit.data.dataset import Dataset

    train, test = stratified_split(ds, test_size=0.2, seed=0)
    if extra is not None:
        test = Dataset(modality=test.modality, inputs=test.inputs + extra.inputs, labels=test.labels + extra.labels,
                       origins=test.origins + [f"extra[{i}]" for i in range(len(extra))])
    return train, test


def probe_accuracy(cand: str, options: dict, train, test, seed: int) -> float:
    import transferkit as tk
    from transferkit.model import TransferModel
    from transferkit.ranking import parse_candidate
    from transferkit.strategies import get_strategy

    c = parse_candidate(cand)
    bb = tk.get_backbone(c.model, **options, **({"layer": c.layer} if c.layer is not None else {}))
    if c.random:
        bb = bb.randomized(seed)
    model = TransferModel(bb, get_strategy("linear-probe", {}), cache=True, batch_size=32, progress=False)
    model.ctx.seed = seed
    model.strategy.fit(train, model.ctx)
    pred = model.strategy.predict(test, model.ctx)
    return float(np.mean(np.array(pred) == np.array(test.labels)))


def finetune_accuracy(cand: str, options: dict, train, test, seed: int, epochs: int) -> float:
    import transferkit as tk
    from transferkit.model import TransferModel
    from transferkit.ranking import parse_candidate
    from transferkit.strategies import get_strategy

    c = parse_candidate(cand)
    bb = tk.get_backbone(c.model, **options, **({"layer": c.layer} if c.layer is not None else {}))
    if c.random:
        bb = bb.randomized(seed)
    model = TransferModel(bb, get_strategy("finetune", {"epochs": epochs}), cache=False, batch_size=32,
                          progress=False)
    model.ctx.seed = seed
    model.strategy.fit(train, model.ctx)
    pred = model.strategy.predict(test, model.ctx)
    return float(np.mean(np.array(pred) == np.array(test.labels)))


FINETUNE_EPOCHS = {"80/20": 3, "few-shot": 20}


def run_finetune(a) -> None:
    """``--finetune``: fine-tune the image candidates of the recorded study and add tau against it."""
    from transferkit.data import few_shot_sample

    path = C.RESULTS / "transferability.json"
    res = json.loads(path.read_text())
    if res["args"]["items"] != a.items or res["args"].get("test_items", 0) != a.test_items:
        sys.exit(f"{path} was measured on {res['args']['items']} items per task and "
                 f"{res['args'].get('test_items', 0)} test items, not {a.items} and {a.test_items}: run the "
                 "study first, then --finetune")
    log = Path(a.runs_log)
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            done[(r["task"], r["variant"], r["candidate"], r["items"], r.get("n_test"))] = r["accuracy"]
    from_log = set(done)
    machine = C.machine()  # at the start: the commit and load the fine-tunings ran with
    all_tasks = tasks(a.items, a.test_items)
    t0, reused, reused_log = time.perf_counter(), 0, 0
    for r in res["results"]:
        ds, extra, cands, opts, shots = all_tasks[r["task"]]
        if ds.modality != "image" or (a.variants and f"{r['task']} {r['variant']}" not in a.variants.split(",")):
            continue
        train, test = split(ds, extra)
        few = r["variant"] != "80/20"
        tr = few_shot_sample(train, shots, seed=0) if few else train
        assert len(tr) == r["n_train"] and len(test) == r["n_test"], "the splits moved since the study"
        epochs = FINETUNE_EPOCHS["few-shot" if few else "80/20"]
        for row in r["rows"]:
            key = (r["task"], r["variant"], row["candidate"], a.items, len(test))
            if key not in done and "ft_accuracy" in row and r.get("ft_epochs") == epochs:
                done[key] = row["ft_accuracy"]  # recorded by an earlier --finetune run
                reused += 1
            elif key in from_log:
                reused_log += 1
            if key not in done:
                t = time.perf_counter()
                done[key] = finetune_accuracy(row["candidate"], opts, tr, test, seed=0, epochs=epochs)
                with log.open("a") as f:
                    f.write(json.dumps({"task": key[0], "variant": key[1], "candidate": key[2], "items": key[3],
                                        "n_test": key[4], "accuracy": done[key], "seconds": time.perf_counter() - t,
                                        "measured": {"commit": machine["commit"], "run_started": machine["date"]}})
                            + "\n")
                C.say(f"   {r['task']} {r['variant']} {row['candidate']:<30} fine-tuned acc {done[key]:.3f} "
                      f"(probe {row['accuracy']:.3f}, {time.perf_counter() - t:.0f} s)")
            row["ft_accuracy"] = done[key]
        r["ft_epochs"] = epochs
        r["tau_ft"] = {s: tau([x["scores"].get(s) for x in r["rows"]], [x["ft_accuracy"] for x in r["rows"]])
                       for s in SCORES}
        C.say(f"== {r['task']} {r['variant']}: tau vs fine-tuning " +
              ", ".join(f"{s} {v:+.2f}" for s, v in r["tau_ft"].items() if v is not None))
    res["finetune"] = {"machine": machine, "run": C.this_run(), "seconds": round(time.perf_counter() - t0, 1),
                       "reused": reused, "reused_log": reused_log, "epochs": FINETUNE_EPOCHS}
    report(res)


def pick_for(rows: list[dict], scores) -> dict:
    """The pre-trained candidate ``--model auto`` would choose by ``scores`` (the first decides,
    the next break ties), as :func:`transferkit.ranking.order_key` orders them."""
    from transferkit.ranking import order_key

    return min((r for r in rows if not r["candidate"].startswith("random:")),
               key=lambda r: order_key(r["scores"], scores))


def tau(score: list[float | None], acc: list[float]) -> float | None:
    from scipy.stats import weightedtau

    pairs = [(s, a) for s, a in zip(score, acc) if s is not None and np.isfinite(s)]
    if len(pairs) < 3:
        return None
    s, a = map(np.array, zip(*pairs))
    return float(weightedtau(s, a).statistic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=600, help="stratified subset per task (80/20 split)")
    ap.add_argument("--test-items", type=int, default=1000,
                    help="test items per task: the subset's 20%% part plus stratified items from outside the "
                         "subset (accuracy on 120 items moves by about 2 points from noise alone)")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run; writes nothing")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--finetune", action="store_true",
                    help="fine-tune the image candidates of the recorded study and add tau against that accuracy")
    ap.add_argument("--variants", help="with --finetune: only these task variants, comma-separated "
                                       "('mnist-5k 80/20,digits 10/class'); default: every image variant")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the section from results/transferability.json (nothing is measured)")
    ap.add_argument("--runs-log", default=str(C.RESULTS / "transferability-ft-runs.jsonl"),
                    help="with --finetune: JSON-lines file of finished fine-tunings (a restart skips them)")
    a = C.parse_args(ap)
    if a.report_only:
        report(json.loads((C.RESULTS / "transferability.json").read_text()))
        return
    if a.finetune:
        run_finetune(a)
        return
    from transferkit.auto import AUTO_SCORES
    from transferkit.data import few_shot_sample
    from transferkit.ranking import rank

    load = C.OtherLoad()
    m = C.machine()
    C.say(C.machine_line(m))
    n = 80 if a.quick else a.items
    all_tasks = tasks(n, 40 if a.quick else a.test_items)
    if a.quick:
        all_tasks = {k: (ds, ex, c[:3] + c[-1:], o, 4) for k, (ds, ex, c, o, _s) in all_tasks.items()}
    results = []
    t0 = time.perf_counter()
    for name, (ds, extra, cands, opts, shots) in all_tasks.items():
        train, test = split(ds, extra)
        for variant, tr in (("80/20", train), (f"{shots}/class", few_shot_sample(train, shots, seed=0))):
            C.say(f"== {name} {variant}: {len(tr)} training items, {len(test)} test items, {len(cands)} candidates")
            t = time.perf_counter()
            res = rank(tr, cands, scores=SCORES, seed=0, backbone_options=opts, log=None, progress=False)
            rank_s = time.perf_counter() - t
            by = {r.candidate: r for r in res.rows}
            rows = []
            for c in cands:
                acc = probe_accuracy(c, opts, tr, test, seed=0)
                rows.append({"candidate": c, "accuracy": acc, "scores": by[c].scores, "dim": by[c].dim})
                C.say(f"   {c:<30} acc {acc:.3f}  " + "  ".join(
                    f"{s} {v:.3f}" for s, v in by[c].scores.items() if v is not None))
            taus = {s: tau([r["scores"].get(s) for r in rows], [r["accuracy"] for r in rows]) for s in SCORES}
            pick, best = pick_for(rows, AUTO_SCORES), max(rows, key=lambda r: r["accuracy"])
            results.append({"task": name, "variant": variant, "n_train": len(tr), "n_test": len(test),
                            "rows": rows, "tau": taus, "rank_s": rank_s,
                            "auto_pick": pick["candidate"], "auto_acc": pick["accuracy"],
                            "best": best["candidate"], "best_acc": best["accuracy"]})
            C.say("   tau: " + ", ".join(f"{s} {v:+.2f}" for s, v in taus.items() if v is not None) +
                  f"; auto picks {pick['candidate']} ({pick['accuracy']:.3f}), best {best['candidate']} "
                  f"({best['accuracy']:.3f})")
    m["cpu_other_during_pct"] = load.pct()
    m["seconds"] = round(time.perf_counter() - t0, 1)
    mean = {s: (float(np.mean(v)) if (v := [r["tau"][s] for r in results if r["tau"][s] is not None]) else None)
            for s in SCORES}
    res = {"machine": m, "args": vars(a), "results": results, "mean_tau": mean}
    if a.quick or a.no_write:
        C.say(str(mean))
        return
    report(res)


def report(res: dict) -> None:
    from transferkit.auto import AUTO_SCORES

    results, mean, m = res["results"], res["mean_tau"], res["machine"]
    for r in results:  # the rule of the code that reads this report, whatever rule the run stored
        pick = pick_for(r["rows"], AUTO_SCORES)
        r["auto_pick"], r["auto_acc"] = pick["candidate"], pick["accuracy"]

    def fmt(v):
        return "—" if v is None else f"{v:+.2f}"

    rows = [[r["task"], r["variant"], r["n_train"], *[fmt(r["tau"][s]) for s in SCORES],
             f"{r['auto_pick']} ({r['auto_acc']:.3f})", f"{r['best']} ({r['best_acc']:.3f})"] for r in results]
    rows.append(["**mean**", "", "", *[f"**{fmt(mean[s])}**" for s in SCORES], "", ""])
    detail = []
    for r in results:
        for row in sorted(r["rows"], key=lambda x: -x["accuracy"]):
            detail.append([r["task"], r["variant"], row["candidate"], f"{row['accuracy']:.3f}",
                           *[("—" if row["scores"].get(s) is None else f"{row['scores'][s]:.3f}") for s in SCORES]])
    regret = [r["best_acc"] - r["auto_acc"] for r in results]
    by_logme = [r["best_acc"] - pick_for(r["rows"], ("logme",))["accuracy"] for r in results]
    auto_rule = " then ".join(AUTO_SCORES)
    summary = [{"item": "weighted Kendall tau, LogME vs linear-probe accuracy (mean over "
                        f"{sum(r['tau']['logme'] is not None for r in results)} task variants)",
                "goal": "> 0.67 (LogME's paper mean)", "measured": f"{mean['logme']:+.2f} "
                f"(H-score {fmt(mean['hscore'])}, kNN {fmt(mean['knn'])}, LEEP {fmt(mean['leep'])}, "
                f"NCE {fmt(mean['nce'])})",
                "met": bool(mean["logme"] is not None and mean["logme"] > 0.67), "anchor": "transferability"},
               {"item": f"--model auto: probe accuracy lost against the best candidate (pick among pre-trained by "
                        f"{auto_rule})", "goal": "small",
                "measured": f"mean {np.mean(regret):.3f}, worst {max(regret):.3f} over {len(regret)} task variants; "
                            f"picking by LogME alone: mean {np.mean(by_logme):.3f}, worst {max(by_logme):.3f}",
                "met": None, "anchor": "transferability"}]
    ft = [r for r in results if "tau_ft" in r]
    ft_text = ""
    if ft:
        mean_ft = {s: (float(np.mean(v)) if (v := [r["tau_ft"][s] for r in ft if r["tau_ft"][s] is not None])
                       else None) for s in SCORES}
        mean_img = {s: (float(np.mean(v)) if (v := [r["tau"][s] for r in ft if r["tau"][s] is not None])
                        else None) for s in SCORES}
        summary.append({"item": f"weighted Kendall tau, LogME vs fine-tuning accuracy (mean over {len(ft)} image "
                                "task variants)", "goal": "> 0.67 (LogME's paper mean)",
                        "measured": f"{fmt(mean_ft['logme'])} (H-score {fmt(mean_ft['hscore'])}, kNN "
                                    f"{fmt(mean_ft['knn'])}, LEEP {fmt(mean_ft['leep'])}, NCE {fmt(mean_ft['nce'])}); "
                                    f"against the probe on the same variants {fmt(mean_img['logme'])}",
                        "met": bool(mean_ft["logme"] is not None and mean_ft["logme"] > 0.67),
                        "anchor": "transferability"})
        ft_rows = [[r["task"], r["variant"], r["n_train"], r["ft_epochs"], *[fmt(r["tau_ft"][s]) for s in SCORES],
                    f"{max(r['rows'], key=lambda x: x['ft_accuracy'])['candidate']} "
                    f"({max(x['ft_accuracy'] for x in r['rows']):.3f})"] for r in ft]
        ft_rows.append(["**mean**", "", "", "", *[f"**{fmt(mean_ft[s])}**" for s in SCORES], ""])
        ft_detail = [[r["task"], r["variant"], x["candidate"], f"{x['accuracy']:.3f}", f"{x['ft_accuracy']:.3f}"]
                     for r in ft for x in sorted(r["rows"], key=lambda x: -x["ft_accuracy"])]
        fm = res["finetune"]
        n_ft = sum(len(r["rows"]) for r in ft)
        ft_log = _repo_path(((fm.get("run") or {}).get("args") or {}).get("runs_log"))
        back = [(fm.get("reused", 0), "from the results file of an earlier `--finetune` run"),
                (fm.get("reused_log", 0), (f"from the runs log `{ft_log}` (each line names the commit and start of "
                                           "the invocation that measured it)"))]
        n_back = sum(n for n, _ in back)
        reused_text = (f" for {n_ft - n_back} of the {n_ft} fine-tunings; the other {n_back} were read back, "
                       + " and ".join(f"{n} {where}" for n, where in back if n)
                       + " (measured before this date and commit)"
                       if n_back else "")
        if "reused_log" not in fm:  # recorded since the runs log moved under results/
            reused_text += (" (how many were read back from the runs log, then kept in the temporary folder, was "
                            "not recorded)")
        ft_text = f"""
### Against fine-tuning accuracy (image tasks)

{C.machine_line(fm['machine'])} Fine-tuning runs: {fm['seconds'] / 60:.1f} min{reused_text}.

Every image candidate of the variants below fine-tuned on the same splits (`finetune` with its
defaults: all layer groups, discriminative learning rates, pre-trained BatchNorm statistics kept
for pre-trained weights, random copies trained from scratch at one rate, `scratch_lr`; \
{fm['epochs']['80/20']} epochs on 80/20, {fm['epochs']['few-shot']} few-shot), scored on the
same test part, with the same scores as above. Fine-tuned so far: {', '.join(f"{r['task']} {r['variant']}" for r in ft)}
(the other image variants and the text candidates were not: hours of CPU on 2 cores).

{C.md_table(['task', 'variant', 'train items', 'epochs'] + [f'tau {s}' for s in SCORES]
            + ['best fine-tuned (acc)'], ft_rows)}

<details><summary>Every image candidate: probe and fine-tuned accuracy</summary>

{C.md_table(['task', 'variant', 'candidate', 'probe accuracy', 'fine-tuned accuracy'], ft_detail)}

</details>
"""
    res["summary"] = summary
    regret_text = (f"Over the {len(regret)} task variants, `--model auto`'s pick lost {np.mean(regret):.3f} of probe "
                   f"accuracy against the best candidate on average (worst {max(regret):.3f}); picking by LogME alone "
                   f"would have lost {np.mean(by_logme):.3f} (worst {max(by_logme):.3f}).")
    n_test = sorted({r["n_test"] for r in results})
    test_text = (f"The test part is that subset's 20% plus stratified items from outside the subset (seed 1), "
                 f"{'/'.join(map(str, n_test))} test items per task: on the subset's 20% alone (120 items), "
                 "accuracy moves by about 2 points from sampling noise, as much as many gaps between candidates."
                 if res["args"].get("test_items", 0) > math.ceil(0.2 * res["args"]["items"]) else "")
    body = f"""<a id="transferability"></a>
## Do the scores predict accuracy? Weighted Kendall tau (`benchmarks/bench_transferability.py`)

{C.machine_line(m)} Whole run: {m['seconds'] / 60:.1f} min.

Each task is a stratified subset of {res['args']['items']} items (seed 0), split 80/20 (seed 0); the few-shot
variant samples K labelled items per class from the training part (seed 0) and tests on the same
test part. {test_text} Candidates: images — {', '.join(IMAGE_CANDIDATES)} (all at 128 px); \
text — {', '.join(TEXT_CANDIDATES)}
(subject + body, at most 2 windows of 256 tokens). `@L` is the layer (EfficientNet stage, MiniLM
block); `random:` is the same architecture randomly initialised. Scores are computed on the training
part only with `transferkit.ranking.rank`; accuracy is a `linear-probe` (C by 5-fold CV) on the test part.
tau = `scipy.stats.weightedtau(score, accuracy)` over the candidates of one task variant (LEEP and NCE
only exist for candidates with their ImageNet head: the pre-trained EfficientNets at their last layer,
so their tau uses three candidates and is not computed for text). The last two columns: what
`--model auto` picks (the best kNN score among the pre-trained candidates, ties broken by LogME:
`transferkit.auto.AUTO_SCORES`) and the best candidate, with their test accuracies.

{C.md_table(['task', 'variant', 'train items'] + [f'tau {s}' for s in SCORES]
            + ['auto pick (acc)', 'best (acc)'], rows)}

{regret_text}

<details><summary>Every candidate's accuracy and scores</summary>

{C.md_table(['task', 'variant', 'candidate', 'probe accuracy'] + SCORES, detail)}

</details>
{ft_text}"""
    C.save_result("transferability", res)
    C.update_section("transferability", body)
    write_studies(res)
    C.say(body)


def _repo_path(p: str | None) -> str:
    try:
        return str(Path(p).resolve().relative_to(C.REPO)) if p else "not recorded"
    except ValueError:
        return str(p)


def write_studies(res: dict) -> None:
    """The figures transferkit's messages cite go to ``transferkit/studies.json``."""
    for name, (figures, machine) in study_figures(res).items():
        C.write_study(name, figures, machine, "transferability")


def study_figures(res: dict) -> dict[str, tuple[dict, dict]]:
    """``{study: (figures, machine of the run that measured them)}`` from a results dict: ``auto_pick``
    (what ``--model auto``'s pick, the best candidate and LogME's pick reached per task variant) and, once
    ``--finetune`` ran on MNIST-5k 80/20, ``inner_layer_finetune`` (fine-tuning from an inner layer
    against the probe there).  Accuracies to 3 decimals, as the section shows them."""
    def pick(row: dict) -> dict:
        return {"candidate": row["candidate"], "accuracy": round(row["accuracy"], 3)}

    results = res["results"]
    n_test = sorted({r["n_test"] for r in results})
    out = {"auto_pick": ({
        "test_items": n_test[0] if len(n_test) == 1 else n_test,
        "variants": [{"task": r["task"], "variant": r["variant"], "train_items": r["n_train"],
                      "auto": pick(next(x for x in r["rows"] if x["candidate"] == r["auto_pick"])),
                      "best": pick(next(x for x in r["rows"] if x["candidate"] == r["best"])),
                      "logme": pick(pick_for(r["rows"], ("logme",)))} for r in results]}, res["machine"])}
    ft = next((r for r in results if r["task"] == "mnist-5k" and r["variant"] == "80/20" and "tau_ft" in r), None)
    if ft is None:
        return out
    base = "efficientnet-lite0"
    layers = {c.split("@")[1]: {"finetune": round(x["ft_accuracy"], 3), "probe": round(x["accuracy"], 3)}
              for x in ft["rows"] if (c := x["candidate"]).startswith(base + "@")}
    out["inner_layer_finetune"] = ({
        "task": ft["task"], "variant": ft["variant"], "backbone": base, "train_items": ft["n_train"],
        "test_items": ft["n_test"], "epochs": ft["ft_epochs"], "layers": dict(sorted(layers.items()))},
        res["finetune"]["machine"])
    return out


if __name__ == "__main__":
    main()
