"""Reading user data into a :class:`Dataset`: folders, tables, arrays; audio decoding.

Reading never raises on a bad *item*: each one is recorded in a
:class:`~transferkit.data.report.ValidationReport` (file, line, what to do) and the caller
decides.  Only a source that is unusable as a whole (missing path, unknown format, no rows,
missing columns) raises :class:`UserInputError`.
"""
from __future__ import annotations

import difflib
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import UserInputError
from ..errors import shown as printable
from ._audio import AUDIO_EXTENSIONS, audio_array, load_audio
from ._images import IMAGE_EXTENSIONS, load_image, scale_to_uint8
from ._series import is_series_file, read_series, series_from_arrays, ucr_pair
from ._tables import TABLE_EXTENSIONS, clean, decode, read_table, table_kind
from ._task_labels import array_labels, check_task_options, resolve_task
from .checks import check_items
from .dataset import Dataset
from .report import ValidationReport

__all__ = ["read_source", "read_path", "from_arrays", "load_image", "load_audio",
           "IMAGE_EXTENSIONS", "AUDIO_EXTENSIONS"]

# Audio that no decoder here reads: still audio (the check reports each file with what to do).
_OTHER_AUDIO = (".m4a", ".aac", ".wma", ".aif", ".aiff")
TEXT_FILE_EXTENSIONS = (".txt",)
_JUNK = {"thumbs.db", "desktop.ini", "__macosx"}


# ----------------------------------------------------------------------------- entry point
def read_source(path: str | os.PathLike, *, text_columns: list[str] | None = None,
                label_column: str | None = "label", modality: str | None = None,
                report: ValidationReport | None = None, split: str = "train",
                task: str | None = None, label_sep: str | None = None,
                path_column: str | None = None) -> Dataset | tuple[Dataset, Dataset]:
    """Read a folder or a table into a Dataset, recording per-item problems.

    Args:
        path: a folder with one subfolder per class (images, ``.wav`` audio or ``.txt``
            texts; with ``train/`` and ``test/`` subfolders a pair is returned), or a table:
            ``.csv``, ``.tsv``, ``.jsonl``, ``.json``, each optionally ``.gz``, or ``.parquet``.
        text_columns: table columns holding the text (several are joined with ``"\\n"``),
            or the one column of file paths when ``modality`` is ``"image"``/``"audio"``.
        label_column: table column of class names; ``None`` for unlabelled data.
        modality: ``"text"``, ``"image"`` or ``"audio"``; guessed when ``None``.
        report: where per-item problems go.  When ``None``, problems are not lost either:
            they are shown as one :class:`DataWarning` (bad items stay in the Dataset,
            except rows that could not be parsed at all); :func:`prepare_data` re-checks
            the items of a Dataset it is given.
        split: ``"train"`` or ``"test"``, recorded in each problem.
        task: ``"classification"``, ``"regression"`` or ``"multi-label"``: how the labels are
            read (see :class:`Dataset`); ``None``: multi-label when every label is a JSON list
            (or ``label_sep`` is given), else classification.
        label_sep: multi-label: the separator of the label names in a label string.
        path_column: a table whose rows name image or audio files: the column of their paths
            (relative paths are read from the table's folder); the modality comes from the
            files' extensions unless ``modality`` is given.  A row with an empty cell, a
            missing or unreadable file is reported at ``table.csv:LINE column 'NAME'``.

    Returns:
        A Dataset, or ``(train, test)`` for a folder with ``train/`` and ``test/``.

    Raises:
        UserInputError: the source as a whole is unusable.  Never for a bad item.
    """
    own = report is None
    report = ValidationReport() if own else report
    out = read_path(Path(path), text_columns, label_column, modality, report, split,
                    task=task, label_sep=label_sep, path_column=path_column)
    if own and report.problems:
        warnings.warn(DataWarning(f"{printable(str(path))}:\n{report.summary()}\n  (collect "
                                  "these with "
                                  "report=ValidationReport(), or use prepare_data)"), stacklevel=2)
    return out


class DataWarning(UserWarning):
    """Problems found by :func:`read_source` when no report was passed to collect them."""


