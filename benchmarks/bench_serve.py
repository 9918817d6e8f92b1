"""Load test of ``transferkit serve`` on loopback: capacity, then latency and throughput at 0.5x, 1x
and 2x capacity, the share of 503/429 above capacity, and no other 5xx.

A real minilm-l6 linear-probe run is fitted on a stratified subset of the SpamAssassin e-mails
(subject + body, controls off: only the served model matters here) and exported
(``export_onnx(run, quantize="int8")``); two servers run on it one after the other, each as its own
process (``python -m transferkit.cli serve RUN``): :data:`CONFIGS`, PyTorch without the output cache
(the server before issue #25) and today's defaults; the load generator here, the same for both.
Requests carry held-out real e-mails (``--texts-per-request`` each, at most the server's
``max_text_chars`` characters).

1. Capacity: closed loop, ``--concurrency`` clients sending back to back for ``--capacity-s``
   seconds; capacity = answered requests per second.
2. Open loop (Poisson arrivals) at 0.5x, 1x and 2x that rate for ``--level-s`` seconds each (at
   most ``--max-requests`` per level); every request is waited for (the server's own timeout,
   30 s, bounds that).

Run: ``python benchmarks/bench_serve.py [--n-train 600] [--level-s 60]`` (about 20 min on 2 cores);
``--quick`` is a tiny smoke run that writes nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

CACHE = C.setup_env()

import numpy as np  # noqa: E402

WORK = Path(tempfile.mkdtemp(prefix="tk-bench-serve-"))
MAX_TEXT_CHARS = 20_000  # the server's default limit


def fit_run(n_train: int, reuse: str | None = None) -> tuple[Path, list[str], dict]:
    """Fit the served run on ``n_train`` e-mails (or take ``reuse``, a run this script fitted and
    exported with the same ``n_train``); return it and held-out texts for requests."""
    import json

    import transferkit as tk

    rows = C.load_spam()
    idx = C.stratified_indices([r["label"] for r in rows], min(n_train, len(rows)), seed=0)
    chosen = set(idx)
    if reuse:
        out = Path(reuse)
        metrics = json.loads((out / "metrics.json").read_text())
        info = {"n_train": metrics["n_train"], "n_test": metrics["n_test"], "fit_s": None,
                "accuracy": metrics["test"]["accuracy"], "reused": str(out),
                "export": json.loads((out / "model_card.json").read_text())["export"]}
    else:
        data = C.write_jsonl_gz([rows[i] for i in sorted(idx)], WORK / "train.jsonl.gz")
        out = WORK / "run"
        t = time.perf_counter()
        model = tk.fit(data=str(data), text_columns=["subject", "body"], model="minilm-l6", control=False,
                       select=False, out=str(out), log=lambda m: C.say(f"   {m}"), progress=False)
        info = {"n_train": model.metrics["n_train"], "n_test": model.metrics["n_test"],
                "fit_s": time.perf_counter() - t, "accuracy": model.metrics["test"]["accuracy"]}
    rest = [i for i in range(len(rows)) if i not in chosen]
    random.Random(0).shuffle(rest)
    texts = [C.spam_text(rows[i])[:MAX_TEXT_CHARS] for i in rest]
    return out, texts, info


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int, log: Path, queue_items: int | None, flags: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(C.REPO))
    extra = ["--queue-items", str(queue_items), "--max-items", str(min(64, queue_items))] if queue_items else []
    proc = subprocess.Popen([sys.executable, "-m", "transferkit.cli", "serve", str(run), "--port", str(port), *extra,
                             *flags],
                            cwd=C.REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < 300:
        if proc.poll() is not None:
            sys.exit(f"the server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    sys.exit("the server did not become ready within 300 s")


class Recorder:
    def __init__(self) -> None:
        self.rows: list[tuple[int, float]] = []  # (status, seconds); status 0 = connection error
        self.codes: dict[str, int] = {}  # "503 overloaded" -> count

    async def send(self, client, body: dict) -> None:
        import httpx

        t = time.perf_counter()
        try:
            r = await client.post("/predict", json=body)
            status = r.status_code
            if status >= 400:
                try:
                    code = r.json().get("error", "?")
                except ValueError:
                    code = "not-json"
                self.codes[f"{status} {code}"] = self.codes.get(f"{status} {code}", 0) + 1
        except httpx.HTTPError:
            status = 0
        self.rows.append((status, time.perf_counter() - t))


def _client(url: str):
    import httpx

    return httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=2000,
                                                                            max_keepalive_connections=200))


class Texts:
    """The held-out e-mails, handed out in order: no text repeats until all were sent, so the
    server's output cache (repeated items) gives no advantage here."""

    def __init__(self, texts: list[str]):
        self.texts, self.i = texts, 0

    def take(self, k: int) -> list[str]:
        out = [self.texts[(self.i + j) % len(self.texts)] for j in range(k)]
        self.i += k
        return out


