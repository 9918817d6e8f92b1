"""Distillation: a student with half the teacher's layers, against the teacher.

Teacher: ``transferkit fit`` of a minilm-l6 linear probe on a stratified subset of the
SpamAssassin e-mails (``--items``, subject + body, the first 2 windows of 128 tokens), its
default 80/20 split.  Student: ``transferkit distill`` to ``minilm-l6@3`` (the first 3 of 6
layers, pre-trained), 3 epochs of fine-tuning on the teacher's training split with the
default loss (alpha 0.5, temperature 2).  Both are scored on the teacher's test split; speed is
items per second of prediction without the feature cache, measured in the same process, on
the same items (the first 200 test e-mails).

Run: ``python benchmarks/bench_distill.py`` (about 10 minutes on 2 idle cores).
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=3)
    a = C.parse_args(ap)
    import transferkit as tk
    from transferkit.distill import distill

    rows = C.load_spam()
    idx = C.stratified_indices([r["label"] for r in rows], a.items, seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="tk-distill-"))
    data = C.write_jsonl_gz([rows[i] for i in idx], tmp / "spam.jsonl.gz")
    m = C.machine()
    C.warn_if_busy(m)
    t0 = time.perf_counter()
    tk.fit(data=str(data), text_columns=["subject", "body"], model="minilm-l6",
           backbone_options={"max_length": 128, "max_chunks": 2}, out=str(tmp / "teacher"), control=False, log=None)
    teacher_s = time.perf_counter() - t0
    r = distill(tmp / "teacher", tmp / "student", student="minilm-l6@3", epochs=a.epochs, log=C.say)
    r.update(machine=m, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), items=a.items, teacher_fit_s=teacher_s)
    t, s = r["teacher"], r["student"]
    body = "\n".join([
        "## Distillation (`benchmarks/bench_distill.py`)", "",
        f"{r['date']}, {C.machine_line(m)}. The CPU was shared with other work during this run: the "
        "speed ratio is measured side by side in one process, not absolute.", "",
        f"Teacher: minilm-l6 linear probe on {a.items} SpamAssassin e-mails (80/20 split; first 2 windows of 128 "
        f"tokens). Student: minilm-l6@3 (first 3 of 6 layers), {a.epochs} epochs of distillation (alpha "
        f"{r['settings']['alpha']}, temperature {r['settings']['temperature']}) on the teacher's {r['n_train']} "
        f"training e-mails; both scored on its {r['n_test']} test e-mails.", "",
        C.md_table(["model", "parameters", "weights file", "test accuracy", "items/s (no cache)", "training"], [
            ["teacher (minilm-l6 + probe)", f"{t['parameters']:,}", f"{t['weights_bytes'] / 1e6:.2f} MB",
             C.fmt_ci(t["accuracy"], t["accuracy_ci"]), f"{t['items_per_s']:.1f}", f"{teacher_s:.0f} s (fit)"],
            ["student (minilm-l6@3, distilled)", f"{s['parameters']:,}", f"{s['weights_bytes'] / 1e6:.2f} MB",
             C.fmt_ci(s["accuracy"], s["accuracy_ci"]), f"{s['items_per_s']:.1f}", f"{s['train_s']:.0f} s"]]),
        "",
        f"Student / teacher: **{r['speedup']:.2f}x** the speed, {100 * r['size_ratio']:.0f}% of the parameters, "
        f"accuracy {100 * (s['accuracy'] - t['accuracy']):+.1f} points; they agree on {100 * r['agreement']:.1f}% "
        "of test e-mails. (The probe teacher's weights file holds only its head: the backbone is the published "
        "one; the student stores its own 3 layers.)"])
    r["summary"] = [{"item": "distilled student vs teacher (spam)", "goal": "report size, speed, accuracy",
                     "measured": f"{r['speedup']:.2f}x faster, {100 * r['size_ratio']:.0f}% params, accuracy "
                                 f"{s['accuracy']:.3f} vs {t['accuracy']:.3f}", "met": None, "anchor": NAME}]
    C.save_result(NAME, r)
    C.update_section(NAME, body)
    print(json.dumps({k: r[k] for k in ("speedup", "size_ratio", "agreement")}, indent=1))


if __name__ == "__main__":
    main()
