"""The task of the labels in the data layer (#16): regression targets and multi-label sets read,
checked and split; the task inferred only where the labels make it unambiguous."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from transferkit.cli import main
from transferkit.data import Dataset, few_shot_sample, from_arrays, prepare_data, read_source, stratified_split
from transferkit.errors import DataValidationError, UserInputError


def _kinds(report, severity="error"):
    return [(p.kind, p.origin) for p in report.problems if p.severity == severity]


def _prices(tmp_path, values, name="houses.csv"):
    f = tmp_path / name
    f.write_text("text,price\n" + "".join(f"{name} house {i},{v}\n" for i, v in enumerate(values)))
    return f


def _sets(tmp_path, labels, name="topics.jsonl"):
    f = tmp_path / name
    f.write_text("".join(json.dumps({"text": f"doc {i}", "label": lab}) + "\n" for i, lab in enumerate(labels)))
    return f


# ----------------------------------------------------------------------------- regression
def test_regression_targets_are_read_as_floats_and_the_report_shows_their_range(tmp_path):
    values = [f"{100 + 7.5 * i:.2f}" for i in range(40)]
    prepared = prepare_data(_prices(tmp_path, values), label_column="price", task="regression")
    assert prepared.task == prepared.train.task == "regression"
    assert prepared.train.labels[:2] == [100.0, 107.5] and all(type(v) is float for v in prepared.train.labels)
    assert prepared.train.classes == []
    t = prepared.report.counts["train"]["target"]
    assert (t["min"], t["max"]) == (100.0, 392.5) and t["mean"] == pytest.approx(246.25)
    assert prepared.report.counts["train"]["classes"] == {}
    assert "train: 40 items, target 100 to 392.5 (mean 246.25" in prepared.report.summary()
    assert prepared.report.to_dict()["task"] == "regression"
    assert not prepared.report.problems  # no "single item per class" noise


def test_bad_targets_are_errors_at_their_line_and_skip_bad_leaves_them_out(tmp_path):
    values = [str(i) for i in range(10)] + ["abc", "nan", "inf", "1e999", "1_000", "12 kg"]
    f = _prices(tmp_path, values)
    with pytest.raises(DataValidationError) as e:
        prepare_data(f, label_column="price", task="regression")
    errors = e.value.report.errors
    assert [(p.kind, p.origin) for p in errors] == [("bad-target", f"houses.csv:{n}") for n in range(12, 18)]
    assert "'abc', not a number" in errors[0].message and "not a finite number" in errors[1].message
    assert "too large" in errors[3].message and "--skip-bad" in errors[0].hint
    prepared = prepare_data(f, label_column="price", task="regression", skip_bad=True)
    assert prepared.train.labels == [float(i) for i in range(10)]
    assert [s["origin"] for s in prepared.report.skipped] == [f"houses.csv:{n}" for n in range(12, 18)]
    assert {s["kind"] for s in prepared.report.skipped} == {"bad-target"}


def test_a_constant_target_is_an_error_that_skip_bad_cannot_fix(tmp_path):
    f = _prices(tmp_path, ["3.5"] * 8 + ["oops"])
    with pytest.raises(DataValidationError) as e:
        prepare_data(f, label_column="price", task="regression", skip_bad=True)
    (p,) = e.value.report.errors
    assert p.kind == "constant-target" and "every training target is 3.5" in p.message


def test_many_distinct_numbers_ask_for_the_task_and_an_explicit_task_is_obeyed(tmp_path, capsys):
    f = _prices(tmp_path, [f"{100 + i * 3.7:.2f}" for i in range(30)])
    with pytest.raises(DataValidationError) as e:
        prepare_data(f, label_column="price")
    (p,) = e.value.report.errors
    assert p.kind == "regression-target" and "--task regression" in p.hint
    assert "--task classification" in p.hint
    assert prepare_data(f, label_column="price", task="regression").train.labels[0] == 100.0
    kept = prepare_data(f, label_column="price", task="classification")  # numbers as class names
    assert kept.task == "classification" and kept.train.labels[0] == "100.00"
    assert [w.kind for w in kept.report.warnings] == ["too-few-per-class"]
    assert main(["validate", "--data", str(f), "--label-column", "price", "--task", "regression"]) == 0
    assert "target 100 to 207.3" in capsys.readouterr().out
    assert main(["validate", "--data", str(f), "--label-column", "price"]) == 2
    assert "--task regression" in capsys.readouterr().err


def test_the_test_set_is_read_for_the_training_sets_task(tmp_path):
    train = _prices(tmp_path, [str(i * 1.5) for i in range(20)], "train.csv")
    test = _prices(tmp_path, ["1.25", "x", "7"], "test.csv")
    with pytest.raises(DataValidationError) as e:
        prepare_data(train, test, label_column="price", task="regression")
    assert _kinds(e.value.report) == [("bad-target", "test.csv:3")]
    prepared = prepare_data(train, test, label_column="price", task="regression", skip_bad=True)
    assert prepared.test.task == "regression" and prepared.test.labels == [1.25, 7.0]
    assert "target" in prepared.report.counts["test"]


# ----------------------------------------------------------------------------- multi-label
def test_json_lists_are_inferred_as_multi_label_with_a_warning(tmp_path):
    f = _sets(tmp_path, [["sport", " news"], ["news"], ["tech", "news", "tech"], [1, "tech"], ["sport"]] * 2)
    prepared = prepare_data(f)
    assert prepared.task == "multi-label"
    assert prepared.train.labels[:4] == [("news", "sport"), ("news",), ("news", "tech"), ("1", "tech")]
    assert prepared.train.classes == ["1", "news", "sport", "tech"]
    (w,) = [p for p in prepared.report.warnings if p.kind == "task-inferred"]
    assert w.origin == "topics.jsonl column 'label'" and "--task multi-label" in w.hint
    assert prepared.report.counts["train"]["classes"] == {"1": 2, "news": 6, "sport": 4, "tech": 4}
    assert "train: 10 items, 4 labels" in prepared.report.summary()
    quiet = prepare_data(f, task="multi-label")
    assert quiet.train.labels == prepared.train.labels and not quiet.report.warnings


def test_an_empty_label_set_is_a_bad_item_and_mixed_labels_ask_for_the_task(tmp_path):
    f = _sets(tmp_path, [["a"], [], ["a", "b"], ["b"], ["", " "], ["b", "a"]])
    with pytest.raises(DataValidationError) as e:
        prepare_data(f)
    assert _kinds(e.value.report) == [("empty-label-set", "topics.jsonl:2"), ("empty-label-set", "topics.jsonl:5")]
    assert prepare_data(f, skip_bad=True).train.labels == [("a",), ("a", "b"), ("b",), ("a", "b")]
    mixed = _sets(tmp_path, [["a", "b"], "a", "b", ["b"]], "mixed.jsonl")
    with pytest.raises(DataValidationError) as e:
        prepare_data(mixed, skip_bad=True)  # a question about the whole column: not skippable
    assert [p.kind for p in e.value.report.errors] == ["ambiguous-task"]  # and nothing else
    assert "--task multi-label" in e.value.report.errors[0].hint
    assert prepare_data(mixed, task="multi-label").train.labels == [("a", "b"), ("a",), ("b",), ("b",)]
    with pytest.raises(DataValidationError) as e:
        prepare_data(mixed, task="classification")  # the list items are the bad ones
    assert _kinds(e.value.report) == [("label-list", "mixed.jsonl:1"), ("label-list", "mixed.jsonl:4")]
    assert prepare_data(mixed, task="classification", skip_bad=True).train.labels == ["a", "b"]


def test_label_sep_splits_strings_and_its_absence_is_explained(tmp_path, capsys):
    f = tmp_path / "tags.csv"
    f.write_text("text,label\n" + "".join(f"t{i},{lab}\n" for i, lab in
                                          enumerate(["a;b", " b ; ;a;a", "c", "a;c", ";", "b"])))
    with pytest.raises(DataValidationError) as e:
        prepare_data(f, task="multi-label")
    (p,) = e.value.report.errors
    assert p.kind == "no-label-sep" and "--label-sep ';'" in p.hint
    with pytest.raises(DataValidationError) as e:
        prepare_data(f, label_sep=";")  # label_sep alone means multi-label
    assert _kinds(e.value.report) == [("empty-label-set", "tags.csv:6")]
    assert "separators ';'" in e.value.report.errors[0].message
    prepared = prepare_data(f, label_sep=";", skip_bad=True)
    assert prepared.task == "multi-label" and not prepared.report.warnings
    assert prepared.train.labels == [("a", "b"), ("a", "b"), ("c",), ("a", "c"), ("b",)]
    assert main(["validate", "--data", str(f), "--label-sep", ";"]) == 2
    assert "empty-label-set" in capsys.readouterr().err


def test_task_options_that_cannot_work_are_refused_before_reading(tmp_path):
    f = _sets(tmp_path, [["a"], ["b"]])
    with pytest.raises(UserInputError, match="unknown task 'regresion'") as e:
        prepare_data(f, task="regresion")
    assert "--task regression" in e.value.hint
    with pytest.raises(UserInputError, match="it is for multi-label data, not classification"):
        prepare_data(f, task="classification", label_sep=";")
    with pytest.raises(UserInputError, match="label_sep=''"):
        prepare_data(f, label_sep="")


def test_multi_label_checks_count_per_label(tmp_path):
    f = _sets(tmp_path, [["x"], ["x"], ["x"]])
    with pytest.raises(DataValidationError) as e:
        prepare_data(f)
    assert [p.kind for p in e.value.report.errors] == ["single-class"]
    train = _sets(tmp_path, [["a", "k"], ["b", "k"], ["a", "k"], ["b", "lone", "k"]], "train.jsonl")
    test = _sets(tmp_path, [["a"], ["b", "new"], ["A"]], "test.jsonl")
    with pytest.raises(DataValidationError) as e:
        prepare_data(train, test)
    assert ("unseen-label", "test.jsonl:2") in _kinds(e.value.report)
    assert "'new'" in [p for p in e.value.report.errors if p.kind == "unseen-label"][0].message
    assert "label-case" in [p.kind for p in e.value.report.errors]  # 'a' and 'A'
    warns = {p.kind: p.message for p in e.value.report.warnings}
    assert "'lone' is on only 1 item" in warns["too-few-per-label"]
    assert "'k' is on every training item" in warns["constant-label"]


# ----------------------------------------------------------------------------- Dataset, arrays
def test_dataset_classes_subset_and_fingerprint_per_task():
    texts = ["a", "b", "c"]
    cls = Dataset("text", texts, ["1", "2", "1"])
    old = hashlib.sha256()  # the hash runs had before tasks existed: must not change
    for c in cls.content_hashes():
        old.update(c.encode())
    for lab in cls.labels:
        old.update(b"\0" + lab.encode())
    assert cls.fingerprint() == old.hexdigest()
    reg = Dataset("text", texts, [1.0, 2.0, 1.0], task="regression")
    ml = Dataset("text", texts, [("x",), ("x", "y"), ("z",)], task="multi-label")
    assert reg.classes == [] and ml.classes == ["x", "y", "z"] and cls.classes == ["1", "2"]
    assert len({cls.fingerprint(), reg.fingerprint(), ml.fingerprint()}) == 3
    assert ml.subset([1]).task == "multi-label" and ml.subset([1]).labels == [("x", "y")]
    with pytest.raises(ValueError, match="task must be one of"):
        Dataset("text", texts, task="ranking")


def test_from_arrays_takes_targets_label_lists_and_multi_hot_rows():
    X = [f"text {i}" for i in range(4)]
    reg = from_arrays(X, np.array([0.5, 1.5, 2.5, 3.0], dtype=np.float32), task="regression")
    assert reg.task == "regression" and reg.labels == [0.5, 1.5, 2.5, 3.0]
    with pytest.raises(UserInputError, match=r"y\[1\] is 'n/a', not a number; y\[3\] is nan"):
        from_arrays(X, [1.0, "n/a", 2.0, float("nan")], task="regression")
    ml = from_arrays(X, [["b", "a"], ("c",), {"a"}, ["a", "a"]])  # lists: multi-label
    assert ml.task == "multi-label" and ml.labels == [("a", "b"), ("c",), ("a",), ("a",)]
    hot = from_arrays(X, np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]), classes=["cat", "dog", "owl"])
    assert hot.labels == [("cat", "owl"), ("dog",), ("cat", "dog"), ("owl",)]
    idx = from_arrays(X, [[0, 2], [1], ["owl"], [np.int64(0)]], classes=["cat", "dog", "owl"], task="multi-label")
    assert idx.labels == [("cat", "owl"), ("dog",), ("owl",), ("cat",)]
    with pytest.raises(UserInputError, match=r"y\[1\] is an empty set"):
        from_arrays(X, [["a"], [], ["b"], ["a"]], task="multi-label")
    with pytest.raises(UserInputError, match="2 of 4 labels in y are lists"):
        from_arrays(X, [["a"], "b", ["b"], "a"])
    with pytest.raises(UserInputError, match="task='classification' takes one class"):
        from_arrays(X, [["a"], ["b"], ["b"], ["a"]], task="classification")
    assert from_arrays(X, [1.0, 2.5, 3.0, 4.0]).labels == ["1.0", "2.5", "3.0", "4.0"]  # classes, as before
    checked = prepare_data(ml.subset([0, 1, 2]), task=None)  # the Dataset's task is kept
    assert checked.task == "multi-label" and "task-inferred" not in [w.kind for w in checked.report.warnings]


# ----------------------------------------------------------------------------- splits
def test_regression_split_spreads_the_target_and_keeps_its_extremes_in_training():
    y = [float(v) for v in np.random.default_rng(3).permutation(100)]
    ds = Dataset("text", [f"t{i}" for i in range(100)], y, task="regression")
    train, test = stratified_split(ds, test_size=0.2, seed=0)
    assert len(test) == 20 and train.task == test.task == "regression"
    per_decile = np.bincount(np.digitize(test.labels, np.arange(10, 100, 10)), minlength=10)
    assert per_decile.min() >= 1 and per_decile.max() <= 3  # a random 20 of 100 is rarely this even
    assert 0.0 in train.labels and 99.0 in train.labels
    assert stratified_split(ds, 0.2, seed=0)[1].inputs == test.inputs
    assert stratified_split(ds, 0.2, seed=1)[1].inputs != test.inputs
    small = Dataset("text", ["a", "b", "c"], [1.0, 2.0, 3.0], task="regression")
    assert len(stratified_split(small, test_size=0.5)[1]) == 2
    with pytest.raises(UserInputError, match="at most 2 while keeping every target bin in train"):
        stratified_split(small, test_size=3)


def test_multi_label_split_keeps_every_test_label_in_training():
    rng = np.random.default_rng(0)
    names = [f"l{k}" for k in range(8)]
    weights = np.array([40, 30, 20, 10, 6, 3, 2, 1], dtype=float)
    sets = [tuple(sorted(set(rng.choice(names, size=rng.integers(1, 4), p=weights / weights.sum()))))
            for _ in range(120)]
    ds = Dataset("text", [f"t{i}" for i in range(120)], sets, task="multi-label")
    for seed in range(5):
        train, test = stratified_split(ds, test_size=0.25, seed=seed)
        assert len(test) == 30 and len(train) == 90
        assert set(test.classes) <= set(train.classes)
        assert set(train.inputs).isdisjoint(test.inputs)
    counts = {n: sum(n in s for s in sets) for n in names}
    rare = [n for n in names if 2 <= counts[n] <= 6]
    assert rare  # the rarest-label strata give these test items too
    _, test = stratified_split(ds, test_size=0.25, seed=0)
    assert any(n in test.classes for n in rare)


def test_few_shot_refuses_tasks_without_classes():
    ds = Dataset("text", ["a", "b"], [1.0, 2.0], task="regression")
    with pytest.raises(UserInputError, match="regression data has no classes") as e:
        few_shot_sample(ds, 1)
    assert "--labels-per-class" in e.value.hint


# ----------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """Real MNIST-5k digits as PNG files: a multi-label JSONL of pairs side by side (label: the
    set of digits shown, as a JSON list of numbers) and a CSV of single digits with their value
    as the target."""
    from PIL import Image

    from task_data import shuffled_mnist

    images, digits = shuffled_mnist(160, seed=1)
    root = tmp_path_factory.mktemp("digits")
    (root / "img").mkdir()
    pairs, values = [], ["path,value"]
    for k in range(80):
        i, j = 2 * k, 2 * k + 1
        Image.fromarray(np.hstack([images[i], images[j]])).convert("RGB").save(root / "img" / f"pair{k}.png")
        pairs.append(json.dumps({"image": f"img/pair{k}.png", "digits": [digits[i], digits[j]]}))
        Image.fromarray(images[i]).convert("RGB").save(root / "img" / f"one{k}.png")
        values.append(f"img/one{k}.png,{digits[i]}")
    (root / "pairs.jsonl").write_text("\n".join(pairs) + "\n")
    (root / "values.csv").write_text("\n".join(values) + "\n")
    return root, digits


def test_real_digit_pairs_are_multi_label_and_split_with_every_test_digit_in_training(digit_files):
    root, digits = digit_files
    prepared = prepare_data(root / "pairs.jsonl", modality="image", label_column="digits")
    assert prepared.task == "multi-label" and [w.kind for w in prepared.report.warnings] == ["task-inferred"]
    ds = prepared.train
    assert ds.labels[0] == tuple(sorted({str(digits[0]), str(digits[1])}))
    assert ds.classes == [str(d) for d in range(10)]
    assert all(1 <= len(s) <= 2 for s in ds.labels)
    train, test = stratified_split(ds, test_size=0.25, seed=0)
    assert len(test) == 20 and set(test.classes) <= set(train.classes)
    bad = root / "pairs_bad.jsonl"
    bad.write_text((root / "pairs.jsonl").read_text() + json.dumps({"image": "img/pair0.png", "digits": []}) + "\n")
    with pytest.raises(DataValidationError) as e:
        prepare_data(bad, modality="image", label_column="digits", task="multi-label")
    assert ("empty-label-set", "pairs_bad.jsonl:81") in _kinds(e.value.report)


def test_real_digit_values_stay_classes_unless_regression_is_asked_for(digit_files):
    root, digits = digit_files
    f = root / "values.csv"
    as_classes = prepare_data(f, modality="image", label_column="value")  # 0..9: class indices
    assert as_classes.task == "classification" and as_classes.train.classes == [str(d) for d in range(10)]
    prepared = prepare_data(f, modality="image", label_column="value", task="regression")
    assert prepared.train.labels == [float(digits[2 * k]) for k in range(80)]
    train, test = stratified_split(prepared.train, test_size=0.25, seed=0)
    assert min(train.labels) <= min(test.labels) and max(test.labels) <= max(train.labels)
    assert abs(np.mean(test.labels) - np.mean(prepared.train.labels)) < 1.0  # bins spread the digits
    assert math.isfinite(read_source(f, label_column="value", modality="image", task="regression").labels[0])
