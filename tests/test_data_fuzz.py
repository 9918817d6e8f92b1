"""Fuzzing the table readers through the pre-flight (#26 "done when"): whatever bytes a CSV, TSV,
JSON lines or JSON file holds, ``prepare_data`` returns data or raises ``UserInputError`` (of
which ``DataValidationError`` is one) -- never another exception -- for every task (#16), and
what it returns carries labels of the task it was read for.

Bounded for CI: a fixed number of examples per test, no deadline, no example database.
"""
from __future__ import annotations

import gzip
import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transferkit.data import prepare_data
from transferkit.errors import UserInputError

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
KINDS = (".csv", ".tsv", ".jsonl", ".json", ".csv.gz", ".jsonl.gz")

# Characters that matter to the parsers: delimiters, quotes, line ends of every kind, NUL,
# a byte-order mark, invisible and bidi characters, lone surrogates, and ordinary letters.
SPECIAL = st.sampled_from([",", "\t", ";", '"', "'", "\n", "\r", "\r\n", "\x00", "\ufeff", "\u200b",
                           "\u202e", "\u2028", "\ud800", "\udc80", "\\", "{", "}", "[", "]", ":",
                           "label", "text", "1", "0.5", " ", "é", "日"])
CELL = st.lists(st.one_of(st.characters(), SPECIAL), max_size=10).map("".join)
LABEL = st.sampled_from(["a", "b", "a", "b", "A ", "1", ""]) | CELL
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | CELL,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(CELL, inner, max_size=3),
    max_leaves=8)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # lone surrogates become invalid UTF-8 bytes


def _check(data: bytes, kind: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / f"data{kind}"
        f.write_bytes(gzip.compress(data) if kind.endswith(".gz") else data)
        for opts in ({}, {"skip_bad": True}, {"require_labels": False},
                     {"text_columns": "text,b", "skip_bad": True},
                     {"task": "regression", "skip_bad": True},
                     {"task": "multi-label", "skip_bad": True},
                     {"task": "multi-label", "label_sep": ";"}):
            try:
                prepared = prepare_data(f, **opts)
            except UserInputError:
                continue
            for x in prepared.train.inputs:  # what got through is usable by a tokenizer
                assert isinstance(x, str) and x.strip()
                x.encode("utf-8")
            _labels_are_typed(prepared.train, opts.get("task"))


def _labels_are_typed(ds, task) -> None:
    """What got through carries labels of its task: names, finite numbers or label sets."""
    assert task is None or ds.task == task
    for lab in ds.labels or []:
        if ds.task == "regression":
            assert isinstance(lab, float) and math.isfinite(lab)
        elif ds.task == "multi-label":
            assert isinstance(lab, tuple) and lab and list(lab) == sorted(set(lab))
            assert all(isinstance(n, str) and n == n.strip() and n for n in lab)
        else:
            assert isinstance(lab, str)


@FUZZ
@given(data=st.binary(max_size=600), kind=st.sampled_from(KINDS))
def test_arbitrary_bytes(data, kind):
    _check(data, kind)


@FUZZ
@given(header=st.sampled_from(["text,label", "text\tlabel", "text,b,label", "label", ""]),
       rows=st.lists(st.one_of(st.tuples(CELL, LABEL), st.tuples(CELL, CELL, LABEL),
                               st.lists(CELL, max_size=4)), max_size=8),
       sep=st.sampled_from([",", "\t"]), end=st.sampled_from(["\n", "\r\n", "\r"]),
       kind=st.sampled_from([".csv", ".tsv", ".csv.gz"]))
def test_delimited_text(header, rows, sep, end, kind):
    body = end.join(sep.join(r) for r in rows)
    _check(_encode(header + end + body), kind)


@FUZZ
@given(rows=st.lists(st.one_of(
           st.fixed_dictionaries({"text": CELL, "label": LABEL}),
           st.fixed_dictionaries({"text": JSON_VALUE, "label": JSON_VALUE}), JSON_VALUE), max_size=8),
       ascii_only=st.booleans(), as_list=st.booleans(), kind=st.sampled_from([".jsonl", ".json"]))
def test_json_documents(rows, ascii_only, as_list, kind):
    if as_list or kind == ".json":
        text = json.dumps(rows, ensure_ascii=ascii_only)
    else:
        text = "\n".join(json.dumps(r, ensure_ascii=ascii_only) for r in rows)
    _check(_encode(text), kind)
