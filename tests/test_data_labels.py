"""Label columns that are not classes, empty class folders under --skip-bad, honest hints (#15)."""
from __future__ import annotations

import numpy as np
import pytest

from transferkit.cli import main
from transferkit.data import Dataset, from_arrays, prepare_data
from transferkit.data.labels import regression_target
from transferkit.errors import DataValidationError

from data_fixtures import write_digit_folder


def _prices(tmp_path, n=60):
    rng = np.random.default_rng(0)
    f = tmp_path / "houses.csv"
    f.write_text("text,price\n" + "".join(f"house {i},{100 + rng.random() * 400:.2f}\n"
                                         for i in range(n)))
    return f


def test_a_float_target_column_is_an_error_naming_the_column_and_the_fix(tmp_path, capsys):
    f = _prices(tmp_path)
    with pytest.raises(DataValidationError) as e:
        prepare_data(f, label_column="price")
    (p,) = e.value.report.errors
    assert p.kind == "regression-target" and p.origin == "houses.csv column 'price'"
    assert "column 'price' holds 60 distinct numbers with decimals in 60 rows" in p.message
    assert "regression" in p.message and "bin" in p.hint
    assert not e.value.report.warnings  # not 60 "single item" warnings on top
    with pytest.raises(DataValidationError):
        prepare_data(f, label_column="price", skip_bad=True)  # nothing to skip: still an error
    assert main(["validate", "--data", str(f), "--label-column", "price"]) == 2
    err = capsys.readouterr().err
    assert "regression-target" in err and "pass --skip-bad" not in err


@pytest.mark.parametrize("labels", [
    [str(d) for d in range(10)] * 6,  # MNIST digits
    [str(i) for i in range(1000)] + [str(i) for i in range(500)],  # class ids 0..999
    [str(i) for i in range(1, 101)],  # ids 1..100, one item each (few-shot style)
    [f"{s / 2:.1f}" for s in range(2, 11)] * 3,  # half-star ratings 1.0..5.0
    ["1.5", "2.5", "3.5"],  # few numbers: fine whatever they look like
    ["cat", "dog", "1.5", "2.25", "3.125", "4.0625", "5.1", "6.2"],  # not all numeric
])
def test_numeric_class_names_stay_classes(labels):
    assert regression_target(labels) is None


@pytest.mark.parametrize("labels", [
    [f"{x:.3f}" for x in np.linspace(0, 1, 60)],  # 60 floats in 60 rows
    [f"{x:.1f}" for x in np.arange(0, 30, 0.5)] * 10,  # many decimals, repeated
    [str(18 + (i * 7) % 60) for i in range(70)],  # ages 18..77: whole numbers, mostly unique
])
def test_measured_quantities_are_caught(labels):
    t = regression_target(labels)
    assert t is not None and t.n == len(labels)


def test_in_memory_float_targets_are_caught_too():
    ds = from_arrays([f"text {i}" for i in range(40)], list(np.linspace(1.0, 2.0, 40)))
    with pytest.raises(DataValidationError) as e:
        prepare_data(ds)
    assert [p.kind for p in e.value.report.errors] == ["regression-target"]
    assert e.value.report.errors[0].message.startswith("the labels hold 40 distinct")


def test_skip_bad_leaves_an_empty_class_folder_out_with_a_warning(tmp_path):
    root = tmp_path / "d"
    write_digit_folder(root, n=2, classes=[0, 1])
    (root / "9").mkdir()
    with pytest.raises(DataValidationError) as e:  # without --skip-bad: the error stays
        prepare_data(root)
    assert [(p.kind, p.origin) for p in e.value.report.errors] == [("empty-class", "d/9/")]
    assert "--skip-bad" in e.value.hint
    prepared = prepare_data(root, skip_bad=True)
    assert prepared.train.classes == ["0", "1"]
    (w,) = [p for p in prepared.report.warnings if p.kind == "empty-class"]
    assert w.origin == "d/9/" and "left out" in w.message
    assert prepared.report.to_dict()["problems"][0]["kind"] == "empty-class"  # in validation.json


def test_no_hint_suggests_skip_bad_when_it_was_given_or_cannot_help(tmp_path):
    f = tmp_path / "one.jsonl"
    f.write_text('{"text": "a", "label": "x"}\n{"text": "", "label": "y"}\n')
    with pytest.raises(DataValidationError) as e:
        prepare_data(f, skip_bad=True)  # skipping the empty text leaves a single class
    assert "pass --skip-bad" not in e.value.hint and "pass --skip-bad" not in str(e.value)
    assert "--skip-bad was given" in e.value.hint
    ds = Dataset("text", ["a", "b"], ["x", "x"])
    with pytest.raises(DataValidationError) as e:
        prepare_data(ds)  # one class: --skip-bad cannot help either
    assert "pass --skip-bad" not in e.value.hint
    ds = Dataset("text", ["a", "", "c", "d"], ["x", "x", "y", "y"])
    with pytest.raises(DataValidationError) as e:
        prepare_data(ds)  # a bad item: here --skip-bad is the way out, and the hint says so
    assert "pass --skip-bad" in e.value.hint


def test_text_column_list_is_accepted_by_validate(tmp_path, capsys):
    f = tmp_path / "mail.csv"
    f.write_text("subject,body,label\nhi,see you,ham\nwin,cash now,spam\nre,ok,ham\n")
    assert main(["validate", "--data", str(f), "--text-column", "subject,body"]) == 0
    assert "3 items" in capsys.readouterr().out
    assert prepare_data(f, text_columns="subject, body").train.inputs[0] == "hi\nsee you"
