"""Shared helpers of the benchmark scripts: environment, machine facts, data, BENCHMARKS.md.

Every script imports this module *before* transferkit: it points ``TRANSFERKIT_CACHE`` at a fresh
temporary directory (unless the caller already chose one with ``fresh_cache=False``), keeps the
hub offline and the tokenizers single-process, so that measurements are comparable.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import json
import os
import platform
import shlex
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

# Sections of BENCHMARKS.md in the order they appear: reading data, extracting features, choosing a
# model, training it, shipping it.  Sections are unnumbered; each is linked by its anchor.
SECTIONS = ["summary", "read", "bad_images", "extraction", "cache", "memory", "logme", "transferability",
            "rank_cost", "probe", "strategies", "spam_full", "finetune", "lora", "tasks", "multitask", "audio",
            "selection", "adapt", "shifts", "continual", "pretrain", "rl", "federated", "timeseries", "forecast",
            "distill", "onnx", "serve", "serve_checks", "startup", "int8", "roofline"]
# The anchor of each section (kept as earlier links spelled them).
ANCHORS = {"read": "read", "bad_images": "bad-images", "extraction": "extraction", "cache": "cache",
           "memory": "memory", "logme": "logme-speed", "transferability": "transferability",
           "rank_cost": "rank-cost", "probe": "probe", "strategies": "strategies", "spam_full": "spam-full",
           "finetune": "finetune-speed", "lora": "lora", "adapt": "adapt", "shifts": "shifts", "distill": "distill",
           "onnx": "onnx", "rl": "rl-transfer",
           "serve": "serve", "serve_checks": "serve-checks", "tasks": "tasks",
           "multitask": "multitask", "selection": "selection", "startup": "startup",
           "int8": "int8", "roofline": "roofline", "federated": "federated", "timeseries": "timeseries",
           "forecast": "forecast", "audio": "audio", "continual": "continual", "pretrain": "pretrain"}
# Results files of a section other than ``results/NAME.json`` (its parts, each with its own run).
PART_FILES = {"adapt": ["adapt-da", "adapt-fewshot", "adapt-zeroshot"], "tasks": ["tasks-text"],
              "pretrain": ["pretrain-images"]}


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


# ----------------------------------------------------------------------------- arguments
_RUN: dict[str, Any] = {}  # this invocation's arguments, recorded by parse_args, saved by save_result


def parse_args(ap: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``ap.parse_args(argv)``, remembered so that :func:`save_result` records this invocation."""
    a = ap.parse_args(argv)
    _RUN.clear()
    _RUN.update(run_info(a, argv))
    return a


def this_run() -> dict[str, Any]:
    """A copy of what :func:`parse_args` recorded of this invocation (for a results file's parts)."""
    if not _RUN:
        raise RuntimeError("parse the arguments with _common.parse_args(ap) first")
    return dict(_RUN)


def run_info(a: argparse.Namespace | dict, argv: list[str] | None = None) -> dict[str, Any]:
    """What a results file records of the invocation that measured it: the script, its argv, every
    argument's value (defaults included) and the command that repeats the run with the same values."""
    args = dict(vars(a)) if isinstance(a, argparse.Namespace) else dict(a)
    script = Path(sys.argv[0]).resolve()
    try:
        script_name = str(script.relative_to(REPO))
    except ValueError:
        script_name = script.name
    return {"script": script_name, "argv": list(sys.argv[1:] if argv is None else argv), "args": args,
            "command": command_line(script_name, args), "args_recorded": True}


