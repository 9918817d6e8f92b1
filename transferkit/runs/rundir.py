"""One owner for every file of a run directory.

A run directory is data, never code: every command that writes or reads a run goes through
:class:`RunDir`, which knows the file names, writes each file atomically, reads them back with
clear errors, and carries the format version and the lineage (the run this one came from).

Completeness: ``model_card.json`` is written last, and removed first when a run is rewritten,
so a directory whose writing was interrupted (full disk, kill) is never taken for a run.
Concurrency: :meth:`RunDir.lock` takes an exclusive lock on ``.lock`` in the directory, so two
processes never write one run at the same time.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import platform
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_write_bytes, json_bytes
from ..errors import UserInputError, shown

#: The format this version writes.  Runs of ``transferkit-run/1`` (before the weight file carried
#: its classes) are read too.
FORMAT = "transferkit-run/2"
READS = ("transferkit-run/1", FORMAT)

CARD = "model_card.json"
CONFIG = "config.json"
METRICS = "metrics.json"
WEIGHTS = "strategy.safetensors"
#: The delivered model's weights, where model selection chose another model than the transfer
#: model (whose weights stay in ``WEIGHTS``).
DELIVERED_WEIGHTS = "delivered.safetensors"
VALIDATION = "validation.json"
SKIPPED = "skipped.json"
REPORT = "report.html"
#: A bounded sample of training features, the reference of the server's drift monitor.
REFERENCE = "reference_features.npy"
REFERENCE_MAX_ROWS = 500
CHECKPOINTS = "checkpoints"
#: TensorBoard's event files of the fit, with ``--track tensorboard`` (:mod:`transferkit.tracking`).
TENSORBOARD = "tensorboard"
LOCK = ".lock"


def versions() -> dict[str, str]:
    """Versions of Python and the packages that decide a run's numbers."""
    out = {"python": platform.python_version()}
    for pkg in ("transferkit", "torch", "transformers", "numpy", "scikit-learn", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RunDir:
    """The files of one run directory.

    Args:
        path: the directory (need not exist yet, for writing).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ----- paths ---------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def checkpoint_dir(self, which: str) -> Path:
        """Where a model of this run (``transfer``, ``random-init``) checkpoints."""
        return self.checkpoints / which

    def is_complete(self) -> bool:
        """A finished run: its model card (written last) is there."""
        return (self.path / CARD).is_file()

    # ----- writing -------------------------------------------------------------------------
    def _write(self, name: str, data: bytes) -> Path:
        path = self.path / name
        try:
            atomic_write_bytes(path, data)
        except OSError as e:
            raise _write_error(path, e) from None
        return path

    def write_json(self, name: str, obj: Any) -> Path:
        return self._write(name, json_bytes(obj))

    def write_text(self, name: str, text: str) -> Path:
        return self._write(name, text.encode("utf-8"))

    def write_bytes(self, name: str, data: bytes) -> Path:
        return self._write(name, data)

    def begin(self) -> None:
        """Start (re)writing this run: the directory exists and is no longer a complete run
        (its model card goes first, so an interrupted rewrite is never taken for a run)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / CARD).unlink(missing_ok=True)
        except OSError as e:
            raise _write_error(self.path, e) from None

    def write_config(self, config: dict[str, Any], *, command: str = "fit") -> Path:
        """``config.json``: what re-runs this run (``transferkit fit --config``)."""
        return self.write_json(CONFIG, {"transferkit_version": versions().get("transferkit"), "command": command,
                                        "config": config})

    def write_weights(self, tensors: dict[str, Any], *, strategy: str, classes: list[str],
                      file: str = WEIGHTS) -> dict[str, Any]:
        """``strategy.safetensors`` (or ``file``: the delivered model's); returns the card's
        ``weights`` entry.

        The file carries its own strategy and classes, so a card whose classes do not match the
        weights is caught at load time; its bytes are the same for the same tensors (one metadata
        key, so no key order can differ), so the card's sha256 is reproducible.
        """
        from safetensors.torch import save

        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        meta = {"transferkit": json.dumps({"format": FORMAT, "strategy": strategy, "classes": list(classes)},
                                          sort_keys=True)}
        blob = save(tensors, metadata=meta)
        self._write(file, blob)
        return {"file": file, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
                "tensors": {k: list(v.shape) for k, v in sorted(tensors.items())}}

    def write_reference(self, feats: np.ndarray) -> dict[str, Any]:
        """The drift monitor's reference features ``(n, D)`` as float32 ``.npy`` (no pickle);
        returns the card's ``drift_reference`` entry."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(feats, dtype=np.float32), allow_pickle=False)
        blob = buf.getvalue()
        self._write(REFERENCE, blob)
        return {"file": REFERENCE, "n": int(feats.shape[0]), "dim": int(feats.shape[1]),
                "sha256": hashlib.sha256(blob).hexdigest()}

    def write_card(self, card: dict[str, Any]) -> dict[str, Any]:
        """The model card, with the format version; written last, it makes the run complete."""
        card = dict(card, format=FORMAT)
        self.write_json(CARD, card)
        return card

    # ----- reading -------------------------------------------------------------------------
    def read_json(self, name: str, default: Any = ...) -> Any:
        path = self.path / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if default is not ...:
                return default
            raise UserInputError(f"{shown(path)} is missing",
                                 hint="give the --out directory of a finished `transferkit fit`") from None
        except OSError as e:
            raise UserInputError(f"cannot read {shown(path)}: {e.strerror or e}") from None
        except ValueError as e:
            raise UserInputError(f"{shown(path)} is damaged: {e}", hint="re-run the fit that wrote it") from None

    def card(self) -> dict[str, Any]:
        """The model card, checked to be a run of a format this version reads."""
        if not self.path.is_dir():
            raise UserInputError(f"{shown(self.path)} is not a directory",
                                 hint="give the --out directory of a finished `transferkit fit`")
        if not self.is_complete():
            hint = ("its writing did not finish (a killed or failed fit): re-run the fit"
                    if (self.path / CONFIG).is_file() else "give the --out directory of a finished `transferkit fit`")
            raise UserInputError(f"{shown(self.path)} is not a transferkit run: {CARD} is missing", hint=hint)
        card = self.read_json(CARD)
        if not isinstance(card, dict) or card.get("format") not in READS:
            got = card.get("format") if isinstance(card, dict) else type(card).__name__
            raise UserInputError(f"{shown(self.path / CARD)}: unknown format {got!r} (this version reads "
                                 f"{', '.join(READS)})", hint="was it written by a newer transferkit?")
        return card

    def config(self) -> dict[str, Any]:
        """``config.json`` as written: ``{"command", "config", "transferkit_version"}``."""
        d = self.read_json(CONFIG)
        if not isinstance(d, dict):
            raise UserInputError(f"{shown(self.path / CONFIG)} is not a JSON object")
        return d

    def metrics(self) -> dict[str, Any] | None:
        return self.read_json(METRICS, None)

    def read_weights(self, card: dict[str, Any], entry: dict[str, Any] | None = None) -> dict[str, Any]:
        """The strategy's tensors, checked against the card: file hash, tensor names and shapes,
        and the classes the file was written with.  ``entry``: another weights entry of the card
        than ``weights`` (``delivered.weights``); its file is one of the run's two weight files.

        Raises:
            UserInputError: the file is missing, damaged or differs from the card.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load

        entry = (card.get("weights") or {}) if entry is None else entry
        name = entry.get("file", WEIGHTS)
        if name not in (WEIGHTS, DELIVERED_WEIGHTS):  # a card names one of the run's own files, nothing else
            raise UserInputError(f"{shown(self.path / CARD)} names the weights file {name!r}, which is not one of "
                                 f"a run's ({WEIGHTS}, {DELIVERED_WEIGHTS})", hint="re-run the fit that wrote it")
        path = self.path / name
        try:
            blob = path.read_bytes()
        except OSError as e:
            raise UserInputError(f"cannot read {shown(path)}: {e.strerror or e}") from None
        if not entry.get("sha256"):
            raise UserInputError(f"{shown(self.path / CARD)} names no hash for {name}, so its weights cannot be "
                                 "checked", hint="re-run the fit that wrote it")
        if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
            raise UserInputError(f"{shown(path)} differs from the one the model card lists (sha256 mismatch)",
                                 hint="the run directory was modified or damaged; re-run the fit")
        try:
            tensors = load(blob)
            meta = _safetensors_metadata(blob)
        except (SafetensorError, ValueError) as e:
            raise UserInputError(f"cannot read {shown(path)}: {e}") from None
        want = entry.get("tensors")
        if want is not None:
            have = {k: list(v.shape) for k, v in sorted(tensors.items())}
            if have != want:
                raise UserInputError(f"the tensors of {shown(path)} differ from the model card's (names or shapes)",
                                     hint="the run directory was modified; re-run the fit")
        written = meta.get("classes")
        if written is not None and list(written) != list(card.get("classes") or []):
            raise UserInputError(f"the model card's classes {card.get('classes')} differ from the ones "
                                 f"{name} was trained with {written}",
                                 hint="the run directory was modified; re-run the fit")
        return tensors

    def reference(self, card: dict[str, Any]) -> np.ndarray | None:
        """The drift reference ``(n, D)`` float32, or ``None`` for a run without one.
        Refuses a file whose sha256 differs from the card's."""
        entry = card.get("drift_reference")
        if not entry:
            return None
        path = self.path / REFERENCE
        try:
            blob = path.read_bytes()
        except OSError as e:
            raise UserInputError(f"cannot read {shown(path)}: {e.strerror or e}") from None
        if hashlib.sha256(blob).hexdigest() != entry.get("sha256"):
            raise UserInputError(f"{shown(path)} differs from the one the model card lists (sha256 mismatch)",
                                 hint="the run directory was modified; re-run the fit")
        try:
            return np.load(io.BytesIO(blob), allow_pickle=False).astype(np.float32, copy=False)
        except ValueError as e:
            raise UserInputError(f"cannot read {shown(path)}: {e}") from None

    # ----- lineage ---------------------------------------------------------------------------
    def lineage_entry(self) -> dict[str, Any]:
        """How a run made from this one names it: path, creation time and card hash."""
        blob = (self.path / CARD).read_bytes()
        card = json.loads(blob)
        return {"run": str(self.path), "created": card.get("created"),
                "card_sha256": hashlib.sha256(blob).hexdigest(),
                "backbone": (card.get("backbone") or {}).get("name"),
                "strategy": (card.get("strategy") or {}).get("name")}

    # ----- concurrency -----------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on this run for writing; a second writer is refused at once."""
        from filelock import FileLock, Timeout

        created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _write_error(self.path, e) from None
        lock = FileLock(str(self.path / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise UserInputError(f"another transferkit process is writing the run {shown(self.path)}",
                                 hint="wait for it to finish, or pass another --out") from None
        except OSError as e:
            raise _write_error(self.path / LOCK, e) from None
        try:
            yield
        finally:
            lock.release()
            if created:
                _remove_if_only_lock(self.path)


def _remove_if_only_lock(path: Path) -> None:
    """A directory that a failed command created holds nothing but its lock: remove it, so a
    fit stopped by bad data leaves nothing behind."""
    try:
        if [p.name for p in path.iterdir()] == [LOCK]:
            (path / LOCK).unlink()
            path.rmdir()
    except OSError:
        pass  # someone else wrote there meanwhile: leave it


def _safetensors_metadata(blob: bytes) -> dict[str, Any]:
    """The transferkit entry of a safetensors header (``{}`` for files without one)."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    raw = (header.get("__metadata__") or {}).get("transferkit")
    return json.loads(raw) if raw else {}


def _write_error(path: Path, e: OSError) -> UserInputError:
    if e.errno == errno.ENOSPC:
        what = "the disk is full"
        hint = "free some space and re-run; the run is not complete until its model card is written"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = "it is not writable (read-only or no permission)"
        hint = "pass an --out directory you can write"
    else:
        what = e.strerror or str(e)
        hint = "check the path and re-run"
    return UserInputError(f"cannot write {shown(path)}: {what}", hint=hint)
