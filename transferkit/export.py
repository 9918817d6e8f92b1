"""``transferkit export RUN --format onnx [--quantize int8]`` and the ONNX Runtime backend.

One graph holds the backbone and the strategy's head (:meth:`Strategy.torch_head`; LoRA
adapters are merged first), with dynamic axes:

* text: ``input_ids (W, L)``, ``attention_mask (W, L)`` for W windows of L tokens, and
  ``pool (N, W)``: row i holds item i's window weights (its windows' token counts, normalised),
  so long texts are embedded in windows and pooled exactly as in PyTorch; output ``proba (N, C)``.
  Tokenising and windowing stay in Python (the backbone's own ``prepare``).
* images: ``pixel_values (N, 3, H, W)`` -> ``proba (N, C)``.

At export the graph is run on real items of the run (its test split when its files are still
there, else a few synthetic ones) next to PyTorch; the largest absolute difference of
probabilities goes into the model card, and the export is refused above ``tolerance``.
``--quantize int8`` adds dynamically quantized weights (int8 matrices, activations quantized
on the fly) and measures the accuracy change on the run's test split.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import MissingDependencyError, UserInputError

ONNX_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"
OPSET = 17
QUANT_OPS = ["MatMul", "Gemm", "Gather"]  # Gather: embedding tables


def _ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError("ONNX export and the onnx backend", "'transferkit[export]'") from None
    return ort


class _TextGraph(nn.Module):
    """Windows -> transformer -> pooled per window -> pooled per item (``pool @``) -> head -> softmax."""

    def __init__(self, backbone, head: nn.Module):
        super().__init__()
        self.module, self.head = backbone.module, head
        self.backbone = [backbone]  # not a submodule: its module is registered above

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        b = self.backbone[0]
        out = self.module(input_ids=input_ids, attention_mask=attention_mask,
                          output_hidden_states=b.layer is not None)
        h = b._hidden(out)
        if b.pooling == "cls":
            f = h[:, 0]
        else:
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            f = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        return torch.softmax(self.head(pool @ f.float()), dim=1)


class _ImageGraph(nn.Module):
    def __init__(self, backbone, head: nn.Module):
        super().__init__()
        self.module, self.head = backbone.module, head
        self.backbone = [backbone]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        from .backbones.base import Batch

        f = self.backbone[0].forward_features(Batch(tensors={"pixel_values": pixel_values}, n_items=len(pixel_values)))
        return torch.softmax(self.head(f.float()), dim=1)


def _inputs(backbone, items: list[Any]) -> dict[str, np.ndarray]:
    """The graph's inputs for ``items``, made by the backbone's own ``prepare``."""
    batch = backbone.prepare(items)
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


class OnnxRunner:
    """Prediction through ONNX Runtime with the run's own preprocessing (``backbone.prepare``).

    Args:
        path: the ``.onnx`` file.
        backbone: the run's backbone (only its tokenizer / image preprocessing is used).
        threads: intra-op threads (default: ONNX Runtime's).
    """

    def __init__(self, path: str | Path, backbone, threads: int | None = None):
        ort = _ort()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
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
        limit = getattr(b, "chunk_batch", None) or len(owner)
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

    def predict_proba(self, data, batch_size: int = 32) -> np.ndarray:
        items = list(data.inputs)
        b = self.backbone
        out = None
        if b.modality == "text" and hasattr(b, "chunk_batch"):
            step = b.pool_items(batch_size)  # texts prepared together, as extraction prepares them
            parts = ((s, self._text_runs(items[s:s + step])) for s in range(0, len(items), step))
        else:
            parts = ((s, [(list(range(len(chunk))), _inputs(b, chunk))])
                     for s in range(0, len(items), batch_size) for chunk in [items[s:s + batch_size]])
        for s, runs in parts:
            for rows, feed in runs:
                p = self.session.run(None, feed)[0]
                if out is None:
                    out = np.zeros((len(items), p.shape[1]), np.float64)
                out[[s + r for r in rows]] = p
        return out if out is not None else np.zeros((0, 0))


def _graph(model) -> tuple[nn.Module, dict[str, Any]]:
    strategy, backbone = model.strategy, model.backbone
    if hasattr(strategy, "merge_adapters"):  # LoRA: one plain set of weights in the graph
        strategy.merge_adapters()
    head = strategy.torch_head()
    if backbone.modality == "text":
        if not hasattr(backbone, "tokenizer"):
            raise UserInputError(f"export of the text backbone {backbone.name!r} is not supported")
        g = _TextGraph(backbone, head)
        axes = {"input_ids": {0: "windows", 1: "tokens"}, "attention_mask": {0: "windows", 1: "tokens"},
                "pool": {0: "items", 1: "windows"}, "proba": {0: "items"}}
    elif backbone.modality == "image":
        g = _ImageGraph(backbone, head)
        axes = {"pixel_values": {0: "items"}, "proba": {0: "items"}}
    else:
        raise UserInputError(f"ONNX export of {backbone.modality} runs is not supported yet",
                             hint="text and image runs can be exported")
    return g.eval(), axes


def _check_items(run: Path, model, n: int):
    """Real items to check parity on (the run's test split), else a few synthetic ones; and
    the test split itself (``None`` when it cannot be rebuilt)."""
    from .data.dataset import Dataset
    from .pipeline import recreate_splits

    try:
        _, test, _ = recreate_splits(run)
        return test.subset(range(min(n, len(test)))), test, None
    except UserInputError as e:
        why = e.message
    if model.modality == "text":
        items = ["A short text.", "Another one, " * 200 + "long enough for several windows."]
    else:
        rng = np.random.RandomState(0)
        items = [rng.randint(0, 255, (64, 48, 3), dtype=np.uint8) for _ in range(3)]
    return Dataset(modality=model.modality, inputs=items), None, why


@contextlib.contextmanager
def _eager_attention(module):
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
        except Exception:  # noqa: BLE001 - a model without eager attention keeps its own
            switched = False
    try:
        yield
    finally:
        if switched:
            setter(before)


def export_onnx(run: str | Path, *, quantize: str | None = None, check_items: int = 16, tolerance: float = 1e-4,
                log=print) -> dict[str, Any]:
    """Export a run to ``RUN/model.onnx`` (and ``model.int8.onnx``); returns the card's ``export`` entry."""
    from ._files import write_json
    from .artifact import load

    if quantize not in (None, "int8"):
        raise UserInputError(f"quantize must be int8, got {quantize!r}")
    _ort()
    run = Path(run)
    model = load(run, cache=False)
    graph, axes = _graph(model)
    names = [k for k in axes if k != "proba"]
    check, test, why = _check_items(run, model, check_items)
    example = _inputs(model.backbone, list(check.inputs[:2]))
    path = run / ONNX_FILE
    t0 = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad(), _eager_attention(model.backbone.module):
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow
        torch.onnx.export(graph, tuple(torch.from_numpy(example[k]) for k in names), str(path),
                          input_names=names, output_names=["proba"], dynamic_axes=axes, opset_version=OPSET,
                          dynamo=False)
    seconds = time.perf_counter() - t0
    runner = OnnxRunner(path, model.backbone)
    p_torch = model.predict_proba(check)
    p_onnx = runner.predict_proba(check)
    diff = float(np.abs(p_torch - p_onnx).max())
    if not diff <= tolerance:
        path.unlink(missing_ok=True)
        raise UserInputError(f"the ONNX graph differs from PyTorch by {diff:.3g} (tolerance {tolerance:g}) on "
                             f"{len(check)} items; nothing was exported", hint="please report this model")
    entry: dict[str, Any] = {
        "format": "onnx", "file": ONNX_FILE, "bytes": path.stat().st_size, "opset": OPSET, "seconds": round(seconds, 2),
        "inputs": names, "output": "proba (items, classes)",
        "parity": {"max_abs_diff": diff, "items": len(check), "on": "test split" if test is not None else
                   f"synthetic items ({why})", "tolerance": tolerance},
    }
    log(f"exported {path} ({entry['bytes'] / 1e6:.1f} MB); largest difference from PyTorch {diff:.2g} on "
        f"{len(check)} items")
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        import logging
        import os

        import onnx

        qpath = run / INT8_FILE
        tmp = qpath.with_name(f".{qpath.name}.{os.getpid()}.tmp")
        # The head stays fp32: it is only C x D numbers, and a probe's (feature scaling folded into
        # its columns, which then differ by orders of magnitude) loses most of its probability
        # mass under per-tensor int8.  The quantiser renames a Gemm to <name>_MatMul: both names.
        heads = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node
                 if n.name.startswith("/head/")]
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantiser warns once per dynamically shaped tensor
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # Matrix products only: dynamically quantized convolutions (ConvInteger) gave
                # EfficientNet-Lite0 probabilities off by up to 1.0 (most MNIST predictions
                # wrong); convolution nets need static quantization, with calibration data.
                # Per-channel weight scales: per-tensor ones left MiniLM features at cosine 0.94
                # to fp32 on real e-mails, per-channel at 0.992, for the same speed.
                quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=QUANT_OPS,
                                 per_channel=True, nodes_to_exclude=heads + [h + "_MatMul" for h in heads])
            os.replace(tmp, qpath)
        finally:
            root.setLevel(level)
            tmp.unlink(missing_ok=True)
        q = {"file": INT8_FILE, "quantized_ops": QUANT_OPS, "weights": "int8, one scale per output channel",
             "head": "kept in fp32", "bytes": qpath.stat().st_size, "size_ratio": qpath.stat().st_size / entry["bytes"]}
        qrunner = OnnxRunner(qpath, model.backbone)
        if test is not None:
            y = np.array([model.classes.index(c) for c in test.labels])
            a32 = float((runner.predict_proba(test).argmax(1) == y).mean())
            a8 = float((qrunner.predict_proba(test).argmax(1) == y).mean())
            q.update(accuracy_fp32=a32, accuracy_int8=a8, accuracy_change=a8 - a32, test_items=len(test))
            log(f"int8: {q['bytes'] / 1e6:.1f} MB ({100 * q['size_ratio']:.0f}%), test accuracy {a32:.3f} -> {a8:.3f}")
        else:
            q["accuracy_change"] = None
            q["why_not_measured"] = why
            log(f"int8: {q['bytes'] / 1e6:.1f} MB; accuracy change not measured: {why}")
        q["max_abs_diff_vs_fp32"] = float(np.abs(qrunner.predict_proba(check) - p_onnx).max())
        entry["int8"] = q
    import json

    card = json.loads((run / "model_card.json").read_text())
    card["export"] = entry
    write_json(run / "model_card.json", card)
    return entry


