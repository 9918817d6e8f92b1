"""The pre-flight check: every problem at once, named by file, or skipped with reasons."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from transferkit.data import Dataset, PreparedData, ValidationReport, from_arrays, load_image, prepare_data
from transferkit.errors import DataValidationError, UserInputError

from data_fixtures import SPAM, add_bad_images, add_mode_images, digit_arrays, write_digit_folder


@pytest.fixture
def messy_digits(tmp_path):
    """20 real digits (RGB PNGs), 5 broken files and 4 images in other modes."""
    root = tmp_path / "digits"
    paths = write_digit_folder(root, n=2)
    bad = add_bad_images(root / "3", paths[0])
    modes = add_mode_images(root / "8", digit_arrays(1, [8])[0][0])
    return root, bad, modes


def test_every_bad_image_is_reported_at_once(messy_digits):
    root, bad, modes = messy_digits
    with pytest.raises(DataValidationError) as e:
        prepare_data(root)
    report = e.value.report
    got = {p.origin: p.kind for p in report.errors}
    assert got == {f"digits/3/{name}": kind for name, kind in bad.items()}
    assert all(p.item is not None and p.split == "train" for p in report.errors)
    # conversions are warnings, one per mode, not errors
    conv = [p for p in report.warnings if p.kind == "converted-mode"]
    assert sorted(re.search(r"PIL mode '([^']+)'", p.message).group(1) for p in conv) == \
        sorted(modes.values())
    assert all(p.message.startswith("1 image is") for p in conv)
    # the message a user sees: readable, every file named, a hint, no traceback
    text = str(e.value)
    for name in bad:
        assert f"digits/3/{name}" in text
    assert "5 error(s)" in text and "hint:" in text and "skip_bad" in text
    assert "Traceback" not in text
    assert isinstance(e.value, UserInputError)
    json.dumps(report.to_dict())  # validation.json must be writable


def test_skip_bad_keeps_good_and_converted_images_and_lists_the_skipped(messy_digits):
    root, bad, modes = messy_digits
    prepared = prepare_data(root, skip_bad=True)
    assert isinstance(prepared, PreparedData) and prepared.test is None
    train, report = prepared.train, prepared.report
    assert len(train) == 20 + len(modes)
    assert sorted(s["origin"] for s in report.skipped) == sorted(f"digits/3/{n}" for n in bad)
    for s in report.skipped:
        assert s["split"] == "train" and s["reason"] and s["kind"] == bad[s["origin"].split("/")[-1]]
    assert report.ok() and report.counts["train"]["items"] == 24
    assert report.counts["train"]["skipped"] == 5
    assert {load_image(x).mode for x in train.inputs} == {"RGB"}
    assert "Skipped" in report.summary() and "digits/3/bomb.png" in report.summary()


def test_train_test_folders_and_duplicates_across_them(tmp_path):
    root = tmp_path / "d"
    write_digit_folder(root / "train", n=3, classes=[0, 1])
    write_digit_folder(root / "test", n=1, classes=[0, 1])  # the same first digits: copies!
    leaked = sorted((root / "train" / "1").iterdir())[0]
    shutil.copy(leaked, root / "test" / "1" / "copy.png")
    Image.fromarray(digit_arrays(4, [0])[0][3]).save(root / "test" / "0" / "new.png")
    with pytest.raises(DataValidationError) as e:
        prepare_data(root)
    dups = [p for p in e.value.report.errors if p.kind == "duplicate-train-test"]
    assert {p.origin for p in dups} == {"d/test/0/d000.png", "d/test/1/d001.png", "d/test/1/copy.png"}
    assert all(p.split == "test" and "d/train/" in p.message for p in dups)
    prepared = prepare_data(root, skip_bad=True)  # the test copies go, the new digit stays
    assert (len(prepared.train), prepared.test.origins) == (6, ["d/test/0/new.png"])
    assert sorted(s["kind"] for s in prepared.report.skipped) == ["duplicate-train-test"] * 3
    (root / "test" / "0" / "new.png").unlink()
    with pytest.raises(DataValidationError) as e:  # nothing left to evaluate on
        prepare_data(root, skip_bad=True)
    assert [p.kind for p in e.value.report.errors] == ["no-items"]


def test_clean_train_test_folders_pass(tmp_path):
    write_digit_folder(tmp_path / "d" / "train", n=3, classes=[0, 1])
    xs, ys = digit_arrays(5, [0, 1])
    test = from_arrays(xs[3:5] + xs[8:10], ys[3:5] + ys[8:10])  # unseen digits, in memory
    prepared = prepare_data(tmp_path / "d" / "train", test)
    assert prepared.report.ok() and len(prepared.test) == 4
    assert prepared.report.counts == {
        "train": {"items": 6, "classes": {"0": 3, "1": 3}, "skipped": 0},
        "test": {"items": 4, "classes": {"0": 2, "1": 2}, "skipped": 0}}


def test_label_case_is_an_error_naming_both_spellings(tmp_path):
    f = tmp_path / "mail.csv"
    f.write_text("text,label\na,spam\nb,spam\nc,Spam\nd,spam \ne,ham\nf,ham\n")
    with pytest.raises(DataValidationError) as e:
        prepare_data(f)
    (p,) = e.value.report.errors
    assert p.kind == "label-case"
    assert "'spam' (2 items)" in p.message and "'Spam' (1 items)" in p.message
    assert "'spam ' (1 items)" in p.message
    with pytest.raises(DataValidationError):  # the user has to decide: skipping cannot fix it
        prepare_data(f, skip_bad=True)


def test_single_class_and_no_labels(tmp_path):
    f = tmp_path / "one.csv"
    f.write_text("text,label\na,spam\nb,spam\n")
    with pytest.raises(DataValidationError) as e:
        prepare_data(f)
    assert [p.kind for p in e.value.report.errors] == ["single-class"]
    assert "at least two classes" in e.value.report.errors[0].message
    g = tmp_path / "loose"
    g.mkdir()
    write_digit_folder(g, n=1, classes=[0, 1])
    for p in list(g.rglob("*.png")):
        p.rename(g / f"{p.parent.name}_{p.name}")  # images with no class folders
        p.parent.rmdir()
    with pytest.raises(DataValidationError) as e:
        prepare_data(g)
    assert [p.kind for p in e.value.report.errors] == ["no-labels"]
    assert prepare_data(g, require_labels=False).train.labels is None  # fine for predict


def test_skipping_can_leave_a_single_class_which_still_fails(tmp_path):
    f = tmp_path / "mail.jsonl"
    f.write_text('{"text": "a", "label": "ham"}\n{"text": "b", "label": "ham"}\n'
                 '{"text": "", "label": "spam"}\n{"text": "x", "label": "spam"\n')
    with pytest.raises(DataValidationError) as e:
        prepare_data(f, skip_bad=True)
    kinds = {p.kind for p in e.value.report.errors}
    assert kinds == {"single-class", "empty-class"}
    assert len(e.value.report.skipped) == 2


def test_empty_class_folder_unseen_test_labels_and_small_classes(tmp_path):
    root = tmp_path / "d"
    write_digit_folder(root / "train", n=2, classes=[0, 1])
    write_digit_folder(root / "train", n=1, classes=[2])
    (root / "train" / "9").mkdir()
    xs, ys = digit_arrays(4, [0, 5])
    test = from_arrays([xs[3], xs[7]], [0, 5])
    with pytest.raises(DataValidationError) as e:
        prepare_data(root / "train", test)
    r = e.value.report
    assert {(p.kind, p.origin) for p in r.errors} == {("empty-class", "train/9/"),
                                                      ("unseen-label", "X[1]")}
    assert [p.message for p in r.warnings if p.kind == "too-few-per-class"] == [
        "class '2' has only 1 item: it cannot be split stratified (it stays in the training part)"]


def test_unlabelled_table_for_prediction(tmp_path):
    f = tmp_path / "new.csv"
    f.write_text("text\nhello\nworld\n")
    prepared = prepare_data(f, require_labels=False)  # no 'label' column: that's fine here
    assert prepared.train.labels is None and len(prepared.train) == 2
    with pytest.raises(UserInputError, match="'label'"):
        prepare_data(f)


def test_datasets_in_memory_are_checked_too():
    ds = Dataset("text", ["fine", "  ", "also fine", "ok"], ["a", "a", "b", "b"])
    with pytest.raises(DataValidationError) as e:
        prepare_data(ds)
    (p,) = e.value.report.errors
    assert (p.kind, p.item, p.origin) == ("empty-text", 1, "<memory>[1]")
    prepared = prepare_data(ds, skip_bad=True)
    assert prepared.train.inputs == ["fine", "also fine", "ok"]
    with pytest.raises(UserInputError, match="from_arrays"):
        prepare_data(np.zeros((3, 8, 8)))


def test_summary_lists_50_per_kind_then_a_count():
    r = ValidationReport()
    for i in range(120):
        r.add("error", "empty-text", f"f.csv:{i + 2}", "the text is empty", "fill it in", item=i)
    r.add("error", "label-case", "labels", "labels 'a' and 'A' differ only in case")
    r.add("warning", "duplicates", "train set", "3 copies")
    text = r.summary()
    assert "f.csv:51" in text and "f.csv:52" not in text
    assert "... and 70 more 'empty-text' errors" in text and "label-case" in text
    assert text.count("hint: fill it in") == 1 and "1 warning(s)" in text
    assert not r.ok() and len(r.errors) == 121
    d = r.to_dict()
    assert d["errors"] == 121 and d["problems"][0]["origin"] == "f.csv:2"


@pytest.mark.skipif(not SPAM.exists(), reason=f"real data not found at {SPAM}")
def test_real_spamassassin_with_only_the_body_has_20_empty_texts():
    with pytest.raises(DataValidationError) as e:
        prepare_data(SPAM, text_columns=["body"])
    assert [p.kind for p in e.value.report.errors] == ["empty-text"] * 20
    prepared = prepare_data(SPAM, text_columns=["body"], skip_bad=True)
    assert len(prepared.train) == 6026 and len(prepared.report.skipped) == 20
    # body alone is ambiguous: one Yahoo-groups notice is 4 times ham and once spam
    warn = {p.kind: p.message for p in prepared.report.warnings}
    assert set(warn) == {"duplicates", "conflicting-labels"}
    assert "'ham' vs spamassassin.jsonl.gz:5915 'spam'" in warn["conflicting-labels"]


def test_truncation_is_caught_even_if_pil_was_told_to_tolerate_it(tmp_path, monkeypatch):
    from PIL import ImageFile

    paths = write_digit_folder(tmp_path / "d", n=2, classes=[0, 1])
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some training code does
    with pytest.raises(DataValidationError) as e:
        prepare_data(tmp_path / "d")
    assert [p.kind for p in e.value.report.errors] == ["truncated"]
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # and the global is given back


def test_modality_mismatch_between_train_and_test(tmp_path):
    paths = write_digit_folder(tmp_path / "d", n=2, classes=[0, 1])
    texts = from_arrays(["a zero", "a one"], ["0", "1"])
    with pytest.raises(DataValidationError) as e:
        prepare_data(tmp_path / "d", texts)
    assert "modality-mismatch" in [p.kind for p in e.value.report.errors]
    images = from_arrays([str(p) for p in paths], [p.parent.name for p in paths], modality="image")
    assert prepare_data(images).train.modality == "image"  # file paths in memory, checked too

