"""A second identical fit reads back what the first computed: no tokenizer is built, no model
weights are loaded and the classical control is not refitted (issue 25, the lean cached path)."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from transferkit import _fit_cache, classical
from transferkit.backbones import get_backbone
from transferkit.data import Dataset

from conftest import toy_texts, write_toy_mail


def _count(monkeypatch, counts: Counter, owner, name: str) -> None:
    real = getattr(owner, name)

    def counted(*a, **kw):
        counts[f"{owner.__name__.rsplit('.', 1)[-1]}.{name}"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(owner, name, counted)


def test_second_fit_builds_no_tokenizer_loads_no_model_and_refits_no_control(tiny_text_dir, tmp_path, monkeypatch):
    import transformers

    from transferkit.cli import main

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    counts: Counter = Counter()
    for owner, name in ((transformers.AutoTokenizer, "from_pretrained"), (transformers.AutoModel, "from_pretrained"),
                        (transformers.AutoModel, "from_config"), (classical, "_fit_handmade_model")):
        _count(monkeypatch, counts, owner, name)
    data = write_toy_mail(tmp_path / "mail.csv", n_per_class=20)
    runs = []
    for k in (1, 2):
        out = tmp_path / f"run{k}"
        assert main(["fit", "--data", str(data), "--text-column", "subject,body", "--model", str(tiny_text_dir),
                     "--seed", "0", "--out", str(out)]) == 0
        runs.append((dict(counts), json.loads((out / "metrics.json").read_text())))
        counts.clear()
    first, second = runs[0][0], runs[1][0]
    # the first fit builds the tokenizer, loads the weights, initialises the random-init control's
    # model and fits the classical model; the second does none of it
    assert first["AutoTokenizer.from_pretrained"] >= 1 and first["AutoModel.from_pretrained"] >= 1
    assert first["AutoModel.from_config"] >= 1 and first["classical._fit_handmade_model"] >= 1
    assert second == {}
    m1, m2 = runs[0][1], runs[1][1]
    assert m2["test"]["accuracy"] == m1["test"]["accuracy"]
    for name, control in m1["controls"].items():
        assert m2["controls"][name]["accuracy"] == control["accuracy"]
    assert m2["controls"]["tfidf-logreg"]["features"] == m1["controls"]["tfidf-logreg"]["features"]


def test_cached_classical_model_predicts_what_the_fitted_one_did_and_changes_with_its_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    texts, labels = toy_texts(15)
    train = Dataset(modality="text", inputs=texts, labels=labels)
    y = np.array([int(lab == "spam") for lab in labels])
    test = Dataset(modality="text", inputs=["free cash prize now", "project budget review"])
    fitted = classical.fit_handmade_model("classification", train, y, 0)
    counts: Counter = Counter()
    _count(monkeypatch, counts, classical, "_fit_handmade_model")
    again = classical.fit_handmade_model("classification", train, y, 0)
    assert counts["classical._fit_handmade_model"] == 0
    np.testing.assert_array_equal(again.outputs(test), fitted.outputs(test))
    assert again.info["features"] == fitted.info["features"] and again.info["vocabulary"] == fitted.info["vocabulary"]
    assert again.info["feature_selection"]["scores"] == pytest.approx(fitted.info["feature_selection"]["scores"])
    # another seed, other targets or other items: another key, fitted anew
    classical.fit_handmade_model("classification", train, y, 1)
    classical.fit_handmade_model("classification", train, 1 - y, 0)
    classical.fit_handmade_model("classification", train.subset(list(range(1, len(train)))), y[1:], 0)
    assert counts["classical._fit_handmade_model"] == 3


def test_a_damaged_fit_cache_entry_is_a_miss_and_is_rewritten(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    assert _fit_cache.store_fit("demo", "k1", {"w": torch.arange(3.0)}, {"C": 10.0, "scores": [0.5, 0.7]})
    tensors, info = _fit_cache.load_fit("demo", "k1")
    assert torch.equal(tensors["w"], torch.arange(3.0)) and info == {"C": 10.0, "scores": [0.5, 0.7]}
    path = tmp_path / "cache" / "fits" / "demo" / "k1.safetensors"
    path.write_bytes(path.read_bytes()[:-7])  # truncated
    assert _fit_cache.load_fit("demo", "k1") is None and not path.exists()
    assert _fit_cache.load_fit("demo", "absent") is None


def test_tokenizer_facts_are_memoised_and_match_the_tokenizer(tiny_text_dir, tmp_path, monkeypatch):
    import transformers

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    b = get_backbone(str(tiny_text_dir))
    key, specials = b.cache_key(), b.special_tokens()
    tok = b.tokenizer
    assert b.preprocessing()["tokenizer"] == type(tok).__name__
    assert b.preprocessing()["lowercase"] == bool(getattr(tok, "do_lower_case", False))
    counts: Counter = Counter()
    _count(monkeypatch, counts, transformers.AutoTokenizer, "from_pretrained")
    fresh = get_backbone(str(tiny_text_dir))  # as in a new process
    assert fresh.cache_key() == key and fresh.special_tokens() == specials and fresh.chunk_room() == b.chunk_room()
    assert counts == Counter()
