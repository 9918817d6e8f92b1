"""Typed strategy options: coercion from JSON and command-line text, messages, `transferkit strategies`."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import pytest

from transferkit.cli import _key_values, main
from transferkit.errors import UserInputError
from transferkit.strategies import STRATEGIES, FineTune, LinearProbe, get_strategy
from transferkit.strategies.catalog import render_catalog, strategy_catalog
from transferkit.strategies.params import Params, build_params, describe_params, param


@dataclass
class Toy(Params):
    n: int = param(3, "a count", ge=1)
    rate: float = param(0.1, "a rate", gt=0, lt=1)
    on: bool = param(False, "a switch")
    mode: str = param("a", "a mode", choices=("a", "b"))
    steps: float | int = param(0.5, "a share or a count")
    names: list[str] | None = param(None, "some names")
    which: Literal["all"] | int | list[str] = param("all", "'all', a number or names", ge=0)
    knob: float | list[float] = param([0.0, 1.0], "one value or candidates", ge=0)


def toy(**values):
    return build_params(Toy, values, "strategy 'toy'")


def test_command_line_text_is_coerced_by_type():
    """`--param` values arrive as JSON where they parse and as text otherwise; both give typed values."""
    got = toy(**_key_values(["n=4", "rate=1e-2", "on=true", "mode=b", "names=query,value", "which=2",
                             "knob=[0.1,1]"], "--param"))
    assert (got.n, got.rate, got.on, got.mode, got.names, got.which, got.knob) == (
        4, 0.01, True, "b", ["query", "value"], 2, [0.1, 1.0])
    text = toy(n="4", rate="0.2", on="False", names='["a"]', which="a,b", knob="0.5", steps="7")
    assert (text.n, text.rate, text.on, text.names, text.which, text.knob, text.steps) == (
        4, 0.2, False, ["a"], ["a", "b"], 0.5, 7.0)
    # a union keeps the type it was given: 5 steps stays an int, 0.25 a share
    assert toy(steps=5).steps == 5 and isinstance(toy(steps=5).steps, int) and toy(steps=0.25).steps == 0.25
    assert toy(knob=(1, 2)).knob == [1.0, 2.0]  # tuples become lists: the JSON shape
    assert toy(n=2.0).n == 2 and toy(rate=1e-3).rate == 1e-3


@pytest.mark.parametrize("values, message", [
    ({"n": 0}, "strategy 'toy': n must be an integer >= 1, got 0"),
    ({"n": True}, "n must be an integer >= 1, got True"),
    ({"n": 2.5}, "n must be an integer >= 1, got 2.5"),
    ({"rate": 1}, r"rate must be a number in \(0, 1\), got 1"),
    ({"rate": "fast"}, "rate must be a number in"),
    ({"rate": float("nan")}, "rate must be a number in"),
    ({"on": "yes"}, "on must be true or false, got 'yes'"),
    ({"mode": "c"}, "mode must be one of a, b, got 'c'"),
    ({"names": []}, "names must be a non-empty list of texts or null"),
    ({"which": "al"}, "which must be 'all', an integer >= 0 or a non-empty list of texts, got 'al'"),
    ({"which": -1}, "which must be"),
    ({"knob": [0.1, -1]}, "knob must be a number >= 0 or a non-empty list of numbers >= 0"),
])
def test_bad_values_name_the_option_the_value_and_what_is_allowed(values, message):
    with pytest.raises(UserInputError, match=message) as err:
        toy(**values)
    assert err.value.hint.startswith(f"{next(iter(values))}: ")  # the option's own help line


def test_unknown_names_get_the_closest_suggestion():
    with pytest.raises(UserInputError, match=r"strategy 'toy' has no option 'rte'; did you mean 'rate'\?") as err:
        toy(rte=0.1)
    assert "its options are: n, rate, on" in err.value.hint
    with pytest.raises(UserInputError, match=r"no options 'nn'; did you mean 'n'\?, 'zzz'"):
        toy(nn=1, zzz=2)
    with pytest.raises(UserInputError, match=r"strategy 'lora' has no option 'lora_rank'"):
        get_strategy("lora", {"lora_rank": 4})
    with pytest.raises(UserInputError, match=r"did you mean 'head_lr'\?"):
        FineTune(head_rl=1e-3)


def test_describe_lists_type_default_range_and_help():
    rows = {r["name"]: r for r in describe_params(Toy)}
    assert rows["rate"] == {"name": "rate", "type": "float", "default": 0.1, "range": "(0, 1)", "choices": None,
                            "help": "a rate"}
    assert rows["which"]["type"] == "'all' | int | list[str]" and rows["which"]["range"] == ">= 0"
    assert rows["names"]["type"] == "list[str] | null" and rows["mode"]["choices"] == ["a", "b"]
    assert rows["knob"]["default"] == [0.0, 1.0]
    assert Toy().knob is not Toy().knob  # list defaults are not shared between instances


def test_constructor_keywords_from_params_and_cross_checks():
    assert LinearProbe(cv=3).cv == 3 and LinearProbe(cv=3).get_params()["Cs"] == [1e-3, 1e-2, 1e-1, 1.0, 10.0]
    with pytest.raises(TypeError):
        LinearProbe(3)  # options are keyword-only
    with pytest.raises(UserInputError, match="normalize='domain' works on cached features only"):
        get_strategy("mmd", {"normalize": "domain", "on": "backbone"})
    with pytest.raises(UserInputError, match="on must be one of features") as err:
        get_strategy("self-training", {"on": "backbone"})
    assert "cached features only" in err.value.hint
    with pytest.raises(UserInputError, match="zoom"):  # augment's keys are checked at construction
        FineTune(augment={"zoom": 2})


def test_catalog_covers_every_strategy_from_its_declarations():
    rows = strategy_catalog()
    assert [r["name"] for r in rows] == STRATEGIES.list()
    by = {r["name"]: r for r in rows}
    assert by["zero-shot"]["needs"] == {"labels": False, "unlabelled_target": False, "backbone_training": False}
    assert by["dann"]["needs"]["unlabelled_target"] and by["lora"]["needs"]["backbone_training"]
    assert "unlabelled target data" in by["coral"]["data"] and "no labelled training data" in by["zero-shot"]["data"]
    lora = {p["name"]: p for p in by["lora"]["params"]}
    assert lora["r"]["default"] == 8 and lora["merge"]["type"] == "bool" and lora["lr"]["default"] == 2e-3
    text = render_catalog([by["prototype"]])
    assert text.splitlines()[0] == f"prototype: {by['prototype']['description']}"
    assert "  temperature (float, default 0.1, > 0)" in text
    with pytest.raises(UserInputError, match="did you mean 'lora'"):
        strategy_catalog("lorra")


def test_strategies_command_prints_text_json_and_refuses_unknown_names(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    assert all(f"{n}: " in out for n in STRATEGIES.list())
    assert main(["strategies", "linear-probe", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["linear-probe"] and rows[0]["params"][0]["name"] == "Cs"
    assert main(["strategies", "lin-probe"]) == 2
    assert "unknown strategy 'lin-probe'" in capsys.readouterr().err


def test_misspelt_param_on_the_command_line_exits_2_with_the_suggestion(capsys, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(8)))
    assert main(["fit", "--data", str(data), "--strategy", "linear-probe", "--param", "cvv=3",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "strategy 'linear-probe' has no option 'cvv'; did you mean 'cv'?" in err
