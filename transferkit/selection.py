"""Choose the model a user receives, on the training data only.

The pipeline fits the strategy the user asked for (the *transfer model*, which the verdict
judges against the controls).  Beside it stand cheap candidates that read the same training
items: the linear probe on the pre-trained features, the ``hybrid`` (pre-trained + hand-made
features) and the ``classical`` model (no transfer).  The one delivered is the candidate with the
best score on the training data, by one of two protocols, never by the test set:

- ``cv``: when the transfer model is the linear probe, every candidate is a linear head whose
  regularisation was chosen by cross-validation with the same folds (same items, same seed):
  their best cross-validation scores are compared as they are (no extra fit).
- ``holdout``: otherwise, on a validation part of the training items, held out by the fit
  itself (fine-tuning's validation split, :meth:`Strategy.validation_items`) or, for a strategy
  that holds nothing out, a stratified fifth of the training items, a clone of the strategy
  fitted on the rest (a fine-tuning too, from the pre-trained weights, up to
  :data:`MAX_REFIT_TUNING` items: below that a fine-tuning holds out nothing, and only a second
  run can say whether it beat the probe); the candidates are fitted on the rest and all are
  scored on that part with the task's proper score (log-likelihood, R², per-label log-loss).
  The chosen candidate, if it is not the transfer model, is refitted on all the training items.

No selection (the transfer model is delivered) for strategies that adapt to a target domain
(the training data is the source: its scores say nothing about the target), for zero-shot (no
label was read), or when there are too few items to score anything.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backbones import get_backbone
from .classical import BY_MODALITY, CV_METRIC, cv_score
from .config import FitConfig
from .data.dataset import Dataset
from .data.split import split_indices
from .errors import UserInputError
from .evidence import new_model
from .model import TransferModel
from .strategies import STRATEGIES
from .strategies.base import Strategy, TransferContext
from .tasks import get_task

Log = Callable[[str], None]

#: The cheap candidates beside the transfer model, in order of preference on equal scores
#: (the transfer model first: on a tie, what the user asked for).
CANDIDATES = ("linear-probe", "hybrid", "classical")

#: What the holdout protocol's score measures, per task (higher is better).
HOLDOUT_METRIC = {"classification": "mean log-likelihood of the true class on the held-out items",
                  "regression": "R² on the held-out items",
                  "multi-label": "minus the mean per-label log-loss on the held-out items"}

#: What both protocols' scores measure, in a few words (higher is better).
SHORT_METRIC = {"classification": "validation log-likelihood", "regression": "validation R²",
                "multi-label": "minus the per-label validation log-loss"}

#: A fine-tuning that held out no validation items (a small training set) is scored by a second
#: fine-tuning, from the pre-trained weights, on four fifths of its items, up to this many
#: training items: on so few the second run costs little, and without it nothing would say
#: whether the fine-tuning beat the probe (the issue's LoRA at 10 images per class ended at 0.28).
MAX_REFIT_TUNING = 2000

#: The fewest held-out items the holdout protocol scores on (and at least two per class).
MIN_HELDOUT = 10


@dataclass
class Candidate:
    """One model that could be delivered: its name, the fitted strategy and the context it
    predicts in, and its score on the training data (``None``: could not be scored)."""

    name: str
    strategy: Strategy
    ctx: TransferContext
    score: float | None = None
    transfer: bool = False
    #: fitted on all the training items (not only on the part outside the held-out items)
    on_all: bool = False

    def to_dict(self, chosen: str) -> dict[str, Any]:
        return {"name": self.name, "strategy": self.strategy.name, "transfer": self.transfer,
                "score": None if self.score is None else round(float(self.score), 6), "chosen": self.name == chosen}


@dataclass
class Selection:
    """The outcome: the chosen candidate, every candidate with its score, and how it was chosen."""

    chosen: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    protocol: str = "none"
    metric: str | None = None
    reason: str = ""
    n_items: int = 0
    seconds: float = 0.0
    #: the delivered model when a candidate other than the transfer model is chosen
    model: TransferModel | None = None

    @property
    def is_transfer(self) -> bool:
        return self.chosen.transfer

    def fitted_on_all(self, name: str) -> tuple[Strategy, TransferContext] | None:
        """The candidate ``name`` (a cheap one) as fitted on all the training items, with its
        context, or ``None`` (not a candidate, or fitted on part of them)."""
        c = next((c for c in self.candidates if c.name == name and not c.transfer and c.on_all), None)
        return None if c is None else (c.strategy, c.ctx)

    def notes(self) -> list[str]:
        """The run's note when another model than the transfer model is delivered."""
        transfer = next((c for c in self.candidates if c.transfer), None)
        if self.is_transfer or transfer is None:
            return []
        score = "no score" if transfer.score is None else f"{transfer.score:.4f}"
        return [f"{transfer.name} scored {score} on the training data ({self.metric}), below {self.chosen.name} "
                f"({self.chosen.score:.4f}): {self.chosen.name} is the model delivered (predict, serve and "
                f"tk.load use it); the verdict still judges {transfer.name}, whose weights stay in the run."]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.chosen.name, "strategy": self.chosen.strategy.name, "chosen_by": self.reason,
                "protocol": self.protocol, "metric": self.metric, "n_items": self.n_items,
                "candidates": [c.to_dict(self.chosen.name) for c in self.candidates],
                "seconds": round(self.seconds, 3)}


