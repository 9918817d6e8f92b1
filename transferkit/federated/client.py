"""A Flower client: one holder of data, which trains the shared part on its own items and
answers the server; its data and (FedPer) its head never leave it.

Everything about training (classes, epochs, learning rate, FedProx's ``proximal_mu``, which
arrays travel) comes from the server in each round's configuration, so every client spends
the same budget.  In the last round's evaluation the client also trains its local-only model
(same start, same strategy, the whole budget on its data alone) and sends the paired bootstrap
verdict on its held-out items: summaries travel, predictions do not.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
from flwr.client import NumPyClient, start_client

from ..evaluation import transfer_verdict
from .data import ClientData
from .head import AdaptedHead, accuracy_ci, initial_arrays, shared_names, train_local

#: Exit status of the fault drill (``--crash-in-round``): the process dies without answering.
CRASH_STATUS = 17


class TransferClient(NumPyClient):
    """The Flower side of one client: ``fit`` trains on ``data``'s cached training features,
    ``evaluate`` scores the held-out part (and, at the end, the local-only control)."""

    def __init__(self, data: ClientData, backbone_sha: str, *, crash_in_round: int | None = None,
                 log=lambda m: print(m, file=sys.stderr, flush=True)):
        self.data, self.backbone_sha, self.crash_in_round, self.log = data, backbone_sha, crash_in_round, log
        self.net: AdaptedHead | None = None
        self.classes: list[str] = []

    # ----- the model kept between rounds (FedPer's head lives here) ------------------------
    def _setup(self, config: dict[str, Any]) -> tuple[list[str], np.ndarray, np.ndarray]:
        classes = json.loads(str(config["classes"]))
        if self.net is None or classes != self.classes:
            self.classes = classes
            self.y_train, self.y_test = self.data.encoded(classes)
            self.net = AdaptedHead(initial_arrays(len(classes), self.data.X_train.shape[1],
                                                  int(config["adapter_rank"]), int(config["seed"])))
        names = shared_names(len(classes), self.data.X_train.shape[1], int(config["adapter_rank"]),
                             bool(config["personal_head"]))
        return names, self.y_train, self.y_test

    def _receive(self, names: list[str], parameters: list[np.ndarray]) -> None:
        """Take the shared arrays ``names`` from the server's message, which holds either those
        or (after the final round) the whole trainable part; FedPer's head stays the client's own."""
        full = list(self.net.names)
        got = dict(zip(full if len(parameters) == len(full) else names, parameters))
        self.net.assign({n: got[n] for n in names if n in got})

    # ----- Flower's calls -----------------------------------------------------------------
    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        if self.net is None:
            return []
        return list(self.net.arrays().values())

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]):
        names, y, _ = self._setup(config)
        self._receive(names, parameters)
        rnd = int(config["round"])
        if self.crash_in_round == rnd:  # the fault drill: die mid-round, after the instructions came
            self.log(f"client {self.data.name}: fault drill, exiting in round {rnd}")
            os._exit(CRASH_STATUS)
        train_local(self.net, self.data.X_train, y, epochs=int(config["local_epochs"]), lr=float(config["lr"]),
                    batch_size=int(config["batch_size"]), seed=int(config["seed"]) * 1000 + rnd,
                    mu=float(config.get("proximal_mu", 0.0)))
        # the final round sends the whole trainable part (FedPer: the delivered model averages the heads)
        sent = list(self.net.arrays().values()) if config.get("final") else list(self.net.arrays(names).values())
        if config.get("dp_clip") is not None:
            sent = private(sent, parameters, config)
        return sent, len(y), {"client": self.data.name, "backbone_sha256": self.backbone_sha}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]):
        names, y_train, y_test = self._setup(config)
        self._receive(names, parameters)
        pred = self.net.predict(self.data.X_test)
        acc = float(np.mean(pred == y_test))
        metrics: dict[str, Any] = {"client": self.data.name, "accuracy": acc, "n_train": len(y_train),
                                   "n_test": len(y_test), "backbone_sha256": self.backbone_sha}
        if config.get("final"):
            metrics.update(self._local_control(config, pred, y_test, y_train))
        return 1.0 - acc, len(y_test), metrics

    def _local_control(self, config: dict[str, Any], pred: np.ndarray, y_test: np.ndarray,
                       y_train: np.ndarray) -> dict[str, Any]:
        """The local-only model (same start and budget, no federation) and the verdict."""
        local = AdaptedHead(initial_arrays(len(self.classes), self.data.X_train.shape[1],
                                           int(config["adapter_rank"]), int(config["seed"])))
        train_local(local, self.data.X_train, y_train, epochs=int(config["local_epochs"]) * int(config["round"]),
                    lr=float(config["lr"]), batch_size=int(config["batch_size"]), seed=int(config["seed"]))
        local_pred = local.predict(self.data.X_test)
        v = transfer_verdict(y_test, pred, {"local-only": local_pred}, n_boot=2000, seed=int(config["seed"]))
        lo, hi = v["transfer_gain_ci"]
        C, seed = len(self.classes), int(config["seed"])
        (flo, fhi), (llo, lhi) = accuracy_ci(y_test, pred, C, seed), accuracy_ci(y_test, local_pred, C, seed)
        return {"local_accuracy": float(np.mean(local_pred == y_test)), "verdict": v["verdict"],
                "accuracy_lo": flo, "accuracy_hi": fhi, "local_accuracy_lo": llo, "local_accuracy_hi": lhi,
                "gain": float(v["transfer_gain"]), "gain_lo": float(lo), "gain_hi": float(hi)}


def private(sent: list[np.ndarray], received: list[np.ndarray], config: dict[str, Any]) -> list[np.ndarray]:
    """Client-side differential privacy with Flower's own local-DP functions (what its
    ``LocalDpMod`` does): the update ``sent - received`` clipped to L2 norm ``dp_clip``, then
    Gaussian noise of sd ``dp_clip * sqrt(2 ln(1.25/delta)) / epsilon`` on what is sent."""
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.supercore.differential_privacy import add_localdp_gaussian_noise_to_params, compute_clip_model_update

    clip = float(config["dp_clip"])
    out = [np.array(a, np.float32) for a in sent]
    compute_clip_model_update(out, [np.asarray(a, np.float32) for a in received], clip)
    noisy = add_localdp_gaussian_noise_to_params(ndarrays_to_parameters(out), clip, float(config["dp_epsilon"]),
                                                 float(config["dp_delta"]))
    return [a.astype(np.float32) for a in parameters_to_ndarrays(noisy)]


def run_client(data: ClientData, backbone_sha: str, server: str, *, root_certificates: bytes | None = None,
               crash_in_round: int | None = None, max_wait_time: float = 120.0) -> None:
    """Connect to the Flower server at ``server`` (``host:port``) and serve its rounds until it
    says the run is over (TLS when ``root_certificates`` is given)."""
    client = TransferClient(data, backbone_sha, crash_in_round=crash_in_round)
    start_client(server_address=server, client=client.to_client(), root_certificates=root_certificates,
                 insecure=root_certificates is None, max_wait_time=max_wait_time)


def main(argv: list[str] | None = None) -> int:
    """``python -m transferkit.federated.client SPEC.json``: one client process of the one-machine
    mode (SPEC: ``data``, ``name``, ``model``, ``backbone_options``, ``reads``, ``test_size``,
    ``seed``, ``server``, ``crash_in_round``)."""
    from pathlib import Path

    from .data import Reads, backbone_of, read_client, with_features

    spec = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    data = read_client(spec["data"], Reads(**spec["reads"]), test_size=spec["test_size"], seed=spec["seed"],
                       name=spec["name"])
    backbone, sha = backbone_of(spec["model"], spec.get("backbone_options"))
    run_client(with_features(data, backbone), sha, spec["server"], crash_in_round=spec.get("crash_in_round"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
