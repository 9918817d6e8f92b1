"""Roofline: this machine's fp32 matrix-product rate, and extraction and serving as fractions of it.

1. The rate: ``torch.mm`` of two ``--n`` x ``--n`` fp32 matrices, best of ``--reps``, at the
   threads PyTorch has (``OMP_NUM_THREADS``); 2 n^3 FLOP per product.
2. The work per item, counted by ``torch.utils.flop_counter.FlopCounterMode`` over the real
   forward pass: minilm-l6 on held-out SpamAssassin e-mails (subject + body) as the product
   embeds them (windows of 256 tokens, at most 8; and cut to one window), efficientnet-lite0 on
   MNIST images at 224 and 96 px.
3. Extraction measured here, in the same run: ``extract_features`` (no cache) with PyTorch and
   ``--backend onnx`` on ``--texts`` e-mails and ``--images`` images; items/s x FLOP/item / rate.
4. The serving and int8 figures of ``results/serve.json`` and ``results/int8.json`` (their own runs)
   as the same fraction, at this run's rate.

Run: ``python benchmarks/bench_roofline.py`` (a few minutes on 2 cores).
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
NAME = "roofline"


def matmul_gflops(n: int, reps: int) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def flops_per_item(backbone, items) -> float:
    """FLOP of the backbone's forward pass per item (matrix products and convolutions)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    batch = backbone.prepare(items)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        backbone.forward_features(batch)
    return fc.get_total_flops() / len(items)


def timed_extraction(backbone, data, backend: str, reps: int) -> float:
    from transferkit.features import extract_features

    extract_features(backbone, data.subset(range(min(4, len(data)))), cache=False, backend=backend, progress=False)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        extract_features(backbone, data, cache=False, backend=backend, progress=False)
        best = min(best, time.perf_counter() - t)
    return len(data) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--texts", type=int, default=32)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--record", action="store_true", help="only re-read the serving and int8 results files into "
                    "results/roofline.json and the section (nothing is measured)")
    ap.add_argument("--no-write", action="store_true")
    a = C.parse_args(ap)
    if a.record:
        res = json.loads((C.RESULTS / f"{NAME}.json").read_text())
        res["elsewhere"] = elsewhere(res["gflops"], res["cases"])
        C.publish(NAME, res, report(res), a.no_write)
        return
    import torch

    import transferkit as tk

    load = C.OtherLoad()
    m = C.machine()
    C.say(C.machine_line(m))
    gflops = matmul_gflops(a.n, a.reps)
    C.say(f"fp32 matmul {a.n}x{a.n}: {gflops:.1f} GFLOP/s on {torch.get_num_threads()} thread(s)")
    rows = C.load_spam()
    texts = [C.spam_text(rows[i]) for i in C.stratified_indices([r["label"] for r in rows], a.texts, seed=1)]
    images, labels = C.load_mnist()
    imgs = [images[i] for i in C.stratified_indices(labels, a.images, seed=1)]
    cases = {}
    for label, name, opts, items in (
            ("minilm-l6, e-mails, up to 8 windows of 256 tokens", "minilm-l6", {}, texts),
            ("minilm-l6, e-mails cut to one window of 256 tokens", "minilm-l6", {"max_chunks": 1}, texts),
            ("efficientnet-lite0, MNIST at 224 px", "efficientnet-lite0", {"image_size": 224}, imgs),
            ("efficientnet-lite0, MNIST at 96 px", "efficientnet-lite0", {"image_size": 96}, imgs)):
        bb = tk.get_backbone(name, **opts)
        modality = "text" if name.startswith("minilm") else "image"
        data = tk.Dataset(modality=modality, inputs=list(items))
        gflops = max(gflops, matmul_gflops(a.n, a.reps))  # the CPU is shared: its best rate of the whole run
        gf = flops_per_item(bb, list(items[:16])) / 1e9
        ips = {k: timed_extraction(bb, data, k, a.reps) for k in ("torch", "onnx")}
        cases[label] = {"gflop_per_item": gf, "items_per_s": ips,
                        "fraction": {k: v * gf / gflops for k, v in ips.items()}}
        C.say(f"{label}: {gf:.2f} GFLOP/item; " + ", ".join(
            f"{k} {v:.2f} items/s = {100 * v * gf / gflops:.0f}% of the roofline" for k, v in ips.items()))
    m["cpu_other_during_pct"] = load.pct()
    for c in cases.values():  # against the best rate seen over the whole run
        c["fraction"] = {k: v * c["gflop_per_item"] / gflops for k, v in c["items_per_s"].items()}
    C.say(f"fp32 matmul, best over the run: {gflops:.1f} GFLOP/s")
    res = {"machine": m, "gflops": gflops, "threads": torch.get_num_threads(), "n": a.n, "cases": cases,
           "elsewhere": elsewhere(gflops, cases)}
    worst = min(f for c in cases.values() for f in c["fraction"].values())
    best = max(max(c["fraction"].values()) for c in cases.values())
    res["summary"] = [{"item": "extraction vs this machine's fp32 matmul roofline (text and images, PyTorch or ONNX "
                       "fp32)", "goal": ">= 60%", "measured": "; ".join(
                           f"{k.split(',')[0]} {k.split(',')[-1].strip()}: {100 * max(c['fraction'].values()):.0f}%"
                           for k, c in cases.items()) + f" (of {gflops:.0f} GFLOP/s)",
                       "met": all(max(c["fraction"].values()) >= 0.6 for c in cases.values()), "anchor": NAME}]
    C.say(f"fractions from {100 * worst:.0f}% to {100 * best:.0f}%")
    C.publish(NAME, res, report(res), a.no_write)


