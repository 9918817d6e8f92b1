"""Shared helpers of the benchmark scripts: environment, machine facts, data, BENCHMARKS.md.

Every script imports this module *before* transferkit: it points ``TRANSFERKIT_CACHE`` at a fresh
temporary directory (unless the caller already chose one with ``fresh_cache=False``), keeps the
hub offline and the tokenizers single-process, so that measurements are comparable.
"""
from __future__ import annotations

import datetime as _dt
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
RESULTS = BENCH / "results"
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
SHARED = Path(os.environ.get("TRANSFERKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
SPAM = SHARED / "spamassassin.jsonl.gz"
MNIST = SHARED / "mnist_5k.csv.gz"

# Sections of BENCHMARKS.md in the order they appear.
SECTIONS = ["summary", "extraction", "cache", "memory", "probe", "bad_images", "read", "logme", "transferability", "rank_cost", "strategies", "spam_full", "finetune", "lora", "adapt", "distill", "onnx", "serve", "serve_checks"]


def setup_env(fresh_cache: bool = True) -> str | None:
    """Offline hub, quiet tokenizers, and (by default) a fresh empty feature cache.

    Must run before ``import transferkit``.  Returns the cache directory when one was made.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if fresh_cache:
        d = tempfile.mkdtemp(prefix="tk-bench-cache-")
        os.environ["TRANSFERKIT_CACHE"] = d
        return d
    return None


def require_data(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        sys.exit(f"benchmark data missing: {', '.join(missing)} (set TRANSFERKIT_SHARED_DATA to the folder "
                 "that holds spamassassin.jsonl.gz and mnist_5k.csv.gz)")


# ----------------------------------------------------------------------------- machine
def machine() -> dict[str, Any]:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count()
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem_gb = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "transferkit"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit = (commit + ("+uncommitted changes in transferkit/" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"cpu": cpu, "cores": cores, "memory_gb": mem_gb, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "commit": commit,
            "cpu_busy_before_pct": busy_pct()}


def machine_line(m: dict[str, Any]) -> str:
    return (f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM; torch {m['torch']} "
            f"({m['torch_threads']} threads), Python {m['python']}; transferkit {m['commit']}; "
            f"run {m['date']} (CPU busy with other work just before: {m.get('cpu_busy_before_pct', '?')}%"
            + (f", during the run: {m['cpu_other_during_pct']}%" if "cpu_other_during_pct" in m else "") + ").")


def busy_pct(seconds: float = 2.0) -> float:
    """Share of all CPUs busy over ``seconds`` while this process sleeps: load from other work."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v), idle
    try:
        t0, i0 = snap()
        time.sleep(seconds)
        t1, i1 = snap()
    except OSError:
        return -1.0
    return round(100.0 * (1 - (i1 - i0) / max(t1 - t0, 1)), 1)


def _cpu_snapshot() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its children)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    busy = (sum(v[:8]) - v[3] - (v[4] if len(v) > 4 else 0)) / hz
    t = os.times()
    return busy, t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """CPU used by *other* processes while a benchmark runs, as % of all cores."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.s0 = _cpu_snapshot()

    def pct(self) -> float:
        busy, own = _cpu_snapshot()
        wall = time.monotonic() - self.t0
        cores = os.cpu_count() or 1
        other = (busy - self.s0[0]) - (own - self.s0[1])
        return round(max(0.0, 100.0 * other / max(wall * cores, 1e-9)), 1)


def wait_for_idle(max_wait_s: float, threshold_pct: float = 10.0) -> float:
    """Wait (up to ``max_wait_s``) until other work uses less than ``threshold_pct`` of the CPUs.

    Returns the last measured busy share."""
    t0 = time.monotonic()
    while True:
        b = busy_pct(3.0)
        if b < threshold_pct or time.monotonic() - t0 > max_wait_s:
            return b
        print(f"  waiting for an idle machine: {b}% of the CPUs busy with other work", flush=True)
        time.sleep(20)


def warn_if_busy(m: dict) -> None:
    """Timings are only meaningful on an idle machine: say so when something else runs."""
    if m.get("cpu_busy_before_pct", 0) > 15:
        print(f"WARNING: {m['cpu_busy_before_pct']}% of the CPUs were busy with other work just before this "
              "benchmark; timings will be distorted (run one benchmark at a time, nothing else).", flush=True)


# ----------------------------------------------------------------------------- data
def load_spam() -> list[dict]:
    require_data(SPAM)
    with gzip.open(SPAM, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def spam_text(row: dict) -> str:
    """subject + body exactly as transferkit joins two text columns."""
    return f"{row['subject']}\n{row['body']}"


def spam_dataset(rows: list[dict], indices=None):
    """A text Dataset of spam rows (``spam_text``, ``label``), all of them or those at ``indices``."""
    from transferkit.data import from_arrays

    rs = rows if indices is None else [rows[i] for i in indices]
    return from_arrays([spam_text(r) for r in rs], [r["label"] for r in rs], modality="text")


def load_mnist():
    """``(images (5000, 28, 28) uint8, labels (5000,) int)``."""
    import numpy as np

    require_data(MNIST)
    with gzip.open(MNIST, "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.int64)
    return a[:, :784].reshape(-1, 28, 28).astype(np.uint8), a[:, 784]


def stratified_indices(labels, n: int, seed: int = 0) -> list[int]:
    """``n`` indices with the class proportions of ``labels`` (largest remainders), seeded,
    returned in a seeded random order (not sorted by class)."""
    import numpy as np

    labels = list(labels)
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels))
    by = {c: [i for i, y in enumerate(labels) if y == c] for c in classes}
    share = {c: n * len(by[c]) / len(labels) for c in classes}
    take = {c: int(share[c]) for c in classes}
    for c in sorted(classes, key=lambda c: -(share[c] - int(share[c]))):
        if sum(take.values()) < n:
            take[c] += 1
    out = []
    for c in classes:
        out += [by[c][k] for k in rng.permutation(len(by[c]))[:take[c]]]
    return [out[k] for k in rng.permutation(len(out))]


def write_jsonl_gz(rows: list[dict], path: Path, keys=("id", "group", "label", "subject", "body")) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({k: r[k] for k in keys}, ensure_ascii=False) + "\n")
    return path


# ----------------------------------------------------------------------------- timing
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def med(xs):
    return statistics.median(xs)


# ----------------------------------------------------------------------------- memory
def rss_kb() -> dict[str, int]:
    """VmRSS and VmHWM (peak) of this process, in KiB."""
    d = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":", 1)
                d[k] = int(v.split()[0])
    return d


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM and ru_maxrss) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- BENCHMARKS.md
HEADER = """# Benchmarks

Measured by the scripts in `benchmarks/` (how to run them: `benchmarks/README.md`); each script
rewrites its own section below and the summary table is rebuilt from `benchmarks/results/*.json`.
Every figure here was measured, none is estimated; each section names the machine, versions and date.
"""


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def _sections(text: str) -> dict[str, str]:
    out = {}
    for name in SECTIONS:
        a, b = _markers(name)
        i, j = text.find(a), text.find(b)
        if i >= 0 and j > i:
            out[name] = text[i + len(a):j].strip("\n")
    return out


def update_section(name: str, body: str) -> None:
    """Replace (or add) the section ``name`` of BENCHMARKS.md, then rebuild the summary."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else ""
    secs = _sections(text)
    secs[name] = body.strip("\n")
    secs["summary"] = summary_table()
    parts = [HEADER.rstrip("\n")]
    for n in SECTIONS:
        if n in secs:
            a, b = _markers(n)
            parts.append(f"{a}\n{secs[n]}\n{b}")
    BENCHMARKS_MD.write_text("\n\n".join(parts) + "\n")


def save_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    p = RESULTS / f"{name}.json"
    p.write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    return p


def _jsonable(x):
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(x, Path):
        return str(x)
    raise TypeError(type(x).__name__)


def summary_table() -> str:
    """The must-show items: one row per entry of each results file's ``summary`` list."""
    rows = []
    for name in SECTIONS[1:]:
        p = RESULTS / f"{name}.json"
        if not p.exists():
            rows.append(f"| {name} | (not run yet: `python benchmarks/bench_{name}.py`) | | | |")
            continue
        r = json.loads(p.read_text())
        for s in r.get("summary", []):
            met = {True: "**yes**", False: "**NO**", None: "n/a"}[s.get("met")]
            rows.append(f"| {s['item']} | {s['goal']} | {s['measured']} | {met} | [{name}](#{s.get('anchor', name)}) |")
    return "\n".join(["## Summary", "",
                      "| item | goal | measured | met? | details |", "|---|---|---|---|---|", *rows])


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt_ci(x: float, ci) -> str:
    return f"{x:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def fmt_gain(x: float, ci) -> str:
    return f"{100 * x:+.1f} pts [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def say(msg: str = "") -> None:
    print(msg, flush=True)
