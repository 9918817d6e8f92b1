"""Tables of items: CSV, TSV, JSON lines, JSON, Parquet (text, or paths to image/audio files).

Rows are read whole (a bad row never stops the read): each problem goes to the report with
``file:line`` and, for rows that made it into the Dataset, the item index.
"""
from __future__ import annotations

import csv
import difflib
import gzip
import io
import itertools
import json
import math
import re
import sys
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import MissingDependencyError, UserInputError
from ..errors import shown as printable
from ._csv import csv_records, swallowed_rows
from .dataset import Dataset

TABLE_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet")
_TEXT_NAMES = ("text", "sentence", "content", "body", "message", "review", "document",
               "comment", "tweet", "utterance", "question", "prompt", "input")
_PATH_NAMES = ("path", "file", "filename", "filepath", "file_path", "image", "image_path",
               "img", "audio", "audio_path", "wav")
_MISSING = object()
# undecodable bytes survive decoding as lone surrogates (surrogateescape): exact to locate.
_SURROGATE = re.compile("[\udc80-\udcff]")
_KEYS_SCAN = 1000  # JSON lines: the columns are the keys seen in this many first rows

# Long e-mails exceed csv's default 128 KiB field limit; sys.maxsize overflows a C long on
# some platforms, hence the cap.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

ENCODING_HINT = ("re-save the file as UTF-8 (e.g. `iconv -f cp1252 -t utf-8 in.csv > out.csv`, "
                 "or in Excel: Save As > 'CSV UTF-8')")


