"""Federated transfer on Flower: FedAvg, FedProx and FedPer against local-only and centralised.

Two federations, each client a real Flower client process over loopback (``transferkit
federate``'s one-machine mode), the trainable part a rank-8 feature adapter + linear head on the
frozen backbone's cached features:

* spam (minilm-l6, subject + body, first 128 tokens): 3 clients built from SpamAssassin's
  ``group`` field, different in time and spam share: ``2002`` = easy-ham-1 + spam-1,
  ``2003`` = easy-ham-2 + spam-2, ``hard`` = hard-ham-1 + a small share of spam-2;
* MNIST-5k (efficientnet-lite0 at 64 px) over 5 clients by a Dirichlet(0.3) label skew.

Per client: federated vs local-only (same model, same budget on its data alone; paired bootstrap
verdict) vs centralised (all training items pooled, same budget), accuracy with 95% intervals;
rounds until the clients' mean accuracy is within 2 points of centralised; bytes per round
against full fine-tuning's (the backbone's float32 weights per client each way).

Run: ``python benchmarks/bench_federated.py [--items-per-group 200] [--rounds 10]``.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

C.setup_env()
NAME = "federated"
AGGREGATIONS = ("fedavg", "fedprox", "fedper")


def spam_clients(d: Path, per_group: int, seed: int = 0) -> list[str]:
    import numpy as np

    rows = C.load_spam()
    rng = np.random.default_rng(seed)
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["group"], []).append(r)

    def take(group: str, n: int, skip: int = 0) -> list[dict]:
        order = rng.permutation(len(by[group]))
        return [by[group][i] for i in order[skip:skip + n]]

    spam2 = take("spam-2", per_group + per_group // 5)
    clients = {"2002": take("easy-ham-1", per_group) + take("spam-1", per_group // 2),
               "2003": take("easy-ham-2", per_group) + spam2[:per_group // 2],
               "hard": take("hard-ham-1", per_group) + spam2[per_group:per_group + per_group // 5]}
    paths = []
    for name, rs in clients.items():
        p = d / f"{name}.jsonl.gz"
        with gzip.open(p, "wt", encoding="utf-8") as f:
            for r in rs:
                f.write(json.dumps({"subject": r["subject"], "body": r["body"], "label": r["label"]}) + "\n")
        paths.append(str(p))
    return paths


def mnist_clients(d: Path, n_clients: int = 5, alpha: float = 0.3, seed: int = 0) -> list[str]:
    """MNIST-5k as PNG files, split over clients by per-class Dirichlet(alpha) shares; a client's
    class with fewer than 4 items goes to the client holding most of that class (a split needs some)."""
    import numpy as np
    from PIL import Image

    images, labels = C.load_mnist()
    rng = np.random.default_rng(seed)
    owner = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = (np.cumsum(rng.dirichlet([alpha] * n_clients)) * len(idx)).astype(int)[:-1]
        for k, part in enumerate(np.split(idx, cuts)):
            owner[part] = k
        counts = np.bincount(owner[idx], minlength=n_clients)
        for k in np.flatnonzero((counts > 0) & (counts < 4)):
            owner[idx[owner[idx] == k]] = int(np.argmax(counts))
    (d / "img").mkdir(exist_ok=True)
    paths = []
    for k in range(n_clients):
        p = d / f"mnist-{k}.csv"
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label"])
            for i in np.flatnonzero(owner == k):
                name = f"img/{i}.png"
                if not (d / name).exists():
                    Image.fromarray(images[i]).convert("RGB").save(d / name)
                w.writerow([name, str(labels[i])])
        paths.append(str(p))
    return paths


def rounds_to_within(fed: dict, points: float = 2.0) -> int | None:
    """The first round whose held-out accuracy, averaged over the clients weighted by their held-out
    items, is within ``points`` of the centralised model's."""
    n = {c["name"]: c["n_test"] for c in fed["clients"]}
    for row in sorted(fed["round_log"], key=lambda r: r["round"]):
        acc = row["accuracy"]
        mean = sum(acc[k] * n[k] for k in acc) / sum(n[k] for k in acc) if acc else -1.0
        if mean >= fed["centralised_accuracy"] - points / 100:
            return int(row["round"])
    return None


