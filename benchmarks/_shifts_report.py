"""The BENCHMARKS.md section and summary entry of ``bench_shifts.py``, from ``results/shifts.json``.

Rows hold each prediction (a string of class indices), so the gains over source-only get paired
bootstrap intervals here, on the same scored items, without measuring anything again.
"""
from __future__ import annotations

import numpy as np

import _common as C

NAME = "shifts"
GAP_MIN = 0.05  # the goal applies where the reference is at least this far above source-only
ADAPTING = ("adabn", "adabn-backbone", "dann", "mmd", "coral", "self-training", "input-invariance", "tent",
            "shot", "mcc", "cdan", "auto-adapt")


def _labels(row: dict) -> np.ndarray:
    return np.array([row["classes"][ord(c) - 48] for c in row["pred"]])


def _y(shift: dict) -> np.ndarray:
    return np.array([shift["classes"][ord(c) - 48] for c in shift["y"]])


def _ok(shift: dict, method: str, seed: str = "0") -> dict | None:
    r = shift["rows"].get(method, {}).get(seed)
    return r if r and r.get("status") == "ok" else None


def gain(shift: dict, method: str, seed: str = "0") -> dict | None:
    """``method`` minus source-only on the scored items: ``{"gain", "gain_ci"}`` (paired bootstrap)."""
    from transferkit.evaluation import paired_gain

    r, so = _ok(shift, method, seed), _ok(shift, "source-only", seed)
    if r is None or so is None or "y" not in shift:
        return None
    classes = shift["classes"]
    y = _y(shift)

    def idx(v):
        return np.array([classes.index(x) for x in v])
    return paired_gain(idx(y), idx(_labels(r)), idx(_labels(so)), n_boot=2000, seed=0)


def _note(method: str, r: dict) -> str:
    """What the strategy chose, from its own account (``fit_info``)."""
    info = r.get("info") or {}
    cands = {c.get("label"): c for c in info.get("candidates") or [] if isinstance(c, dict)}
    if "choice" in info and cands:  # auto-adapt: the choice, by what, and how it did on held-out source items
        crit, ch, so = info.get("criterion"), cands.get(info["choice"], {}), cands.get("source-only", {})
        text = f"chose {info['choice']} by {crit}"
        if isinstance(ch.get(crit), (int, float)):
            text += f" ({ch[crit]:.3f}; source-only {so.get(crit, float('nan')):.3f})"
        if isinstance(ch.get("source_accuracy"), (int, float)) and isinstance(so.get("source_accuracy"), (int, float)):
            text += (f"; held-out source accuracy {ch['source_accuracy']:.3f} (source-only "
                     f"{so['source_accuracy']:.3f}); {len(cands)} candidates")
        return text
    for key in ("chosen", "choice", "picked"):
        if key in info and not isinstance(info[key], (dict, list)):
            return f"chose {info[key]}"
    inv = info.get("input_invariance")
    if isinstance(inv, dict):
        return "transforms: " + (", ".join(inv.get("applied") or []) or "none (the plain probe)")
    knob = (info.get("selection") or {}).get("knob") if isinstance(info.get("selection"), dict) else None
    if knob and isinstance(info.get(knob), (int, float)):
        return f"{knob} = {info[knob]:g}"
    return ""


def _acc_cell(shift: dict, method: str) -> str:
    seeds = shift["rows"].get(method, {})
    r0 = _ok(shift, method)
    if r0 is None:
        r = seeds.get("0") or next(iter(seeds.values()), {})
        msg = (r.get("message") or "").split("\n")[0]
        return f"{r.get('status', 'not run')}: {msg[:160]}"
    cell = C.fmt_ci(r0["accuracy"], r0["accuracy_ci"])
    accs = [r["accuracy"] for r in seeds.values() if r.get("status") == "ok"]
    if len(accs) > 1:
        cell += f"; {np.mean(accs):.3f} ± {np.std(accs, ddof=1):.3f} over {len(accs)} seeds"
    return cell