def read_path(path: Path, text_columns, label_column, modality, report, split,
              label_optional: bool = False, task: str | None = None,
              label_sep: str | None = None,
              path_column: str | None = None) -> Dataset | tuple[Dataset, Dataset]:
    """:func:`read_source` into a given report (``label_optional``: a missing label column
    means unlabelled data rather than an error)."""
    if modality not in (None, "text", "image", "audio", "timeseries"):
        raise UserInputError(f"unknown modality {modality!r}", "use 'text', 'image', 'audio' or 'timeseries'")
    check_task_options(task, label_sep)
    path = path.expanduser()
    if not path.exists():
        raise UserInputError(f"{printable(str(path))} does not exist", _suggest_path(path))
    if modality == "timeseries" or (path.is_file() and is_series_file(path)) or \
            (path.is_dir() and ucr_pair(path)):
        return _read_series(path, text_columns, label_column, report, split, label_optional, task,
                            label_sep)
    if path_column is not None:
        _check_path_options(path, text_columns, modality)
    if path.is_dir():
        out = _read_folder(path, modality, report, split)
        if isinstance(out, tuple):  # the test folder's labels are read as the training ones
            train = resolve_task(out[0], task, label_sep, report, "train")
            return train, resolve_task(out[1], train.task, label_sep, report, "test")
        return resolve_task(out, task, label_sep, report, split)
    kind = table_kind(path)
    if kind is None:
        ext = path.suffix.lower() or "(no extension)"
        hint = f"supported: a folder, or {', '.join(TABLE_EXTENSIONS)} (also .gz-compressed)"
        if ext in IMAGE_EXTENSIONS + AUDIO_EXTENSIONS:
            hint = "pass the folder that holds it (one subfolder per class)"
        elif ext in (".xlsx", ".xls", ".ods"):
            hint = "save the sheet as CSV (in Excel: Save As > 'CSV UTF-8') and pass that"
        raise UserInputError(f"{printable(path.name)}: cannot read {printable(ext)} files as a "
                             "data set", hint)
    if path_column is not None:  # read as file paths; the files' extensions tell the modality
        text_columns = [path_column]
    ds, cols = read_table(path, text_columns=text_columns, label_column=label_column,
                          modality=modality or ("image" if path_column else "text"), report=report,
                          split=split, label_optional=label_optional)
    if path_column is not None and modality is None:
        ds.modality = _listed_modality(ds.inputs, f"{path.name} column '{cols[0]}'")
    check_items(ds, report, split, what=", ".join(repr(c) for c in cols),
                column=cols[0] if path_column is not None else None)
    return resolve_task(ds, task, label_sep, report, split, label_column)


def _read_series(path: Path, columns, label_column, report, split, label_optional, task, label_sep):
    """Time series (see ``_series``): one file, or a UCR folder's ``*_TRAIN.ts``/``*_TEST.ts`` pair."""
    pair = ucr_pair(path) if path.is_dir() else None
    if path.is_dir() and not pair:
        raise UserInputError(f"{printable(str(path))} is a folder: time series are read from one file",
                             "pass a .ts, .npy/.npz or table file (or a UCR folder with NAME_TRAIN.ts and "
                             "NAME_TEST.ts)")
    sets = []
    for i, (f, name) in enumerate(pair or [(path, split)]):
        ds = read_series(f, columns, label_column, report, name, label_optional)
        check_items(ds, report, name)
        sets.append(resolve_task(ds, task if i == 0 else sets[0].task, label_sep, report, name, label_column))
    return tuple(sets) if pair else sets[0]


def _check_path_options(path: Path, text_columns, modality) -> None:
    """``path_column`` names the files of a table: no folder, no texts."""
    if path.is_dir():
        raise UserInputError(f"{printable(str(path))} is a folder; path_column (--path-column) "
                             "names the column of file paths in a table",
                             "pass the table (.csv, .tsv, .jsonl, .json) that lists the files, or "
                             "leave --path-column out to read one subfolder per class")
    if text_columns:
        raise UserInputError("give either text columns (texts in the table) or a path column "
                             "(files listed in the table), not both",
                             "use --text-column for texts, --path-column for image or audio files")
    if modality == "text":
        raise UserInputError("path_column (--path-column) lists image or audio files, but the "
                             "modality is 'text'", "use --text-column for texts in a table; "
                             "leave --modality out to infer it from the files' extensions")


