"""Federated transfer learning on Flower: the trainable part, the server's checks, and real
Flower server and client processes over loopback (a tiny random BERT, toy texts)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("flwr", reason="flwr (the `federated` extra) needs Python 3.11+")
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from transferkit.cli import main
from transferkit.errors import UserInputError
from transferkit.federated.head import AdaptedHead, check_update, fold, initial_arrays, nbytes, shapes, train_local
from transferkit.federated.server import CheckedFedAvg, Plan, load_state, run_server

from conftest import toy_texts

SHA = "ab" * 32


def _arrays(seed: int, C: int = 2, D: int = 6, r: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes(C, D, r).items()}


def test_adapter_and_head_fold_into_one_linear_head():
    arrays = _arrays(0)
    X = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    W, b = fold(arrays)
    with torch.no_grad():
        logits = AdaptedHead(arrays)(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(logits, X @ W.T + b, rtol=1e-5, atol=1e-5)
    assert fold({k: v for k, v in arrays.items() if k.startswith("head")})[0].shape == (2, 6)


def test_initial_adapter_is_the_identity_so_clients_start_from_a_plain_head():
    arrays = initial_arrays(3, 6, 2, seed=0)
    W, _ = fold({**arrays, "head.weight": np.ones((3, 6), np.float32)})
    np.testing.assert_array_equal(W, np.ones((3, 6), np.float32))


def test_updates_with_nan_wrong_shape_or_count_are_rejected():
    names, expected = list(shapes(2, 6, 3)), shapes(2, 6, 3)
    good = [_arrays(0)[n] for n in names]
    assert check_update(names, good, expected) is None
    nan = [a.copy() for a in good]
    nan[2][0, 0] = np.nan
    assert "NaN" in check_update(names, nan, expected)
    assert "shape" in check_update(names, [good[0].T, *good[1:]], expected)
    assert "expected" in check_update(names, good[:2], expected)


def test_fedprox_term_keeps_the_client_closer_to_the_global_model():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    start = initial_arrays(2, 6, 2, seed=0)
    drift = {}
    for mu in (0.0, 10.0):
        net = AdaptedHead(start)
        train_local(net, X, y, epochs=5, lr=0.05, batch_size=8, seed=0, mu=mu)
        drift[mu] = sum(float(np.sum((v - start[k]) ** 2)) for k, v in net.arrays().items())
    assert drift[10.0] < drift[0.0]


def _res(arrays: list[np.ndarray], n: int, client: str, sha: str = SHA):
    return (SimpleNamespace(cid=client), FitRes(status=Status(Code.OK, ""), parameters=ndarrays_to_parameters(arrays),
                                                num_examples=n, metrics={"client": client, "backbone_sha256": sha}))


def test_server_refuses_another_backbone_rejects_bad_updates_averages_the_rest_and_checkpoints(tmp_path):
    plan = Plan(classes=["a", "b"], dim=6, backbone_sha=SHA, rounds=3, min_clients=2, expect=4, adapter_rank=3)
    names = plan.names(False)
    strategy = CheckedFedAvg(min_fit_clients=2, min_available_clients=2)
    rows: list = []
    strategy._setup(plan, tmp_path, 0, rows)
    one, two = _arrays(1), _arrays(2)
    nan = _arrays(3)
    nan["head.bias"][0] = np.inf
    results = [_res([one[n] for n in names], 10, "a"), _res([two[n] for n in names], 30, "b"),
               _res([one[n] for n in names], 10, "c", sha="cd" * 32), _res([nan[n] for n in names], 10, "d")]
    params, _ = strategy.aggregate_fit(1, results, [])
    got = dict(zip(names, parameters_to_ndarrays(params)))
    for n in names:  # weighted by the clients' training items: 10 and 30
        np.testing.assert_allclose(got[n], (10 * one[n] + 30 * two[n]) / 40, rtol=1e-5, atol=1e-6)
    row = rows[0]
    assert row["fitted"] == ["a", "b"] and row["completed"]
    assert [r["client"] for r in row["refused"]] == ["c"] and "backbone" in row["refused"][0]["reason"]
    assert [r["client"] for r in row["rejected"]] == ["d"] and "NaN or inf" in row["rejected"][0]["reason"]
    assert row["bytes_received"] == 4 * nbytes([one[n] for n in names])
    done, saved = load_state(tmp_path)
    assert done == 1 and set(saved) == set(names)
    # round 2: b is gone, and one good update is fewer than min_clients: the model stays
    params, _ = strategy.aggregate_fit(2, [_res([one[n] for n in names], 10, "a")], [RuntimeError("gone")])
    assert params is None and rows[1]["dropped"] == ["b"] and rows[1]["completed"] is False
    assert load_state(tmp_path)[0] == 1  # the checkpoint is still round 1's


def test_a_finished_server_resumes_to_its_record_without_serving_again(tmp_path):
    plan = Plan(classes=["a", "b"], dim=6, backbone_sha=SHA, rounds=1, min_clients=2, expect=2, adapter_rank=0)
    strategy = CheckedFedAvg(min_fit_clients=2, min_available_clients=2)
    strategy._setup(plan, tmp_path, 0, [])
    arrays = _arrays(1, r=0)
    names = plan.names(True)
    strategy.aggregate_fit(1, [_res([arrays[n] for n in names], 5, "a"), _res([arrays[n] for n in names], 5, "b")],
                           [])
    result = run_server(plan, tmp_path, address="127.0.0.1:1", resume=True)  # nothing left: no server starts
    assert result["rounds"] == 1 and result["bytes_per_round"] > 0
    assert json.loads((tmp_path / "federated.json").read_text())["rounds"] == 1


def _client_files(tmp_path: Path, n: int) -> list[str]:
    paths = []
    for i in range(n):
        texts, labels = toy_texts(10, seed=i)
        p = tmp_path / f"{'abc'[i]}.jsonl"
        p.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)))
        paths.append(str(p))
    return paths


def test_federate_on_one_machine_writes_an_ordinary_run_with_per_client_results(tmp_path, tiny_text_dir, capsys):
    """Real Flower server and 2 client processes over loopback, FedAvg, 2 rounds, through the CLI."""
    import transferkit as tk

    out = tmp_path / "fed"
    rc = main(["federate", "--clients", ",".join(_client_files(tmp_path, 2)), "--model", str(tiny_text_dir),
               "--rounds", "2", "--adapter-rank", "2", "--lr", "0.05", "--out", str(out)])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    fed = m["federated"]
    assert fed["rounds"] == 2 and fed["aggregation"] == "fedavg"
    assert [c["name"] for c in fed["clients"]] == ["a", "b"]
    arrays = nbytes(list(initial_arrays(2, 32, 2, 0).values()))
    assert fed["bytes_per_round"] == 2 * 2 * arrays  # all arrays, to and from both clients
    for c in fed["clients"]:
        assert c["n_train"] == 15 and 0 <= c["federated_accuracy"] <= 1 and 0 <= c["local_accuracy"] <= 1
        assert c["verdict"] in ("helped", "hurt", "no-difference")
    assert 0 <= fed["centralised_accuracy"] <= 1
    assert all(set(r["accuracy"]) == {"a", "b"} for r in fed["round_log"])
    assert "Federated transfer" in (out / "federated.html").read_text()
    model = tk.load(out)  # an ordinary run: the folded head as a linear probe
    assert model.strategy.name == "linear-probe" and len(model.predict(["free cash prize offer"])) == 1


def test_a_client_killed_mid_round_does_not_stop_the_run(tmp_path, tiny_text_dir):
    """FedPer with 3 clients and min-clients 2; client c's process exits in the middle of round 2."""
    from transferkit.federated.run import federate

    out = tmp_path / "fed"
    fed = federate(_client_files(tmp_path, 3), model=str(tiny_text_dir), out=str(out), aggregation="fedper",
                   rounds=2, min_clients=2, adapter_rank=2, lr=0.05, crash={"c": 2}, log=None)
    assert fed["rounds"] == 2
    last = fed["round_log"][-1]
    assert last["completed"] and last["dropped"] == ["c"] and sorted(last["fitted"]) == ["a", "b"]
    by = {c["name"]: c for c in fed["clients"]}
    assert by["c"]["verdict"] == "dropped" and by["a"]["verdict"] != "dropped"
    assert fed["shared_arrays"] == ["adapter.A", "adapter.B"]  # FedPer: heads stay on the clients
    assert (out / "model_card.json").is_file()


