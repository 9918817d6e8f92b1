"""Fine-tuning cost: transferkit's ``finetune`` vs a hand-written PyTorch loop vs transformers' ``Trainer``;
and LoRA's trainable share and artifact size.

1. Step time and peak memory.  The three sides train the same thing:

   * model: minilm-l6 (the zoo's offline BertModel, the same weight file for every side), mean
     pooling over the attention mask, dropout 0.1 on the pooled features, a new ``Linear(384, 2)``
     head initialised from ``torch.manual_seed(0)`` (transferkit seeds its head the same way), fp32
     on CPU, the whole encoder trained except the pooler (mean pooling never uses it: transferkit
     freezes it, the other two sides freeze it by hand);
   * data: real SpamAssassin e-mails (subject + body) that have at least 126 content tokens, so
     that every sequence is exactly 128 tokens ([CLS] + 126 + [SEP], no padding) and every batch
     is 16 x 128 on every side; batches in transferkit's seeded epoch order (the hand loop and
     ``Trainer`` get the items pre-ordered, ``Trainer`` with ``train_sampling_strategy="sequential"``);
     before timing, the script checks that transferkit's own ``prepare`` gives exactly the
     token ids the other two sides get, batch by batch;
   * optimisation: batch 16, AdamW (``fused=True``, transformers' default ``adamw_torch_fused``),
     lr 5e-5 everywhere, constant schedule, weight decay 0.01 on weight matrices and none on
     biases and LayerNorm scales, gradient clipping at norm 1.0 (``Trainer``'s default).

   What a step is: the wall time from the end of one optimizer step to the end of the next, so
   everything done per step is counted, on every side: transferkit's whole loop body (train
   mode, tokenising the batch's texts with ``backbone.prepare``, forward, loss, backward,
   clipping, optimizer and schedule step, its non-finite guard, callbacks); the hand loop's
   slicing of pre-tokenised tensors, forward, backward, clipping and step; ``Trainer``'s data
   loader and collator, its training step, clipping, optimizer and scheduler step and its
   (disabled) log/save/evaluate checks.  Not counted: anything before the first timed step
   (imports, loading, tokenisation of the hand loop's and ``Trainer``'s data set, optimizer
   creation) and after the last.  Timestamps: a transferkit ``Callback.on_step_end``, a
   ``TrainerCallback.on_step_end``, and ``time.perf_counter()`` after ``optimizer.step()`` in
   the hand loop.  transferkit runs with ``val_fraction=0`` and no checkpoint directory and
   ``Trainer`` with logging, saving and evaluation off, so neither validates nor writes.
   The first ``--warmup`` steps are not timed; each run then times ``--steps`` steps.

   Each (side, repetition) runs in a fresh process, the order of the sides rotating every
   repetition; peak memory is that process's peak RSS (``VmHWM``: libraries, model, data and
   training together), also reported above the RSS just before training.

2. LoRA: ``tk.fit(..., strategy="lora", out=DIR)`` and ``strategy="finetune"`` on a small spam
   subset with a tiny budget (``max_steps``: the accuracy is measured in ``bench_strategies``):
   the trainable parameters as a share of the backbone (goal <= 1%), and the artifact (the
   weights file ``strategy.safetensors``, and the run directory without its resume checkpoints).

Run: ``python benchmarks/bench_finetune.py`` (about 8 minutes on 2 idle cores); ``--quick`` for
a smoke run that writes nothing.  It rewrites the ``finetune`` section of BENCHMARKS.md and
``benchmarks/results/finetune.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

SECTION = "finetune"
MODEL = "minilm-l6"
SEQ = 128           # tokens per sequence, [CLS] and [SEP] included
BATCH = 16
LR = 5e-5
WEIGHT_DECAY = 0.01
HEAD_DROPOUT = 0.1
CLIP = 1.0
SEED = 0
SIDES = ["transferkit", "hand loop", "Trainer"]


# ============================================================================ data (parent)
def select_texts(n: int) -> tuple[list[str], list[str]]:
    """``n`` spam/ham e-mails (subject + body) with at least ``SEQ - 2`` content tokens, from a
    stratified seeded sample, in that sample's order."""
    import transferkit as tk

    rows = C.load_spam()
    idx = C.stratified_indices([r["label"] for r in rows], min(len(rows), 3 * n), seed=SEED)
    tok = tk.get_backbone(MODEL).tokenizer
    texts = [C.spam_text(rows[i]) for i in idx]
    lens = [len(x) for x in tok(texts, add_special_tokens=False, verbose=False)["input_ids"]]
    keep = [k for k in range(len(idx)) if lens[k] >= SEQ - 2][:n]
    if len(keep) < n:
        sys.exit(f"only {len(keep)} e-mails have {SEQ - 2} tokens or more; need {n}")
    return [texts[k] for k in keep], [str(rows[idx[k]]["label"]) for k in keep]