def table_kind(path: Path) -> str | None:
    """``"csv"``, ``"tsv"``, ``"jsonl"``, ``"json"``, ``"parquet"`` or ``None`` from the name."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    return {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
            ".json": "json", ".parquet": "parquet"}.get(ext)


def decode(data: bytes) -> tuple[str, list[tuple[int, int]]]:
    """Bytes -> text, remembering every byte that is not UTF-8.

    Returns:
        The text (undecodable bytes kept as lone surrogates ``\\udc80``-``\\udcff``) and a
        sorted list of ``(char_offset, byte_offset)``, one per undecodable byte.
    """
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # Excel's "Unicode text" is UTF-16
        return data.decode("utf-16", "replace"), []
    start = 3 if data[:3] == b"\xef\xbb\xbf" else 0
    try:
        return data[start:].decode("utf-8"), []  # the fast path: a clean file
    except UnicodeDecodeError:
        pass
    text = data[start:].decode("utf-8", "surrogateescape")
    bad, char_pos, byte_pos = [], 0, start
    for m in _SURROGATE.finditer(text):
        # byte offset = bytes of the text before it; encoded segment by segment: O(n) total
        byte_pos += len(text[char_pos:m.start()].encode("utf-8", "surrogateescape"))
        char_pos = m.start()
        bad.append((char_pos, byte_pos))
    return text, bad


def clean(s: str) -> str:
    """Replace the lone surrogates left by :func:`decode` with U+FFFD."""
    return _SURROGATE.sub("\ufffd", s)


def _encoding_detail(row_text: str, first_byte: int) -> str:
    m = _SURROGATE.search(row_text)
    code = ord(m.group()) - 0xDC00 if m else 0
    guess = bytes([code]).decode("cp1252", "replace")
    where = f" at byte offset {first_byte}" if first_byte >= 0 else ""
    return (f"byte 0x{code:02X}{where} is not valid UTF-8 "
            f"(in Windows-1252/Latin-1 it would be {guess!r})")


def _is_missing(v: Any) -> bool:
    return v is None or v is _MISSING or (isinstance(v, float) and math.isnan(v))


def _as_text(v: Any) -> str:
    if _is_missing(v):
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _names(label: str | tuple[str, ...]) -> tuple[str, ...]:
    return label if isinstance(label, tuple) else (label,)


def _match_column(name: str, present: list[str]) -> str | None:
    if name in present:
        return name
    loose = [c for c in present if c.strip().casefold() == name.strip().casefold()]
    return loose[0] if len(loose) == 1 else None


def split_columns(columns: str | list[str] | None) -> list[str] | None:
    """``"subject,body"`` -> ``["subject", "body"]`` (the ``--text-column`` syntax of every
    command); a list or ``None`` is returned as it is."""
    if isinstance(columns, str):
        return [c.strip() for c in columns.split(",") if c.strip()] or None
    return columns


def resolve_columns(present: list[str], text_columns: list[str] | str | None,
                    label_column: str | None, modality: str, where: str,
                    label_optional: bool = False) -> tuple[list[str], str | None]:
    """Pick the text (or path) columns and the label column, or explain what is missing.

    Raises:
        UserInputError: naming every missing column, the columns present and the closest.
    """
    shown = ", ".join(repr(c) for c in present) or "(none)"
    missing, suggestions = [], []
    label = None
    if label_column is not None:
        label = _match_column(label_column, present)
        if label is None and not label_optional:
            missing.append(label_column)
    text_columns = split_columns(text_columns)
    if text_columns is not None:
        chosen = []
        for c in text_columns:
            m = _match_column(c, present)
            (chosen.append(m) if m is not None else missing.append(c))
    if missing:
        for c in missing:
            close = difflib.get_close_matches(c, present, n=1, cutoff=0.5)
            if close:
                suggestions.append(f"'{c}' -> did you mean '{close[0]}'?")
        raise UserInputError(
            f"{where}: column(s) {', '.join(repr(c) for c in missing)} not found; the columns "
            f"present are {shown}",
            "; ".join(suggestions) if suggestions else
            "use the names of columns present (listed above), spelled as in the file's header")
    if text_columns is None:
        names = _TEXT_NAMES if modality == "text" else _PATH_NAMES
        others = [c for c in present if c != label]
        known = [c for c in others if c.strip().lower() in names]
        if len(known) == 1:
            chosen = known
        elif len(others) == 1:
            chosen = others
        else:
            what = "text" if modality == "text" else "file-path"
            raise UserInputError(
                f"{where}: cannot tell which column holds the {what}s; the columns present are "
                f"{shown}", f"pass text_columns=[...], e.g. text_columns={others[:2]!r}")
    if modality != "text" and len(chosen) != 1:
        raise UserInputError(f"{where}: for {modality} tables give exactly one column of file "
                             f"paths, not {chosen!r}", "e.g. text_columns=['path']")
    return chosen, label


class _Builder:
    """Turns rows into Dataset items, reporting per-row problems as it goes."""

    def __init__(self, name: str, text_cols: list[str], label_col: str | None, modality: str,
                 base_dir: Path, report, split: str):
        self.name, self.text_cols, self.label_col = name, text_cols, label_col
        self.modality, self.base_dir, self.report, self.split = modality, base_dir, report, split
        self.inputs: list[Any] = []
        self.labels: list[str | tuple[str, ...]] = []
        self.origins: list[str] = []
        self.unused_bad: list[str] = []  # rows whose undecodable bytes are in unused columns
        self.seen = 0  # non-blank rows, good or bad

    def problem(self, severity: str, kind: str, origin: str, message: str, hint=None,
                item=None) -> None:
        self.report.add(severity, kind, origin, message, hint, item=item, split=self.split)

    def row_error(self, kind: str, origin: str, message: str, hint: str) -> None:
        """A row that cannot become an item at all (it is not in the Dataset)."""
        self.seen += 1
        self.problem("error", kind, origin, message, hint)

    def add(self, origin: str, get: Callable[[str], Any], first_bad: int | None = None,
            raw: str = "") -> None:
        """One row. ``get(column)`` returns the value or ``_MISSING``; ``first_bad`` is the
        byte offset of the row's first undecodable byte (``None`` when clean, -1 unknown)."""
        self.seen += 1
        label = None
        if self.label_col is not None:
            v = get(self.label_col)
            odd = next((x for x in v if isinstance(x, (dict, list, bool)) or _is_missing(x)),
                       _MISSING) if isinstance(v, list) else _MISSING
            if isinstance(v, dict) or odd is not _MISSING:
                what = f"a {type(v).__name__}" if isinstance(v, dict) else \
                    f"a list holding {'null' if _is_missing(odd) else type(odd).__name__}"
                self.row_error("bad-label", origin, f"the label in column '{self.label_col}' is "
                               f"{what}, not a class name or a list of label names",
                               "labels must be strings or numbers (several labels: a JSON list "
                               "of them)")
                return
            if _is_missing(v) or (isinstance(v, str) and not v.strip()):
                self.row_error("missing-label", origin, f"no label (column '{self.label_col}' "
                               "is empty)", "add the label, or remove the row")
                return
            # a JSON list stays a tuple of names: resolve_task decides whether that is allowed
            label = tuple(_as_text(x) for x in v) if isinstance(v, list) else \
                v if isinstance(v, str) else str(v)
        values = [_as_text(get(c)) for c in self.text_cols]
        if self.modality != "text" and not values[0].strip():  # not an item: no file to check
            self.problem("error", "missing-path", f"{origin} column '{self.text_cols[0]}'",
                         "no file path (the cell is empty or the column is absent in this row)",
                         "fill in the file's path (relative to the table's folder), or remove the row")
            return
        item = len(self.inputs)
        if first_bad is not None:
            hit = [c for c, v in zip(self.text_cols, values) if _SURROGATE.search(v)]
            if label is not None and _SURROGATE.search("\n".join(_names(label))):
                hit.append(self.label_col)
            if hit:
                detail = _encoding_detail(raw, first_bad)
                self.problem("error", "bad-encoding", f"{origin} column '{hit[0]}'",
                             detail, ENCODING_HINT, item=item)
            else:
                self.unused_bad.append(origin)
            values = [clean(v) for v in values]
            if isinstance(label, tuple):
                label = tuple(clean(x) for x in label)
            elif label is not None:
                label = clean(label)
        if self.modality == "text":
            self.inputs.append("\n".join(values))
        else:
            p = Path(values[0].strip()).expanduser()
            self.inputs.append(str(p if p.is_absolute() else (self.base_dir / p)))
        self.labels.append(label)
        self.origins.append(origin)

    def build(self, source: str) -> Dataset:
        if self.unused_bad:
            self.problem("warning", "bad-encoding", self.unused_bad[0],
                         f"{len(self.unused_bad)} row(s) have non-UTF-8 bytes in columns that "
                         f"are not used (first: {self.unused_bad[0]}); they are ignored",
                         ENCODING_HINT)
        labels = self.labels if self.label_col is not None else None
        return Dataset(self.modality, self.inputs, labels, self.origins, source=source)