def goal(shift: dict) -> dict | None:
    """Source-only, reference, auto-adapt and the share of the gap recovered (seed 0)."""
    so, ref, auto = _ok(shift, "source-only"), _ok(shift, "reference"), _ok(shift, "auto-adapt")
    if so is None or ref is None:
        return None
    gap = ref["accuracy"] - so["accuracy"]
    out = {"source_only": so["accuracy"], "reference": ref["accuracy"], "gap": gap, "applies": gap >= GAP_MIN}
    if auto is not None:
        out["auto"] = auto["accuracy"]
        out["auto_note"] = _note("auto-adapt", auto)
        out["recovered"] = (auto["accuracy"] - so["accuracy"]) / gap if gap > 0 else None
        out["met"] = bool(out["recovered"] is not None and out["recovered"] >= 0.5) if out["applies"] else None
    return out


def summary(res: dict) -> list[dict]:
    cases = []
    for name, s in res.get("shifts", {}).items():
        if s.get("modality") != "image":
            continue
        g = goal(s)
        if g is None or not g["applies"]:
            continue
        if "auto" not in g:
            cases.append((name, f"gap {100 * g['gap']:.1f} pts; auto-adapt not measured", False))
        else:
            cases.append((name, f"gap {100 * g['gap']:.1f} pts, auto {100 * (g['auto'] - g['source_only']):+.1f} "
                                f"({100 * g['recovered']:.0f}%)", g["met"]))
    if not cases:
        return []
    return [C.one_goal("domain adaptation on real image shifts: auto-adapt's gain over source-only",
                       f"≥ half the gap to a probe on 10 labelled target items per class, where that gap ≥ "
                       f"{100 * GAP_MIN:.0f} pts", cases, NAME)]


def _measured(r: dict, latest: str) -> str:
    """When the row was measured (UTC), and at which commit where that is not the latest run's."""
    m = r.get("measured") or {}
    if not m:
        return "—"
    return m["date"][11:16] + ("" if m.get("commit") == latest else f" at `{m.get('commit')}`")


def _shift_block(name: str, s: dict, latest: str) -> list[str]:
    p = s["protocol"]
    sh = s.get("shift", {})
    head = (f"**{name}** — {s.get('how', '')}; {p['sizes']['source']} source items, {p['sizes']['target']} target "
            f"items (unlabelled, scored), reference drawn from {p['sizes']['pool']} other target items; "
            f"{p['model']} {p['options']}. Pre-trained features of every item: {s.get('extract_s', 0):.0f} s ("
            f"{'read back from the cache an earlier run filled' if s.get('extract_s', 0) < 5 else 'extracted once'}"
            f", cached for every row). Shift of those features: MMD² {sh.get('mmd2', float('nan')):.4f} "
            f"(p = {sh.get('mmd_p_value', float('nan')):.3g}), proxy A-distance "
            f"{sh.get('a_distance', float('nan')):.2f}.")
    rows = []
    order = ["source-only", *ADAPTING, "reference"]
    for m in order + sorted(set(s["rows"]) - set(order)):
        if m not in s["rows"]:
            continue
        r = s["rows"][m].get("0") or next(iter(s["rows"][m].values()))
        g = gain(s, m) if m != "source-only" else None
        gcell = C.fmt_gain(g["gain"], g["gain_ci"]) if g else "—"
        t = f"{r['seconds']:.0f}" if "seconds" in r else "—"
        load = r.get("measured", {}).get("cpu_other_pct")
        rows.append([m, _acc_cell(s, m), gcell, t, "—" if load is None else f"{load:.0f}%",
                     _note(m, r) if r.get("status") == "ok" else "", _measured(r, latest)])
    out = [head, "", C.md_table(["method", "target accuracy [95% CI]", "gain over source-only [paired 95% CI]",
                                 "fit + predict, s", "other load", "chosen without target labels", "measured"],
                                rows), ""]
    g = goal(s)
    if g and s.get("modality") == "image":
        line = (f"Goal: reference − source-only = {100 * g['gap']:+.1f} pts"
                + ("" if g["applies"] else f" (below {100 * GAP_MIN:.0f} pts: the goal does not apply)"))
        if "auto" in g:
            rec = "—" if g["recovered"] is None else f"{100 * g['recovered']:.0f}% of the gap"
            line += (f"; auto-adapt {g['auto']:.3f} ({g['auto_note'] or 'choice not reported'}): "
                     f"{100 * (g['auto'] - g['source_only']):+.1f} pts = {rec}"
                     + ("" if g.get("met") is None else (" — **met**" if g["met"] else " — **not met**")))
        else:
            line += "; auto-adapt not measured on this shift"
        out += [line + ".", ""]
    elif s.get("modality") == "text":
        helped = [m for m in s["rows"] if m in ADAPTING and (gain(s, m) or {}).get("gain_ci", [0])[0] > 0]
        hurt = [m for m in s["rows"] if m in ADAPTING and (gain(s, m) or {}).get("gain_ci", [0, 0])[1] < 0]
        out += [f"What helps on this text shift: {', '.join(helped) or 'no adaptation method'} (the gain's "
                f"interval above 0); {', '.join(hurt) or 'none'} hurt (interval below 0); the rest made no clear "
                "difference or did not apply.", ""]
    return out


