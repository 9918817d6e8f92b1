"""The time-series modality's data layer: readers, checks, --skip-bad, hashing, split."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from transferkit.data import from_arrays, prepare_data, stratified_split
from transferkit.errors import DataValidationError, UserInputError

UCR = Path(__file__).parent / "data" / "ucr" / "UnitTest"


def _waves(n: int = 12, t: int = 30, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 6.28, t)
    X = [np.sin(x * (1 + i % 2)) + 0.1 * rng.normal(size=t) for i in range(n)]
    return np.asarray(X, np.float32), ["slow" if i % 2 == 0 else "fast" for i in range(n)]


def test_real_ucr_folder_reads_train_and_test():
    p = prepare_data(UCR, skip_bad=True)
    assert (len(p.train), p.train.modality, p.train.classes) == (20, "timeseries", ["1", "2"])
    assert p.train.inputs[0].shape == (1, 24) and p.train.inputs[0].dtype == np.float32
    assert p.train.origins[0] == "UnitTest_TRAIN.ts:12"
    # one test series is a copy of a training one: reported by line, dropped with --skip-bad
    assert [s["origin"] for s in p.report.skipped] == ["UnitTest_TEST.ts:33"]
    assert len(p.test) == 21


def test_ts_file_multivariate_missing_and_bad_lines(tmp_path):
    f = tmp_path / "m.ts"
    f.write_text("@problemName m\n@univariate false\n@classLabel true a b\n@data\n"
                 + "".join(f"{','.join(['1', '2', '3', '4', '5'])}:{','.join(['5', '4', '3', '2', str(i)])}:a\n"
                           for i in range(3))
                 + "1,2,?,4,5:1,2,3,4,5:b\n1,2,3:1,2:b\n" + "".join(f"9,8,7,6,{i}:1,1,1,2,2:b\n" for i in range(3)))
    with pytest.raises(DataValidationError) as e:
        prepare_data(f)
    problems = {(p.kind, p.origin) for p in e.value.report.errors}
    assert ("missing-values", "m.ts:8") in problems and ("bad-row", "m.ts:9") in problems
    p = prepare_data(f, skip_bad=True)
    assert len(p.train) == 6 and p.train.inputs[0].shape == (2, 5)
    assert {s["origin"] for s in p.report.skipped} == {"m.ts:8", "m.ts:9"}


def test_list_column_csv_and_jsonl(tmp_path):
    X, y = _waves()
    csv_ = tmp_path / "s.csv"
    csv_.write_text("series,label\n" + "".join(f'"{json.dumps(x.round(4).tolist())}",{lab}\n'
                                                for x, lab in zip(X, y)) + '"[1, 2, ""x""]",slow\n')
    with pytest.raises(DataValidationError) as e:
        prepare_data(csv_, text_columns=["series"], modality="timeseries")
    assert [(p.kind, p.origin) for p in e.value.report.errors] == [("bad-row", "s.csv:14 column 'series'")]
    p = prepare_data(csv_, text_columns=["series"], modality="timeseries", skip_bad=True)
    assert len(p.train) == 12 and p.train.labels[:2] == ["slow", "fast"]
    jl = tmp_path / "s.jsonl"
    jl.write_text("".join(json.dumps({"s": [x.tolist(), (x * 2).tolist()], "label": lab}) + "\n"
                          for x, lab in zip(X, y)))
    p = prepare_data(jl, text_columns=["s"], modality="timeseries")
    assert p.train.inputs[3].shape == (2, 30)


def test_long_format_labels_sampling_and_duplicates(tmp_path):
    rows = ["id,time,value,temp,label"]
    for sid in range(8):
        step = 10 if sid == 7 else 1  # one series sampled 10x more slowly
        rows += [f"s{sid},{k * step},{np.sin(k / (1 + sid % 2)):.4f},{k},{'a' if sid % 2 else 'b'}" for k in range(12)]
    rows.append("s0,3,0.5,1,b")  # time 3 twice in s0
    f = tmp_path / "long.csv"
    f.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataValidationError) as e:
        prepare_data(f, modality="timeseries")  # no series column, columns id and time: long format
    assert ("bad-row", "long.csv:98") in {(p.kind, p.origin) for p in e.value.report.errors}
    p = prepare_data(f, modality="timeseries", skip_bad=True)
    assert len(p.train) == 7 and p.train.inputs[0].shape == (2, 12)
    assert any(w.kind == "sampling-rate" and "id 's7'" in w.message for w in p.report.warnings)


def test_npy_npz_and_arrays(tmp_path):
    X, y = _waves()
    np.save(tmp_path / "x.npy", X)
    p = prepare_data(tmp_path / "x.npy", require_labels=False)
    assert p.train.labels is None and p.train.origins[1] == "x.npy[1]"
    np.savez(tmp_path / "xy.npz", X=X[:, None, :].repeat(3, axis=1), y=np.array(y))
    p = prepare_data(tmp_path / "xy.npz")
    assert p.train.inputs[0].shape == (3, 30) and p.train.classes == ["fast", "slow"]
    np.save(tmp_path / "obj.npy", np.array([[1, 2], "x"], dtype=object), allow_pickle=True)
    with pytest.raises(UserInputError, match="no pickle"):
        prepare_data(tmp_path / "obj.npy", require_labels=False)


def test_checks_short_constant_channels_unequal():
    X, y = _waves()
    items = [x for x in X] + [np.ones(30), np.arange(3.0), np.stack([X[0], X[1]]), X[0][:6]]
    ds = from_arrays(items, y + ["slow", "fast", "slow", "fast"], modality="timeseries")
    with pytest.raises(DataValidationError) as e:
        prepare_data(ds)
    kinds = {(p.kind, p.origin) for p in e.value.report.errors}
    assert kinds == {("too-short", "X[13]"), ("channel-count", "X[14]")}
    warned = {w.kind for w in e.value.report.warnings}
    assert {"constant-series", "unequal-lengths"} <= warned


def test_series_hash_and_split_like_other_modalities():
    X, y = _waves(20)
    ds = from_arrays(X, y, modality="timeseries")
    again = from_arrays(X.copy(), y, modality="timeseries")
    assert ds.fingerprint() == again.fingerprint()
    X2 = X.copy()
    X2[3, 5] += 1e-3
    assert from_arrays(X2, y, modality="timeseries").content_hashes()[3] != ds.content_hashes()[3]
    tr, te = stratified_split(ds, test_size=0.25, seed=0)
    assert len(tr) + len(te) == 20 and set(tr.labels) == set(te.labels)


def test_unusable_sources_raise_user_errors(tmp_path):
    f = tmp_path / "wide.csv"
    f.write_text("a,b,label\n1,2,x\n")
    with pytest.raises(UserInputError, match="long format"):
        prepare_data(f, modality="timeseries")
    t = tmp_path / "bad.ts"
    t.write_text("1,2,3:a\n")
    with pytest.raises(UserInputError, match="@data"):
        prepare_data(t)


def test_cli_series_column_reads_a_list_column(tmp_path, capsys):
    from transferkit.cli import main

    X, y = _waves()
    f = tmp_path / "s.jsonl"
    f.write_text("".join(json.dumps({"s": x.tolist(), "label": lab}) + "\n" for x, lab in zip(X, y)))
    assert main(["validate", "--data", str(f), "--series-column", "s"]) == 0
    assert "12 items, 2 classes" in capsys.readouterr().out
