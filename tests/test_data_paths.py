"""Tables that list image or audio files (``path_column`` / ``--path-column``): paths relative to
the table's folder, the modality from the files' extensions, labels read for every task, and bad
rows (empty cell, missing or unreadable file) reported at ``table.csv:LINE column 'NAME'``."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

import transferkit as tk
from transferkit.cli import main
from transferkit.data import ValidationReport, prepare_data, read_source
from transferkit.errors import DataValidationError, UserInputError

from data_fixtures import digit_arrays, sine, write_wav


def _digits(folder: Path, n_per_class: int, classes=range(10)) -> list[tuple[str, int]]:
    """Real handwritten digits saved as PNGs under ``folder/img``: ``(relative path, digit)``."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (x, y) in enumerate(zip(*digit_arrays(n_per_class, classes))):
        Image.fromarray(x).convert("RGB").resize((32, 32)).save(folder / "img" / f"d{k:03d}.png")
        rows.append((f"img/d{k:03d}.png", y))
    return rows


def _csv(path: Path, header: list[str], rows) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_csv_paths_are_read_from_the_tables_folder_and_the_modality_from_their_extensions(tmp_path):
    rows = _digits(tmp_path, 2, classes=range(3))
    table = _csv(tmp_path / "digits.csv", ["file", "label"], [(p, f"digit{y}") for p, y in rows])
    ds = read_source(table, path_column="file", report=ValidationReport())
    assert ds.modality == "image" and ds.task == "classification"
    assert ds.inputs[0] == str(tmp_path / "img" / "d000.png") and Path(ds.inputs[0]).is_file()
    assert ds.labels[:2] == ["digit0", "digit0"] and ds.origins[0] == "digits.csv:2"
    absolute = _csv(tmp_path / "abs.csv", ["file", "label"], [(str(tmp_path / p), y) for p, y in rows])
    assert read_source(absolute, path_column="file", report=ValidationReport()).inputs == ds.inputs


def test_regression_and_multi_label_targets_beside_the_paths(tmp_path):
    rows = _digits(tmp_path, 3, classes=range(4))
    reg = prepare_data(_csv(tmp_path / "values.csv", ["path", "value"], [(p, float(y)) for p, y in rows]),
                       path_column="path", label_column="value", task="regression")
    assert reg.task == "regression" and reg.train.labels[-1] == 3.0
    jl = tmp_path / "sets.jsonl"
    jl.write_text("".join(json.dumps({"image": p, "digits": ["even" if y % 2 == 0 else "odd", f"d{y}"]}) + "\n"
                          for p, y in rows))
    ml = prepare_data(jl, path_column="image", label_column="digits")
    assert ml.task == "multi-label" and ml.train.labels[0] == ("d0", "even")
    tsv = tmp_path / "sets.tsv"
    tsv.write_text("image\tdigits\n" + "".join(f"{p}\t{'small' if y < 2 else 'large'};d{y}\n" for p, y in rows))
    sep = prepare_data(tsv, path_column="image", label_column="digits", label_sep=";")
    assert sep.task == "multi-label" and sep.train.labels[-1] == ("d3", "large")


def test_audio_files_listed_in_a_table(tmp_path):
    (tmp_path / "wav").mkdir()
    for i in range(4):
        write_wav(tmp_path / "wav" / f"s{i}.wav", sine(freq=220.0 * (i + 1)))
    table = _csv(tmp_path / "sounds.csv", ["clip", "pitch"], [(f"wav/s{i}.wav", 220.0 * (i + 1)) for i in range(4)])
    ds = read_source(table, path_column="clip", label_column="pitch", task="regression", report=ValidationReport())
    assert ds.modality == "audio" and ds.labels == [220.0, 440.0, 660.0, 880.0]


