"""The Flower server: Flower's own strategies (``FedAvg``, ``FedProx``) with the checks a
federation of strangers needs, the round log, and a checkpoint after every completed round.

Each round, before Flower's aggregation: an update from a client whose backbone weight hash is
not the server's is refused; one with the wrong number or shapes of arrays, or NaN/inf values, is
rejected; both are logged with the client's name.  Clients that were in the federation but did
not answer (killed, disconnected) are recorded as dropped; the round completes when at least
``min_clients`` good updates came (``accept_failures``), else the model stays as it was.
The aggregate is written after every completed round (``state.safetensors``, ``rounds.json``),
so a restarted server resumes from its last completed round.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import ServerConfig, start_server
from flwr.server.strategy import FedAvg, FedProx
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from .._files import atomic_write_bytes, write_json
from ..errors import UserInputError
from .head import check_update, initial_arrays, nbytes, shapes, shared_names

AGGREGATIONS = ("fedavg", "fedprox", "fedper")
STATE, ROUNDS, RESULT = "state.safetensors", "rounds.json", "federated.json"


@dataclass
class Plan:
    """What the server runs: the model's trainable part and every client's training budget."""

    classes: list[str]
    dim: int
    backbone_sha: str
    aggregation: str = "fedavg"
    rounds: int = 3
    min_clients: int = 2
    expect: int = 2
    adapter_rank: int = 8
    local_epochs: int = 2
    lr: float = 0.01
    batch_size: int = 32
    mu: float = 0.1
    seed: int = 0
    join_timeout: float = 300.0
    dp_clip: float | None = None
    dp_epsilon: float = 1.0
    dp_delta: float = 1e-5
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise UserInputError(f"unknown aggregation {self.aggregation!r}", hint=f"one of {', '.join(AGGREGATIONS)}")
        if self.aggregation == "fedper" and not self.adapter_rank:
            raise UserInputError("fedper shares the adapter and keeps heads local: adapter_rank 0 leaves nothing "
                                 "to share", hint="give --adapter-rank 4 or more, or use fedavg")
        if self.dp_clip is not None and (self.personal_head or self.dp_clip <= 0 or self.dp_epsilon <= 0
                                         or not 0 < self.dp_delta < 1):
            raise UserInputError("client-side differential privacy needs a positive clipping norm and epsilon, "
                                 "0 < delta < 1, and fedavg or fedprox (fedper's last round sends the personal "
                                 "heads, which the clipping does not cover)", hint="check --dp-clip/--dp-epsilon")
        if len(self.classes) < 2:
            raise UserInputError(f"a federation needs at least 2 classes, got {self.classes}")
        if not 1 <= self.min_clients <= self.expect:
            raise UserInputError(f"min_clients {self.min_clients} must be between 1 and the {self.expect} "
                                 "clients expected")

    @property
    def personal_head(self) -> bool:
        return self.aggregation == "fedper"

    def names(self, final: bool) -> list[str]:
        """The arrays that travel in a round (the final round carries the whole trainable part)."""
        return shared_names(len(self.classes), self.dim, self.adapter_rank, self.personal_head and not final)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return shapes(len(self.classes), self.dim, self.adapter_rank)

    def config(self, rnd: int) -> dict[str, Any]:
        """The configuration every client gets in round ``rnd`` (1-based, counted over resumes)."""
        return {"round": rnd, "final": rnd == self.rounds, "classes": json.dumps(self.classes),
                "adapter_rank": self.adapter_rank, "personal_head": self.personal_head,
                "local_epochs": self.local_epochs, "lr": self.lr, "batch_size": self.batch_size, "seed": self.seed,
                **({"dp_clip": self.dp_clip, "dp_epsilon": self.dp_epsilon, "dp_delta": self.dp_delta}
                   if self.dp_clip is not None else {})}

    def privacy(self, rounds: int) -> dict[str, Any] | None:
        """What the client-side DP spent: (epsilon, delta) per round, and over ``rounds`` rounds by
        basic composition (an upper bound; a client that sat out a round spent less)."""
        if self.dp_clip is None:
            return None
        return {"mechanism": "Gaussian, client side: each update clipped to L2 norm dp_clip, noise "
                             "sd = dp_clip * sqrt(2 ln(1.25/delta)) / epsilon (Flower's local DP functions)",
                "clipping_norm": self.dp_clip, "epsilon_per_round": self.dp_epsilon, "delta_per_round": self.dp_delta,
                "epsilon_total": self.dp_epsilon * rounds, "delta_total": self.dp_delta * rounds,
                "composition": "basic (sum over rounds)"}


class _Checked:
    """Mixed in before a Flower strategy: checks, bytes, log and checkpoint around its calls."""

    plan: Plan
    out: Path
    offset: int
    log_rows: list[dict[str, Any]]

    def _setup(self, plan: Plan, out: Path, offset: int, rows: list[dict[str, Any]]) -> None:
        self.plan, self.out, self.offset, self.log_rows = plan, out, offset, rows
        self.known: set[str] = {c for r in rows for c in r.get("fitted", [])}
        self.waited = False

    def say(self, msg: str) -> None:
        print(f"federated server: {msg}", file=sys.stderr, flush=True)

    def _row(self, rnd: int) -> dict[str, Any]:
        for row in self.log_rows:
            if row["round"] == rnd:
                return row
        row = {"round": rnd, "fitted": [], "refused": [], "rejected": [], "dropped": [], "bytes_sent": 0,
               "bytes_received": 0, "accuracy": {}}
        self.log_rows.append(row)
        return row

    def configure_fit(self, server_round, parameters, client_manager):
        if not self.waited:  # the first round waits for every expected client (later ones for min_clients)
            self.waited = True
            if not client_manager.wait_for(self.plan.expect, timeout=self.plan.join_timeout):
                self.say(f"only {client_manager.num_available()} of {self.plan.expect} clients joined in "
                         f"{self.plan.join_timeout:.0f} s; going on with them")
        ins = super().configure_fit(server_round, parameters, client_manager)
        self._row(self.offset + server_round)["bytes_sent"] += nbytes(parameters_to_ndarrays(parameters)) * len(ins)
        return ins

    def aggregate_fit(self, server_round, results, failures):
        rnd = self.offset + server_round
        row, final = self._row(rnd), rnd == self.plan.rounds
        names, expected = self.plan.names(final), self.plan.shapes()
        good = []
        for proxy, res in results:
            name = str(res.metrics.get("client", proxy.cid))
            arrays = parameters_to_ndarrays(res.parameters)
            row["bytes_received"] += nbytes(arrays)
            if res.metrics.get("backbone_sha256") != self.plan.backbone_sha:
                row["refused"].append({"client": name, "reason": "backbone weight hash "
                                       f"{str(res.metrics.get('backbone_sha256'))[:12]}… is not the server's "
                                       f"{self.plan.backbone_sha[:12]}…"})
                self.say(f"round {rnd}: refused {name}: another backbone")
                continue
            reason = check_update(names, arrays, expected)
            if reason:
                row["rejected"].append({"client": name, "reason": reason})
                self.say(f"round {rnd}: rejected the update of {name}: {reason}")
                continue
            good.append((proxy, res))
            row["fitted"].append(name)
        answered = set(row["fitted"]) | {r["client"] for r in row["refused"] + row["rejected"]}
        row["dropped"] = sorted(self.known - answered)
        row["failures"] = len(failures)
        if row["dropped"] or failures:
            self.say(f"round {rnd}: {len(failures)} client(s) failed; dropped: {', '.join(row['dropped']) or '?'}")
        self.known |= set(row["fitted"])
        if len(good) < self.plan.min_clients:
            self.say(f"round {rnd}: {len(good)} good update(s), fewer than min_clients {self.plan.min_clients}: "
                     "the model stays as it was")
            row["completed"] = False
            self._save_rows()
            return None, {}
        params, metrics = super().aggregate_fit(server_round, good, [])
        row["completed"] = True
        self._checkpoint(rnd, dict(zip(names, parameters_to_ndarrays(params))))
        return params, metrics

    def aggregate_evaluate(self, server_round, results, failures):
        rnd = self.offset + server_round
        row = self._row(rnd)
        for _proxy, res in results:
            m = dict(res.metrics)
            if m.get("backbone_sha256") != self.plan.backbone_sha:
                continue
            row["accuracy"][str(m["client"])] = float(m["accuracy"])
            if rnd == self.plan.rounds:
                row.setdefault("final", {})[str(m["client"])] = {k: v for k, v in m.items()
                                                                 if k not in ("client", "backbone_sha256")}
        self._save_rows()
        accs = list(row["accuracy"].values())
        return (1.0 - float(np.mean(accs)) if accs else None), {}

    # ----- what survives a crash -----------------------------------------------------------
    def _checkpoint(self, rnd: int, arrays: dict[str, np.ndarray]) -> None:
        atomic_write_bytes(self.out / STATE, st_save({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                                                     metadata={"round": str(rnd)}))
        self._save_rows()

    def _save_rows(self) -> None:
        write_json(self.out / ROUNDS, self.log_rows)


class CheckedFedAvg(_Checked, FedAvg):
    """Flower's FedAvg (weighted by the clients' training items) with the checks; FedPer is this
    strategy over the adapter alone, each client's head kept local."""


