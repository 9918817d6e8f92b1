"""Continual learning (``transferkit update --data``): does replay keep what naive fine-tuning forgets?

1. Class-incremental split MNIST-5k: 5 steps of 2 digits (0-1, 2-3, ..., 8-9) on EfficientNet-Lite0
   features (``--image-size`` px, extracted once, cached); each step's items split 80/20 by the
   seed.  Step 0 is the linear probe (what ``fit`` delivers); steps 1-4 run each strategy of
   ``update --data`` with its defaults: naive, ewc, lwf, replay (memory 100, 200, 500), joint.
   Per seed: the accuracy matrix; over seeds: final average accuracy and forgetting, mean and 95%
   t-interval.  Goal: replay-200 >= 90% of joint's final average accuracy.
2. Domain-incremental spam (minilm-l6, first 128 tokens): 2002 mail (easy-ham-1 + spam-1) then
   2003 mail (easy-ham-2 + spam-2), ``--n-spam`` items per year (half ham, half spam), 70/30
   split: accuracy on both years' test items after the update, per strategy.
3. Cost: the seconds of each update's head training vs a full retrain (the linear probe re-fitted on
   every item so far), and one end-to-end ``transferkit.update`` (replay) through files, timed.

The strategies run in-process on the cached features through the same pieces the command uses
(``transferkit.continual``: ``train_head``, ``ReplayMemory``, ``fisher_diagonal``, LwF's logits,
``continual_metrics``), so that 3 seeds x 7 strategies x 4 steps cost minutes, not hours.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_continual.py --seeds 3`` (about 10 minutes on 2 cores).
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

C.setup_env(fresh_cache=False)
import numpy as np  # noqa: E402
import torch  # noqa: E402

STRATEGIES = [("naive", None), ("ewc", None), ("lwf", None), ("replay", 100), ("replay", 200), ("replay", 500),
              ("joint", None)]


def features(ds, model: str, opts: dict) -> np.ndarray:
    from transferkit.backbones import get_backbone
    from transferkit.features import FeatureCache, extract_features

    X, _ = extract_features(get_backbone(model, **opts), ds, batch_size=64, cache=FeatureCache(), progress=False)
    return X.astype(np.float32)


def split(y: np.ndarray, idx: np.ndarray, seed: int, test: float) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices of ``idx``."""
    rng = np.random.default_rng(seed)
    tr, te = [], []
    for c in np.unique(y[idx]):
        ix = rng.permutation(idx[y[idx] == c])
        k = int(round(test * len(ix)))
        te.extend(ix[:k])
        tr.extend(ix[k:])
    return np.array(tr), np.array(te)


def probe(X, y, seed: int):
    from transferkit.tasks.linear import fit_logistic

    W, b, _ = fit_logistic(X, y, Cs=(1e-3, 1e-2, 1e-1, 1.0, 10.0), cv=5, max_iter=2000, seed=seed)
    return W.astype(np.float32), b.astype(np.float32)


def acc(head, X, y) -> float:
    with torch.no_grad():
        return float((head(torch.as_tensor(X)).argmax(1).numpy() == y).mean())


def run_sequence(X, y, steps: list[tuple[np.ndarray, np.ndarray]], strategy: str, memory: int | None, seed: int):
    """One lineage: the probe on step 0, then ``strategy`` on each later step (the command's
    assembly of the training set); returns the accuracy matrix, its metrics and the seconds."""
    from transferkit import continual as CL
    from transferkit.continual.ewc import grown

    p = CL.ContinualParams()
    tr0, _ = steps[0]
    W, b = probe(X[tr0], y[tr0], seed)
    head = CL.initial_head(W, b, W.shape[0])
    mem = CL.ReplayMemory(memory) if strategy == "replay" else None
    if mem is not None:
        mem.offer([str(i) for i in tr0], [str(y[i]) for i in tr0], [str(i) for i in tr0], [str(i) for i in tr0],
                  X[tr0], seed)
    fisher = None
    n_classes = [len(np.unique(y[np.concatenate([s[0] for s in steps[:k + 1]])])) for k in range(len(steps))]
    R = [[acc(head, X[steps[0][1]], y[steps[0][1]])]]
    seconds = []
    for k in range(1, len(steps)):
        tr, te = steps[k]
        R[-1].append(acc(head, X[te], y[te]))  # before the step: new classes count as wrong
        Xs, ys = X[tr], y[tr]
        hd = CL.HeadData(Xs, ys)
        t = time.perf_counter()
        if strategy == "replay" and len(mem):
            hd = CL.HeadData(np.concatenate([Xs, mem.features]), np.concatenate([ys, np.array(mem.labels, int)]))
        if strategy == "joint":
            every = np.concatenate([s[0] for s in steps[:k + 1]])
            hd = CL.HeadData(X[every], y[every])
        if strategy == "lwf":
            with torch.no_grad():
                hd.old_logits = head(torch.as_tensor(Xs)).numpy()
        if strategy == "ewc":
            f = CL.fisher_diagonal(head, torch.as_tensor(X[steps[k - 1][0]]))
            fisher = f if fisher is None else {n: v + grown(fisher[n], v.shape) for n, v in f.items()}
            hd.fisher, hd.anchor = fisher, {n: v.detach().clone() for n, v in head.named_parameters()}
        new = CL.initial_head(head.weight.detach().numpy(), head.bias.detach().numpy(), n_classes[k])
        CL.train_head(new, hd, strategy, p, seed)
        seconds.append(time.perf_counter() - t)
        head = new
        if mem is not None:
            mem.offer([str(i) for i in tr], [str(y[i]) for i in tr], [str(i) for i in tr], [str(i) for i in tr], Xs,
                      seed + k)
        R.append([acc(head, X[s[1]], y[s[1]]) for s in steps[:k + 1]])
    first = list(range(len(steps)))
    return {"matrix": R, **CL.continual_metrics(R, first), "update_s": seconds}


