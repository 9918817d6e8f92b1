"""``rank``: score candidate backbones on labelled data before training any of them.

data -> validate -> (stratified subsample) -> for each candidate: features (cached) ->
transferability scores (+ domain distance to an unlabelled target) -> a ranked table,
``rank.json`` and a self-contained ``rank.html``.

A candidate is a backbone name with an optional layer and initialisation::

    "efficientnet-lite0"            the pre-trained model, last layer
    "efficientnet-lite0@6"          its layer 6 (0 = stem / embeddings)
    "random:efficientnet-lite0"     the same architecture, randomly initialised (the control)
    {"model": "efficientnet-lite0", "layer": 6, "random": False, "options": {"image_size": 96},
     "label": "lite0 @96px"}        the same as a dict, with backbone options

>>> import transferkit as tk
>>> from transferkit.ranking import rank
>>> result = rank("emails.jsonl", ["minilm-l6", "minilm-l6@3"], text_columns="subject,body")
>>> print(result.table())
>>> result.write("runs/rank")

Every task is ranked (``task=``, read and inferred as :func:`transferkit.prepare_data` does):
classification with all the scores; regression and multi-label with the forms of LogME and kNN
for their labels (:func:`transferkit.scores.score_for_task`: kNN R² and LogME of the
standardised target; per-label balanced accuracy and per-label LogME, averaged), the other
scores shown as n/a with the reason.
"""
from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ._memory import PeakRSS
from .backbones.base import parse_layer
from .data import prepare_data, stratified_split
from .data.dataset import Dataset
from .errors import UserInputError
from .report.formatting import fmt_score
from .report.rank import write_rank
from .scores import SCORES, domain_shift, score_about, score_for_task, score_title
from .tasks import get_task

__all__ = ["rank", "RankResult", "RankRow", "Candidate", "parse_candidate", "names_layer", "order_key",
           "DEFAULT_SCORES"]

Log = Callable[[str], None]
#: kNN first: it orders the table (ties broken by LogME, then the rest).  In BENCHMARKS.md
#: (section "transferability": spam, MNIST-5k and digits, 80/20 and few-shot, 1,000 test items
#: per task) the candidate with the best kNN score was also the best by linear-probe accuracy,
#: or within 0.3 points of it, in all six task variants; LogME's pick lost 4.9 and 13.2 points on
#: digits, where it preferred last layers to EfficientNet's layer 6.
DEFAULT_SCORES = ("knn", "logme", "hscore", "leep", "nce")
TARGET_ITEMS = 1000  # target items used for the domain distance (seeded subset), as domain_shift uses
_SPEC = re.compile(r"^(?P<model>.+?)(?:@(?P<layer>-?\d+|(?i:last)))?$")  # NAME[@LAYER], after any "random:"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- candidates
@dataclass
class Candidate:
    """One model to score: a backbone name, a layer, an initialisation, backbone options.

    Attributes:
        model: zoo name, model directory or hub id.
        layer: ``None`` for the last layer.
        random: score ``get_backbone(model).randomized(seed)`` instead (the no-transfer control).
        options: backbone options (``image_size``, ``max_length``, ``pooling``...).
        label: how the candidate is shown (default: its spec string).
    """

    model: str
    layer: int | None = None
    random: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            self.label = self.spec()

    def spec(self) -> str:
        return f"{'random:' if self.random else ''}{self.model}{'' if self.layer is None else f'@{self.layer}'}"


def parse_candidate(c: str | dict | Candidate) -> Candidate:
    """``"[random:]NAME[@LAYER]"`` or a dict (keys ``model``, ``layer``, ``random``, ``options``, ``label``).

    Raises:
        UserInputError: an empty name, unknown dict keys or a non-integer layer.
    """
    if isinstance(c, Candidate):
        return c
    if isinstance(c, dict):
        unknown = set(c) - {"model", "layer", "random", "options", "label"}
        if unknown or not c.get("model"):
            raise UserInputError(f"bad candidate {c!r}", "a dict candidate takes model (required), layer, random, "
                                 "options, label")
        layer = parse_layer(c.get("layer"), what=f"candidate {c['model']!r}: layer")
        return Candidate(str(c["model"]), layer, bool(c.get("random", False)),
                         dict(c.get("options") or {}), str(c.get("label") or ""))
    text = str(c).strip()
    random = text.startswith("random:")
    m = _SPEC.match(text[len("random:"):] if random else text)
    if not m:
        raise UserInputError(f"bad candidate {c!r}", "write NAME, NAME@LAYER or random:NAME[@LAYER], "
                             "e.g. efficientnet-lite0@6")
    return Candidate(m.group("model"), parse_layer(m.group("layer")), random)