async def closed_loop(url: str, texts: Texts, k: int, concurrency: int, seconds: float, max_requests: int):
    rec = Recorder()
    stop = time.perf_counter() + seconds

    async def worker(client):
        while time.perf_counter() < stop and len(rec.rows) < max_requests:
            await rec.send(client, {"texts": texts.take(k)})

    async with _client(url) as client:
        t = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return rec, time.perf_counter() - t


async def open_loop(url: str, texts: Texts, k: int, rate: float, seconds: float, max_requests: int, seed: int):
    rng = np.random.default_rng(seed)
    n = int(min(max_requests, max(1, round(rate * seconds))))
    arrivals = np.cumsum(rng.exponential(1.0 / rate, n))
    rec = Recorder()
    async with _client(url) as client:
        t0 = time.perf_counter()
        tasks = []
        for at in arrivals:
            delay = at - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            body = {"texts": texts.take(k)}
            tasks.append(asyncio.create_task(rec.send(client, body)))
        sent_s = time.perf_counter() - t0
        await asyncio.gather(*tasks)
        return rec, time.perf_counter() - t0, sent_s


def summarize(rec: Recorder, wall: float, offered: float | None = None, sent_s: float | None = None) -> dict:
    ok = sorted(s for st, s in rec.rows if st == 200)
    n = len(rec.rows)
    count = {st: sum(1 for x, _ in rec.rows if x == st) for st in sorted({x for x, _ in rec.rows})}

    def pct(q):
        return float(np.percentile(ok, q)) if ok else None

    return {"requests": n, "offered_rps": offered, "sent_s": sent_s, "wall_s": wall, "ok": len(ok),
            "throughput_rps": len(ok) / wall if wall else 0.0, "status_counts": count, "error_codes": rec.codes,
            "share_shed": sum(v for k, v in count.items() if k in (429, 503)) / n if n else 0.0,
            "other_5xx": sum(v for k, v in count.items() if k >= 500 and k not in (503,)),
            "connection_errors": count.get(0, 0),
            "other_4xx": sum(v for k, v in count.items() if 400 <= k < 500 and k != 429),
            "p50_s": pct(50), "p95_s": pct(95), "p99_s": pct(99)}


def scrape(url: str) -> dict:
    import httpx

    vals = {}
    for ln in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if ln and not ln.startswith("#"):
            k, v = ln.rsplit(" ", 1)
            vals[k] = float(v)
    p = "transferkit_serve_"
    b = vals.get(f"{p}batch_items_count", 0)
    return {"batches": b, "mean_batch_items": vals.get(f"{p}batch_items_sum", 0) / b if b else None,
            "drift_alarm": vals.get(f"{p}drift_alarm"), "drift_p_value": vals.get(f"{p}drift_p_value"),
            "drift_tests": vals.get(f"{p}drift_tests_total"), "cache_hits": vals.get(f"{p}cache_hits_total", 0.0)}


