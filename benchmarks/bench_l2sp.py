"""Does L2-SP's pull earn its place?  finetune vs l2sp on two small-data tasks, with the drift.

Tasks: SpamAssassin spam vs ham at 8 labelled e-mails per class (minilm-l6, first 128 tokens) and
MNIST-5k at 10 digits per class (efficientnet-lite0 at 96 px); each tested on ``--test`` other
items of the same set; the default budget (``--epochs`` to set one).  Per task and seed:
``finetune`` with its defaults; ``l2sp`` with ``penalty="loss"`` and the paper's alpha 0.01 (the
form that gave exactly the fine-tuning result); ``l2sp`` with its defaults (the decoupled pull, alpha
chosen on the validation split from ``alpha_grid`` where there is one, else its default alpha);
every candidate of a search is also scored on the test items (instrumentation only: the choice
reads the validation split alone).  Printed and written to ``--out`` (JSON): test accuracy,
``||w - w0||`` over the trained backbone and the same relative to ``||w0||``, fit seconds.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_l2sp.py --seeds 2`` (a few minutes per seed).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

C.setup_env()
import numpy as np  # noqa: E402


def tasks(shots: dict[str, int], n_test: int, seed: int) -> dict:
    from transferkit.data import from_arrays

    rows = C.load_spam()
    labels = [r["label"] for r in rows]
    rng = np.random.default_rng(seed)
    train = [i for c in ("ham", "spam") for i in rng.permutation([k for k, y in enumerate(labels) if y == c])[
        :shots["spam"]]]
    rest = [i for i in C.stratified_indices(labels, n_test + len(train), seed=100 + seed) if i not in set(train)]
    out = {"spam": (C.spam_dataset(rows, train), C.spam_dataset(rows, rest[:n_test]), "minilm-l6",
                    {"max_length": 128, "max_chunks": 1})}
    images, digits = C.load_mnist()
    train = [int(i) for d in range(10) for i in rng.permutation(np.flatnonzero(digits == d))[:shots["mnist"]]]
    rest = [i for i in C.stratified_indices(digits, n_test + len(train), seed=100 + seed) if i not in set(train)]
    ds = [from_arrays(images[ix], [str(digits[i]) for i in ix], modality="image") for ix in (train, rest[:n_test])]
    out["mnist-5k"] = (*ds, "efficientnet-lite0", {"image_size": 96})
    return out


def accuracy(strategy, data, ctx) -> float:
    # the outputs as fitted so far: during the search the strategy is not yet marked fitted
    proba = strategy._predict_outputs(data, ctx)
    return float(np.mean(np.array(strategy.classes_)[proba.argmax(1)] == np.array(data.labels)))


def run(train, test, model: str, opts: dict, name: str, params: dict, seed: int) -> dict:
    from transferkit.backbones import get_backbone
    from transferkit.model import TransferModel
    from transferkit.strategies import get_strategy
    from transferkit.strategies.l2sp import L2SPFineTune

    s = get_strategy(name, params)
    m = TransferModel(get_backbone(model, **opts), s)
    m.ctx.seed, m.ctx.progress = seed, False
    per_candidate = []
    real = L2SPFineTune._one_run

    def scored(self, *a, **kw):  # each candidate of the search, also on the test items (report only)
        real(self, *a, **kw)
        per_candidate.append({"alpha": self._alpha_run, "test_accuracy": accuracy(self, test, m.ctx),
                              "drift": self.info_["l2sp_distance"], "relative_drift": self.info_["relative_drift"]})

    L2SPFineTune._one_run = scored
    try:
        t = time.perf_counter()
        s.fit(train, m.ctx)
        fit_s = time.perf_counter() - t
    finally:
        L2SPFineTune._one_run = real
    info = s.fit_info()
    out = {"strategy": name, "params": params, "seed": seed, "test_accuracy": accuracy(s, test, m.ctx),
           "fit_s": round(fit_s, 1), "steps": info["steps"], "n_val": info["n_val"]}
    if name == "finetune":  # its drift, measured the same way: the trained tensors against the loaded ones
        fresh = get_backbone(model, **opts).module.state_dict()
        own = s.backbone_.module.state_dict()
        names = [n for n, _ in s.backbone_.module.named_parameters() if n in set(s.trained_names_)]
        d2 = sum(float(((own[n].float() - fresh[n].float()) ** 2).sum()) for n in names)
        w2 = sum(float((fresh[n].float() ** 2).sum()) for n in names)
        out.update(drift=d2 ** 0.5, relative_drift=(d2 / w2) ** 0.5)
    else:
        out.update({k: info.get(k) for k in ("alpha", "alpha_chosen_by", "alpha_search", "l2sp_distance",
                                             "relative_drift")}, candidates=per_candidate)
        out["drift"] = out.pop("l2sp_distance")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--test", type=int, default=500, help="test items per task")
    ap.add_argument("--epochs", type=int, default=0, help="0: the defaults' budget (min_steps)")
    ap.add_argument("--max-length", type=int, default=128, help="tokens per e-mail")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--only", help="spam or mnist-5k")
    ap.add_argument("--out", default="/tmp/bench_l2sp.json")
    a = C.parse_args(ap)
    results = []
    for seed in range(a.seeds):
        for task, (train, test, model, opts) in tasks({"spam": 8, "mnist": 10}, a.test, seed).items():
            if a.only and task != a.only:
                continue
            for name, params in (("finetune", {}), ("l2sp", {"penalty": "loss"}), ("l2sp", {})):
                opts = dict(opts, **({"max_length": a.max_length} if task == "spam" else {"image_size": a.image_size}))
                r = run(train, test, model, opts, name, dict(params, **({"epochs": a.epochs} if a.epochs else {})),
                        seed)
                r["task"] = task
                results.append(r)
                print(json.dumps(r), flush=True)
                Path(a.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
