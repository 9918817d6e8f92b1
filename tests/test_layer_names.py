"""#15 bug 3: `fit --layer` took only integers while `rank --layers` accepted `last`; one parser
now reads a layer wherever it is written (fit's --layer, rank's --layers and NAME@LAYER, the
backbone option `layer` in Python and in config.json)."""
from __future__ import annotations

import numpy as np
import pytest

from transferkit.backbones import get_backbone
from transferkit.backbones.base import parse_layer
from transferkit.cli import _backbone_options, build_parser
from transferkit.config import FitConfig
from transferkit.errors import UserInputError
from transferkit.ranking import parse_candidate


@pytest.mark.parametrize("value, layer", [(None, None), ("last", None), ("LAST", None), (" last ", None),
                                          (4, 4), ("4", 4), ("-1", -1), (-2, -2), (np.int64(3), 3), (6.0, 6)])
def test_one_parser_reads_every_spelling(value, layer):
    assert parse_layer(value) == layer


@pytest.mark.parametrize("bad", ["deep", "4.5", 4.5, True, [4], "la st"])
def test_other_values_are_refused_naming_what_is_allowed(bad):
    with pytest.raises(UserInputError, match="must be an integer or 'last'") as err:
        parse_layer(bad)
    assert "last" in err.value.hint


def test_fit_takes_last_as_rank_does():
    a = build_parser().parse_args(["fit", "--data", "x.csv", "--layer", "last"])
    assert _backbone_options(a) == {"layer": "last"}  # kept, so that it overrides a layer in --config
    assert _backbone_options(build_parser().parse_args(["fit", "--layer", "-1"])) == {"layer": -1}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--layer", "deep"])


def test_the_backbone_option_and_config_json_take_layer_names(tmp_path):
    assert get_backbone("efficientnet-lite0", layer="last").layer is None
    assert get_backbone("efficientnet-lite0", layer="4").layer == 4
    b = get_backbone("efficientnet-lite0", layer="last")
    assert b.identity()["layer"] is None and b.cache_key() == get_backbone("efficientnet-lite0").cache_key()
    cfg = FitConfig(data="x.csv", backbone_options={"layer": "last"})
    p = tmp_path / "config.json"
    import json

    p.write_text(json.dumps({"transferkit_version": "0", "config": cfg.to_dict()}))
    again = FitConfig.load(p)
    assert get_backbone("efficientnet-lite0", **again.backbone_options).layer is None
    with pytest.raises(UserInputError, match="layer must be an integer or 'last', got 'top'"):
        get_backbone("efficientnet-lite0", layer="top")


def test_rank_candidates_and_layers_use_the_same_parser(capsys):
    assert parse_candidate("efficientnet-lite0@last").layer is None
    assert parse_candidate("efficientnet-lite0@Last").label == "efficientnet-lite0"
    assert parse_candidate({"model": "m", "layer": "6"}).layer == 6
    with pytest.raises(UserInputError, match="layer must be an integer or 'last'"):
        parse_candidate({"model": "m", "layer": "top"})
    from transferkit.cli import main

    assert main(["rank", "--data", "missing.csv", "--models", "m", "--layers", "last,top"]) == 2
    assert "--layers: a layer must be an integer or 'last', got 'top'" in capsys.readouterr().err
