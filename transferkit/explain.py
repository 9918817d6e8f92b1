"""``transferkit explain``: why did the model predict that?

* Images: Grad-CAM (Selvaraju et al., ICCV 2017) on the backbone's last convolutional feature
  map, where it has one (EfficientNet-Lite); otherwise integrated gradients (Sundararajan,
  Taly & Yan, ICML 2017) on the pixels.  Written as PNG overlays.
* Text: integrated gradients on the token embeddings (the baseline keeps [CLS]/[SEP] and pads
  the rest), summed over the embedding dimension: one score per token of the text's first
  window (``max_length`` tokens, the window the score explains; later windows are not
  attributed), merged into words for display.  Written as an HTML fragment and JSON.

Both differentiate through the fitted strategy's head (:meth:`Strategy.torch_head`), so every
strategy whose prediction is a head on backbone features can be explained, fine-tuned and
adapted backbones included.  What is attributed depends on the run's task:

* classification: the probability of a class (the predicted one, or ``target``);
* multi-label: the probability of one label (``label``; by default the item's most probable
  predicted label, or its most probable label when none is predicted);
* regression: the predicted value itself, in the target's units: integrated gradients' scores
  add up to the value minus the value at the baseline (``baseline_value``), and Grad-CAM shows
  the regions that raise the value.
  Captum does the attribution (``pip install 'transferkit[explain]'``).
* Audio (backbones that read a spectrogram: ``resemblyzer``): occlusion (Zeiler & Fergus, ECCV
  2014) over time and frequency: each patch of the mel spectrogram (100 ms x 5 bands) set to
  silence in turn, the drop of the explained output recorded; drawn over the log-mel
  spectrogram as PNG.
Explanations land in ``RUN/explanations/`` and in a section of ``RUN/report.html``.
"""
from __future__ import annotations

import html
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._files import atomic_write_bytes, json_bytes
from .errors import MissingDependencyError, UserInputError
from .report import render_report
from .runs import RunDir, load
from .runs.loading import with_head
from .tasks import get_task

METHODS = ("auto", "gradcam", "integrated-gradients", "occlusion")


@dataclass
class Explanation:
    """One item's explanation.

    Attributes:
        item: what was explained (file name, or the text's first characters).
        predicted: the model's decision as text: the class; multi-label, the predicted labels
            joined by ``", "`` (``""`` for none); regression, the value.
        probability: classification and multi-label, the probability of ``target``; regression ``None``.
        target: what the attribution is for: the class, the label, or ``"value"`` (regression).
        method: ``gradcam`` or ``integrated-gradients``.
        task: the run's task.
        value: regression, the predicted value in the target's units.
        baseline_value: regression with integrated gradients, the value at the baseline (zero
            pixels, or the text's tokens replaced by padding): the scores add up to
            ``value - baseline_value`` (up to ``convergence_delta``).
        labels: multi-label, the predicted labels (each label's own threshold).
        tokens: for text, ``[(word, score), ...]`` over the explained window.
        heatmap: for images, ``(H, W)`` in [0, 1] at the model's input size (not saved in JSON).
        files: files written for it, relative to the output folder.
        convergence_delta: integrated gradients' completeness error (attributions' sum minus
            the output's change from baseline to input); small means the path integral converged.
    """

    item: str
    predicted: str
    probability: float | None
    target: str
    method: str
    tokens: list[tuple[str, float]] | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False)
    files: list[str] = field(default_factory=list)
    convergence_delta: float | None = None
    note: str | None = None
    task: str = "classification"
    value: float | None = None
    baseline_value: float | None = None
    labels: list[str] | None = None
    spectrogram_db: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("heatmap")
        d.pop("spectrogram_db")
        return d


def _captum():
    try:
        from captum import attr
    except ImportError:
        raise MissingDependencyError("explanations", "'transferkit[explain]' (captum)") from None
    return attr


def explainable(model):
    """``model``, or where it reads hand-made features (a delivered ``hybrid`` or ``classical``
    model, with no head on the network's features to differentiate through) the transfer model
    of its run: the one the verdict judges.

    Raises:
        UserInputError: no transfer model to fall back on (an in-memory model of those strategies)."""
    if model.strategy.head_on_features:
        return model
    if getattr(model, "transfer", None) is not None:
        return model.transfer
    if model.run_dir is not None:
        return load(model.run_dir, which="transfer")
    raise UserInputError(f"a {model.strategy.name} model reads hand-made features, which have no gradient to explain",
                         hint="explain the transfer model of its run: tk.load(run, which='transfer')")