def section(res: dict) -> str:
    shifts = res.get("shifts", {})
    dates = sorted({r["measured"]["date"] for s in shifts.values() for seeds in s["rows"].values()
                    for r in seeds.values() if r.get("measured")})
    commits = sorted({r["measured"]["commit"] for s in shifts.values() for seeds in s["rows"].values()
                      for r in seeds.values() if r.get("measured")})
    parts = ["## Domain adaptation on real shifts: every strategy, the automatic choice, a target-supervised "
             "reference (`benchmarks/bench_shifts.py`)", "", C.machine_line(res["machine"]), "",
             "Transductive protocol: the target items are given to each strategy without labels (as "
             "`--target-unlabelled`) and are the items scored. Each row is the library run as `transferkit fit` runs "
             "a strategy (`new_model` + `fit` + `predict_proba`), the strategy's defaults, seed 0; `reference` is the "
             "linear probe fitted on 10 labelled target items per class drawn from other target items (never "
             "scored). Accuracy with a 95% bootstrap interval over the scored items; the gain over source-only with "
             "a paired bootstrap interval on the same items. Times: fit + prediction with the pre-trained features "
             "already cached (extraction is timed once per shift), on 2 cores shared with other work (the share of "
             "the machine other processes used during each row is given), so they compare rows only roughly. "
             "`measured`: the row's time (UTC), and its commit where that is not the one named above. "
             f"Rows measured at {', '.join(f'`{c}`' for c in commits) or '—'}, "
             f"{dates[0] if dates else '—'} to {dates[-1] if dates else '—'} (each row's commit and date are in the "
             "results file; the command above is the last invocation, which measured some of the rows: "
             "`python benchmarks/bench_shifts.py --fresh` measures every row again in one run). A strategy not yet "
             "registered at the measuring commit shows `not registered`; one that refuses a shift, its reason.", ""]
    overview = []
    for name, s in shifts.items():
        g = goal(s) or {}
        present = [m for m in ADAPTING if _ok(s, m)]
        best = max(present, key=lambda m: _ok(s, m)["accuracy"], default=None)
        overview.append([name, f"{g['source_only']:.3f}" if "source_only" in g else "—",
                         f"{best} {_ok(s, best)['accuracy']:.3f}" if best else "—",
                         f"{g['auto']:.3f}" if "auto" in g else "—",
                         f"{g['reference']:.3f}" if "reference" in g else "—",
                         "—" if g.get("recovered") is None else f"{100 * g['recovered']:.0f}%"])
    parts += ["**Overview** (target accuracy, seed 0)", "",
              C.md_table(["shift", "source-only", "best adapting method", "auto-adapt", "reference (10/class)",
                          "gap recovered by auto-adapt"], overview), ""]
    for name, s in shifts.items():
        parts += _shift_block(name, s, res["machine"]["commit"])
    return "\n".join(parts)
