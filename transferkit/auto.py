"""``--model auto``: rank candidate backbones on the training data, then pick a model and a strategy.

The model: the candidate with the highest leave-one-out kNN accuracy on its frozen features,
ties broken by LogME (:data:`AUTO_SCORES`).  In the transferability study of BENCHMARKS.md
(spam, MNIST-5k and digits; 80/20 and 8-10 labels per class; EfficientNet-Lite0/1/2 at their last
and inner layers, MiniLM at four depths; accuracy of a linear probe on 1,000 test items per task)
that pick was the best candidate, or within 0.3 points of it, in all six task variants, while the
LogME winner lost 4.9 and 13.2 points on digits (it preferred last layers to layer 6).

The choice is made on the training split only (after any few-shot sampling), never on the test
set, so the test accuracy that follows is still an honest estimate.  The chosen candidate's
features are then already in the cache: a linear probe after ranking costs almost nothing more.

The rule for the strategy comes from the strategies study in BENCHMARKS.md (section
"strategies": spam with minilm-l6 and MNIST-5k with efficientnet-lite0, 8-10 labels per class
and the 80/20 split of 1,000 e-mails / 2,000 digits, 3 seeds, every strategy with its defaults).
There LoRA reached the best accuracy, or within 1 point of it, in all four variants, 3 to 8
points above the linear probe (spam 80/20: 0.967 vs 0.925; spam 8 per class: 0.860 vs 0.832,
full fine-tuning 0.870; MNIST 80/20: 0.952 vs 0.911; MNIST 10 per class: 0.842 vs 0.759), while
``lp-ft`` stayed below plain fine-tuning in all four.  So:

* fewer than :data:`FINETUNE_FROM_PER_CLASS` labelled items in the smallest class -> ``linear-probe``
  (the study has no evidence below 8 per class, and the probe trains in seconds);
* otherwise -> :data:`FINETUNE_STRATEGY` (``lora``), or ``finetune`` when PEFT is not installed;
* except when the chosen candidate is an intermediate layer (``model@L``): the study fine-tuned
  last layers only, and fine-tuning from an inner layer of EfficientNet-Lite0 fell far below the
  probe on the same MNIST-5k split (layer 4: 0.304 vs 0.856, layer 6: 0.789 vs 0.937; section
  "transferability"), so such a candidate keeps the probe.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from .data.dataset import Dataset
from .errors import UserInputError

__all__ = ["AutoChoice", "choose", "default_candidates", "choose_strategy", "FINETUNE_FROM_PER_CLASS", "AUTO_SCORES"]

#: The scores that order the candidates: the first decides, the next breaks ties (module doc).
AUTO_SCORES = ("knn", "logme")

#: Smallest class size from which ``auto`` fine-tunes instead of probing (see the module doc).
FINETUNE_FROM_PER_CLASS = 8
FINETUNE_STRATEGY = "lora"
FALLBACK_STRATEGY = "finetune"  # without PEFT
#: Ranking scores at most this many training items (stratified): the scores settle well before.
RANK_MAX_ITEMS = 2000

# Per modality: the zoo candidates tried when the user names none.  EfficientNet's layer 6 is
# among them because on small, low-resolution images (digits) it beats the last layer by a
# wide margin (BENCHMARKS.md, probe section); text keeps MiniLM's last and a middle layer.
_DEFAULTS = {
    "text": ["minilm-l6", "minilm-l6@4"],
    "image": ["efficientnet-lite0", "efficientnet-lite0@6", "efficientnet-lite1"],
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
    """

    model: str
    layer: int | None
    strategy: str
    strategy_chosen: bool
    score: str
    ranking: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

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


def _evidence() -> str:
    return ("in the strategies study of BENCHMARKS.md (spam and MNIST-5k, 8-10 labels per class and 80/20, "
            "3 seeds) LoRA was the best or within 1 point of the best in every variant, 3 to 8 points above "
            "the linear probe")


