"""Save and load a run directory: trained tensors in safetensors, lineage in JSON.

Components are referred to by registry name (backbone, strategy), never by Python import
path, so renaming a module does not break old runs.  Nothing here unpickles anything.
"""
from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ._files import atomic_write_bytes, write_json
from .backbones import get_backbone
from .errors import UserInputError
from .model import TransferModel
from .strategies import STRATEGIES

FORMAT = "transferkit-run/1"
WEIGHTS = "strategy.safetensors"
#: A bounded sample of training features, the reference of the server's drift monitor.
REFERENCE = "reference_features.npy"
REFERENCE_MAX_ROWS = 500


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("transferkit", "torch", "transformers", "numpy", "scikit-learn", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def save_model(model: TransferModel, run_dir: str | Path, *, card: dict[str, Any]) -> dict[str, Any]:
    """Write the trained tensors and the model card; returns the card as written."""
    from safetensors.torch import save

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.strategy.state_tensors().items()}
    blob = save(tensors, metadata={"format": FORMAT, "strategy": model.strategy.name})
    atomic_write_bytes(run_dir / WEIGHTS, blob)
    import hashlib

    card = dict(card, format=FORMAT, weights={"file": WEIGHTS, "sha256": hashlib.sha256(blob).hexdigest(),
                                              "bytes": len(blob)})
    write_json(run_dir / "model_card.json", card)
    return card


def load(run_dir: str | Path, *, check_weights: bool = True, cache: bool = True,
         progress: bool | None = None, backend: str = "torch") -> TransferModel:
    """Load a run directory for prediction: no training data, no network needed.

    Args:
        run_dir: a directory written by ``fit(..., out=...)``.
        check_weights: refuse a backbone whose weights differ from the ones trained with.
        backend: ``torch``; ``onnx`` or ``onnx-int8``: predict through the graph written by
            ``transferkit export`` with ONNX Runtime (same preprocessing).
    """
    if backend not in ("torch", "onnx", "onnx-int8"):
        raise UserInputError(f"backend must be torch, onnx or onnx-int8, got {backend!r}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    card_path = run_dir / "model_card.json"
    if not card_path.is_file():
        raise UserInputError(f"{run_dir} is not a transferkit run: {card_path.name} is missing",
                             hint="give the --out directory of a finished `transferkit fit`")
    try:
        card = json.loads(card_path.read_text())
    except ValueError as e:
        raise UserInputError(f"{card_path} is damaged: {e}") from None
    if card.get("format") != FORMAT:
        raise UserInputError(f"{card_path}: unknown format {card.get('format')!r} (this version reads {FORMAT})")
    b = card["backbone"]
    backbone = get_backbone(b["name"], **b.get("options", {}))
    if check_weights and b["identity"].get("weights_sha256"):
        have = backbone.weights_sha256()
        if have != b["identity"]["weights_sha256"]:
            raise UserInputError(
                f"the weights of backbone {b['name']!r} on this machine (sha256 {have[:12]}…) differ from the "
                f"ones this run was trained with ({b['identity']['weights_sha256'][:12]}…)",
                hint="install the same model version, or pass check_weights=False to use these anyway")
    strategy = STRATEGIES.get(card["strategy"]["name"]).from_params(card["strategy"]["params"])
    try:
        tensors = load_file(run_dir / WEIGHTS)
    except (OSError, SafetensorError) as e:
        raise UserInputError(f"cannot read {run_dir / WEIGHTS}: {e}") from None
    strategy.load_state(tensors, card["classes"], backbone)
    metrics = None
    if (run_dir / "metrics.json").is_file():
        metrics = json.loads((run_dir / "metrics.json").read_text())
    model = TransferModel(backbone, strategy, card=card, metrics=metrics, run_dir=run_dir, cache=cache,
                          progress=progress)
    if backend != "torch":
        from .onnx_runtime import attach_onnx

        attach_onnx(model, run_dir, int8=backend == "onnx-int8")
    return model


def save_reference_features(run_dir: str | Path, feats: np.ndarray) -> dict[str, Any]:
    """Write ``feats (n, D)`` as float32 ``.npy`` (no pickle); returns its model-card entry."""
    import hashlib
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(feats, dtype=np.float32), allow_pickle=False)
    blob = buf.getvalue()
    atomic_write_bytes(Path(run_dir) / REFERENCE, blob)
    return {"file": REFERENCE, "n": int(feats.shape[0]), "dim": int(feats.shape[1]),
            "sha256": hashlib.sha256(blob).hexdigest()}


def load_reference_features(run_dir: str | Path, card: dict[str, Any]) -> np.ndarray | None:
    """The run's reference training features ``(n, D)`` float32, or ``None`` for a run without
    them (written by an older version).  Refuses a file whose sha256 differs from the card's."""
    import hashlib

    entry = card.get("drift_reference")
    if not entry:
        return None
    path = Path(run_dir) / REFERENCE
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise UserInputError(f"cannot read {path}: {e.strerror or e}") from None
    if hashlib.sha256(blob).hexdigest() != entry.get("sha256"):
        raise UserInputError(f"{path} differs from the one the model card lists (sha256 mismatch)",
                             hint="the run directory was modified; re-run the fit")
    import io

    return np.load(io.BytesIO(blob), allow_pickle=False).astype(np.float32, copy=False)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