def holdout_score(task: str, y: np.ndarray, outputs: np.ndarray) -> float:
    """The task's proper score of ``outputs`` on held-out items with encoded labels ``y`` (higher
    is better): classification the mean log-probability of the true class, regression R², multi-
    label minus the mean per-label binary log-loss.  Probabilities are clipped at 1e-12."""
    eps = 1e-12
    if task == "classification":
        p = np.clip(np.asarray(outputs, np.float64)[np.arange(len(y)), np.asarray(y, np.int64)], eps, 1.0)
        return float(np.mean(np.log(p)))
    if task == "regression":
        y = np.asarray(y, np.float64)
        sse = float(np.sum((y - np.asarray(outputs, np.float64)) ** 2))
        sst = float(np.sum((y - y.mean()) ** 2))
        return 1.0 - sse / sst if sst > 0 else -sse / len(y)
    p = np.clip(np.asarray(outputs, np.float64), eps, 1 - eps)
    y = np.asarray(y, np.float64)
    return -float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def _why_not(strategy: Strategy, train: Dataset | None) -> str | None:
    """Why no selection runs for this fit, or ``None``."""
    if train is None or not train.labels or not type(strategy).needs_labels:
        return f"no selection: {strategy.name} learns from no label, so there is nothing to score candidates on"
    if type(strategy).needs_target:
        return (f"no selection: {strategy.name} adapts to the unlabelled target domain, and scores on the labelled "
                "source items would not say which model does best there")
    if train.modality not in BY_MODALITY:
        return f"no selection: there are no hand-made features for {train.modality} data to build candidates from"
    return None


def select_model(strategy: Strategy, model: TransferModel, train: Dataset | None, cfg: FitConfig,
                 say: Log) -> Selection:
    """The model to deliver among the fitted transfer ``strategy`` (of ``model``) and the cheap
    candidates, chosen on ``train`` alone (see the module's docstring).  The returned
    :class:`Selection`'s chosen candidate is fitted on all of ``train``."""
    t = time.perf_counter()
    transfer = Candidate(cfg.strategy, strategy, model.ctx, transfer=True)
    why = "no selection: select is off (the transfer model is delivered)" if not cfg.select else _why_not(strategy,
                                                                                                       train)
    if why:
        return Selection(transfer, [transfer], reason=why, seconds=time.perf_counter() - t)
    task = strategy.task_
    # The candidates read the pre-trained backbone (a fresh one where the strategy tuned it) through
    # a model of their own, which becomes the delivered model if one of them is chosen; the
    # on-disk feature cache makes the features of the untouched backbone free to read again.
    backbone = get_backbone(cfg.model, **cfg.backbone_options) if strategy.tunes_backbone else model.backbone
    host = new_model(backbone, strategy.clone(), cfg)
    ctx = host.ctx
    names = [n for n in CANDIDATES if n != strategy.name]
    params = _shared_params(strategy)
    if strategy.name == "linear-probe" and cv_score(task, strategy.fit_info()) is not None:
        sel = _by_cv(transfer, names, params, train, ctx, task, cfg, say)
    else:
        sel = _by_holdout(transfer, names, params, train, ctx, task, cfg, say)
    sel.seconds = time.perf_counter() - t
    if not sel.is_transfer:
        host.strategy = sel.chosen.strategy
        sel.model = host
    return sel


