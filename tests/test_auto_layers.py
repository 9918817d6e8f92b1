"""``--model auto`` ranks every candidate named without a layer at its last and at an inner layer."""
from __future__ import annotations

import json
import shutil

import pytest

import transferkit as tk
from transferkit.auto import _DEFAULTS, INNER_LAYER_AT, default_candidates, inner_layer, last_layer, with_inner_layers
from transferkit.data import Dataset
from transferkit.errors import MissingDependencyError, UserInputError

from conftest import toy_texts


def _toy(n=8):
    texts, labels = toy_texts(n)
    return Dataset(modality="text", inputs=texts, labels=labels)


@pytest.fixture(scope="module")
def one_layer_dir(tiny_text_dir, tmp_path_factory):
    """The tiny BERT's tokenizer with a single-layer model: no layer between embeddings and last."""
    import torch
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("one-layer-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=64)).save_pretrained(d)
    for f in tiny_text_dir.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(f, d / f.name)
    return d


def test_inner_layer_is_three_quarters_of_the_depth():
    assert INNER_LAYER_AT == (3, 4)
    assert [inner_layer(n) for n in (None, 1, 2, 4, 6, 8, 12)] == [None, None, 1, 3, 4, 6, 9]


def test_a_candidate_without_a_layer_is_ranked_at_two_layers(tiny_text_dir, tmp_path):
    d = str(tiny_text_dir)
    out = tmp_path / "run"
    model = tk.fit(train=_toy(), model="auto", candidates=[d], out=str(out), control=False, log=None)
    auto = model.metrics["auto"]
    assert auto["layers_added"] == [f"{d}@1"]
    rows = {r["candidate"]: r for r in auto["ranking"]}
    assert set(rows) == {d, f"{d}@1"} and rows[d]["layer"] is None and rows[f"{d}@1"]["layer"] == 1
    ranked = json.loads((out / "rank" / "rank.json").read_text())["rows"]
    assert sorted(r["candidate"] for r in ranked) == sorted(rows)
    # the reasons name the layer of the winner, and which layers were added and why
    best = auto["ranking"][0]
    named = "the last layer, 2 of 0-2" if best["layer"] is None else "layer 1 of 0-2"
    assert auto["reasons"][0].startswith(f"{best['candidate']} ({named}): the highest leave-one-out")
    assert f"added {d}@1 (last layer 2)" in auto["reasons"][1]
    assert auto["reasons"][1].endswith(f"Chosen: {d}, {named}.")
    assert "efficientnet-lite0@6" in auto["reasons"][1]  # the study's picks, read from studies.json
    assert model.card["backbone"]["identity"]["layer"] == best["layer"]
    # the strategy rule still reads the chosen layer (an inner layer keeps the probe)
    assert model.metrics["run"]["strategy"] == "linear-probe"


def test_an_explicit_layer_is_kept_as_given(tiny_text_dir, monkeypatch):
    from transferkit import auto
    from transferkit.ranking import names_layer

    assert all(names_layer(c) for c in ("m@3", "m@LAST", "random:m@-1", " m@0 ", {"model": "m", "layer": None}))
    assert not any(names_layer(c) for c in ("m", "random:m", "models/x@v2", {"model": "m"}))

    d = str(tiny_text_dir)
    for given in ([f"{d}@0"], [f"{d}@last"], [f"{d}@1", f"{d}@0"], [{"model": d, "layer": None}]):
        got = with_inner_layers(given)
        assert got.candidates == given and got.added == [] and got.single == []
    # nothing named with a layer: the models' depth is never looked up
    monkeypatch.setattr(auto, "last_layer", lambda *a, **k: pytest.fail("looked up a depth"))
    assert with_inner_layers([f"{d}@0", f"{d}@last"]).depth == {}


def test_an_inner_layer_already_given_is_not_added_twice(tiny_text_dir):
    d = str(tiny_text_dir)
    for given in ([d, f"{d}@1"], [f"{d}@1", d], [d, f"{d}@-2"]):  # -2 of hidden states 0..2 is layer 1
        got = with_inner_layers(given)
        assert got.candidates == given and got.added == []
    # -1 is the last layer: the inner one is still added
    assert with_inner_layers([d, f"{d}@-1"]).added == [f"{d}@1"]
    got = with_inner_layers([{"model": d, "label": "tiny"}])
    assert got.candidates == [{"model": d, "label": "tiny"}, {"model": d, "label": "tiny@1", "layer": 1}]
    assert got.added == ["tiny@1"]


def test_a_model_without_inner_layers_is_ranked_once_and_said(one_layer_dir, tiny_text_dir):
    single, d = str(one_layer_dir), str(tiny_text_dir)
    got = with_inner_layers([single, d])
    assert got.candidates == [single, d, f"{d}@1"] and got.single == [single]
    model = tk.fit(train=_toy(), model="auto", candidates=[single], control=False, log=None)
    auto = model.metrics["auto"]
    assert [r["candidate"] for r in auto["ranking"]] == [single] and auto["layers_added"] == []
    assert f"Ranked at the last layer only (no inner layer between the first and the last could be told): " \
           f"{single}." in auto["reasons"][1]
    assert auto["reasons"][0].startswith(f"{single} (the last layer, 1 of 0-1)")


def test_image_backbones_count_their_layers(tiny_image_dir):
    assert last_layer(str(tiny_image_dir)) == 2
    assert with_inner_layers([str(tiny_image_dir)]).added == [f"{tiny_image_dir}@1"]


def test_the_zoo_defaults_get_the_studied_inner_layers():
    # The rule lands where the transferability study found the best inner layers: MiniLM's 4 of 6,
    # EfficientNet-Lite's 6 of 8 (stem, 7 stages, head convolution).
    for name, last, inner in (("minilm-l6", 6, 4), ("efficientnet-lite0", 8, 6), ("efficientnet-lite1", 8, 6)):
        try:
            assert last_layer(name) == last
        except MissingDependencyError:
            continue
        assert inner_layer(last) == inner
    assert all("@" not in c for cands in _DEFAULTS.values() for c in cands)
    try:
        text = default_candidates("text")
    except UserInputError:
        pytest.skip("no text zoo model installed")
    assert with_inner_layers(text).candidates == ["minilm-l6", "minilm-l6@4"]