def names_layer(c: str | dict | Candidate) -> bool:
    """Whether a candidate names its layer itself: ``NAME@L`` or ``NAME@last`` (a string), a
    ``layer`` key (a dict), a layer set (a :class:`Candidate`: its last layer cannot be told from
    "not given", so only a set layer counts)."""
    if isinstance(c, Candidate):
        return c.layer is not None
    if isinstance(c, dict):
        return "layer" in c
    text = str(c).strip()
    m = _SPEC.match(text[len("random:"):] if text.startswith("random:") else text)
    return bool(m and m.group("layer") is not None)


# ----------------------------------------------------------------------------- results
@dataclass
class RankRow:
    """One candidate's scores and costs.

    Attributes:
        candidate: the label; model, layer, init, dim: what was scored (``init``:
            ``"pretrained"`` or ``"random:<seed>"``).
        scores: score name -> value (``None`` when it does not apply, e.g. LEEP without a
            source head, or the H-score of a regression target); higher is better for every score.
        score_seconds: score name -> seconds.
        extract_seconds: feature extraction (model loading included; near 0 from the cache).
        n_cached: items whose features came from the cache.
        seconds: everything for this candidate.
        peak_memory_mb: peak growth of the process's resident memory while it was scored
            (``None`` where it cannot be read).
        domain: with a target: :class:`transferkit.scores.DomainShift` as a dict.
        notes: what a reader should know (skipped scores and why).
    """

    candidate: str
    model: str
    layer: int | None
    init: str
    dim: int
    scores: dict[str, float | None]
    score_seconds: dict[str, float]
    extract_seconds: float
    n_cached: int
    seconds: float
    peak_memory_mb: float | None
    domain: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class RankResult:
    """The ranked candidates and what they were scored on.

    Attributes:
        rows: best first, by the first requested score that applies to the task (kNN by default),
            ties broken by the next ones; rows without a score go after those with it.
        scores: the score names, in the requested order.
        data: task, source, modality, items scored, classes (label names for multi-label, none
            for regression; ``n_labels`` / ``target`` summarise those tasks).
        target: source, items used, or ``None``.
        notes: what applies to the whole ranking.
        seed: the seed of subsampling, random-init candidates and domain distances.
        settings: the other options the scores depend on (``knn_k``, ``max_items``...).
        task: what the labels are (``classification``, ``regression``, ``multi-label``).
        not_applicable: score name -> why it does not apply to the task (shown as n/a).
    """

    rows: list[RankRow]
    scores: list[str]
    data: dict[str, Any]
    target: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"
    not_applicable: dict[str, str] = field(default_factory=dict)

    @property
    def best(self) -> RankRow:
        """The top candidate."""
        return self.rows[0]

    @property
    def ranked_by(self) -> str:
        """The score that orders the rows: the first requested one that applies to the task."""
        return next(s for s in self.scores if s not in self.not_applicable)

    def _repr_html_(self) -> str:
        """In a notebook: the data, the best candidate and the table of scores."""
        from .report.notebook import rank_html

        return rank_html(self)

    def cell(self, score: str, value: float | None) -> str:
        """A score as a table shows it: ``n/a`` where it does not apply to the task."""
        return "n/a" if score in self.not_applicable else fmt_score(score, value, self.task)

    def data_line(self) -> str:
        """``"200 items, regression target (image)"``: what was scored, in words."""
        d = self.data
        what = {"regression": "regression target",
                "multi-label": f"{d.get('n_labels', len(d.get('classes', [])))} labels (multi-label)"}
        return f"{d['n_items']} items, {what.get(self.task, str(d['n_classes']) + ' classes')} ({d['modality']})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``rank.json``)."""
        return {"task": self.task, "scores": list(self.scores),
                "score_info": {s: {**{k: v for k, v in SCORES.entry(s).meta.items() if k != "inputs"},
                                   "title": score_title(s, self.task), "about": score_about(s, self.task),
                                   "applies": s not in self.not_applicable,
                                   **({"why_not": self.not_applicable[s]} if s in self.not_applicable else {})}
                               for s in self.scores},
                "ranked_by": self.ranked_by, "data": self.data, "target": self.target, "seed": self.seed,
                "settings": dict(self.settings),
                "rows": [asdict(r) for r in self.rows], "notes": list(self.notes)}

    def table(self) -> str:
        """A plain-text table: rank, candidate, each score, time, memory (and the shift with a target)."""
        heads = (["#", "candidate", "dim"] + [score_title(s, self.task) for s in self.scores]
                 + ["time (s)", "peak mem (MB)"])
        if self.target is not None:
            heads.append("shift to target")
        lines = []
        for i, r in enumerate(self.rows, 1):
            cells = [str(i), r.candidate, str(r.dim)] + [self.cell(s, r.scores.get(s)) for s in self.scores]
            cells += [f"{r.seconds:.1f}", "—" if r.peak_memory_mb is None else f"{r.peak_memory_mb:.0f}"]
            if self.target is not None:
                cells.append("—" if not r.domain else f"{r.domain['level']} (A={r.domain['a_distance']:.2f})")
            lines.append(cells)
        widths = [max(len(h), *(len(c[j]) for c in lines)) if lines else len(h) for j, h in enumerate(heads)]
        left = {1, len(heads) - 1} if self.target is not None else {1}

        def row(cells: list[str]) -> str:
            return "  ".join(c.ljust(w) if j in left else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths)))

        out = [row(heads), "  ".join("-" * w for w in widths)] + [row(c) for c in lines]
        out.append(f"{self.data_line()}; ranked by {score_title(self.ranked_by, self.task)}, higher is better "
                   "for every score.")
        out += [f"n/a: {why}." for why in self.not_applicable.values()]
        out += [f"note: {n}" for n in self.notes]
        for r in self.rows:
            out += [f"note ({r.candidate}): {n}" for n in r.notes]
        return "\n".join(out)

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``rank.json`` and a self-contained ``rank.html`` (chart inline) into ``out_dir``.

        Returns:
            ``{"json": path, "html": path}``.
        """
        return write_rank(self, out_dir)


# ----------------------------------------------------------------------------- rank
def rank(data: Any, candidates: Sequence[str | dict | Candidate], *, target_unlabelled: Any = None,
         text_columns: list[str] | str | None = None, label_column: str | None = "label",
         scores: Sequence[str] = DEFAULT_SCORES, max_items: int | None = None, seed: int = 0, batch_size: int = 32,
         log: Log | None = _stderr, backbone_options: dict[str, Any] | None = None, modality: str | None = None,
         skip_bad: bool = False, cache: bool = True, progress: bool | None = None, knn_k: int = 5,
         backend: str = "torch", path_column: str | None = None, task: str | None = None,
         label_sep: str | None = None) -> RankResult:
    """Score every candidate backbone on labelled data, best first.

    Args:
        data: a path (table or class folders) or a :class:`Dataset` with labels.
        candidates: names as ``"[random:]NAME[@LAYER]"``, dicts, or :class:`Candidate`.
        target_unlabelled: data the model will meet (path or Dataset; labels ignored): adds
            MMD and proxy A-distance between the data and it, per candidate.
        text_columns, label_column, modality, skip_bad, path_column, task, label_sep: as for
            :func:`transferkit.prepare_data` (``task=None`` infers it, never silently).
        scores: names in :data:`transferkit.scores.SCORES`; the first one that applies to the
            task orders the rows, the next ones break ties (kNN accuracies tie easily on few items).
            LEEP and NCE are computed only for pre-trained candidates whose backbone has a
            source head at the scored layer; the H-score, LEEP and NCE only for classification.
        max_items: score a subsample of at most this many items (seeded), stratified as the
            task's split is: classes, quantile bins of the target, each item's rarest label.
        seed: subsample, random-init candidates, domain distances.
        batch_size: items per forward pass.
        log: progress lines (``None``: silent).
        backbone_options: options for every candidate (a dict candidate's own options win).
        cache: use the on-disk feature cache.
        knn_k: neighbours of the kNN score.
        backend: feature extraction runtime, ``torch`` or ``onnx`` (as :func:`extract_features`).

    Returns:
        :class:`RankResult`.

    Raises:
        UserInputError: unknown score or backbone (checked before any extraction), a
            candidate of another modality, no candidates, data without labels, no requested
            score that applies to the task, a regression target with one value only.
        DataValidationError: the data fails the pre-flight check.
    """
    from .backbones import get_backbone
    from .features import extract_features

    say = log or (lambda _m: None)
    score_names = list(dict.fromkeys(scores))
    if not score_names:
        raise UserInputError("no scores to compute", f"pick from: {', '.join(SCORES.list())}")
    for s in score_names:
        SCORES.entry(s)  # unknown name -> UserInputError with "did you mean"
    cands = [parse_candidate(c) for c in candidates]
    if not cands:
        raise UserInputError("no candidates to rank", "pass at least one backbone name, e.g. efficientnet-lite0")
    labels_seen = [c.label for c in cands]
    dup = sorted({x for x in labels_seen if labels_seen.count(x) > 1})
    if dup:
        raise UserInputError(f"candidate listed twice: {', '.join(dup)}", "give each candidate once")
    if isinstance(text_columns, str):
        text_columns = [c.strip() for c in text_columns.split(",") if c.strip()]

    # 1. validate, before any model is loaded
    prepared = prepare_data(data, text_columns=text_columns, label_column=label_column, modality=modality,
                            skip_bad=skip_bad, path_column=path_column, task=task, label_sep=label_sep)
    for line in prepared.report.warning_lines():
        say(f"warning: {line}")
    ds, notes = prepared.train, []
    task = ds.task
    not_applicable = {s: why for s in score_names for fn, why in [score_for_task(s, task)] if fn is None}
    applicable = [s for s in score_names if s not in not_applicable]
    if not applicable:
        raise UserInputError(f"none of the scores {', '.join(score_names)} applies to {task} labels",
                             hint="use knn and logme, which have a form for every task")
    if prepared.test is not None:
        notes.append(f"The data's test part ({len(prepared.test)} items) was not used: scores need only one "
                     "labelled set.")
    if prepared.report.skipped:
        notes.append(f"{len(prepared.report.skipped)} bad items were skipped.")
    if max_items is not None and len(ds) > max_items:
        n_before = len(ds)
        ds = _stratified_subsample(ds, int(max_items), seed)
        notes.append(f"Scored a stratified subsample of {len(ds)} of {n_before} items (seed {seed}).")
    target = None
    if target_unlabelled is not None:
        tp = prepare_data(target_unlabelled, text_columns=text_columns, label_column=label_column,
                          modality=ds.modality, skip_bad=skip_bad, require_labels=False)
        target = tp.train
        if target.modality != ds.modality:
            raise UserInputError(f"the target is {target.modality} data but the labelled data is {ds.modality}")
        if len(target) > TARGET_ITEMS:
            idx = np.sort(np.random.default_rng(seed).choice(len(target), TARGET_ITEMS, replace=False))
            notes.append(f"Domain distances use a random subset of {TARGET_ITEMS} of the {len(target)} target "
                         f"items (seed {seed}) and at most {TARGET_ITEMS} labelled items.")
            target = target.subset(idx)
    labels, n_classes = _encoded_labels(ds)

    # 2. resolve every candidate first: a typo or a missing package fails before any work
    opts = dict(backbone_options or {})
    backbones = []
    for c in cands:
        bb = get_backbone(c.model, **{**opts, **c.options, **({"layer": c.layer} if c.layer is not None else {})})
        if bb.modality != ds.modality:
            raise UserInputError(f"candidate {c.label!r} takes {bb.modality} data but the data is {ds.modality}",
                                 "rank models of the data's modality (see `transferkit models`)")
        backbones.append(bb.randomized(seed) if c.random else bb)
    what = {"regression": "a regression target", "multi-label": f"{n_classes} labels (multi-label)"}
    say(f"ranking {len(cands)} candidates on {len(ds)} items, {what.get(task, f'{n_classes} classes')} "
        f"({ds.modality}); scores: {', '.join(applicable)}")

    # 3. per candidate: features, scores, costs
    rows = []
    for c, bb in zip(cands, backbones):
        say(f"{c.label}: features …")
        with PeakRSS() as mem:
            t_start = time.perf_counter()
            feats, st = extract_features(bb, ds, batch_size=batch_size, cache=cache, progress=progress,
                                         backend=backend)
            extract_s = time.perf_counter() - t_start
            row_notes: list[str] = []
            inputs: dict[str, Any] = {"features": feats, "labels": labels}
            if any(SCORES.entry(s).meta["needs_source_head"] for s in applicable):
                probs, why = _source_probs(bb, feats)
                if probs is not None:
                    inputs["source_probs"] = probs
                    inputs["source_labels"] = probs.argmax(axis=1)
                else:
                    row_notes.append(f"LEEP/NCE not computed: {why}.")
            values: dict[str, float | None] = {}
            seconds: dict[str, float] = {}
            for s in score_names:
                entry = SCORES.entry(s)
                fn = score_for_task(s, task)[0]
                if fn is None or any(k not in inputs for k in entry.meta["inputs"]):
                    values[s] = None
                    continue
                kwargs = _score_kwargs(s, knn_k)
                t = time.perf_counter()
                values[s] = float(fn(*(inputs[k] for k in entry.meta["inputs"]), **kwargs))
                seconds[s] = round(time.perf_counter() - t, 4)
            if "logme" in values and feats.shape[0] < feats.shape[1]:
                row_notes.append(f"N = {feats.shape[0]} < D = {feats.shape[1]}: LogME is the exact evidence "
                                 "(the authors' formula, which leaves out D - N null directions, changes with the "
                                 "scale of the features there).")
            domain = None
            if target is not None:
                say(f"{c.label}: target features and domain distance …")
                tfeats, _ = extract_features(bb, target, batch_size=batch_size, cache=cache, progress=progress,
                                             backend=backend)
                domain = domain_shift(feats, tfeats, max_items=TARGET_ITEMS, seed=seed).to_dict()
                del tfeats
            total_s = time.perf_counter() - t_start
        rows.append(RankRow(candidate=c.label, model=c.model, layer=bb.layer, init=bb.init, dim=int(feats.shape[1]),
                            scores=values, score_seconds=seconds, extract_seconds=round(extract_s, 3),
                            n_cached=st.n_cached, seconds=round(total_s, 3), peak_memory_mb=mem.peak_mb,
                            domain=domain, notes=row_notes))
        say(f"{c.label}: " + ", ".join(f"{s} {fmt_score(s, v, task)}" for s, v in values.items() if s in applicable)
            + f" ({total_s:.1f} s)")
        del feats, inputs

    rows.sort(key=lambda r: order_key(r.scores, applicable))  # stable: full ties keep the given order
    data_info = {"task": task, "source": ds.source, "modality": ds.modality, "n_items": len(ds),
                 "n_classes": n_classes if task == "classification" else 0, "classes": ds.classes,
                 "fingerprint": ds.fingerprint()}
    if task == "multi-label":
        data_info["n_labels"] = n_classes
    if task == "regression":
        y = np.asarray(labels)
        data_info["target"] = {"mean": float(y.mean()), "sd": float(y.std()), "min": float(y.min()),
                               "max": float(y.max())}
    if ds.modality == "timeseries" and task == "classification":
        data_info["source_similarity"] = similarity = source_similarity(ds)
        near = min(similarity, key=similarity.get)
        notes.append(f"Nearest pre-training set of ts-fcn-ucr: {near} (Fawaz et al. 2018's prototype DTW distance "
                     + ", ".join(f"{k} {v:.2f}" for k, v in sorted(similarity.items(), key=lambda kv: kv[1])) + ").")
    target_info = None if target is None else {"source": target.source, "n_items": len(target)}
    settings = {"knn_k": knn_k, "max_items": max_items, "batch_size": batch_size, "backend": backend,
                "backbone_options": opts, "logme": "exact evidence (the authors' value whenever N >= D)"}
    return RankResult(rows, score_names, data_info, target_info, notes, seed, settings, task, not_applicable)


def source_similarity(ds: Dataset) -> dict[str, float]:
    """Fawaz et al. (2018)'s data-set distance (lower is closer) from the labelled series ``ds`` to
    each UCR/UEA set ``ts-fcn-ucr`` was pre-trained on, through their class prototypes shipped with
    the weights (:data:`~transferkit.backbones.timeseries.SOURCES`)."""
    from safetensors.torch import load_file

    from .backbones.timeseries import SOURCES
    from .series_features import class_prototypes, dataset_distance

    mine = class_prototypes(list(ds.inputs), [str(v) for v in ds.labels])
    sources = load_file(str(SOURCES))
    return {name: dataset_distance(mine, [row[None, :] for row in t.numpy()]) for name, t in sources.items()}


def order_key(scores: dict[str, float | None], names: Sequence[str]) -> tuple:
    """Sort key, best first: by each named score in turn (higher is better), a missing one last."""
    return tuple(x for n in names for x in ((scores.get(n) is None), -(scores.get(n) or 0.0)))


def _score_kwargs(name: str, knn_k: int) -> dict[str, Any]:
    if name == "logme":
        # Identical to the authors' LogME whenever N >= D; when N < D their formula depends on the
        # scale of the features, which differs between models: the exact evidence does not.
        return {"exact": True}
    if name == "knn":
        return {"k": knn_k}
    return {}


def _encoded_labels(ds: Dataset) -> tuple[np.ndarray, int]:
    """The labels as the task's scores take them, and their number of classes (labels).

    Classification: ``(N,)`` class codes; regression: ``(N,)`` float targets (0 classes);
    multi-label: ``(N, L)`` 0/1 indicators over ``ds.classes``.
    """
    if ds.task == "classification":
        codes = np.unique(np.asarray(ds.labels), return_inverse=True)[1].reshape(-1)
        return codes, int(codes.max()) + 1
    classes = ds.classes  # validation has refused constant targets; the subsample keeps the extremes
    return get_task(ds.task).encode(list(ds.labels), classes), len(classes)


def _source_probs(bb, feats: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Softmax of the backbone's source head over the extracted (last-layer) features."""
    if bb.init != "pretrained":
        return None, "a randomly initialised model has no source task"
    if bb.layer is not None:
        return None, f"the source head reads the last layer, not layer {bb.layer}"
    head = bb.source_head()
    if head is None:
        return None, "the model has no source-task head"
    import torch
    from scipy.special import softmax

    with torch.inference_mode():
        logits = head(torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))).double().numpy()
    return softmax(logits, axis=1), ""