def test_bad_rows_are_reported_at_their_line_and_column_and_skip_bad_leaves_them_out(tmp_path):
    rows = _digits(tmp_path, 2, classes=range(3))
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png at all")
    table = _csv(tmp_path / "t.csv", ["file", "label"],
                 [*[(p, y) for p, y in rows], ("img/gone.png", 1), ("", 2), ("img/broken.png", 0)])
    with pytest.raises(DataValidationError) as e:
        prepare_data(table, path_column="file")
    at = {p.origin: p.kind for p in e.value.report.errors}
    assert at["t.csv:8 column 'file'"] == "missing-file"
    assert at["t.csv:9 column 'file'"] == "missing-path"
    assert "t.csv:10 column 'file'" in at  # an unreadable image
    kept = prepare_data(table, path_column="file", skip_bad=True)
    assert len(kept.train) == len(rows) and len(kept.report.skipped) == 3
    assert {s["origin"] for s in kept.report.skipped} >= {"t.csv:8", "t.csv:9 column 'file'", "t.csv:10"}


def test_a_json_lines_row_without_the_path_key_is_a_bad_row(tmp_path):
    rows = _digits(tmp_path, 2, classes=range(2))
    jl = tmp_path / "t.jsonl"
    jl.write_text("".join(json.dumps({"file": p, "label": str(y)}) + "\n" for p, y in rows)
                  + json.dumps({"label": "1"}) + "\n")
    with pytest.raises(DataValidationError) as e:
        prepare_data(jl, path_column="file")
    (p,) = e.value.report.errors
    assert p.origin == "t.jsonl:5 column 'file'" and p.kind == "missing-path"


def test_the_whole_table_is_refused_clearly(tmp_path):
    rows = _digits(tmp_path, 1, classes=range(2))
    table = _csv(tmp_path / "t.csv", ["file", "label"], rows)
    with pytest.raises(UserInputError, match="'path' not found.*'file'"):
        prepare_data(table, path_column="path")
    with pytest.raises(UserInputError, match="is a folder"):
        prepare_data(tmp_path / "img", path_column="file")
    with pytest.raises(UserInputError, match="either text columns"):
        prepare_data(table, path_column="file", text_columns=["file"])
    with pytest.raises(UserInputError, match="modality is 'text'"):
        prepare_data(table, path_column="file", modality="text")
    notes = _csv(tmp_path / "notes.csv", ["file", "label"], [("a.txt", 0), ("b.txt", 1)])
    with pytest.raises(UserInputError, match="no image or audio files"):
        prepare_data(notes, path_column="file")
    with pytest.raises(UserInputError, match="either text_columns"):
        tk.FitConfig(data=str(table), path_column="file", text_columns="file")


def test_fit_predict_evaluate_from_the_cli_on_a_table_of_images(tiny_image_dir, tmp_path, capsys):
    rows = _digits(tmp_path, 6, classes=range(10))
    table = _csv(tmp_path / "values.csv", ["file", "value"], [(p, float(y)) for p, y in rows])
    out = tmp_path / "run"
    args = ["fit", "--data", str(table), "--path-column", "file", "--label-column", "value", "--task", "regression",
            "--model", str(tiny_image_dir), "--out", str(out), "--no-control"]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["path_column"] == "file" and cfg["task"] == "regression"
    assert json.loads((out / "model_card.json").read_text())["path_column"] == "file"
    unlabelled = _csv(tmp_path / "new.csv", ["file"], [(p,) for p, _ in rows[:3]])
    assert main(["predict", str(out), str(unlabelled), "--out", str(tmp_path / "p.json")]) == 0
    preds = json.loads((tmp_path / "p.json").read_text())
    assert [p["origin"] for p in preds] == ["new.csv:2", "new.csv:3", "new.csv:4"]
    assert all(isinstance(p["prediction"], float) for p in preds)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(table), "--out", str(tmp_path / "e.json")]) == 0
    assert "RMSE" in capsys.readouterr().out
    m = json.loads((tmp_path / "e.json").read_text())
    assert m["n"] == len(rows) and m["rmse_ci"][0] <= m["rmse"] <= m["rmse_ci"][1]
    broken = _csv(tmp_path / "broken.csv", ["file", "value"], [("img/nowhere.png", 1.0), *rows[:4]])
    assert main(["validate", "--data", str(broken), "--path-column", "file", "--label-column", "value",
                 "--task", "regression"]) == 2
    assert "broken.csv:2 column 'file'" in capsys.readouterr().err