def epoch_order(n: int) -> list[int]:
    """transferkit's data order for epoch 0 (``training.loop.epoch_batches``), flattened."""
    from transferkit.training.loop import epoch_batches

    batches = epoch_batches(n, BATCH, SEED, 0)
    assert all(len(b) == BATCH for b in batches), "n must be a multiple of the batch size"
    return [int(i) for b in batches for i in b]


def fixed_tokens(texts: list[str]):
    """The hand loop's and Trainer's inputs: truncated to SEQ tokens, padded to SEQ (never needed)."""
    import transferkit as tk

    tok = tk.get_backbone(MODEL).tokenizer
    enc = tok(texts, truncation=True, max_length=SEQ, padding="max_length", return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def check_same_batches(texts: list[str], labels: list[str], order: list[int], n_steps: int) -> int:
    """transferkit's ``prepare`` of each batch gives exactly the fixed-length tokens: returns the count."""
    import torch

    import transferkit as tk

    bb = tk.get_backbone(MODEL, max_length=SEQ, max_chunks=1)
    ids, mask = fixed_tokens([texts[i] for i in order])
    for s in range(n_steps):
        rows = order[s * BATCH:(s + 1) * BATCH]
        b = bb.prepare([texts[i] for i in rows])
        back = torch.empty_like(b.tensors["input_ids"])
        back[b.owner] = b.tensors["input_ids"]  # prepare sorts chunks by length; put them back
        if not (torch.equal(back, ids[s * BATCH:(s + 1) * BATCH]) and bool(mask[s * BATCH:(s + 1) * BATCH].all())
                and b.tensors["attention_mask"].shape == (BATCH, SEQ) and bool(b.tensors["attention_mask"].all())):
            sys.exit(f"batch {s}: transferkit's tokens differ from the fixed-length tokenisation")
    return n_steps


# ============================================================================ the three sides (children)
def _clock_result(times: list[float], warmup: int, losses: list[float], before_kb: dict) -> dict:
    steps = [b - a for a, b in zip(times[warmup - 1:-1], times[warmup:])] if warmup >= 1 else \
        [b - a for a, b in zip(times[:-1], times[1:])]
    return {"step_s": steps, "median_step_s": C.med(steps), "mean_loss": sum(losses) / len(losses),
            "first_losses": losses[:3], "rss_before_kb": before_kb["VmRSS"], "peak_rss_kb": C.rss_kb()["VmHWM"],
            "torch_threads": __import__("torch").get_num_threads()}


def _classifier(encoder, head):
    """The model of the hand loop and of Trainer: encoder -> masked mean -> dropout -> head."""
    import torch.nn.functional as F
    from torch import nn

    class MeanPoolClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.head = encoder, head

        def forward(self, input_ids, attention_mask, labels=None):
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            feats = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
            logits = self.head(F.dropout(feats, HEAD_DROPOUT, training=self.training))
            out = {"logits": logits}
            if labels is not None:
                out["loss"] = F.cross_entropy(logits.float(), labels)
            return out

    return MeanPoolClassifier()


def _hand_model():
    """minilm-l6's encoder (pooler frozen, as transferkit does: mean pooling never uses it) + seeded head."""
    import torch
    from torch import nn

    import transferkit as tk

    enc = tk.get_backbone(MODEL).module
    if getattr(enc, "pooler", None) is not None:
        enc.pooler.requires_grad_(False)
    torch.manual_seed(SEED)  # transferkit draws its head under isolated_rng(seed): the same numbers
    head = nn.Linear(enc.config.hidden_size, 2)
    return _classifier(enc, head)


def _param_groups(model) -> list[dict]:
    ps = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in ps if p.ndim > 1], "weight_decay": WEIGHT_DECAY},
            {"params": [p for p in ps if p.ndim <= 1], "weight_decay": 0.0}]