def _forward(model):
    """``batch -> (N, K)`` outputs through the backbone and the strategy's torch head, in what is
    explained: class probabilities (softmax), label probabilities (sigmoid), or the regression
    value ``(N, 1)`` in the target's units (the head's output as is)."""
    head = model.strategy.torch_head()
    backbone = model.backbone
    task = model.task

    def outputs(batch) -> torch.Tensor:
        z = head(backbone.forward_features(batch).float())
        if task == "classification":
            return torch.softmax(z, dim=1)
        return torch.sigmoid(z) if task == "multi-label" else z
    return outputs


@dataclass
class _Choice:
    """The output an attribution is for, chosen from the item's outputs ``(K,)``."""

    index: int
    fields: dict[str, Any]
    note: str | None = None


def _choose_output(model, out: torch.Tensor, target: str | None) -> _Choice:
    """Which output column to attribute, and the Explanation fields that describe the prediction.

    Raises:
        UserInputError: a class or label the model does not have; any target for regression.
    """
    task, classes = model.task, model.classes
    p = out.detach().double().numpy()
    if task == "regression":
        if target is not None:
            raise UserInputError(f"a regression run explains its predicted value; there is no class or label "
                                 f"{target!r} to choose", hint="leave out --label / --target")
        return _Choice(0, {"predicted": f"{p[0]:.6g}", "probability": None, "target": "value", "value": float(p[0])})
    if task == "multi-label":
        labels = list(get_task(task).decide(p[None, :], model.strategy.thresholds_, classes=classes)[0])
        note = None
        if target is None:
            pool = [classes.index(c) for c in labels] or list(range(len(classes)))
            t = max(pool, key=lambda j: p[j])
            if not labels:
                note = f"no label is predicted for this item; the most probable one ({classes[t]}) is explained"
        else:
            t = _class_index(target, classes, "label")
        return _Choice(t, {"predicted": ", ".join(labels), "probability": float(p[t]), "target": classes[t],
                           "labels": labels}, note)
    pred = int(p.argmax())
    t = pred if target is None else _class_index(target, classes)
    return _Choice(t, {"predicted": classes[pred], "probability": float(p[pred]), "target": classes[t]})


# ----- images ------------------------------------------------------------------------------------
def _image_batch(backbone, pixel_values: torch.Tensor):
    from .backbones.base import Batch

    return Batch(tensors={"pixel_values": pixel_values}, n_items=len(pixel_values))


def cam_layer(backbone) -> torch.nn.Module | None:
    """The module whose output is the last spatial feature map ``(B, C, h, w)`` the features pool, or ``None``."""
    return backbone.feature_map_module()


def explain_image(model, item: Any, *, target: str | None = None, method: str = "auto",
                  steps: int = 32) -> Explanation:
    """Heat map of ``item`` (a path or an ``(H, W[, C])`` uint8 array) for ``target`` (a class, a
    label, or ``None``: see the module doc); a model on hand-made features explains its run's
    transfer model (:func:`explainable`)."""
    attr = _captum()
    model = explainable(model)
    backbone = model.backbone
    backbone.module.eval()
    batch = backbone.prepare([item])
    pv = batch.tensors["pixel_values"].float()
    probs = _forward(model)
    with torch.no_grad():
        p = probs(_image_batch(backbone, pv))[0]
    choice = _choose_output(model, p, target)
    t = choice.index
    layer = cam_layer(backbone)
    if method == "auto":
        method = "gradcam" if layer is not None else "integrated-gradients"

    def fn(x):
        return probs(_image_batch(backbone, x))

    delta, baseline_value = None, None
    if method == "gradcam":
        if layer is None:
            raise UserInputError(f"Grad-CAM needs a convolutional feature map and {backbone.name} has none",
                                 hint="use --method integrated-gradients")
        cam = attr.LayerGradCam(fn, layer).attribute(pv, target=t, relu_attributions=True)
        heat = attr.LayerAttribution.interpolate(cam, tuple(pv.shape[-2:]), interpolate_mode="bilinear")
        heat = heat[0, 0].detach().numpy()
    else:
        ig = attr.IntegratedGradients(fn)
        if model.task == "regression":
            with torch.no_grad():
                baseline_value = float(fn(torch.zeros_like(pv))[0, 0])
        a, d = ig.attribute(pv, baselines=torch.zeros_like(pv), target=t, n_steps=steps,
                            return_convergence_delta=True,
                         # forward_features runs rows in groups of chunk_batch; captum's hook swaps in
                         # the whole layer output, so one call must not hold more rows than a group
                         internal_batch_size=max(1, backbone.chunk_batch or steps))
        heat = a[0].abs().sum(0).detach().numpy()
        delta = float(d.abs().max())
    heat = np.clip(heat, 0, None)
    heat = heat / heat.max() if heat.max() > 0 else heat
    return Explanation(item=_name(item), method=method, heatmap=heat.astype(np.float32), convergence_delta=delta,
                       note=choice.note, task=model.task, baseline_value=baseline_value, **choice.fields)


