"""Model selection on the training data: which model a fit delivers, how it was chosen, and that
predict / load use it while the verdict keeps judging the transfer model."""
from __future__ import annotations

import json

import numpy as np
import pytest

import transferkit as tk
from transferkit.data import Dataset
from transferkit.errors import UserInputError
from transferkit.pipeline import fit
from transferkit.runs.loading import with_head
from transferkit.selection import holdout_score

from conftest import toy_texts


def _toy(n: int = 30, seed: int = 0) -> Dataset:
    texts, labels = toy_texts(n, seed=seed)
    return Dataset(modality="text", inputs=texts, labels=labels)


@pytest.fixture(scope="module")
def probe_run(tiny_text_dir, tmp_path_factory):
    """A default fit (linear probe) of toy mail on a tiny random-init text model: its hand-made
    features carry the signal, the random features little."""
    out = tmp_path_factory.mktemp("sel") / "run"
    model = fit(train=_toy(), test=_toy(10, seed=1), model=str(tiny_text_dir), out=str(out), n_boot=200, log=None)
    return model, out


def test_the_best_scored_candidate_is_delivered_and_loaded(probe_run):
    model, out = probe_run
    m = json.loads((out / "metrics.json").read_text())
    d = m["delivered"]
    assert d["protocol"] == "cv" and [c["name"] for c in d["candidates"]] == ["linear-probe", "hybrid", "classical"]
    assert d["candidates"][0]["transfer"] and not any(c["transfer"] for c in d["candidates"][1:])
    best = max(d["candidates"], key=lambda c: c["score"])
    assert d["name"] == best["name"] and [c["chosen"] for c in d["candidates"]].count(True) == 1
    # the transfer model's keys are unchanged; the delivered one has the same test keys
    assert m["run"]["strategy"] == "linear-probe" and set(d["test"]) >= {"accuracy", "accuracy_ci", "macro_f1"}
    assert "verdict" in m and "transfer_gain" in m
    if d["name"] == "linear-probe":
        pytest.skip("the probe won on this data: nothing else to check")
    # what fit returned, load gives back: the delivered model, with the transfer model beside it
    assert model.strategy.name == d["name"] and model.transfer.strategy.name == "linear-probe"
    card = json.loads((out / "model_card.json").read_text())
    assert card["strategy"]["name"] == "linear-probe" and card["delivered"]["strategy"]["name"] == d["name"]
    assert (out / "delivered.safetensors").is_file() and "delivered_vs_controls" in m
    texts = _toy(10, seed=2).inputs
    loaded = tk.load(out)
    assert loaded.strategy.name == d["name"]
    np.testing.assert_allclose(loaded.predict_proba(texts), model.predict_proba(texts), atol=1e-9)
    transfer = tk.load(out, which="transfer")
    assert transfer.strategy.name == "linear-probe"
    np.testing.assert_allclose(transfer.predict_proba(texts), model.transfer.predict_proba(texts), atol=1e-6)
    # the report says what was delivered and why
    html = (out / "report.html").read_text()
    assert 'id="delivered"' in html and d["name"] in html
    # explanations and export need a head on the backbone's features: the transfer model's, here
    assert d["name"] in ("hybrid", "classical") and with_head(out) == "transfer"
    with pytest.raises(UserInputError, match="no head on backbone features"):
        loaded.strategy.torch_head()


def test_the_classical_control_is_the_classical_candidate_read_not_refitted(probe_run, monkeypatch):
    """The control's outputs equal those of the classical baseline fitted afresh on the same split."""
    from transferkit import controls
    from transferkit.tasks import get_task

    model, out = probe_run
    m = json.loads((out / "metrics.json").read_text())
    train, test = _toy(), _toy(10, seed=1)
    classes = sorted(set(train.labels))
    y = get_task("classification").encode(list(train.labels), classes)
    values, info = controls.tfidf_logreg(train, y, test, 0)
    fresh = get_task("classification").metrics(get_task("classification").encode(list(test.labels), classes),
                                              values, classes, n_boot=200, seed=0)
    read = m["controls"]["tfidf-logreg"]
    assert read["accuracy"] == fresh["accuracy"] and read["log_loss"] == pytest.approx(fresh["log_loss"], abs=1e-12)
    assert read["features"] == info["features"]


