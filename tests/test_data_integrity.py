"""Texts a tokenizer cannot take, invisible texts, hostile file names, warning floods (#26)."""
from __future__ import annotations

import json

import pytest

from transferkit.data import Dataset, ValidationReport, prepare_data, printable, read_source
from transferkit.errors import DataValidationError

from data_fixtures import write_digit_folder


def _jsonl(path, rows):
    # json.dumps escapes a lone surrogate as \ud800: the file itself is clean UTF-8
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_lone_surrogate_from_a_json_escape_is_caught_at_its_line(tmp_path):
    f = _jsonl(tmp_path / "mail.jsonl", [{"text": "fine", "label": "ham"},
                                         {"text": "bad \ud800 text", "label": "spam"},
                                         {"text": "also fine", "label": "spam"},
                                         {"text": "more", "label": "ham"}])
    assert '"bad \\ud800 text"' in f.read_text()
    with pytest.raises(DataValidationError) as e:
        prepare_data(f)
    (p,) = e.value.report.errors
    assert (p.kind, p.origin, p.item) == ("bad-text", "mail.jsonl:2", 1)
    assert "U+D800" in p.message and "character 5" in p.message
    prepared = prepare_data(f, skip_bad=True)
    assert prepared.train.inputs == ["fine", "also fine", "more"]
    assert [s["origin"] for s in prepared.report.skipped] == ["mail.jsonl:2"]
    for x in prepared.train.inputs:
        x.encode("utf-8")  # what the tokenizer needs


def test_lone_surrogates_in_memory_texts_and_labels():
    ds = Dataset("text", ["ok one", "x\udc80y", "ok two", "ok three"], ["a", "a", "b", "b\ud83d"])
    with pytest.raises(DataValidationError) as e:
        prepare_data(ds)
    got = sorted((p.kind, p.item) for p in e.value.report.errors)
    assert got == [("bad-label", 3), ("bad-text", 1)]


def test_nul_only_and_invisible_texts_are_empty_texts(tmp_path):
    f = _jsonl(tmp_path / "t.jsonl", [{"text": "\x00\x00", "label": "a"},
                                      {"text": " \u200b\ufeff\t", "label": "a"},
                                      {"text": "\x00 real \x00", "label": "a"},
                                      {"text": "b text", "label": "b"},
                                      {"text": "b again", "label": "b"}])
    with pytest.raises(DataValidationError) as e:
        prepare_data(f)
    errs = e.value.report.errors
    assert [(p.kind, p.origin) for p in errs] == [("empty-text", "t.jsonl:1"), ("empty-text", "t.jsonl:2")]
    assert "invisible" in errs[0].message
    assert prepare_data(f, skip_bad=True).train.inputs == ["\x00 real \x00", "b text", "b again"]


def test_printable_escapes_control_characters_and_keeps_letters():
    assert printable("a\nb.png") == "a\\nb.png"
    assert printable("x\x00\u202e\udc80") == "x\\x00\\u202e\\udc80"
    assert printable("Zoë 日本 🎉.png") == "Zoë 日本 🎉.png"
    assert printable(printable("a\nb")) == "a\\nb"  # idempotent


def test_file_names_with_newlines_are_shown_escaped(tmp_path):
    paths = write_digit_folder(tmp_path / "d", n=2, classes=[0, 1])
    evil = paths[0].with_name("fake\nerror: all good.png")
    evil.write_bytes(b"not an image")
    with pytest.raises(DataValidationError) as e:
        prepare_data(tmp_path / "d")
    (p,) = e.value.report.errors
    assert p.origin == "d/0/fake\\nerror: all good.png" and "\n" not in p.message
    assert "fake\\nerror" in e.value.report.summary()
    assert "\nerror: all good" not in e.value.report.summary()
    prepared = prepare_data(tmp_path / "d", skip_bad=True)
    assert prepared.report.skipped[0]["origin"] == "d/0/fake\\nerror: all good.png"
    f = tmp_path / "rows\n.csv"
    f.write_text("text,label\n,a\nb,b\n")
    r = ValidationReport()
    read_source(f, report=r)
    assert r.problems[0].origin == "rows\\n.csv:2"


def test_many_single_item_classes_make_one_warning_line(tmp_path):
    rows = [{"text": f"item {i}", "label": f"class {i}"} for i in range(1000)]
    rows += [{"text": "one more", "label": "class 0"}]
    f = _jsonl(tmp_path / "many.jsonl", rows)
    report = prepare_data(f).report
    (w,) = report.warnings
    assert w.kind == "too-few-per-class" and w.message.startswith("999 classes (")
    assert "'class 1'" in w.message and "and 994 more" in w.message
    assert len(report.warning_lines()) == 1
    assert report.summary().count("\n") < 10


def test_repeated_warnings_of_one_kind_collapse_into_a_count_with_examples():
    r = ValidationReport()
    for i in range(300):
        r.add("warning", "odd", f"f.csv:{i + 2}", "something odd")
    r.add("warning", "other", "train set", "one of a kind")
    lines = r.warning_lines()
    assert len(lines) == 2
    assert lines[0].startswith("300 'odd' warnings, e.g. f.csv:2: something odd; f.csv:3")
    assert lines[1] == "train set: one of a kind"
    assert r.summary().count("f.csv:") == 3