def overlay_png(item: Any, heat: np.ndarray, alpha: float = 0.45) -> bytes:
    """The image at the heat map's size with the heat map blended over it (jet-like colours), as PNG."""
    from PIL import Image

    from .data._images import load_image

    img = load_image(str(item) if isinstance(item, Path) else item)
    img = img.resize((heat.shape[1], heat.shape[0]), Image.BILINEAR)
    return _blend_png(np.asarray(img, np.float32) / 255.0, heat, alpha)


def _blend_png(base: np.ndarray, heat: np.ndarray, alpha: float) -> bytes:
    """RGB ``(H, W, 3)`` in [0, 1] with ``heat (H, W)`` in [0, 1] blended over it, as PNG."""
    from PIL import Image

    h = heat[..., None]
    colour = np.clip(np.concatenate([1.5 - np.abs(4 * h - 3), 1.5 - np.abs(4 * h - 2), 1.5 - np.abs(4 * h - 1)],
                                    axis=2), 0, 1)  # blue (cold) -> green -> red (hot)
    out = (1 - alpha * h) * base + alpha * h * colour
    buf = io.BytesIO()
    Image.fromarray((np.clip(out, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ----- audio -------------------------------------------------------------------------------------
def explain_audio(model, item: Any, *, target: str | None = None, frames: int = 10, bands: int = 5) -> Explanation:
    """Occlusion map of ``item`` (a path or waveform): the drop of the explained output when each
    ``frames x bands`` patch of the backbone's mel spectrogram is silenced; ``heatmap (40, F)``
    (bands, low first x frames) in [0, 1], negative drops clipped to 0."""
    model = explainable(model)
    backbone = model.backbone
    if not hasattr(backbone, "spectrogram"):
        raise UserInputError(f"occlusion needs a backbone that reads a spectrogram; {backbone.name} reads the waveform",
                             hint="explain a run of the resemblyzer backbone")
    backbone.module.eval()
    spec = backbone.spectrogram(item)
    probs = _forward(model)
    variants, spans = [spec], []
    for t0 in range(0, len(spec), frames):
        for f0 in range(0, spec.shape[1], bands):
            v = spec.copy()
            v[t0:t0 + frames, f0:f0 + bands] = 0.0
            variants.append(v)
            spans.append((t0, f0))
    with torch.no_grad():
        out = torch.cat([probs(backbone.batch_from_spectrograms(variants[i:i + 64]))
                         for i in range(0, len(variants), 64)])
    choice = _choose_output(model, out[0], target)
    drop = (out[0, choice.index] - out[1:, choice.index]).double().numpy()
    heat = np.zeros((spec.shape[1], len(spec)), np.float64)
    for d, (t0, f0) in zip(drop, spans):
        heat[f0:f0 + bands, t0:t0 + frames] = max(d, 0.0)
    heat = heat / heat.max() if heat.max() > 0 else heat
    from .data._mel import power_to_db

    return Explanation(item=_name(item), method="occlusion", heatmap=heat.astype(np.float32), note=choice.note,
                       task=model.task, spectrogram_db=power_to_db(spec.T.astype(np.float64)), **choice.fields)


def spectrogram_png(spec_db: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> bytes:
    """The log-mel spectrogram ``(bands, frames)`` in grey (low frequencies at the bottom, 3 px per
    frame and 4 per band) with the occlusion heat map over it, as PNG."""
    lo, hi = float(spec_db.min()), float(spec_db.max())
    grey = (spec_db - lo) / (hi - lo) if hi > lo else np.zeros_like(spec_db)
    big = np.kron(grey[::-1], np.ones((4, 3)))
    return _blend_png(np.repeat(big[..., None], 3, axis=2), np.kron(heat[::-1], np.ones((4, 3))), alpha)


# ----- text --------------------------------------------------------------------------------------
def explain_text(model, text: str, *, target: str | None = None, steps: int = 32) -> Explanation:
    """Integrated-gradients score of each word of ``text``'s first window, for ``target`` (a class,
    a label, or ``None``: see the module doc); regression scores are in the target's units.  A
    model on hand-made features explains its run's transfer model (:func:`explainable`)."""
    attr = _captum()
    from .backbones.base import Batch

    model = explainable(model)
    backbone = model.backbone
    module = backbone.module
    module.eval()
    tok = backbone.tokenizer
    enc = tok(text, truncation=True, max_length=backbone.max_length, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    n_total = len(tok(text, add_special_tokens=True)["input_ids"])
    probs = _forward(model)

    def fn(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        n = len(input_ids)
        batch = Batch(tensors={"input_ids": input_ids, "attention_mask": attention_mask,
                               "weights": torch.ones(n)}, n_items=n, owner=torch.arange(n))
        return probs(batch)

    with torch.no_grad():
        p = fn(ids, mask)[0]
    choice = _choose_output(model, p, target)
    t = choice.index
    special = set(tok.all_special_ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    baseline = torch.where(torch.tensor([[i in special for i in ids[0].tolist()]]), ids, torch.full_like(ids, pad))
    baseline_value = None
    if model.task == "regression":
        with torch.no_grad():
            baseline_value = float(fn(baseline, mask)[0, 0])
    lig = attr.LayerIntegratedGradients(fn, module.get_input_embeddings())
    a, d = lig.attribute(ids, baselines=baseline, additional_forward_args=(mask,), target=t, n_steps=steps,
                         return_convergence_delta=True,
                         # forward_features runs rows in groups of chunk_batch; captum's hook swaps in
                         # the whole layer output, so one call must not hold more rows than a group
                         internal_batch_size=max(1, backbone.chunk_batch or steps))
    scores = a.sum(-1)[0].detach().numpy()
    pieces = tok.convert_ids_to_tokens(ids[0].tolist())
    words = _merge_wordpieces([(pc, float(s)) for pc, s, i in zip(pieces, scores, ids[0].tolist()) if i not in special])
    notes = [choice.note] if choice.note else []
    if n_total > ids.shape[1]:
        notes.append(f"scores cover the first {int(mask.sum())} of {n_total} tokens (one window)")
    return Explanation(item=_name(text), method="integrated-gradients", tokens=words,
                       convergence_delta=float(d.abs().max()), note="; ".join(notes) or None, task=model.task,
                       baseline_value=baseline_value, **choice.fields)


def _merge_wordpieces(pieces: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """WordPiece ``##`` continuations (and SentencePiece's word starts) joined into words, scores summed."""
    out: list[tuple[str, float]] = []
    for piece, s in pieces:
        if piece.startswith("##") and out:
            out[-1] = (out[-1][0] + piece[2:], out[-1][1] + s)
        elif piece.startswith("\u2581") or not out or not piece.startswith("##"):
            out.append((piece.lstrip("\u2581"), s))
    return out


def tokens_html(tokens: list[tuple[str, float]]) -> str:
    """Words shaded by score: red pushes toward the explained class or label (regression: raises
    the value), blue away from it (lowers it)."""
    m = max((abs(s) for _, s in tokens), default=0.0) or 1.0
    spans = []
    for w, s in tokens:
        a = min(abs(s) / m, 1.0) * 0.8
        rgb = "220,38,38" if s > 0 else "37,99,235"
        spans.append(f'<span style="background:rgba({rgb},{a:.2f})" title="{s:+.4f}">{html.escape(w)}</span>')
    return '<p class="tokens" style="line-height:1.9">' + " ".join(spans) + "</p>"


# ----- the command --------------------------------------------------------------------------------
def _class_index(target: str, classes: list[str], what: str = "class") -> int:
    if target not in classes:
        plural, flag = ("labels", "--label") if what == "label" else ("classes", "--target")
        raise UserInputError(f"{what} {target!r} is not one of the model's {plural}: {', '.join(classes)}",
                             hint=f"pass {flag} with one of them, or leave it out")
    return classes.index(target)


def _name(item: Any) -> str:
    if isinstance(item, (str, Path)) and Path(str(item)).suffix and len(str(item)) < 300 and Path(str(item)).exists():
        return Path(str(item)).name
    if isinstance(item, str):
        return item[:60] + ("…" if len(item) > 60 else "")
    return "<array>"


def explain(run: str | Path, inputs: Sequence[Any], *, out: str | Path | None = None, target: str | None = None,
            method: str = "auto", steps: int = 32, update_report: bool = True,
            load_options: dict[str, Any] | None = None, label: str | None = None) -> list[Explanation]:
    """Explain the run's predictions for ``inputs`` and write them into ``out`` (default ``RUN/explanations``).

    Args:
        run: a run directory.
        inputs: texts (text models) or image paths / arrays (image models).
        target: classification, explain this class instead of each item's predicted one;
            multi-label, this label (same as ``label``); regression takes none (the value is explained).
        label: multi-label, the label to explain (default: each item's most probable predicted label);
            for classification the same as ``target``.
        method: ``auto`` (Grad-CAM for convolutional image backbones, integrated gradients
            otherwise), ``gradcam`` or ``integrated-gradients``.
        steps: integration steps of integrated gradients.
        update_report: add an "Explanations" section to ``RUN/report.html``.
        load_options: passed to :func:`~transferkit.runs.load` (``backbone``, ``trust_remote_code``...).
    """
    if method not in METHODS:
        raise UserInputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(steps, int) or steps < 2:
        raise UserInputError(f"steps must be an integer >= 2, got {steps!r}")
    if not inputs:
        raise UserInputError("nothing to explain: give texts or image files")
    if label is not None and target is not None and label != target:
        raise UserInputError(f"two outputs to explain: --label {label!r} and --target {target!r}",
                             hint="give one: --label for a multi-label run, --target for a class")
    target = label if label is not None else target
    rd = RunDir(run)
    # the delivered model, unless it reads hand-made features (not a head on the network's): then the transfer model
    load_options = dict(load_options or {})
    model = load(rd.path, which=load_options.pop("which", None) or with_head(rd.path), **load_options)
    modality = model.modality
    out_dir = Path(out) if out else rd.file("explanations")

    def save(name: str, data: bytes) -> None:  # into the run through its RunDir, else into --out
        if out:
            atomic_write_bytes(out_dir / name, data)
        else:
            rd.write_bytes(f"explanations/{name}", data)

    results: list[Explanation] = []
    for i, item in enumerate(inputs):
        if modality == "image":
            e = explain_image(model, item, target=target, method=method, steps=steps)
            name = f"{i:03d}-{Path(str(item)).stem if isinstance(item, (str, Path)) else 'array'}.png"
            save(name, overlay_png(item, e.heatmap))
            e.files.append(name)
        elif modality == "text":
            if method == "gradcam":
                raise UserInputError("Grad-CAM explains images; text gets integrated gradients",
                                     hint="leave out --method, or pass --method integrated-gradients")
            e = explain_text(model, str(item), target=target, steps=steps)
            name = f"{i:03d}-text.html"
            save(name, tokens_html(e.tokens or []).encode("utf-8"))
            e.files.append(name)
        elif modality == "audio":
            if method not in ("auto", "occlusion"):
                raise UserInputError(f"{method} is not available for audio; audio gets occlusion",
                                     hint="leave out --method, or pass --method occlusion")
            e = explain_audio(model, item, target=target)
            name = f"{i:03d}-{Path(str(item)).stem if isinstance(item, (str, Path)) else 'array'}.png"
            save(name, spectrogram_png(e.spectrogram_db, e.heatmap))
            e.files.append(name)
        else:
            raise UserInputError(f"explanations of {modality} models are not available yet",
                                 hint="text, image and audio runs can be explained")
        results.append(e)
    save("explanations.json", json_bytes([e.to_dict() for e in results]))
    if update_report and rd.file("metrics.json").is_file():
        with rd.lock():
            _rewrite_report(rd, out_dir, results)
    return results


def _rewrite_report(rd: RunDir, out_dir: Path, results: list[Explanation]) -> None:
    sections = []
    for e in results:
        entry = e.to_dict()
        if e.heatmap is not None:
            entry["png"] = (out_dir / e.files[0]).read_bytes()
        elif e.tokens is not None:
            entry["html"] = tokens_html(e.tokens)
        sections.append(entry)
    rd.write_text("report.html", render_report(rd.read_json("metrics.json", {}), card=rd.card(),
                                               skipped=rd.read_json("skipped.json", None),
                                               validation=rd.read_json("validation.json", None),
                                               explanations=sections))