def elsewhere(gflops: float, cases: dict) -> list[list[str]]:
    """The serving and int8 figures of their own results files, as fractions of this run's rate."""
    out = []
    text = cases["minilm-l6, e-mails, up to 8 windows of 256 tokens"]["gflop_per_item"]
    serve = C.RESULTS / "serve.json"
    if serve.exists():
        r = json.loads(serve.read_text())
        for name, cfg in (r.get("configs") or {}).items():
            rps = cfg["capacity"]["throughput_rps"] * r["args"]["texts_per_request"]
            out.append([f"serve capacity, {name} (e-mails/s)", f"{rps:.1f}", f"{100 * rps * text / gflops:.0f}%",
                        r["machine"]["date"]])
    int8 = C.RESULTS / "int8.json"
    if int8.exists():
        r = json.loads(int8.read_text())
        px = r["image_size"]
        key = f"efficientnet-lite0, MNIST at {px} px"
        gf = cases[key]["gflop_per_item"] if key in cases else None
        for name, v in r["items_per_s"].items():
            out.append([f"int8 bench {px} px: {name} (images/s, decoding included)", f"{v:.1f}",
                        "—" if gf is None else f"{100 * v * gf / gflops:.0f}%", r["machine"]["date"]])
    return out


def report(res: dict) -> str:
    rows = [[k, f"{c['gflop_per_item']:.2f}", f"{c['items_per_s']['torch']:.2f}",
             f"{100 * c['fraction']['torch']:.0f}%", f"{c['items_per_s']['onnx']:.2f}",
             f"{100 * c['fraction']['onnx']:.0f}%"] for k, c in res["cases"].items()]
    other = res["elsewhere"]
    return f"""## Roofline

{C.machine_line(res["machine"])} The CPU was shared with other agents' work (8 at once), which
lowers the rates measured here alike; the fractions divide rates of the same run.

**This machine's fp32 matrix product: {res["gflops"]:.1f} GFLOP/s** (`torch.mm` {res["n"]}x{res["n"]}, best of the
repeats measured before each case, {res["threads"]} thread(s)). Work per item counted by `FlopCounterMode`
over the real forward pass; extraction is `extract_features` without the cache (tokenising / decoding
included), best of the repeats, PyTorch and `--backend onnx` (fp32 feature graph).

{C.md_table(["extraction", "GFLOP/item", "PyTorch items/s", "of roofline", "ONNX fp32 items/s", "of roofline"], rows)}

Serving and int8 figures of their own sections, as fractions of the rate above (a text request's
work taken as the mean e-mail's above: up to 8 windows):

{C.md_table(["figure", "rate", "of roofline", "measured"], other) if other else "(none recorded yet)"}

int8 figures can exceed 100%: the roofline is fp32's.
"""


if __name__ == "__main__":
    main()
