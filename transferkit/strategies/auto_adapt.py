"""``auto-adapt``: domain adaptation chosen without target labels, "do not adapt" included.

The candidates (:mod:`._candidates`: the source-only probe, AdaBN on features and in the
network, input invariance, TENT, the feature methods, and within a time budget the
backbone-training ones) are each fitted on the same four fifths of the labelled source items
(stratified) and the unlabelled target, each from the pre-trained weights (a candidate that
changes the backbone gets its own copy).  Every candidate is then scored without target labels:

* SND (Saito et al., ICCV 2021) and mean entropy of its predictions on the unlabelled target;
* DEV (You et al., ICML 2019) on the held-out fifth of the source: the loss on those items
  weighted by ``p_target(x) / p_source(x)``.  The density ratio comes from one domain classifier
  on the *pre-trained* backbone features, the same weights for every candidate: the candidates are
  then compared on the same weighted items (a paired comparison), and a candidate that aligns
  its own features is not rewarded for making the domain classifier weak.  AdaBN and TENT
  models normalise each domain with its own statistics: their loss on source items is not that
  of the model the target meets, so DEV is not computed for them.

A fourth score, IM (information maximisation, as SHOT's loss: entropy of the mean target
prediction minus the mean entropy), is high for predictions that are confident *and* spread over
the classes.  The rule (``criterion``, default ``im``) picks the best candidate, but an adapting
one only if it beats source-only by more than ``margin`` (so "do not adapt" stays a choice); the
chosen candidate is refitted on every source item (``refit``) and becomes the model, its name and
options saved with it.

Why IM (measured 2026-12-07, shared 2-core CPU): on constructed cached features (two Gaussian
classes in 8 dimensions, 120 source and 100 target items, every target feature ``2 x + 3``),
source-only put the whole target in one class (accuracy 0.47) and yet had the highest SND (4.60
against adabn 3.85, mmd 3.79) and the lowest DEV (0.027 against mmd 0.267); IM ranked adabn
0.607 (accuracy 0.98), mmd 0.448 (0.97), source-only 0.000.  Without the shift, source-only
0.613 (0.98), adabn 0.607, mmd 0.219: source-only kept.  On a tiny random EfficientNet, TENT
collapsed the target to one class and had the highest SND of all.  SND and entropy reward a
collapse; DEV cannot score AdaBN, the one method known to move the digit shifts.  IM's own
weakness: it prefers predictions spread over the classes, so where the class proportions truly
change it can favour a model that evens them out.  Spam 2002 -> 2003 (minilm-l6, max_chunks=1, 300
source items, 300 unlabelled target items scored transductively; 66 min on the shared CPU), target
accuracy / SND / IM / DEV: source-only 0.850 / 4.93 / 0.505 / 0.197, adabn 0.697 / 5.08 / 0.349 /
-, mmd 0.640 / 5.25 / 0.365 / 0.824, dann 0.760 / 5.04 / 0.505 / 1.599, self-training 0.897 / 4.97
/ 0.623 / 0.098, mcc 0.880 / 5.01 / 0.684 / 0.186: SND chose mmd (wrong by 25.7 points), IM mcc
(1.7 points below the best, 3.0 above source-only), DEV self-training (the best).

Which candidates IM may choose (``Candidate.calibrated``): on the image shifts of
``benchmarks/bench_shifts.py`` (EfficientNet-Lite0 at 96 px, 1000 source and 1000 target items,
2026-12-07) IM over every candidate chose methods whose target predictions had been trained to be
confident or came from an adapter MLP (target entropy ~0): mcc-backbone on MNIST -> ink digits
(0.134, source-only 0.367), dann-backbone on MNIST -> digits (0.131), self-training on
inverted/coloured MNIST and digits -> MNIST (0.13-0.30).  Such methods maximise the very quantity
IM reads.  Restricted to the candidates whose probabilities come from a cross-validated linear
head (source-only, adabn, adabn-backbone, input-invariance), the same IM scores pick
input-invariance on MNIST -> ink digits (0.651), -> digits (0.680), -> inverted (0.925), ->
coloured (0.812) and adabn on digits -> MNIST (0.450), the best method on each of the five, and
source-only on spam (adabn scored 0.369 against 0.508).  So the others are fitted, scored and
shown ("not eligible"), and can be chosen only under ``criterion=dev``.  The backbone-trained
mcc/dann candidates are no longer in the default list (they lost 23-46 points and took minutes).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from ..alignment.selection import dev_weights, entropy, snd, weighted_risk
from ..classical import _bytes, _unbytes
from ..data.dataset import Dataset
from ..errors import UserInputError
from . import _candidates as C
from .base import STRATEGIES, Strategy, TransferContext
from .params import Params, param

RULES = ("snd", "im", "dev", "entropy")


def _check_labels(value: Any) -> str | None:
    if value == "default":
        return None
    known = C.known_labels()
    bad = [v for v in value if v not in known]
    if bad or len(set(value)) != len(value):
        return f"'default' or distinct candidates among {', '.join(known)}"
    return None


def _check_overrides(value: Any) -> str | None:
    known = C.known_labels()
    if not all(k in known and isinstance(v, dict) for k, v in value.items()):
        return f"{{candidate: {{option: value}}}} with candidates among {', '.join(known)}"
    return None


@dataclass
class AutoAdaptParams(Params):
    """Options of ``auto-adapt``."""

    candidates: Literal["default"] | list[str] = param(
        "default", "the candidates, cheap first: 'default' (every one that applies to the data and backbone and is "
                   "installed) or a list of names (source-only, adabn, adabn-backbone, mmd, ...)", check=_check_labels)
    candidate_params: dict = param({}, "{candidate: {option: value}} merged over that candidate's own options",
                                   check=_check_overrides)
    criterion: str = param("im", "how the candidate is chosen without target labels: snd (highest soft "
                                  "neighbourhood density of target predictions), im (highest entropy of the mean "
                                  "target prediction minus the mean entropy: confident and diverse), dev (lowest "
                                  "importance-weighted held-out source loss; candidates without DEV cannot win) or "
                                  "entropy (lowest)",
                           choices=RULES)
    margin: float = param(0.02, "an adapting candidate must beat source-only's criterion by more than this "
                               "(in the criterion's units) to be chosen", ge=0)
    budget_s: float = param(300.0, "seconds the expensive (backbone-training) candidates may take together, "
                                   "each run only if its estimated cost fits what is left", ge=0)
    val_fraction: float = param(0.2, "share of the source items held out (stratified) to score every candidate",
                                gt=0, lt=1)
    refit: bool = param(True, "refit the chosen candidate on every source item (false: deliver it as scored)")


@dataclass
class _Run:
    """A candidate while it is fitted and scored: the fitted strategy, its backbone (``None``:
    the run's own, untouched), seconds, and its criteria."""

    cand: C.Candidate
    strategy: Strategy | None = None
    backbone: Any = None
    seconds: float = 0.0
    estimate_s: float | None = None
    row: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


@STRATEGIES.register("auto-adapt", needs="features", target=True)
class AutoAdapt(Strategy):
    """Fits the candidate adaptation methods and keeps the one an unsupervised criterion picks.

    Data: labelled source items, unlabelled target items in ``ctx.target`` (without them: the
    linear probe).  ``ctx.features`` must read ``ctx.backbone`` (a :class:`TransferModel`'s does):
    candidates that tune the backbone get their features through it from their own copy.
    Shapes: those of the chosen candidate.  Options: :class:`AutoAdaptParams`.
    """

    name = "auto-adapt"
    description = ("tries adaptation methods (source-only probe, AdaBN, feature alignment, ...; backbone-training "
                   "ones within a time budget) and keeps one chosen without target labels (SND / DEV)")
    Params = AutoAdaptParams
    needs_target = True

    @property
    def tunes_backbone(self) -> bool:
        chosen = getattr(self, "chosen_", None)
        return chosen is not None and chosen.tunes_backbone

    # ----- fitting --------------------------------------------------------------------------------
    def _fit(self, train: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        t0 = time.perf_counter()
        target = ctx.target
        self._runs: list[_Run] = []
        if target is None or not len(target):
            self._deliver(C.CANDIDATES["source-only"], None, train, ctx)
            ctx.notes.append("auto-adapt: no unlabelled target data was given, so nothing was compared: this is "
                             "the plain linear probe.")
            self.info_ = {"choice": "source-only", "why": "no unlabelled target data", "candidates": []}
            return
        cands, left = C.resolve(self.candidates, self.candidate_params, ctx.backbone, train.modality)
        if not any(c.label == "source-only" for c in cands):  # "do not adapt" is always a choice
            cands.insert(0, C.CANDIDATES["source-only"])
        fit_idx, val_idx = self._split(y, ctx)
        part = train.subset(fit_idx) if val_idx is not None else train
        scorer = _Scorer(ctx, train, y, fit_idx, val_idx, target)
        skipped = list(left)
        spent, per_item = 0.0, None
        for cand in sorted(cands, key=lambda c: c.cost != C.CHEAP):  # cheap first, in order
            run = _Run(cand)
            if cand.cost == C.EXPENSIVE:
                if per_item is None:
                    per_item = C.seconds_per_item(ctx.backbone, train.inputs, ctx.device)
                params = self._params(cand)
                run.estimate_s = C.estimate_seconds(cand, params, len(part), len(target), per_item)
                if run.estimate_s > self.budget_s - spent:
                    skipped.append({"label": cand.label, "reason": f"estimated {run.estimate_s:.0f} s > the "
                                    f"{self.budget_s - spent:.0f} s left of budget_s={self.budget_s:g}"})
                    continue
            try:
                self._fit_candidate(run, part, ctx)
            except UserInputError as e:  # a candidate that cannot apply here: said, never fatal
                skipped.append({"label": cand.label, "reason": e.message})
                continue
            if cand.cost == C.EXPENSIVE:
                spent += run.seconds
            run.row = scorer.score(run, self._context(run, ctx))
            run.row["eligible"] = cand.calibrated or self.criterion == "dev"
            self._runs.append(run)
        rows = [r.row for r in self._runs]
        best, why = choose(rows, self.criterion, self.margin)
        chosen = self._runs[best]
        for i, r in enumerate(rows):
            r["chosen"] = i == best
        refit = self.refit and val_idx is not None
        self._deliver(chosen.cand, chosen if not refit else None, train, ctx)
        self.info_ = {"choice": chosen.cand.label, "strategy": chosen.cand.strategy, "params": self._chosen_params,
                      "criterion": self.criterion, "margin": self.margin, "why": why, "candidates": rows,
                      "skipped": skipped, "refit": refit, "n_scored_on": len(part),
                      "n_held_out": 0 if val_idx is None else len(val_idx), "n_target": len(target),
                      "dev_features": "pre-trained backbone features (one domain classifier for every candidate)",
                      "seconds": time.perf_counter() - t0}
        ctx.notes.append(f"auto-adapt: {len(rows)} candidates scored without target labels; chose "
                         f"{chosen.cand.label} ({why})" + (f"; skipped: {', '.join(s['label'] for s in skipped)}"
                                                           if skipped else "") + ".")

    def _split(self, y: np.ndarray, ctx: TransferContext) -> tuple[np.ndarray, np.ndarray | None]:
        """A stratified ``val_fraction`` of the source held out for DEV, the same for every candidate."""
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(y))
        try:
            fit_idx, val_idx = train_test_split(idx, test_size=self.val_fraction, stratify=y, random_state=ctx.seed)
        except ValueError:  # too few items per class to hold a fifth out: no DEV, every item fits
            ctx.notes.append("auto-adapt: too few source items per class to hold out a part for DEV; the candidates "
                             "were scored by their target predictions alone.")
            return idx, None
        return np.sort(fit_idx), np.sort(val_idx)

    def _params(self, cand: C.Candidate) -> dict[str, Any]:
        return dict(cand.params)

    def _new(self, cand: C.Candidate) -> Strategy:
        return STRATEGIES.get(cand.strategy).from_params(self._params(cand))

    def _context(self, run: _Run, ctx: TransferContext) -> TransferContext:
        return C.context_on(ctx, run.backbone, checkpoints=run.cand.label)

    def _fit_candidate(self, run: _Run, data: Dataset, ctx: TransferContext) -> None:
        """Fit one candidate from the pre-trained weights: its own backbone copy if it tunes it."""
        t = time.perf_counter()
        run.strategy = self._new(run.cand)
        run.backbone = C.backbone_copy(ctx.backbone) if run.strategy.tunes_backbone else None
        sub = self._context(run, ctx)
        before = ctx.backbone.cache_key()
        run.strategy.fit(data, sub)
        if ctx.backbone.cache_key() != before:  # a candidate changed the shared backbone: a bug, never silent
            raise RuntimeError(f"auto-adapt candidate {run.cand.label} changed the shared backbone without "
                               "declaring tunes_backbone")
        run.notes = list(sub.notes)
        run.seconds = time.perf_counter() - t

    def _deliver(self, cand: C.Candidate, run: _Run | None, train: Dataset, ctx: TransferContext) -> None:
        """Make ``cand`` the model on ``ctx``'s backbone: the scored fit (``run``) or a refit on every
        source item, put in place through its saved tensors as a loaded run would be."""
        if run is None:
            run = _Run(cand)
            self._fit_candidate(run, train, ctx)
        self._chosen_params = run.strategy.get_params()
        self._chosen_info = run.strategy.fit_info()
        if run.backbone is None:  # fitted on the run's own backbone, which it did not change
            self.chosen_ = run.strategy
            return
        # the other candidates scored on the pre-trained weights keep them: a copy for them
        pristine = C.backbone_copy(ctx.backbone)
        for r in self._runs:
            if r.backbone is None:
                r.backbone = pristine
        self.chosen_ = self._restore(cand.strategy, self._chosen_params, run.strategy.state_tensors(), ctx.backbone)

    def _restore(self, name: str, params: dict, tensors: dict[str, torch.Tensor], backbone) -> Strategy:
        return STRATEGIES.get(name).from_params(params).load_state(tensors, self.classes_, backbone, self.task_)

    # ----- prediction, persistence ----------------------------------------------------------------
    def _predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        return self.chosen_.predict_proba(data, ctx)

    def candidate_outputs(self, data: Dataset, ctx: TransferContext, release: bool = False) -> dict[str, np.ndarray]:
        """``{label: (N, C) probabilities}`` of every scored candidate on ``data`` (as scored, on
        the held-in source part), columns in the order of ``classes_``; ``release``: free the
        candidates (and their backbone copies) afterwards."""
        self._check_fitted()
        out = {r.cand.label: r.strategy.predict_proba(data, self._context(r, ctx)) for r in getattr(self, "_runs", [])}
        if release:
            self._runs = []
        return out

    def torch_head(self) -> torch.nn.Module:
        self._check_fitted()
        return self.chosen_.torch_head()

    def source_only(self) -> Strategy:
        """The plain linear probe: the report's source-only comparison."""
        return STRATEGIES.get("linear-probe")()

    def fit_info(self) -> dict[str, Any]:
        info = dict(getattr(self, "info_", {}))
        if getattr(self, "_chosen_info", None):
            info["chosen_fit"] = dict(self._chosen_info)
        return info

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        choice = {"strategy": self.chosen_.name, "params": self.chosen_.get_params(),
                  "label": self.info_.get("choice", self.chosen_.name)}
        return {"auto.choice": _bytes(choice),
                **{f"chosen.{k}": v for k, v in self.chosen_.state_tensors().items()}}

    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str], backbone=None,
                   task: str = "classification") -> "AutoAdapt":
        """Restore the chosen candidate (its name and options from ``auto.choice``, its tensors
        under ``chosen.``) into the freshly loaded pre-trained ``backbone``."""
        self.check_task(task)
        if "auto.choice" not in tensors:
            raise UserInputError("the saved auto-adapt run does not say which candidate it chose",
                                 hint="the weights file is incomplete: fit again")
        choice = _unbytes(tensors["auto.choice"])
        sub = {k[len("chosen."):]: v for k, v in tensors.items() if k.startswith("chosen.")}
        self.task_, self.classes_ = task, list(classes)
        self.chosen_ = self._restore(choice["strategy"], choice["params"], sub, backbone)
        self._restored(classes, task, self.chosen_.thresholds_)
        self.info_ = {"choice": choice["label"], "strategy": choice["strategy"], "params": choice["params"]}
        return self


