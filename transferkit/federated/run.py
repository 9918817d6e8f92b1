"""``transferkit federate --clients A,B,C``: the federation on one machine, its controls, and the
result as an ordinary run directory.

The delivered model is the federation's last aggregate (adapter and head folded into one
linear head, :func:`~.head.fold`), written as a ``linear-probe`` run on the pooled held-out
items, so ``predict``, ``evaluate``, ``serve`` and ``export`` work on it.  ``metrics.json``
gains ``federated``: rounds, bytes per round, per-client results (federated vs local-only,
the paired bootstrap verdict), the centralised control's accuracy and the round log; the run's
``federated.html`` shows accuracy per round per client.
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..config import FitConfig
from ..data.dataset import Dataset
from ..evidence import new_model
from ..pipeline import _card, _metrics, evaluate_stage, validate_stage, write_stage
from ..report.federated import render_federated
from ..runs.rundir import RunDir
from ..strategies.probe import LinearProbe
from .head import AdaptedHead, fold
from .local import Log, centralised, client_rows, read_clients, run_processes
from .server import RESULT, Plan, load_state


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _pooled(parts: list[Dataset], source: str) -> Dataset:
    first = parts[0]
    return Dataset(modality=first.modality, inputs=[x for p in parts for x in p.inputs],
                   labels=[y for p in parts for y in p.labels], origins=[o for p in parts for o in p.origins],
                   source=source, task="classification")


def federate(clients: list[str], *, model: str, out: str, aggregation: str = "fedavg", rounds: int = 3,
             min_clients: int | None = None, adapter_rank: int = 8, local_epochs: int = 2, lr: float = 0.01,
             batch_size: int = 32, mu: float = 0.1, seed: int = 0, test_size: float = 0.25,
             text_columns: list[str] | None = None, label_column: str = "label", modality: str | None = None,
             path_column: str | None = None,
             backbone_options: dict[str, Any] | None = None, crash: dict[str, int] | None = None,
             dp_clip: float | None = None, dp_epsilon: float = 1.0, dp_delta: float = 1e-5,
             log: Log | None = _say) -> dict[str, Any]:
    """Federate the clients' files (each one client process) and write the run directory ``out``.

    Returns ``metrics["federated"]``.  ``crash`` (client name -> round) is the fault drill: that
    client's process exits in the middle of that round.
    """
    from .data import Reads

    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    reads = Reads(text_columns=text_columns, label_column=label_column, modality=modality, path_column=path_column)
    datas, backbone, sha = read_clients(clients, reads, model=model, test_size=test_size, seed=seed,
                                        backbone_options=backbone_options)
    classes = sorted({c for d in datas for c in d.train.classes})
    plan = Plan(classes=classes, dim=int(datas[0].X_train.shape[1]), backbone_sha=sha, aggregation=aggregation,
                rounds=rounds, min_clients=min_clients or len(datas), expect=len(datas), adapter_rank=adapter_rank,
                local_epochs=local_epochs, lr=lr, batch_size=batch_size, mu=mu, seed=seed, dp_clip=dp_clip,
                dp_epsilon=dp_epsilon, dp_delta=dp_delta)
    plan_spec = {k: v for k, v in plan.__dict__.items() if k != "extra"}
    client_spec = {"model": model, "backbone_options": backbone_options or {}, "reads": reads.to_dict(),
                   "test_size": test_size, "seed": seed}
    work = Path(out) / "federated"
    say(f"{len(datas)} clients ({', '.join(f'{d.name}: {len(d.train)} train' for d in datas)}), classes "
        f"{classes}; {aggregation}, {rounds} rounds")
    t = time.perf_counter()
    run_processes(clients, [d.name for d in datas], plan_spec, client_spec, work, say, crash=crash)
    fed_s = time.perf_counter() - t
    import json

    result = json.loads((work / RESULT).read_text())
    _, arrays = load_state(work)
    delivered = AdaptedHead(arrays)
    central = centralised(datas, classes, plan_spec)
    rows = client_rows(datas, classes, result, central, delivered, seed)
    fed = {"rounds": result["rounds"], "bytes_per_round": result["bytes_per_round"], "clients": rows,
           "centralised_accuracy": central["accuracy"], "centralised_accuracy_ci": central["accuracy_ci"],
           "aggregation": aggregation,
           "rounds_planned": rounds, "min_clients": plan.min_clients, "backbone_sha256": sha,
           "shared_arrays": result["shared_arrays"], "round_log": result["round_log"],
           "budget": {"local_epochs": local_epochs, "lr": lr, "batch_size": batch_size, "adapter_rank": adapter_rank,
                      **({"proximal_mu": mu} if aggregation == "fedprox" else {})},
           **({"privacy": result["privacy"]} if "privacy" in result else {}),
           "engine": "Flower (flwr) gRPC server and clients, one process each, over loopback",
           **_share(backbone, arrays, result),
           "seconds": round(fed_s, 2)}
    _write_run(datas, backbone, classes, delivered, fed, out, model, reads, seed, test_size, time.perf_counter() - t0,
               say)
    return fed


def _share(backbone, arrays: dict, result: dict[str, Any]) -> dict[str, Any]:
    """What one client sends one way per round, against full fine-tuning's whole model (float32)."""
    full = 4 * sum(p.numel() for p in backbone.module.parameters()) + sum(a.nbytes for n, a in arrays.items()
                                                                           if n.startswith("head."))
    shared = sum(arrays[n].nbytes for n in result["shared_arrays"])
    return {"bytes_per_client_per_direction": int(shared), "full_model_bytes": int(full),
            "share_of_full_model": shared / full}