#: The servers compared on the same run, one after the other, with the same load generator:
#: what `transferkit serve` ran before issue #25 (PyTorch, no output cache) and its defaults now.
CONFIGS = {"before: PyTorch fp32, no cache": ["--backend", "torch", "--cache-items", "0"], "now: defaults": []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-train", type=int, default=600, help="stratified e-mails for the served run's fit")
    ap.add_argument("--texts-per-request", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=64, help="closed-loop clients for the capacity probe")
    ap.add_argument("--capacity-s", type=float, default=30.0)
    ap.add_argument("--level-s", type=float, default=60.0, help="seconds of arrivals per load level")
    ap.add_argument("--levels", default="0.5,1,2", help="load levels, as multiples of each server's capacity")
    ap.add_argument("--threads", type=int, help="the servers' --threads (ONNX Runtime; default: torch's threads, "
                    "so that both runtimes get the same)")
    ap.add_argument("--reuse-run", metavar="RUN", help="serve this run, fitted and exported by an earlier run of "
                    "this script with the same --n-train, instead of fitting one")
    ap.add_argument("--queue-items", type=int, help="the server's --queue-items (default: its default, 256)")
    ap.add_argument("--max-requests", type=int, default=3000, help="requests per phase at most")
    ap.add_argument("--quick", action="store_true",
                    help="tiny smoke run (80 e-mails, a few seconds a level); writes nothing")
    ap.add_argument("--no-write", action="store_true")
    a = C.parse_args(ap)
    if a.quick:
        a.n_train, a.capacity_s, a.level_s, a.max_requests, a.concurrency = 80, 4.0, 6.0, 200, 8
        a.queue_items = a.queue_items or 8  # small enough that 2x sheds within seconds
        a.no_write = True
    import torch

    from transferkit.export import export_onnx

    load = C.OtherLoad()
    m = C.machine()
    C.say(C.machine_line(m))
    C.warn_if_busy(m)
    t_all = time.perf_counter()
    C.say(f"== fitting the served run (minilm-l6 linear probe, {a.n_train} e-mails)")
    run, texts, fit_info = fit_run(a.n_train, a.reuse_run)
    if "export" not in fit_info:
        C.say("== transferkit export --quantize int8 (the run's ONNX graphs, checked on its test split)")
        t = time.perf_counter()
        fit_info["export"] = export_onnx(run, quantize="int8", log=lambda msg: C.say(f"   {msg}"))
        fit_info["export_s"] = time.perf_counter() - t
    threads = a.threads or torch.get_num_threads()
    cores = m["cores"]
    entry = fit_info["export"]
    graph = entry["int8"]["file"] if entry.get("int8", {}).get("accepted") else entry["file"]
    C.say(f"== ONNX Runtime on {graph}: intra-op threads vs worker processes ({cores} cores, 64 held-out e-mails)")
    fit_info["threads_vs_processes"] = threads_vs_processes(run, graph, texts[-64:], cores)
    C.say(f"   items/s: {fit_info['threads_vs_processes']}")
    pool = Texts(texts[:-64])
    res = {"machine": m, "args": vars(a), "fit": fit_info, "threads": threads, "configs": {}}
    for name, flags in CONFIGS.items():
        C.say(f"== server {name} ({' '.join(flags) or 'no flags'})")
        res["configs"][name] = serve_phases(a, run, pool, [*flags, "--threads", str(threads)])
    res["total_s"] = time.perf_counter() - t_all
    m["cpu_other_during_pct"] = load.pct()
    body = report(res)
    if not a.no_write:
        C.save_result("serve", res)
        C.update_section("serve", body)
    C.say(body)


_RUNNER = None


def _init_worker(run: str, file: str) -> None:
    global _RUNNER
    import transferkit as tk
    from transferkit.onnx_runtime import OnnxRunner

    _RUNNER = OnnxRunner(Path(run) / file, tk.load(run, cache=False).backbone, threads=1)


def _predict_chunk(texts: list[str]) -> int:
    from transferkit.data.dataset import Dataset

    _RUNNER.predict_outputs(Dataset(modality="text", inputs=texts))
    return len(texts)


def threads_vs_processes(run: Path, file: str, texts: list[str], cores: int, reps: int = 2) -> dict:
    """The graph the server runs, on the same texts: one process with ``cores`` intra-op threads vs
    ``cores`` worker processes of one thread each (batches of 8 texts handed out in turn)."""
    from concurrent.futures import ProcessPoolExecutor

    import transferkit as tk
    from transferkit.data.dataset import Dataset
    from transferkit.onnx_runtime import OnnxRunner

    one = OnnxRunner(run / file, tk.load(run, cache=False).backbone, threads=cores)
    chunks = [texts[i:i + 8] for i in range(0, len(texts), 8)]
    out = {}
    one.predict_outputs(Dataset(modality="text", inputs=chunks[0]))
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for c in chunks:
            one.predict_outputs(Dataset(modality="text", inputs=c))
        best = min(best, time.perf_counter() - t)
    out[f"1 process x {cores} threads"] = len(texts) / best
    with ProcessPoolExecutor(cores, initializer=_init_worker, initargs=(str(run), file)) as ex:
        list(ex.map(_predict_chunk, chunks[:cores]))  # load and warm every worker
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            list(ex.map(_predict_chunk, chunks))
            best = min(best, time.perf_counter() - t)
    out[f"{cores} processes x 1 thread"] = len(texts) / best
    return out


def serve_phases(a, run: Path, pool: Texts, flags: list[str]) -> dict:
    """One server process: its /metadata, capacity, the open-loop levels, its metrics."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(run, port, WORK / f"server-{port}.log", a.queue_items, flags)
    out = {"flags": flags, "levels": []}
    try:
        out["serving"] = httpx.get(f"{url}/metadata", timeout=10).json().get("serving")
        C.say(f"   serving: {out['serving']}")
        C.say(f"   capacity: {a.concurrency} clients back to back for {a.capacity_s:.0f} s")
        rec, wall = asyncio.run(closed_loop(url, pool, a.texts_per_request, a.concurrency, a.capacity_s,
                                            a.max_requests))
        out["capacity"] = summarize(rec, wall)
        cap = max(out["capacity"]["throughput_rps"], 0.1)
        C.say(f"   capacity {cap:.1f} requests/s ({out['capacity']['status_counts']})")
        for k, f in enumerate(float(x) for x in a.levels.split(",")):
            C.say(f"   open loop at {f}x capacity ({f * cap:.1f} requests/s) for {a.level_s:.0f} s")
            rec, wall, sent = asyncio.run(open_loop(url, pool, a.texts_per_request, f * cap, a.level_s,
                                                    a.max_requests, seed=k))
            row = dict(summarize(rec, wall, f * cap, sent), factor=f)
            out["levels"].append(row)
            C.say(f"   {row['status_counts']} {row['error_codes']}; "
                  f"p50 {_ms(row['p50_s'])} ms, p99 {_ms(row['p99_s'])} ms")
        out["server_metrics"] = scrape(url)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return out


def _ms(x) -> str:
    return "—" if x is None else f"{1000 * x:.0f}"


def served_accuracy(res: dict, cfg: dict) -> float:
    """Test accuracy of what the server ran: the run's (PyTorch) or its export check's fp32 / int8 figure."""
    name = ((cfg.get("serving") or {}).get("backend") or {}).get("name", "torch")
    q = res["fit"]["export"].get("int8") or {}
    return {"onnx": q.get("accuracy_fp32"), "onnx-int8": q.get("accuracy_int8")}.get(name) or res["fit"]["accuracy"]


def _rows(cfg: dict) -> list[list]:
    cap = cfg["capacity"]
    rows = [["capacity probe (closed loop)", "—", f"{cap['throughput_rps']:.1f}", _ms(cap["p50_s"]), _ms(cap["p95_s"]),
             _ms(cap["p99_s"]), f"{100 * cap['share_shed']:.1f}%", cap["other_5xx"], cap["connection_errors"],
             cap["requests"]]]
    for r in cfg["levels"]:
        rows.append([f"{r['factor']}x capacity (open loop)", f"{r['offered_rps']:.1f}", f"{r['throughput_rps']:.1f}",
                     _ms(r["p50_s"]), _ms(r["p95_s"]), _ms(r["p99_s"]), f"{100 * r['share_shed']:.1f}%", r["other_5xx"],
                     r["connection_errors"], r["requests"]])
    return rows


def report(res: dict) -> str:
    (bname, before), (nname, now) = list(res["configs"].items())
    cap0, cap = before["capacity"]["throughput_rps"], now["capacity"]["throughput_rps"]
    acc0, acc = served_accuracy(res, before), served_accuracy(res, now)
    at1 = next((r for r in now["levels"] if r["factor"] == 1.0), None)
    over = next((r for r in now["levels"] if r["factor"] == 2.0), None)
    bad = sum(r["other_5xx"] + r["connection_errors"] for r in [now["capacity"], *now["levels"]])
    backend = (now.get("serving") or {}).get("backend") or {}
    gain = cap / max(cap0, 1e-9)
    res["summary"] = [
        {"item": "serve: requests/s, defaults now vs PyTorch before (minilm-l6 probe, 1 real e-mail per request)",
         "goal": ">= 4x at equal test accuracy (±0.5 pt), p99 at 1x capacity <= 2 s",
         "measured": f"{gain:.2f}x ({cap0:.1f} -> {cap:.1f} requests/s, {backend.get('name')}; accuracy {acc0:.3f} -> "
                     f"{acc:.3f}); p99 at 1x {_ms(at1 and at1['p99_s'])} ms",
         "met": bool(gain >= 4 and abs(acc - acc0) <= 0.005 and at1 and at1["p99_s"] is not None
                     and at1["p99_s"] <= 2.0), "anchor": "serve"},
        {"item": "serve: above capacity (2x) the excess is shed with 503/429, no other 5xx",
         "goal": "shed share > 0, other 5xx = 0, p99 of answered bounded by the 30 s timeout",
         "measured": (f"{100 * over['share_shed']:.1f}% shed, {bad} other 5xx / connection errors, "
                      f"p99 {_ms(over['p99_s'])} ms") if over else "not run",
         "met": bool(over and over["share_shed"] > 0 and bad == 0) if over else None, "anchor": "serve"},
    ]
    header = ['phase', 'offered req/s', 'answered req/s', 'p50 ms', 'p95 ms', 'p99 ms', 'shed (503/429)', 'other 5xx',
              'connection errors', 'requests']
    parts = []
    for name, cfg in res["configs"].items():
        sm = cfg.get("server_metrics", {})
        b = (cfg.get("serving") or {}).get("backend") or {"name": "torch", "why": "(server without /metadata serving)"}
        mean_b = sm.get("mean_batch_items")
        parts.append(f"**{name}** (`{' '.join(cfg['flags'])}`): backend {b['name']} ({b['why']}); test accuracy of "
                     f"what it ran {served_accuracy(res, cfg):.3f}; mean items per model call "
                     f"{'—' if mean_b is None else f'{mean_b:.1f}'}; cache hits {sm.get('cache_hits', 0):.0f}"
                     f"\n\n{C.md_table(header, _rows(cfg))}")
    q = res["fit"]["export"].get("int8") or {}
    tp = res["fit"]["threads_vs_processes"]
    (k1, v1), (k2, v2) = tp.items()
    verdict = (f"One process with intra-op threads was as fast or faster ({v1 / v2:.2f}x), so the server's default "
               "stays one process with ONNX Runtime's intra-op threads (`--threads`, default one per core)."
               if v1 >= 0.95 * v2 else
               f"Worker processes were faster ({v2 / v1:.2f}x); the server still runs one process with intra-op "
               "threads (several worker processes are not built: each would hold the model and its own queue).")
    return f"""<a id="serve"></a>
## Serving under load (`benchmarks/bench_serve.py`)

{C.machine_line(res['machine'])} The CPU was shared with other agents' work (8 at once): the two
servers ran one after the other against the same load generator, so read their ratio more than
their absolute rates.

`transferkit serve` as its own process on 127.0.0.1 (max batch 32, 5 ms batching delay, 30 s
timeout; {res['args']['queue_items'] or '256 (the default)'} queued items at most; `--threads {res['threads']}`, the
threads PyTorch had), serving a minilm-l6 linear probe fitted on {res['fit']['n_train']:,} stratified
SpamAssassin e-mails (test accuracy {res['fit']['accuracy']:.3f} on {res['fit']['n_test']}) and exported with
`transferkit export --quantize int8` ({q.get('check', 'no int8 check')}). Two servers on the same run
directory, one after the other: PyTorch without the output cache (what `serve` ran before issue
#25) and today's defaults (`--backend auto`: the run's fastest checked graph). Each request
carries {res['args']['texts_per_request']} held-out real e-mail(s) (subject + body, long ones embedded in up to
8 windows of 256 tokens), never a text sent before (so the output cache gives nothing here). The
load generator (httpx, asyncio) runs in this process, on the same cores. Capacity:
{res['args']['concurrency']} clients back to back for {res['args']['capacity_s']:.0f} s; then Poisson arrivals at
{res['args']['levels']} x that server's capacity for {res['args']['level_s']:.0f} s each (at most
{res['args']['max_requests']} requests). Latencies are of answered (200) requests, queueing included; "shed" is the
share answered 503/429 with Retry-After. Whole script: {res['total_s'] / 60:.1f} min.

Requests/s, defaults now vs before: **{gain:.2f}x** ({cap0:.1f} -> {cap:.1f}).

Threads or processes (the graph the server runs, 64 held-out e-mails, batches of 8, best of 2):
{"; ".join(f"{k}: {v:.2f} e-mails/s" for k, v in tp.items())}. {verdict}

{(chr(10) * 2).join(parts)}
"""


if __name__ == "__main__":
    main()
