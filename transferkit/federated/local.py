"""The one-machine mode: a real Flower server and one real Flower client process per data file,
over loopback; then the centralised control (all clients' training items pooled, the same
model and budget: the upper bound federation tries to approach) and the run directory.

Each process reads only what it is given: a client only its own file, the server no data at
all.  This process reads every file too, for what only a one-machine run can have: the class
list, the pooled control and the pooled test set of the delivered model.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import TransferkitError, UserInputError
from ..evaluation import transfer_verdict
from .data import ClientData, Reads, backbone_of, read_client, with_features
from .head import AdaptedHead, accuracy_ci, initial_arrays, train_local

Log = Callable[[str], None]


def free_port() -> int:
    """A loopback port free now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(module: str, spec: dict[str, Any], spec_path: Path, log_path: Path) -> subprocess.Popen:
    """``python -m transferkit.federated.MODULE SPEC.json``, its output into ``log_path``."""
    spec_path.write_text(json.dumps(spec))
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", f"transferkit.federated.{module}", str(spec_path)],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def read_clients(paths: list[str], reads: Reads, *, model: str, test_size: float, seed: int,
                 backbone_options: dict[str, Any] | None = None) -> tuple[list[ClientData], Any, str]:
    """Every client's split with features (filling the feature cache the client processes read)."""
    if len(paths) < 2:
        raise UserInputError(f"a federation needs at least 2 clients, got {len(paths)}",
                             hint="--clients a.jsonl,b.jsonl[,c.jsonl...]")
    datas = [read_client(p, reads, test_size=test_size, seed=seed) for p in paths]
    names = [d.name for d in datas]
    if len(set(names)) != len(names):
        raise UserInputError(f"two client files have the same name: {', '.join(names)}",
                             hint="a client is named by its file name without extensions: rename one")
    backbone, sha = backbone_of(model, backbone_options)
    return [with_features(d, backbone) for d in datas], backbone, sha


def run_processes(paths: list[str], names: list[str], plan_spec: dict[str, Any], client_spec: dict[str, Any],
                  work: Path, say: Log, crash: dict[str, int] | None = None, timeout: float = 3600) -> None:
    """The Flower server and the clients as processes on a free loopback port, until the server ends."""
    address = f"127.0.0.1:{free_port()}"
    work.mkdir(parents=True, exist_ok=True)
    server = spawn("server", {**plan_spec, "address": address, "out": str(work)}, work / "server.json",
                   work / "server.log")
    clients = [spawn("client", {**client_spec, "data": str(Path(p).resolve()), "name": n, "server": address,
                                "crash_in_round": (crash or {}).get(n)},
                     work / f"client-{n}.json", work / f"client-{n}.log") for p, n in zip(paths, names)]
    say(f"federation: Flower server on {address}, {len(clients)} client processes (logs in {work})")
    try:
        rc = server.wait(timeout=timeout)
        if rc != 0:
            raise TransferkitError(f"the Flower server failed (exit {rc}); its log: {work / 'server.log'}\n"
                                   + (work / "server.log").read_text(errors="replace")[-2000:])
        deadline = time.monotonic() + 60
        for c in clients:
            try:
                c.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.kill()
    finally:
        for p in (server, *clients):
            if p.poll() is None:
                p.kill()
                p.wait()


def centralised(datas: list[ClientData], classes: list[str], plan_spec: dict[str, Any]) -> dict[str, Any]:
    """The pooled control: one model of the same kind and budget on every client's training
    items, scored on each client's held-out items; ``predictions`` per client for the verdicts."""
    ys = [d.encoded(classes) for d in datas]
    X = np.concatenate([d.X_train for d in datas])
    y = np.concatenate([yt for yt, _ in ys])
    net = AdaptedHead(initial_arrays(len(classes), X.shape[1], plan_spec["adapter_rank"], plan_spec["seed"]))
    train_local(net, X, y, epochs=plan_spec["local_epochs"] * plan_spec["rounds"], lr=plan_spec["lr"],
                batch_size=plan_spec["batch_size"], seed=plan_spec["seed"])
    preds = {d.name: net.predict(d.X_test) for d in datas}
    correct = np.concatenate([preds[d.name] == ye for d, (_, ye) in zip(datas, ys)])
    y_all = np.concatenate([ye for _, ye in ys])
    pred_all = np.concatenate([preds[d.name] for d in datas])
    return {"accuracy": float(correct.mean()), "accuracy_ci": accuracy_ci(y_all, pred_all, len(classes),
                                                                           plan_spec["seed"]),
            "arrays": net.arrays(), "predictions": preds,
            "per_client": {d.name: float(np.mean(preds[d.name] == ye)) for d, (_, ye) in zip(datas, ys)}}


def client_rows(datas: list[ClientData], classes: list[str], result: dict[str, Any], central: dict[str, Any],
                delivered: AdaptedHead, seed: int) -> list[dict[str, Any]]:
    """``federated.clients``: what each client reported at the end, with the centralised
    model's accuracy on its items and the delivered (global) model's, and who dropped."""
    rows = []
    for d in datas:
        _, y_test = d.encoded(classes)
        fin = result["final"].get(d.name)
        glob = delivered.predict(d.X_test)
        row: dict[str, Any] = {"name": d.name, "n_train": len(d.train), "n_test": len(d.test),
                               "centralised_accuracy": central["per_client"][d.name],
                               "global_model_accuracy": float(np.mean(glob == y_test))}
        if fin is None:
            dropped = sorted({r for row_ in result["round_log"] for r in row_.get("dropped", []) if r == d.name})
            row.update(federated_accuracy=None, local_accuracy=None, verdict="dropped",
                       note="no final answer from this client" + (" (dropped during the run)" if dropped else ""))
        else:
            row.update(federated_accuracy=fin["accuracy"], local_accuracy=fin["local_accuracy"],
                       federated_accuracy_ci=[fin["accuracy_lo"], fin["accuracy_hi"]],
                       local_accuracy_ci=[fin["local_accuracy_lo"], fin["local_accuracy_hi"]],
                       centralised_accuracy_ci=accuracy_ci(y_test, central["predictions"][d.name], len(classes), seed),
                       verdict=fin["verdict"], gain_over_local=fin["gain"],
                       gain_over_local_ci=[fin["gain_lo"], fin["gain_hi"]])
            v = transfer_verdict(y_test, glob, {"centralised": central["predictions"][d.name]}, n_boot=2000,
                                 seed=seed)
            row["global_vs_centralised"] = {"gain": v["transfer_gain"], "gain_ci": v["transfer_gain_ci"]}
        rows.append(row)
    return rows