def _shared_params(strategy: Strategy) -> dict[str, Any]:
    """Options the candidates take from the transfer strategy: the same folds and class weights."""
    params = strategy.get_params()
    return {k: params[k] for k in ("cv", "class_weight") if k in params}


def _candidate(name: str, params: dict[str, Any]) -> Strategy:
    cls = STRATEGIES.get(name)
    takes = set(cls.params_class().names())
    return cls.from_params({k: v for k, v in params.items() if k in takes})


def _pick(candidates: list[Candidate]) -> Candidate:
    """The best-scored candidate; on equal scores the earlier one (the transfer model first)."""
    scored = [c for c in candidates if c.score is not None and np.isfinite(c.score)]
    if not scored:
        return candidates[0]
    best = scored[0]
    for c in scored[1:]:
        if c.score > best.score + 1e-12:
            best = c
    return best


def _by_cv(transfer: Candidate, names: list[str], params: dict[str, Any], train: Dataset, ctx: TransferContext,
           task: str, cfg: FitConfig, say: Log) -> Selection:
    transfer.score = cv_score(task, transfer.strategy.fit_info())
    candidates = [transfer]
    for name in names:
        say(f"selection: fitting the {name} candidate on the training items …")
        s = _candidate(name, params).fit(train, ctx)
        candidates.append(Candidate(name, s, ctx, cv_score(task, s.fit_info()), on_all=True))
    chosen = _pick(candidates)
    folds = (transfer.strategy.fit_info() or {}).get("cv_folds")
    how = "leave-one-out" if task == "regression" else f"{folds}-fold" if folds else "k-fold"
    reason = (f"cross-validation on the {len(train)} training items ({how}; the same folds for every candidate, "
              f"each at its best regularisation): the best {SHORT_METRIC[task]}")
    return Selection(chosen, candidates, "cv", CV_METRIC[task], reason, len(train))


def _heldout(strategy: Strategy, train: Dataset, cfg: FitConfig) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """``(fit_idx, val_idx, refit)``: the held-out items (the strategy's own validation split, or a
    stratified fifth for a cheap strategy, ``refit`` True), or ``None`` when there are too few."""
    n = len(train)
    val = strategy.validation_items()
    if val is not None and len(val):
        val = np.unique(val)
        fit = np.setdiff1d(np.arange(n), val)
        refit = False
    elif strategy.tunes_backbone and n > MAX_REFIT_TUNING:
        return None  # a second fine-tuning of this many items only to score it: too costly
    else:
        if n < 2 * MIN_HELDOUT:
            return None
        try:
            fit_l, val_l = split_indices(train, test_size=0.2, seed=cfg.seed)
        except (UserInputError, ValueError):  # a split the labels cannot make: no holdout
            return None
        fit, val, refit = np.asarray(fit_l), np.asarray(val_l), True
    if len(val) < MIN_HELDOUT:
        return None
    if train.task == "classification":
        labels = [train.labels[i] for i in val]
        if min(labels.count(c) for c in set(train.labels)) < 2 or len(set(labels)) < len(set(train.labels)):
            return None
    return fit, val, refit