def interval(xs: list[float]) -> list[float]:
    """Mean and 95% t-interval (n small: t of n-1 degrees of freedom)."""
    from scipy import stats

    a = np.asarray(xs, float)
    if len(a) < 2:
        return [float(a.mean())] * 3
    h = stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a))
    return [float(a.mean()), float(a.mean() - h), float(a.mean() + h)]


def split_mnist(a) -> dict:
    from transferkit.data import from_arrays

    images, digits = C.load_mnist()
    t = time.perf_counter()
    X = features(from_arrays(images, [str(d) for d in digits], modality="image"), "efficientnet-lite0",
                 {"image_size": a.image_size})
    extract_s = time.perf_counter() - t
    y = digits.astype(np.int64)  # class index = digit: the steps' order 0-1, 2-3, ... is the head's order
    out = {"extract_s": extract_s, "n": len(y), "image_size": a.image_size, "runs": {}}
    for strategy, memory in STRATEGIES:
        name = strategy if memory is None else f"{strategy}-{memory}"
        runs = []
        for seed in range(a.seeds):
            steps = [split(y, np.flatnonzero((y == 2 * k) | (y == 2 * k + 1)), seed, 0.2) for k in range(5)]
            runs.append(run_sequence(X, y, steps, strategy, memory, seed))
        out["runs"][name] = {"per_seed": runs, "average_accuracy": interval([r["average_accuracy"] for r in runs]),
                             "forgetting": interval([r["forgetting"] for r in runs]),
                             "update_s": float(np.mean([sum(r["update_s"]) for r in runs]))}
        print(f"split MNIST {name:>10}: average accuracy {out['runs'][name]['average_accuracy'][0]:.3f}, "
              f"forgetting {out['runs'][name]['forgetting'][0]:.3f}", flush=True)
    # cost of a full retrain at the last step: the probe on every training item so far
    steps = [split(y, np.flatnonzero((y == 2 * k) | (y == 2 * k + 1)), 0, 0.2) for k in range(5)]
    every = np.concatenate([s[0] for s in steps])
    t = time.perf_counter()
    probe(X[every], y[every], 0)
    out["full_retrain_probe_s"] = time.perf_counter() - t
    return out