def test_client_side_dp_clips_the_update_adds_noise_and_reports_the_epsilon_spent():
    from transferkit.federated.client import private

    received = [np.zeros((3, 4), np.float32), np.zeros(3, np.float32)]
    sent = [np.full((3, 4), 5.0, np.float32), np.full(3, 5.0, np.float32)]
    config = {"dp_clip": 1.0, "dp_epsilon": 1e6, "dp_delta": 1e-5}  # noise sd ~5e-6: the clipping shows
    out = private(sent, received, config)
    norm = float(np.sqrt(sum(np.sum((o - r) ** 2) for o, r in zip(out, received))))
    assert norm == pytest.approx(1.0, abs=1e-3)
    noisy = private(sent, received, {**config, "dp_epsilon": 1.0})  # sd ~4.8 per value
    assert float(np.std(noisy[0] - out[0])) > 1.0
    plan = Plan(classes=["a", "b"], dim=4, backbone_sha=SHA, dp_clip=1.0, dp_epsilon=0.5, dp_delta=1e-6)
    assert plan.privacy(4)["epsilon_total"] == 2.0 and plan.config(1)["dp_clip"] == 1.0
    with pytest.raises(UserInputError, match="fedper"):
        Plan(classes=["a", "b"], dim=4, backbone_sha=SHA, aggregation="fedper", dp_clip=1.0)


@pytest.mark.parametrize("argv, says", [
    (["federate", "--model", "m", "--out", "o"], "--clients"),
    (["federate", "server", "--model", "m", "--out", "o"], "--classes"),
    (["federate", "client", "--model", "m", "--data", "d.jsonl"], "--server"),
    (["federate", "--clients", "a.jsonl,b.jsonl", "--model", "m", "--out", "o", "--crash-in-round", "c"],
     "NAME=ROUND"),
])
def test_federate_says_what_is_missing_without_a_stack_trace(argv, says, capsys):
    assert main(argv) == 2
    assert says in capsys.readouterr().err


def test_one_client_is_not_a_federation(tmp_path, capsys):
    assert main(["federate", "--clients", _client_files(tmp_path, 1)[0], "--model", "m", "--out", "o"]) == 2
    assert "at least 2 clients" in capsys.readouterr().err
