"""``--model auto``: rank on the training split, choose a model and a strategy, explain it."""
from __future__ import annotations

import json

import pytest

import transferkit as tk
from transferkit.auto import FINETUNE_FROM_PER_CLASS, FINETUNE_STRATEGY, choose_strategy
from transferkit.cli import main
from transferkit.data import Dataset
from transferkit.errors import UserInputError

from conftest import toy_texts


def _toy(n=15):
    texts, labels = toy_texts(n)
    return Dataset(modality="text", inputs=texts, labels=labels)


def test_auto_picks_the_best_ranked_candidate_and_explains(tiny_text_dir, tmp_path):
    cands = [f"{tiny_text_dir}@0", str(tiny_text_dir), f"{tiny_text_dir}@1"]
    out = tmp_path / "run"
    model = tk.fit(train=_toy(8), model="auto", candidates=cands, out=str(out), log=None)
    m = model.metrics
    ranking = m["auto"]["ranking"]
    assert [r["candidate"] for r in ranking] != [] and len(ranking) == 3
    keys = [(r["scores"]["knn"], r["scores"]["logme"]) for r in ranking]
    assert keys == sorted(keys, reverse=True)  # best first: kNN, ties broken by LogME
    assert m["auto"]["score"] == "knn" and "5-NN accuracy" in m["auto"]["reasons"][0]
    best = ranking[0]
    # the run uses exactly the winner: its model and layer
    assert m["run"]["backbone"] == best["model"] == str(tiny_text_dir)
    assert model.card["backbone"]["identity"]["layer"] == best["layer"]
    # 6 training items per class: below the fine-tuning threshold -> a linear probe
    assert m["run"]["strategy"] == "linear-probe" and m["auto"]["strategy_chosen"]
    assert any("linear-probe" in n and "smallest class" in n for n in m["notes"])
    # the test set played no part: ranking saw the training items only
    rank = json.loads((out / "rank" / "rank.json").read_text())
    assert rank["data"]["n_items"] == m["n_train"]
    assert (out / "rank" / "rank.html").is_file()
    html = (out / "report.html").read_text()
    assert "How the model and strategy were chosen" in html and "(chosen)" in html
    # config.json names the resolved choice and re-runs it without ranking again
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["model"] == best["model"] and cfg["strategy"] == "linear-probe" and cfg["candidates"] is None
    again = tk.fit(tk.FitConfig.load(out / "config.json"), train=_toy(8), out=str(tmp_path / "b"), log=None)
    assert "auto" not in again.metrics and again.metrics["test"] == m["test"]


def test_strategy_rule_follows_the_smallest_class(monkeypatch):
    import importlib.util

    k = FINETUNE_FROM_PER_CLASS
    small = Dataset(modality="text", inputs=["x"] * (2 * k - 1), labels=["a"] * k + ["b"] * (k - 1))
    big = Dataset(modality="text", inputs=["x"] * (2 * k), labels=["a"] * k + ["b"] * k)
    assert choose_strategy(small)[0] == "linear-probe"
    name, why = choose_strategy(big)
    assert name == FINETUNE_STRATEGY == "lora" and str(k) in why and "BENCHMARKS.md" in why
    # without PEFT: plain fine-tuning, and the reason says why
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "peft" else real(n, *a))
    name, why = choose_strategy(big)
    assert name == "finetune" and "PEFT is not installed" in why
    # an intermediate layer keeps the probe, whatever the size
    name, why = choose_strategy(big, layer=6)
    assert name == "linear-probe" and "intermediate layer" in why


def test_auto_fine_tunes_with_lora_from_the_threshold(tiny_text_dir):
    pytest.importorskip("peft")
    # @last: the last layer only (a name without a layer would also rank an inner one, which keeps the probe)
    model = tk.fit(train=_toy(15), model="auto", candidates=[f"{tiny_text_dir}@last"], control=False, log=None,
                   strategy_params={"epochs": 1, "val_fraction": 0})
    m = model.metrics
    assert m["run"]["strategy"] == "lora" and m["auto"]["strategy_chosen"]
    assert m["n_train"] >= 2 * FINETUNE_FROM_PER_CLASS and 0 <= m["test"]["accuracy"] <= 1


