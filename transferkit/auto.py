"""``--model auto``: rank candidate backbones on the training data, then pick a model and a strategy.

The model: the candidate with the highest leave-one-out kNN accuracy on its frozen features,
ties broken by LogME (:data:`AUTO_SCORES`).  In the transferability study of BENCHMARKS.md
(spam, MNIST-5k and digits; 80/20 and 8-10 labels per class; EfficientNet-Lite0/1/2 at their last
and inner layers, MiniLM at four depths; accuracy of a linear probe per task) that pick was the
best candidate or close to it in every task variant, while LogME's own pick lost far more on
digits (it preferred last layers to layer 6).

Every candidate named without a layer (the defaults included) is ranked twice: at its last layer
and at its inner layer, :data:`INNER_LAYER_AT` of its depth (:func:`with_inner_layers`); a candidate
named with its layer (``NAME@L``, ``NAME@last``) is ranked exactly as given.  Each layer is a feature
extraction of its own (the ranking makes one forward pass per candidate; an inner layer runs only the
blocks below it), so this costs one more extraction per candidate named without a layer.

The choice is made on the training split only (after any few-shot sampling), never on the test
set, so the test accuracy that follows is still an honest estimate.  The chosen candidate's
features are then already in the cache: a linear probe after ranking costs almost nothing more.

The rule for the strategy comes from the strategies study in BENCHMARKS.md (spam with minilm-l6
and MNIST-5k with efficientnet-lite0, 8-10 labels per class and 80/20, 3 seeds, every strategy
with its defaults).  There LoRA reached the best accuracy, or came close to it, in every variant,
well above the linear probe, while ``lp-ft`` stayed below plain fine-tuning.  So:

* fewer than :data:`FINETUNE_FROM_PER_CLASS` labelled items in the smallest class -> ``linear-probe``
  (the study has no evidence below 8 per class, and the probe trains in seconds);
* otherwise -> :data:`FINETUNE_STRATEGY` (``lora``), or ``finetune`` when PEFT is not installed;
* except when the chosen candidate is an intermediate layer (``model@L``): the study fine-tuned
  last layers only, and fine-tuning from an inner layer of EfficientNet-Lite0 fell far below the
  probe on the same MNIST-5k split (section "transferability"), so such a candidate keeps the probe.

Regression and multi-label data are ranked by their task's kNN form (kNN R², per-label balanced
accuracy; ties broken by their LogME), and the strategy rule reads its threshold against the
task's nearest thing to a class: the items carrying the rarest label (multi-label), or each
tenth of the items by target rank, as the split's target bins (regression).  Both studies
measured classification only, and the reasons say so.  The fine-tuning strategy is the first of
``lora`` / ``finetune`` whose :attr:`Strategy.tasks` (the registry) include the task; where none
does, the linear probe (which learns every task).

The figures the messages quote are read from ``transferkit/studies.json`` (studies
``auto_pick``, ``strategies``, ``inner_layer_finetune``, ``lora_share``), which the benchmarks
write; none is copied here.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ._studies import study
from .data.dataset import Dataset
from .errors import UserInputError

__all__ = ["AutoChoice", "choose", "default_candidates", "choose_strategy", "with_inner_layers", "inner_layer",
           "last_layer", "FINETUNE_FROM_PER_CLASS", "AUTO_SCORES", "INNER_LAYER_AT"]

#: The scores that order the candidates: the first decides, the next breaks ties (module doc).
AUTO_SCORES = ("knn", "logme")

#: Smallest class size from which ``auto`` fine-tunes instead of probing (see the module doc).
FINETUNE_FROM_PER_CLASS = 8
FINETUNE_STRATEGY = "lora"
FALLBACK_STRATEGY = "finetune"  # without PEFT
#: Ranking scores at most this many training items (stratified): the scores settle well before.
RANK_MAX_ITEMS = 2000

#: The inner layer ranked beside the last one of every candidate named without a layer, as a
#: share of the depth: layer ``N * 3 // 4`` of a model whose last layer is ``N`` (0 = embeddings
#: or stem).  In the transferability study of BENCHMARKS.md that is where the best inner layer was
#: for both families measured: EfficientNet-Lite's layer 6 of 8 (ahead of layer 4 and of the last
#: layer on MNIST-5k and digits, 80/20 and 10 per class) and MiniLM's layer 4 of 6 (ahead of 1, 2
#: and the last at 8 per class on spam, within 0.2 points of layer 1 at 80/20).
INNER_LAYER_AT = (3, 4)

# Per modality: the zoo models tried when the user names none, each ranked at its last layer and
# at its inner layer (INNER_LAYER_AT: minilm-l6@4, efficientnet-lite0@6, efficientnet-lite1@6).
_DEFAULTS = {
    "text": ["minilm-l6"],
    "image": ["efficientnet-lite0", "efficientnet-lite1"],
    "timeseries": ["ts-fcn-ucr"],
}


@dataclass
class AutoChoice:
    """What ``auto`` chose and why.

    Attributes:
        model: the chosen backbone name; ``layer``: its layer (``None``: last).
        strategy: the chosen strategy (or the user's, when they named one).
        strategy_chosen: ``False`` when the user fixed the strategy.
        score: the score that ranked the candidates (``knn``; ``logme`` broke ties).
        ranking: per candidate, best first: ``{"candidate", "model", "layer", "scores", "seconds"}``.
        reasons: plain sentences for the report.
        seconds: the whole ranking.
        task: the training data's task (which form of the kNN score ranked the candidates).
        layers_added: the inner-layer candidates ranked beside candidates named without a layer
            (:func:`with_inner_layers`).
    """

    model: str
    layer: int | None
    strategy: str
    strategy_chosen: bool
    score: str
    ranking: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    task: str = "classification"
    layers_added: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_candidates(modality: str) -> list[str]:
    """The zoo candidates for a modality whose packages are installed."""
    from .backbones.zoo import list_models

    available = {m["name"] for m in list_models() if m["available"]}
    cands = [c for c in _DEFAULTS.get(modality, []) if c.split("@")[0] in available]
    if not cands:
        raise UserInputError(f"--model auto has no installed zoo model for {modality} data",
                             hint="name candidates with --models a,b,c (model directories or hub ids), "
                                  "or install the zoo: pip install 'transferkit[zoo]'")
    return cands


def last_layer(model: str, backbone_options: dict[str, Any] | None = None) -> int | None:
    """The index of ``model``'s last layer as ``NAME@L`` counts (0 = embeddings or stem), or
    ``None`` where its layers cannot be told.

    Transformers: ``num_hidden_layers`` of the config (hidden states 0..N; no weights loaded).
    Others: their layer groups (EfficientNet-Lite: stem, 7 stages, head convolution = 0..8), else
    the model's largest block list.
    """
    from .backbones import get_backbone
    from .backbones.hf import block_list

    bb = get_backbone(model, **(backbone_options or {}))
    n = getattr(getattr(bb, "config", None), "num_hidden_layers", None)
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        return n
    stages = getattr(bb.module, "stages", None)
    if callable(stages):
        return len(stages()) - 1
    _name, blocks = block_list(bb.module)
    return len(blocks) if blocks is not None else None


def inner_layer(last: int | None) -> int | None:
    """The inner layer ranked beside a last layer ``last`` (:data:`INNER_LAYER_AT` of the depth);
    ``None`` when there is none between the embeddings/stem (0) and the last layer."""
    if last is None:
        return None
    k = last * INNER_LAYER_AT[0] // INNER_LAYER_AT[1]
    return k if 1 <= k < last else None


@dataclass
class InnerLayers:
    """Candidates with their inner layers added (:func:`with_inner_layers`).

    Attributes:
        candidates: the given candidates in their order, each followed by its added inner layer.
        added: the added candidates (``"NAME@L"``).
        depth: model -> index of its last layer (``None``: not told), for the models named
            without a layer.
        single: candidates named without a layer that got no inner layer (no layers to tell, or
            too shallow).
    """

    candidates: list[Any]
    added: list[str] = field(default_factory=list)
    depth: dict[str, int | None] = field(default_factory=dict)
    single: list[str] = field(default_factory=list)


def with_inner_layers(candidates: list[Any], backbone_options: dict[str, Any] | None = None) -> InnerLayers:
    """Add, after every candidate named without a layer (``NAME``, not ``NAME@L`` or ``NAME@last``),
    the same model at its :func:`inner_layer`, unless that layer is already a candidate.  A
    candidate that names its layer is kept exactly as given and gets nothing added.

    The inner layer is a separate feature extraction: the ranking makes one forward pass per
    candidate and layer (an inner layer runs only the blocks below it).
    """
    from .ranking import names_layer, parse_candidate

    parsed = [parse_candidate(c) for c in candidates]
    out = InnerLayers(candidates=[])
    for c, p in zip(candidates, parsed):
        if not names_layer(c) and p.model not in out.depth:
            out.depth[p.model] = last_layer(p.model, backbone_options)

    def where(model: str, layer: int | None) -> tuple[str, int | None]:
        n = out.depth.get(model)
        if n is not None and layer is not None:
            layer = n + 1 + layer if layer < 0 else layer  # -1 is the last layer
            layer = None if layer == n else layer
        return model, layer

    present = {where(p.model, p.layer) for p in parsed}
    for c, p in zip(candidates, parsed):
        out.candidates.append(c)
        if names_layer(c):
            continue
        k = inner_layer(out.depth[p.model])
        if k is None:
            out.single.append(p.label)
            continue
        if (p.model, k) in present:
            continue
        present.add((p.model, k))
        if isinstance(c, dict):
            extra = {**c, "layer": k, **({"label": f"{c['label']}@{k}"} if c.get("label") else {})}
        else:
            extra = f"{str(c).strip()}@{k}"
        out.candidates.append(extra)
        out.added.append(parse_candidate(extra).label)
    return out


def _layers_reason(layers: InnerLayers, best_label: str) -> str:
    """Which layers were ranked and why (the study's picks read from ``studies.json``)."""
    from .ranking import parse_candidate

    num, den = INNER_LAYER_AT
    picks = list(dict.fromkeys(v["auto"]["candidate"] for v in study("auto_pick")["variants"]))
    parts = []
    if layers.added:
        added = ", ".join(f"{c} (last layer {layers.depth[parse_candidate(c).model]})" for c in layers.added)
        parts.append(f"Layers: every candidate named without a layer was ranked at its last layer and at the layer "
                     f"{num}/{den} of the way up, rounded down (0 = embeddings or stem): added {added}; the "
                     f"transferability study of BENCHMARKS.md found the best inner layers at that depth (its kNN "
                     f"picks: {', '.join(picks)}).")
    if layers.single:
        parts.append(f"Ranked at the last layer only (no inner layer between the first and the last could be "
                     f"told): {', '.join(layers.single)}.")
    if not parts:
        parts.append("Layers: every candidate named its layer and was ranked at it as given.")
    return " ".join(parts) + f" Chosen: {best_label}."


def _layer_words(layer: int | None, last: int | None) -> str:
    """``"layer 6 of 0-8"``, ``"the last layer, 8 of 0-8"`` (without ``last``: as far as known)."""
    if layer is None:
        return "the last layer" + ("" if last is None else f", {last} of 0-{last}")
    return f"layer {layer}" + ("" if last is None else f" of 0-{last}")


def _points(x: float) -> str:
    return f"{100 * x:.1f}"


def _variants(variants: list[dict]) -> str:
    """``"spam and mnist-5k, 80/20 and 8-10 labels per class"`` from a study's variants."""
    tasks = list(dict.fromkeys(v["task"] for v in variants))
    shots = sorted({int(v["variant"].split("/")[0]) for v in variants if v["variant"].endswith("/class")})
    splits = sorted({v["variant"] for v in variants if not v["variant"].endswith("/class")})
    parts = splits + ([f"{shots[0]}-{shots[-1]}" if len(shots) > 1 else f"{shots[0]}"] if shots else [])
    return (" and ".join(tasks) + ", " + " and ".join(parts)
            + (" labels per class" if shots else ""))


def _evidence() -> str:
    """Why LoRA, in the strategies study's own figures (``studies.json``, study ``strategies``)."""
    s = study("strategies")
    variants = s["variants"]
    gap = max(max(v["accuracy"].values()) - v["accuracy"]["lora"] for v in variants)
    over = [v["accuracy"]["lora"] - v["accuracy"]["linear-probe"] for v in variants]
    best = "the best" if gap <= 0 else f"the best or within {_points(gap)} points of the best"
    return (f"in the strategies study of BENCHMARKS.md ({_variants(variants)}, {s['seeds']} seeds) LoRA was "
            f"{best} in every variant, {_points(min(over))} to {_points(max(over))} points above the linear probe")


def _inner_layer_evidence() -> str:
    """Inner-layer fine-tuning against the probe (study ``inner_layer_finetune``)."""
    s = study("inner_layer_finetune")
    layers = "; ".join(f"layer {k}: {v['finetune']:.3f} vs {v['probe']:.3f}"
                       for k, v in sorted(s["layers"].items(), key=lambda kv: int(kv[0])))
    return (f"fine-tuning from an inner layer fell far below the probe in BENCHMARKS.md ({s['backbone']} on "
            f"{s['task']}, {s['variant']}, fine-tuned vs probe accuracy, {layers}, on {s['test_items']:,} test items)")


def _finetune_vs_lora() -> str:
    """Plain fine-tuning against LoRA per variant of the strategies study."""
    parts = [f"{v['task']} {v['variant']}: {100 * (v['accuracy']['finetune'] - v['accuracy']['lora']):+.1f}"
             for v in study("strategies")["variants"]]
    return "in that study fine-tuning minus LoRA, in points: " + ", ".join(parts)


def _lora_share() -> str:
    s = study("lora_share")
    return f"{s['trainable_share']:.2%} of {s['backbone']}'s parameters in BENCHMARKS.md"


def _smallest_group(train: Dataset) -> tuple[int, str, str]:
    """What the fine-tuning threshold is compared with: ``(count, below, every)``, the phrases
    saying the count is too small / large enough.  Classification: the smallest class;
    multi-label: the items carrying the rarest label; regression: the items in each tenth of
    the data by target rank (the split's target bins)."""
    k = FINETUNE_FROM_PER_CLASS
    study = (f" (the strategies study measured classification only: for {train.task} its per-class threshold is "
             f"read per {'target bin' if train.task == 'regression' else 'label'})")
    if train.task == "regression":
        n = len(train) // 10
        unit = f"each tenth of the training items by target rank (the split's target bins) holds {n} items"
        return n, f"{unit}, fewer than {k}{study}", f"{unit}, at least {k}{study}"
    if train.task == "multi-label":
        counts = Counter(name for labs in train.labels for name in labs)
        name, n = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
        return (n, f"the rarest label ({name!r}) is on {n} labelled training items, fewer than {k}{study}",
                f"every label is on at least {k} labelled training items (rarest: {n}){study}")
    n = min(Counter(train.labels).values())
    return (n, f"the smallest class has {n} labelled training items, fewer than {k}",
            f"every class has at least {k} labelled training items (smallest: {n})")


def choose_strategy(train: Dataset, layer: int | None = None) -> tuple[str, str]:
    """``(strategy, reason)`` from the size of the smallest class (the task's counterpart, see
    the module doc), the chosen layer, and the strategies registered for the task."""
    import importlib.util

    from .strategies.base import strategies_for

    smallest, below, every = _smallest_group(train)
    if smallest < FINETUNE_FROM_PER_CLASS:
        return "linear-probe", (
            f"linear-probe: {below}: the strategies study in BENCHMARKS.md has no evidence that fine-tuning "
            "helps below that, and a linear probe on frozen features trains in seconds.")
    if layer is not None:
        return "linear-probe", (
            f"linear-probe: the chosen candidate is an intermediate layer ({layer}); {_inner_layer_evidence()}, "
            "and the strategies study fine-tuned last layers only.")
    learns = strategies_for(train.task)
    if FINETUNE_STRATEGY not in learns and FALLBACK_STRATEGY not in learns:
        return "linear-probe", (
            f"linear-probe: {every}, but neither {FINETUNE_STRATEGY} nor {FALLBACK_STRATEGY} learns {train.task} "
            f"(strategies that do: {', '.join(learns)}).")
    if importlib.util.find_spec("peft") is None or FINETUNE_STRATEGY not in learns:
        why = ("PEFT is not installed (pip install 'transferkit[lora]')" if FINETUNE_STRATEGY in learns
               else f"{FINETUNE_STRATEGY} does not learn {train.task}")
        return FALLBACK_STRATEGY, (
            f"{FALLBACK_STRATEGY}: {every}; {_evidence()}, but {why}, "
            f"so the whole network is fine-tuned instead ({_finetune_vs_lora()}).")
    return FINETUNE_STRATEGY, (
        f"{FINETUNE_STRATEGY}: {every}; {_evidence()}. It trains a small share of the backbone's parameters "
        f"({_lora_share()}), and on a CPU it takes minutes where the probe takes seconds.")


def choose(train: Dataset, candidates: list[str] | None, *, strategy: str | None, seed: int,
           backbone_options: dict[str, Any], batch_size: int, cache: bool, progress: bool | None,
           log: Callable[[str], None], rank_dir: str | None = None, backend: str = "torch") -> AutoChoice:
    """Rank ``candidates`` (default: :func:`default_candidates`) on ``train`` and choose.

    Args:
        train: the labelled training split (never the test set).
        candidates: ``"NAME[@LAYER]"`` strings; random-init candidates are refused (they are
            the control, not a choice).
        strategy: the user's strategy, or ``None``/``"auto"`` to choose it too.
        rank_dir: where to write ``rank.json`` and ``rank.html`` (``None``: nowhere).

    Returns:
        :class:`AutoChoice`.
    """
    import time

    from .ranking import parse_candidate, rank

    t = time.perf_counter()
    cands = list(candidates) if candidates else default_candidates(train.modality)
    for c in cands:
        if parse_candidate(c).random:
            raise UserInputError(f"--models: {c!r} is a randomly initialised model",
                                 hint="auto chooses among pre-trained candidates; the random-init copy of the "
                                      "chosen one is trained as the control anyway")
    if "layer" in backbone_options:
        raise UserInputError("--layer cannot be combined with --model auto",
                             hint="give layers as candidates instead, e.g. "
                                  "--models efficientnet-lite0@6,efficientnet-lite0")
    layers = with_inner_layers(cands, backbone_options)
    cands = layers.candidates
    log(f"auto: ranking {len(cands)} candidates on the training split: {', '.join(map(str, cands))}"
        + (f" (inner layers added: {', '.join(layers.added)})" if layers.added else ""))
    result = rank(train, cands, scores=AUTO_SCORES, max_items=RANK_MAX_ITEMS, seed=seed,
                  batch_size=batch_size, backbone_options=backbone_options, cache=cache, progress=progress,
                  log=None, backend=backend)
    if rank_dir:
        result.write(rank_dir)
    best = result.best
    ranking = [{"candidate": r.candidate, "model": r.model, "layer": r.layer, "scores": r.scores,
                "seconds": r.seconds} for r in result.rows]
    last = layers.depth.get(best.model)
    reasons = [_model_reason(result, last), _layers_reason(layers, f"{best.model}, {_layer_words(best.layer, last)}")]
    user_strategy = strategy not in (None, "auto")
    if user_strategy:
        name = strategy
        reasons.append(f"{strategy}: named by the user.")
    else:
        name, why = choose_strategy(train, layer=best.layer)
        reasons.append(why)
    return AutoChoice(model=best.model, layer=best.layer, strategy=name, strategy_chosen=not user_strategy,
                      score=AUTO_SCORES[0], ranking=ranking, reasons=reasons, seconds=round(time.perf_counter() - t, 3),
                      task=result.task, layers_added=list(layers.added))


# Per task: what the kNN score is called, how its value is shown, and what it does to an item.
_KNN_WORDS = {
    "classification": ("5-NN accuracy", "{:.1%}", "Each item is classified by its 5 most similar other items"),
    "regression": ("5-NN R²", "{:.3f}", "Each item's target is predicted by the mean of its 5 most similar other "
                   "items' targets"),
    "multi-label": ("5-NN balanced accuracy (mean over labels)", "{:.1%}",
                    "Each label of each item is voted on by its 5 most similar other items"),
}


def _model_reason(result, last: int | None = None) -> str:
    """The chosen candidate, its layer (``last``: the index of its model's last layer, where known)
    and its scores against the next one."""
    rows = result.rows
    best = rows[0]
    task = getattr(result, "task", "classification")
    name, fmt, how = _KNN_WORDS[task]
    knn, logme = best.scores.get("knn"), best.scores.get("logme")
    line = (f"{best.candidate} ({_layer_words(best.layer, last)}): the highest leave-one-out {name} of {len(rows)} "
            "candidates on "
            f"{result.data['n_items']} training items ({fmt.format(knn)}")
    if len(rows) > 1:
        nxt = rows[1]
        line += f"; next {nxt.candidate} {fmt.format(nxt.scores['knn'])}"
        if nxt.scores["knn"] == knn:
            line += f", a tie that LogME broke ({logme:.4f} vs {nxt.scores['logme']:.4f})"
    evidence = _pick_evidence()
    if task != "classification":
        evidence += (f"; that study measured classification only, and {task} is ranked by the same rule with the "
                     "kNN and LogME of its own labels")
    line += f"). {how} on the frozen features; {evidence}."
    if logme is not None:
        line += f" Its LogME is {logme:.4f}."
    return line


def _pick_evidence() -> str:
    """How the kNN pick and LogME's pick fared against the best candidate (study ``auto_pick``)."""
    variants = study("auto_pick")["variants"]
    ours = max(v["best"]["accuracy"] - v["auto"]["accuracy"] for v in variants)
    logme = max(v["best"]["accuracy"] - v["logme"]["accuracy"] for v in variants)
    within = "the best candidate" if ours <= 0 else f"the best candidate, or within {_points(ours)} points of it,"
    return (f"in the transferability study of BENCHMARKS.md this pick was {within} in all {len(variants)} task "
            f"variants, where the LogME winner lost up to {_points(logme)} points")
