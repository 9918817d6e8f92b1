"""The outcome of checking one media file, and the reading every check starts with."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import shown as printable


@dataclass
class FileCheck:
    """Outcome of checking one image or audio file.

    Attributes:
        kind: ``None`` when the file is usable, else a problem slug ("truncated", ...).
        message: plain-words description of the problem (empty when usable).
        hint: what to do about it.
        mode: the PIL mode of a usable image (e.g. ``"L"``); ``None`` otherwise.
        sha256: hex digest of the file bytes (matches ``Dataset.content_hashes``), ``None``
            when the file could not be read.
    """

    kind: str | None
    message: str = ""
    hint: str | None = None
    mode: str | None = None
    sha256: str | None = None


def read_for_check(path: str | Path, missing_hint: str, empty_hint: str) -> bytes | FileCheck:
    """The file's bytes, or the :class:`FileCheck` saying why there are none to check."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return FileCheck("missing-file", f"file not found: {printable(str(path))}", missing_hint)
    except OSError as e:  # permissions, a directory, an unreadable disk sector
        return FileCheck("unreadable", f"cannot read the file: {e.strerror or e}",
                         "check the file's permissions")
    if not data:
        return FileCheck("empty-file", "the file is empty (0 bytes)", empty_hint)
    return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
