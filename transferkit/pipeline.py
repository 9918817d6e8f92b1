"""``fit``: the pipeline every command walks, left to right, in short named stages.

validate -> resolve -> backbone and strategy -> fit -> evaluate (+ domain evidence) -> controls and
verdict -> write the run directory.

The configuration is resolved once (defaults, ``--model auto``'s choice, the strategy's full
typed parameters) into an immutable :class:`~transferkit.config.FitConfig`; that resolved config
is what ``config.json`` holds, so ``fit --config RUN/config.json`` re-runs the fit exactly.

Under ``torchrun`` or ``accelerate launch`` every process walks the whole pipeline: the same
data, split and backbone; strategies that train share each step through the one training loop
(:mod:`.training.distributed`), the transfer run and its random-init control alike; evaluation
and the classical control are computed by every process, identically (they are cheap next to
training, and a process that skipped them could not join the control's training).  Process 0
alone prints, locks and writes the run directory; the others wait for it and return the same model.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backbones import get_backbone
from .backbones.base import Backbone
from .config import DEFAULT_MODELS, FitConfig
from .data import PreparedData, few_shot_sample, prepare_data, stratified_split
from .data.dataset import Dataset
from .errors import UserInputError, shown
from .evaluation import majority_note
from .evidence import domain_adaptation_evidence, new_model, run_controls
from .features import ExtractionStats, extract_features
from .model import TransferModel
from .report import render_report
from .runs import DELIVERED_WEIGHTS, REFERENCE_MAX_ROWS, RunDir, now_iso, versions
from .runs.hub_card import README, hub_readme
from .runs.loading import remember_user_backbone
from .selection import delivered_metrics, select_model
from .strategies import STRATEGIES
from .strategies.base import Strategy
from .tasks import Outputs, get_task
from .tracking import FitTracking
from .training import distributed
from .training.checkpoint import prune_after_run

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Splits:
    """The data of one fit, validated: ``train`` is ``None`` for zero-shot on a test set alone."""

    prepared: PreparedData
    train: Dataset | None
    test: Dataset
    target: Dataset | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def modality(self) -> str:
        return self.test.modality

    @property
    def n_train(self) -> int:
        return 0 if self.train is None else len(self.train)

    @property
    def task(self) -> str:
        """What the labels are (``classification``, ``regression``, ``multi-label``)."""
        return self.test.task


def fit(config: FitConfig | None = None, *, train: Dataset | None = None, test: Dataset | None = None,
        log: Log | None = _stderr, progress: bool | None = None, **overrides: Any) -> TransferModel:
    """Adapt a pre-trained backbone to labelled data, with controls, verdict and run directory.

    Args:
        config: a :class:`FitConfig`; keyword ``overrides`` set or replace its fields
            (``tk.fit(data="emails.jsonl", text_columns="subject,body", out="runs/spam")``).
        train: an in-memory :class:`Dataset` instead of ``config.data`` (a path here is taken
            as ``data``).
        test: an in-memory test set instead of ``config.test`` (a path here is taken as ``test``,
            and recorded in config.json like any other field).
        log: where progress lines go (``None``: silent).

    Returns:
        The fitted :class:`TransferModel`, with ``.metrics`` and (when ``out`` is set) ``.run_dir``.
    """
    if isinstance(train, (str, os.PathLike)):
        overrides["data"], train = train, None
    if isinstance(test, (str, os.PathLike)):
        overrides["test"], test = test, None
    cfg = FitConfig.from_dict({**(config.to_dict() if config else {}), **overrides})
    if len(cfg.label_columns) > 1:
        raise UserInputError(f"several label columns ({', '.join(cfg.label_columns)}) make a multi-task fit",
                             hint="call transferkit.fit (transferkit.multitask.fit), which fits them on one backbone")
    distributed.init()  # under a launcher: join the other processes; alone: nothing
    main = distributed.is_main()
    say = log if log and main else (lambda _m: None)
    progress = progress if main else False
    run = RunDir(cfg.out) if cfg.out else None
    tracking = FitTracking.open(cfg, active=main)  # --track: its library loads now, before any work
    with run.lock() if run is not None and main else contextlib.nullcontext(), tracking:
        return _fit(cfg, train, test, say, progress, run, tracking)


def _fit(cfg: FitConfig, train: Dataset | None, test: Dataset | None, say: Log, progress: bool | None,
         run: RunDir | None, tracking: FitTracking) -> TransferModel:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    t = time.perf_counter()
    named = None if cfg.strategy in (None, "auto") else STRATEGIES.get(cfg.strategy)  # the one look-up
    splits = validate_stage(cfg, named, train, test, say)
    timings["validate_s"] = time.perf_counter() - t

    cfg, strategy, auto = resolve_stage(cfg, named, splits, say, progress)
    tracking.start(cfg)
    if auto is not None:
        timings["auto_rank_s"] = auto.seconds
        splits.notes += [f"Chosen automatically — {r}" for r in auto.reasons]
    say(f"data: {splits.n_train} training and {len(splits.test)} test items, {len(splits.test.classes)} classes "
        f"({splits.modality})" + (f"; {len(splits.target)} unlabelled target items" if splits.target else ""))

    model = build_stage(cfg, strategy, splits, progress, run)

    t = time.perf_counter()
    say(f"fitting {cfg.strategy} on {model.backbone.describe()} …")
    with tracking.observe():  # --track: the training loop's steps and epochs
        strategy.fit(splits.train, model.ctx)
    outputs = strategy.predict_outputs(splits.test, model.ctx)
    timings["fit_s"] = time.perf_counter() - t
    timings["extract_s"] = sum(s.seconds for s in model.extraction_log)

    metrics, y_test = evaluate_stage(cfg, splits, strategy, outputs)
    notes = (splits.notes + _extraction_notes(model.backbone, model.extraction_log) + model.ctx.notes
             + majority_note(metrics["test"], cfg.strategy))  # below a constant answer: said
    if splits.target is not None:
        t = time.perf_counter()
        metrics["domain"] = domain_adaptation_evidence(strategy, model, splits.train, splits.test, splits.target,
                                                       y_test, cfg, say)
        timings["domain_s"] = time.perf_counter() - t
    t = time.perf_counter()
    selection = select_model(strategy, model, splits.train, cfg, say)
    delivered = model if selection.model is None else selection.model
    d_out = Outputs(outputs, strategy.thresholds_) if delivered is model else Outputs(
        delivered.strategy.predict_outputs(splits.test, delivered.ctx), delivered.strategy.thresholds_)
    metrics["delivered"] = delivered_metrics(cfg, selection, metrics["test"], d_out, y_test, delivered)
    notes += selection.notes()
    timings["select_s"] = time.perf_counter() - t
    if cfg.control:
        t = time.perf_counter()
        metrics.update(controls_stage(cfg, splits, strategy, model.backbone, outputs, y_test, say, progress,
                                      run, delivered=None if delivered is model else d_out,
                                      classical=selection.fitted_on_all("classical")))
        timings["controls_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_start

    model.metrics = _metrics(cfg, splits, strategy, metrics, auto, timings, notes)
    model.card = _card(cfg, splits, model, delivered)
    from .serve.prediction_drift import prediction_reference  # here: `import transferkit` loads no serve module

    # what the served model's predictions are compared with (the drift monitor): the delivered one's
    model.card["prediction_reference"] = prediction_reference(cfg.task, d_out.values, strategy.classes_,
                                                              d_out.thresholds, seed=cfg.seed)
    if delivered is not model:
        delivered.metrics, delivered.card, delivered.transfer = model.metrics, model.card, model
    if run is not None:
        # process 0 writes; the others wait and get the card as written (or its error)
        model.card = distributed.on_main(lambda: write_stage(run, cfg, model, splits, delivered))
        model.run_dir = run.path
        delivered.card, delivered.run_dir = model.card, run.path
    tracking.finish(model.metrics, model.run_dir)
    m = model.metrics
    task = get_task(cfg.task)
    key = task.primary
    verdict = m.get("verdict")
    say(f"test {task.primary_label} {m['test'][key]:.3f}" + (
        f"; best control {m['control']['name']} {m['control'][key]:.3f}; verdict: {verdict}"
        if verdict else ""))
    if delivered is not model:
        d = m["delivered"]
        say(f"delivered: {d['name']} (test {task.primary_label} {d['test'][key]:.3f}), chosen by {d['chosen_by']}")
    return delivered


# ----- stages -------------------------------------------------------------------------------
def validate_stage(cfg: FitConfig, strategy_cls: type[Strategy] | None, train: Dataset | None,
                   test: Dataset | None, say: Log) -> Splits:
    """Read and check every data source before any model is loaded; split, few-shot sample,
    and read the unlabelled target data.  ``strategy_cls`` is the named strategy (``None`` for
    the default or ``auto``): what data it needs."""
    learns_nothing = strategy_cls is not None and not strategy_cls.needs_labels  # zero-shot
    test_only = learns_nothing and train is None and cfg.data is None and (test is not None or cfg.test)
    if train is None and cfg.data is None and not test_only:
        raise UserInputError("no training data: pass data= (a file or folder) or train= (a Dataset)",
                             hint="zero-shot needs no training data: it can run on a labelled --test alone")
    reads = dict(text_columns=cfg.text_columns, label_column=cfg.label_column, modality=cfg.modality,
                 skip_bad=cfg.skip_bad, task=cfg.task, label_sep=cfg.label_sep, path_column=cfg.path_column)
    test_source = test if test is not None else cfg.test
    if test_only:  # zero-shot on a labelled evaluation set: nothing to train on, nothing to split
        prepared = prepare_data(test_source, None, **reads)
    else:
        prepared = prepare_data(train if train is not None else cfg.data, test_source, **reads)
    if strategy_cls is not None:  # a strategy that cannot learn the task says so before any model loads
        strategy_cls.check_task(prepared.task)
    report = prepared.report
    for line in report.warning_lines():
        say(f"warning: {line}")
    if report.skipped:
        say(f"skipped {len(report.skipped)} bad items (listed in the run directory)")
    notes: list[str] = []
    train_ds, test_ds = prepared.train, prepared.test
    if test_only:
        train_ds, test_ds = None, prepared.train
        notes.append(f"{cfg.strategy} learns from no labelled item: all {len(test_ds)} items of the test set "
                     "were used for evaluation only.")
    elif test_ds is None:
        train_ds, test_ds = stratified_split(train_ds, test_size=cfg.test_size, seed=cfg.seed)
        notes.append(f"No test set was given: a stratified {1 - cfg.test_size:.0%}/{cfg.test_size:.0%} split "
                     f"(seed {cfg.seed}) of the data was used.")
    if learns_nothing and train_ds is not None:
        notes.append(f"{cfg.strategy} read no label of the {len(train_ds)} training items; they serve only "
                     "the controls (which do learn from labels).")
    target_ds = _read_target(cfg, test_ds.modality, say) if cfg.target_unlabelled else None
    if strategy_cls is not None and strategy_cls.needs_target and target_ds is None:
        raise UserInputError(f"strategy {cfg.strategy!r} adapts to unlabelled data of the target domain, "
                             "and none was given",
                             hint="pass --target-unlabelled TABLE_OR_FOLDER (labels in it are never read)")
    if cfg.labels_per_class and train_ds is not None:
        n_before = len(train_ds)
        train_ds = few_shot_sample(train_ds, cfg.labels_per_class, seed=cfg.seed)
        notes.append(f"Few-shot: {cfg.labels_per_class} labelled items per class sampled (seed {cfg.seed}) "
                     f"from {n_before} training items.")
    return Splits(prepared, train_ds, test_ds, target_ds, notes)


def resolve_stage(cfg: FitConfig, strategy_cls: type[Strategy] | None, splits: Splits, say: Log,
                  progress: bool | None) -> tuple[FitConfig, Strategy, Any]:
    """The configuration resolved once: the model (default per modality, or ``auto``'s choice
    with its layer), the strategy (default ``linear-probe``, or ``auto``'s) and its full typed
    parameters.  Returns the resolved config, the (unfitted) strategy it names, and the auto
    choice (``None`` without ``auto``)."""
    auto = None
    changes: dict[str, Any] = {}
    strategy, params = cfg.strategy, dict(cfg.strategy_params)
    if cfg.model == "auto":
        from .auto import choose

        auto = distributed.on_main(lambda: choose(
            splits.train, cfg.candidates, strategy=cfg.strategy, seed=cfg.seed, backbone_options=cfg.backbone_options,
            batch_size=cfg.batch_size, cache=cfg.cache, progress=progress, log=say,
            rank_dir=str(RunDir(cfg.out).file("rank")) if cfg.out else None, backend=cfg.backend))
        say(f"auto: chose {auto.model}" + (f" layer {auto.layer}" if auto.layer is not None else "") +
            f" with {auto.strategy}")
        strategy, strategy_cls = auto.strategy, STRATEGIES.get(auto.strategy)
        if auto.strategy_chosen and params:
            # Options given for whichever strategy would be chosen: keep those it takes.
            takes = set(strategy_cls.params_class().names())
            dropped = sorted(set(params) - takes)
            params = {k: v for k, v in params.items() if k in takes}
            if dropped:
                auto.reasons.append(f"{strategy} takes no option {', '.join(dropped)}: ignored.")
        changes.update(model=auto.model, candidates=None)
        if auto.layer is not None:
            changes["backbone_options"] = {**cfg.backbone_options, "layer": auto.layer}
    elif strategy == "auto":
        raise UserInputError("strategy 'auto' needs model 'auto'",
                             hint="pass --model auto, or name a strategy (see `transferkit strategies`)")
    changes["strategy"] = strategy or "linear-probe"
    changes["model"] = changes.get("model") or cfg.model or DEFAULT_MODELS.get(splits.modality)
    if changes["model"] is None:
        raise UserInputError(f"there is no default model for {splits.modality} data", hint="pass --model")
    instance = (strategy_cls or STRATEGIES.get(changes["strategy"])).from_params(params)
    changes["strategy_params"] = instance.get_params()
    changes["task"] = splits.task
    return cfg.replace(**changes), instance, auto


def build_stage(cfg: FitConfig, strategy: Strategy, splits: Splits, progress: bool | None,
                run: RunDir | None) -> TransferModel:
    """The backbone of the resolved config and its (unfitted) strategy, as one model."""
    backbone = get_backbone(cfg.model, **cfg.backbone_options)
    if backbone.modality != splits.modality:
        raise UserInputError(f"model {cfg.model!r} takes {backbone.modality} data but the data is {splits.modality}",
                             hint="pick a model of the data's modality (see `transferkit models`)")
    strategy.check_labels(splits.test)  # zero-shot: every test label described, no misspelt one
    return new_model(backbone, strategy, cfg, progress=progress, target=splits.target,
                     checkpoints=run.checkpoint_dir("transfer") if run is not None else None)


#: Test predictions kept in metrics.json for the report's plots (regression), at most this many.
MAX_PLOTTED = 2000


def evaluate_stage(cfg: FitConfig, splits: Splits, strategy: Strategy,
                   outputs: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """Test metrics of the task, with bootstrap intervals; returns them and the encoded test
    labels (class indices, target values, or a label indicator matrix)."""
    task = get_task(cfg.task)
    classes = strategy.classes_
    seen = splits.test.labels if cfg.task == "classification" else (
        [name for names in splits.test.labels for name in names] if cfg.task == "multi-label" else [])
    unknown = sorted(set(seen) - set(classes))
    if unknown:
        raise UserInputError(f"test labels not seen in training: {', '.join(unknown)}",
                             hint="every label of the test set must occur in the training set")
    y_test = task.encode(splits.test.labels, classes)
    test = task.metrics(y_test, outputs, classes, thresholds=strategy.thresholds_, n_boot=cfg.n_boot,
                        seed=cfg.seed)
    if cfg.task == "regression":  # what the report plots: predicted against true values
        idx = np.random.default_rng(cfg.seed).permutation(len(y_test))[:MAX_PLOTTED]
        test["predictions"] = {"y_true": y_test[idx].tolist(), "y_pred": np.asarray(outputs)[idx].tolist()}
    return {"test": test}, y_test


def controls_stage(cfg: FitConfig, splits: Splits, strategy: Strategy, backbone: Backbone, outputs: np.ndarray,
                   y_test: np.ndarray, say: Log, progress: bool | None, run: RunDir | None,
                   delivered: Outputs | None = None, classical: tuple | None = None) -> dict[str, Any]:
    """The controls' metrics, the gain over the best one on the task's primary metric, and the
    verdict of the transfer model; with ``delivered`` (the test outputs of a delivered model
    other than the transfer model), ``delivered_vs_controls``: the same comparison for it.
    ``classical``: the selection's classical candidate fitted on all the training items
    (:func:`~transferkit.evidence.run_controls` reads it instead of refitting the same model)."""
    controls = run_controls(strategy, backbone, splits.train, splits.test, cfg, say, progress, target=splits.target,
                            checkpoints=run.checkpoint_dir("random-init") if run is not None else None,
                            classical=classical)
    task = get_task(cfg.task)
    classes = strategy.classes_
    v = task.verdict(y_test, Outputs(outputs, strategy.thresholds_), controls,
                     n_boot=max(cfg.n_boot, 2000), seed=cfg.seed)
    extra = {}
    if delivered is not None:
        dv = task.verdict(y_test, delivered, controls, n_boot=max(cfg.n_boot, 2000), seed=cfg.seed)
        extra["delivered_vs_controls"] = {"gain": dv["transfer_gain"], "gain_ci": dv["transfer_gain_ci"],
                                          "verdict": dv["verdict"], "control": dv["control"]["name"]}
    return {**extra,
            "controls": {name: {**task.metrics(y_test, o.values, classes, thresholds=o.thresholds, n_boot=cfg.n_boot,
                                               seed=cfg.seed), **(o.about or {})}
                         for name, o in controls.items()},
            "control": v["control"], "controls_gain": v["controls"], "transfer_gain": v["transfer_gain"],
            "transfer_gain_ci": v["transfer_gain_ci"], "verdict": v["verdict"],
            "verdict_explanation": v["explanation"], "verdict_metric": v["metric"]}


def write_stage(run: RunDir, cfg: FitConfig, model: TransferModel, splits: Splits,
                delivered: TransferModel | None = None) -> dict:
    """Write the run directory through its :class:`RunDir`: config, metrics, weights, drift
    reference, validation, skipped items, report, and last the model card (which makes it a
    run); then drop the checkpoints (all but ``keep_checkpoints`` per model), which only a killed
    fit needs."""
    card = dict(model.card)
    run.begin()
    reference = splits.train if splits.train is not None else splits.test  # zero-shot on a test set alone
    served = delivered if delivered is not None else model
    card["drift_reference"] = run.write_reference(reference_features(served, reference, cfg.seed))
    run.write_config(cfg.to_dict())
    run.write_json("metrics.json", model.metrics)
    card["weights"] = run.write_weights(model.strategy.state_tensors(), strategy=model.strategy.name,
                                        classes=model.strategy.classes_)
    if served is not model:  # the delivered model, beside the transfer model the verdict judges
        card["delivered"] = {**card["delivered"], "weights": run.write_weights(
            served.strategy.state_tensors(), strategy=served.strategy.name, classes=served.strategy.classes_,
            file=DELIVERED_WEIGHTS)}
    report = splits.prepared.report
    run.write_json("validation.json", report.to_dict())
    run.write_json("skipped.json", report.skipped)
    # the report's class distribution is that of the parts the model saw and was scored on (the
    # validation counted the files, before any split of a single data file)
    shown_validation = {**report.to_dict(), "counts": split_counts(splits)}
    run.write_text("report.html", render_report(model.metrics, card=card, skipped=report.skipped,
                                                validation=shown_validation))
    run.write_text(README, hub_readme(card, model.metrics))  # the Hugging Face Hub's model card
    card = run.write_card(card)
    prune_after_run(run.checkpoints, keep_last=cfg.keep_checkpoints)
    if cfg.model:
        remember_user_backbone(cfg.model)
    return card


# ----- pieces ---------------------------------------------------------------------------------
def split_counts(splits: Splits) -> dict[str, Any]:
    """``{"train"|"test": {"items", "classes": {name: items}}}`` of the parts used (few-shot
    sample and automatic split included); multi-label counts the items carrying each label,
    regression has no classes."""
    from collections import Counter

    out: dict[str, Any] = {}
    for name, ds in (("train", splits.train), ("test", splits.test)):
        if ds is None:
            continue
        labels = ds.labels or []
        if ds.task == "multi-label":
            per = Counter(label for names in labels for label in names)
        elif ds.task == "regression":
            per = Counter()
        else:
            per = Counter(labels)
        out[name] = {"items": len(ds), "classes": dict(sorted(per.items()))}
    return out


def _metrics(cfg: FitConfig, splits: Splits, strategy: Strategy, evidence: dict[str, Any], auto,
             timings: dict[str, float], notes: list[str]) -> dict[str, Any]:
    return {
        "task": cfg.task,
        "run": {"name": Path(cfg.out).name if cfg.out else None, "created": now_iso(), "strategy": cfg.strategy,
                "backbone": cfg.model, "modality": splits.modality, "seed": cfg.seed,
                **({"processes": distributed.world_size()} if distributed.world_size() > 1 else {})},
        "n_train": splits.n_train, "n_test": len(splits.test), "classes": strategy.classes_,
        **({"n_target_unlabelled": len(splits.target)} if splits.target is not None else {}),
        **evidence,
        "strategy": {"name": cfg.strategy, "params": strategy.get_params(), "fit": strategy.fit_info()},
        **({"auto": auto.to_dict()} if auto else {}),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "notes": notes,
    }


def _card(cfg: FitConfig, splits: Splits, model: TransferModel,
          delivered: TransferModel | None = None) -> dict[str, Any]:
    """The model card: lineage of what was trained (the run directory adds its files' hashes).
    ``strategy`` is the transfer model's; ``delivered`` (only where selection chose another
    model) names the strategy that ``tk.load``, ``predict`` and ``serve`` use."""
    train, test, target = splits.train, splits.test, splits.target
    classes = model.strategy.classes_
    return {
        **({"delivered": {"name": model.metrics["delivered"]["name"],
                          "strategy": {"name": delivered.strategy.name, "params": delivered.strategy.get_params()}}}
           if delivered is not None and delivered is not model else {}),
        "created": model.metrics["run"]["created"],
        "backbone": {"name": cfg.model, "options": cfg.backbone_options, "identity": model.backbone.identity()},
        "strategy": {"name": cfg.strategy, "params": model.strategy.get_params()},
        "task": cfg.task, "classes": classes, "label_map": {str(i): c for i, c in enumerate(classes)},
        "label_sep": cfg.label_sep, "modality": splits.modality, "text_columns": cfg.text_columns,
        "path_column": cfg.path_column,
        "label_column": cfg.label_column,
        "data": {"source": cfg.data or (train.source if train is not None else None),
                 "train_hash": train.fingerprint() if train is not None else None,
                 "test_hash": test.fingerprint(), "n_train": splits.n_train, "n_test": len(test),
                 **({"target_unlabelled": cfg.target_unlabelled, "target_hash": target.fingerprint(),
                     "n_target": len(target)} if target is not None else {})},
        # the training target's scale, read from the data (every strategy standardises its own way)
        **({"target": {"mean": float(np.mean(train.labels)), "scale": float(np.std(train.labels))}}
           if cfg.task == "regression" and train is not None else {}),
        "lineage": {"command": "fit", **model.backbone.lineage()},
        "seed": cfg.seed, "versions": versions(), "timings": model.metrics["timings"],
    }


def _read_target(cfg: FitConfig, modality: str, say: Log) -> Dataset:
    """The unlabelled target data, validated like the training data; any labels it has are dropped
    here, so no strategy can read them."""
    tp = prepare_data(cfg.target_unlabelled, None, text_columns=cfg.text_columns, label_column=cfg.label_column,
                      modality=cfg.modality or modality, skip_bad=cfg.skip_bad, require_labels=False,
                      path_column=cfg.path_column if os.path.isfile(cfg.target_unlabelled) else None)
    for line in tp.report.warning_lines():
        say(f"warning: {line}")
    if tp.report.skipped:
        say(f"skipped {len(tp.report.skipped)} bad items of the target data")
    target = tp.train
    if target.modality != modality:
        raise UserInputError(f"the target data {shown(cfg.target_unlabelled)} holds {target.modality} items but the "
                             f"training data is {modality}", hint="give unlabelled data of the same kind")
    if len(target) < 2:
        raise UserInputError(f"the target data {shown(cfg.target_unlabelled)} has {len(target)} item(s)",
                             hint="give at least a few dozen unlabelled items of the target domain")
    return Dataset(modality=target.modality, inputs=target.inputs, labels=None, origins=target.origins,
                   source=target.source, sampling_rate=target.sampling_rate)


def _extraction_notes(backbone: Backbone, log: list[ExtractionStats]) -> list[str]:
    if not log:
        return []
    n = sum(s.n_items for s in log)
    chunked = sum(s.chunked for s in log)
    cut = sum(s.cut for s in log)
    notes = []
    if backbone.modality == "text" and chunked:
        notes.append(f"{chunked} of {n} texts were longer than one {backbone.max_length}-token window: they were "
                     "split into chunks, each chunk embedded, and the chunks mean-pooled (not truncated).")
        if cut:
            k = backbone.max_chunks
            notes.append(f"Of those, {cut} had more than {k} chunks and only their first {k} chunks were used "
                         "(max_chunks=0 keeps everything).")
    elif cut:
        notes.append(f"{cut} of {n} items were longer than the backbone's limit "
                     f"({getattr(backbone, 'max_seconds', '?')} s for audio) and were cut.")
    # a damaged cache shard (recomputed) or an unwritable cache (slower, same result)
    notes += sorted({note for s in log for note in s.cache_notes})
    return notes


def reference_features(model: TransferModel, train: Dataset, seed: int,
                       max_rows: int = REFERENCE_MAX_ROWS) -> np.ndarray:
    """Features ``(min(N, max_rows), D)`` of a seeded random sample of training items, computed
    as the served model computes them (the backbone as the strategy left it; for the linear probe
    these are cache hits of the fit's own features)."""
    n = len(train)
    idx = np.sort(np.random.default_rng(seed).choice(n, min(n, max_rows), replace=False))
    feats, _ = extract_features(model.ctx.backbone, train.subset(idx), batch_size=model.batch_size,
                                cache=model.feature_cache or False, progress=False, device=model.ctx.device,
                                backend=model.backend)
    return feats
