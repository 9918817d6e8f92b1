"""LogME speed: transferkit's ``logme`` vs the authors' numpy implementation, same input.

Input: 20,000 x 1,280 float32 features with 100 classes (class means plus Gaussian noise, fixed
seed), the size of EfficientNet-Lite features of a mid-sized data set.  Both implementations
run in this process on the same array, alternately, best of 3 each; their values must agree to
1e-6 relative.  The goal is at least 2x faster.

The authors' code (thuml/LogME, commit 56551ca, ``LogME.py``) is not part of transferkit and
is never copied into this repository: it is read at run time from a git checkout or mirror of
https://github.com/thuml/LogME (``--logme-repo``, or ``$LOGME_REPO``) with
``git show 56551ca:LogME.py`` into a temporary directory, and imported from there.  It imports
``numba`` and decorates two helpers with ``@njit``; when numba is not installed a stand-in
whose ``njit`` returns the function unchanged is put on the path.  The fixed-point LogME that
``LogME.fit`` runs (``_fit_fixed_point``) calls only one of them, ``truncated_svd``, whose body is
three numpy calls (``svd(x.T @ x)``, ``x @ vh.T``, a division): BLAS/LAPACK do the work either
way, so the stand-in does not change what is measured in any material way.

Run: ``python benchmarks/bench_logme.py [--logme-repo PATH] [--repeats 3]``; it rewrites the
``logme`` section of BENCHMARKS.md (between its markers) and ``benchmarks/results/logme.json``.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

COMMIT = "56551ca"
DEFAULT_MIRRORS = [Path("/work/.mirror/thuml+LogME/repo"), C.REPO.parent / "LogME"]
SECTION = "logme"
N, D, K = 20_000, 1_280, 100

NUMBA_STANDIN = '''"""Stand-in for numba written by transferkit's bench_logme.py: njit runs plain Python."""
def njit(*args, **kwargs):
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda f: f
'''


def find_repo(arg: str | None) -> Path:
    for cand in ([Path(arg)] if arg else []) + ([Path(os.environ["LOGME_REPO"])] if "LOGME_REPO" in os.environ
                                                 else []) + DEFAULT_MIRRORS:
        if cand.exists():
            return cand
    sys.exit("the authors' LogME repository was not found: `git clone https://github.com/thuml/LogME` and "
             "pass --logme-repo PATH (or set LOGME_REPO)")


def load_authors(repo: Path, tmp: Path) -> tuple[type, bool]:
    """Import the authors' ``LogME`` class from ``git show COMMIT:LogME.py`` in ``tmp``."""
    src = subprocess.run(["git", "-C", str(repo), "show", f"{COMMIT}:LogME.py"], capture_output=True, text=True,
                         check=True).stdout
    (tmp / "thuml_logme.py").write_text(src)
    real_numba = importlib.util.find_spec("numba") is not None
    if not real_numba:
        (tmp / "numba").mkdir()
        (tmp / "numba" / "__init__.py").write_text(NUMBA_STANDIN)
    sys.path.insert(0, str(tmp))
    try:
        mod = importlib.import_module("thuml_logme")
    finally:
        sys.path.remove(str(tmp))
    return mod.LogME, real_numba


def make_features(seed: int = 0):
    """Features with class structure: a mean per class (spread 1) plus unit Gaussian noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, N)
    means = rng.standard_normal((K, D)).astype(np.float32) / np.sqrt(D / 64.0)
    f = rng.standard_normal((N, D), dtype=np.float32)
    f += means[y]
    return f, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--logme-repo", help="git checkout or mirror of github.com/thuml/LogME")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    a = C.parse_args(ap)
    C.setup_env()
    from transferkit.scores import logme

    m = C.machine()
    C.warn_if_busy(m)
    repo = find_repo(a.logme_repo)
    with tempfile.TemporaryDirectory(prefix="tk-bench-logme-") as tmp:
        AuthorsLogME, real_numba = load_authors(repo, Path(tmp))
    f, y = make_features()
    C.say(f"LogME on {N} x {D} float32 features, {K} classes; authors' code: {repo} @ {COMMIT} "
          f"({'numba' if real_numba else 'numba stand-in: plain Python'})")
    load = C.OtherLoad()
    ours_t, theirs_t = [], []
    ours_v = theirs_v = None
    for r in range(a.repeats):
        t = time.perf_counter()
        ours_v = logme(f, y)
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        theirs_v = float(AuthorsLogME(regression=False).fit(f, y))
        theirs_t.append(time.perf_counter() - t)
        C.say(f"  run {r + 1}: transferkit {ours_t[-1]:.2f} s ({ours_v:.10f}), authors {theirs_t[-1]:.2f} s "
              f"({theirs_v:.10f})")
    m["cpu_other_during_pct"] = load.pct()
    best_ours, best_theirs = min(ours_t), min(theirs_t)
    ratio = best_theirs / best_ours
    rel = abs(ours_v - theirs_v) / abs(theirs_v)
    agree = rel <= 1e-6
    C.say(f"best of {a.repeats}: transferkit {best_ours:.2f} s, authors {best_theirs:.2f} s -> {ratio:.1f}x faster "
          f"(goal >= 2x: {'met' if ratio >= 2 else 'NOT met'}); values {ours_v!r} vs {theirs_v!r}, "
          f"relative difference {rel:.1e} ({'agree' if agree else 'DISAGREE'} to 1e-6)")
    result = {
        "machine": m, "n": N, "d": D, "classes": K, "dtype": "float32", "repeats": a.repeats,
        "transferkit_s": ours_t, "authors_s": theirs_t, "best_transferkit_s": best_ours, "best_authors_s": best_theirs,
        "speedup": ratio, "transferkit_value": ours_v, "authors_value": theirs_v, "relative_difference": rel,
        "authors_commit": COMMIT, "authors_numba": real_numba,
        "summary": [{"item": f"LogME, {N:,} x {D:,} features, {K} classes", "goal": ">= 2x faster than the authors'",
                     "measured": f"{ratio:.1f}x ({best_ours:.2f} s vs {best_theirs:.2f} s)",
                     "met": ratio >= 2 and agree,
                     "anchor": "logme-speed"}],
    }
    if a.no_write:
        return
    C.save_result(SECTION, result)
    C.update_section(SECTION, section_body(result, m))
    C.say(f"wrote the '{SECTION}' section of {C.BENCHMARKS_MD.name} and {C.RESULTS / (SECTION + '.json')}")


def section_body(r: dict, m: dict) -> str:
    numba = ("with numba" if r["authors_numba"] else
             "numba is not installed here, so its `@njit` was replaced by a pass-through stand-in; the fixed-point "
             "path only calls the jitted `truncated_svd`, three numpy calls that BLAS/LAPACK execute either way")
    rows = [["transferkit `scores.logme`", f"{r['best_transferkit_s']:.2f}",
             ", ".join(f"{t:.2f}" for t in r["transferkit_s"]), f"{r['transferkit_value']:.12f}"],
            [f"authors' `LogME.fit` (thuml/LogME @ {r['authors_commit']})", f"{r['best_authors_s']:.2f}",
             ", ".join(f"{t:.2f}" for t in r["authors_s"]), f"{r['authors_value']:.12f}"]]
    return "\n".join([
        '<a id="logme-speed"></a>',
        "## LogME speed: transferkit vs the authors' implementation (`benchmarks/bench_logme.py`)", "",
        f"`python benchmarks/bench_logme.py`: LogME of {r['n']:,} x {r['d']:,} float32 features with {r['classes']} "
        "classes (class means plus Gaussian noise, seed 0), both implementations in one process on the same array, "
        f"alternately, best of {r['repeats']}.", "",
        C.md_table(["implementation", "best (s)", "runs (s)", "LogME"], rows), "",
        f"**{r['speedup']:.1f}x faster** (goal: at least 2x); the two values differ by {r['relative_difference']:.1e} "
        "relative (required: at most 1e-6).", "",
        "Where the time goes: the authors' code takes an SVD of F^T F, then forms U = F V / s (a second "
        "N x D x D product), then runs the fixed point class by class, each class reading all of U (N x D) again. "
        "transferkit builds F^T F and the class sums F^T Y in one pass over float64 row chunks, takes one "
        "symmetric eigendecomposition (LAPACK syevd), and runs the fixed point for all classes at once on "
        "D x C arrays.", "",
        f"The authors' code is read at run time from a git mirror of github.com/thuml/LogME ({numba}); it is not "
        "part of this repository.", "",
        C.machine_line(m),
    ])


if __name__ == "__main__":
    main()