class CheckedFedProx(_Checked, FedProx):
    """Flower's FedProx: FedAvg plus ``proximal_mu`` sent to the clients, which add the term."""


def load_state(out: Path) -> tuple[int, dict[str, np.ndarray]]:
    """The last completed round and its aggregate (``0, {}`` when none was saved)."""
    path = out / STATE
    if not path.is_file():
        return 0, {}
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        rnd = int((f.metadata() or {}).get("round", 0))
    return rnd, dict(st_load(path.read_bytes()))


def run_server(plan: Plan, out: str | Path, *, address: str = "0.0.0.0:8080", resume: bool = False,
               certificates: tuple[bytes, bytes, bytes] | None = None) -> dict[str, Any]:
    """Run the federation's remaining rounds on Flower's gRPC server at ``address``; returns
    (and writes to ``OUT/federated.json``) the round log and the clients' final results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done, arrays = load_state(out) if resume else (0, {})
    rows = json.loads((out / ROUNDS).read_text()) if resume and (out / ROUNDS).is_file() else []
    rows = [r for r in rows if r["round"] <= done]
    if done:
        print(f"federated server: resuming after round {done} of {plan.rounds}", file=sys.stderr, flush=True)
    start = arrays or initial_arrays(len(plan.classes), plan.dim, plan.adapter_rank, plan.seed)
    names = plan.names(done == plan.rounds)
    remaining = plan.rounds - done
    if remaining > 0:
        common = dict(fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=plan.min_clients,
                      min_evaluate_clients=plan.min_clients, min_available_clients=plan.min_clients,
                      accept_failures=True, initial_parameters=ndarrays_to_parameters([start[n] for n in names]),
                      on_fit_config_fn=lambda r: plan.config(done + r),
                      on_evaluate_config_fn=lambda r: plan.config(done + r))
        strategy = CheckedFedProx(proximal_mu=plan.mu, **common) if plan.aggregation == "fedprox" \
            else CheckedFedAvg(**common)
        strategy._setup(plan, out, done, rows)
        start_server(server_address=address, strategy=strategy, config=ServerConfig(num_rounds=remaining),
                     certificates=certificates)
    result = summary(plan, out)
    write_json(out / RESULT, result)
    return result


def summary(plan: Plan, out: Path) -> dict[str, Any]:
    """The federation's record from what the server saved: rounds, bytes, clients' finals."""
    rows = json.loads((out / ROUNDS).read_text()) if (out / ROUNDS).is_file() else []
    done, _ = load_state(out)
    finals = next((r.get("final", {}) for r in rows if r["round"] == plan.rounds), {})
    per_round = [r["bytes_sent"] + r["bytes_received"] for r in rows if r.get("completed")]
    return {"aggregation": plan.aggregation, "rounds": done, "rounds_planned": plan.rounds,
            "min_clients": plan.min_clients, "classes": plan.classes, "backbone_sha256": plan.backbone_sha,
            "shared_arrays": plan.names(False), "adapter_rank": plan.adapter_rank,
            "local_epochs": plan.local_epochs, "lr": plan.lr, "batch_size": plan.batch_size,
            **({"proximal_mu": plan.mu} if plan.aggregation == "fedprox" else {}),
            "bytes_per_round": int(np.mean(per_round)) if per_round else 0,
            **({"privacy": plan.privacy(done)} if plan.dp_clip is not None else {}),
            "round_log": rows, "final": finals}


def main(argv: list[str] | None = None) -> int:
    """``python -m transferkit.federated.server SPEC.json``: the one-machine mode's server process
    (SPEC: the :class:`Plan` fields, ``address``, ``out``, ``resume``)."""
    spec = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    address, out, resume = spec.pop("address"), spec.pop("out"), spec.pop("resume", False)
    run_server(Plan(**spec), out, address=address, resume=resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
