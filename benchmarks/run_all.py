"""Run every benchmark in sequence (one process at a time) and rewrite BENCHMARKS.md.

Run: ``python benchmarks/run_all.py [--only extraction,cache] [--wait-idle SECONDS]``;
``--rebuild`` measures nothing: it rewrites BENCHMARKS.md's summary, section order, anchors and
"Regenerate" lines from ``benchmarks/results/`` (the sections' measured text is kept).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402

ORDER = C.SECTIONS[1:]  # the order of BENCHMARKS.md


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(ORDER)}")
    ap.add_argument("--wait-idle", type=float, default=0.0,
                    help="before each benchmark, wait up to this many seconds for other work to stop")
    ap.add_argument("--rebuild", action="store_true",
                    help="measure nothing: rewrite BENCHMARKS.md's summary, order and provenance lines from results/")
    a = ap.parse_args()
    if a.rebuild:
        C.rebuild()
        print(f"rebuilt {C.BENCHMARKS_MD} from {C.RESULTS}")
        return 0
    names = [n.strip() for n in a.only.split(",")] if a.only else ORDER
    unknown = sorted(set(names) - set(ORDER))
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}")
    failed = []
    for name in names:
        if a.wait_idle:
            C.wait_for_idle(a.wait_idle)
        print(f"\n######## bench_{name}.py", flush=True)
        t = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / f"bench_{name}.py")], cwd=C.REPO)
        print(f"######## bench_{name}.py: exit {rc} after {(time.perf_counter() - t) / 60:.1f} min", flush=True)
        if rc:
            failed.append(name)
    print(f"\nBENCHMARKS.md: {C.BENCHMARKS_MD}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
