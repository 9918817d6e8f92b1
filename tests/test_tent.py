"""``tent`` (Wang et al. 2021) and ``predict``/``serve --tent``: entropy minimisation on the
normalisation layers' affine parameters, on tiny random backbones (a CNN with BatchNorm, a
2-layer BERT with LayerNorm)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from test_adabn_backbone import images, tiny_cnn

import transferkit as tk
from transferkit.backbones import get_backbone
from transferkit.data import Dataset
from transferkit.errors import UserInputError
from transferkit.model import TransferModel
from transferkit.predict import predict_files
from transferkit.strategies import get_strategy
from transferkit.strategies._network import norm_parameters
from transferkit.strategies.tent import entropy_of

from conftest import toy_texts

WEAK = {"Cs": [1e-3], "cv": 2}  # a soft head: its target predictions have entropy to lose
FAST = {"lr": 0.05, "epochs": 3, "batch_size": 8}


def fit_tent(backbone, train: Dataset, target: Dataset | None, **params):
    s = get_strategy("tent", {**WEAK, **FAST, **params})
    model = TransferModel(backbone, s)
    model.ctx.target = target
    s.fit(train, model.ctx)
    return s, model


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def texts(n: int, seed: int) -> Dataset:
    x, y = toy_texts(n, seed)
    return Dataset(modality="text", inputs=x, labels=y)


def shouted(ds: Dataset) -> Dataset:
    """The text domain shift: capitals and an appended signature."""
    return Dataset(modality="text", inputs=[t.upper() + " -- SENT FROM MY PHONE" for t in ds.inputs], labels=ds.labels)


@pytest.mark.parametrize("kind,statistics", [("batchnorm-cnn", "source"), ("batchnorm-cnn", "target"),
                                             ("layernorm-text", "source")])
def test_target_entropy_falls_and_only_normalisation_affine_parameters_change(kind, statistics, tiny_text_dir):
    if kind == "batchnorm-cnn":
        backbone, train, target = tiny_cnn(), images(6, 0), images(5, 1, invert=True)
    else:
        backbone, train, target = get_backbone(str(tiny_text_dir)), texts(8, 0), shouted(texts(6, 1))
    module = backbone.module
    before = {k: v.clone() for k, v in module.state_dict().items()}
    flags = [p.requires_grad for p in module.parameters()]
    norms = {n for n, _ in norm_parameters(module)}
    s, model = fit_tent(backbone, train, target, statistics=statistics)
    info = s.fit_info()
    assert info["adapted"] and info["target_entropy_after"] < info["target_entropy_before"]
    assert entropy_of(s.predict_proba(target, model.ctx)) == pytest.approx(info["target_entropy_after"], rel=1e-4)
    moved = changed(before, module)
    trained = {k for k in moved if k.endswith(("weight", "bias"))}
    assert trained and trained <= norms  # no convolution, attention or embedding weight moved
    stats = moved - trained  # BatchNorm's running statistics: re-estimated (statistics=target) or kept
    assert all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in stats)
    assert bool(stats) == (statistics == "target")
    assert set(s.state_tensors()) - {"head.weight", "head.bias"} == {f"backbone.{k}" for k in s.tuned_names_}
    assert moved <= set(s.tuned_names_)
    assert [p.requires_grad for p in module.parameters()] == flags  # the caller's flags are put back


def test_save_and_load_reproduce_the_adapted_predictions():
    target = images(5, 1, invert=True)
    s, model = fit_tent(tiny_cnn(), images(6, 0), target)
    fresh = tiny_cnn()
    pristine = fresh.cache_key()
    again = get_strategy("tent", s.get_params()).load_state(s.state_tensors(), s.classes_, fresh)
    np.testing.assert_allclose(again.predict_proba(target, TransferModel(fresh, again).ctx),
                               s.predict_proba(target, model.ctx), atol=1e-6)
    assert fresh.cache_key() == model.backbone.cache_key() != pristine  # adapted features are cached apart
    with pytest.raises(UserInputError, match="do not fit"):
        get_strategy("tent").load_state({**s.state_tensors(), "backbone.nowhere.weight": torch.ones(3)},
                                        s.classes_, tiny_cnn())


def test_without_target_data_it_is_the_plain_probe_and_source_only_is_the_probe():
    train = images(6, 0)
    s, model = fit_tent(tiny_cnn(), train, None)
    probe = s.source_only()
    assert probe.name == "linear-probe" and not s.fit_info()["adapted"]
    assert set(s.state_tensors()) == {"head.weight", "head.bias"}
    assert any("plain linear probe" in n for n in model.ctx.notes)
    probe.fit(train, TransferModel(tiny_cnn(), probe).ctx)
    np.testing.assert_allclose(probe.head_weight_, s.head_weight_)


def test_other_tasks_are_refused_with_the_strategies_that_handle_them():
    ds = Dataset(modality="image", inputs=images(3, 0).inputs, labels=[float(i) for i in range(6)],
                 task="regression")
    s = get_strategy("tent")
    with pytest.raises(UserInputError, match="strategy 'tent' handles classification; for regression use"):
        s.fit(ds, TransferModel(tiny_cnn(), s).ctx)


def test_fit_with_target_unlabelled_writes_a_run_that_reloads_with_its_adapted_model(tiny_text_dir, tmp_path):
    import json

    from transferkit.cli import main

    src, tgt = texts(10, 0), shouted(texts(8, 1))
    write_texts(tmp_path / "tgt.csv", tgt.inputs)
    with open(tmp_path / "src.csv", "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *zip(src.inputs, src.labels)])
    out = tmp_path / "run"
    assert main(["fit", "--data", str(tmp_path / "src.csv"), "--target-unlabelled", str(tmp_path / "tgt.csv"),
                 "--model", str(tiny_text_dir), "--strategy", "tent", "--param", "lr=0.05", "--param", "epochs=2",
                 "--out", str(out), "--no-control"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["run"]["strategy"] == "tent" and m["n_target_unlabelled"] == 16
    assert {"accuracy"} <= set(m["domain"]["source_only"])  # the source-only probe is reported beside it
    again = tk.load(out, cache=False)
    assert again.strategy.tuned_names_ and all("LayerNorm" in k for k in again.strategy.tuned_names_)
    assert again.backbone.cache_key() != get_backbone(str(tiny_text_dir)).cache_key()


# ----------------------------------------------------------------------------- use time: predict / serve
@pytest.fixture(scope="module")
def text_run(tiny_text_dir, tmp_path_factory):
    x, y = toy_texts(20)
    out = tmp_path_factory.mktemp("tent-text") / "run"
    tk.fit(train=tk.Dataset(modality="text", inputs=x, labels=y), model=str(tiny_text_dir), out=str(out),
           control=False, log=None, strategy_params={"Cs": [1e-3]})
    return out


def write_texts(path, items: list[str]):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        w.writerows([t] for t in items)
    return path


def test_predict_tent_changes_predictions_and_leaves_the_run_untouched(text_run, tmp_path):
    table = write_texts(tmp_path / "new.csv", shouted(texts(6, 3)).inputs)
    files = sorted(p for p in text_run.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    plain = predict_files(text_run, [str(table)])
    model = tk.load(text_run, cache=False)
    adapted = predict_files(text_run, [str(table)], model=model, tent={"lr": 0.05, "epochs": 3, "batch_size": 4})
    p0 = np.array([[r["p(ham)"], r["p(spam)"]] for r in plain])
    p1 = np.array([[r["p(ham)"], r["p(spam)"]] for r in adapted])
    assert not np.allclose(p0, p1, atol=1e-4) and entropy_of(p1) < entropy_of(p0)
    # the model in memory is put back (episodic), and nothing on disk changed
    np.testing.assert_allclose(model.predict_proba(shouted(texts(6, 3)).inputs), p0, atol=1e-5)
    assert {p: p.read_bytes() for p in sorted(p for p in text_run.rglob("*") if p.is_file())} == before


def test_the_command_line_predicts_with_tent(text_run, tmp_path):
    from transferkit.cli import main

    table = write_texts(tmp_path / "new.csv", shouted(texts(3, 4)).inputs)
    assert main(["predict", str(text_run), str(table), "--tent", "--out", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 6 and {r["prediction"] for r in rows} <= {"ham", "spam"}


def test_predict_tent_refuses_runs_that_do_not_qualify(tmp_path, text_run, tiny_text_dir):
    table = [str(write_texts(tmp_path / "a.csv", ["free cash now", "meeting at noon"]))]
    model = tk.load(text_run, cache=False)
    model.strategy.task_ = "regression"  # a run of another task
    with pytest.raises(UserInputError, match="--tent minimises the entropy of class probabilities"):
        predict_files(text_run, table, model=model, tent=True)
    model = tk.load(text_run, cache=False)
    with pytest.raises(UserInputError, match="lr"):
        predict_files(text_run, table, model=model, tent={"lr": 5})
    # a model that is not a head on the backbone's features: the classical (TF-IDF) model
    classical = get_strategy("classical")
    classical.fit(texts(8, 0), TransferModel(get_backbone(str(tiny_text_dir)), classical).ctx)
    model.strategy = classical
    with pytest.raises(UserInputError, match="not one"):
        predict_files(text_run, table, model=model, tent=True)


def test_serve_tent_adapts_per_request_and_says_so(text_run):
    pytest.importorskip("fastapi")
    from test_serve import Served

    from transferkit.serve.predictor import Predictor

    items = shouted(texts(4, 5)).inputs
    plain = tk.load(text_run, cache=False).predict_proba(items)
    with Served(text_run, predictor=Predictor(text_run, tent=True)) as c:
        meta = c.get("/metadata").json()
        described = c.get("/openapi.json").json()["info"]["description"]
        first = c.post("/predict", json={"texts": items})
        second = c.post("/predict", json={"texts": items})
    assert "per request" in meta["test_time_adaptation"]["episodic"]
    assert "Test-time adaptation is on: TENT" in described
    assert first.status_code == 200, first.text
    got = np.array([[p["probabilities"][k] for k in ("ham", "spam")] for p in first.json()["predictions"]])
    assert not np.allclose(got, plain, atol=1e-4)
    assert first.json() == second.json()  # episodic: the first request left the model as it was