def _stratified_subsample(ds: Dataset, n: int, seed: int) -> Dataset:
    """At most ``n`` items (``n < len(ds)``) with the proportions of ``ds``'s strata, those of the
    task's split (:func:`transferkit.data.stratified_split`): classes (every class kept when
    possible); regression, up to 10 equal-count bins of the target; multi-label, each item's
    rarest label.
    """
    n_classes = len(ds.classes)
    if ds.task == "classification":
        take = min(n, len(ds) - n_classes)  # stratified_split keeps one item per class on the other side
        if take < n_classes:
            raise UserInputError(f"max_items={n} is too small for {n_classes} classes",
                                 f"use max_items >= {n_classes}, or leave it out")
        _rest, sub = stratified_split(ds, test_size=take, seed=seed)
        return sub
    # The split's training side: it keeps the smallest and largest targets (regression) and every
    # label (multi-label), and one item of each stratum (up to 10 bins + the 2 extremes; a
    # stratum per label + a pooled one), so n must cover those.
    floor, what = (12, "the target's range and bins") if ds.task == "regression" else \
        (n_classes + 1, f"all {n_classes} labels")
    if n < floor:
        raise UserInputError(f"max_items={n} is too small to keep {what}", f"use max_items >= {floor}, or leave it out")
    sub, _rest = stratified_split(ds, test_size=len(ds) - n, seed=seed)
    return sub