def choose_strategy(train: Dataset, layer: int | None = None) -> tuple[str, str]:
    """``(strategy, reason)`` from the size of the smallest class and the chosen layer (see the module doc)."""
    import importlib.util

    counts = Counter(train.labels)
    smallest = min(counts.values())
    if smallest < FINETUNE_FROM_PER_CLASS:
        return "linear-probe", (
            f"linear-probe: the smallest class has {smallest} labelled training items, fewer than "
            f"{FINETUNE_FROM_PER_CLASS}: the strategies study in BENCHMARKS.md has no evidence that fine-tuning "
            "helps below that, and a linear probe on frozen features trains in seconds.")
    if layer is not None:
        return "linear-probe", (
            f"linear-probe: the chosen candidate is an intermediate layer ({layer}); fine-tuning from an inner "
            "layer fell far below the probe in BENCHMARKS.md (EfficientNet-Lite0 on MNIST-5k, layer 4: 0.304 "
            "vs 0.856; layer 6: 0.789 vs 0.937, on 1,000 test digits), and the strategies study fine-tuned last layers only.")
    if importlib.util.find_spec("peft") is None:
        return FALLBACK_STRATEGY, (
            f"{FALLBACK_STRATEGY}: every class has at least {FINETUNE_FROM_PER_CLASS} labelled training items "
            f"(smallest: {smallest}); {_evidence()}, but PEFT is not installed (pip install 'transferkit[lora]'), "
            "so the whole network is fine-tuned instead (in that study 1 point below LoRA on spam 80/20 and 1 above it at 8 per class, 2.5 and 7.4 points below it on MNIST).")
    return FINETUNE_STRATEGY, (
        f"{FINETUNE_STRATEGY}: every class has at least {FINETUNE_FROM_PER_CLASS} labelled training items "
        f"(smallest: {smallest}); {_evidence()}. It trains 0.3% of the backbone's parameters, and on a CPU it "
        "takes minutes where the probe takes seconds.")


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
                             hint="give layers as candidates instead, e.g. --models efficientnet-lite0@6,efficientnet-lite0")
    log(f"auto: ranking {len(cands)} candidates on the training split: {', '.join(cands)}")
    result = rank(train, cands, scores=AUTO_SCORES, max_items=RANK_MAX_ITEMS, seed=seed,
                  batch_size=batch_size, backbone_options=backbone_options, cache=cache, progress=progress,
                  log=None, backend=backend)
    if rank_dir:
        result.write(rank_dir)
    best = result.best
    ranking = [{"candidate": r.candidate, "model": r.model, "layer": r.layer, "scores": r.scores,
                "seconds": r.seconds} for r in result.rows]
    reasons = [_model_reason(result)]
    user_strategy = strategy not in (None, "auto")
    if user_strategy:
        name = strategy
        reasons.append(f"{strategy}: named by the user.")
    else:
        name, why = choose_strategy(train, layer=best.layer)
        reasons.append(why)
    return AutoChoice(model=best.model, layer=best.layer, strategy=name, strategy_chosen=not user_strategy,
                      score=AUTO_SCORES[0], ranking=ranking, reasons=reasons, seconds=round(time.perf_counter() - t, 3))


def _model_reason(result) -> str:
    rows = result.rows
    best = rows[0]
    knn, logme = best.scores.get("knn"), best.scores.get("logme")
    line = (f"{best.candidate}: the highest leave-one-out 5-NN accuracy of {len(rows)} candidates on "
            f"{result.data['n_items']} training items ({knn:.1%}")
    if len(rows) > 1:
        nxt = rows[1]
        line += f"; next {nxt.candidate} {nxt.scores['knn']:.1%}"
        if nxt.scores["knn"] == knn:
            line += f", a tie that LogME broke ({logme:.4f} vs {nxt.scores['logme']:.4f})"
    line += ("). Each item is classified by its 5 most similar other items on the frozen features; in the "
             "transferability study of BENCHMARKS.md this pick was the best candidate, or within 0.3 points "
             "of it, in all six task variants, where the LogME winner lost up to 13 points.")
    if logme is not None:
        line += f" Its LogME is {logme:.4f}."
    return line
