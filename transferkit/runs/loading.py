"""``tk.load``: a run directory back as a :class:`~transferkit.model.TransferModel`.

A run directory may come from someone else, so its files are data and never enable code:
``trust_remote_code`` and ``allow_pickle`` come only from the caller's own arguments (the
user's flags), never from the model card; a backbone path in the card is followed only when it
lies inside the run directory or a model cache, unless the caller names the backbone itself;
the backbone's weights and the run's own tensors are checked against the card's hashes.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from .._files import cache_root, write_json
from ..backbones import BACKBONES, get_backbone
from ..backbones.base import Backbone
from ..errors import UserInputError, shown
from ..model import TransferModel
from ..strategies import STRATEGIES
from .hub import is_hub_uri, snapshot
from .rundir import RunDir

#: Backbone options a model card may set: how features are computed, never what may run.
CARD_OPTIONS = ("layer", "pooling", "max_length", "max_chunks", "image_size", "max_seconds", "revision", "modality")


def load(run_dir: str | os.PathLike, *, check_weights: bool = True, cache: bool = True,
         progress: bool | None = None, backend: str = "torch", backbone: str | None = None,
         allow_pickle: bool = False, trust_remote_code: bool = False, which: str = "delivered") -> TransferModel:
    """Load a run directory for prediction: no training data, no network needed.

    Args:
        run_dir: a directory written by ``fit(..., out=...)``.  ``hf://OWNER/NAME[@REVISION]``: a run pushed
            to the Hugging Face Hub (``transferkit push``), downloaded once into the Hub's cache.
        which: ``delivered``, the model that selection on the training data chose (the transfer
            model itself where it was the best, or where the run made no selection); ``transfer``,
            the transfer model that the run's verdict judges.
        check_weights: refuse a backbone whose weights differ from the ones trained with.
        backend: ``torch``; ``onnx`` or ``onnx-int8``: predict through the graph written by
            ``transferkit export`` with ONNX Runtime (same preprocessing).
        backbone: where the pre-trained backbone is (a zoo name, local directory or hub id),
            instead of the card's; needed when the card names a directory outside the run and
            outside the model caches.
        allow_pickle: allow pickled backbone weights (the user's own decision: a card cannot).
        trust_remote_code: run the backbone repository's own Python code (likewise).
    """
    if is_hub_uri(run_dir):  # hf://OWNER/NAME: the Hub snapshot's folder, then the same checks as any run
        run_dir = snapshot(str(run_dir))
    if backend not in ("torch", "onnx", "onnx-int8"):
        raise UserInputError(f"backend must be torch, onnx or onnx-int8, got {backend!r}")
    if which not in ("delivered", "transfer"):
        raise UserInputError(f"which must be delivered or transfer, got {which!r}")
    rd = RunDir(run_dir)
    card = rd.card()
    if isinstance(card.get("multi_task"), dict):  # one model per label column, each a run of its own
        dirs = [str((e or {}).get("dir")) for e in card["multi_task"].values()]
        raise UserInputError(f"{shown(rd.path)} is a multi-task run of the label columns "
                             f"{', '.join(card['multi_task'])}: each column's model is a run of its own",
                             hint=f"load one of {', '.join(shown(rd.path / d) for d in dirs)}, or all of them with "
                                  "transferkit.multitask.load_multitask (`transferkit predict` takes the whole run)")
    if isinstance(card.get("pretrain"), dict):  # an encoder without a head: a starting point, not a model
        raise UserInputError(f"{shown(rd.path)} is a `transferkit pretrain` run: an encoder without a head, "
                             "nothing to predict with", hint=f"fit a model on it: transferkit fit --model "
                                                             f"{shown(rd.path)} --data LABELLED ...")
    b = card.get("backbone") or {}
    name = backbone or b.get("name")
    if not isinstance(name, str) or not name:
        raise UserInputError(f"{shown(rd.file('model_card.json'))} names no backbone",
                             hint="re-run the fit that wrote it")
    if backbone is None:
        _check_card_backbone(name, rd)
    options = {k: v for k, v in (b.get("options") or {}).items() if k in CARD_OPTIONS}
    if trust_remote_code:
        options["trust_remote_code"] = True
    if allow_pickle:
        options["allow_pickle"] = True
    bb = _load_backbone(name, options, trust_remote_code)
    if check_weights:
        _check_backbone_weights(bb, b.get("identity") or {}, name)
    delivered = card.get("delivered") if which == "delivered" else None
    if delivered is not None and not isinstance(delivered, dict):
        raise UserInputError(f"{shown(rd.file('model_card.json'))}: its delivered entry is not an object",
                             hint="re-run the fit that wrote it")
    spec = (delivered or card).get("strategy") or {}
    try:
        strategy_cls = STRATEGIES.get(spec.get("name"))
    except UserInputError as e:
        raise UserInputError(f"{shown(rd.path)}: {e.message}", hint="was it written by a newer transferkit?") from None
    strategy = strategy_cls.from_params(spec.get("params") or {})
    tensors = rd.read_weights(card, None if delivered is None else delivered.get("weights") or {})
    strategy.load_state(tensors, card["classes"], bb, task=card.get("task") or "classification")
    model = TransferModel(bb, strategy, card=card, metrics=rd.metrics(), run_dir=rd.path, cache=cache,
                          progress=progress)
    if backend != "torch" and not strategy_cls.head_on_features:
        raise UserInputError(f"the delivered model of {shown(rd.path)} is {spec.get('name')}, which has no exported "
                             "graph (its features are hand-made, outside the network)",
                             hint="predict with the torch backend, or load the transfer model: which='transfer' "
                                  "(--which transfer)")
    if backend != "torch":
        from ..onnx_runtime import attach_onnx

        exported = (card.get("export") or {}).get("model") or "delivered"
        if card.get("delivered") and card.get("export") and exported != which:
            raise UserInputError(f"the ONNX graph of {shown(rd.path)} is the {exported} model's, not the {which} one's",
                                 hint=f"load it with which='{exported}' (--which {exported})")

        attach_onnx(model, rd.path, int8=backend == "onnx-int8")
    return model


def with_head(run_dir: str | os.PathLike) -> str:
    """Which model of a run is a head on backbone features, for explanations and export:
    ``delivered`` unless the delivered model reads hand-made features (``hybrid``,
    ``classical``), then ``transfer``."""
    name = ((RunDir(run_dir).card().get("delivered") or {}).get("strategy") or {}).get("name")
    if name is None:
        return "delivered"
    try:
        return "delivered" if STRATEGIES.get(name).head_on_features else "transfer"
    except UserInputError:
        return "delivered"  # load() names the unknown strategy


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except (ValueError, OSError):
        return False


def model_caches() -> list[Path]:
    """Folders a card's backbone path may point into: the Hugging Face cache and ours."""
    roots = [cache_root()]
    try:
        from huggingface_hub import constants

        roots.append(Path(constants.HF_HUB_CACHE))
    except (ImportError, AttributeError):  # pragma: no cover - transformers depends on it
        pass
    return roots


_USER_BACKBONES = "user_backbones.json"


def remember_user_backbone(name: str) -> None:
    """Record that the user named the model directory ``name`` themselves (``fit --model DIR``),
    so that their own runs load it again; a received run's card cannot add to this list.
    A cache that cannot be written only means the user names it again with --backbone."""
    path = Path(name).expanduser()
    if name in BACKBONES or not path.is_dir():
        return
    known = _user_backbones()
    entry = str(path.resolve())
    if entry in known:
        return
    try:
        write_json(cache_root() / _USER_BACKBONES, sorted(known | {entry}))
    except OSError:
        pass


def _user_backbones() -> set[str]:
    try:
        data = json.loads((cache_root() / _USER_BACKBONES).read_text(encoding="utf-8"))
        return {str(x) for x in data} if isinstance(data, list) else set()
    except (OSError, ValueError):
        return set()


def _check_card_backbone(name: str, rd: RunDir) -> None:
    """A card's backbone is a zoo name, a hub id, a directory inside the run or a model cache,
    or a directory the user named themselves in a fit on this machine."""
    if name in BACKBONES:
        return
    path = Path(name).expanduser()
    if not path.is_absolute() and (rd.path / path).exists() and not path.exists():
        path = rd.path / path
    if not path.exists():
        return  # a hub id: resolved in the Hugging Face cache (no code runs without the user's flag)
    if _inside(path, rd.path) or any(_inside(path, root) for root in model_caches()):
        return
    if str(path.resolve()) in _user_backbones():
        return
    raise UserInputError(
        f"the model card of {shown(rd.path)} points its backbone at {shown(path)}, a folder outside the run "
        "directory and the model caches that no fit on this machine used",
        hint="if you trust that folder, name it yourself: --backbone PATH (tk.load(run, backbone=PATH))")


def _load_backbone(name: str, options: dict[str, Any], trust_remote_code: bool) -> Backbone:
    if trust_remote_code and Path(name).is_dir():
        code = sorted(p.name for p in Path(name).glob("*.py"))
        if code:
            warnings.warn(f"trust_remote_code: the Python files of {shown(name)} may run: {', '.join(code)}",
                          stacklevel=3)
    try:
        return get_backbone(name, **options)
    except ValueError as e:
        if isinstance(e, UserInputError) or not ("trust_remote_code" in str(e) or "custom code" in str(e)):
            raise
        # transformers refuses a repository that ships its own code unless trust_remote_code
        raise UserInputError(f"the backbone {shown(name)} needs its repository's own Python code to load, "
                             "which a run directory cannot enable",
                             hint="if you trust that code, pass --trust-remote-code "
                                  "(tk.load(run, trust_remote_code=True)): it will run that repository's .py files"
                             ) from None


def _check_backbone_weights(bb: Backbone, identity: dict[str, Any], name: str) -> None:
    want = identity.get("weights_sha256")
    if not want:
        raise UserInputError(f"the model card names no weight hash for backbone {shown(name)}, so the weights "
                             "it was trained with cannot be checked",
                             hint="pass check_weights=False to use this machine's weights anyway")
    have = bb.weights_sha256()
    if have != want:
        raise UserInputError(
            f"the weights of backbone {shown(name)} on this machine (sha256 {have[:12]}…) differ from the "
            f"ones this run was trained with ({str(want)[:12]}…)",
            hint="install the same model version, or pass check_weights=False to use these anyway")