def attach_onnx(model, run: str | Path, *, int8: bool = False) -> None:
    """Make ``model.predict_proba`` run the exported graph (``load(..., backend="onnx")``)."""
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
        from .backbones.base import Batch

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
    """

    tolerance = 1e-4

    def __init__(self, backbone, root: str | Path | None = None):
        from ._files import cache_root

        if backbone.modality not in ("text", "image") or (backbone.modality == "text"
                                                            and not hasattr(backbone, "tokenizer")):
            raise UserInputError(f"the onnx backend does not support {backbone.describe()}",
                                 hint="use --backend torch (the default)")
        ort = _ort()
        self.backbone = backbone
        self.path = Path(root or cache_root() / "onnx") / f"{backbone.cache_key()}.onnx"
        if not self.path.exists():
            self._export()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - a damaged cached graph: export it again next time
            self.path.unlink(missing_ok=True)
            raise UserInputError(f"cannot load the cached graph {self.path}: {e}",
                                 hint="run the command again: the graph is exported anew") from None

    def _example(self):
        b = self.backbone
        if b.modality == "text":
            texts = ["Transfer learning adapts a pre-trained model to a new task with few labels.",
                     "A second, shorter text."]
            return b.prepare(texts)
        rng = np.random.RandomState(0)
        imgs = [rng.randint(0, 255, (40, 56, 3), dtype=np.uint8) for _ in range(2)]
        return b.prepare(imgs)

    def _export(self) -> None:
        import os

        b = self.backbone
        batch = self._example()
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with warnings.catch_warnings(), torch.no_grad(), _eager_attention(b.module):
                warnings.simplefilter("ignore")
                torch.onnx.export(graph, example, str(tmp), input_names=names, output_names=["features"],
                                  dynamic_axes=axes, opset_version=OPSET, dynamo=False)
            ort = _ort()
            session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            with torch.inference_mode():
                ref = graph(*example).numpy()
            got = session.run(None, {k: v.numpy() for k, v in zip(names, example)})[0]
            diff = float(np.abs(ref - got).max())
            scale = max(1.0, float(np.abs(ref).max()))
            if not diff <= self.tolerance * scale:
                raise UserInputError(f"the ONNX graph of {b.describe()} differs from PyTorch by {diff:.3g} "
                                     f"(features up to {scale:.3g}); not used", hint="use --backend torch")
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def forward_features(self, batch) -> torch.Tensor:
        """What ``backbone.forward_features(batch)`` gives, computed by ONNX Runtime."""
        from .backbones.base import pool_chunks

        b = self.backbone
        if b.modality == "image":
            x = batch.tensors["pixel_values"].float().contiguous().numpy()
            return torch.from_numpy(self.session.run(None, {"pixel_values": x})[0])
        ids, mask = batch.tensors["input_ids"], batch.tensors["attention_mask"]
        feats = []
        for s in range(0, ids.shape[0], b.chunk_batch):
            m = mask[s:s + b.chunk_batch]
            width = int(m.sum(1).max())
            feats.append(self.session.run(None, {
                "input_ids": ids[s:s + b.chunk_batch, :width].to(torch.int64).numpy(),
                "attention_mask": m[:, :width].to(torch.int64).numpy()})[0])
        chunk_feats = torch.from_numpy(np.concatenate(feats))
        return pool_chunks(chunk_feats, batch.owner, batch.tensors["weights"], batch.n_items)


def onnx_features(backbone) -> OnnxFeatures:
    """The backbone's :class:`OnnxFeatures`, made once per backbone object (and cache key)."""
    key = backbone.cache_key()
    cached = getattr(backbone, "_onnx_features", None)
    if cached is None or cached[0] != key:
        cached = (key, OnnxFeatures(backbone))
        backbone._onnx_features = cached
    return cached[1]
