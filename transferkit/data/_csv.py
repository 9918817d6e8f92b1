"""CSV records with their line spans, and the rule that tells a stray quote from a real
multi-line text.

A quote opened by mistake at the start of a field makes the ``csv`` module read on, across
line ends, until the next quote: the rows in between become one field of one row, silently
(5 e-mails, 4 of them spam, became one item labelled ham).  A record spanning several lines is
legitimate (a quoted text with line breaks) unless one of these holds:

1. its quoting is malformed: a closing quote followed by more text (``bye" friend,ham``),
   which well-formed CSV never has (the writer would have doubled the quote);
2. one of its inner lines (neither the first nor the last, which hold the row's own start
   and end), read alone, is a whole row: the table's number of fields, and in the label
   column a label that other rows carry (an earlier row, this row, or another inner line);
3. its label spans lines: class names never hold a line break.

A text that merely contains the delimiter on its lines passes: rule 2 needs a known label in
the label column's position, rule 1 needs broken quoting.
"""
from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator


def csv_records(text: str, delimiter: str) -> Iterator[tuple[int, int, list[str], int, int]]:
    """Yield ``(first_line, last_line, fields, char_start, char_end)`` per CSV record.

    Records may span lines (quoted newlines); a parse error yields ``[message]`` as fields
    and ``char_end = -1``.
    """
    buf = io.StringIO(text, newline="")
    pos = [0]

    def lines() -> Iterator[str]:
        for line in buf:
            pos[0] += len(line)
            yield line

    reader = csv.reader(lines(), delimiter=delimiter)
    while True:
        start_line, start_char = reader.line_num + 1, pos[0]
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield start_line, reader.line_num, [str(e)], start_char, -1
            if reader.line_num < start_line:  # no progress: give up rather than spin
                return
            continue
        yield start_line, reader.line_num, fields, start_char, pos[0]


def _alone(line: str, delimiter: str) -> list[str] | None:
    try:
        return next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter), None)
    except csv.Error:
        return None


def swallowed_rows(record: str, first_line: int, fields: list[str], n_fields: int,
                   delimiter: str, label_index: int | None, known_labels: set[str]) -> str | None:
    """Why a multi-line record looks like several rows merged by a stray quote, or ``None``.

    Args:
        record: the record's raw text (all its physical lines).
        first_line: the file line it starts on (for the message).
        fields: its parsed fields.
        n_fields: the header's number of fields.
        delimiter: the field delimiter.
        label_index: position of the label column, ``None`` for unlabelled tables.
        known_labels: labels (stripped) of the records before this one.

    Returns:
        A plain-words reason naming the evidence, or ``None`` for a plausible record.
    """
    lines = list(io.StringIO(record, newline=""))
    if len(lines) < 2:
        return None
    if label_index is not None and label_index < len(fields) and \
            ("\n" in fields[label_index] or "\r" in fields[label_index]):
        return "its label spans several lines (class names never hold a line break)"
    try:
        for _ in csv.reader(io.StringIO(record, newline=""), delimiter=delimiter, strict=True):
            pass
    except csv.Error:
        return ("its quoting is broken: a quoted field's closing quote is followed by more "
                "text")
    if label_index is None:
        return None
    shaped = []  # (line number within the record, label) of lines shaped like a row
    for k, line in enumerate(lines[1:-1], start=1):  # the last line ends the row: not evidence
        alone = _alone(line, delimiter)
        if alone and len(alone) == n_fields and alone[label_index].strip():
            shaped.append((k, alone[label_index].strip(), line.rstrip("\r\n")))
    if not shaped:
        return None
    own = fields[label_index].strip() if label_index < len(fields) else ""
    repeated = {lab for lab, n in Counter(lab for _, lab, _ in shaped).items() if n > 1}
    rows = [(k, raw) for k, lab, raw in shaped
            if lab in known_labels or lab == own or lab in repeated]
    if not rows:
        return None
    k, raw = rows[0]
    shown = raw if len(raw) <= 60 else raw[:57] + "..."
    return (f"{len(rows)} of the lines it swallows read as rows of their own, with a label "
            f"in the label column (e.g. line {first_line + k}: {shown!r})")
