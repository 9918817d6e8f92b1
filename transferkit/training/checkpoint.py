"""Checkpoints written atomically, found again after a crash, loaded without pickle.

A checkpoint is a directory ``ckpt-<step>/`` holding

- ``model.safetensors``: the tensors training changes (trainable parameters and buffers);
- ``state.pt``: optimizer, scheduler, grad-scaler, callback and RNG states, as plain tensors,
  numbers, lists and dicts written by ``torch.save`` and read back only with
  ``torch.load(weights_only=True)``;
- ``manifest.json``: epoch, step, position in the epoch, the run's configuration and its
  hash, and the sha256 of both data files.

Each file is written to a temporary name and renamed; the manifest is renamed into place
last, so a directory without one is an interrupted write and is ignored (then removed).
A file whose sha256 differs from the manifest is damaged: the previous checkpoint is used.
A file that holds a pickled Python object is refused with :class:`UnsafeFileError`.

Removing checkpoints never follows a symbolic link: a checkpoint folder (or its parent, the
run's ``checkpoints/``) that is a link is refused, and a ``ckpt-*`` entry that is a link is
neither loaded nor followed (only the link itself is removed).  Once a run is written,
:func:`prune_after_run` drops what only a killed fit needed.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import atomic_write_bytes
from ..errors import UnsafeFileError, UserInputError

FORMAT = "transferkit-checkpoint/1"
MANIFEST = "manifest.json"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
PREFIX = "ckpt-"


@dataclass
class Checkpoint:
    """One loaded checkpoint.

    Attributes:
        path: its directory.
        meta: the manifest's ``meta`` (epoch, step, position, config hash, history...).
        model: tensor name -> tensor, as given to :func:`save_checkpoint`.
        state: optimizer / scheduler / RNG / callback states.
    """

    path: Path
    meta: dict[str, Any]
    model: dict[str, torch.Tensor]
    state: dict[str, Any]


class DamagedCheckpointError(Exception):
    """A checkpoint whose files are missing or differ from its manifest (internal)."""


# ----- hashing the run configuration -----------------------------------------------------
def config_hash(config: dict[str, Any]) -> str:
    """A short sha256 of a JSON-able configuration: checkpoints of another run are refused."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ----- RNG states as plain tensors -------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python ``random`` states, with no Python objects."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----- reading without pickle ------------------------------------------------------------
def safe_torch_load(data: bytes, origin: str | Path) -> Any:
    """``torch.load(weights_only=True)`` of in-memory bytes.

    Raises:
        UnsafeFileError: the data holds a pickled Python object (names ``origin``).
        DamagedCheckpointError: the data is not a torch file.
    """
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeFileError(
            f"{origin} holds a pickled Python object, which could run arbitrary code when loaded; refused",
            hint="checkpoints hold only tensors, numbers and strings; delete this file (or its checkpoint "
                 f"directory) if you did not write it ({str(e).splitlines()[0][:120]})") from None
    except (RuntimeError, EOFError, ValueError) as e:
        raise DamagedCheckpointError(f"{origin}: {e}") from None


# ----- writing -------------------------------------------------------------------------------
def _step_of(path: Path) -> int:
    try:
        return int(path.name[len(PREFIX):])
    except ValueError:
        return -1


