"""Time series: readers for the four ways series arrive, each item a float32 array ``(C, T)``.

* a table with one series per row in a list column (``--series-column NAME``): a JSON list
  ``[1, 2, 3]`` (univariate) or a list of lists ``[[...], [...]]`` (channels, multivariate), in
  CSV/TSV cells, JSON lines, JSON or Parquet; the label from ``--label-column`` as for texts;
* a table in long format ``id,time,value[,more value columns]`` (CSV/TSV, optionally ``.gz``):
  one row per time step, sorted by ``time`` within each ``id``; every value column is a channel;
  the label column, when present, must be the same on every row of an id;
* ``.npy`` arrays ``(N, T)`` or ``(N, C, T)`` (unlabelled), or ``.npz`` with ``X`` and ``y``;
  loaded without pickle;
* the UCR/UEA ``.ts`` format (Bagnall et al., the archive's own format: ``@`` header lines,
  then one series per line, channels separated by ``:``, the class label last, ``?`` missing).

Series of unequal length stay as they are (no resampling here): the time-series backbone pads
each batch to its longest series and masks the padding.  Missing values stay NaN until the
checks (:func:`transferkit.data._series_checks.check_series`) report them by origin.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserInputError
from ..errors import shown as printable
from ._tables import _byte_lines, decode, read_table, table_kind
from .dataset import Dataset

SERIES_EXTENSIONS = (".ts", ".npy", ".npz")
_ID_NAMES = ("id", "series_id", "series", "unique_id")
SAMPLING_RATIO = 4.0  # median time steps this far apart: "wildly different" sampling
_TIME_NAMES = ("time", "timestamp", "t", "ds", "date", "step")


def bundled_ucr_dir() -> Path | None:
    """Where the UCR/UEA sets bundled with ``aeon`` lie: ``$TRANSFERKIT_UCR_DIR``, else aeon's
    ``datasets/data`` folder (found without importing aeon), else ``None``."""
    env = os.environ.get("TRANSFERKIT_UCR_DIR")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return folder if folder.is_dir() else None


def is_series_file(path: Path) -> bool:
    return path.suffix.lower() in SERIES_EXTENSIONS


def ucr_pair(folder: Path) -> list[tuple[Path, str]] | None:
    """A UCR/UEA folder ``NAME/`` holding ``NAME_TRAIN.ts`` and ``NAME_TEST.ts``: the two files
    with their splits, else ``None``."""
    train, test = folder / f"{folder.name}_TRAIN.ts", folder / f"{folder.name}_TEST.ts"
    return [(train, "train"), (test, "test")] if train.is_file() and test.is_file() else None


def read_series(path: Path, columns: list[str] | None, label_column: str | None, report,
                split: str, label_optional: bool = False) -> Dataset:
    """Read one file of series into a Dataset of modality ``timeseries``.

    Args:
        path: ``.ts``, ``.npy``, ``.npz``, or a table (see :func:`table_kind`).
        columns: a table's series column (``--series-column``); ``None`` for a table means long
            format (columns ``id`` and ``time`` must exist).
        label_column: the label column of a table (``None``: unlabelled).
        report: per-row problems (a cell that is not a list of numbers, a long-format id whose
            label changes) go here; the item checks come after.
        split: recorded with each problem.
        label_optional: a missing label column means unlabelled data.

    Raises:
        UserInputError: the file as a whole is unusable.
    """
    ext = path.suffix.lower()
    if ext == ".ts":
        return read_ts(path, report, split)
    if ext in (".npy", ".npz"):
        return _read_numpy(path)
    if table_kind(path) is None:
        raise UserInputError(f"{printable(path.name)}: cannot read time series from "
                             f"{printable(ext or '(no extension)')} files",
                             "use a .ts (UCR/UEA), .npy/.npz array, or a table (.csv, .tsv, .jsonl, "
                             ".json, .parquet) with --series-column or in long format id,time,value")
    if columns:
        return _read_list_column(path, columns, label_column, report, split, label_optional)
    return _read_long(path, label_column, report, split, label_optional)


# ----------------------------------------------------------------------------- arrays
def series_array(x: Any) -> np.ndarray:
    """One series as float32 ``(C, T)``: ``(T,)`` becomes ``(1, T)``.

    Raises:
        ValueError: not numbers, or not 1-D/2-D.
    """
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"a series must be (T,) or (C, T), not of shape {a.shape}")
    return np.ascontiguousarray(a)


def series_from_arrays(X: Any) -> list[np.ndarray]:
    """``(N, T)``, ``(N, C, T)`` or a list of ``(T,)``/``(C, T)`` -> a list of ``(C, T)`` float32.

    Raises:
        UserInputError: naming the first item that is not a series of numbers.
    """
    if isinstance(X, np.ndarray) and X.ndim in (2, 3) and X.dtype.kind in "biuf":
        return [series_array(x) for x in X]
    out = []
    for i, x in enumerate(X):
        try:
            out.append(series_array(x))
        except (TypeError, ValueError) as e:
            raise UserInputError(f"X[{i}] is not a time series: {e}",
                                 "give each series as numbers (T,) or channels x time (C, T)") from None
    return out


def _read_numpy(path: Path) -> Dataset:
    try:
        with open(path, "rb") as f:
            loaded = np.load(f, allow_pickle=False)  # never a pickle
            if isinstance(loaded, np.lib.npyio.NpzFile):
                arrays = {k: loaded[k] for k in loaded.files}
            else:
                arrays = {"X": loaded}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserInputError(f"cannot read {printable(path.name)}: {e}",
                             "save the series with numpy.save (X of shape (N, T) or (N, C, T)) or "
                             "numpy.savez(path, X=X, y=y); object arrays are refused (no pickle)") from None
    if "X" not in arrays:
        raise UserInputError(f"{printable(path.name)} holds {sorted(arrays)} but no array 'X'",
                             "save it with numpy.savez(path, X=series, y=labels)")
    X = arrays["X"]
    if X.ndim not in (2, 3) or X.dtype.kind not in "biuf":
        raise UserInputError(f"{printable(path.name)}: X has shape {X.shape} and dtype {X.dtype}",
                             "X must be numbers of shape (N, T) or (N, C, T)")
    labels = None
    if "y" in arrays:
        y = arrays["y"]
        if y.ndim != 1 or len(y) != len(X):
            raise UserInputError(f"{printable(path.name)}: y has shape {y.shape} for {len(X)} series",
                                 "give one label per series: y of shape (N,)")
        labels = [str(v) for v in y.tolist()]
    name = printable(path.name)
    return Dataset("timeseries", series_from_arrays(X), labels, [f"{name}[{i}]" for i in range(len(X))],
                   source=str(path))


# ----------------------------------------------------------------------------- .ts
def read_ts(path: Path, report, split: str) -> Dataset:
    """The UCR/UEA ``.ts`` format: ``@`` header, then ``dim1:dim2:...:label`` lines.

    A line that cannot be parsed is a ``bad-row`` error at ``file.ts:LINE`` (not an item).
    """
    name = printable(path.name)
    header: dict[str, str] = {}
    inputs, labels, origins = [], [], []
    in_data = False
    for no, raw in enumerate(_byte_lines(path), 1):
        line = raw.decode("utf-8", "replace").strip()
        if not line or line[0] in "#%":  # comments (UEA files use both)
            continue
        if not in_data:
            if line.startswith("@"):
                key, _, value = line[1:].partition(" ")
                header[key.lower()] = value.strip().lower()
                in_data = key.lower() == "data"
                continue
            raise UserInputError(f"{name}:{no}: data before the @data line",
                                 "a .ts file starts with @-header lines and @data")
        labelled = header.get("classlabel", "false").startswith("true") or \
            header.get("targetlabel", "false") == "true"
        parts = line.split(":")
        label = parts.pop().strip() if labelled else None
        origin = f"{name}:{no}"
        try:
            chans = [_ts_values(p) for p in parts]
            if header.get("timestamps", "false") == "true":
                raise ValueError("time stamps (@timeStamps true) are not read; save the values only")
            if len({len(c) for c in chans}) != 1:
                raise ValueError("its channels differ in length: " + ", ".join(str(len(c)) for c in chans))
        except ValueError as e:
            report.add("error", "bad-row", origin, f"not a series: {e}",
                       "each line is comma-separated values per channel, channels separated by ':', "
                       "the label last", split=split)
            continue
        inputs.append(np.asarray(chans, dtype=np.float32))
        labels.append(label)
        origins.append(origin)
    if not in_data:
        raise UserInputError(f"{name} has no @data line: not a UCR/UEA .ts file",
                             "see https://www.aeon-toolkit.org for the .ts format")
    if not inputs and not report.errors:
        raise UserInputError(f"{name} has no series after @data", "check that you passed the right file")
    has_labels = bool(labels) and all(lab is not None for lab in labels)
    return Dataset("timeseries", inputs, labels if has_labels else None, origins, source=str(path))


def _ts_values(text: str) -> list[float]:
    if not text.strip():
        raise ValueError("a channel is empty")
    return [float("nan") if v.strip() == "?" else float(v) for v in text.split(",")]


# ----------------------------------------------------------------------------- tables
def _read_list_column(path: Path, columns: list[str], label_column, report, split,
                      label_optional) -> Dataset:
    """One series per row: the table reader reads the cells (as JSON text), then each is parsed."""
    if len(columns) != 1:
        raise UserInputError(f"give one series column, not {len(columns)} ({', '.join(columns)})",
                             "a multivariate series is one cell holding a list of lists (channels)")
    ds, cols = read_table(path, text_columns=columns, label_column=label_column, modality="text",
                          report=report, split=split, label_optional=label_optional)
    keep, inputs = [], []
    for i, cell in enumerate(ds.inputs):
        try:
            inputs.append(series_array(_cell_values(cell)))
            keep.append(i)
        except (TypeError, ValueError) as e:
            report.add("error", "bad-row", f"{ds.origins[i]} column '{printable(cols[0])}'",
                       f"not a series: {e}", "write the series as a JSON list of numbers, e.g. "
                       "[0.1, 0.5, 0.2] (several channels: [[...], [...]]); null for a missing value",
                       split=split)
    # Problems already recorded by item index (encoding) must follow the items that stay.
    moved = {old: new for new, old in enumerate(keep)}
    for p in report.problems:
        if p.split == split and p.item is not None and p.item in moved:
            p.item = moved[p.item]
    labels = None if ds.labels is None else [ds.labels[i] for i in keep]
    return Dataset("timeseries", inputs, labels, [ds.origins[i] for i in keep], source=str(path))


def _cell_values(cell: str) -> Any:
    text = cell.strip()
    if not text:
        raise ValueError("the cell is empty")
    if text[0] != "[":
        text = "[" + text.replace(";", ",") + "]"  # "1, 2, 3" or "1;2;3" in a CSV cell
    values = json.loads(text)
    if not isinstance(values, list) or not values:
        raise ValueError("expected a non-empty list")
    return _nulls_to_nan(values)


def _nulls_to_nan(v: Any) -> Any:
    if isinstance(v, list):
        return [_nulls_to_nan(x) for x in v]
    if v is None:
        return float("nan")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{printable(repr(v))} is not a number")
    return v


def _read_long(path: Path, label_column, report, split, label_optional) -> Dataset:
    """Long format: rows ``id, time, value[, ...]`` -> one series per id, sorted by time."""
    name = printable(path.name)
    if table_kind(path) not in ("csv", "tsv"):
        raise UserInputError(f"{name}: long-format series are read from CSV/TSV tables",
                             "save it as CSV with columns id,time,value, or name the list column with "
                             "--series-column")
    text, _ = decode(b"".join(_byte_lines(path)))
    rows = csv.reader(io.StringIO(text), delimiter="\t" if table_kind(path) == "tsv" else ",")
    head = [h.strip() for h in next(rows, [])]
    low = [h.casefold() for h in head]
    id_col = next((low.index(n) for n in _ID_NAMES if n in low), None)
    time_col = next((low.index(n) for n in _TIME_NAMES if n in low), None)
    if id_col is None or time_col is None:
        raise UserInputError(f"{name} has columns {', '.join(map(repr, head))}: neither a series column "
                             "was named nor the long format id,time,value found",
                             "pass --series-column NAME for one series per row (a JSON list), or give "
                             "columns 'id' and 'time' (one row per time step)")
    lab = low.index(label_column.casefold()) if label_column and label_column.casefold() in low else None
    if label_column and lab is None and not label_optional:
        raise UserInputError(f"{name} has no label column '{printable(label_column)}' (columns: "
                             f"{', '.join(map(repr, head))})", "pass --label-column NAME")
    values = [j for j in range(len(head)) if j not in (id_col, time_col, lab)]
    if not values:
        raise UserInputError(f"{name} has no value column besides id and time",
                             "add a column 'value' (several columns: one channel each)")
    series: dict[str, dict[str, Any]] = {}
    for no, row in enumerate(rows, 2):
        if not any(c.strip() for c in row):
            continue
        origin = f"{name}:{no}"
        try:
            if len(row) != len(head):
                raise ValueError(f"{len(row)} fields, the header has {len(head)}")
            t = float(row[time_col]) if _is_number(row[time_col]) else np.datetime64(row[time_col].strip())
            v = [float(row[j]) if row[j].strip() not in ("", "?", "NA", "NaN", "nan") else float("nan")
                 for j in values]
        except ValueError as e:
            report.add("error", "bad-row", origin, f"cannot read the row: {e}",
                       "time must be a number or an ISO date, values numbers (empty or ? when missing)",
                       split=split)
            continue
        s = series.setdefault(row[id_col].strip(), {"rows": [], "label": None, "first": no, "labels": set()})
        s["rows"].append((t, v, no))
        if lab is not None:
            s["labels"].add(row[lab].strip())
    inputs, labels, origins, steps = [], [], [], {}
    for sid, s in series.items():
        rows_ = sorted(s["rows"], key=lambda r: r[0])
        origin = f"{name} id '{printable(sid)}' (line {s['first']})"
        times = [r[0] for r in rows_]
        dup = next((rows_[k][2] for k in range(1, len(times)) if times[k] == times[k - 1]), None)
        if dup is not None:
            report.add("error", "bad-row", f"{name}:{dup}", f"id '{printable(sid)}' has this time twice",
                       "keep one row per id and time", split=split)
            continue
        if lab is not None and len(s["labels"]) != 1:
            report.add("error", "bad-label", origin, f"the label changes within the series: "
                       f"{', '.join(sorted(map(printable, s['labels'])))}",
                       "a series has one label: make it the same on every row of the id", split=split)
            continue
        inputs.append(np.asarray([r[1] for r in rows_], dtype=np.float32).T.copy())
        labels.append(next(iter(s["labels"])) if lab is not None else None)
        origins.append(origin)
        steps[len(inputs) - 1] = _median_step(times)
    _check_sampling(steps, origins, report, split)
    return Dataset("timeseries", inputs, labels if lab is not None else None, origins, source=str(path))


def _check_sampling(steps: dict[int, float | None], origins: list[str], report, split: str) -> None:
    """Series sampled at wildly different rates (median time step 4x apart or more): a warning
    naming the fastest and the slowest (the network sees steps, not seconds)."""
    known = {i: s for i, s in steps.items() if s}
    if len(known) < 2:
        return
    fast, slow = min(known, key=known.get), max(known, key=known.get)
    if known[slow] / known[fast] >= SAMPLING_RATIO:
        report.add("warning", "sampling-rate", f"{split} set", f"the series are sampled at very "
                   f"different rates: median time step {known[fast]:g} at {origins[fast]} but "
                   f"{known[slow]:g} at {origins[slow]}", "resample them to one rate before training "
                   "(the encoder sees time steps, not time)", split=split)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _median_step(times: list) -> float | None:
    if len(times) < 2:
        return None
    t = np.asarray(times)
    d = np.diff(t)
    if d.dtype.kind == "m":
        d = d / np.timedelta64(1, "s")
    return float(np.median(d.astype(float)))