def command_line(script: str, args: dict[str, Any]) -> str:
    """``python SCRIPT --opt value ...`` with every argument spelled out, so that a later change of a
    default does not change what the command runs.  Flags that are off and options left unset are
    left out; ``--no-write`` and ``--quick`` never appear (a run that wrote results had neither)."""
    parts = ["python", script]
    for k, v in args.items():
        if v is None or v is False or k in ("no_write", "quick"):
            continue
        opt = "--" + k.replace("_", "-")
        if v is True:
            parts.append(opt)
        else:
            if isinstance(v, str) and Path(v).is_absolute():
                try:
                    v = str(Path(v).relative_to(REPO))
                except ValueError:
                    pass
            parts += [opt, str(v)]
    return shlex.join(parts)


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
Every figure here was measured, none is estimated. Each section starts with the command that
regenerates it, the commit it ran on and its results file, then names the machine, versions and date;
runs read back from an earlier run's log or results file are named as such where they appear.
"""
PROVENANCE = "**Regenerate:**"  # the first word of the line that update_section writes under a heading


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


def _load_results(name: str) -> dict[str, Any] | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _commit_text(m: dict[str, Any]) -> str:
    c = (m or {}).get("commit") or "unknown"
    if c == "unknown":
        return "commit not recorded"
    sha, _, rest = c.partition("+")
    return f"commit `{sha}`" + (f" with {rest}" if rest else "")


def _run_line(run: dict[str, Any], m: dict[str, Any]) -> str:
    text = f"`{run['command']}` — {_commit_text(m)}, {(m or {}).get('date', 'date not recorded')}"
    if not run.get("args_recorded", True):
        text += f" (arguments not recorded by the run; {run.get('note', 'the command is rebuilt from the script')})"
    elif run.get("note"):
        text += f" ({run['note']})"
    return text


def _is_run(x: Any) -> bool:
    return isinstance(x, dict) and "command" in x


def provenance(name: str) -> str:
    """The line (or list) under a section's heading: command, commit, date, results file(s)."""
    runs: list[tuple[str, dict, dict, str]] = []  # (label, run, machine, results file)
    for part in PART_FILES.get(name, []) + [name]:
        r = _load_results(part)
        if r is None:
            continue
        if _is_run(r.get("run")):
            runs.append(("" if part == name else part.removeprefix(name + "-"), r["run"], r.get("machine", {}), part))
        for k, v in r.items():  # a part measured by a later invocation (e.g. --finetune)
            if isinstance(v, dict) and _is_run(v.get("run")):
                runs.append((k, v["run"], v.get("machine", {}), part))
    seen: set[str] = set()  # a part gathered into the section's main file is listed once
    runs = [r for r in runs if not (r[0] in seen or seen.add(r[0]))]
    if not runs:
        return f"{PROVENANCE} `python benchmarks/bench_{name}.py` (not run yet)."
    files = sorted({f"`benchmarks/results/{f}.json`" for *_, f in runs})
    if len(runs) == 1:
        _, run, m, _ = runs[0]
        return f"{PROVENANCE} {_run_line(run, m)}. Results: {', '.join(files)}."
    lines = [f"{PROVENANCE} (results: {', '.join(files)})"]
    lines += [f"- {label or 'main run'}: {_run_line(run, m)}" for label, run, m, _ in runs]
    return "\n".join(lines)


def decorate(name: str, body: str) -> str:
    """A section body with its anchor above the heading and the provenance line under it (any earlier
    anchor or provenance lines the body carries are replaced)."""
    lines = body.strip("\n").splitlines()
    while lines and (lines[0].startswith("<a id=") or not lines[0].strip()):
        lines.pop(0)
    keep, skipping = [], False
    for line in lines:  # drop an earlier provenance block: its first line and the list under it
        if line.startswith(PROVENANCE):
            skipping = True
            continue
        if skipping and (line.startswith("- ") or not line.strip()):
            if not line.strip():
                skipping = False
            continue
        skipping = False
        keep.append(line)
    lines = keep
    anchor = f'<a id="{ANCHORS.get(name, name)}"></a>'
    if lines and lines[0].startswith("## "):
        return "\n".join([anchor, lines[0], "", provenance(name), "", *lines[1:]]).replace("\n\n\n", "\n\n")
    return "\n".join([anchor, provenance(name), "", *lines])


def publish(name: str, res: dict[str, Any], text: str, no_write: bool) -> None:
    """Save ``res`` as ``results/NAME.json`` and put ``text`` in BENCHMARKS.md's section, or with
    ``no_write`` only print the section (a trial run)."""
    if no_write:
        print(text)
        return
    save_result(name, res)
    update_section(name, text)


