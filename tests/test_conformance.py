"""One suite over every registered strategy and backbone (scikit-learn's check_estimator idea).

Registering a new strategy or zoo backbone enrols it here automatically.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from transferkit.backbones import BACKBONES, get_backbone
from transferkit.data import Dataset
from transferkit.errors import NotFittedError, UserInputError
from transferkit.model import TransferModel
from transferkit.runs import RunDir, load
from transferkit.strategies import STRATEGIES, get_strategy

from conftest import toy_texts

STRATEGY_NAMES = [e.name for e in STRATEGIES]


def _text_data():
    texts, labels = toy_texts(10)
    ds = Dataset(modality="text", inputs=texts, labels=labels)
    idx = np.random.RandomState(0).permutation(len(ds))
    return ds.subset(idx[:14]), ds.subset(idx[14:])


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_strategy_conformance(name, tiny_text_dir, tmp_path):
    train, test = _text_data()
    backbone = get_backbone(str(tiny_text_dir))
    strategy = get_strategy(name)
    model = TransferModel(backbone, strategy)
    with pytest.raises(NotFittedError):
        strategy.predict_proba(test, model.ctx)
    assert strategy.fit(train, model.ctx) is strategy
    assert strategy.classes_ == ["ham", "spam"]
    proba = strategy.predict_proba(test, model.ctx)
    assert proba.shape == (len(test), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    # params round-trip through JSON and clone
    params = json.loads(json.dumps(strategy.get_params()))
    assert STRATEGIES.get(name).from_params(params).get_params() == strategy.get_params()
    assert not hasattr(strategy.clone(), "classes_")
    # save -> load gives the same predictions
    card = {"backbone": {"name": str(tiny_text_dir), "options": {}, "identity": backbone.identity()},
            "strategy": {"name": name, "params": strategy.get_params()}, "classes": strategy.classes_}
    run = RunDir(tmp_path / "run")
    card["weights"] = run.write_weights(strategy.state_tensors(), strategy=name, classes=strategy.classes_)
    run.write_card(card)
    again = load(run.path, backbone=str(tiny_text_dir))  # a folder outside the run: named by the caller
    np.testing.assert_allclose(again.predict_proba(test), proba, atol=1e-6)
    # same seed -> same result
    other = get_strategy(name)
    other.fit(train, TransferModel(get_backbone(str(tiny_text_dir)), other).ctx)
    np.testing.assert_allclose(other.predict_proba(test, model.ctx), proba, atol=1e-6)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_strategy_rejects_unknown_options(name):
    with pytest.raises(UserInputError, match="has no option"):
        get_strategy(name, {"no_such_option": 1})


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_params_are_declared_typed_and_round_trip(name):
    """Every option is declared once (type, default, help), and get_params -> JSON -> from_params
    gives the same options and the same strategy, unfitted."""
    cls = STRATEGIES.get(name)
    assert cls.description and "\n" not in cls.description
    rows = cls.describe()["params"]
    assert [r["name"] for r in rows] == cls.params_class().names()
    assert all(r["help"] and r["type"] for r in rows)
    params = get_strategy(name).get_params()
    assert set(params) == set(cls.params_class().names())  # every option, defaults included
    assert json.loads(json.dumps(params)) == params  # JSON-shaped: lists, never tuples
    again = cls.from_params(json.loads(json.dumps(params)))
    assert type(again) is cls and again.get_params() == params
    assert again.clone().get_params() == params and repr(again) == repr(cls(**params))
    # the constructor takes the options by keyword, as the tests and benchmarks write them
    first = rows[0]["name"]
    assert cls(**{first: params[first]}).get_params() == params


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_misspelt_option_names_the_closest_one(name):
    option = max(STRATEGIES.get(name).params_class().names(), key=len)
    typo = option[:-1] + ("x" if option[-1] != "x" else "y")
    with pytest.raises(UserInputError, match=f"has no option '{typo}'; did you mean '{option}'\\?"):
        get_strategy(name, {typo: 1})


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_every_option_refuses_a_value_of_the_wrong_type_by_name(name):
    """A JSON object fits no option but augment/labels: the message names the option and the value."""
    for row in STRATEGIES.get(name).describe()["params"]:
        if "dict" in row["type"]:
            continue
        with pytest.raises(UserInputError, match=f"{row['name']} must be .*, got {{'a': 1}}"):
            get_strategy(name, {row["name"]: {"a": 1}})


def _zoo_backbone(name):
    entry = BACKBONES.entry(name)
    pytest.importorskip(entry.meta["module"], reason=f"pip install {entry.meta['package']}")
    return get_backbone(name)


def _items(modality):
    if modality == "text":
        return ["a short text", "another, longer text with more words in it"]
    rng = np.random.RandomState(0)
    return [rng.randint(0, 255, (40, 30, 3), dtype=np.uint8) for _ in range(2)]


@pytest.mark.parametrize("name", [e.name for e in BACKBONES])
def test_zoo_backbone_conformance(name):
    """Contract checks on each zoo entry, randomly initialised (fast; real weights: integration tests)."""
    b = _zoo_backbone(name)
    r = b.randomized(0)
    ident = json.loads(json.dumps(r.identity()))
    assert ident["modality"] == b.modality == BACKBONES.entry(name).meta["modality"]
    assert r.cache_key() == b.randomized(0).cache_key() != b.cache_key()
    f = r.embed(_items(b.modality))
    assert f.shape == (2, r.num_features) == (2, BACKBONES.entry(name).meta["dim"])
    assert torch.isfinite(f).all()
    groups = r.layer_groups()
    assert len(groups) >= 3
    # Every parameter is in a group, except the source task's head (not part of the features).
    head = r.source_head()
    head_n = sum(p.numel() for p in head.parameters()) if head is not None else 0
    assert sum(p.numel() for _, ps in groups for p in ps) == sum(p.numel() for p in r.module.parameters()) - head_n


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_torch_head_reproduces_predict_proba(name, tiny_text_dir):
    """Explanations and export go through ``torch_head``: it must give the strategy's own probabilities."""
    train, test = _text_data()
    backbone = get_backbone(str(tiny_text_dir))
    strategy = get_strategy(name)
    model = TransferModel(backbone, strategy)
    strategy.fit(train, model.ctx)
    head = strategy.torch_head()
    with torch.no_grad():
        feats = backbone.embed(test.inputs)
        proba = torch.softmax(head(feats.float()), 1).double().numpy()
    np.testing.assert_allclose(proba, strategy.predict_proba(test, model.ctx), atol=1e-5)
