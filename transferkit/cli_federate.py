"""``transferkit federate``: federated transfer learning on Flower (a shell over
:mod:`transferkit.federated`).

    transferkit federate --clients a.jsonl,b.jsonl,c.jsonl --model minilm-l6 --rounds 5 --out runs/fed
    transferkit federate server --classes ham,spam --model minilm-l6 --expect 3 --rounds 10 --out runs/fed
    transferkit federate client --server HOST:8080 --data my_data.jsonl --model minilm-l6
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import UserInputError

STRATEGY_HELP = ("the trainable part: probe (a low-rank feature adapter + a linear head on the frozen backbone's "
                 "cached features; the only one today)")


def _list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def add_commands(sub) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add ``federate`` to the parser's sub-commands; returns ``{command: function}``."""
    p = sub.add_parser("federate", help="federated transfer learning on Flower: clients' data never leaves them")
    p.add_argument("mode", nargs="?", choices=("server", "client"),
                   help="server / client for a real deployment; none: everything on this machine (--clients)")
    p.add_argument("--clients", help="one machine: comma-separated labelled files, one client process each")
    p.add_argument("--data", help="client: this client's labelled file")
    p.add_argument("--name", help="client: its name in the reports (default: the file name)")
    p.add_argument("--server", help="client: the server's HOST:PORT")
    p.add_argument("--address", default="0.0.0.0:8080", help="server: where to listen (default 0.0.0.0:8080)")
    p.add_argument("--classes", help="server: the comma-separated class names every client's labels are among")
    p.add_argument("--expect", type=int, help="server: clients to wait for before round 1 (default --min-clients)")
    p.add_argument("--resume", action="store_true", help="server: continue from the last completed round in --out")
    p.add_argument("--certificates", help="server: CA,CERT,KEY PEM files for TLS")
    p.add_argument("--root-certificates", help="client: the CA's PEM file (TLS)")
    p.add_argument("--text-column", help="column(s) holding the text, comma-separated")
    p.add_argument("--path-column", help="tables that list image or audio files: the column of their paths")
    p.add_argument("--label-column", default="label")
    p.add_argument("--modality", choices=("text", "image", "audio"))
    p.add_argument("--model", required=True, help="the frozen backbone all clients share (weight hash checked)")
    p.add_argument("--strategy", default="probe", choices=("probe",), help=STRATEGY_HELP)
    p.add_argument("--aggregation", default="fedavg", choices=("fedavg", "fedprox", "fedper"),
                   help="fedavg (weighted by items), fedprox (proximal term --mu), fedper (shared adapter, own heads)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-clients", type=int, help="rounds complete with this many good updates (default: all)")
    p.add_argument("--adapter-rank", type=int, default=8, help="rank of the shared feature adapter (0: head only)")
    p.add_argument("--local-epochs", type=int, default=2, help="epochs over its data each client trains per round")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--mu", type=float, default=0.1, help="fedprox: weight of the proximal term")
    p.add_argument("--dp-clip", type=float, help="client-side differential privacy: clip each update to this L2 "
                                                 "norm and add Gaussian noise (off when not given; not with fedper)")
    p.add_argument("--dp-epsilon", type=float, default=1.0, help="DP: epsilon per round (the total is reported)")
    p.add_argument("--dp-delta", type=float, default=1e-5, help="DP: delta per round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-size", type=float, default=0.25, help="each client's held-out share")
    p.add_argument("--crash-in-round", help="fault drill: NAME=ROUND (one machine) or ROUND (client): that client "
                                            "exits in the middle of that round")
    p.add_argument("--out", help="run directory (one machine, server)")
    return {"federate": cmd_federate}


def _reads(a: argparse.Namespace):
    from .federated.data import Reads

    return Reads(text_columns=_list(a.text_column), label_column=a.label_column, modality=a.modality,
                 path_column=a.path_column)


def _crash(a: argparse.Namespace) -> dict[str, int] | None:
    if not a.crash_in_round:
        return None
    try:
        return {k.strip(): int(v) for k, v in (part.split("=") for part in a.crash_in_round.split(","))}
    except ValueError:
        raise UserInputError(f"--crash-in-round {a.crash_in_round!r} is not NAME=ROUND[,NAME=ROUND]",
                             hint="e.g. --crash-in-round c=2") from None


def _need(a: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(a, n)]
    if missing:
        raise UserInputError(f"federate {a.mode or ''} needs {', '.join(missing)}".replace("  ", " "),
                             hint="see `transferkit federate --help`")


def cmd_federate(a: argparse.Namespace) -> int:
    from .federated import require_flower

    require_flower()
    say: Callable[[str], Any] = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if a.mode is None:
        _need(a, "clients", "out")
        from .federated.run import federate

        fed = federate(_list(a.clients) or [], model=a.model, out=a.out, aggregation=a.aggregation, rounds=a.rounds,
                       min_clients=a.min_clients, adapter_rank=a.adapter_rank, local_epochs=a.local_epochs, lr=a.lr,
                       batch_size=a.batch_size, mu=a.mu, seed=a.seed, test_size=a.test_size,
                       text_columns=_list(a.text_column), label_column=a.label_column, modality=a.modality,
                       path_column=a.path_column,
                       crash=_crash(a), dp_clip=a.dp_clip, dp_epsilon=a.dp_epsilon, dp_delta=a.dp_delta, log=say)
        print(f"{a.out}: {fed['rounds']} rounds, {fed['bytes_per_round']} bytes per round; "
              f"report {Path(a.out) / 'federated.html'}")
        return 0
    if a.mode == "server":
        _need(a, "classes", "out")
        from .federated.data import backbone_of
        from .federated.server import Plan, run_server

        backbone, sha = backbone_of(a.model)
        min_clients = a.min_clients or 2
        plan = Plan(classes=_list(a.classes) or [], dim=backbone.num_features, backbone_sha=sha,
                    aggregation=a.aggregation, rounds=a.rounds, min_clients=min_clients,
                    expect=a.expect or min_clients, adapter_rank=a.adapter_rank, local_epochs=a.local_epochs,
                    lr=a.lr, batch_size=a.batch_size, mu=a.mu, seed=a.seed, dp_clip=a.dp_clip,
                    dp_epsilon=a.dp_epsilon, dp_delta=a.dp_delta)
        certs = None
        if a.certificates:
            paths = _list(a.certificates) or []
            if len(paths) != 3:
                raise UserInputError("--certificates takes CA,CERT,KEY (three PEM files)")
            certs = tuple(Path(p).read_bytes() for p in paths)
        result = run_server(plan, a.out, address=a.address, resume=a.resume, certificates=certs)
        print(f"{a.out}: {result['rounds']} rounds done; {Path(a.out) / 'federated.json'}")
        return 0
    _need(a, "server", "data")
    from .federated.client import run_client
    from .federated.data import backbone_of, read_client, with_features

    data = read_client(a.data, _reads(a), test_size=a.test_size, seed=a.seed, name=a.name)
    backbone, sha = backbone_of(a.model)
    crash = int(a.crash_in_round) if a.crash_in_round and a.crash_in_round.isdigit() else None
    root = Path(a.root_certificates).read_bytes() if a.root_certificates else None
    run_client(with_features(data, backbone), sha, a.server, root_certificates=root, crash_in_round=crash)
    return 0