class _Scorer:
    """Scores candidates without target labels: SND and entropy of target predictions, and DEV
    on the held-out source items with one set of importance weights for all."""

    def __init__(self, ctx: TransferContext, train: Dataset, y: np.ndarray, fit_idx: np.ndarray,
                 val_idx: np.ndarray | None, target: Dataset):
        self.seed, self.target = ctx.seed, target
        self.val = None if val_idx is None else train.subset(val_idx)
        self.y_val = None if val_idx is None else y[val_idx]
        self.w = None
        if val_idx is not None:
            f = ctx.features(train)  # pre-trained features (cached): every candidate's density ratio
            self.w = dev_weights(f[val_idx], f[fit_idx], ctx.features(target), seed=ctx.seed)

    def score(self, run: _Run, ctx: TransferContext) -> dict[str, Any]:
        p_t = run.strategy.predict_proba(self.target, ctx)
        row: dict[str, Any] = {"label": run.cand.label, "strategy": run.cand.strategy, "cost": run.cand.cost,
                               "snd": snd(p_t, seed=self.seed), "entropy": entropy(p_t),
                               "im": information(p_t), "dev": None,
                               "source_loss": None, "seconds": run.seconds, "estimate_s": run.estimate_s,
                               "target_shares": np.bincount(p_t.argmax(1), minlength=p_t.shape[1]).tolist(),
                               "notes": getattr(run, "notes", [])}
        if self.w is not None:
            p_v = run.strategy.predict_proba(self.val, ctx)
            losses = -np.log(np.clip(p_v[np.arange(len(self.y_val)), self.y_val], 1e-12, None))
            row["source_loss"] = float(losses.mean())
            row["source_accuracy"] = float((p_v.argmax(1) == self.y_val).mean())
            if C.scores_dev(run.cand, ctx.backbone):
                row["dev"] = weighted_risk(losses, self.w)["risk"]
            else:
                row["dev_note"] = "not computed: the model normalises each domain with its own statistics"
        return row


