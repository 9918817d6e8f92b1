"""LoRA against full fine-tuning on spam, with their defaults.

The same minilm-l6 weights, the same data and split per seed: a stratified subset of
``--items`` SpamAssassin e-mails (subject + body, the first 128 tokens), ``tk.fit``'s 80/20
stratified split (seeded), each strategy with its defaults (3 epochs, early stopping on a
validation share of the training part), seeds 0..S-1, no controls (``bench_strategies`` has
them).  Reported: test accuracy mean ± std, wall time, LoRA's trainable share of the backbone,
and the goal: LoRA within 1 point of full fine-tuning.

Run: ``python benchmarks/bench_lora.py`` (about 20 minutes on 2 idle cores).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

C.setup_env()
NAME = "lora"
MODEL, OPTS = "minilm-l6", {"max_length": 128, "max_chunks": 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=3)
    a = C.parse_args(ap)
    import numpy as np

    import transferkit as tk

    m = C.machine()
    C.warn_if_busy(m)
    rows = C.load_spam()
    idx = C.stratified_indices([r["label"] for r in rows], a.items, seed=0)
    ds = C.spam_dataset(rows, idx)
    runs: dict[str, dict] = {s: {"acc": [], "wall_s": []} for s in ("finetune", "lora")}
    info = {}
    for seed in range(a.seeds):
        for strategy in runs:  # side by side, per seed
            t = time.perf_counter()
            model = tk.fit(train=ds, model=MODEL, backbone_options=OPTS, strategy=strategy, seed=seed,
                           control=False, log=None, progress=False)
            wall = time.perf_counter() - t
            runs[strategy]["acc"].append(model.metrics["test"]["accuracy"])
            runs[strategy]["wall_s"].append(wall)
            if strategy == "lora":
                fi = model.metrics["strategy"]["fit"]
                info = {k: fi.get(k) for k in ("targets", "adapter_params", "trainable_params", "backbone_params",
                                               "trainable_share")}
                info["params"] = {k: getattr(model.strategy, k) for k in ("r", "lora_alpha", "lr", "epochs")}
            C.say(f"seed {seed} {strategy:<9} accuracy {runs[strategy]['acc'][-1]:.3f}  {wall:.0f} s")
    mean = {s: float(np.mean(r["acc"])) for s, r in runs.items()}
    std = {s: float(np.std(r["acc"], ddof=1)) if len(r["acc"]) > 1 else 0.0 for s, r in runs.items()}
    gap = 100 * (mean["lora"] - mean["finetune"])
    n_test = int(round(0.2 * len(ds)))
    res = {"machine": m, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "items": len(ds),
           "seeds": a.seeds, "runs": runs, "lora": info, "gap_pts": gap,
           "summary": [{"item": "LoRA accuracy vs full fine-tuning, spam subset", "goal": "within 1 point",
                        "measured": f"lora {mean['lora']:.3f} vs finetune {mean['finetune']:.3f} ({gap:+.1f} pts, "
                                    f"{a.seeds} seeds, {len(ds)}-item subset)",
                        "met": bool(gap >= -1.0), "anchor": NAME}]}
    table = [[s, f"{mean[s]:.3f} ± {std[s]:.3f}", ", ".join(f"{x:.3f}" for x in r["acc"]),
              f"{np.mean(r['wall_s']):.0f} s"] for s, r in runs.items()]
    lines = ["## LoRA vs full fine-tuning, defaults (`benchmarks/bench_lora.py`)", "",
             f"{C.machine_line(m)} Spam, a {len(ds)}-item stratified subset, minilm-l6 on the first "
             f"128 tokens, `tk.fit`'s 80/20 split per seed (about {n_test} test e-mails), each strategy with its "
             f"defaults, seeds 0..{a.seeds - 1} interleaved. LoRA: r = {info['params']['r']}, alpha "
             f"{info['params']['lora_alpha']}, lr {info['params']['lr']:g}, targets "
             f"{', '.join(info['targets'])}; {info['trainable_params']:,} trainable parameters "
             f"({100 * info['trainable_share']:.2f}% of the backbone, head included).", "",
             C.md_table(["strategy", "test accuracy", "per seed", "wall time per fit"], table), "",
             f"LoRA − finetune: **{gap:+.1f} points** (goal: within 1 point)."]
    C.save_result(NAME, res)
    C.update_section(NAME, "\n".join(lines))
    C.say("\n".join(lines))


if __name__ == "__main__":
    main()