def _inputs(data: dict):
    import torch

    texts, labels, order = data["texts"], data["labels"], data["order"]
    classes = sorted(set(labels))
    ids, mask = fixed_tokens([texts[i] for i in order])
    y = torch.tensor([classes.index(labels[i]) for i in order])
    return ids, mask, y


def side_transferkit(data: dict, n_steps: int, warmup: int) -> dict:
    import transferkit as tk
    from transferkit.data import from_arrays
    from transferkit.strategies.base import TransferContext
    from transferkit.strategies.finetune import FineTune
    from transferkit.training.callbacks import Callback

    class StepClock(Callback):
        def __init__(self):
            self.times, self.losses = [], []

        def on_step_end(self, state, logs):
            self.times.append(time.perf_counter())
            self.losses.append(logs["loss"])

    clock = StepClock()

    class ClockedFineTune(FineTune):  # the real strategy; one more callback, nothing else changed
        def _callbacks(self, *args):
            return super()._callbacks(*args) + [clock]

    bb = tk.get_backbone(MODEL, max_length=SEQ, max_chunks=1)
    _ = bb.module  # touch the lazy property: load the weights before the memory baseline, as the other sides do
    ds = from_arrays(list(data["texts"]), list(data["labels"]), modality="text")
    strategy = ClockedFineTune(epochs=1, max_steps=n_steps, lr=LR, head_lr=LR, batch_size=BATCH, layer_decay=1.0,
                               weight_decay=WEIGHT_DECAY, warmup=0, schedule="constant", head_dropout=HEAD_DROPOUT,
                               val_fraction=0.0, patience=None, clip=CLIP, precision="fp32")
    ctx = TransferContext(backbone=bb, features=lambda _ds: None, seed=SEED, device="cpu", progress=False)
    before = C.rss_kb()
    strategy.fit(ds, ctx)
    assert len(clock.times) == n_steps, (len(clock.times), n_steps)
    return _clock_result(clock.times, warmup, clock.losses, before)


