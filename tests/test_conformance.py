"""One suite over every registered strategy and backbone (scikit-learn's check_estimator idea).

Registering a new strategy or zoo backbone enrols it here automatically.
"""
from __future__ import annotations

import importlib.util
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
from transferkit.strategies.base import strategies_for
from transferkit.tasks import TASKS

from conftest import toy_texts

STRATEGY_NAMES = [e.name for e in STRATEGIES]
#: every strategy x every task beyond classification (classification: the suite above)
OTHER_TASKS = [e.name for e in TASKS if e.name != "classification"]
SUPPORTED = [(s, t) for s in STRATEGY_NAMES for t in OTHER_TASKS if t in STRATEGIES.get(s).tasks]
REFUSED = [(s, t) for s in STRATEGY_NAMES for t in OTHER_TASKS if t not in STRATEGIES.get(s).tasks]


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
    assert again.task == "classification"  # a card without a task: as before tasks existed
    for task in OTHER_TASKS:  # a card claiming a task the strategy does not handle is refused
        if task not in strategy.tasks:
            with pytest.raises(UserInputError, match=f"strategy '{name}' handles {', '.join(strategy.tasks)}; for "
                                                     f"{task} use: "):
                get_strategy(name).load_state(strategy.state_tensors(), strategy.classes_,
                                              get_backbone(str(tiny_text_dir)), task=task)
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
    # find_spec, not an import: resemblyzer's own package cannot be imported (webrtcvad needs
    # pkg_resources), and the zoo reads only its weight file
    if importlib.util.find_spec(entry.meta["module"]) is None:
        pytest.skip(f"pip install {entry.meta['package']}")
    return get_backbone(name)


def _items(modality):
    if modality == "text":
        return ["a short text", "another, longer text with more words in it"]
    rng = np.random.RandomState(0)
    if modality == "timeseries":  # two channels, unequal lengths
        return [rng.normal(size=(2, 50)).astype(np.float32), rng.normal(size=(2, 37)).astype(np.float32)]
    if modality == "audio":  # 16 kHz waveforms of 0.5 s and 2.5 s (one and two partials for resemblyzer)
        return [(0.1 * rng.randn(n)).astype(np.float32) for n in (8000, 40000)]
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
    if not strategy.head_on_features:  # hand-made features: no head on backbone features to give
        with pytest.raises(UserInputError, match="no head on backbone features"):
            strategy.torch_head()
        return
    head = strategy.torch_head()
    with torch.no_grad():
        feats = backbone.embed(test.inputs)
        proba = torch.softmax(head(feats.float()), 1).double().numpy()
    np.testing.assert_allclose(proba, strategy.predict_proba(test, model.ctx), atol=1e-5)


TOPICS = {"work": ["meeting", "agenda", "report", "budget", "schedule"],
          "money": ["cash", "prize", "offer", "lottery", "winner"],
          "sport": ["match", "goal", "league", "coach", "season"]}


def _task_data(task: str) -> tuple[Dataset, Dataset]:
    """Toy texts mixing one to three topics: multi-label, the topics present; regression, the
    share of money words (a number in [0, 1])."""
    rng = np.random.RandomState(0)
    texts, labels = [], []
    for _ in range(30):
        topics = sorted(rng.choice(sorted(TOPICS), size=rng.randint(1, 4), replace=False))
        words = [str(rng.choice(TOPICS[t])) for t in topics for _ in range(rng.randint(2, 6))]
        rng.shuffle(words)
        texts.append(" ".join(words))
        share = sum(w in TOPICS["money"] for w in words) / len(words)
        labels.append(tuple(topics) if task == "multi-label" else float(share))
    ds = Dataset(modality="text", inputs=texts, labels=labels, task=task)
    return ds.subset(range(20)), ds.subset(range(20, 30))


def test_every_task_has_a_strategy_and_the_probe_handles_all():
    assert set(STRATEGIES.get("linear-probe").tasks) == {e.name for e in TASKS}
    assert all(strategies_for(t) for t in OTHER_TASKS) and SUPPORTED and REFUSED


@pytest.mark.parametrize("name,task", SUPPORTED)
def test_strategy_task_conformance(name, task, tiny_text_dir, tmp_path):
    """A supported strategy x task pair: outputs of the task's shape, save -> load through a run
    directory gives the same outputs and decisions, same seed -> same result."""
    train, test = _task_data(task)
    backbone = get_backbone(str(tiny_text_dir))
    strategy = get_strategy(name)
    model = TransferModel(backbone, strategy)
    with pytest.raises(NotFittedError):
        strategy.predict_outputs(test, model.ctx)
    assert strategy.fit(train, model.ctx) is strategy
    assert strategy.task_ == model.task == task
    out = strategy.predict_outputs(test, model.ctx)
    if task == "regression":
        assert strategy.classes_ == [] and strategy.thresholds_ is None
        assert out.shape == (len(test),) and np.isfinite(out).all()
        assert all(isinstance(v, float) for v in model.predict(test))
    else:
        assert strategy.classes_ == sorted(TOPICS)
        assert out.shape == (len(test), 3) and ((out >= 0) & (out <= 1)).all()
        assert strategy.thresholds_.shape == (3,)
        assert all(isinstance(v, tuple) and set(v) <= set(TOPICS) for v in model.predict(test))
    card = {"backbone": {"name": str(tiny_text_dir), "options": {}, "identity": backbone.identity()},
            "strategy": {"name": name, "params": strategy.get_params()}, "classes": strategy.classes_,
            "task": task}
    run = RunDir(tmp_path / "run")
    card["weights"] = run.write_weights(strategy.state_tensors(), strategy=name, classes=strategy.classes_)
    run.write_card(card)
    again = load(run.path, backbone=str(tiny_text_dir))
    assert again.task == task
    np.testing.assert_allclose(again.predict_outputs(test), out, atol=1e-6)
    assert again.predict(test) == model.predict(test)
    other = get_strategy(name)
    other.fit(train, TransferModel(get_backbone(str(tiny_text_dir)), other).ctx)
    np.testing.assert_allclose(other.predict_outputs(test, model.ctx), out, atol=1e-6)


@pytest.mark.parametrize("name,task", REFUSED)
def test_strategy_refuses_a_task_it_does_not_handle(name, task, tiny_text_dir):
    """An unsupported pair stops before any training with a message naming the strategies that
    handle the task, both when fitting and when loading a card that claims the task."""
    train, _ = _task_data(task)
    strategy = get_strategy(name)
    model = TransferModel(get_backbone(str(tiny_text_dir)), strategy)
    message = (f"strategy '{name}' handles {', '.join(strategy.tasks)}; "
               f"for {task} use: {', '.join(strategies_for(task))}")
    with pytest.raises(UserInputError) as err:
        strategy.fit(train, model.ctx)
    assert err.value.message == message and "linear-probe" in message
    assert not getattr(strategy, "fitted_", False)
    with pytest.raises(UserInputError, match=message.split(": ")[0]):
        STRATEGIES.get(name).check_task(task)
