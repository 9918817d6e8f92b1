"""The ONNX Runtime backends: prediction from an exported run, and feature extraction.

Two users, one runtime:

* :class:`OnnxRunner` runs the graph ``transferkit export`` wrote (backbone and head: the
  task's outputs, ``proba (N, C)`` / ``proba (N, L)`` or ``value (N,)``) with the run's own
  preprocessing (``backbone.prepare``);
  :func:`attach_onnx` makes a loaded model predict through it (``load(..., backend="onnx")``).
* :class:`OnnxFeatures` runs a backbone's feature graph (``fit/rank --backend onnx``): the
  graph is exported once per feature-cache key and checked against PyTorch before first use.

This module sits beside ``features.py``: it knows backbones and files, never runs, artifacts
or the export command (which imports from here).
"""
from __future__ import annotations

import contextlib
import io
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._files import atomic_write_bytes, cache_root
from .backbones.base import Batch, pool_chunks
from .errors import MissingDependencyError, UserInputError

OPSET = 17


def ort_module():
    """The ``onnxruntime`` module, or a :class:`MissingDependencyError` naming the extra."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError("ONNX export and the onnx backend", "'transferkit[export]'") from None
    return ort


def graph_inputs(backbone, items: list[Any]) -> dict[str, np.ndarray]:
    """The exported prediction graph's inputs for ``items``, made by the backbone's own ``prepare``.

    Text: ``input_ids (W, L)``, ``attention_mask (W, L)`` int64 and ``pool (N, W)`` float32 (row i
    holds item i's normalised window weights); images: ``pixel_values (N, 3, H, W)`` float32; audio
    (spectrogram backbones): ``mels (P, frames, bands)`` float32 and ``pool (N, P)`` (row i averages
    item i's partials).
    """
    batch = backbone.prepare(items)
    if backbone.modality == "audio":
        owner = batch.owner.numpy()
        pool = np.zeros((batch.n_items, len(owner)), np.float32)
        pool[owner, np.arange(len(owner))] = 1.0
        return {"mels": batch.tensors["mels"].float().contiguous().numpy(),
                "pool": pool / np.maximum(pool.sum(1, keepdims=True), 1e-12)}
    if backbone.modality == "text":
        ids, mask = batch.tensors["input_ids"], batch.tensors["attention_mask"]
        owner, w = batch.owner.numpy(), batch.tensors["weights"].numpy().astype(np.float32)
        pool = np.zeros((batch.n_items, len(owner)), np.float32)
        pool[owner, np.arange(len(owner))] = w
        pool /= np.maximum(pool.sum(1, keepdims=True), 1e-12)
        width = int(mask.sum(1).max())  # the windows are padded to the longest in the batch
        return {"input_ids": ids[:, :width].numpy().astype(np.int64),
                "attention_mask": mask[:, :width].numpy().astype(np.int64), "pool": pool}
    return {"pixel_values": batch.tensors["pixel_values"].float().contiguous().numpy()}


@contextlib.contextmanager
def eager_attention(module):
    """Trace transformers models with their plain ("eager") attention.

    The traced ``sdpa`` path adds NaN guards and mask broadcasting around every attention
    (about 150 more nodes for MiniLM-L6), and its graph ran 13% slower in ONNX Runtime; its
    dynamic int8 form ran 2.2 s against 1.9 s for 16 windows of 256 tokens on one core (measured
    2026-11-22).  The numbers are the same: parity is checked after export either way.
    """
    setter = getattr(module, "set_attn_implementation", None)
    before = getattr(getattr(module, "config", None), "_attn_implementation", None)
    switched = False
    if setter is not None and before not in (None, "eager"):
        try:
            setter("eager")
            switched = True
        except Exception:
            switched = False
    try:
        yield
    finally:
        if switched:
            setter(before)


# ----- prediction through an exported run ----------------------------------------------------------
class OnnxRunner:
    """Prediction through ONNX Runtime with the run's own preprocessing (``backbone.prepare``).

    Args:
        path: the ``.onnx`` file.
        backbone: the run's backbone (only its tokenizer / image preprocessing is used).
        threads: intra-op threads (default: ONNX Runtime's).
    """

    def __init__(self, path: str | Path, backbone, threads: int | None = None):
        ort = ort_module()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise UserInputError(f"cannot load {path}: {e}", hint="re-run `transferkit export`") from None
        self.backbone, self.path = backbone, Path(path)

    def _text_runs(self, items: list[Any]):
        """``(rows, inputs)`` per graph run for texts, each text tokenised once.

        One run holds whole items (the graph pools an item's windows itself) and at most
        ``chunk_batch`` windows, as PyTorch's ``forward_features`` runs them (one run over all the
        windows of 32 long e-mails ran at 0.76x PyTorch's speed).  A run is padded to its longest
        window, and every window but an item's last is full, so a run of long texts computes their
        last windows at full width: on 60 real e-mails about 10% more padded tokens than PyTorch,
        which sorts all windows by length (items are grouped here by their number of windows and
        then by the length of their last one; ordering them by characters computed as much)."""
        b = self.backbone
        batch = b.prepare(items)
        ids, mask = batch.tensors["input_ids"].numpy(), batch.tensors["attention_mask"].numpy()
        owner, weights = batch.owner.numpy(), batch.tensors["weights"].numpy().astype(np.float32)
        lengths = mask.sum(1)
        n = len(items)
        counts = np.bincount(owner, minlength=n)
        last = np.full(n, np.iinfo(np.int64).max)
        np.minimum.at(last, owner, lengths)
        order = sorted(range(n), key=lambda i: (-counts[i], -last[i]))
        limit = b.chunk_batch or len(owner)
        runs, start, total = [], 0, 0
        for k, i in enumerate(order):
            if total and total + counts[i] > limit:
                runs.append(order[start:k])
                start, total = k, 0
            total += int(counts[i])
        runs.append(order[start:])
        local = np.empty(n, np.int64)
        for rows in runs:
            local[rows] = np.arange(len(rows))
            win = np.flatnonzero(np.isin(owner, rows))
            pool = np.zeros((len(rows), len(win)), np.float32)
            pool[local[owner[win]], np.arange(len(win))] = weights[win]
            pool /= np.maximum(pool.sum(1, keepdims=True), 1e-12)
            width = int(lengths[win].max())
            yield rows, {"input_ids": ids[win, :width].astype(np.int64),
                         "attention_mask": mask[win, :width].astype(np.int64), "pool": pool}

    @property
    def gives_values(self) -> bool:
        """Whether the graph outputs one value per item (a regression run's ``value (N,)``)."""
        return len(self.session.get_outputs()[0].shape) == 1

    def predict_proba(self, data, batch_size: int = 32) -> np.ndarray:
        """``proba (N, C)`` (multi-label ``(N, L)``) float64 for the items of ``data`` (a Dataset).

        Raises:
            UserInputError: the graph of a regression run (it gives values: :meth:`predict_outputs`).
        """
        if self.gives_values:
            raise UserInputError(f"{self.path.name} predicts numbers (regression), not probabilities",
                                 hint="use predict_outputs() or predict()")
        return self.predict_outputs(data, batch_size)

    @property
    def gives_features(self) -> bool:
        """Whether the graph has the ``features (N, D)`` output (exports since issue #25)."""
        return any(o.name == "features" for o in self.session.get_outputs())

    def predict_outputs(self, data, batch_size: int = 32) -> np.ndarray:
        """The graph's outputs float64 for the items of ``data`` (a Dataset): ``(N, K)``
        probabilities, or ``(N,)`` values for a regression run."""
        return self.outputs_and_features(data, batch_size, features=False)[0]

    def outputs_and_features(self, data, batch_size: int = 32,
                             features: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`predict_outputs` and, from the same graph run, the pooled features ``(N, D)``
        float32 the head read (``None`` when not asked for or the graph lacks that output)."""
        items = list(data.inputs)
        b = self.backbone
        names = [self.session.get_outputs()[0].name] + (["features"] if features and self.gives_features else [])
        out = feats = None
        if b.modality == "text" and b.chunk_batch is not None:
            step = b.pool_items(batch_size)  # texts prepared together, as extraction prepares them
            parts = ((s, self._text_runs(items[s:s + step])) for s in range(0, len(items), step))
        else:
            parts = ((s, [(list(range(len(chunk))), graph_inputs(b, chunk))])
                     for s in range(0, len(items), batch_size) for chunk in [items[s:s + batch_size]])
        for s, runs in parts:
            for rows, feed in runs:
                got = self.session.run(names, feed)
                p = got[0]
                if out is None:
                    out = np.zeros((len(items), *p.shape[1:]), np.float64)
                    if len(got) > 1:
                        feats = np.zeros((len(items), got[1].shape[1]), np.float32)
                out[[s + r for r in rows]] = p
                if feats is not None:
                    feats[[s + r for r in rows]] = got[1]
        if out is None:
            return np.zeros(0 if self.gives_values else (0, 0)), None
        return out, feats


def attach_onnx(model, run: str | Path, *, int8: bool = False) -> None:
    """Make ``model.predict_outputs`` (and ``predict_proba``, ``predict``) run the exported graph
    (``load(..., backend="onnx")``)."""
    entry = (model.card or {}).get("export")
    if not entry:
        raise UserInputError(f"{run} has no ONNX export", hint=f"run `transferkit export {run}` first")
    name = entry["file"]
    if int8:
        if "int8" not in entry:
            raise UserInputError(f"{run} has no int8 export", hint=f"run `transferkit export {run} --quantize int8`")
        name = entry["int8"]["file"]
    model.onnx = OnnxRunner(Path(run) / name, model.backbone)


# ----- the ONNX Runtime backend for feature extraction ----------------------------------------------
class _TextFeatureGraph(nn.Module):
    """Windows -> transformer -> one pooled feature row per window (pooling per item stays outside)."""

    def __init__(self, backbone):
        super().__init__()
        self.module = backbone.module
        self.backbone = [backbone]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b = self.backbone[0]
        out = self.module(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=b.layer is not None)
        h = b._hidden(out)
        if b.pooling == "cls":
            return h[:, 0].float()
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return ((h * m).sum(1) / m.sum(1).clamp_min(1.0)).float()


class _ImageFeatureGraph(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.module = backbone.module
        self.backbone = [backbone]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.backbone[0].forward_features(Batch(tensors={"pixel_values": pixel_values},
                                                       n_items=len(pixel_values))).float()


class OnnxFeatures:
    """A backbone's feature extraction through ONNX Runtime (``fit/rank --backend onnx``).

    The backbone's feature graph (text: windows -> one row per window, pooled per item in
    Python exactly as :meth:`forward_features` pools; images: pixels -> features) is exported
    once per feature-cache key to ``<cache>/onnx/<key>.onnx`` and checked against PyTorch on
    real inputs before first use; a graph off by more than ``tolerance`` (relative to the
    largest feature) is deleted and refused.  Features keep the PyTorch cache key: the two
    runtimes agree to that tolerance.  Runs on CPU, with PyTorch's thread count.

    It keeps no reference to the backbone (only its modality and window batch), so the
    per-backbone table of :func:`onnx_features` never keeps a backbone alive.
    """

    tolerance = 1e-4

    def __init__(self, backbone, root: str | Path | None = None):
        if backbone.modality not in ("text", "image") or (backbone.modality == "text"
                                                            and backbone.tokenizer is None):
            raise UserInputError(f"the onnx backend does not support {backbone.describe()}",
                                 hint="use --backend torch (the default)")
        ort = ort_module()
        self.modality, self.chunk_batch = backbone.modality, backbone.chunk_batch
        self.path = Path(root or cache_root() / "onnx") / f"{backbone.cache_key()}.onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        if not self.path.exists():
            graph = self._export(backbone)
            try:
                atomic_write_bytes(self.path, graph)
            except OSError as e:  # a cache that cannot be written only costs the export next time
                warnings.warn(f"the ONNX graph cache {self.path.parent} cannot be written "
                              f"({e.strerror or e}): the graph is exported again by the next run",
                              RuntimeWarning, stacklevel=2)
            self.session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
            return
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            self.path.unlink(missing_ok=True)
            raise UserInputError(f"cannot load the cached graph {self.path}: {e}",
                                 hint="run the command again: the graph is exported anew") from None

    @staticmethod
    def _example(b):
        if b.modality == "text":
            texts = ["Transfer learning adapts a pre-trained model to a new task with few labels.",
                     "A second, shorter text."]
            return b.prepare(texts)
        rng = np.random.RandomState(0)
        imgs = [rng.randint(0, 255, (40, 56, 3), dtype=np.uint8) for _ in range(2)]
        return b.prepare(imgs)

    def _export(self, b) -> bytes:
        """The feature graph of ``b`` as ONNX bytes, checked against PyTorch on two real inputs."""
        batch = self._example(b)
        if b.modality == "text":
            graph, names = _TextFeatureGraph(b).eval(), ["input_ids", "attention_mask"]
            width = int(batch.tensors["attention_mask"].sum(1).max())
            example = tuple(batch.tensors[k][:, :width].to(torch.int64) for k in names)
            axes = {"input_ids": {0: "windows", 1: "tokens"}, "attention_mask": {0: "windows", 1: "tokens"},
                    "features": {0: "windows"}}
        else:
            graph, names = _ImageFeatureGraph(b).eval(), ["pixel_values"]
            example = (batch.tensors["pixel_values"].float().contiguous(),)
            axes = {"pixel_values": {0: "items"}, "features": {0: "items"}}
        # Exported in memory: the cache folder may be read-only, and a graph that fails the
        # check below never reaches it.
        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad(), eager_attention(b.module):
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, example, buf, input_names=names, output_names=["features"],
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        blob = buf.getvalue()
        session = ort_module().InferenceSession(blob, providers=["CPUExecutionProvider"])
        with torch.inference_mode():
            ref = graph(*example).numpy()
        got = session.run(None, {k: v.numpy() for k, v in zip(names, example)})[0]
        diff = float(np.abs(ref - got).max())
        scale = max(1.0, float(np.abs(ref).max()))
        if not diff <= self.tolerance * scale:
            raise UserInputError(f"the ONNX graph of {b.describe()} differs from PyTorch by {diff:.3g} "
                                 f"(features up to {scale:.3g}); not used", hint="use --backend torch")
        return blob

    def forward_features(self, batch) -> torch.Tensor:
        """What ``backbone.forward_features(batch)`` gives, computed by ONNX Runtime."""
        if self.modality == "image":
            x = batch.tensors["pixel_values"].float().contiguous().numpy()
            return torch.from_numpy(self.session.run(None, {"pixel_values": x})[0])
        ids, mask = batch.tensors["input_ids"], batch.tensors["attention_mask"]
        feats = []
        step = self.chunk_batch or max(1, ids.shape[0])
        for s in range(0, ids.shape[0], step):
            m = mask[s:s + step]
            width = int(m.sum(1).max())
            feats.append(self.session.run(None, {
                "input_ids": ids[s:s + step, :width].to(torch.int64).numpy(),
                "attention_mask": m[:, :width].to(torch.int64).numpy()})[0])
        chunk_feats = torch.from_numpy(np.concatenate(feats))
        return pool_chunks(chunk_feats, batch.owner, batch.tensors["weights"], batch.n_items)


# One OnnxFeatures per live backbone object, held here rather than written onto the backbone:
# the entry goes when the backbone does, and a backbone whose identity (cache key) changed
# since gets a graph of its own.
_FEATURES: weakref.WeakKeyDictionary[Any, tuple[str, OnnxFeatures]] = weakref.WeakKeyDictionary()


def onnx_features(backbone) -> OnnxFeatures:
    """The backbone's :class:`OnnxFeatures`, made once per backbone object (and cache key)."""
    key = backbone.cache_key()
    cached = _FEATURES.get(backbone)
    if cached is None or cached[0] != key:
        cached = _FEATURES[backbone] = (key, OnnxFeatures(backbone))
    return cached[1]
