"""What a fit is compared with: the no-transfer controls, and for unlabelled target data, the
domain distance and what adapting bought over the source-only model.

Both take a fitted strategy and the resolved :class:`~transferkit.config.FitConfig`; the
pipeline turns what they return into the metrics and the verdict.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .backbones import get_backbone
from .backbones.base import Backbone
from .classical import CV_FOLDS
from .config import FitConfig
from .controls import BASELINES, baselines_for, control_name
from .data.dataset import Dataset
from .evaluation import classification_metrics, transfer_verdict
from .model import TransferModel
from .scores.domain import domain_shift
from .strategies.auto_adapt import candidate_evidence
from .strategies.base import Strategy, TransferContext
from .tasks import Outputs, get_task
from .tasks.linear import class_weights
from .training import distributed

Log = Callable[[str], None]


def new_model(backbone: Backbone, strategy: Strategy, cfg: FitConfig, *, progress: bool | None = None,
              target: Dataset | None = None, checkpoints: str | Path | None = None) -> TransferModel:
    """A :class:`TransferModel` set up as the config says: cache, batch size, backend, seed,
    device, target data, and where a strategy that trains checkpoints (``None``: nowhere)."""
    model = TransferModel(backbone, strategy, cache=cfg.cache, batch_size=cfg.batch_size, progress=progress,
                          backend=cfg.backend)
    ctx = model.ctx
    ctx.seed, ctx.device, ctx.target = cfg.seed, str(distributed.device()), target
    if checkpoints is not None:
        ctx.checkpoint_dir, ctx.resume = Path(checkpoints), cfg.resume
    return model


def aligned(fitted: Strategy, proba: np.ndarray, classes: list[str]) -> np.ndarray:
    """``proba`` of ``fitted`` (``(N, C)``, or ``(N, L)`` per-label for multi-label) with its
    columns in the order of ``classes``."""
    if list(fitted.classes_) == list(classes):
        return proba
    return proba[:, [fitted.classes_.index(c) for c in classes]]


def run_controls(strategy: Strategy, backbone: Backbone, train: Dataset | None, test: Dataset, cfg: FitConfig,
                 say: Log, progress: bool | None, target: Dataset | None = None,
                 checkpoints: str | Path | None = None,
                 classical: tuple[Strategy, TransferContext] | None = None) -> dict[str, Outputs]:
    """Test-set outputs of the controls of the fitted ``strategy``'s task, each trained on the
    same split: (a) ``random-init``, the same strategy on a randomly initialised copy of the
    backbone (adapting to the same unlabelled ``target``, if any); (b) the modality's classical
    baseline learning the task (``tfidf-logreg``, ``pixels-ridge``...); (c) for regression,
    ``mean``, the training mean for every item.  No (b) or (c) without training labels.

    ``classical``: a ``classical`` strategy (and its context) that model selection already fitted
    on these training items; where its options are the control's (the same folds, the same class
    weights), it is (b)'s very model, and its outputs are read instead of fitting it again.

    Returns:
        ``{name: Outputs(values, thresholds)}``: ``values`` in the shapes of
        :meth:`Strategy.predict_outputs` (columns in the order of ``strategy.classes_``),
        ``thresholds`` ``(L,)`` for multi-label, else ``None``.
    """
    task = strategy.task_
    out: dict[str, Outputs] = {}
    say("control: the same architecture, randomly initialised …")
    random_model = new_model(backbone.randomized(cfg.seed), strategy.clone(), cfg, progress=progress, target=target,
                             checkpoints=checkpoints)
    rs = random_model.strategy
    rs.fit(train, random_model.ctx)
    values = rs.predict_outputs(test, random_model.ctx)
    thresholds = rs.thresholds_
    if task != "regression":
        values = aligned(rs, values, strategy.classes_)
    if thresholds is not None and list(rs.classes_) != list(strategy.classes_):
        thresholds = np.asarray(thresholds)[[rs.classes_.index(c) for c in strategy.classes_]]
    out["random-init"] = Outputs(values, thresholds)
    if train is None or not train.labels:
        return out
    y = get_task(task).encode(list(train.labels), list(strategy.classes_))
    # the strategy's class_weight, for its classical control too: an unweighted control on
    # imbalanced classes would be a straw man (the random-init clone carries the option itself)
    spec = getattr(strategy, "class_weight", None)
    weights = class_weights(spec, y, list(strategy.classes_)) if task != "regression" else None
    extra = {} if weights is None else {"class_weight": weights}
    fitted = classical[0] if classical is not None else None
    same = fitted is not None and fitted.get_params() == {"cv": CV_FOLDS, "class_weight": spec}
    for name in baselines_for(train.modality, task):
        shown = control_name(name, task)
        meta = BASELINES.entry(name).meta
        own = meta["modality"] == train.modality and not meta.get("standalone")
        if own and same:  # the selection's classical candidate is this control's model, fitted
            info = fitted.fit_info()
            thresholds = None if fitted.head_.thresholds is None else np.asarray(fitted.head_.thresholds, np.float64)
            values = fitted.predict_outputs(test, classical[1])
        else:
            say("control: the training mean for every item …" if name == "mean"
                else f"control: classical baseline {shown} …")
            values, info = BASELINES.get(name)(train, y, test, cfg.seed, task=task, **extra)
            thresholds = info.get("thresholds")
        about = {k: info[k] for k in ("features", "feature_selection") if k in info}
        out[shown] = Outputs(values, thresholds, about or None)
    return out


def domain_adaptation_evidence(strategy: Strategy, model: TransferModel, train: Dataset | None, test: Dataset,
                               target: Dataset, y_test: np.ndarray, cfg: FitConfig, say: Log) -> dict[str, Any]:
    """How far the target is from the training data, and, for a domain-adaptation strategy,
    what adapting bought over the same model trained on the source alone.

    Returns ``{"shift": [{"features", "mmd2", "mmd_p_value", "a_distance", "level", "reading"}],
    "source_only": metrics, "adaptation_gain", "adaptation_gain_ci", "adaptation_verdict",
    "selection": ...}`` (the last four only for domain-adaptation strategies); ``auto_adapt``: for a
    strategy that chose among candidates, each one's criteria and test accuracy, and the regret.
    """
    if train is None:
        return {}
    say("domain distance between the training data and the unlabelled target …")
    ctx = model.ctx
    if strategy.tunes_backbone:
        # the strategy tuned the backbone in place: the pre-trained features and the source-only
        # model come from a fresh copy, which the source-only training may tune in turn
        bctx = new_model(get_backbone(cfg.model, **cfg.backbone_options), strategy.clone(), cfg,
                         target=target).ctx
    else:
        bctx = ctx
    rows = []

    def shift(name: str, fs: np.ndarray, ft: np.ndarray) -> None:
        d = domain_shift(fs, ft, n_permutations=200, max_items=1000, seed=cfg.seed)
        rows.append({"features": name, **d.to_dict()})

    shift("backbone features (before adaptation)", bctx.features(train), bctx.features(target))
    out: dict[str, Any] = {"shift": rows}
    if not type(strategy).needs_target:
        return out
    say(f"{strategy.name}: the same model trained on the source alone, for comparison …")
    source_only = strategy.source_only()
    source_only.fit(train, bctx)
    if strategy.task_ != "classification":
        out.update(_task_adaptation(strategy, source_only, ctx, bctx, test, y_test, cfg))
    else:
        p_so = aligned(source_only, source_only.predict_proba(test, bctx), strategy.classes_)
        out["source_only"] = classification_metrics(y_test, p_so, strategy.classes_, n_boot=cfg.n_boot,
                                                    seed=cfg.seed)
    if strategy.transforms_features:
        shift("source-only model's features", source_only.transform(train, bctx, domain="source"),
              source_only.transform(target, bctx))
        shift(f"adapted model's features ({strategy.name})", strategy.transform(train, ctx, domain="source"),
              strategy.transform(target, ctx))
    sel = (strategy.fit_info() or {}).get("selection")
    if sel:
        out["selection"] = sel
    if strategy.task_ != "classification":
        return out
    outputs = strategy.candidate_outputs(test, ctx, release=True)  # auto-adapt: every candidate on the test set
    if outputs:
        out["auto_adapt"] = candidate_evidence(strategy.fit_info(), outputs, y_test, cfg.test is not None)
    pred = strategy.predict_proba(test, ctx).argmax(1)
    v = transfer_verdict(y_test, pred, {"source-only": p_so.argmax(1)}, n_boot=max(cfg.n_boot, 2000), seed=cfg.seed)
    word = {"helped": "helped", "hurt": "hurt", "no-difference": "made no clear difference"}[v["verdict"]]
    out.update(adaptation_gain=v["transfer_gain"], adaptation_gain_ci=v["transfer_gain_ci"],
               adaptation_verdict=v["verdict"],
               adaptation_explanation=(f"Adapting to the unlabelled target {word}: test accuracy "
                                       f"{out['source_only']['accuracy']:.3f} source-only vs "
                                       f"{(pred == y_test).mean():.3f} adapted (gain {v['transfer_gain']:+.3f}, "
                                       f"95% interval [{v['transfer_gain_ci'][0]:+.3f}, "
                                       f"{v['transfer_gain_ci'][1]:+.3f}])."))
    return out


def _task_adaptation(strategy: Strategy, source_only: Strategy, ctx, bctx, test: Dataset, y_test: np.ndarray,
                     cfg: FitConfig) -> dict[str, Any]:
    """Source-only vs adapted on a regression or multi-label test set, on the task's primary metric:
    ``source_only`` (the task's metrics), ``adaptation_gain`` (> 0: adapting is better), its paired
    bootstrap interval, the verdict and a sentence."""
    task = get_task(strategy.task_)
    values = source_only.predict_outputs(test, bctx)
    thresholds = source_only.thresholds_
    if strategy.task_ == "multi-label" and list(source_only.classes_) != list(strategy.classes_):
        values = aligned(source_only, values, strategy.classes_)
        thresholds = np.asarray(thresholds)[[source_only.classes_.index(c) for c in strategy.classes_]]
    so = Outputs(values, thresholds)
    adapted = Outputs(strategy.predict_outputs(test, ctx), strategy.thresholds_)
    metrics = task.metrics(y_test, so.values, strategy.classes_, thresholds=so.thresholds, n_boot=cfg.n_boot,
                           seed=cfg.seed)
    v = task.verdict(y_test, adapted, {"source-only": so}, n_boot=max(cfg.n_boot, 2000), seed=cfg.seed)
    word = {"helped": "helped", "hurt": "hurt", "no-difference": "made no clear difference"}[v["verdict"]]
    key, label = task.primary, task.primary_label
    lo, hi = v["transfer_gain_ci"]
    better = "higher" if task.higher_is_better else "lower"
    gain, so_value = v["transfer_gain"], v["controls"]["source-only"][key]
    adapted_value = so_value + gain if task.higher_is_better else so_value - gain  # the gain is signed: > 0 better
    return {"source_only": metrics, "adaptation_gain": gain, "adaptation_gain_ci": [lo, hi],
            "adaptation_verdict": v["verdict"], "adaptation_metric": key,
            "adaptation_explanation": (f"Adapting to the unlabelled target {word}: test {label} {so_value:.3f} "
                                       f"source-only vs {adapted_value:.3f} adapted ({better} is better; gain "
                                       f"{gain:+.3f}, 95% interval [{lo:+.3f}, {hi:+.3f}], > 0 when adapting is "
                                       "better).")}
