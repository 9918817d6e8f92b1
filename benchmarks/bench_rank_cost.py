"""What ranking costs beyond feature extraction: ``rank`` on three candidates vs extraction alone.

Spam (subject + body, a stratified subset of ``--items`` e-mails, seed 0), candidates
``minilm-l6``, ``minilm-l6@3`` and ``random:minilm-l6``.  Side A extracts the three candidates'
features with ``extract_features`` and nothing else; side B runs ``transferkit.ranking.rank`` with
its default scores (LogME, H-score, kNN, LEEP, NCE), which extracts the same features and scores
them.  Both start from a fresh, empty feature cache and fresh backbone objects (so both load the
weights); the sides alternate over ``--reps`` repetitions and the medians are compared.

Run: ``python benchmarks/bench_rank_cost.py`` (about 5 minutes on 2 idle cores).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

C.setup_env()

CANDIDATES = ["minilm-l6", "minilm-l6@3", "random:minilm-l6"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    a = C.parse_args(ap)
    import transferkit as tk
    from transferkit.features import FeatureCache, extract_features
    from transferkit.ranking import parse_candidate, rank

    load = C.OtherLoad()
    m = C.machine()
    C.say(C.machine_line(m))
    rows = C.load_spam()
    idx = C.stratified_indices([r["label"] for r in rows], a.items, seed=0)
    ds = C.spam_dataset(rows, idx)

    def fresh_cache() -> None:
        os.environ["TRANSFERKIT_CACHE"] = tempfile.mkdtemp(prefix="tk-rank-cost-")

    def extract_only() -> float:
        fresh_cache()
        t = time.perf_counter()
        for c in map(parse_candidate, CANDIDATES):
            bb = tk.get_backbone(c.model, **({"layer": c.layer} if c.layer is not None else {}))
            bb = bb.randomized(0) if c.random else bb
            extract_features(bb, ds, cache=FeatureCache(), progress=False)
        return time.perf_counter() - t

    def ranking() -> float:
        fresh_cache()
        t = time.perf_counter()
        rank(ds, CANDIDATES, log=None, progress=False)
        return time.perf_counter() - t

    sides = {"extraction only": extract_only, "rank (extraction + 5 scores)": ranking}
    times = {k: [] for k in sides}
    for r in range(a.reps):
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
        for k in order:
            dt = sides[k]()
            times[k].append(dt)
            C.say(f"  rep {r + 1} {k:<30} {dt:6.1f} s")
    med = {k: C.med(v) for k, v in times.items()}
    ratio = med["rank (extraction + 5 scores)"] / med["extraction only"]
    m["cpu_other_during_pct"] = load.pct()
    summary = [{"item": f"rank 3 candidates on spam ({a.items} e-mails) vs their extraction alone",
                "goal": "< 1.5x", "measured": f"{ratio:.2f}x ({med['rank (extraction + 5 scores)']:.1f} s vs "
                f"{med['extraction only']:.1f} s, medians of {a.reps})", "met": bool(ratio < 1.5),
                "anchor": "rank-cost"}]
    res = {"machine": m, "args": vars(a), "times": times, "medians": med, "ratio": ratio, "summary": summary}
    body = f"""<a id="rank-cost"></a>
## The cost of ranking (`benchmarks/bench_rank_cost.py`)

{C.machine_line(m)}

{a.items} spam e-mails (stratified, seed 0), candidates {', '.join(f'`{c}`' for c in CANDIDATES)}. Each
repetition starts from an empty feature cache and loads the weights; the sides alternate.

{C.md_table(['side', 'seconds per repetition', 'median'],
            [[k, ', '.join(f'{t:.1f}' for t in v), f'{med[k]:.1f}'] for k, v in times.items()])}

Ranking costs **{ratio:.2f}x** the extraction alone (goal < 1.5x): the scores themselves take
seconds next to the forward passes.
"""
    if not a.no_write:
        C.save_result("rank_cost", res)
        C.update_section("rank_cost", body)
    C.say(body)


if __name__ == "__main__":
    main()