def side_hand(data: dict, n_steps: int, warmup: int) -> dict:
    import torch

    model = _hand_model()
    ids, mask, y = _inputs(data)
    before = C.rss_kb()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(_param_groups(model), lr=LR, fused=True)
    torch.manual_seed(SEED)
    model.train()
    times, losses = [], []
    for s in range(n_steps):
        rows = slice(s * BATCH, (s + 1) * BATCH)
        loss = model(ids[rows], mask[rows], y[rows])["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        times.append(time.perf_counter())
    return _clock_result(times, warmup, losses, before)


def side_trainer(data: dict, n_steps: int, warmup: int, workdir: str) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model = _hand_model()
    ids, mask, y = _inputs(data)
    rows = [{"input_ids": ids[i], "attention_mask": mask[i], "labels": y[i]} for i in range(len(y))]

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    losses: list[float] = []

    class RecordingTrainer(Trainer):  # Trainer's logging is off: the losses are read here
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            losses.append(float((out[0] if return_outputs else out).detach()))
            return out

    clock = StepClock()
    before = C.rss_kb()
    args = TrainingArguments(
        output_dir=workdir, per_device_train_batch_size=BATCH, max_steps=n_steps, learning_rate=LR,
        weight_decay=WEIGHT_DECAY, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=CLIP,
        optim="adamw_torch_fused", seed=SEED, use_cpu=True, train_sampling_strategy="sequential",
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, dataloader_pin_memory=False, remove_unused_columns=False)
    trainer = RecordingTrainer(model=model, args=args, train_dataset=rows, callbacks=[clock])
    trainer.train()
    assert len(clock.times) == n_steps, (len(clock.times), n_steps)
    opt = trainer.optimizer
    opt = getattr(opt, "optimizer", opt)
    res = _clock_result(clock.times, warmup, losses, before)
    res["optimizer"] = {"type": type(opt).__name__, "fused": opt.defaults.get("fused"),
                        "groups": [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups]}
    return res


def child(side: str, data_path: str, n_steps: int, warmup: int, out_path: str) -> None:
    C.setup_env()
    data = json.loads(Path(data_path).read_text())
    if side == "transferkit":
        res = side_transferkit(data, n_steps, warmup)
    elif side == "hand loop":
        res = side_hand(data, n_steps, warmup)
    else:
        with tempfile.TemporaryDirectory(prefix="tk-bench-trainer-") as d:
            res = side_trainer(data, n_steps, warmup, d)
    Path(out_path).write_text(json.dumps(res))


def run_child(side: str, data_path: Path, n_steps: int, warmup: int, tmp: Path) -> dict:
    out = tmp / f"child-{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--data", str(data_path),
           "--steps", str(n_steps), "--warmup", str(warmup), "--child-out", str(out)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=C.REPO, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{side} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    res = json.loads(out.read_text())
    res["process_s"] = time.perf_counter() - t
    return res


# ============================================================================ LoRA (parent)
def _tree_bytes(d: Path, skip: str | None = None) -> tuple[int, dict[str, int]]:
    files = {str(p.relative_to(d)): p.stat().st_size for p in d.rglob("*") if p.is_file()
             and not (skip and p.relative_to(d).parts[0] == skip)}
    return sum(files.values()), files


def lora_vs_finetune(n_items: int, max_steps: int, tmp: Path) -> dict:
    import transferkit as tk
    from transferkit.runs.rundir import WEIGHTS

    rows = C.load_spam()
    idx = C.stratified_indices([r["label"] for r in rows], n_items, seed=SEED)
    ds = C.spam_dataset(rows, idx)
    out = {}
    for strategy in ("lora", "finetune"):
        run_dir = tmp / f"run-{strategy}"
        t = time.perf_counter()
        m = tk.fit(train=ds, model=MODEL, backbone_options={"max_length": SEQ, "max_chunks": 1}, strategy=strategy,
                   strategy_params={"max_steps": max_steps, "val_fraction": 0.0}, control=False, cache=False,
                   seed=SEED, out=str(run_dir), log=None, progress=False)
        wall = time.perf_counter() - t
        info = m.metrics["strategy"]["fit"]
        module = m.strategy.backbone_.module
        total_params = sum(p.numel() for p in module.parameters())
        artifact, files = _tree_bytes(run_dir, skip="checkpoints")
        ckpts, _ = _tree_bytes(run_dir / "checkpoints") if (run_dir / "checkpoints").exists() else (0, {})
        tensors = m.strategy.state_tensors()
        rec = {"wall_s": wall, "steps": info.get("steps"), "weights_bytes": (run_dir / WEIGHTS).stat().st_size,
               "artifact_bytes": artifact, "artifact_files": files, "checkpoints_bytes": ckpts,
               "saved_tensors": len(tensors), "saved_params": sum(t.numel() for t in tensors.values())}
        if strategy == "lora":
            rec.update({k: info[k] for k in ("targets", "adapter_params", "trainable_params", "backbone_params",
                                             "trainable_share", "state_bytes", "backbone_bytes")})
            rec["adapter_share"] = info["adapter_params"] / info["backbone_params"]
            rec["module_params_with_adapters"] = total_params
            rec["rank"] = m.strategy.r
        else:
            rec["trained_params"] = rec["saved_params"]
        out[strategy] = rec
        C.say(f"  {strategy}: {info.get('steps')} steps, weights file {rec['weights_bytes'] / 2**20:.2f} MiB, "
              f"artifact (without checkpoints) {artifact / 2**20:.2f} MiB, {wall:.0f} s")
    return out


# ============================================================================ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    ap.add_argument("--reps", type=int, default=3, help="fresh processes per side, order rotating")
    ap.add_argument("--lora-items", type=int, default=80)
    ap.add_argument("--lora-steps", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a few steps, one repetition; writes nothing")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    ap.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    a = C.parse_args(ap)
    if a.child:
        child(a.child, a.data, a.warmup + a.steps, a.warmup, a.child_out)
        return
    if a.quick:
        a.steps, a.warmup, a.reps, a.lora_items, a.lora_steps, a.no_write = 4, 2, 1, 40, 1, True
    C.setup_env()
    t_start = time.perf_counter()
    m = C.machine()
    C.say(C.machine_line(m))
    C.warn_if_busy(m)
    load = C.OtherLoad()
    n_steps = a.warmup + a.steps
    n = n_steps * BATCH
    with tempfile.TemporaryDirectory(prefix="tk-bench-ft-") as tmpd:
        tmp = Path(tmpd)
        texts, labels = select_texts(n)
        order = epoch_order(n)
        checked = check_same_batches(texts, labels, order, n_steps)
        data_path = tmp / "data.json"
        data_path.write_text(json.dumps({"texts": texts, "labels": labels, "order": order}))
        C.say(f"data: {n} e-mails with >= {SEQ - 2} tokens ({labels.count('spam')} spam), {n_steps} batches of "
              f"{BATCH} x {SEQ}; transferkit's tokens equal the fixed-length ones in all {checked} batches")
        runs = {s: [] for s in SIDES}
        for r in range(a.reps):
            order_r = SIDES[r % 3:] + SIDES[:r % 3]
            for side in order_r:
                res = run_child(side, data_path, a.steps, a.warmup, tmp)
                runs[side].append(res)
                C.say(f"  rep {r + 1} {side:<12} median step {res['median_step_s'] * 1000:7.1f} ms  "
                      f"peak RSS {res['peak_rss_kb'] / 1024:6.0f} MiB (before training "
                      f"{res['rss_before_kb'] / 1024:5.0f})  loss {res['mean_loss']:.3f}  [{res['process_s']:.0f} s]")
        C.say("LoRA vs full fine-tuning artifacts (tk.fit, out=...)")
        lora = lora_vs_finetune(a.lora_items, a.lora_steps, tmp)
    m["cpu_other_during_pct"] = load.pct()
    result = summarise(runs, lora, a, m, n, checked)
    result["wall_s"] = time.perf_counter() - t_start
    C.say(f"total {result['wall_s'] / 60:.1f} min")
    body = section_body(result)
    if a.no_write:
        C.say(body)
        C.say("(--quick / --no-write: nothing written)")
        return
    C.save_result(SECTION, result)
    C.update_section(SECTION, body)
    C.write_study("lora_share", study_figures(result), m, "finetune-lora")
    C.say(body)
    C.say(f"wrote the '{SECTION}' section of {C.BENCHMARKS_MD.name} and {C.RESULTS / (SECTION + '.json')}")


def study_figures(result: dict) -> dict:
    """Study ``lora_share`` of ``transferkit/studies.json`` (LoRA's trainable share, which messages
    cite) from a results dict."""
    lo = result["lora"]["lora"]
    return {"backbone": MODEL, "rank": lo["rank"], "targets": lo["targets"],
            "trainable_params": lo["trainable_params"], "backbone_params": lo["backbone_params"],
            "trainable_share": round(lo["trainable_share"], 5)}


def summarise(runs: dict, lora: dict, a, m: dict, n: int, checked: int) -> dict:
    sides = {}
    for side, rs in runs.items():
        all_steps = [x for r in rs for x in r["step_s"]]
        sides[side] = {
            "runs": rs, "median_step_s": C.med(all_steps), "rep_medians_s": [r["median_step_s"] for r in rs],
            "best_rep_median_s": min(r["median_step_s"] for r in rs),
            "peak_rss_mib": C.med([r["peak_rss_kb"] for r in rs]) / 1024,
            "rss_before_mib": C.med([r["rss_before_kb"] for r in rs]) / 1024,
            "mean_loss": sum(r["mean_loss"] for r in rs) / len(rs)}
        sides[side]["growth_mib"] = sides[side]["peak_rss_mib"] - sides[side]["rss_before_mib"]
    tk_, hand, tr = sides["transferkit"], sides["hand loop"], sides["Trainer"]
    vs_hand = tk_["median_step_s"] / hand["median_step_s"]
    vs_trainer = tk_["median_step_s"] / tr["median_step_s"]
    mem_ratio = tk_["peak_rss_mib"] / tr["peak_rss_mib"]
    lo, ft = lora["lora"], lora["finetune"]
    share = lo["trainable_share"]
    size_ratio = lo["weights_bytes"] / ft["weights_bytes"]
    summary = [
        {"item": "fine-tuning step time, transferkit / hand PyTorch loop (minilm-l6, 16 x 128 tokens, CPU fp32)",
         "goal": "<= 1.05", "measured": f"{vs_hand:.3f} ({tk_['median_step_s'] * 1000:.0f} vs "
         f"{hand['median_step_s'] * 1000:.0f} ms/step)", "met": vs_hand <= 1.05, "anchor": "finetune-speed"},
        {"item": "fine-tuning step time, transferkit / transformers Trainer", "goal": "<= 1.00",
         "measured": f"{vs_trainer:.3f} ({tk_['median_step_s'] * 1000:.0f} vs "
         f"{tr['median_step_s'] * 1000:.0f} ms/step)",
         "met": vs_trainer <= 1.0, "anchor": "finetune-speed"},
        {"item": "fine-tuning peak RSS, transferkit / Trainer (fresh process each)", "goal": "<= 1.00",
         "measured": f"{mem_ratio:.2f} ({tk_['peak_rss_mib']:.0f} vs {tr['peak_rss_mib']:.0f} MiB)",
         "met": mem_ratio <= 1.0, "anchor": "finetune-speed"},
        {"item": "LoRA trainable parameters (adapters + head) / backbone parameters", "goal": "<= 1%",
         "measured": f"{100 * share:.2f}% ({lo['trainable_params']:,} of {lo['backbone_params']:,})",
         "met": share <= 0.01, "anchor": "finetune-lora"},
        {"item": "LoRA weights file / full fine-tuning weights file", "goal": "reported (adapters + head only)",
         "measured": f"{lo['weights_bytes'] / 2**20:.2f} vs {ft['weights_bytes'] / 2**20:.1f} MiB "
         f"({100 * size_ratio:.1f}%)", "met": None, "anchor": "finetune-lora"},
    ]
    return {"machine": m, "args": {k: v for k, v in vars(a).items() if k not in ("child", "data", "child_out")},
            "model": MODEL, "seq_len": SEQ, "batch": BATCH, "lr": LR, "weight_decay": WEIGHT_DECAY, "clip": CLIP,
            "head_dropout": HEAD_DROPOUT, "n_items": n, "batches_checked_identical": checked, "sides": sides,
            "ratios": {"transferkit_vs_hand": vs_hand, "transferkit_vs_trainer": vs_trainer,
                       "peak_rss_transferkit_vs_trainer": mem_ratio,
                       "trainer_vs_hand": tr["median_step_s"] / hand["median_step_s"],
                       "rep_median_ratios_vs_hand": [t / h for t, h in zip(tk_["rep_medians_s"],
                                                                           hand["rep_medians_s"])],
                       "rep_median_ratios_vs_trainer": [t / h for t, h in zip(tk_["rep_medians_s"],
                                                                              tr["rep_medians_s"])]},
            "lora": lora, "lora_weights_ratio": size_ratio,
            "lora_artifact_ratio": lo["artifact_bytes"] / ft["artifact_bytes"], "summary": summary}


def section_body(r: dict) -> str:
    s, a, m = r["sides"], r["args"], r["machine"]
    ms = lambda x: f"{1000 * x:.0f}"  # noqa: E731
    rows = [[side, f"**{ms(v['median_step_s'])}**", ", ".join(ms(x) for x in v["rep_medians_s"]),
             f"{v['median_step_s'] / s['hand loop']['median_step_s']:.3f}",
             f"{v['peak_rss_mib']:.0f}", f"{v['rss_before_mib']:.0f}", f"{v['growth_mib']:.0f}",
             f"{v['mean_loss']:.3f}"]
            for side, v in s.items()]
    q = r["ratios"]
    lo, ft = r["lora"]["lora"], r["lora"]["finetune"]
    mib = lambda b: f"{b / 2**20:.2f}"  # noqa: E731
    lrows = [["lora (r=8, query/value)", f"{lo['trainable_params']:,} ({100 * lo['trainable_share']:.2f}%)",
              mib(lo["weights_bytes"]), mib(lo["artifact_bytes"]), mib(lo["checkpoints_bytes"])],
             ["finetune (all layers)", f"{ft['trained_params']:,}", mib(ft["weights_bytes"]),
              mib(ft["artifact_bytes"]), mib(ft["checkpoints_bytes"])]]
    tr_opt = s["Trainer"]["runs"][0].get("optimizer", {})
    return "\n".join([
        '<a id="finetune-speed"></a>',
        "## Fine-tuning: transferkit vs a hand PyTorch loop vs transformers' Trainer "
        "(`benchmarks/bench_finetune.py`)", "",
        C.machine_line(m), "",
        f"The same training on three sides, side by side in one run: {MODEL} (the zoo's BertModel, one weight file), "
        f"masked mean pooling, dropout {HEAD_DROPOUT} and a new linear head seeded alike, fp32 on CPU; the encoder "
        "trains except its pooler (unused by mean pooling: transferkit freezes it, the others by hand). "
        f"Data: {r['n_items']} SpamAssassin e-mails (subject + body) of at least {SEQ - 2} tokens, so every batch is "
        f"exactly {BATCH} x {SEQ} tokens with no padding, in transferkit's seeded order on every side; transferkit's "
        f"own tokenisation was checked equal to the others' in all {r['batches_checked_identical']} batches. "
        f"AdamW (fused, transformers' default; Trainer used `{tr_opt.get('type', '?')}` fused={tr_opt.get('fused')}), "
        f"lr {LR} constant, weight decay {WEIGHT_DECAY} on weight matrices (none on biases and LayerNorm), "
        f"gradient clipping at {CLIP}.", "",
        "A step is the wall time from the end of one optimizer step to the end of the next: transferkit's whole loop "
        "body (train mode, **tokenising the batch's texts**, forward, backward, clipping, its non-finite guard, "
        "optimizer and schedule step, callbacks; timed by a `Callback.on_step_end`), the hand loop's tensor slicing, "
        "forward, backward, clipping and step (the data tokenised beforehand, not timed), Trainer's data loader and "
        "collator, step and its log/save/evaluate checks (all three disabled; timed by a "
        "`TrainerCallback.on_step_end`). "
        "Neither validation nor checkpoints happen. "
        f"Each of {a['reps']} repetitions runs every side in a fresh process (order rotating), "
        f"{a['warmup']} untimed steps then {a['steps']} timed ones. Step time: median over all timed steps "
        "(per-repetition medians next to it). Peak RSS: the process's `VmHWM` (libraries, model, data and training), "
        "median over the repetitions; also the RSS just before training and the growth above it.", "",
        C.md_table(["side", "median ms/step", "per repetition", "/ hand loop", "peak RSS MiB", "RSS before MiB",
                    "growth MiB", "mean loss"], rows), "",
        f"transferkit / hand loop: **{q['transferkit_vs_hand']:.3f}** (goal <= 1.05; per repetition "
        + ", ".join(f"{x:.3f}" for x in q["rep_median_ratios_vs_hand"]) + "); transferkit / Trainer: "
        f"**{q['transferkit_vs_trainer']:.3f}** (goal <= 1.00; per repetition "
        + ", ".join(f"{x:.3f}" for x in q["rep_median_ratios_vs_trainer"]) + "); peak RSS transferkit / Trainer: "
        f"**{q['peak_rss_transferkit_vs_trainer']:.2f}** (goal <= 1.00)." + (
            f" Trainer ran {q['trainer_vs_hand']:.2f}x the hand loop's step time here, although it runs the same "
            "kernels (a cProfile of its steps shows the same forward, backward and fused AdamW calls): with the CPU "
            "shared, the margin over Trainer is not a measure of Trainer's own overhead; an earlier run on a "
            "quieter CPU had it at about 1.0x the hand loop." if q.get("trainer_vs_hand", 1.0) > 1.2 else ""), "",
        '<a id="finetune-lora"></a>',
        "### LoRA: trainable share and artifact size", "",
        f"`tk.fit(train=..., model=\"{MODEL}\", strategy=..., strategy_params={{\"max_steps\": {a['lora_steps']}, "
        f"\"val_fraction\": 0}}, control=False, out=DIR)` on {a['lora_items']} spam e-mails (a tiny budget: sizes do "
        "not depend on it; accuracy is in the strategies section). Trainable share: adapters + head over the "
        "backbone's own parameters (`fit_info()`). Artifact: the weights file `strategy.safetensors` and the whole run "
        "directory without `checkpoints/` (what `tk.load` needs: weights, model card, metrics, report, drift "
        "reference); the resume checkpoints are listed apart.", "",
        C.md_table(["strategy", "trainable parameters", "weights file MiB", "artifact MiB", "checkpoints MiB"], lrows),
        "",
        f"LoRA trains **{100 * lo['trainable_share']:.2f}%** of the backbone's {lo['backbone_params']:,} parameters "
        f"(adapters alone {100 * lo['adapter_share']:.2f}%; goal <= 1%); its weights file is "
        f"**{100 * r['lora_weights_ratio']:.1f}%** of the full fine-tune's, the artifact "
        f"{100 * r['lora_artifact_ratio']:.1f}%.",
    ])


if __name__ == "__main__":
    main()