def _listed_modality(inputs: Sequence[str], where: str) -> str:
    """``"image"`` or ``"audio"``: what most of the listed files are, by extension (a file of
    the other kind is then reported by the item check like any unreadable file)."""
    exts = [Path(x).suffix.lower() for x in inputs]
    images = sum(e in IMAGE_EXTENSIONS for e in exts)
    audio = sum(e in AUDIO_EXTENSIONS + _OTHER_AUDIO for e in exts)
    if inputs and images == audio == 0:
        seen = ", ".join(sorted(set(exts))[:10]) or "none"
        raise UserInputError(f"{printable(where)}: no image or audio files are listed (extensions: "
                             f"{printable(seen)})", "list image (.png, .jpg...) or audio (.wav) "
                             "files, or pass --modality image|audio")
    return "audio" if audio > images else "image"



def _suggest_path(path: Path) -> str:
    parent = path.parent
    if not parent.is_dir():
        return f"the folder {printable(str(parent))} does not exist either; check the path"
    names = sorted(p.name for p in parent.iterdir() if not p.name.startswith("."))
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.5)
    if close:
        return f"did you mean {' or '.join(repr(str(parent / c)) for c in close)}?"
    shown = ", ".join(printable(n) for n in names[:10]) + (" ..." if len(names) > 10 else "")
    return f"{printable(str(parent))} holds: {shown or '(nothing)'}"


# ----------------------------------------------------------------------------- folders
def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and p.name.lower() not in _JUNK


def _walk(root: Path) -> list[Path]:
    """Every visible file under ``root``, sorted, hidden files and folders skipped."""
    out = []

    def fail(e: OSError) -> None:  # os.walk would skip an unreadable folder silently
        raise UserInputError(f"cannot read the folder {printable(str(e.filename))}: {e.strerror}",
                             "check its permissions")

    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        dirnames[:] = sorted(d for d in dirnames if _visible(Path(d)))
        out += [Path(dirpath, f) for f in sorted(filenames) if _visible(Path(f))]
    return out


def _guess_modality(files: Sequence[Path], where: str) -> str:
    exts = [f.suffix.lower() for f in files]
    counts = {"image": sum(e in IMAGE_EXTENSIONS for e in exts),
              "audio": sum(e in AUDIO_EXTENSIONS + _OTHER_AUDIO for e in exts),
              "text": sum(e in TEXT_FILE_EXTENSIONS for e in exts)}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        seen = sorted(set(exts))
        raise UserInputError(
            f"{printable(where)}: no image, audio or .txt files found (extensions present: "
            f"{printable(', '.join(seen[:10])) or 'none'})",
            "put the files in one subfolder per class, or pass a table file instead")
    return best


def _read_folder(root: Path, modality, report, split):
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and _visible(d)]
    by_name = {d.name.lower(): d for d in subdirs}
    if "train" in by_name and "test" in by_name:
        for d in subdirs:
            if d.name.lower() not in ("train", "test"):
                report.add("warning", "ignored-folder", f"{root.name}/{d.name}/",
                           "only train/ and test/ are read; this folder is ignored", split=split)
        train = _read_class_folder(by_name["train"], modality, report, "train",
                                   f"{root.name}/{by_name['train'].name}")
        test = _read_class_folder(by_name["test"], train.modality, report, "test",
                                  f"{root.name}/{by_name['test'].name}")
        return train, test
    return _read_class_folder(root, modality, report, split, root.name)


def _read_class_folder(root: Path, modality, report, split, disp: str) -> Dataset:
    files = _walk(root)
    modality = modality or _guess_modality(files, disp)
    exts = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS + _OTHER_AUDIO,
            "text": TEXT_FILE_EXTENSIONS}[modality]
    classes = [d.name for d in sorted(root.iterdir()) if d.is_dir() and _visible(d)]
    inputs, labels, origins, ignored = [], [], [], []
    for f in files:
        rel = f.relative_to(root)
        origin = printable(f"{disp}/{rel.as_posix()}")
        label = rel.parts[0] if len(rel.parts) > 1 else None
        media = f.suffix.lower() in exts
        if label is None and classes:
            if media:
                report.add("error", "missing-label", origin, "the file is not inside a class "
                           "folder, so it has no label", "move it into the folder of its class",
                           split=split)
            else:
                ignored.append(rel.name)  # README, LICENSE, a labels.csv next to the classes
            continue
        if modality == "text":
            if not media:
                report.add("error", "not-text", origin, f"'{printable(f.suffix)}' is not a text "
                           "file "
                           "(only .txt files are read as texts)", "remove it", split=split)
                continue
            text = _read_text_file(f, origin, len(inputs), report, split)
            inputs.append(text)
        else:
            inputs.append(str(f.absolute()))  # every file is an item: the check judges it
        labels.append(label)
        origins.append(origin)
    if ignored:
        report.add("warning", "ignored-file", f"{disp}/", f"{len(ignored)} file(s) outside the "
                   f"class folders are ignored: {printable(', '.join(ignored[:5]))}",
                   split=split)
    counts = {c: 0 for c in classes}
    for lab in labels:
        if lab is not None:
            counts[lab] += 1
    for c, n in counts.items():
        if n == 0:
            report.add("error", "empty-class", f"{disp}/{c}/", f"class folder '{printable(c)}' "
                       "has no files", "add files to it or delete the folder", split=split)
    ds = Dataset(modality, inputs, labels if classes else None, origins, source=str(root))
    check_items(ds, report, split)
    return ds


