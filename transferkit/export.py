"""``transferkit export RUN --format onnx [--quantize int8]``: the export command.

One graph holds the backbone and the strategy's head (:meth:`Strategy.torch_head`; LoRA
adapters are merged first), with dynamic axes:

* text: ``input_ids (W, L)``, ``attention_mask (W, L)`` for W windows of L tokens, and
  ``pool (N, W)``: row i holds item i's window weights (its windows' token counts, normalised),
  so long texts are embedded in windows and pooled exactly as in PyTorch.
  Tokenising and windowing stay in Python (the backbone's own ``prepare``).
* images: ``pixel_values (N, 3, H, W)``.

The output is the task's (:data:`OUTPUTS`): classification ``proba (N, C)`` (softmax),
multi-label ``proba (N, L)`` (one sigmoid per label; the thresholds stay in the model card),
regression ``value (N,)`` in the target's units; its second output, ``features (N, D)``, is the
pooled features the head reads (the server's drift monitor watches them).

At export the graph is run on real items of the run (its test split when its files are still
there, else a few synthetic ones) next to PyTorch; the largest absolute difference of the
outputs goes into the model card, and the export is refused above ``tolerance`` (regression:
relative to the largest value, at least 1).  ``--quantize int8`` adds dynamically quantized
weights (int8 matrices, activations quantized on the fly) and measures the change of the task's
primary metric (accuracy for classification) on the run's test split.

Running the exported graph (``OnnxRunner``, ``load(..., backend="onnx")``) and the ONNX feature
backend live in :mod:`transferkit.onnx_runtime`.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data.dataset import Dataset
from .errors import UserInputError
from .onnx_runtime import OPSET, OnnxRunner, eager_attention, graph_inputs, ort_module
from .runs import RunDir, load, recreate_splits
from .runs.loading import with_head
from .tasks import get_task

ONNX_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"
#: int8 is accepted (served by default) when test accuracy falls by at most this much (1 point).
INT8_MAX_DROP = 0.01
#: The graph's second output: the pooled features ``(N, D)`` the head reads (the server's drift
#: monitor watches them, so serving through the graph needs no second, PyTorch pass).
FEATURES = "features"
QUANT_OPS = ["MatMul", "Gemm", "Gather"]  # Gather: embedding tables
#: The graph's output per task: its name and what the card says it holds.
OUTPUTS = {"classification": ("proba", "proba (items, classes)"),
           "multi-label": ("proba", "proba (items, labels): one sigmoid per label"),
           "regression": ("value", "value (items,) in the target's units")}


def _activate(task: str, z: torch.Tensor) -> torch.Tensor:
    """The task's outputs from the head's ``(N, K)`` pre-activations (:meth:`Strategy.torch_head`)."""
    if task == "classification":
        return torch.softmax(z, dim=1)
    if task == "multi-label":
        return torch.sigmoid(z)
    return z[:, 0]  # regression: K = 1, already in the target's units


class _TextGraph(nn.Module):
    """Windows -> transformer -> pooled per window -> pooled per item (``pool @``) -> head -> the task's activation."""

    def __init__(self, backbone, head: nn.Module, task: str = "classification"):
        super().__init__()
        self.module, self.head, self.task = backbone.module, head, task
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
        f = pool @ f.float()
        return _activate(self.task, self.head(f)), f


class _ImageGraph(nn.Module):
    def __init__(self, backbone, head: nn.Module, task: str = "classification"):
        super().__init__()
        self.module, self.head, self.task = backbone.module, head, task
        self.backbone = [backbone]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        from .backbones.base import Batch

        f = self.backbone[0].forward_features(Batch(tensors={"pixel_values": pixel_values}, n_items=len(pixel_values)))
        return _activate(self.task, self.head(f.float())), f.float()


