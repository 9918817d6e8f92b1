"""CSV rows merged by a stray quote are reported; real multi-line texts still read (#26-8)."""
from __future__ import annotations

import csv

import pytest

from transferkit.data import ValidationReport, prepare_data, read_source
from transferkit.errors import DataValidationError

# The case from the issue: a quote opened on line 3 closes four lines later; the csv module
# reads lines 3-7 as one row labelled ham (4 of the 5 were spam), and nothing said so.
MERGED = ('text,label\n'
          'hello friend,ham\n'
          '"Win money now,spam\n'
          'cheap pills,spam\n'
          'free prize,spam\n'
          'click here,spam\n'
          'see you" tomorrow,ham\n'
          'lunch at noon,ham\n'
          'buy now,spam\n')


def test_a_stray_quote_that_swallows_rows_is_an_error_naming_the_line_range(tmp_path):
    f = tmp_path / "mail.csv"
    f.write_text(MERGED)
    r = ValidationReport()
    ds = read_source(f, report=r)
    assert ds.inputs == ["hello friend", "lunch at noon", "buy now"]  # no merged item
    (p,) = r.errors
    assert (p.kind, p.origin) == ("bad-row", "mail.csv:3-7")
    assert "line 3 to line 7" in p.message and "quote" in p.hint
    with pytest.raises(DataValidationError):
        prepare_data(f)
    prepared = prepare_data(f, skip_bad=True)
    assert prepared.report.skipped[0]["origin"] == "mail.csv:3-7"
    assert len(prepared.train) == 3


def test_swallowed_rows_are_found_by_their_labels_even_with_clean_quoting(tmp_path):
    # the closing quote sits right before the delimiter: well-formed quoting, so only the
    # swallowed lines' labels give the merge away
    f = tmp_path / "mail.csv"
    f.write_text('text,label\nhello,ham\nbuy,spam\n"Win money,spam\ncheap pills,spam\nbye",ham\n'
                 'ok,ham\n')
    r = ValidationReport()
    ds = read_source(f, report=r)
    (p,) = r.errors
    assert p.origin == "mail.csv:4-6" and "line 5: 'cheap pills,spam'" in p.message
    assert ds.inputs == ["hello", "buy", "ok"]


def test_a_label_spanning_lines_is_a_broken_row(tmp_path):
    f = tmp_path / "mail.csv"
    f.write_text('text,label\nhello,ham\nhi,"spam\nfoo,ham\nbar,spam\n')
    r = ValidationReport()
    read_source(f, report=r)
    assert [(p.kind, p.origin) for p in r.errors] == [("bad-row", "mail.csv:3-5")]
    assert "label spans several lines" in r.errors[0].message


def test_real_multi_line_texts_with_commas_still_read(tmp_path):
    rows = [("Hi Bob,\nsee you at 10, bring the slides\nthanks,\nAnn", "ham"),
            ("WIN, WIN, WIN\n\n\"free\" money,spam inside the text\nclick", "spam"),
            ("one line", "ham"),
            ("line one\r\nline two, with a comma\r\nham", "spam")]
    f = tmp_path / "mail.csv"
    with open(f, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(rows)
    r = ValidationReport()
    ds = read_source(f, report=r)
    assert r.problems == []
    assert ds.inputs == [t for t, _ in rows] and ds.labels == [lab for _, lab in rows]
    assert ds.origins == ["mail.csv:2", "mail.csv:6", "mail.csv:10", "mail.csv:11"]


def test_tsv_is_checked_the_same_way(tmp_path):
    f = tmp_path / "mail.tsv"
    f.write_text(MERGED.replace(",", "\t"))
    r = ValidationReport()
    read_source(f, report=r)
    assert [(p.kind, p.origin) for p in r.errors] == [("bad-row", "mail.tsv:3-7")]