def information(proba: np.ndarray) -> float:
    """Information maximisation score of target predictions ``(m, C)`` (SHOT, Liang et al. 2020, as a
    criterion): entropy of the mean prediction minus the mean entropy; higher is confident *and*
    diverse, so a model that puts every item in one class scores low however confident it is."""
    return entropy(np.asarray(proba, np.float64).mean(0, keepdims=True)) - entropy(proba)


def choose(rows: list[dict[str, Any]], criterion: str, margin: float) -> tuple[int, str]:
    """Index of the chosen row and why.  ``rows[0]`` is source-only; an adapting candidate wins only
    by beating it by more than ``margin`` on the criterion (higher SND; lower DEV or entropy)."""
    sign = 1.0 if criterion in ("snd", "im") else -1.0
    key = criterion
    scored = [(i, sign * r[key]) for i, r in enumerate(rows) if r.get(key) is not None and r.get("eligible", True)]
    base = next((s for i, s in scored if rows[i]["label"] == "source-only"), None)
    if not scored:
        return 0, f"no candidate has a {key} score: source-only"
    i, s = max(scored, key=lambda t: t[1])
    if base is not None and rows[i]["label"] != "source-only" and s - base <= margin:
        i = next(j for j, r in enumerate(rows) if r["label"] == "source-only")
        return i, f"no candidate beats source-only's {key} by more than {margin:g}"
    word = {"snd": "highest SND", "im": "highest information maximisation score", "dev": "lowest DEV risk",
            "entropy": "lowest target entropy"}[criterion]
    return i, f"{word} ({rows[i][key]:.4f})"


