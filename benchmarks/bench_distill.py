"""Distillation: a student with fewer layers than the teacher, before and after issue 17's changes.

Teacher: ``transferkit fit`` of a minilm-l6 linear probe on a stratified subset of the
SpamAssassin e-mails (``--items``, subject + body, the first 2 windows of 128 tokens), its
default 80/20 split.  Students (``transferkit distill``, ``--student``, default distill's own
choice, ``minilm-l6@2``: the first 2 of 6 layers, pre-trained), each on the teacher's training
split and scored on its test split:

- ``before``: the old defaults, 2 epochs of Hinton's loss (alpha 0.5, T 2) on the labelled
  training items only (``min_steps=0`` where the fine-tuning family has that floor);
- ``default``: today's defaults (a step budget; text views and feature matching off);
- ``--ablate``: today's defaults with feature matching, and with 2 text views;
- ``--unlabelled N``: today's defaults plus N other e-mails of the corpus as unlabelled items.

Speed is items per second of prediction without the feature cache, student and teacher measured
in turns in the same process on the same items (the first 200 test e-mails), best of 3 each.

Run: ``python benchmarks/bench_distill.py`` (about 10 minutes on 2 idle cores; ``--ablate``
adds two students, ``--student minilm-l6@3`` measures half the layers).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

C.setup_env()
NAME = "distill"


def _variants(a) -> list[tuple[str, dict]]:
    from transferkit.strategies.finetune import FineTuneParams

    old = {"student": a.student or "minilm-l6@3", "epochs": 2, "text_views": 0, "feature_weight": 0.0}
    if "min_steps" in FineTuneParams.__dataclass_fields__:
        old["min_steps"] = 0  # exactly 2 epochs, as before the step floor
    out = [("before (half the layers, 2 epochs, labelled items only)", old), ("default", {})]
    if a.ablate:
        out += [("default + feature matching (weight 1)", {"feature_weight": 1.0}),
                ("default + 2 text views", {"text_views": 2})]
    if a.unlabelled:
        out.append((f"default + {a.unlabelled} unlabelled e-mails", {"unlabelled": "UNLABELLED"}))
    if a.steps:
        for _, kw in out[1:]:
            kw["steps"] = a.steps
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--student", default=None, help="NAME@K (default: distill's default student)")
    ap.add_argument("--steps", type=int, default=None, help="students after 'before': this many steps (default: "
                                                            "distill's own)")
    ap.add_argument("--unlabelled", type=int, default=0, help="also a student with this many unlabelled e-mails")
    ap.add_argument("--ablate", action="store_true", help="also the default with each optional part")
    a = C.parse_args(ap)
    import numpy as np

    import transferkit as tk
    from transferkit import distill as D

    rows = C.load_spam()
    idx = C.stratified_indices([r["label"] for r in rows], a.items, seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="tk-distill-"))
    data = C.write_jsonl_gz([rows[i] for i in idx], tmp / "spam.jsonl.gz")
    if a.unlabelled:  # other e-mails of the corpus, their labels not written
        rest = sorted(set(range(len(rows))) - set(idx))
        pool = np.random.default_rng(1).choice(rest, a.unlabelled, replace=False)
        unl = C.write_jsonl_gz([rows[i] for i in pool], tmp / "unlabelled.jsonl.gz", keys=("id", "subject", "body"))
    m = C.machine()
    C.warn_if_busy(m)
    t0 = time.perf_counter()
    tk.fit(data=str(data), text_columns=["subject", "body"], model="minilm-l6",
           backbone_options={"max_length": 128, "max_chunks": 2}, out=str(tmp / "teacher"), control=False, log=None)
    teacher_s = time.perf_counter() - t0
    results = []
    for k, (label, kw) in enumerate(_variants(a)):
        kw = {key: str(unl) if v == "UNLABELLED" else v for key, v in kw.items()}
        C.say(f"== student {k}: {label} {kw}")
        student = kw.pop("student", a.student)
        r = D.distill(tmp / "teacher", tmp / f"student{k}", student=student, log=C.say, **kw)
        results.append({"label": label, "options": kw, **r})
    t = results[0]["teacher"]
    out = {"machine": m, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "items": a.items,
           "teacher_fit_s": teacher_s, "teacher": t, "students": results,
           "defaults": {"steps": D.STEPS, "temperature": D.TEMPERATURE, "alpha": D.ALPHA, "lr": D.LR,
                        "text_views": D.TEXT_VIEWS, "feature_weight": D.FEATURE_WEIGHT}}
    table = []
    for r in results:
        s, st = r["student"], r["settings"]
        items = r["distillation_items"]
        table.append([f"{r['label']}: {s['name']}", f"{st['steps_run']} steps",
                      f"{items['labelled']} + {items['views']} views + {items['unlabelled']} unlabelled",
                      C.fmt_ci(s["accuracy"], s["accuracy_ci"]),
                      f"{100 * (s['accuracy'] - r['teacher']['accuracy']):+.1f}", f"{100 * r['agreement']:.1f}%",
                      f"{r['speedup']:.2f}x", f"{s['train_s']:.0f} s"])
    d = out["defaults"]
    body = "\n".join([
        "## Distillation (`benchmarks/bench_distill.py`)", "",
        f"{out['date']}, {C.machine_line(m)} Speed ratios are measured side by side in one process, student and "
        "teacher in turns, best of 3 each.", "",
        f"Teacher: minilm-l6 linear probe on {a.items} SpamAssassin e-mails (80/20 split; first 2 windows of 128 "
        f"tokens): test accuracy {C.fmt_ci(t['accuracy'], t['accuracy_ci'])}, {t['parameters']:,} parameters, "
        f"{teacher_s:.0f} s to fit. Students: as the rows say, each trained on the teacher's {results[0]['n_train']} "
        f"training e-mails (plus what the row says) and scored on its {results[0]['n_test']} test e-mails. "
        f"Defaults: {d['steps']} steps, alpha {d['alpha']}, temperature {d['temperature']}, lr {d['lr']}, "
        f"{d['text_views']} text views per e-mail, feature weight {d['feature_weight']}.", "",
        C.md_table(["student", "trained", "items (teacher-labelled)", "test accuracy", "vs teacher (pts)",
                    "agreement", "speed vs teacher", "training"], table), "",
        "Student parameters: " + "; ".join(f"{r['student']['name']} {r['student']['parameters']:,} "
                                           f"({100 * r['size_ratio']:.0f}% of the teacher's)"
                                           for r in results[:2]) + "."])
    best = results[1]
    gap = 100 * (best["student"]["accuracy"] - best["teacher"]["accuracy"])
    out["summary"] = [{"item": "distilled student vs teacher (spam)", "goal": "within 2 points at >= 2x speed",
                       "measured": f"{best['speedup']:.2f}x the speed, {gap:+.1f} points "
                                   f"({best['student']['accuracy']:.3f} vs {best['teacher']['accuracy']:.3f})",
                       "met": bool(gap >= -2 and best["speedup"] >= 2), "anchor": NAME}]
    C.save_result(NAME, out)
    C.update_section(NAME, body)
    print(json.dumps([{k: r[k] for k in ("label", "speedup", "agreement")} | {"acc": r["student"]["accuracy"]}
                      for r in results], indent=1))


if __name__ == "__main__":
    main()
