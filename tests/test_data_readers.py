"""Reading tables, folders, arrays and audio as a user would hand them over."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from PIL import Image

from transferkit.data import Dataset, ValidationReport, from_arrays, load_audio, load_image, read_source
from transferkit.data.readers import DataWarning
from transferkit.errors import UserInputError

from data_fixtures import SPAM, digit_arrays, float_wav_bytes, sine, write_digit_folder, write_wav

ROWS = [("Cheap meds now", "Buy cheap meds, limited offer", "spam"),
        ("Meeting", "See you at 10, bring the slides", "ham"),
        ("Re: Meeting", "Thanks!", "ham")]


def kinds(report: ValidationReport) -> list[str]:
    return [p.kind for p in report.problems]


# ----------------------------------------------------------------------------- tables
def test_csv_reads_items_labels_and_line_origins(tmp_path):
    f = tmp_path / "mail.csv"
    # a quoted field spanning two lines: the next row's origin must still be its real line
    f.write_text('subject,body,label\n"Hi","line one\nline two",ham\nWin,"Click, now",spam\n')
    r = ValidationReport()
    ds = read_source(f, text_columns=["subject", "body"], report=r)
    assert ds.modality == "text" and len(ds) == 2 and r.problems == []
    assert ds.inputs == ["Hi\nline one\nline two", "Win\nClick, now"]
    assert ds.labels == ["ham", "spam"]
    assert ds.origins == ["mail.csv:2", "mail.csv:4"]


def test_tsv_jsonl_jsonl_gz_and_parquet_read_the_same(tmp_path):
    rows = [{"text": f"{s}. {b}", "label": lab} for s, b, lab in ROWS]
    (tmp_path / "a.tsv").write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in rows))
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "a.jsonl").write_text(lines)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]}),
                   tmp_path / "a.parquet")
    want = [r["text"] for r in rows]
    for name in ("a.tsv", "a.jsonl", "a.jsonl.gz", "a.parquet"):
        ds = read_source(tmp_path / name)  # "text" is picked as the one plausible column
        assert ds.inputs == want and ds.labels == ["spam", "ham", "ham"], name
    assert read_source(tmp_path / "a.jsonl.gz").origins[2] == "a.jsonl.gz:3"


def test_json_list_with_several_text_columns_joined(tmp_path):
    f = tmp_path / "mail.json"
    f.write_text(json.dumps([{"subject": s, "body": b, "label": lab} for s, b, lab in ROWS]))
    ds = read_source(f, text_columns=["subject", "body"])
    assert ds.inputs[0] == "Cheap meds now\nBuy cheap meds, limited offer"
    assert ds.origins[1] == "mail.json[1]"
    # columns-of-lists (pandas orient="list") is a table too
    g = tmp_path / "cols.json"
    g.write_text(json.dumps({"text": ["a b", "c d"], "label": [0, 1]}))
    assert read_source(g).labels == ["0", "1"]


def test_missing_column_names_present_columns_and_closest(tmp_path):
    f = tmp_path / "mail.csv"
    f.write_text("subject,body,label\nhi,there,ham\n")
    with pytest.raises(UserInputError) as e:
        read_source(f, text_columns=["bdy"], label_column="lable")
    msg = str(e.value)
    assert "'bdy'" in msg and "'lable'" in msg and "'subject', 'body', 'label'" in msg
    assert "did you mean 'body'" in e.value.hint and "did you mean 'label'" in e.value.hint


def test_ambiguous_text_column_asks_for_text_columns(tmp_path):
    f = tmp_path / "mail.csv"
    f.write_text("subject,sender,label\nhi,bob,ham\n")
    with pytest.raises(UserInputError) as e:
        read_source(f)
    assert "'subject', 'sender', 'label'" in str(e.value) and "text_columns" in e.value.hint


def test_bad_json_line_is_reported_at_its_line_and_the_rest_is_read(tmp_path):
    f = tmp_path / "mail.jsonl"
    good = [json.dumps({"text": f"message {i}", "label": "ham" if i % 2 else "spam"}) for i in range(5)]
    good[2] = '{"text": "oops", "label": "ham"'  # line 3: unclosed object
    f.write_text("\n".join(good) + "\n\n")
    r = ValidationReport()
    ds = read_source(f, report=r)
    assert len(ds) == 4
    (p,) = r.problems
    assert (p.kind, p.origin, p.severity, p.item) == ("bad-json", "mail.jsonl:3", "error", None)
    # without a report, reading still never raises on a bad row, but it is not silent either
    with pytest.warns(DataWarning, match="mail.jsonl:3"):
        assert len(read_source(f)) == 4


def test_bad_encoding_reported_at_file_line_with_byte_offset(tmp_path):
    f = tmp_path / "mail.csv"
    head = "text,label,notes\nhello there,ham,ok\n".encode()
    bad_row = "caf".encode() + b"\xe9 au lait,ham,ok\n"  # Latin-1 "é" inside a UTF-8 file
    unused = "fine text,spam,".encode() + b"\xff\n"       # a bad byte in a column not used
    f.write_bytes(head + bad_row + unused)
    r = ValidationReport()
    ds = read_source(f, report=r)
    assert len(ds) == 3  # the row is kept (decoded with U+FFFD) but marked as an error
    errors = [p for p in r.problems if p.severity == "error"]
    assert len(errors) == 1
    e = errors[0]
    assert (e.kind, e.origin, e.item) == ("bad-encoding", "mail.csv:3 column 'text'", 1)
    assert f"byte offset {len(head) + 3}" in e.message and "0xE9" in e.message
    assert "UTF-8" in e.hint
    assert ds.inputs[1] == "caf\ufffd au lait"
    warn = [p for p in r.problems if p.severity == "warning"]
    assert warn and warn[0].kind == "bad-encoding" and "mail.csv:4" in warn[0].message
    # the same in JSON lines, gzipped: the offset is in the uncompressed text
    first = b'{"text": "hello", "label": "ham"}\n'
    g = tmp_path / "mail.jsonl.gz"
    g.write_bytes(gzip.compress(first + b'{"text": "na\xefve", "label": "ham"}\n'))
    r = ValidationReport()
    ds = read_source(g, report=r)
    (e,) = r.problems
    assert (e.kind, e.origin, e.item) == ("bad-encoding", "mail.jsonl.gz:2 column 'text'", 1)
    assert f"byte offset {len(first) + 12}" in e.message and ds.inputs[1] == "na\ufffdve"


def test_empty_text_only_when_all_chosen_columns_are_blank(tmp_path):
    f = tmp_path / "mail.csv"
    f.write_text("subject,body,label\nHello,,ham\n,  ,spam\n,body only,ham\n")
    r = ValidationReport()
    read_source(f, text_columns=["subject", "body"], report=r)
    (p,) = r.problems
    assert (p.kind, p.origin, p.item) == ("empty-text", "mail.csv:3", 1)
    assert "'subject', 'body'" in p.message


def test_missing_label_is_an_error_at_its_line(tmp_path):
    f = tmp_path / "mail.jsonl"
    f.write_text('{"text": "a", "label": "ham"}\n{"text": "b"}\n{"text": "c", "label": "  "}\n')
    r = ValidationReport()
    ds = read_source(f, report=r)
    assert len(ds) == 1
    assert [(p.kind, p.origin) for p in r.problems] == [("missing-label", "mail.jsonl:2"),
                                                       ("missing-label", "mail.jsonl:3")]


def test_unclosed_quote_and_extra_fields_are_named(tmp_path):
    f = tmp_path / "mail.csv"
    f.write_text('text,label\nfine,ham\nsays "hi, there,spam\nok,ham\n"unclosed,spam\nx,ham\ny,spam\n')
    r = ValidationReport()
    ds = read_source(f, report=r)
    assert ds.inputs == ["fine", "ok"]
    got = [(p.kind, p.origin) for p in r.problems]
    assert got == [("bad-row", "mail.csv:3"), ("bad-row", "mail.csv:5")]
    assert "header has 2" in r.problems[0].message and "unclosed" in r.problems[1].hint


def test_long_fields_semicolons_and_unlabelled_tables(tmp_path):
    f = tmp_path / "long.csv"
    long_text = "word " * 60_000  # 300 KB: beyond csv's default 128 KiB field limit
    f.write_text(f'text;label\n"{long_text}";ham\nshort;spam\n')  # European ';' CSV
    ds = read_source(f)
    assert ds.inputs[0] == long_text and ds.labels == ["ham", "spam"]
    g = tmp_path / "unlabelled.csv"
    g.write_text("text\nhello\nworld\n")
    ds = read_source(g, label_column=None)
    assert ds.labels is None and ds.inputs == ["hello", "world"]


def test_whole_source_problems_raise_user_input_errors(tmp_path):
    (tmp_path / "emails.csv").write_text("text,label\n")
    with pytest.raises(UserInputError, match="no rows"):
        read_source(tmp_path / "emails.csv")
    with pytest.raises(UserInputError, match="does not exist") as e:
        read_source(tmp_path / "emails.cvs")
    assert "emails.csv" in e.value.hint
    (tmp_path / "book.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(UserInputError, match=r"\.xlsx") as e:
        read_source(tmp_path / "book.xlsx")
    assert "CSV" in e.value.hint
    (tmp_path / "data.xml").write_text("<a/>")
    with pytest.raises(UserInputError) as e:
        read_source(tmp_path / "data.xml")
    assert ".csv" in e.value.hint and ".parquet" in e.value.hint


def test_table_of_image_paths(tmp_path):
    paths = write_digit_folder(tmp_path / "imgs", n=1, classes=[0, 1])
    f = tmp_path / "labels.csv"
    rel = [p.relative_to(tmp_path).as_posix() for p in paths]
    f.write_text("path,label\n" + "".join(f"{p},{i}\n" for i, p in enumerate(rel)) + "imgs/gone.png,1\n")
    r = ValidationReport()
    ds = read_source(f, modality="image", text_columns=["path"], report=r)
    assert ds.modality == "image" and len(ds) == 3 and ds.labels == ["0", "1", "1"]
    assert load_image(ds.inputs[0]).size == (8, 8)
    (p,) = r.problems
    assert (p.kind, p.origin, p.item) == ("missing-file", "labels.csv:4", 2)


@pytest.mark.skipif(not SPAM.exists(), reason=f"real data not found at {SPAM}")
def test_real_spamassassin_reads_all_6046_mails():
    # its speed (goal < 10 s) is measured in benchmarks/bench_read.py, not asserted here
    r = ValidationReport()
    ds = read_source(SPAM, text_columns=["subject", "body"], label_column="label", report=r)
    assert len(ds) == 6046 and ds.classes == ["ham", "spam"]
    assert ds.labels.count("ham") == 4150
    # 20 bodies are empty, but subject + body never is
    assert r.problems == []


# ----------------------------------------------------------------------------- folders
def test_image_folder_ignores_hidden_files_and_reads_classes(tmp_path):
    write_digit_folder(tmp_path / "digits", n=2, classes=[3, 7])
    (tmp_path / "digits" / ".DS_Store").write_bytes(b"\0\1junk")
    (tmp_path / "digits" / "3" / "._d000.png").write_bytes(b"\0\5mac resource fork")
    (tmp_path / "digits" / "README.md").write_text("my digits")
    r = ValidationReport()
    ds = read_source(tmp_path / "digits", report=r)
    assert ds.modality == "image" and ds.labels == ["3", "3", "7", "7"]
    assert ds.origins[0] == "digits/3/d000.png"
    assert kinds(r) == ["ignored-file"]  # README is mentioned; hidden files are not


def test_non_image_file_inside_a_class_folder_is_an_error(tmp_path):
    write_digit_folder(tmp_path / "digits", n=2, classes=[0, 1])
    (tmp_path / "digits" / "1" / "labels.txt").write_text("1\n1\n")
    r = ValidationReport()
    ds = read_source(tmp_path / "digits", report=r)
    (p,) = r.errors
    assert (p.kind, p.origin, p.item) == ("not-an-image", "digits/1/labels.txt", 4)
    assert "contains text" in p.message and len(ds) == 5


def test_folder_of_text_files(tmp_path):
    for lab, texts in {"pos": ["great film", "loved it"], "neg": ["boring", "awful"]}.items():
        (tmp_path / "reviews" / lab).mkdir(parents=True)
        for i, t in enumerate(texts):
            (tmp_path / "reviews" / lab / f"{i}.txt").write_text(t)
    ds = read_source(tmp_path / "reviews")
    assert ds.modality == "text" and sorted(ds.inputs) == ["awful", "boring", "great film", "loved it"]


def test_train_test_layout_returns_a_pair(tmp_path):
    write_digit_folder(tmp_path / "d" / "train", n=2, classes=[0, 1])
    write_digit_folder(tmp_path / "d" / "test", n=1, classes=[0, 1])
    train, test = read_source(tmp_path / "d")
    assert (len(train), len(test)) == (4, 2)
    assert test.origins[0].startswith("d/test/0/")


# ----------------------------------------------------------------------------- arrays
def test_from_arrays_texts_and_labels():
    ds = from_arrays(["good", "bad"], np.array([1, 0]))
    assert ds.modality == "text" and ds.labels == ["1", "0"] and ds.origins == ["X[0]", "X[1]"]
    ds = from_arrays(["good", "bad"], [1, 0], classes=["neg", "pos"])
    assert ds.labels == ["pos", "neg"]
    # names that look like numbers are names, never silently re-read as indices
    assert from_arrays(["x", "y"], [1, 2], classes=["1", "2"]).labels == ["1", "2"]
    with pytest.raises(UserInputError, match="not in classes"):
        from_arrays(["x", "y"], ["1", "cat"], classes=["1", "2"])
    with pytest.raises(UserInputError, match="2 items but y has 3"):
        from_arrays(["a", "b"], [0, 1, 1])
    with pytest.raises(UserInputError, match=r"X\[1\] is a NoneType"):
        from_arrays(["a", None, "c"])


def test_from_arrays_uint8_and_float_images():
    X = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    ds = from_arrays(X, list("aabbb"))
    assert ds.modality == "image" and ds.inputs[0].shape == (28, 28) and ds.inputs[0].dtype == np.uint8
    assert load_image(ds.inputs[0]).mode == "RGB"
    unit = X.astype(np.float32) / 255.0
    ds2 = from_arrays(unit)
    assert np.array_equal(ds2.inputs[3], X[3])  # floats in [0, 1] are scaled by 255
    big = X.astype(np.float64) * 2  # 0..510: clipped, not rescaled
    assert from_arrays(big).inputs[0].max() == 255
    chw = np.zeros((2, 3, 16, 16), dtype=np.uint8)  # torch layout
    assert from_arrays(chw).inputs[0].shape == (16, 16, 3)
    with pytest.raises(UserInputError) as e:
        from_arrays(X.reshape(5, 784))
    assert "reshape(-1, 28, 28)" in e.value.hint


def test_from_arrays_audio_needs_a_rate():
    X = np.stack([sine(), sine(freq=220)])
    ds = from_arrays(X, ["a", "b"], modality="audio", sampling_rate=16000)
    assert ds.modality == "audio" and ds.sampling_rate == 16000 and ds.inputs[0].dtype == np.float32
    with pytest.raises(UserInputError, match="sampling rate"):
        from_arrays(X, modality="audio")


# ----------------------------------------------------------------------------- decoding
def test_load_image_converts_every_mode_to_rgb(tmp_path):
    x = digit_arrays(1, [5])[0][0]
    img = Image.fromarray(x)
    img.convert("CMYK").save(tmp_path / "c.jpg")
    for item in (img, img.convert("P"), img.convert("1"), str(tmp_path / "c.jpg")):
        assert load_image(item).mode == "RGB"
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_image(clear).getpixel((0, 0)) == (255, 255, 255)  # transparency -> white
    a16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(a16).save(tmp_path / "16.png")
    got = np.asarray(load_image(tmp_path / "16.png"))[:, :, 0]
    assert got.max() == round(63000 / 257) and got.min() == 0  # rescaled, not clipped at 255


def test_generated_sine_wav_reads_back(tmp_path):
    s = sine()
    for width in (1, 2, 3, 4):
        write_wav(tmp_path / f"s{width}.wav", s, width=width)
        x, rate = load_audio(str(tmp_path / f"s{width}.wav"), None)
        assert rate == 16000 and x.dtype == np.float32 and x.shape == s.shape
        assert np.abs(x - s).max() < (0.02 if width == 1 else 1e-3), width
    write_wav(tmp_path / "stereo.wav", np.stack([s, s], axis=1), channels=2)
    assert np.abs(load_audio(str(tmp_path / "stereo.wav"), None)[0] - s).max() < 1e-3
    (tmp_path / "f.wav").write_bytes(float_wav_bytes(s))  # float WAV: wave refuses, we don't
    assert np.abs(load_audio(str(tmp_path / "f.wav"), None)[0] - s).max() < 1e-6
    x, rate = load_audio(s, 8000)
    assert rate == 8000 and x.dtype == np.float32


def test_broken_wav_files_are_reported(tmp_path):
    root = tmp_path / "sounds"
    for lab in ("a", "b"):
        (root / lab).mkdir(parents=True)
        write_wav(root / lab / "ok.wav", sine(freq=300 if lab == "a" else 600))
    (root / "a" / "noise.wav").write_bytes(np.random.default_rng(0).bytes(500))
    good = (root / "b" / "ok.wav").read_bytes()
    (root / "b" / "cut.wav").write_bytes(good[: len(good) // 2])
    (root / "b" / "song.mp3").write_bytes(b"ID3\x03\x00" + b"\0" * 100)
    r = ValidationReport()
    ds = read_source(root, report=r)
    assert ds.modality == "audio" and len(ds) == 5
    got = {p.origin: p.kind for p in r.errors}
    assert got == {"sounds/a/noise.wav": "bad-audio", "sounds/b/cut.wav": "truncated",
                   "sounds/b/song.mp3": "bad-audio"}
    assert "ffmpeg" in next(p.hint for p in r.errors if p.origin.endswith("song.mp3"))


def test_dataset_hashes_filled_by_the_check_match_content_hashes(tmp_path):
    write_digit_folder(tmp_path / "d", n=1, classes=[0, 1])
    ds = read_source(tmp_path / "d")
    fresh = Dataset(ds.modality, ds.inputs, ds.labels, ds.origins)
    assert ds._hashes is not None and ds.content_hashes() == fresh.content_hashes()