def candidate_evidence(info: dict[str, Any], outputs: dict[str, np.ndarray], y_test: np.ndarray,
                       labelled_target: bool) -> dict[str, Any]:
    """metrics.json ``domain.auto_adapt``: every candidate's criteria (from ``info``, the fit's
    :meth:`AutoAdapt.fit_info`) and its test accuracy from ``outputs`` (``{label: (N, C)}``); with
    a labelled target test set, the criterion's choice against the best candidate on it (the
    regret, in accuracy points) and a sentence saying so."""
    rows = []
    for r in info.get("candidates", []):
        p = outputs.get(r["label"])
        acc = None if p is None else float((p.argmax(1) == y_test).mean())
        keys = ("label", "strategy", "cost", "snd", "entropy", "im", "dev", "source_loss", "source_accuracy", "seconds",
                "chosen", "eligible")
        rows.append({k: r.get(k) for k in keys} | {"test_accuracy": acc})
    out: dict[str, Any] = {"criterion": info.get("criterion"), "choice": info.get("choice"), "why": info.get("why"),
                           "candidates": rows, "skipped": info.get("skipped", []), "refit": info.get("refit"),
                           "labelled_target": labelled_target}
    scored = [r for r in rows if r["test_accuracy"] is not None]
    chosen = next((r for r in scored if r["chosen"]), None)
    if not scored or chosen is None:
        return out
    best = max(scored, key=lambda r: r["test_accuracy"])
    regret = 100.0 * (best["test_accuracy"] - chosen["test_accuracy"])
    where = ("the labelled target test set" if labelled_target else
             "the test set (split from the source: not target data)")
    out.update(best=best["label"], regret_points=regret, explanation=(
        f"The criterion ({info.get('criterion')}) chose {chosen['label']} (test accuracy "
        f"{chosen['test_accuracy']:.3f}); the best candidate on {where} was {best['label']} "
        f"({best['test_accuracy']:.3f}): " + (f"the criterion was wrong by {regret:.1f} points." if regret > 0 else
                                              "the criterion chose the best candidate.")
        + ("" if labelled_target else " Pass --test with labelled target data to see how it does on the target.")))
    return out