def update_section(name: str, body: str | None = None) -> None:
    """Replace (or add) the section ``name`` of BENCHMARKS.md, then rebuild the summary and every
    section's anchor and provenance line from ``results/``.  ``body=None`` keeps the section's text."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else ""
    secs = _sections(text)
    if body is not None:
        secs[name] = body.strip("\n")
    secs["summary"] = summary_table()
    parts = [HEADER.rstrip("\n")]
    for n in SECTIONS:
        if n in secs:
            a, b = _markers(n)
            parts.append(f"{a}\n{secs[n] if n == 'summary' else decorate(n, secs[n])}\n{b}")
    BENCHMARKS_MD.write_text("\n\n".join(parts) + "\n")


def rebuild() -> None:
    """Rewrite BENCHMARKS.md's summary, order, anchors and provenance lines from ``results/``; the
    sections' measured text is kept as it is (nothing is measured)."""
    update_section("summary", None)


def save_result(name: str, result: dict, record_run: bool = True) -> Path:
    """Write ``results/NAME.json``.  Unless the result carries one already (a section rewritten from
    its results file keeps the run that measured it), it records this invocation (``run``: script,
    argv, arguments, command; set by :func:`parse_args`) and the machine with commit and date."""
    if record_run and "run" not in result:
        result["run"] = this_run()
    if record_run and "machine" not in result:
        result["machine"] = machine()
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
    """One row per goal: each results file's ``summary`` entries that have a goal (``met`` True or
    False); entries recorded without one (``met`` None) are figures of their section, not goals."""
    rows = []
    for name in SECTIONS[1:]:
        r = _load_results(name)
        if r is None:
            rows.append(f"| {name} | (not run yet: `python benchmarks/bench_{name}.py`) | "
                        f"| [{name}](#{ANCHORS[name]}) |")
            continue
        for s in r.get("summary", []):
            if s.get("met") is None:
                continue
            met = "**yes**" if s["met"] else "**NO**"
            if s.get("met_note"):
                met += f" ({s['met_note']})"
            anchor = ANCHORS.get(s.get("anchor", name), s.get("anchor", name))
            rows.append(f"| {s['item']}: {s['goal']} | {s['measured']} | {met} | [{name}](#{anchor}) |")
    return "\n".join(["## Summary", "",
                      "| goal | measured | met? | section |", "|---|---|---|---|", *rows, "",
                      "One row per goal; figures measured without a goal are in their sections."])


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


def one_goal(item: str, goal: str, cases: list[tuple[str, str, bool]], anchor: str,
             context: str = "") -> dict[str, Any]:
    """One summary entry for a goal measured on several cases, ``cases`` = ``[(label, measured, met)]``
    (``context``: what the cases share, said once after them): met when every case met it
    (``met_note`` says how many did when only some did)."""
    n_met = sum(bool(m) for _, _, m in cases)
    measured = "; ".join([f"{label}: {text}" for label, text, _ in cases] + ([context] if context else []))
    entry = {"item": item, "goal": goal, "measured": measured,
             "met": n_met == len(cases), "anchor": anchor}
    if 0 < n_met < len(cases):
        entry["met_note"] = f"met on {n_met} of {len(cases)}"
    return entry


def write_study(name: str, figures: dict[str, Any], m: dict[str, Any], section: str) -> None:
    """Write the figures that transferkit's messages cite into ``transferkit/studies.json`` (study
    ``name``, shaped as :mod:`transferkit._studies` documents), with the script, commit and date of
    the measuring run ``m`` (a :func:`machine` dict)."""
    from transferkit._studies import write_study as _write

    script = Path(sys.argv[0]).resolve()
    try:
        source = str(script.relative_to(REPO))
    except ValueError:
        source = f"benchmarks/{script.name}"
    _write(name, figures, source=source, commit=m.get("commit", "unknown"), date=m.get("date", "unknown"),
           section=ANCHORS.get(section, section))
