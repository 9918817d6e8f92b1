"""Item checks: every item of a Dataset judged one at a time, problems recorded in a report.

Texts are checked for what a tokenizer would choke on or silently turn into nothing; media
files are decoded once (one in memory at a time); arrays are checked for shape and values.
"""
from __future__ import annotations

import os
import unicodedata
from typing import Any

import numpy as np

from ..errors import shown as printable
from ._audio import check_wavs
from ._filecheck import FileCheck
from ._images import MODE_WORDS, check_images
from ._series_checks import check_series
from .dataset import Dataset
from .report import ValidationReport

__all__ = ["check_items", "text_problem"]

# Characters a tokenizer drops without a trace: controls (NUL...) and format characters
# (zero-width space, byte-order mark, bidi marks).  A text made only of these is empty.
_INVISIBLE = frozenset({"Cc", "Cf"})


def text_problem(x: Any) -> tuple[str, str, str] | None:
    """Why a backbone cannot use the text ``x``, or ``None`` when it can.

    Returns:
        ``(kind, message, hint)``: ``"bad-item"`` (not a string), ``"bad-text"`` (not
        encodable as UTF-8: a lone surrogate, which tokenizers refuse with an exception) or
        ``"empty-text"`` (empty, blank, or only invisible characters such as NUL).
    """
    if not isinstance(x, str):
        return ("bad-item", f"a text item is a {type(x).__name__}, not a string",
                "give every item as a string")
    try:
        x.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(x[e.start])
        return ("bad-text",
                (f"character {e.start + 1} is a lone surrogate U+{code:04X} (half of a UTF-16 "
                 f"pair, e.g. from a JSON \\u{code:04x} escape): no tokenizer can encode it"),
                ("replace it with the character it stands for (in JSON: write the character "
                 "itself, or both halves of its surrogate pair)"))
    if not x.strip():
        return "empty-text", "the text is empty", "fill it in or remove the row"
    if _invisible_only(x):
        return ("empty-text", ("the text is empty: it holds only invisible characters (NUL, "
                               "control or format characters) and whitespace"),
                "fill it in or remove the row")
    return None


def _invisible_only(x: str) -> bool:
    # all() stops at the first visible character: costs nothing for ordinary texts
    return all(c.isspace() or unicodedata.category(c) in _INVISIBLE for c in x)


def _label_problem(label: Any) -> str | None:
    names = label if isinstance(label, (list, tuple)) else [label]  # multi-label: each name
    for name in names:
        if not isinstance(name, str):
            continue
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as e:
            return (f"the label holds a lone surrogate U+{ord(name[e.start]):04X} at character "
                    f"{e.start + 1}: it cannot be written to the run's files")
    return None


def check_items(ds: Dataset, report: ValidationReport, split: str, *,
                what: str | None = None, column: str | None = None) -> list[str | None] | None:
    """Check every item of ``ds`` (decoding media one at a time) and record problems.

    Args:
        ds: the data set.
        report: where problems go.
        split: recorded with each problem.
        what: for texts, a description of the columns used (for the empty-text message).
        column: for files listed in a table, the column of their paths: a file's problem is
            reported at ``table.csv:LINE column 'NAME'``.

    Returns:
        For files, the sha256 of each (``None`` where unreadable); ``None`` for texts/arrays.
        When every file hashed, ``ds``'s hash cache is filled so they are not read twice.
    """
    for i, lab in enumerate(ds.labels or []):
        msg = _label_problem(lab)
        if msg:
            report.add("error", "bad-label", ds.origins[i], msg, "fix or remove the label",
                       item=i, split=split)
    if ds.modality == "text":
        cols = ("" if not what else f" (columns {what} are all blank)" if "," in what
                else f" (column {what} is blank)")
        for i, x in enumerate(ds.inputs):
            found = text_problem(x)
            if found:
                kind, message, hint = found
                if kind == "empty-text" and message == "the text is empty":
                    message += cols
                report.add("error", kind, ds.origins[i], message, hint, item=i, split=split)
        return None
    if ds.modality == "timeseries":
        check_series(ds, report, split)
        return None
    paths = [i for i, x in enumerate(ds.inputs) if isinstance(x, (str, os.PathLike))]
    for i, x in enumerate(ds.inputs):
        if not isinstance(x, (str, os.PathLike)):
            msg = _check_array(x, ds.modality, ds.sampling_rate)
            if msg:
                report.add("error", "bad-array", ds.origins[i], msg, item=i, split=split)
    checker = check_images if ds.modality == "image" else check_wavs
    results: list[FileCheck] = checker([ds.inputs[i] for i in paths])
    hashes: list[str | None] = [None] * len(ds)
    modes: dict[str, list[int]] = {}
    at = "" if column is None else f" column '{printable(column)}'"
    for i, r in zip(paths, results):
        hashes[i] = r.sha256
        if r.kind:
            report.add("error", r.kind, ds.origins[i] + at, r.message, r.hint, item=i, split=split)
        elif r.mode and r.mode != "RGB":
            modes.setdefault(r.mode, []).append(i)
    for mode, idx in modes.items():
        word = MODE_WORDS.get(mode, f"mode {mode!r}")
        extra = "; transparency is flattened onto white" if "transparency" in word else ""
        report.add("warning", "converted-mode", f"{split} set",
                   f"{_n(len(idx), 'image')} {'is' if len(idx) == 1 else 'are'} {word} "
                   f"(PIL mode {mode!r}) and will be converted to RGB{extra}; e.g. "
                   f"{printable(ds.origins[idx[0]])}", split=split)
    if paths and len(paths) == len(ds) and all(h is not None for h in hashes):
        ds._hashes = hashes  # the check read every byte already
    return hashes if paths else None


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _check_array(x: Any, modality: str, rate: int | None) -> str | None:
    if not isinstance(x, np.ndarray):
        return f"an item is a {type(x).__name__}, not a file path or an array"
    if modality == "image":
        ok = x.ndim == 2 or (x.ndim == 3 and x.shape[2] in (1, 3, 4))
        return None if ok and x.size else f"image array of shape {x.shape}: expected (H, W) or (H, W, C)"
    if x.ndim != 1 or not x.size:
        return f"audio array of shape {x.shape}: expected a non-empty waveform (T,)"
    if not np.isfinite(x).all():
        return "the waveform contains NaN or infinite values"
    return None if rate else "in-memory audio needs the Dataset's sampling_rate"