def test_no_select_delivers_the_transfer_model(tiny_text_dir, tmp_path):
    out = tmp_path / "run"
    model = fit(train=_toy(), test=_toy(10, seed=1), model=str(tiny_text_dir), out=str(out), n_boot=200,
                select=False, log=None)
    m = json.loads((out / "metrics.json").read_text())
    assert m["delivered"]["name"] == "linear-probe" and "select is off" in m["delivered"]["chosen_by"]
    assert m["delivered"]["test"] == m["test"] and "delivered_vs_controls" not in m
    assert model.strategy.name == "linear-probe" and model.transfer is None
    assert not (out / "delivered.safetensors").exists()
    assert "delivered" not in json.loads((out / "model_card.json").read_text())


def test_a_cheap_strategy_without_cross_validation_is_scored_on_a_held_out_fifth(tiny_text_dir):
    model = fit(train=_toy(), test=_toy(10, seed=1), model=str(tiny_text_dir), strategy="prototype", n_boot=200,
                control=False, log=None)
    d = model.metrics["delivered"]
    assert d["protocol"] == "holdout" and d["n_items"] == 12  # a fifth of 60, stratified
    assert "a stratified fifth" in d["chosen_by"]
    assert all(c["score"] is not None for c in d["candidates"])


def test_fine_tuning_is_scored_on_its_own_validation_items(tiny_text_dir):
    model = fit(train=_toy(80), test=_toy(10, seed=1), model=str(tiny_text_dir), strategy="finetune", n_boot=200,
                control=False, strategy_params={"max_steps": 4, "min_steps": 1}, log=None)
    transfer = model if model.transfer is None else model.transfer
    val = transfer.strategy.validation_items()
    d = model.metrics["delivered"]
    assert val is not None and d["protocol"] == "holdout" and d["n_items"] == len(val)
    assert "the fine-tuning's own validation split" in d["chosen_by"]


def test_a_small_fine_tuning_without_validation_items_is_scored_by_a_second_run(tiny_text_dir):
    """Too few items for a validation split: a clone fine-tuned from the pre-trained weights on four
    fifths scores it, so a fine-tuning that ends below the probe is not delivered unseen."""
    model = fit(train=_toy(25), test=_toy(10, seed=1), model=str(tiny_text_dir), strategy="finetune", n_boot=200,
                control=False, strategy_params={"max_steps": 3, "min_steps": 1}, log=None)
    transfer = model if model.transfer is None else model.transfer
    d = model.metrics["delivered"]
    assert transfer.strategy.validation_items() is None
    assert d["protocol"] == "holdout" and d["n_items"] == 10 and "fine-tuned again" in d["chosen_by"]
    assert all(c["score"] is not None for c in d["candidates"])
    if model.transfer is not None:  # another model won: the run says so
        assert any("is the model delivered" in n for n in model.metrics["notes"])


def test_strategies_that_learn_no_label_or_adapt_to_a_target_are_not_second_guessed(tiny_text_dir, tmp_path):
    target = tmp_path / "target.jsonl"
    target.write_text("".join(json.dumps({"text": t}) + "\n" for t in _toy(10, seed=3).inputs))
    model = fit(train=_toy(), test=_toy(10, seed=1), model=str(tiny_text_dir), strategy="coral", n_boot=200,
                control=False, target_unlabelled=str(target), log=None)
    d = model.metrics["delivered"]
    assert d["name"] == "coral" and d["protocol"] == "none" and "target domain" in d["chosen_by"]


def test_holdout_score_is_a_proper_score_of_each_task():
    y = np.array([0, 1, 1])
    perfect = np.eye(2)[y]
    assert holdout_score("classification", y, perfect) == pytest.approx(0.0, abs=1e-9)
    assert holdout_score("classification", y, np.full((3, 2), 0.5)) == pytest.approx(np.log(0.5))
    t = np.array([1.0, 2.0, 3.0])
    assert holdout_score("regression", t, t) == 1.0 and holdout_score("regression", t, np.full(3, 2.0)) == 0.0
    Y = np.array([[1, 0], [0, 1]])
    assert holdout_score("multi-label", Y, Y.astype(float)) > holdout_score("multi-label", Y, np.full((2, 2), 0.5))