def _first_bad_in(bad: list[tuple[int, int]], start: int, end: int, cursor: list[int]) -> int | None:
    """Byte offset of the first undecodable byte in chars [start, end); rows come in order."""
    i = cursor[0]
    while i < len(bad) and bad[i][0] < start:
        i += 1
    cursor[0] = i
    return bad[i][1] if i < len(bad) and bad[i][0] < end else None


def _read_csv(path: Path, text: str, bad, delimiter: str, resolve, make) -> _Builder:
    name = printable(path.name)
    rows = csv_records(text, delimiter)
    header = None
    for _, _, fields, _, end in rows:
        if end >= 0 and fields and any(f.strip() for f in fields):
            header = [clean(f) for f in fields]
            break
    if header is None:
        raise UserInputError(f"{name} is empty (no header, no rows)",
                             "check that you passed the right file")
    if delimiter == "," and len(header) == 1 and ";" in header[0]:
        # European Excel writes ';'-separated "CSV"
        return _read_csv(path, text, bad, ";", resolve, make)
    text_cols, label_col = resolve(header)
    index = {c: i for i, c in enumerate(header)}
    label_at = index.get(label_col) if label_col is not None else None
    b = make(text_cols, label_col)
    cursor = [0]
    labels_seen: set[str] = set()  # what a real label looks like, for swallowed_rows
    for line, last, fields, start, end in rows:
        if not fields or (len(fields) == 1 and not fields[0].strip() and end >= 0):
            continue  # a blank line
        origin = f"{name}:{line}"
        if end < 0:
            b.row_error("bad-row", origin, f"cannot parse this CSV row ({fields[0]})",
                        "check the quoting on this line")
        elif len(fields) > len(header):
            b.row_error("bad-row", origin, f"the row has {len(fields)} fields but the header "
                        f"has {len(header)}", "quote fields that contain the delimiter "
                        f"({delimiter!r}), e.g. \"a, b\"")
        elif len(fields) < len(header) and last - line > 1:
            b.row_error("bad-row", origin, f"the row runs from line {line} to line {last} with "
                        f"only {len(fields)} of {len(header)} fields", "probably an unclosed "
                        "quote (\") on this line: it swallows the lines that follow")
        elif last > line and (why := swallowed_rows(text[start:end], line, fields, len(header),
                                                   delimiter, label_at, labels_seen)):
            b.row_error("bad-row", f"{name}:{line}-{last}", f"one row runs from line {line} "
                        f"to line {last}, and {why}: a quote (\") opened on line {line} "
                        "probably swallowed the rows after it", "close the quote where its "
                        "field ends, or write a quote inside a field as two (\"\")")
        else:
            if label_at is not None and label_at < len(fields):
                labels_seen.add(fields[label_at].strip())
            first_bad = _first_bad_in(bad, start, end, cursor) if bad else None
            b.add(origin, lambda c: fields[index[c]] if index[c] < len(fields) else _MISSING,
                  first_bad, text[start:end] if first_bad is not None else "")
    return b


