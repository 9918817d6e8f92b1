"""``fit``: the pipeline every command walks, left to right.

data source -> validate -> backbone -> features (cached) -> strategy -> evaluate (+ controls,
verdict) -> run directory.

Under ``torchrun`` or ``accelerate launch`` every process walks the whole pipeline: the same
data, split and backbone; strategies that train share each step through the one training loop
(:mod:`.training.distributed`), the transfer run and its random-init control alike; evaluation
and the classical control are computed by every process, identically (they are cheap next to
training, and a process that skipped them could not join the control's training).  Process 0
alone prints and writes the run directory; the others wait for it and return the same model.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .artifact import REFERENCE_MAX_ROWS, now_iso, save_model, save_reference_features, versions
from .backbones import get_backbone
from .backbones.base import Backbone
from .config import DEFAULT_MODELS, FitConfig
from .controls import BASELINES, baseline_for
from .data import PreparedData, few_shot_sample, prepare_data, stratified_split
from .data.dataset import Dataset
from .errors import UserInputError
from .evaluation import classification_metrics, transfer_verdict
from .features import ExtractionStats
from .model import TransferModel
from .strategies import get_strategy
from .training import distributed

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fit(config: FitConfig | None = None, *, train: Dataset | None = None, test: Dataset | None = None,
        log: Log | None = _stderr, progress: bool | None = None, **overrides: Any) -> TransferModel:
    """Adapt a pre-trained backbone to labelled data, with controls, verdict and run directory.

    Args:
        config: a :class:`FitConfig`; keyword ``overrides`` set or replace its fields
            (``tk.fit(data="emails.jsonl", text_columns="subject,body", out="runs/spam")``).
        train: an in-memory :class:`Dataset` instead of ``config.data`` (e.g. from arrays).
        test: an in-memory test set instead of ``config.test``.
        log: where progress lines go (``None``: silent).

    Returns:
        The fitted :class:`TransferModel`, with ``.metrics`` and (when ``out`` is set) ``.run_dir``.
    """
    cfg = FitConfig.from_dict({**(config.to_dict() if config else {}), **overrides})
    distributed.init()  # under a launcher: join the other processes; alone: nothing
    main = distributed.is_main()
    say = log if log and main else (lambda _m: None)
    progress = progress if main else False
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    # 1. validate, before any model is loaded
    t = time.perf_counter()
    strategy_cls = _strategy_class(cfg.strategy)
    learns_nothing = strategy_cls is not None and not strategy_cls.needs_labels  # zero-shot
    test_only = learns_nothing and train is None and cfg.data is None and (test is not None or cfg.test)
    if train is None and cfg.data is None and not test_only:
        raise UserInputError("no training data: pass data= (a file or folder) or train= (a Dataset)",
                             hint="zero-shot needs no training data: it can run on a labelled --test alone")
    notes: list[str] = []
    if test_only:  # zero-shot on a labelled evaluation set: nothing to train on, nothing to split
        prepared = prepare_data(test if test is not None else cfg.test, None, text_columns=cfg.text_columns,
                                label_column=cfg.label_column, modality=cfg.modality, skip_bad=cfg.skip_bad)
    else:
        prepared = prepare_data(
            train if train is not None else cfg.data, test if test is not None else cfg.test,
            text_columns=cfg.text_columns, label_column=cfg.label_column, modality=cfg.modality,
            skip_bad=cfg.skip_bad)
    report = prepared.report
    for p in report.warnings:
        say(f"warning: {p.origin}: {p.message}")
    if report.skipped:
        say(f"skipped {len(report.skipped)} bad items (listed in the run directory)")
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
    timings["validate_s"] = time.perf_counter() - t
    modality = test_ds.modality
    auto = None
    if cfg.model == "auto":
        auto = _choose_automatically(cfg, train_ds, say, progress)
        timings["auto_rank_s"] = auto.seconds
        notes += [f"Chosen automatically — {r}" for r in auto.reasons]
    elif cfg.strategy in (None, "auto"):
        if cfg.strategy == "auto":
            raise UserInputError("strategy 'auto' needs model 'auto'",
                                 hint="pass --model auto, or name a strategy (see the README)")
        cfg.strategy = "linear-probe"
    model_name = cfg.model or DEFAULT_MODELS.get(modality)
    if model_name is None:
        raise UserInputError(f"there is no default model for {modality} data", hint="pass --model")
    cfg.model = model_name
    n_train = 0 if train_ds is None else len(train_ds)
    say(f"data: {n_train} training and {len(test_ds)} test items, {len(test_ds.classes)} classes "
        f"({modality})" + (f"; {len(target_ds)} unlabelled target items" if target_ds is not None else ""))

    # 2. backbone and strategy
    backbone = get_backbone(model_name, **cfg.backbone_options)
    if backbone.modality != modality:
        raise UserInputError(f"model {model_name!r} takes {backbone.modality} data but the data is {modality}",
                             hint="pick a model of the data's modality (see `transferkit models`)")
    strategy = get_strategy(cfg.strategy, cfg.strategy_params)
    if hasattr(strategy, "check_labels"):  # zero-shot: every test label described, no misspelt one
        strategy.check_labels(test_ds)
    model = TransferModel(backbone, strategy, cache=cfg.cache, batch_size=cfg.batch_size, progress=progress,
                          backend=cfg.backend)
    model.ctx.seed = cfg.seed
    model.ctx.device = str(distributed.device())  # GPU LOCAL_RANK under a launcher; else as before, CPU
    model.ctx.target = target_ds
    _checkpointing(model.ctx, cfg, "transfer")

    t = time.perf_counter()
    say(f"fitting {cfg.strategy} on {backbone.describe()} …")
    strategy.fit(train_ds, model.ctx)
    proba = strategy.predict_proba(test_ds, model.ctx)
    timings["fit_s"] = time.perf_counter() - t
    timings["extract_s"] = sum(s.seconds for s in model.extraction_log)
    classes = strategy.classes_
    unknown = sorted(set(test_ds.labels) - set(classes))
    if unknown:
        raise UserInputError(f"test labels not seen in training: {', '.join(unknown)}")
    y_test = np.array([classes.index(c) for c in test_ds.labels])
    metrics: dict[str, Any] = {"test": classification_metrics(y_test, proba, classes, n_boot=cfg.n_boot,
                                                              seed=cfg.seed)}
    notes += _extraction_notes(backbone, model.extraction_log)
    notes += model.ctx.notes
    if target_ds is not None:
        t = time.perf_counter()
        metrics["domain"] = domain_adaptation_evidence(strategy, model, train_ds, test_ds, target_ds, y_test,
                                                       cfg, say)
        timings["domain_s"] = time.perf_counter() - t

    # 3. controls and verdict
    if cfg.control:
        t = time.perf_counter()
        control_proba = run_controls(strategy, backbone, train_ds, test_ds, cfg, say, progress, target=target_ds)
        timings["controls_s"] = time.perf_counter() - t
        metrics["controls"] = {name: classification_metrics(y_test, p, classes, n_boot=cfg.n_boot, seed=cfg.seed)
                               for name, p in control_proba.items()}
        v = transfer_verdict(y_test, proba.argmax(1), {k: p.argmax(1) for k, p in control_proba.items()},
                             n_boot=max(cfg.n_boot, 2000), seed=cfg.seed)
        metrics.update(control=v["control"], controls_gain=v["controls"], transfer_gain=v["transfer_gain"],
                       transfer_gain_ci=v["transfer_gain_ci"], verdict=v["verdict"],
                       verdict_explanation=v["explanation"])
    timings["total_s"] = time.perf_counter() - t_start
    metrics = {
        "run": {"name": Path(cfg.out).name if cfg.out else None, "created": now_iso(), "strategy": cfg.strategy,
                "backbone": model_name, "modality": modality, "seed": cfg.seed,
                **({"processes": distributed.world_size()} if distributed.world_size() > 1 else {})},
        "n_train": n_train, "n_test": len(test_ds), "classes": classes,
        **({"n_target_unlabelled": len(target_ds)} if target_ds is not None else {}),
        **metrics,
        "strategy": {"name": cfg.strategy, "params": strategy.get_params(), "fit": strategy.fit_info()},
        **({"auto": auto.to_dict()} if auto else {}),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "notes": notes,
    }
    model.metrics = metrics
    card = {
        "created": metrics["run"]["created"],
        "backbone": {"name": model_name, "options": cfg.backbone_options, "identity": backbone.identity()},
        "strategy": {"name": cfg.strategy, "params": strategy.get_params()},
        "classes": classes, "label_map": {str(i): c for i, c in enumerate(classes)},
        "modality": modality, "text_columns": cfg.text_columns, "label_column": cfg.label_column,
        "data": {"source": cfg.data or (train_ds.source if train_ds is not None else None),
                 "train_hash": train_ds.fingerprint() if train_ds is not None else None,
                 "test_hash": test_ds.fingerprint(), "n_train": n_train, "n_test": len(test_ds),
                 **({"target_unlabelled": cfg.target_unlabelled, "target_hash": target_ds.fingerprint(),
                     "n_target": len(target_ds)} if target_ds is not None else {})},
        "seed": cfg.seed, "versions": versions(), "timings": metrics["timings"],
    }
    model.card = card
    if cfg.out:
        # process 0 writes; the others wait and get the card as written (or its error)
        reference = train_ds if train_ds is not None else test_ds  # zero-shot on a test set alone
        model.card = distributed.on_main(lambda: write_run(cfg, model, metrics, card, prepared, train=reference))
        model.run_dir = Path(cfg.out)
    verdict = metrics.get("verdict")
    say(f"test accuracy {metrics['test']['accuracy']:.3f}" + (
        f"; best control {metrics['control']['name']} {metrics['control']['accuracy']:.3f}; verdict: {verdict}"
        if verdict else ""))
    return model


def _choose_automatically(cfg: FitConfig, train: Dataset, say: Log, progress: bool | None):
    """Rank the candidates on the training split and resolve ``cfg`` in place: the run's
    config.json then names the chosen model, layer and strategy, and re-runs them exactly."""
    from .auto import choose

    choice = distributed.on_main(lambda: choose(
        train, cfg.candidates, strategy=cfg.strategy, seed=cfg.seed, backbone_options=cfg.backbone_options,
        batch_size=cfg.batch_size, cache=cfg.cache, progress=progress, log=say,
        rank_dir=str(Path(cfg.out) / "rank") if cfg.out else None, backend=cfg.backend))
    say(f"auto: chose {choice.model}" + (f" layer {choice.layer}" if choice.layer is not None else "") +
        f" with {choice.strategy}")
    if choice.strategy_chosen and cfg.strategy_params:
        # Options given for whichever strategy would be chosen: keep those it takes.
        from .strategies import STRATEGIES

        takes = set(STRATEGIES.get(choice.strategy)._param_names())
        dropped = sorted(set(cfg.strategy_params) - takes)
        cfg.strategy_params = {k: v for k, v in cfg.strategy_params.items() if k in takes}
        if dropped:
            choice.reasons.append(f"{choice.strategy} takes no option {', '.join(dropped)}: ignored.")
    cfg.model, cfg.strategy, cfg.candidates = choice.model, choice.strategy, None
    if choice.layer is not None:
        cfg.backbone_options = {**cfg.backbone_options, "layer": choice.layer}
    return choice


def run_controls(strategy, backbone: Backbone, train: Dataset | None, test: Dataset, cfg: FitConfig, say: Log,
                 progress: bool | None, target: Dataset | None = None) -> dict[str, np.ndarray]:
    """Test-set probabilities of (a) the same strategy on a randomly initialised copy of the
    backbone (adapting to the same unlabelled ``target``, if any) and (b) the modality's
    classical baseline, both trained on the same split (no baseline without training labels)."""
    out: dict[str, np.ndarray] = {}
    say("control: the same architecture, randomly initialised …")
    random_model = TransferModel(backbone.randomized(cfg.seed), strategy.clone(), cache=cfg.cache,
                                 batch_size=cfg.batch_size, progress=progress, backend=cfg.backend)
    random_model.ctx.seed = cfg.seed
    random_model.ctx.device = str(distributed.device())
    random_model.ctx.target = target
    _checkpointing(random_model.ctx, cfg, "random-init")
    random_model.strategy.fit(train, random_model.ctx)
    out["random-init"] = _align(random_model.strategy, random_model.strategy.predict_proba(test, random_model.ctx),
                                strategy.classes_)
    if train is None or not train.labels:
        return out
    try:
        name = baseline_for(train.modality)
    except KeyError:
        return out
    say(f"control: classical baseline {name} …")
    y = np.array([strategy.classes_.index(c) for c in train.labels])
    proba, _info = BASELINES.get(name)(train, y, test, cfg.seed)
    out[name] = proba
    return out


def recreate_splits(run: str | Path) -> tuple[Dataset | None, Dataset, FitConfig]:
    """The training and test sets of a run, rebuilt from its ``config.json`` exactly as ``fit``
    made them (same files, split, seed and few-shot sample), checked against the data hashes of
    its model card.

    Raises:
        UserInputError: no config.json, no data path (a run fitted on in-memory data), or
            the files changed since the run (the hashes differ).
    """
    import json

    run = Path(run)
    if not (run / "config.json").is_file():
        raise UserInputError(f"{run} has no config.json", hint="give a run directory written by `transferkit fit`")
    cfg = FitConfig.load(run / "config.json")
    if cfg.data is None and cfg.test:  # zero-shot evaluated on a test set alone: no training split
        return None, prepare_data(cfg.test, None, text_columns=cfg.text_columns, label_column=cfg.label_column,
                                  modality=cfg.modality, skip_bad=cfg.skip_bad).train, cfg
    if cfg.data is None:
        raise UserInputError(f"the run {run} was fitted on data given in memory, so its split cannot be rebuilt",
                             hint="fit it from files (--data) to distil or measure it later")
    prepared = prepare_data(cfg.data, cfg.test, text_columns=cfg.text_columns, label_column=cfg.label_column,
                            modality=cfg.modality, skip_bad=cfg.skip_bad)
    train, test = prepared.train, prepared.test
    if test is None:
        train, test = stratified_split(train, test_size=cfg.test_size, seed=cfg.seed)
    if cfg.labels_per_class:
        train = few_shot_sample(train, cfg.labels_per_class, seed=cfg.seed)
    card = json.loads((run / "model_card.json").read_text()) if (run / "model_card.json").is_file() else {}
    want = card.get("data") or {}
    for name, ds in (("training", train), ("test", test)):
        h = want.get("train_hash" if name == "training" else "test_hash")
        if h and h != ds.fingerprint():
            raise UserInputError(f"the {name} data of {run} changed since the run ({cfg.data}"
                                 f"{', ' + cfg.test if cfg.test else ''}): its hash differs from the model card's",
                                 hint="restore the files the run was fitted on")
    return train, test, cfg


def _strategy_class(name: str | None):
    """The registered class of ``name`` (``None`` for the default or ``auto``)."""
    if name in (None, "auto"):
        return None
    from .strategies import STRATEGIES

    return STRATEGIES.get(name)


def _read_target(cfg: FitConfig, modality: str, say: Log) -> Dataset:
    """The unlabelled target data, validated like the training data; any labels it has are dropped
    here, so no strategy can read them."""
    tp = prepare_data(cfg.target_unlabelled, None, text_columns=cfg.text_columns, label_column=cfg.label_column,
                      modality=cfg.modality or modality, skip_bad=cfg.skip_bad, require_labels=False)
    for p in tp.report.warnings:
        say(f"warning: {p.origin}: {p.message}")
    if tp.report.skipped:
        say(f"skipped {len(tp.report.skipped)} bad items of the target data")
    target = tp.train
    if target.modality != modality:
        raise UserInputError(f"the target data {cfg.target_unlabelled} holds {target.modality} items but the "
                             f"training data is {modality}", hint="give unlabelled data of the same kind")
    if len(target) < 2:
        raise UserInputError(f"the target data {cfg.target_unlabelled} has {len(target)} item(s)",
                             hint="give at least a few dozen unlabelled items of the target domain")
    return Dataset(modality=target.modality, inputs=target.inputs, labels=None, origins=target.origins,
                   source=target.source, sampling_rate=target.sampling_rate)


def domain_adaptation_evidence(strategy, model: TransferModel, train: Dataset | None, test: Dataset,
                               target: Dataset, y_test: np.ndarray, cfg: FitConfig, say: Log) -> dict[str, Any]:
    """How far the target is from the training data, and, for a domain-adaptation strategy,
    what adapting bought over the same model trained on the source alone.

    Returns ``{"shift": [{"features", "mmd2", "mmd_p_value", "a_distance", "level", "reading"}],
    "source_only": metrics, "adaptation_gain", "adaptation_gain_ci", "adaptation_verdict",
    "selection": ...}`` (the last four only for domain-adaptation strategies).
    """
    from .scores.domain import domain_shift

    if train is None:
        return {}
    say("domain distance between the training data and the unlabelled target …")
    ctx = model.ctx
    if getattr(strategy, "on", "features") == "backbone":
        # the strategy tuned the backbone in place: the pre-trained features and the source-only
        # model come from a fresh copy, which the source-only training may tune in turn
        base = TransferModel(get_backbone(cfg.model, **cfg.backbone_options), strategy.clone(), cache=cfg.cache,
                             batch_size=cfg.batch_size, backend=cfg.backend)
        base.ctx.seed, base.ctx.device, base.ctx.target = cfg.seed, ctx.device, target
        bctx = base.ctx
    else:
        bctx = ctx
    rows = []

    def shift(name: str, fs: np.ndarray, ft: np.ndarray) -> None:
        d = domain_shift(fs, ft, n_permutations=200, max_items=1000, seed=cfg.seed)
        rows.append({"features": name, **d.to_dict()})

    shift("backbone features (before adaptation)", bctx.features(train), bctx.features(target))
    out: dict[str, Any] = {"shift": rows}
    if not getattr(type(strategy), "needs_target", False):
        return out
    say(f"{strategy.name}: the same model trained on the source alone, for comparison …")
    source_only = strategy.source_only()
    source_only.fit(train, bctx)
    p_so = _align(source_only, source_only.predict_proba(test, bctx), strategy.classes_)
    out["source_only"] = classification_metrics(y_test, p_so, strategy.classes_, n_boot=cfg.n_boot, seed=cfg.seed)
    if hasattr(strategy, "transform"):
        shift("source-only model's features", source_only.transform(train, bctx, domain="source"),
              source_only.transform(target, bctx))
        shift(f"adapted model's features ({strategy.name})", strategy.transform(train, ctx, domain="source"),
              strategy.transform(target, ctx))
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
    sel = (strategy.fit_info() or {}).get("selection")
    if sel:
        out["selection"] = sel
    return out


def _checkpointing(ctx, cfg: FitConfig, which: str) -> None:
    """Strategies that train checkpoint under ``out/checkpoints/<which>/``; one folder per model,
    so the transfer run and its random-init control never resume from each other."""
    if cfg.out:
        ctx.checkpoint_dir = Path(cfg.out) / "checkpoints" / which
        ctx.resume = cfg.resume


def _align(fitted, proba: np.ndarray, classes: list[str]) -> np.ndarray:
    if list(fitted.classes_) == list(classes):
        return proba
    return proba[:, [fitted.classes_.index(c) for c in classes]]


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
    return notes


def reference_features(model: TransferModel, train: Dataset, seed: int,
                       max_rows: int = REFERENCE_MAX_ROWS) -> np.ndarray:
    """Features ``(min(N, max_rows), D)`` of a seeded random sample of training items, computed
    as the served model computes them (the backbone as the strategy left it; for the linear probe
    these are cache hits of the fit's own features)."""
    from .features import extract_features

    n = len(train)
    idx = np.sort(np.random.default_rng(seed).choice(n, min(n, max_rows), replace=False))
    feats, _ = extract_features(model.ctx.backbone, train.subset(idx), batch_size=model.batch_size,
                                cache=model._cache or False, progress=False, device=model.ctx.device,
                                backend=model.backend)
    return feats


def write_run(cfg: FitConfig, model: TransferModel, metrics: dict, card: dict, prepared: PreparedData,
              train: Dataset | None = None) -> dict:
    """Write the run directory: config, metrics, weights, model card, skipped, report, and
    (given ``train``) a sample of training features, the reference of the server's drift monitor."""
    from ._files import write_json
    from .report import write_report

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if train is not None:
        card = dict(card, drift_reference=save_reference_features(out, reference_features(model, train, cfg.seed)))
    write_json(out / "config.json", {"transferkit_version": versions().get("transferkit"), "config": cfg.to_dict()})
    write_json(out / "metrics.json", metrics)
    card = save_model(model, out, card=card)
    write_json(out / "validation.json", prepared.report.to_dict())
    write_json(out / "skipped.json", prepared.report.skipped)
    write_report(out / "report.html", metrics, card=card, skipped=prepared.report.skipped,
                 validation=prepared.report.to_dict())
    return card