def _write_manifest(ckpt: Path, meta: dict[str, Any], files: dict[str, dict[str, Any]]) -> None:
    """The last write of a checkpoint: once this rename lands, the checkpoint is complete."""
    body = {"format": FORMAT, "meta": meta, "files": files, "created": time.time()}
    atomic_write_bytes(ckpt / MANIFEST, (json.dumps(body, indent=1, default=str) + "\n").encode())
    try:  # make the new directory entries durable too (power loss, not only a killed process)
        fd = os.open(ckpt, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _remove(ckpt: Path) -> None:
    if ckpt.is_symlink():  # only the link goes, never what it points at
        ckpt.unlink(missing_ok=True)
        return
    # The manifest goes first: a removal cut short leaves an incomplete (ignored) directory,
    # never a complete-looking one with a file missing.
    (ckpt / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(ckpt, ignore_errors=True)  # unlinks links inside, never follows them


def _refuse_symlink(directory: Path, levels: int = 2) -> None:
    """Refuse to write into or remove from a checkpoint folder reached through a link.

    The folder and its parent (the run's ``checkpoints/``) belong to the run; a link there
    would make clearing or pruning delete files outside it.  (Where the run folder itself
    lives is the user's choice.)
    """
    for p in (directory, directory.parent)[:levels]:
        if p.is_symlink():
            raise UserInputError(
                f"the checkpoint folder {p} is a symbolic link (to {os.readlink(p)}); transferkit does not "
                "write or delete checkpoints through a link, which could remove files outside the run",
                hint=f"remove the link ({p}) or choose another output directory")


def save_checkpoint(directory: str | Path, *, step: int, model: dict[str, torch.Tensor],
                    state: dict[str, Any], meta: dict[str, Any], keep_last: int = 2) -> Path:
    """Write ``ckpt-<step>/`` atomically and keep only the newest ``keep_last`` complete ones.

    Args:
        directory: the run's checkpoint folder (created if needed).
        step: optimizer steps done; names the checkpoint.
        model: name -> tensor (CPU copies are written; shared storage is fine).
        state: nested dicts/lists of tensors, numbers, strings and ``None`` only.
        meta: JSON-able facts (epoch, position, config and its hash, history).
        keep_last: complete checkpoints to keep (>= 1).

    Returns:
        The checkpoint directory.
    """
    from safetensors.torch import save as st_save

    directory = Path(directory)
    _refuse_symlink(directory)
    ckpt = directory / f"{PREFIX}{step:08d}"
    if ckpt.exists() or ckpt.is_symlink():  # left by an interrupted run that got this far: never trust its files
        _remove(ckpt)
    ckpt.mkdir(parents=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.items()}
    model_blob = st_save(tensors, metadata={"format": FORMAT, "step": str(step)})
    buf = io.BytesIO()
    torch.save(state, buf)
    state_blob = buf.getvalue()
    files = {}
    for name, blob in ((MODEL_FILE, model_blob), (STATE_FILE, state_blob)):
        atomic_write_bytes(ckpt / name, blob)
        files[name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    _write_manifest(ckpt, dict(meta, step=step), files)
    prune(directory, keep_last)
    return ckpt


def _entries(directory: Path) -> list[Path]:
    """``ckpt-*`` entries of a folder (links included, never followed)."""
    return [d for d in directory.glob(f"{PREFIX}*") if d.is_symlink() or d.is_dir()]


def prune(directory: str | Path, keep_last: int) -> None:
    """Remove all but the newest ``keep_last`` complete checkpoints, and older incomplete ones."""
    directory = Path(directory)
    _refuse_symlink(directory)
    _prune(directory, keep_last)


def _prune(directory: Path, keep_last: int) -> None:
    complete = complete_checkpoints(directory)
    for old in complete[:-keep_last] if keep_last > 0 else complete:
        _remove(old)
    newest = _step_of(complete[-1]) if complete else -1
    for d in _entries(directory):
        if (d.is_symlink() or not (d / MANIFEST).exists()) and _step_of(d) < newest:
            _remove(d)


def clear_checkpoints(directory: str | Path) -> None:
    """Remove every checkpoint in ``directory`` (a run that starts over).

    Raises:
        UserInputError: the folder (or its parent) is a symbolic link.
    """
    directory = Path(directory)
    _refuse_symlink(directory)
    for d in _entries(directory):
        _remove(d)


def prune_after_run(root: str | Path, keep_last: int = 0) -> int:
    """Drop the checkpoints of a finished run: only a killed fit needs them.

    Args:
        root: the run's checkpoint root (``RUN/checkpoints``): it and every folder directly
            inside it (one per model: ``transfer``, ``random-init``) are pruned.
        keep_last: complete checkpoints to keep per folder (0: none; folders left empty are
            removed, and ``root`` too when nothing is left in it).

    Returns:
        Bytes freed.  A missing ``root`` frees nothing.

    Raises:
        UserInputError: ``root`` or a folder in it is a symbolic link (nothing is removed through it).
    """
    root = Path(root)
    _refuse_symlink(root, levels=1)
    if not root.is_dir():
        return 0
    before = _tree_bytes(root)
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir() or p.is_symlink())
    for folder in folders:
        _refuse_symlink(folder, levels=1)
    for folder in folders:
        _prune(folder, keep_last)
        if keep_last <= 0:
            # Whatever is left of an unfinished write; unknown files stay.
            for d in _entries(folder):
                _remove(d)
    for folder in reversed(folders):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            pass
    return before - _tree_bytes(root)


def _tree_bytes(root: Path) -> int:
    if not root.is_dir():
        return 0
    total = 0
    for dirpath, _, files in os.walk(root):  # does not follow links
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


# ----- finding and loading -------------------------------------------------------------------
def complete_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint directories whose manifest is in place, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [d for d in directory.glob(f"{PREFIX}*") if not d.is_symlink() and d.is_dir()
             and (d / MANIFEST).is_file() and _step_of(d) >= 0]
    return sorted(found, key=_step_of)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify one checkpoint directory.

    Raises:
        UnsafeFileError: ``state.pt`` holds a pickled object.
        DamagedCheckpointError: a file is missing, damaged or differs from the manifest.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise DamagedCheckpointError(f"{path / MANIFEST}: {e}") from None
    if manifest.get("format") != FORMAT:
        raise DamagedCheckpointError(f"{path / MANIFEST}: unknown format {manifest.get('format')!r}")
    blobs = {}
    for name in (MODEL_FILE, STATE_FILE):
        want = manifest.get("files", {}).get(name)
        try:
            blob = (path / name).read_bytes()
        except OSError as e:
            raise DamagedCheckpointError(f"{path / name}: {e.strerror}") from None
        if want is None or hashlib.sha256(blob).hexdigest() != want.get("sha256"):
            raise DamagedCheckpointError(f"{path / name} differs from its manifest (sha256)")
        blobs[name] = blob
    try:
        model = st_load(blobs[MODEL_FILE])
    except SafetensorError as e:
        raise DamagedCheckpointError(f"{path / MODEL_FILE}: {e}") from None
    state = safe_torch_load(blobs[STATE_FILE], path / STATE_FILE)
    if not isinstance(state, dict):
        raise DamagedCheckpointError(f"{path / STATE_FILE}: expected a dict, got {type(state).__name__}")
    return Checkpoint(path=path, meta=manifest["meta"], model=model, state=state)


def load_latest(directory: str | Path, *, config_hash: str | None = None) -> Checkpoint | None:
    """The newest complete, undamaged checkpoint in ``directory`` (``None``: there is none).

    Incomplete directories (a write cut short) are ignored; a damaged checkpoint is skipped
    with a warning in favour of the previous one.

    Raises:
        UserInputError: the checkpoints belong to a run with another configuration, or the
            folder is reached through a symbolic link (refused before training, not at its
            first checkpoint).
        UnsafeFileError: a checkpoint holds a pickled object.
    """
    _refuse_symlink(Path(directory))
    for ckpt in reversed(complete_checkpoints(directory)):
        try:
            loaded = load_checkpoint(ckpt)
        except DamagedCheckpointError as e:
            warnings.warn(f"skipping damaged checkpoint: {e}", RuntimeWarning, stacklevel=2)
            continue
        have = loaded.meta.get("config_hash")
        if config_hash is not None and have != config_hash:
            raise UserInputError(
                f"the checkpoints in {directory} were written by a run with another configuration "
                f"(hash {have}, this run {config_hash}): resuming would mix the two",
                hint="use another output directory, or start over without resuming (resume=False)")
        return loaded
    return None