def _read_text_file(f: Path, origin: str, item: int, report, split: str) -> str:
    try:
        text, bad = decode(f.read_bytes())
    except OSError as e:
        report.add("error", "unreadable", origin, f"cannot read the file: {e.strerror or e}",
                   "check its permissions", item=item, split=split)
        return ""
    if bad:
        char, byte = bad[0]
        line = text.count("\n", 0, char) + 1
        report.add("error", "bad-encoding", f"{origin}:{line}", f"byte offset {byte} is not "
                   f"valid UTF-8 ({len(bad)} such byte(s) in the file)",
                   "re-save the file as UTF-8", item=item, split=split)
        text = clean(text)
    return text


# ----------------------------------------------------------------------------- arrays
def from_arrays(X: Any, y: Any = None, *, modality: str | None = None,
                sampling_rate: int | None = None, classes: Sequence[Any] | None = None,
                task: str | None = None) -> Dataset:
    """Wrap in-memory data as a Dataset.

    Args:
        X: a list/array of ``str`` (texts, or file paths when ``modality`` is ``"image"`` or
            ``"audio"``); images as an array ``(N, H, W)`` or
            ``(N, H, W, C)`` (channels-first ``(N, C, H, W)`` with C in 1, 3 is transposed) or a
            list of ``(H, W[, C])`` arrays; uint8 is kept, floats in [0, 1] (over all of X)
            are scaled by 255, anything else is clipped to 0..255; 16-bit is divided by 257.
            Audio (``modality="audio"``): ``(N, T)`` or a list of ``(T,)`` waveforms.
            Time series (``modality="timeseries"``): ``(N, T)``, ``(N, C, T)`` or a list of
            ``(T,)`` / ``(C, T)`` series (lengths may differ), stored as float32 ``(C, T)``.
        y: labels, one per item; ``None`` for unlabelled.  Classification: any type (stored
            with ``str()``); regression: finite numbers; multi-label: one list of label names
            per item, or a multi-hot array ``(N, L)`` of 0/1 (see ``classes``).
        modality: ``"text"``, ``"image"`` or ``"audio"``; guessed from X when ``None``.
        sampling_rate: required for audio.
        classes: optional class (or label) names; integer ``y`` values are then read as
            indices into ``classes``, and any other value must be one of them; for a
            multi-hot ``y``, the names of its columns.
        task: ``"classification"``, ``"regression"`` or ``"multi-label"``; ``None``:
            multi-label when every label is a list (or ``y`` is a 2-D array), else
            classification.

    Returns:
        A Dataset whose origins are ``"X[i]"``.

    Raises:
        UserInputError: shapes, lengths or values that cannot be data.
    """
    if modality not in (None, "text", "image", "audio", "timeseries"):
        raise UserInputError(f"unknown modality {modality!r}", "use 'text', 'image', 'audio' or 'timeseries'")
    check_task_options(task, None)
    n = len(X)
    items = list(X) if not isinstance(X, np.ndarray) or X.dtype.kind in "OUS" else None
    texts = items is not None and modality in (None, "text") and \
        any(isinstance(x, str) for x in items)
    if items is not None and modality in ("image", "audio") and \
            all(isinstance(x, (str, os.PathLike)) for x in items):
        inputs = [str(x) for x in items]  # file paths: prepare_data checks them
    elif modality == "timeseries":
        inputs = series_from_arrays(X)
    elif texts or modality == "text":
        bad = next((i for i, x in enumerate(items or [None]) if not isinstance(x, str)), None)
        if bad is not None:
            what = type(items[bad]).__name__ if items else type(X).__name__
            raise UserInputError(f"texts must all be strings; X[{bad}] is a {what}",
                                 "remove or fill in the missing texts")
        inputs, modality = items, "text"
    else:
        arrays = [np.asarray(x) for x in (items if items is not None else X)]
        modality = modality or _guess_array_modality(arrays)
        inputs = _images_from(arrays) if modality == "image" else _audio_from(arrays, sampling_rate)
    typed = None if y is None else array_labels(y, n, classes, task)
    if typed is not None:
        labels, task = typed
    else:
        labels = None if y is None else _labels(y, n, classes)
    return Dataset(modality, inputs, labels, [f"X[{i}]" for i in range(n)], source="<arrays>",
                   sampling_rate=sampling_rate if modality == "audio" else None,
                   task=task or "classification")


