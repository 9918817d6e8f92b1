"""A fine-tune killed with SIGKILL at random points, and resumed, ends bitwise equal to one run
never interrupted (CPU, same seed); a kill between a checkpoint's data files and its manifest
leaves an incomplete checkpoint that resuming ignores."""
from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_resume_worker.py")
pytestmark = [pytest.mark.slow,  # ~30 s: five processes, each importing torch
              pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")]


class Worker:
    """One worker process whose output lines arrive on a queue (so waits can time out)."""

    def __init__(self, out: Path, ckpt_dir: Path | None, manifest_delay: float = 0.0):
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TK_TEST_MANIFEST_DELAY=str(manifest_delay))
        args = [sys.executable, str(WORKER), str(out)] + ([str(ckpt_dir)] if ckpt_dir else [])
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def next_line(self, timeout: float = 60.0) -> str | None:
        line = self._q.get(timeout=timeout)
        if line is not None:
            self.lines.append(line)
        return line

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def finish(self) -> int:
        while self.next_line() is not None:
            pass
        return self.proc.wait(timeout=120)


def run_until(worker: Worker, prefix: str, min_step: int) -> bool:
    """Read lines until ``"<prefix> N"`` with ``N >= min_step``; False if the run ended first."""
    while (line := worker.next_line()) is not None:
        if line.startswith(prefix) and int(line.split()[1]) >= min_step:
            return True
    return False


def load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def test_sigkill_anywhere_then_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    seed = int(os.environ.get("TK_TEST_KILL_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    why = f"(kill points drawn with TK_TEST_KILL_SEED={seed})"

    ref = Worker(tmp_path / "reference.safetensors", None)
    assert ref.finish() == 0, "\n".join(ref.lines)

    ckpt_dir, out = tmp_path / "ck", tmp_path / "resumed.safetensors"
    # 1. a random moment after some checkpoint was saved
    w = Worker(out, ckpt_dir)
    assert run_until(w, "saved", rng.randint(1, 3)), "\n".join(w.lines)
    time.sleep(rng.uniform(0.0, 0.3))
    w.kill()
    # 2. inside a checkpoint write: data files renamed into place, manifest not yet
    w = Worker(out, ckpt_dir, manifest_delay=5.0)
    assert run_until(w, "writing", 0), "\n".join(w.lines)
    w.kill()
    half = ckpt_dir / f"ckpt-{int(w.lines[-1].split()[1]):08d}"
    assert (half / "model.safetensors").is_file() and (half / "state.pt").is_file(), why
    assert not (half / "manifest.json").exists(), why
    # 3. a random moment from the process start (it may land in start-up, a step or a write)
    w = Worker(out, ckpt_dir)
    timer = threading.Timer(rng.uniform(1.0, 5.0), lambda: w.proc.poll() is None and w.proc.send_signal(signal.SIGKILL))
    timer.start()
    w.finish()
    timer.cancel()
    # 4. resume to the end
    w = Worker(out, ckpt_dir)
    assert w.finish() == 0, "\n".join(w.lines)
    resumed_from = [line for line in w.lines if line.startswith("resumed_from")]
    assert resumed_from and resumed_from[-1] != "resumed_from None", (why, w.lines)

    a, b = load(tmp_path / "reference.safetensors"), load(out)
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]} {why}"
