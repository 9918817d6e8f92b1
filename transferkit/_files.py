"""Small file utilities: the cache root, atomic writes, memoised file hashes."""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Iterable


def cache_root() -> Path:
    """Where features and hashes are cached: ``$TRANSFERKIT_CACHE`` or ``~/.cache/transferkit``."""
    env = os.environ.get("TRANSFERKIT_CACHE")
    root = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "transferkit"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # read-only, or a file: each writer of the cache copes (a cache only saves time)
    return root


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader never sees a partial file.

    The data goes to a temporary file beside ``path`` (fsync'd) that is then renamed over it.
    The file gets the usual mode of a new file, ``0o666`` less the umask (``0o644`` under the
    common umask 022), as ``open()`` would give: another account can read a shared run.
    (``tempfile.mkstemp`` would make it 0600.)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_bytes(obj) -> bytes:
    """``obj`` as indented UTF-8 JSON (numpy scalars and arrays, paths converted)."""
    return (json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n").encode()


def write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def files_sha256(paths: Iterable[str | Path]) -> str:
    """sha256 over the contents of several files, memoised by (path, size, mtime).

    Weight files are tens of MB; hashing them on every run would cost more than a cached fit.
    """
    paths = sorted(Path(p).resolve() for p in paths)
    memo_path = cache_root() / "file_hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    digests = []
    changed = False
    for p in paths:
        st = p.stat()
        key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
        digest = memo.get(key)
        if digest is None:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
            digest = memo[key] = h.hexdigest()
            changed = True
        digests.append(digest)
    if changed:
        try:
            write_json(memo_path, memo)
        except OSError:
            pass  # a read-only cache only costs speed
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(digests).encode()).hexdigest()