def _guess_array_modality(arrays: list[np.ndarray]) -> str:
    nd = {a.ndim for a in arrays}
    if nd <= {2, 3}:
        return "image"
    size = arrays[0].shape[-1] if arrays and arrays[0].ndim else 0
    side = int(round(size ** 0.5))
    reshape = f"; flattened images? use X.reshape(-1, {side}, {side})" if side * side == size else ""
    raise UserInputError(f"cannot tell what items of shape {arrays[0].shape if arrays else ()} "
                         "are", f"pass modality='audio' (with sampling_rate) for waveforms{reshape}")


def _images_from(arrays: list[np.ndarray]) -> list[np.ndarray]:
    for i, a in enumerate(arrays):
        if a.dtype.kind not in "biuf":
            raise UserInputError(f"X[{i}] has dtype {a.dtype}, not numbers")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise UserInputError(f"X[{i}] contains NaN or infinite values")
    floats = [a for a in arrays if a.dtype.kind == "f"]
    # One decision for all of X: a dark image alone would otherwise look like [0, 1] data.
    unit = bool(floats) and min(float(a.min()) for a in floats) >= 0 and \
        max(float(a.max()) for a in floats) <= 1.0
    out = []
    for i, a in enumerate(arrays):
        if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3, 4):
            a = np.moveaxis(a, 0, -1)  # channels-first (torch layout)
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
            raise UserInputError(f"X[{i}] has shape {a.shape}; an image must be (H, W) or "
                                 "(H, W, C) with C in 1, 3, 4")
        out.append(np.ascontiguousarray(scale_to_uint8(a, unit)))
    return out


def _audio_from(arrays: list[np.ndarray], rate: int | None) -> list[np.ndarray]:
    if not rate:
        raise UserInputError("audio arrays need their sampling rate",
                             "pass sampling_rate=16000 (or the real rate)")
    out = []
    for i, a in enumerate(arrays):
        if a.ndim != 1 or a.size == 0:
            raise UserInputError(f"X[{i}] has shape {a.shape}; a waveform must be (T,) with T > 0")
        x = audio_array(a)
        if not np.isfinite(x).all():
            raise UserInputError(f"X[{i}] contains NaN or infinite values")
        out.append(x)
    return out


def _labels(y: Any, n: int, classes: Sequence[Any] | None) -> list[str]:
    ys = list(y)
    if len(ys) != n:
        raise UserInputError(f"X has {n} items but y has {len(ys)} labels", "give one label per item")
    missing = [i for i, v in enumerate(ys) if v is None or (isinstance(v, float) and v != v)]
    if missing:
        raise UserInputError(f"y has no label at index(es) {missing[:10]}",
                             "remove those items or label them")
    if classes is None:
        return [str(v) for v in ys]
    names = [str(c) for c in classes]
    as_str = [str(v) for v in ys]
    if set(as_str) <= set(names):  # y holds the names themselves
        return as_str
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < len(names)
           for v in ys):  # y holds indices into classes (never a mix of the two)
        return [names[int(v)] for v in ys]
    unknown = sorted(set(as_str) - set(names))
    raise UserInputError(f"labels {unknown[:10]} are not in classes {names[:20]}",
                         "give y as class names, or as indices 0..len(classes)-1")