def _by_holdout(transfer: Candidate, names: list[str], params: dict[str, Any], train: Dataset,
                ctx: TransferContext, task: str, cfg: FitConfig, say: Log) -> Selection:
    split = _heldout(transfer.strategy, train, cfg)
    if split is None:
        why = ("no selection: too few held-out items to score candidates on (at least "
               f"{MIN_HELDOUT}, two of every class)")
        if transfer.strategy.tunes_backbone and transfer.strategy.validation_items() is None and \
                len(train) > MAX_REFIT_TUNING:
            why = (f"no selection: {transfer.strategy.name} held out no validation items (val_fraction 0), and a "
                   f"second fine-tuning of {len(train)} items only to score it would double the cost")
        return Selection(transfer, [transfer], reason=why)
    fit_idx, val_idx, refit = split
    fit_ds, val_ds = train.subset(fit_idx.tolist()), train.subset(val_idx.tolist())
    t = get_task(task)
    classes = list(transfer.strategy.classes_)
    y_val = t.encode(list(val_ds.labels), classes)
    if refit:  # the transfer strategy held nothing out: a clone fitted on the rest scores it
        say(f"selection: {transfer.strategy.name} refitted on {len(fit_ds)} items to score it on {len(val_ds)} …")
        clone = transfer.strategy.clone()
        # a clone that tunes a backbone gets a fresh pre-trained one, and no checkpoints (the
        # transfer model's would resume it)
        cctx = (new_model(get_backbone(cfg.model, **cfg.backbone_options), clone, cfg).ctx
                if clone.tunes_backbone else transfer.ctx)
        clone.fit(fit_ds, cctx)
        transfer.score = _score(task, clone, val_ds, cctx, y_val, classes)
    else:
        transfer.score = _score(task, transfer.strategy, val_ds, transfer.ctx, y_val, classes)
    candidates = [transfer]
    for name in names:
        say(f"selection: the {name} candidate, fitted on {len(fit_ds)} items, scored on {len(val_ds)} …")
        try:
            s = _candidate(name, params).fit(fit_ds, ctx)
        except (UserInputError, ValueError) as e:  # a candidate that cannot learn this part is not chosen
            candidates.append(Candidate(name, _candidate(name, params), ctx, None))
            candidates[-1].strategy.info_ = {"error": str(e)}
            continue
        candidates.append(Candidate(name, s, ctx, _score(task, s, val_ds, ctx, y_val, classes)))
    chosen = _pick(candidates)
    if not chosen.transfer:
        say(f"selection: {chosen.name} chosen; refitting it on all {len(train)} training items …")
        chosen.strategy, chosen.on_all = _candidate(chosen.name, params).fit(train, ctx), True
    own = "the fine-tuning's own validation split" if not refit else f"a stratified fifth (seed {cfg.seed})" + (
        f"; {transfer.strategy.name} fine-tuned again from the pre-trained weights on the rest to score it"
        if transfer.strategy.tunes_backbone else "")
    reason = (f"{len(val_ds)} training items held out ({own}), every candidate fitted on the other {len(fit_ds)}"
              + ("" if chosen.transfer else " and the chosen one refitted on all of them")
              + f": the best {SHORT_METRIC[task]}")
    return Selection(chosen, candidates, "holdout", HOLDOUT_METRIC[task], reason, len(val_ds))


def _score(task: str, s: Strategy, data: Dataset, ctx: TransferContext, y: np.ndarray, classes: list[str]) -> float:
    out = s.predict_outputs(data, ctx)
    if task != "regression" and list(s.classes_) != classes:
        out = out[:, [list(s.classes_).index(c) for c in classes]]
    return holdout_score(task, y, out)


def delivered_metrics(cfg: FitConfig, selection: Selection, transfer_test: dict[str, Any], outputs: Any,
                      y_test: np.ndarray, delivered: TransferModel) -> dict[str, Any]:
    """metrics.json's ``delivered``: the selection's outcome (name, strategy, ``chosen_by``, the
    candidates' training-data scores) and the delivered model's test metrics (``test``, the same
    keys as the transfer model's; the transfer model's own where it was chosen).  ``outputs``:
    the delivered model's test :class:`~transferkit.tasks.Outputs`."""
    out = selection.to_dict()
    if selection.is_transfer:
        out["test"] = transfer_test
        return out
    task = get_task(cfg.task)
    test = task.metrics(y_test, outputs.values, list(delivered.strategy.classes_), thresholds=outputs.thresholds,
                        n_boot=cfg.n_boot, seed=cfg.seed)
    test.pop("predictions", None)
    out["test"] = test
    return out
