"""The registry and the typed, round-tripping fit configuration."""
from __future__ import annotations

import json

import pytest

from transferkit._registry import Registry
from transferkit.config import FitConfig
from transferkit.errors import UserInputError


def test_registry_register_get_list_and_did_you_mean():
    reg = Registry("widget")

    @reg.register("blue-box", size=3)
    def blue():
        return "blue"

    reg.register("red-box")(lambda: "red")
    assert reg.get("blue-box")() == "blue" and reg.entry("blue-box").meta == {"size": 3}
    assert reg.list() == ["blue-box", "red-box"] and reg.list("red*") == ["red-box"]
    with pytest.raises(UserInputError, match="did you mean 'blue-box'"):
        reg.get("blue-bx")
    with pytest.raises(ValueError, match="twice"):
        reg.register("red-box")(lambda: None)


def test_config_round_trips_through_json(tmp_path):
    cfg = FitConfig(data="x.csv", text_columns="subject, body", labels_per_class=8, seed=3,
                    backbone_options={"layer": 2}, strategy_params={"Cs": [0.1, 1.0]})
    assert cfg.text_columns == ["subject", "body"]
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"transferkit_version": "0.1.0", "config": cfg.to_dict()}))
    assert FitConfig.load(p) == cfg


@pytest.mark.parametrize("bad, match", [
    ({"labels_per_class": 0}, "labels_per_class"),
    ({"test_size": 1.5}, "test_size"),
    ({"batch_size": 0}, "batch_size"),
    ({"modality": "video"}, "modality"),
    ({"no_such_key": 1}, "unknown configuration keys"),
])
def test_config_rejects_bad_values_with_a_clear_message(bad, match):
    with pytest.raises(UserInputError, match=match):
        FitConfig.from_dict(bad)


def test_config_load_reports_bad_json(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(UserInputError, match="not valid JSON"):
        FitConfig.load(p)