def _byte_lines(path: Path) -> Iterator[bytes]:
    """The file's lines as bytes, gunzipped on the fly: a large file is never held whole."""
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"  # gzip magic, whatever the name says
            f.seek(0)
            yield from (gzip.GzipFile(fileobj=f) if gz else f)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise UserInputError(f"{printable(path.name)}: not a readable gzip file ({e})",
                             "re-download or re-compress it") from None
    except OSError as e:
        raise UserInputError(f"cannot read {printable(str(path))}: {e.strerror or e}",
                             "check the file's permissions") from None


def _jsonl_rows(name: str, lines: Iterable[bytes]) -> Iterator[tuple[str, Any, int | None, str]]:
    """Yield ``(origin, parsed_or_error, first_bad_byte, line)`` per non-blank line.

    Lines are decoded one by one, so an undecodable byte is located exactly (its offset in
    the file) and a clean line costs a single C-level decode.
    """
    pos = 0
    for n, raw in enumerate(lines, start=1):
        start, pos = pos, pos + len(raw)
        if n == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise UserInputError(f"{name} is UTF-16 encoded", ENCODING_HINT)
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
            raw, start = raw[3:], start + 3
        if not raw.strip():
            continue
        try:
            line, first_bad = raw.decode("utf-8"), None
        except UnicodeDecodeError as e:
            line, first_bad = raw.decode("utf-8", "surrogateescape"), start + e.start
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            obj = e
        yield f"{name}:{n}", obj, first_bad, line


def _read_jsonl(path: Path, lines: Iterable[bytes], resolve, make) -> _Builder:
    rows = _jsonl_rows(printable(path.name), lines)
    head, keys = [], {}
    for r in rows:  # the columns are the keys of the first rows
        head.append(r)
        if isinstance(r[1], dict):
            keys.update(dict.fromkeys(r[1]))
        if len(head) >= _KEYS_SCAN:
            break
    if not head:
        raise UserInputError(f"{printable(path.name)} has no rows",
                             "check that you passed the right file")
    if not keys:
        raise UserInputError(f"{printable(path.name)}: no line holds a JSON object (first "
                             f"problem at {head[0][0]})", "write one JSON object per line, "
                             "e.g. {\"text\": \"...\", \"label\": \"spam\"}")
    b = make(*resolve([clean(k) for k in keys]))
    for origin, obj, first_bad, raw in itertools.chain(head, rows):
        if isinstance(obj, json.JSONDecodeError):
            b.row_error("bad-json", origin, f"invalid JSON at column {obj.colno}: {obj.msg}",
                        "fix or remove this line (one JSON object per line)")
        elif not isinstance(obj, dict):
            b.row_error("bad-json", origin, f"the line is a JSON {type(obj).__name__}, not an "
                        "object", "write one JSON object per line")
        else:
            b.add(origin, lambda c: obj.get(c, _MISSING), first_bad, raw)
    return b


def _first_line_is_object(text: str) -> bool:
    lines = [ln for ln in text.split("\n", 3)[:3] if ln.strip()]
    try:
        return len(lines) > 1 and isinstance(json.loads(lines[0]), dict)
    except json.JSONDecodeError:
        return False