def _write_run(datas, backbone, classes, delivered: AdaptedHead, fed: dict[str, Any], out: str, model: str,
               reads, seed: int, test_size: float, seconds: float, say: Log) -> None:
    """The delivered model as an ordinary ``linear-probe`` run on the pooled held-out items."""
    cfg = FitConfig(model=model, strategy="linear-probe", out=out, text_columns=reads.text_columns,
                    label_column=reads.label_column, modality=reads.modality, path_column=reads.path_column,
                    seed=seed, test_size=test_size,
                    control=False, select=False, task="classification")
    names = ",".join(d.name for d in datas)
    splits = validate_stage(cfg, LinearProbe, _pooled([d.train for d in datas], f"federation of {names} (train)"),
                            _pooled([d.test for d in datas], f"federation of {names} (held out)"), say)
    W, b = fold(delivered.arrays())
    strategy = LinearProbe().load_state({"head.weight": torch.as_tensor(W), "head.bias": torch.as_tensor(b)},
                                        classes)
    tm = new_model(backbone, strategy, cfg)
    outputs = strategy.predict_outputs(splits.test, tm.ctx)
    metrics, _ = evaluate_stage(cfg, splits, strategy, outputs)
    notes = [f"Federated with Flower ({fed['aggregation']}, {fed['rounds']} rounds, {len(datas)} clients); no "
             "client's items left its process during training. The test set is every client's held-out part "
             "pooled; the controls are per client (federated.clients): local-only and centralised."]
    tm.metrics = _metrics(cfg, splits, strategy, metrics, None, {"total_s": seconds}, notes)
    tm.metrics["federated"] = fed
    tm.metrics["strategy"]["name"] = tm.metrics["run"]["strategy"] = "linear-probe"
    tm.card = _card(cfg, splits, tm)
    tm.card["lineage"] = {"command": "federate", "clients": [d.name for d in datas]}
    run = RunDir(out)
    with run.lock():
        write_stage(run, replace(cfg, data=None), tm, splits)
        run.write_text("federated.html", render_federated(fed))
    say(f"federated accuracy (pooled held-out) {metrics['test']['accuracy']:.3f}; centralised "
        f"{fed['centralised_accuracy']:.3f}; run written to {out}/ (federated.html)")
    for r in fed["clients"]:
        fa = "—" if r["federated_accuracy"] is None else f"{r['federated_accuracy']:.3f}"
        la = "—" if r["local_accuracy"] is None else f"{r['local_accuracy']:.3f}"
        say(f"  {r['name']}: federated {fa}, local-only {la}, centralised {r['centralised_accuracy']:.3f}: "
            f"{r['verdict']}")