def spam(a) -> dict:
    from transferkit.data import from_arrays

    rows = C.load_spam()
    years = {"2002": ("easy-ham-1", "spam-1"), "2003": ("easy-ham-2", "spam-2")}
    rng = np.random.default_rng(0)
    picked = []
    for year, groups in years.items():
        for g in groups:
            ix = [i for i, r in enumerate(rows) if r["group"] == g]
            picked += [(year, i) for i in rng.permutation(ix)[:a.n_spam // 2]]
    texts = [C.spam_text(rows[i]) for _, i in picked]
    t = time.perf_counter()
    X = features(from_arrays(texts, [rows[i]["label"] for _, i in picked], modality="text"), "minilm-l6",
                 {"max_length": 128, "max_chunks": 1})
    extract_s = time.perf_counter() - t
    y = np.array([rows[i]["label"] == "spam" for _, i in picked], dtype=np.int64)  # ham 0, spam 1
    year = np.array([yr for yr, _ in picked])
    out = {"extract_s": extract_s, "n_per_year": a.n_spam, "runs": {}}
    for strategy, memory in STRATEGIES:
        name = strategy if memory is None else f"{strategy}-{memory}"
        runs = []
        for seed in range(a.seeds):
            steps = [split(y, np.flatnonzero(year == yr), seed, 0.3) for yr in years]
            runs.append(run_sequence(X, y, steps, strategy, memory, seed))
        out["runs"][name] = {"2002": interval([r["matrix"][1][0] for r in runs]),
                             "2003": interval([r["matrix"][1][1] for r in runs]),
                             "before_2002": interval([r["matrix"][0][0] for r in runs]),
                             "before_2003": interval([r["matrix"][0][1] for r in runs])}
        r = out["runs"][name]
        print(f"spam {name:>10}: 2002 {r['before_2002'][0]:.3f} -> {r['2002'][0]:.3f}, 2003 "
              f"{r['before_2003'][0]:.3f} -> {r['2003'][0]:.3f}", flush=True)
    return out


def end_to_end(a, tmp: Path) -> dict:
    """One real ``fit`` + ``transferkit.update --data --strategy replay`` through files, timed."""
    from PIL import Image

    import transferkit as tk

    images, digits = C.load_mnist()
    rng = np.random.default_rng(0)
    for k, name in ((0, "a"), (1, "b")):
        for i in [j for d in (2 * k, 2 * k + 1) for j in rng.permutation(np.flatnonzero(digits == d))[:150]]:
            d = tmp / name / str(digits[i])
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(d / f"{i}.png")
    opts = {"image_size": a.image_size}
    t = time.perf_counter()
    tk.fit(data=str(tmp / "a"), model="efficientnet-lite0", backbone_options=opts, out=str(tmp / "p"), control=False,
           select=False, log=None)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    tk.update(tmp / "p", out=tmp / "u", data=tmp / "b", strategy="replay", memory=200, log=None)
    update_s = time.perf_counter() - t
    m = json.loads((tmp / "u" / "metrics.json").read_text())
    return {"fit_s": fit_s, "update_s": update_s, "timings": m["timings"], "matrix": m["continual"]["accuracy_matrix"],
            "n_per_step": 300}


def pct(x) -> str:
    return f"{100 * x[0]:.1f}% [{100 * x[1]:.1f}, {100 * x[2]:.1f}]"


def render(result: dict) -> str:
    """The BENCHMARKS.md section of ``result``."""
    mn, sp, e, a = result["split_mnist"], result["spam"], result.get("end_to_end"), result["args"]
    r = mn["runs"]
    lines = ["## Continual learning: forgetting and replay (`benchmarks/bench_continual.py`)", "",
             C.machine_line(result["machine"]) + " The CPU was shared with several other agents' jobs."
             + (f" The parts {', '.join(result['resumed_parts'])} were measured by an earlier invocation of the same "
                "command (kept with --resume, on the same code of transferkit.continual); the rest by this one."
                if result.get("resumed_parts") else ""), "",
             "**Class-incremental split MNIST-5k**: 5 steps of 2 digits (0-1, 2-3, 4-5, 6-7, 8-9), all "
             f"{mn['n']} items, "
             f"EfficientNet-Lite0 features at {mn['image_size']} px (extracted once: {mn['extract_s']:.0f} s), each "
             f"step's items split 80/20 by the seed; step 0 the linear probe, steps 1-4 the strategy's update with "
             f"its defaults (30 epochs, lr 0.01, class-balanced loss); {a['seeds']} seeds, mean and 95% t-interval. "
             "Final average accuracy = the mean accuracy over the 5 test sets after the last step; forgetting = the "
             "mean largest drop of an earlier set.", "",
             "| strategy | final average accuracy | forgetting | of joint | update time (4 steps) |",
             "|---|---|---|---|---|"]
    joint = r["joint"]["average_accuracy"][0]
    for name, v in r.items():
        lines.append(f"| {name} | {pct(v['average_accuracy'])} | {pct(v['forgetting'])} | "
                     f"{v['average_accuracy'][0] / joint:.0%} | {v['update_s']:.1f} s |")
    lines += ["", "Update time: the 4 updates together, head training (and EWC's Fisher) on cached features. "
              f"Full retrain at the last step (the linear probe, cross-validated, on all {5} steps' training "
                  f"items): {mn['full_retrain_probe_s']:.1f} s.", "",
              "Accuracy matrix (%), seed 0 (rows: after step i; columns: test set of step j):", ""]
    for name in ("naive", "replay-200", "joint"):
        R = r[name]["per_seed"][0]["matrix"]
        lines += [f"*{name}*:", "", "| after | " + " | ".join(f"set {j}" for j in range(len(R))) + " |",
                  "|---" * (len(R) + 1) + "|"]
        lines += [f"| step {i} | " + " | ".join("" if j >= len(row) else f"{100 * row[j]:.0f}"
                                                for j in range(len(R))) + " |" for i, row in enumerate(R)]
        lines.append("")
    lost = [n for n, v in r.items() if v["forgetting"][0] > 0.5]
    lines += ["Published anchor (van de Ven & Tolias 2019, split MNIST, class-incremental, an MLP trained "
              "end to end): EWC and LwF about 20-24%, replay above 90%, joint about 98%. Here the backbone is frozen "
              f"and only the head learns; forgetting above 0.5 (most of the earlier digits lost): "
              f"{', '.join(lost) or 'none'}; replay-200 reached {result['goal']['replay200_over_joint']:.0%} of "
              "joint's final average accuracy.", "",
              f"**Domain-incremental spam** (minilm-l6, first 128 tokens): 2002 mail (easy-ham-1 + spam-1) then 2003 "
              f"mail (easy-ham-2 + spam-2), {sp['n_per_year']} e-mails per year (half spam), 70/30 split; accuracy "
              "on each year's test e-mails before (the probe on 2002) and after the update:", "",
              "| strategy | 2002 before | 2002 after | 2003 before | 2003 after |", "|---|---|---|---|---|"]
    for name, v in sp["runs"].items():
        lines.append(f"| {name} | {pct(v['before_2002'])} | {pct(v['2002'])} | {pct(v['before_2003'])} | "
                     f"{pct(v['2003'])} |")
    if e:
        lines += ["", f"**End to end through files** (`tk.fit` then `tk.update --data --strategy replay --memory "
                      f"200`, {e['n_per_step']} PNG digits per step): fit {e['fit_s']:.1f} s, update "
                      f"{e['update_s']:.1f} s (" + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s"
                                                           for k, v in e["timings"].items()) + ")."]
    return "\n".join(lines)


def summary(result: dict) -> list[dict]:
    r = result["split_mnist"]["runs"]
    ratio = result["goal"]["replay200_over_joint"]
    naive = r["naive"]["forgetting"][0]
    return [{"item": "continual learning, split MNIST-5k (class-incremental)",
             "goal": "replay with 200 items >= 90% of joint's final average accuracy; naive's forgetting shown",
             "measured": f"replay-200 {r['replay-200']['average_accuracy'][0]:.3f} vs joint "
                         f"{r['joint']['average_accuracy'][0]:.3f} ({ratio:.0%}); naive forgets {naive:.3f}",
             "met": bool(ratio >= 0.9), "anchor": "continual"}]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--n-spam", type=int, default=400, help="items per year (half ham, half spam)")
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "transferkit-bench-continual.json"),
                    help="where each part is kept as soon as it is measured (for --resume)")
    ap.add_argument("--resume", action="store_true", help="keep the parts already measured in --out, measure the "
                                                          "rest")
    ap.add_argument("--from-results", help="write results/continual.json and the section from this file of an "
                                           "earlier run (nothing is measured)")
    a = C.parse_args(ap)
    if a.from_results:
        result = json.loads(Path(a.from_results).read_text())
        args = {k: result["args"][k] for k in ("seeds", "image_size", "n_spam")}
        result.setdefault("run", {**C.run_info({**args, "out": a.out, "from_results": None}, []),
                                  "note": "measured by this command; its section written from its results file"})
        result["summary"] = summary(result)
        C.save_result("continual", result)
        C.update_section("continual", render(result))
        return 0
    m = C.machine()
    t0 = time.perf_counter()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    if a.resume and out.is_file():
        result = {k: v for k, v in json.loads(out.read_text()).items() if k in ("split_mnist", "spam")}
        print(f"kept from {out}: {', '.join(result) or 'nothing'}")
        result["resumed_parts"] = list(result)
    for name, part in (("split_mnist", split_mnist), ("spam", spam)):
        if name in result:
            continue
        result[name] = part(a)
        out.write_text(json.dumps(result, indent=1, default=float))  # each part kept as soon as it is measured
    with tempfile.TemporaryDirectory() as tmp:
        result["end_to_end"] = end_to_end(a, Path(tmp))
    result.update(seconds=time.perf_counter() - t0, machine=m, args=vars(a))
    r = result["split_mnist"]["runs"]
    ratio = r["replay-200"]["average_accuracy"][0] / r["joint"]["average_accuracy"][0]
    result["goal"] = {"replay200_over_joint": ratio, "met": ratio >= 0.9}
    print(f"goal: replay-200 / joint final average accuracy = {ratio:.3f} ({'met' if ratio >= 0.9 else 'not met'})")
    e = result["end_to_end"]
    print(f"end to end: fit {e['fit_s']:.1f} s, update (replay-200) {e['update_s']:.1f} s; timings {e['timings']}")
    out.write_text(json.dumps(result, indent=1, default=float))
    result["summary"] = summary(result)
    C.save_result("continual", result)
    C.update_section("continual", render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