def _read_json(path: Path, data: bytes, resolve, make) -> _Builder:
    text, bad = decode(data)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg.startswith("Extra data"):  # a valid first line, then more: JSON lines
            return _read_jsonl(path, io.BytesIO(data), resolve, make)  # JSON lines named .json
        raise UserInputError(f"{printable(path.name)}:{e.lineno}: invalid JSON at column "
                             f"{e.colno}: {e.msg}", "fix the file, or write one object per line "
                             "(.jsonl) so one bad line does not spoil the rest") from None
    if isinstance(doc, dict) and doc and all(isinstance(v, list) for v in doc.values()):
        n = max(len(v) for v in doc.values())  # {"text": [...], "label": [...]}
        doc = [{k: (v[i] if i < len(v) else None) for k, v in doc.items()} for i in range(n)]
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list) or not doc:
        raise UserInputError(f"{printable(path.name)} holds no rows (expected a list of objects)",
                             "write [{\"text\": ..., \"label\": ...}, ...] or JSON lines")
    keys = {}
    for r in doc[:_KEYS_SCAN]:
        if isinstance(r, dict):
            keys.update(dict.fromkeys(r))
    b = make(*resolve(list(keys)))
    for i, r in enumerate(doc):
        origin = f"{printable(path.name)}[{i}]"
        if not isinstance(r, dict):
            b.row_error("bad-json", origin, f"item {i} is a JSON {type(r).__name__}, not an "
                        "object", "every item of the list must be an object")
            continue
        first_bad = -1 if bad and any(_SURROGATE.search(_as_text(v)) for v in r.values()) else None
        b.add(origin, lambda c: r.get(c, _MISSING), first_bad,
              json.dumps(r, ensure_ascii=False) if first_bad is not None else "")
    return b


def _read_parquet(path: Path, resolve, make) -> _Builder:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError("reading Parquet files", "pyarrow") from None
    try:
        names = pq.read_schema(path).names
        text_cols, label_col = resolve(names)
        wanted = list(dict.fromkeys(text_cols + ([label_col] if label_col else [])))
        table = pq.read_table(path, columns=wanted)
    except UserInputError:
        raise
    except Exception as e:
        raise UserInputError(f"{printable(path.name)}: not a readable Parquet file ({e})",
                             "re-export it") from None
    if table.num_rows == 0:
        raise UserInputError(f"{printable(path.name)} has no rows",
                             "check that you passed the right file")
    cols = {c: table.column(c).to_pylist() for c in wanted}
    b = make(text_cols, label_col)
    for i in range(table.num_rows):
        b.add(f"{printable(path.name)}[{i}]", lambda c: cols[c][i])
    return b


def read_table(path: Path, *, text_columns, label_column, modality: str, report, split: str,
               label_optional: bool = False) -> tuple[Dataset, list[str]]:
    """Read one table into a Dataset (see :func:`transferkit.data.read_source`).

    Returns:
        The Dataset and the text (or path) columns used.

    Raises:
        UserInputError: only when the whole table is unusable (no rows, missing columns).
    """
    kind = table_kind(path)
    where = printable(path.name)

    def resolve(present):
        return resolve_columns(present, text_columns, label_column, modality, where,
                               label_optional)

    def make(text_cols, label_col):
        return _Builder(printable(path.name), text_cols, label_col, modality, path.parent, report,
                        split)

    if kind == "parquet":
        b = _read_parquet(path, resolve, make)
    elif kind == "jsonl":
        b = _read_jsonl(path, _byte_lines(path), resolve, make)
    else:
        data = b"".join(_byte_lines(path))
        if not data.strip():
            raise UserInputError(f"{printable(path.name)} is empty",
                                 "check that you passed the right file")
        if kind == "json":
            b = _read_json(path, data, resolve, make)
        else:
            text, bad = decode(data)
            del data  # the text is a second copy of a possibly large file
            b = _read_csv(path, text, bad, "\t" if kind == "tsv" else ",", resolve, make)
    if b.seen == 0:
        raise UserInputError(f"{printable(path.name)} has a header but no rows",
                             "check that you passed the right file")
    return b.build(str(path)), b.text_cols