class _AudioGraph(nn.Module):
    """Partials -> the encoder -> the mean per item (``pool @``) -> head -> the task's activation."""

    def __init__(self, backbone, head: nn.Module, task: str = "classification"):
        super().__init__()
        self.module, self.head, self.task = backbone.module, head, task
        self.backbone = [backbone]

    def forward(self, mels: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        b = self.backbone[0]
        f = pool @ self.module(mels, b.final_layer if b.layer is None else b.layer)
        if b.layer is None:  # the embedding layer's mean is unit length, as forward_features makes it
            f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return _activate(self.task, self.head(f.float())), f.float()


def _graph(model) -> tuple[nn.Module, dict[str, Any]]:
    strategy, backbone = model.strategy, model.backbone
    strategy = strategy.merged_for_export()  # LoRA: one plain set of weights in the graph
    head = strategy.torch_head()
    output = OUTPUTS[model.task][0]
    if backbone.modality == "text":
        if backbone.tokenizer is None:
            raise UserInputError(f"export of the text backbone {backbone.name!r} is not supported")
        g = _TextGraph(backbone, head, model.task)
        axes = {"input_ids": {0: "windows", 1: "tokens"}, "attention_mask": {0: "windows", 1: "tokens"},
                "pool": {0: "items", 1: "windows"}, output: {0: "items"}, FEATURES: {0: "items"}}
    elif backbone.modality == "image":
        g = _ImageGraph(backbone, head, model.task)
        axes = {"pixel_values": {0: "items"}, output: {0: "items"}, FEATURES: {0: "items"}}
    elif backbone.modality == "audio" and hasattr(backbone, "batch_from_spectrograms"):
        g = _AudioGraph(backbone, head, model.task)
        axes = {"mels": {0: "partials"}, "pool": {0: "items", 1: "partials"}, output: {0: "items"},
                FEATURES: {0: "items"}}
    else:
        raise UserInputError(f"ONNX export of {backbone.modality} runs of {backbone.name} is not supported yet",
                             hint="text, image and resemblyzer audio runs can be exported; run "
                                  "predictions with the torch backend")
    return g.eval(), axes


def _check_items(run: Path, model, n: int):
    """Real items to check parity on (the run's test split), else a few synthetic ones; and
    the test split itself (``None`` when it cannot be rebuilt)."""
    try:
        _, test, _ = recreate_splits(run)
        return test.subset(range(min(n, len(test)))), test, None
    except UserInputError as e:
        why = e.message
    if model.modality == "text":
        items = ["A short text.", "Another one, " * 200 + "long enough for several windows."]
    elif model.modality == "audio":  # 16 kHz noise of 0.5 s and 3 s (one and several partials)
        rng = np.random.RandomState(0)
        items = [(0.1 * rng.randn(n)).astype(np.float32) for n in (8000, 48000)]
    else:
        rng = np.random.RandomState(0)
        items = [rng.randint(0, 255, (64, 48, 3), dtype=np.uint8) for _ in range(3)]
    return Dataset(modality=model.modality, inputs=items), None, why


def export_onnx(run: str | Path, *, quantize: str | None = None, check_items: int = 16, tolerance: float = 1e-4,
                log=print, load_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export a run to ``RUN/model.onnx`` (and ``model.int8.onnx``); returns the card's ``export`` entry.

    Args:
        load_options: passed to :func:`~transferkit.runs.load` (``backbone``, ``trust_remote_code``...).
    """
    if quantize not in (None, "int8"):
        raise UserInputError(f"quantize must be int8, got {quantize!r}")
    ort_module()
    rd = RunDir(run)
    with rd.lock():
        return _export(rd, quantize, check_items, tolerance, log, load_options or {})


def _export(rd: RunDir, quantize: str | None, check_items: int, tolerance: float, log,
            load_options: dict[str, Any]) -> dict[str, Any]:
    run = rd.path
    # the delivered model, unless it reads hand-made features (no graph of those): then the transfer model
    load_options = dict(load_options)
    asked = load_options.pop("which", None)
    which = asked or with_head(run)
    if asked is None and which != "delivered":
        log("the delivered model reads hand-made features, which have no ONNX graph: exporting the transfer model "
            "(load it with which='transfer')")
    model = load(run, cache=False, which=which, **load_options)
    output, described = OUTPUTS[model.task]
    graph, axes = _graph(model)
    names = [k for k in axes if k not in (output, FEATURES)]
    check, test, why = _check_items(run, model, check_items)
    example = graph_inputs(model.backbone, list(check.inputs[:2]))
    path = run / ONNX_FILE
    t0 = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad(), eager_attention(model.backbone.module):
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow
        torch.onnx.export(graph, tuple(torch.from_numpy(example[k]) for k in names), str(path),
                          input_names=names, output_names=[output, FEATURES], dynamic_axes=axes, opset_version=OPSET,
                          dynamo=False)
    seconds = time.perf_counter() - t0
    runner = OnnxRunner(path, model.backbone)
    p_torch = model.predict_outputs(check)
    p_onnx = runner.predict_outputs(check)
    diff = float(np.abs(p_torch - p_onnx).max())
    # Probabilities lie in [0, 1]; a regression value is in the target's units, so its float32
    # rounding grows with its size: the tolerance is relative to the largest value (at least 1).
    scale = max(1.0, float(np.abs(p_torch).max())) if model.task == "regression" else 1.0
    if not diff <= tolerance * scale:
        path.unlink(missing_ok=True)
        raise UserInputError(f"the ONNX graph differs from PyTorch by {diff:.3g} (tolerance {tolerance * scale:g}) "
                             f"on {len(check)} items; nothing was exported", hint="please report this model")
    entry: dict[str, Any] = {
        "model": which, "format": "onnx", "file": ONNX_FILE, "bytes": path.stat().st_size, "opset": OPSET,
        "seconds": round(seconds, 2),
        "task": model.task, "inputs": names, "output": described, "features_output": f"{FEATURES} (items, dim)",
        "parity": {"max_abs_diff": diff, "items": len(check), "on": "test split" if test is not None else
                   f"synthetic items ({why})", "tolerance": tolerance},
    }
    log(f"exported {path} ({entry['bytes'] / 1e6:.1f} MB); largest difference from PyTorch {diff:.2g} on "
        f"{len(check)} items")
    if quantize == "int8":
        entry["int8"] = _int8(run, path, model, check, test, why, runner, p_onnx, log, entry["bytes"])
    rd.write_card({**rd.card(), "export": entry})
    return entry


def _int8(run: Path, path: Path, model, check: Dataset, test: Dataset | None, why: str | None, runner: OnnxRunner,
          p_onnx: np.ndarray, log, fp32_bytes: int) -> dict[str, Any]:
    """Write ``model.int8.onnx`` next to ``path`` and measure it: the card's ``int8`` entry.

    Text graphs: dynamic int8 (weights int8 per channel, activations quantized on the fly).
    Image graphs: static int8 (:func:`_quantize_static`), calibrated on the run's training
    items.  ``accepted`` says whether the server may use it by default: the test accuracy fell
    by at most :data:`INT8_MAX_DROP` (classification runs whose test split is there).
    """
    import logging
    import os

    import onnx

    qpath = run / INT8_FILE
    tmp = qpath.with_name(f".{qpath.name}.{os.getpid()}.tmp")
    # The head stays fp32: it is only C x D numbers, and a probe's (feature scaling folded into
    # its columns, which then differ by orders of magnitude) loses most of its probability
    # mass under per-tensor int8.  The quantiser renames a Gemm to <name>_MatMul: both names.
    heads = _kept_fp32(onnx.load(str(path), load_external_data=False).graph)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser warns once per dynamically shaped tensor
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if model.modality == "image":
                q = _quantize_static(run, path, tmp, model.backbone, check)
            else:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                # Matrix products only: dynamically quantized convolutions (ConvInteger) gave
                # EfficientNet-Lite0 probabilities off by up to 1.0 (most MNIST predictions
                # wrong); convolution nets get static quantization, with calibration data.
                # Per-channel weight scales: per-tensor ones left MiniLM features at cosine 0.94
                # to fp32 on real e-mails, per-channel at 0.992, for the same speed.
                quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=QUANT_OPS,
                                 per_channel=True, nodes_to_exclude=heads)
                q = {"method": "dynamic", "quantized_ops": QUANT_OPS, "weights": "int8, one scale per output channel"}
        os.replace(tmp, qpath)
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)
    q.update({"file": INT8_FILE, "head": "kept in fp32", "bytes": qpath.stat().st_size,
              "size_ratio": qpath.stat().st_size / fp32_bytes})
    qrunner = OnnxRunner(qpath, model.backbone)
    if test is not None and model.task == "classification":
        y = np.array([model.classes.index(c) for c in test.labels])
        a32 = float((runner.predict_proba(test).argmax(1) == y).mean())
        a8 = float((qrunner.predict_proba(test).argmax(1) == y).mean())
        q.update(accuracy_fp32=a32, accuracy_int8=a8, accuracy_change=a8 - a32, test_items=len(test))
        log(f"int8 ({q['method']}): {q['bytes'] / 1e6:.1f} MB ({100 * q['size_ratio']:.0f}%), test accuracy "
            f"{a32:.3f} -> {a8:.3f}")
    elif test is not None:
        q.update(_primary_change(model, test, runner, qrunner))
        log(f"int8 ({q['method']}): {q['bytes'] / 1e6:.1f} MB ({100 * q['size_ratio']:.0f}%), test {q['metric']} "
            f"{q['metric_fp32']:.4g} -> {q['metric_int8']:.4g}")
    else:
        q["accuracy_change"] = None
        q["why_not_measured"] = why
        log(f"int8: {q['bytes'] / 1e6:.1f} MB; accuracy change not measured: {why}")
    change = q.get("accuracy_change")
    q["accepted"] = change is not None and change >= -INT8_MAX_DROP
    q["check"] = (f"test accuracy {q['accuracy_fp32']:.3f} -> {q['accuracy_int8']:.3f}, accepted within "
                  f"{100 * INT8_MAX_DROP:g} point" if change is not None else
                  "accuracy change not measured: not used by default")
    if change is not None and not q["accepted"]:
        log(f"int8 lost {-100 * change:.1f} points of test accuracy: kept on disk, but `serve` uses the fp32 graph")
    q["max_abs_diff_vs_fp32"] = float(np.abs(qrunner.predict_outputs(check) - p_onnx).max())
    return q


def _kept_fp32(graph) -> list[str]:
    """Nodes int8 leaves alone: the head, the task's activation and whatever gives a graph output.

    The head is only C x D numbers, and a probe's (feature scaling folded into its columns, which
    then differ by orders of magnitude) loses most of its probability mass under per-tensor int8;
    static int8 of the softmax output rounded probabilities to steps of 1/255.  The quantiser
    renames a Gemm to <name>_MatMul: both names."""
    outputs = {o.name for o in graph.output}
    names = [n.name for n in graph.node if n.name.startswith("/head/") or n.op_type in ("Softmax", "Sigmoid")
             or outputs.intersection(n.output)]
    return names + [h + "_MatMul" for h in names]


def _quantize_static(run: Path, src: Path, dst: Path, backbone, check: Dataset, n_calibration: int = 64,
                     batch: int = 16) -> dict[str, Any]:
    """Static int8 of an image graph: QDQ format (ONNX Runtime fuses it into integer kernels),
    int8 weights with one scale per output channel, uint8 activations whose ranges are the
    min/max the graph reaches on up to ``n_calibration`` of the run's training items (the
    check items when the training split cannot be rebuilt).  The graph is first optimised and
    shape-inferred by ONNX Runtime's ``quant_pre_process``: without it the EfficientNet-Lite0
    int8 graph ran at 0.9x the fp32 one, with it at 2.0x (224 px, one thread, 16 images, on a
    shared CPU; measured 2026-12-07)."""
    import onnx
    import onnxruntime.quantization as oq
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        train = recreate_splits(run)[0]
    except UserInputError:
        train = None
    items, source = (train, "training items") if train is not None and len(train) else (check, "check items")
    pick = np.random.RandomState(0).permutation(len(items))[:n_calibration]
    data = [items.inputs[int(i)] for i in sorted(pick)]

    class Reader(oq.CalibrationDataReader):
        def __init__(self):
            self.feeds = (graph_inputs(backbone, data[s:s + batch]) for s in range(0, len(data), batch))

        def get_next(self):
            return next(self.feeds, None)

    ort = ort_module()
    ort.set_default_logger_severity(3)  # the calibration session warns once per unused initializer of the trace
    pre = dst.with_name(dst.name + ".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        exclude = _kept_fp32(onnx.load(str(pre)).graph)
        oq.quantize_static(str(pre), str(dst), Reader(), quant_format=oq.QuantFormat.QDQ, per_channel=True,
                           activation_type=oq.QuantType.QUInt8, weight_type=oq.QuantType.QInt8,
                           nodes_to_exclude=exclude, calibrate_method=oq.CalibrationMethod.MinMax)
    finally:
        ort.set_default_logger_severity(2)  # ONNX Runtime's default: warnings
        pre.unlink(missing_ok=True)
    return {"method": "static", "format": "QDQ", "preprocessed": "quant_pre_process (optimised, shapes inferred)",
            "weights": "int8, one scale per output channel",
            "activations": "uint8, ranges calibrated (min/max)", "calibration": f"{len(data)} {source}"}


def _primary_change(model, test: Dataset, fp32: OnnxRunner, int8: OnnxRunner) -> dict[str, Any]:
    """The task's primary metric (RMSE, micro-F1) of the fp32 and int8 graphs on the test split
    (no intervals: the change is the number asked for)."""
    task = get_task(model.task)
    y = task.encode(list(test.labels), model.classes)
    thresholds = model.strategy.thresholds_ if model.task == "multi-label" else None
    values = [float(task.metrics(y, runner.predict_outputs(test), model.classes, thresholds=thresholds,
                                 n_boot=1)[task.primary]) for runner in (fp32, int8)]
    return {"metric": task.primary, "metric_fp32": values[0], "metric_int8": values[1],
            "metric_change": values[1] - values[0], "test_items": len(test)}
