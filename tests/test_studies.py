"""transferkit._studies: the figures messages cite, read from transferkit/studies.json."""
from __future__ import annotations

import json

import pytest

from transferkit import _studies
from transferkit._studies import MissingStudyError, figure, study, write_study


def test_every_study_names_its_source_and_the_file_is_valid_json():
    data = json.loads(_studies.STUDIES_FILE.read_text(encoding="utf-8"))
    assert {"inner_layer_finetune", "auto_pick", "strategies", "lora_share"} <= set(data)
    for name, entry in data.items():
        assert entry["source"].startswith("benchmarks/bench_") and entry["source"].endswith(".py"), name
        assert entry["commit"] and entry["date"], name
        assert study(name) == entry


def test_the_inner_layer_study_has_the_shape_its_readers_use():
    s = study("inner_layer_finetune")
    assert s["source"] == "benchmarks/bench_transferability.py"
    for layer in ("4", "6"):
        assert 0 < figure("inner_layer_finetune", "layers", layer, "finetune") < 1
        assert 0 < figure("inner_layer_finetune", "layers", layer, "probe") < 1


def test_a_missing_study_or_figure_is_a_clear_error():
    with pytest.raises(MissingStudyError, match=r"study 'nope' is not in transferkit/studies.json \(it has: .*"
                                                r"inner_layer_finetune.*\); run the benchmark"):
        study("nope")
    with pytest.raises(MissingStudyError, match=r"has no \['layers'\]\['5'\] \(source: benchmarks/bench_transfer"):
        figure("inner_layer_finetune", "layers", "5")
    with pytest.raises(MissingStudyError, match=r"\['variants'\]\[99\]"):
        figure("strategies", "variants", 99)
    assert isinstance(MissingStudyError("x"), LookupError)


def test_an_entry_without_its_source_is_refused(monkeypatch):
    monkeypatch.setattr(_studies, "_load", lambda: {"x": {"figure": 1, "date": "d"}})
    with pytest.raises(MissingStudyError, match="'x'.*lacks source, commit"):
        study("x")


def test_study_returns_a_copy():
    s = study("inner_layer_finetune")
    s["layers"]["4"]["finetune"] = -1
    assert study("inner_layer_finetune")["layers"]["4"]["finetune"] != -1


def test_write_study_adds_or_replaces_one_entry(tmp_path):
    path = tmp_path / "studies.json"
    write_study("a", {"x": 1}, source="benchmarks/bench_a.py", commit="abc1234", date="2026-12-07 10:00 UTC",
                path=path)
    write_study("b", {"y": [1, 2]}, source="benchmarks/bench_b.py", commit="def5678", date="d", section="b",
                path=path)
    write_study("a", {"x": 2}, source="benchmarks/bench_a.py", commit="0000000", date="d2", path=path)
    data = json.loads(path.read_text())
    assert data == {"a": {"source": "benchmarks/bench_a.py", "commit": "0000000", "date": "d2", "x": 2},
                    "b": {"source": "benchmarks/bench_b.py", "section": "b", "commit": "def5678", "date": "d",
                          "y": [1, 2]}}
    with pytest.raises(ValueError, match="reserved keys commit"):
        write_study("c", {"commit": "x"}, source="s", commit="c", date="d", path=path)
    with pytest.raises(TypeError):
        write_study("c", {"f": object()}, source="s", commit="c", date="d", path=path)
    assert json.loads(path.read_text()) == data  # a failed write leaves the file as it was