def test_a_named_strategy_is_kept(tiny_text_dir):
    model = tk.fit(train=_toy(), model="auto", candidates=[str(tiny_text_dir)], strategy="linear-probe",
                   control=False, log=None)
    assert not model.metrics["auto"]["strategy_chosen"]
    assert "linear-probe: named by the user." in model.metrics["auto"]["reasons"]


@pytest.mark.parametrize("kw, words", [
    ({"model": "auto", "candidates": ["random:minilm-l6"]}, "randomly initialised"),
    ({"model": "minilm-l6", "candidates": ["minilm-l6"]}, "only used with model='auto'"),
    ({"model": "minilm-l6", "strategy": "auto"}, "needs model 'auto'"),
])
def test_bad_auto_requests_are_refused_clearly(kw, words):
    with pytest.raises(UserInputError, match=words):
        tk.fit(train=_toy(), log=None, **kw)


def test_cli_model_auto(tiny_text_dir, tmp_path, capsys):
    texts, labels = toy_texts(15)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)))
    rc = main(["fit", "--data", str(data), "--text-column", "text", "--model", "auto",
               "--models", f"{tiny_text_dir},{tiny_text_dir}@1", "--out", str(tmp_path / "r"), "--no-control"])
    assert rc == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["auto"]["ranking"][0]["model"] == str(tiny_text_dir)
    rc = main(["fit", "--data", str(data), "--text-column", "text", "--model", "auto",
               "--models", "random:minilm-l6", "--out", str(tmp_path / "r2")])
    assert rc == 2
    assert "randomly initialised" in capsys.readouterr().err


def test_reasons_quote_the_figures_of_studies_json(monkeypatch):
    # The figures in auto's messages come from transferkit/studies.json (written by the benchmarks),
    # not from copies in the code: change a study and the message changes with it.
    import copy
    import importlib.util

    from transferkit import _studies, auto

    k = FINETUNE_FROM_PER_CLASS
    big = Dataset(modality="text", inputs=["x"] * (2 * k), labels=["a"] * k + ["b"] * k)
    inner = _studies.study("inner_layer_finetune")["layers"]["4"]
    assert f"layer 4: {inner['finetune']:.3f} vs {inner['probe']:.3f}" in choose_strategy(big, layer=4)[1]

    data = copy.deepcopy(_studies._load())
    data["inner_layer_finetune"]["layers"] = {"4": {"finetune": 0.123, "probe": 0.987}}
    data["lora_share"]["trainable_share"] = 0.0042
    for v in data["strategies"]["variants"]:
        v["accuracy"] = {"lora": 0.95, "linear-probe": 0.90, "finetune": 0.93, "l2sp": 0.93}
    data["auto_pick"]["variants"] = data["auto_pick"]["variants"][:2]
    data["auto_pick"]["variants"][0]["logme"]["accuracy"] = data["auto_pick"]["variants"][0]["best"]["accuracy"] - 0.2
    monkeypatch.setattr(_studies, "_load", lambda: data)

    assert "layer 4: 0.123 vs 0.987" in choose_strategy(big, layer=4)[1]
    why = choose_strategy(big)[1]
    assert "0.42% of minilm-l6" in why and "LoRA was the best in every variant, 5.0 to 5.0 points above" in why
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "peft" else real(n, *a))
    assert "spam 80/20: -2.0" in choose_strategy(big)[1]
    assert "in all 2 task variants, where the LogME winner lost up to 20.0 points" in auto._pick_evidence()


def test_a_missing_study_fails_loudly(monkeypatch):
    from transferkit import _studies

    k = FINETUNE_FROM_PER_CLASS
    big = Dataset(modality="text", inputs=["x"] * (2 * k), labels=["a"] * k + ["b"] * k)
    monkeypatch.setattr(_studies, "_load", lambda: {})
    with pytest.raises(_studies.MissingStudyError, match="inner_layer_finetune.*studies.json"):
        choose_strategy(big, layer=4)