def run_task(label: str, paths: list[str], a, *, model: str, options: dict, reads: dict, work: Path) -> dict:
    from transferkit.federated.run import federate

    out = {}
    for agg in AGGREGATIONS:
        t = time.perf_counter()
        fed = federate(paths, model=model, out=str(work / f"{label}-{agg}"), aggregation=agg, rounds=a.rounds,
                       local_epochs=a.local_epochs, lr=a.lr, backbone_options=options, seed=0, log=None, **reads)
        metrics = json.loads((work / f"{label}-{agg}" / "metrics.json").read_text())
        fed["pooled_test"] = {"accuracy": metrics["test"]["accuracy"], "accuracy_ci": metrics["test"]["accuracy_ci"]}
        fed["rounds_to_within_2pts"] = rounds_to_within(fed)
        fed["wall_s"] = round(time.perf_counter() - t, 1)
        fed.pop("round_log_full", None)
        out[agg] = fed
        C.say(f"{label} {agg}: pooled {fed['pooled_test']['accuracy']:.3f}, centralised "
              f"{fed['centralised_accuracy']:.3f}, within 2 pts at round {fed['rounds_to_within_2pts']}, "
              f"{fed['bytes_per_round']} B/round, {fed['wall_s']:.0f} s")
    return out


def section(res: dict, m: dict) -> str:
    lines = ["## Federated transfer on Flower (`benchmarks/bench_federated.py`)", "",
             f"{C.machine_line(m)} Every client a real Flower client process over loopback (flwr "
             f"{res['flwr']}), the trainable part a rank-8 feature adapter + linear head on cached features of the "
             f"frozen backbone; {res['rounds']} rounds of {res['local_epochs']} local epoch(s), lr {res['lr']}; "
             "each client's held-out part is 25% of its items (stratified, seed 0); local-only and centralised get "
             "the same budget (rounds x local epochs). Verdict: federated vs local-only, paired bootstrap, 95%. "
             "One seed. The CPU was shared with other agents' jobs (wall times are not speed figures).", ""]
    for task, about in (("spam", res["spam_about"]), ("mnist", res["mnist_about"])):
        lines += [f"**{task}** ({about})", ""]
        rows = []
        for agg, fed in res[task].items():
            for c in fed["clients"]:
                rows.append([agg, c["name"], c["n_train"],
                             C.fmt_ci(c["federated_accuracy"], c["federated_accuracy_ci"])
                             if c["federated_accuracy"] is not None else "—",
                             C.fmt_ci(c["local_accuracy"], c["local_accuracy_ci"])
                             if c["local_accuracy"] is not None else "—",
                             C.fmt_ci(c["centralised_accuracy"], c["centralised_accuracy_ci"]),
                             c["verdict"] + (f" ({C.fmt_gain(c['gain_over_local'], c['gain_over_local_ci'])})"
                                             if "gain_over_local" in c else "")])
        lines += [C.md_table(["aggregation", "client", "train items", "federated", "local-only", "centralised",
                              "federated vs local-only"], rows), ""]
        pooled = [[agg, C.fmt_ci(f["pooled_test"]["accuracy"], f["pooled_test"]["accuracy_ci"]),
                   C.fmt_ci(f["centralised_accuracy"], f["centralised_accuracy_ci"]),
                   f"{100 * (f['pooled_test']['accuracy'] - f['centralised_accuracy']):+.1f}",
                   f["rounds_to_within_2pts"] or f"not in {res['rounds']}",
                   f"{f['bytes_per_round']:,}", f"{100 * f['share_of_full_model']:.3f}%", f"{f['wall_s']:.0f} s"]
                  for agg, f in res[task].items()]
        lines += [C.md_table(["aggregation", "global model, pooled held-out", "centralised", "gap (pts)",
                              "rounds to within 2 pts (clients' mean)", "bytes per round (all clients, both ways)",
                              "one client's upload vs full model", "wall"], pooled), ""]
    lines += ["The global model (pooled column) is what the run directory delivers (FedPer: the shared adapter "
              "with the clients' heads averaged, which under MNIST's label skew is far from any client's own "
              "model); under FedPer each client's own accuracy is with its own head."]
    hurt = [(task, agg, c) for task in ("spam", "mnist") for agg, f in res[task].items() for c in f["clients"]
            if c["verdict"] == "hurt"]
    for task, agg, c in hurt:
        lines += ["", f"Hurt: {task} {agg} client {c['name']} ({c['n_train']} training items): local-only "
                  f"{c['local_accuracy']:.3f} against federated {c['federated_accuracy']:.3f}. "
                  + ("Under FedPer the client keeps its head but takes the shared adapter, which the other clients "
                     "fit to their own label mixes; a client whose local model is already strong on its own "
                     "skewed labels loses by it (FedAvg and FedProx did not hurt this client)."
                     if agg == "fedper" else "Its data differs most from the federation's average model.")]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items-per-group", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--only", choices=("spam", "mnist"))
    ap.add_argument("--no-write", action="store_true")
    a = C.parse_args(ap)
    import flwr

    m = C.machine()
    C.warn_if_busy(m)
    work = Path(tempfile.mkdtemp(prefix="tk-bench-fed-"))
    res: dict = {"flwr": flwr.__version__, "rounds": a.rounds, "local_epochs": a.local_epochs, "lr": a.lr,
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if a.only in (None, "mnist"):
        paths = mnist_clients(work)
        res["mnist_about"] = "efficientnet-lite0 at 64 px, MNIST-5k over 5 clients by Dirichlet(0.3) label skew"
        res["mnist"] = run_task("mnist", paths, a, model="efficientnet-lite0", options={"image_size": 64},
                                reads={"path_column": "path"}, work=work)
    if a.only in (None, "spam"):
        paths = spam_clients(work, a.items_per_group)
        res["spam_about"] = (f"minilm-l6, 3 clients: 2002 = easy-ham-1 + spam-1, 2003 = easy-ham-2 + spam-2, hard = "
                             f"hard-ham-1 + {a.items_per_group // 5} spam-2; {a.items_per_group} ham per client")
        res["spam"] = run_task("spam", paths, a, model="minilm-l6", options={"max_length": 128, "max_chunks": 1},
                               reads={"text_columns": ["subject", "body"]}, work=work)
    if a.only is None:
        spam_gap = {agg: 100 * (f["pooled_test"]["accuracy"] - f["centralised_accuracy"])
                    for agg, f in res["spam"].items()}
        worse = [f"{agg}/{c['name']}" for task in ("spam", "mnist") for agg, f in res[task].items()
                 for c in f["clients"] if c["verdict"] == "hurt"]
        share = max(f["share_of_full_model"] for task in ("spam", "mnist") for f in res[task].values())
        res["summary"] = [
            C.one_goal("Federated (adapter + head) within 2 points of centralised, spam clients", "within 2 points",
                       [(agg, f"{g:+.1f} pts", g >= -2.0) for agg, g in spam_gap.items()], NAME),
            {"item": "Every client at least as good as its local-only model", "goal": "no 'hurt' verdict",
             "measured": ("hurt: " + ", ".join(worse)) if worse else "no client hurt (spam and MNIST, 3 aggregations)",
             "met": not worse, "anchor": NAME},
            {"item": "Bytes per round vs full model", "goal": "under 2% of the full model",
             "measured": f"at most {100 * share:.3f}% per client upload", "met": share < 0.02, "anchor": NAME}]
        C.publish(NAME, res, section(res, m), a.no_write)
    else:
        C.say(json.dumps({k: v for k, v in res.items() if k in ("spam", "mnist")}, default=str)[:4000])


if __name__ == "__main__":
    main()
