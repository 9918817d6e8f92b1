"""The plain-text view of a run's metrics: what the command line prints."""
from __future__ import annotations

from pathlib import Path


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"  # undefined: Spearman of a constant, AP of an absent label


def _ci(m: dict, key: str) -> str:
    lo, hi = m.get(f"{key}_ci") or (None, None)
    return f"{_num(m[key])} [{_num(lo)}, {_num(hi)}]"


def headline(m: dict) -> str:
    """The test metrics of any task in one line (the keys tell the task)."""
    if "rmse" in m:
        return f"RMSE {_ci(m, 'rmse')}, MAE {_ci(m, 'mae')}, R² {_num(m['r2'])}, Spearman {_num(m['spearman'])}"
    if "micro_f1" in m:
        return (f"micro-F1 {_ci(m, 'micro_f1')}, macro-F1 {_num(m['macro_f1'])}, subset accuracy "
                f"{_num(m['subset_accuracy'])}, Hamming loss {_num(m['hamming_loss'])}, mAP {_num(m['map'])}")
    return f"accuracy {_ci(m, 'accuracy')}, macro-F1 {m['macro_f1']:.3f}, ECE {m['ece']:.3f}"


def summary_lines(metrics: dict, run_dir: Path | None = None) -> list[str]:
    """What ``transferkit fit`` prints after a fit: the transfer model and every control on the
    task's metrics, the verdict, the domain evidence, the notes and where the run is."""
    out: list[str] = []
    t = metrics["test"]
    if metrics.get("task", "classification") != "classification":
        out.append(f"\ntransfer ({metrics['task']}, {metrics['run']['strategy']} on {metrics['run']['backbone']}): "
              f"{headline(t)}")
        for name, c in metrics.get("controls", {}).items():
            out.append(f"control {name}: {headline(c)}")
    else:
        out.append(f"\ntransfer ({metrics['run']['strategy']} on {metrics['run']['backbone']}): accuracy "
              f"{t['accuracy']:.3f} [{t['accuracy_ci'][0]:.3f}, {t['accuracy_ci'][1]:.3f}], macro-F1 "
              f"{t['macro_f1']:.3f}")
        for name, c in metrics.get("controls", {}).items():
            out.append(f"control {name}: accuracy {c['accuracy']:.3f} [{c['accuracy_ci'][0]:.3f}, "
                  f"{c['accuracy_ci'][1]:.3f}]")
    if "verdict" in metrics:
        out.append(f"verdict: {metrics['verdict'].upper()} — {metrics['verdict_explanation']}")
    out += delivered_lines(metrics)
    domain = metrics.get("domain") or {}
    if "source_only" in domain:
        so = domain["source_only"]
        if "accuracy" in so:
            out.append(f"source-only (no adaptation): accuracy {so['accuracy']:.3f} "
                  f"[{so['accuracy_ci'][0]:.3f}, {so['accuracy_ci'][1]:.3f}]")
        else:  # regression, multi-label: the task's own metrics
            out.append(f"source-only (no adaptation): {headline(so)}")
        out.append(f"adaptation: {domain['adaptation_verdict'].upper()} — {domain['adaptation_explanation']}")
    aa = domain.get("auto_adapt") or {}
    for r in aa.get("candidates", []):
        acc = "" if r.get("test_accuracy") is None else f", test accuracy {r['test_accuracy']:.3f}"
        dev = "—" if r.get("dev") is None else f"{r['dev']:.4f}"
        im = "—" if r.get("im") is None else f"{r['im']:.3f}"
        out.append(f"auto-adapt candidate {r['label']}{' (chosen)' if r.get('chosen') else ''}: SND {r['snd']:.4f}, "
                   f"target entropy {r['entropy']:.3f}, IM {im}, DEV {dev}{acc}")
    if aa.get("explanation"):
        out.append(f"auto-adapt: {aa['explanation']}")
    for r in domain.get("shift", []):
        out.append(f"domain distance, {r['features']}: MMD² {r['mmd2']:.4f} (p = {r['mmd_p_value']:.3g}), "
              f"proxy A-distance {r['a_distance']:.2f} — {r['reading']}")
    for n in metrics.get("notes", []):
        out.append(f"note: {n}")
    if run_dir:
        out.append(f"run written to {run_dir}/ (report: {run_dir / 'report.html'})")
    return out


def delivered_lines(metrics: dict) -> list[str]:
    """The delivered model, where selection chose another one than the transfer model: its test
    metrics, its comparison with the best control, and how it was chosen (the candidates' scores
    on the training data)."""
    d = metrics.get("delivered") or {}
    candidates = d.get("candidates") or []
    if not candidates or any(c.get("chosen") and c.get("transfer") for c in candidates) or "test" not in d:
        return [f"delivered: the transfer model ({d['chosen_by']})"] if d.get("chosen_by") else []
    out = [f"delivered: {d['name']}: {headline(d['test'])}"]
    v = metrics.get("delivered_vs_controls")
    if v:
        lo, hi = v["gain_ci"]
        out.append(f"delivered vs best control ({v['control']}): {v['verdict'].upper()}, gain {v['gain']:+.3f} "
                   f"[{lo:+.3f}, {hi:+.3f}]")
    scores = ", ".join(f"{c['name']}{' (transfer)' if c.get('transfer') else ''} "
                       f"{'—' if c['score'] is None else format(c['score'], '.4f')}" for c in candidates)
    out.append(f"chosen by {d['chosen_by']}: {scores}")
    return out
