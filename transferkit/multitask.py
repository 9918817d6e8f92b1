"""Several label columns at once: one shared backbone, one head per column (multi-task learning,
which the transfer-learning field calls task adaptation).

``fit(label_column="topic,stars", task="topic=classification,stars=regression")`` reads the
table once per column (each column's labels checked for its task; an item bad in any column is
an error, or with ``skip_bad`` is left out of every column), splits the items once (stratified on
the first column), loads the backbone once, and then:

- a strategy that trains the backbone (``finetune``, ``lora``, ``lp-ft``…) trains it **jointly**
  through the one training loop, one head per column, the loss a weighted sum of the columns'
  losses (``task_weights``; equal by default, regression targets standardised);
- a strategy on frozen features (the probe) fits one head per column on the same cached
  features: with the backbone frozen, joint training of independent heads is separate training.

Each column then gets everything a single-task run gets: its task's metrics with intervals, its
controls (trained on that column alone), its verdict, and a complete run directory of its own
under ``OUT/tasks/<column>/`` (``predict``, ``serve``, ``export``, ``explain`` take it as is).
``OUT/`` holds the whole config, ``metrics.json`` with ``tasks.<column>``, and a report with a
section per column; ``transferkit predict OUT`` and ``evaluate OUT`` answer every column.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backbones import get_backbone
from .config import DEFAULT_MODELS, FitConfig
from .data import PreparedData, prepare_data, split_indices
from .data.dataset import Dataset
from .data.report import ValidationReport
from .errors import DataValidationError, UserInputError, shown
from .evidence import new_model
from .model import TransferModel
from .pipeline import Splits, _card, _metrics, controls_stage, evaluate_stage, write_stage
from .pipeline import fit as fit_one
from .predict import evaluate_run, predict_files
from .report.multitask import render_multitask_report
from .runs import RunDir, load, now_iso, versions
from .strategies import STRATEGIES
from .strategies.base import Strategy
from .tasks import get_task
from .training import distributed

TASKS_DIR = "tasks"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fit(config: FitConfig | None = None, *, train: Dataset | None = None, test: Dataset | None = None,
        log=_stderr, progress: bool | None = None, **overrides: Any):
    """The front door of ``transferkit.fit``: one label column -> :func:`transferkit.pipeline.fit`
    (a :class:`TransferModel`); several -> :func:`fit_multitask` (a :class:`MultiTaskModel`);
    ``task="forecast"`` -> :func:`transferkit.forecast_pipeline.fit_forecast` (a ``ForecastRun``)."""
    if overrides.get("task") == "forecast":  # series, not labelled items: a pipeline of its own
        from .forecast_pipeline import ForecastConfig, fit_forecast

        data = {"data": str(train)} if isinstance(train, (str, os.PathLike)) else {}
        return fit_forecast(ForecastConfig(**data, **{k: v for k, v in overrides.items() if k != "task"}), log=log)
    paths = {k: v for k, v in (("data", train), ("test", test)) if isinstance(v, (str, os.PathLike))}
    merged = FitConfig.from_dict({**(config.to_dict() if config else {}), **paths,
                                  **{k: v for k, v in overrides.items() if k in FitConfig.__dataclass_fields__}})
    if len(merged.label_columns) == 1:
        return fit_one(config, train=train, test=test, log=log, progress=progress, **overrides)
    if (train is not None and "data" not in paths) or (test is not None and "test" not in paths):
        raise UserInputError("several label columns are read from a table: pass data= (and test=) as paths",
                             hint="an in-memory Dataset holds one task's labels; fit it once per column")
    return fit_multitask(merged, log=log, progress=progress)


@dataclass
class MultiTaskModel:
    """The models of a multi-task fit, one per label column, sharing one backbone.

    Attributes:
        models: ``{column: TransferModel}``, in the order of the columns.
        metrics: what ``metrics.json`` holds (``tasks.<column>`` per column).
        card: the run's card (``multi_task`` lists the columns, tasks and sub-run folders).
        run_dir: the run directory, when written.
    """

    models: dict[str, TransferModel]
    metrics: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None

    @property
    def columns(self) -> list[str]:
        return list(self.models)

    @property
    def tasks(self) -> dict[str, str]:
        """``{column: task}``."""
        return {c: m.task for c, m in self.models.items()}

    def __getitem__(self, column: str) -> TransferModel:
        if column not in self.models:
            raise UserInputError(f"no label column {column!r} in this model", hint=f"it has: {', '.join(self.models)}")
        return self.models[column]

    def predict(self, inputs: Any) -> dict[str, list]:
        """``{column: one decision per input}`` (a class, a number or a label set per column)."""
        return {c: m.predict(inputs) for c, m in self.models.items()}

    def _repr_html_(self) -> str | None:
        """In a notebook: each column's verdict banner and summary table."""
        from .report.notebook import models_html

        return models_html([(f"label column {c} ({m.task})", m) for c, m in self.models.items()])

    def __repr__(self) -> str:
        tasks = ", ".join(f"{c}={t}" for c, t in self.tasks.items())
        return f"MultiTaskModel({tasks}{f', run_dir={str(self.run_dir)!r}' if self.run_dir else ''})"


def sub_dir(column: str, index: int) -> str:
    """The folder of a column's run under ``tasks/``: the column's name where it is a plain
    file name, else ``task-<i>`` (a column named ``../x`` or ``a b`` must not become a path)."""
    ok = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", column) and column not in (".", "..")
    return f"{TASKS_DIR}/{column if ok else f'task-{index + 1}'}"


# ----- fit ------------------------------------------------------------------------------------
def fit_multitask(cfg: FitConfig, *, log=_stderr, progress: bool | None = None) -> MultiTaskModel:
    """Fit one model per label column of ``cfg`` on one shared backbone (see the module's text).

    Raises:
        UserInputError: an option that a multi-task fit does not take (``model="auto"``,
            few-shot sampling, unlabelled target data, zero-shot), a strategy that cannot learn a
            column's task, or one that trains the backbone without a joint fit.
        DataValidationError: bad items in any column (all of them listed), without ``skip_bad``.
    """
    distributed.init()
    main = distributed.is_main()
    say = log if log and main else (lambda _m: None)
    progress = progress if main else False
    run = RunDir(cfg.out) if cfg.out else None
    with run.lock() if run is not None and main else contextlib.nullcontext():
        return _fit(cfg, say, progress, run)


def _refuse_options(cfg: FitConfig) -> type[Strategy]:
    for ok, what, hint in (
            (cfg.model != "auto", "--model auto ranks candidates for one task",
             "pass --model NAME (rank candidates per column with `transferkit rank --label-column COL`)"),
            (cfg.labels_per_class is None, "few-shot sampling draws items per class of one column",
             "sample the table beforehand, or fit one column at a time"),
            (cfg.target_unlabelled is None, "domain adaptation is fitted for one task at a time",
             "fit one column at a time with --target-unlabelled"),
            (cfg.data is not None, "several label columns need a table (data=)", "pass --data TABLE")):
        if not ok:
            raise UserInputError(f"several label columns ({', '.join(cfg.label_columns)}): {what}", hint=hint)
    cls = STRATEGIES.get(cfg.strategy or "linear-probe")
    if not cls.needs_labels:
        raise UserInputError(f"strategy {cls.name!r} learns from no label, so it has no label columns to share",
                             hint="fit it once per column")
    return cls


def _fit(cfg: FitConfig, say, progress: bool | None, run: RunDir | None) -> MultiTaskModel:
    t_start = time.perf_counter()
    strategy_cls = _refuse_options(cfg)
    columns = cfg.label_columns
    t = time.perf_counter()
    splits, tasks, report, notes = read_columns(cfg, strategy_cls, say)
    validate_s = time.perf_counter() - t
    strategy = strategy_cls.from_params(dict(cfg.strategy_params))
    model_name = cfg.model or DEFAULT_MODELS.get(splits[columns[0]].modality)
    if model_name is None:
        raise UserInputError(f"there is no default model for {splits[columns[0]].modality} data", hint="pass --model")
    cfg = cfg.replace(model=model_name, strategy=strategy.name, strategy_params=strategy.get_params(),
                      task=",".join(f"{c}={tasks[c]}" for c in columns))
    first = splits[columns[0]]
    say(f"data: {first.n_train} training and {len(first.test)} test items ({first.modality}); "
        + "; ".join(f"{c}: {tasks[c]}" for c in columns))
    backbone = get_backbone(cfg.model, **cfg.backbone_options)
    if backbone.modality != first.modality:
        raise UserInputError(f"model {cfg.model!r} takes {backbone.modality} data but the data is {first.modality}",
                             hint="pick a model of the data's modality (see `transferkit models`)")
    column_cfgs = {c: cfg.replace(label_column=c, task=tasks[c],
                                  out=str(run.path / sub_dir(c, i)) if run is not None else None)
                   for i, c in enumerate(columns)}

    t = time.perf_counter()
    say(f"fitting {strategy.name} on {backbone.describe()} for {len(columns)} label columns …")
    models, joint = _fit_heads(cfg, column_cfgs, strategy, backbone, splits, progress, run)
    fit_s = time.perf_counter() - t
    notes.append(joint["note"])

    from .serve.prediction_drift import prediction_reference  # here: `import transferkit` loads no serve module

    results: dict[str, dict[str, Any]] = {}
    for c in columns:
        model, sp, ccfg = models[c], splits[c], column_cfgs[c]
        t = time.perf_counter()
        outputs = model.strategy.predict_outputs(sp.test, model.ctx)
        evidence, y_test = evaluate_stage(ccfg, sp, model.strategy, outputs)
        timings = {"validate_s": validate_s, "fit_s": fit_s}
        if ccfg.control:
            say(f"[{c}] controls …")
            evidence.update(controls_stage(ccfg, sp, model.strategy, backbone, outputs, y_test, say, progress,
                                           RunDir(ccfg.out) if ccfg.out else None))
            timings["controls_s"] = time.perf_counter() - t
        # one backbone serves every column: no column's model is swapped for another (selection)
        evidence["delivered"] = {"name": model.strategy.name, "strategy": model.strategy.name, "protocol": "none",
                                 "chosen_by": "no selection: a multi-task fit delivers the model it trained for "
                                              "each column on the shared backbone", "test": evidence["test"]}
        column_notes = sp.notes + model.ctx.notes + [joint["note"]]
        model.metrics = _metrics(ccfg, sp, model.strategy, evidence, None, timings, column_notes)
        model.metrics["multi_task"] = {"column": c, "columns": columns, "joint": joint["joint"]}
        model.card = _card(ccfg, sp, model)
        # what the served column model's predictions are compared with (the drift monitor)
        model.card["prediction_reference"] = prediction_reference(tasks[c], outputs, model.strategy.classes_,
                                                                  model.strategy.thresholds_, seed=cfg.seed)
        model.card["lineage"] = {"command": "fit", "multi_task": {"column": c, "columns": columns,
                                                                  "joint": joint["joint"]}}
        results[c] = model.metrics
    metrics = _top_metrics(cfg, columns, tasks, splits, results, joint, notes,
                           {"validate_s": validate_s, "fit_s": fit_s, "total_s": time.perf_counter() - t_start})
    card = {"created": metrics["run"]["created"], "multi_task": {
        c: {"task": tasks[c], "dir": sub_dir(c, i)} for i, c in enumerate(columns)},
        "backbone": {"name": cfg.model, "options": cfg.backbone_options},
        "strategy": {"name": cfg.strategy, "params": strategy.get_params()}, "joint": joint["joint"],
        "lineage": {"command": "fit"}, "seed": cfg.seed, "versions": versions()}
    out = MultiTaskModel(models, metrics, card)
    if run is not None:
        out.card = distributed.on_main(lambda: _write(run, cfg, out, splits, column_cfgs, report))
        out.run_dir = run.path
    for c in columns:
        m, task = models[c].metrics, get_task(tasks[c])
        say(f"[{c}] test {task.primary_label} {m['test'][task.primary]:.3f}" + (
            f"; best control {m['control']['name']} {m['control'][task.primary]:.3f}; verdict: {m['verdict']}"
            if m.get("verdict") else ""))
    return out


def read_columns(cfg: FitConfig, strategy_cls: type[Strategy], say
                 ) -> tuple[dict[str, Splits], dict[str, str], ValidationReport, list[str]]:
    """Read the table once per label column, keep the items good in every column, and split them
    once.  Returns ``{column: Splits}`` (same items, same order, each column's labels), the
    resolved ``{column: task}``, the merged validation report and the notes."""
    columns, wanted = cfg.label_columns, cfg.tasks_by_column()
    prepared: dict[str, PreparedData] = {}
    failed: list[ValidationReport] = []
    for c in columns:
        try:
            prepared[c] = prepare_data(cfg.data, cfg.test, text_columns=cfg.text_columns, label_column=c,
                                       modality=cfg.modality, skip_bad=cfg.skip_bad, task=wanted[c],
                                       label_sep=cfg.label_sep,
                                       **({"path_column": cfg.path_column} if getattr(cfg, "path_column", None)
                                          else {}))
        except DataValidationError as e:
            failed.append(e.report)
    if failed:  # every column's problems at once, not one column per attempt
        raise DataValidationError(ValidationReport(problems=_distinct(r.problems for r in failed), task="multi-task"))
    tasks = {c: p.task for c, p in prepared.items()}
    lines: dict[str, list[str]] = {}  # each warning once, with the columns it concerns unless it is every one
    for c in columns:
        with _about_column(c):
            strategy_cls.check_task(tasks[c])
        for line in prepared[c].report.warning_lines():
            lines.setdefault(line, []).append(c)
    for line, where in lines.items():
        say(f"warning{'' if len(where) == len(columns) else ' [' + ', '.join(where) + ']'}: {line}")
    notes: list[str] = []
    trains = _aligned({c: p.train for c, p in prepared.items()}, "training", notes)
    tests = None if cfg.test is None else _aligned({c: p.test for c, p in prepared.items()}, "test", notes)
    if tests is None:
        first = trains[columns[0]]
        train_idx, test_idx = split_indices(first, cfg.test_size, cfg.seed)
        tests = {c: ds.subset(test_idx) for c, ds in trains.items()}
        trains = {c: ds.subset(train_idx) for c, ds in trains.items()}
        notes.append(f"No test set was given: one split of the items, {1 - cfg.test_size:.0%}/{cfg.test_size:.0%} "
                     f"(seed {cfg.seed}) stratified on the first label column {columns[0]!r}, serves every column.")
    report = ValidationReport(problems=_distinct(prepared[c].report.problems for c in columns),
                              skipped=[dict(s, column=c) for c in columns for s in prepared[c].report.skipped],
                              counts={c: prepared[c].report.counts for c in columns}, task="multi-task")
    if report.skipped:
        say(f"skipped {len(report.skipped)} bad labels or items (listed in the run directory)")
    splits = {c: Splits(prepared[c], trains[c], tests[c], None, list(notes)) for c in columns}
    return splits, tasks, report, notes


def _distinct(problem_lists) -> list:
    """The problems of every column, each once: an item's own problem (an unreadable file, a copy
    in both sets) is found by every column's read."""
    seen, out = set(), []
    for problems in problem_lists:
        for p in problems:
            key = (p.severity, p.kind, p.origin, p.message)
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out


@contextlib.contextmanager
def _about_column(column: str):
    """A refusal raised inside names the label column it concerns."""
    try:
        yield
    except UserInputError as e:
        raise UserInputError(f"label column {column!r}: {e.message}", hint=e.hint) from None


def _aligned(parts: dict[str, Dataset], what: str, notes: list[str]) -> dict[str, Dataset]:
    """The items present in every column's set (a row skipped for one column's bad label is left
    out of all), in the first column's order."""
    keys = [set(ds.origins) for ds in parts.values()]
    common = set.intersection(*keys)
    first = next(iter(parts.values()))
    out = {}
    for c, ds in parts.items():
        where = {o: i for i, o in enumerate(ds.origins)}
        out[c] = ds.subset([where[o] for o in first.origins if o in common])
    dropped = max(len(k) for k in keys) - len(common)
    if dropped:
        notes.append(f"{dropped} {what} items were good in some label columns but not in all; they were left out of "
                     "every column, so that the columns share their items.")
    if not common:
        raise UserInputError(f"no {what} item has a good label in every column", hint="check the label columns")
    return out


def _fit_heads(cfg: FitConfig, column_cfgs: dict[str, FitConfig], strategy: Strategy, backbone, splits,
               progress, run: RunDir | None) -> tuple[dict[str, TransferModel], dict[str, Any]]:
    """One fitted model per column: a joint fit for a strategy that trains the backbone, heads
    on shared cached features otherwise.  Returns the models and ``{"joint", "note"}``."""
    columns = list(column_cfgs)
    if strategy.tunes_backbone:
        if not hasattr(strategy, "fit_joint"):
            raise UserInputError(f"strategy {strategy.name!r} trains the backbone and has no joint fit of several "
                                 "heads", hint="use finetune, gradual, lp-ft, l2sp or lora, or the linear probe")
        trainer = new_model(backbone, strategy, cfg, progress=progress,
                            checkpoints=run.checkpoint_dir("transfer") if run is not None else None)
        fitted = strategy.fit_joint({c: splits[c].train for c in columns}, trainer.ctx,
                                    task_weights=getattr(strategy, "task_weights", None))
        models = {c: new_model(backbone, fitted[c], column_cfgs[c], progress=progress) for c in columns}
        for m in models.values():
            m.ctx.notes = trainer.ctx.notes
        weights = getattr(strategy, "task_weights", None) or dict.fromkeys(columns, 1.0)
        return models, {"joint": True, "note": (
            f"{strategy.name} trained one backbone for {len(columns)} label columns jointly, one head each, the loss "
            "a weighted sum (" + ", ".join(f"{c} {float(weights.get(c, 1.0)):g}" for c in columns) + "; regression "
            "targets standardised). Each column's controls were trained on that column alone.")}
    models = {}
    shared = None
    for c in columns:
        m = new_model(backbone, strategy.clone(), column_cfgs[c], progress=progress)
        if shared is None:
            shared = m.feature_cache
        m.feature_cache = shared  # the same items: one extraction (and one cache) for every column
        m.strategy.fit(splits[c].train, m.ctx)
        models[c] = m
    return models, {"joint": False, "note": (
        f"{strategy.name} keeps the backbone frozen: its features were extracted once and one head fitted per label "
        "column (with a frozen backbone, training independent heads jointly is training them separately).")}


def _top_metrics(cfg: FitConfig, columns: list[str], tasks: dict[str, str], splits: dict[str, Splits],
                 results: dict[str, dict], joint: dict[str, Any], notes: list[str],
                 timings: dict[str, float]) -> dict[str, Any]:
    first = splits[columns[0]]
    return {
        "task": "multi-task",
        "run": {"name": Path(cfg.out).name if cfg.out else None, "created": now_iso(), "strategy": cfg.strategy,
                "backbone": cfg.model, "modality": first.modality, "seed": cfg.seed},
        "n_train": first.n_train, "n_test": len(first.test), "columns": columns, "joint": joint["joint"],
        "tasks": {c: {k: v for k, v in results[c].items() if k not in ("run", "timings")} for c in columns},
        "verdicts": {c: results[c].get("verdict") for c in columns},
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "notes": notes,
    }


def _write(run: RunDir, cfg: FitConfig, out: MultiTaskModel, splits: dict[str, Splits],
           column_cfgs: dict[str, FitConfig], report: ValidationReport) -> dict[str, Any]:
    """Each column's complete run under ``tasks/`` (``column_cfgs[c].out``), then the whole run's
    files, its card last."""
    run.begin()
    for c, model in out.models.items():
        write_stage(RunDir(column_cfgs[c].out), column_cfgs[c], model, splits[c])
    run.write_config(cfg.to_dict())
    run.write_json("metrics.json", out.metrics)
    run.write_json("validation.json", report.to_dict())
    run.write_json("skipped.json", report.skipped)
    run.write_text("report.html", render_multitask_report(out.metrics, card=out.card))
    return run.write_card(out.card)


# ----- a written multi-task run ---------------------------------------------------------------
def is_multitask_run(run: str | os.PathLike) -> bool:
    """True for the directory of a finished multi-task fit (its card lists ``multi_task``)."""
    rd = RunDir(run)
    if not rd.is_complete():
        return False
    card = rd.read_json("model_card.json", default=None)
    return isinstance(card, dict) and isinstance(card.get("multi_task"), dict)


def column_runs(run: str | os.PathLike) -> dict[str, Path]:
    """``{column: its run directory}`` of a multi-task run, each checked to stay inside it."""
    rd = RunDir(run)
    card = rd.card()
    entries = card.get("multi_task")
    if not isinstance(entries, dict) or not entries:
        raise UserInputError(f"{shown(rd.path)} is not a multi-task run", hint="give the --out of a multi-task fit")
    out = {}
    root = rd.path.resolve()
    for column, entry in entries.items():
        sub = (rd.path / str((entry or {}).get("dir", ""))).resolve()
        if root not in sub.parents:
            raise UserInputError(f"{shown(rd.file('model_card.json'))}: the folder of column {column!r} lies outside "
                                 "the run", hint="the card was edited: re-run the fit that wrote it")
        out[column] = sub
    return out


def load_multitask(run: str | os.PathLike, **load_options: Any) -> MultiTaskModel:
    """Every column's model of a multi-task run (options as :func:`transferkit.load`)."""
    rd = RunDir(run)
    models = {c: load(p, **load_options) for c, p in column_runs(run).items()}
    return MultiTaskModel(models, rd.metrics() or {}, rd.card(), rd.path)


def predict_multitask(run: str | os.PathLike, inputs, *, text_columns=None, skip_bad: bool = False,
                      backend: str = "torch", load_options: dict[str, Any] | None = None,
                      path_column: str | None = None) -> list[dict[str, Any]]:
    """One row per item with every column's prediction: ``<column>`` (and for classification
    and multi-label ``<column>:p(<class>)``), as ``transferkit predict`` writes them."""
    rows: list[dict[str, Any]] | None = None
    for column, sub in column_runs(run).items():
        part = predict_files(sub, inputs, text_columns=text_columns, skip_bad=skip_bad, backend=backend,
                             load_options=load_options, path_column=path_column)
        if rows is None:
            rows = [{"origin": r["origin"]} for r in part]
        for row, r in zip(rows, part):
            row[column] = r["prediction"]
            row.update({f"{column}:{k}": v for k, v in r.items() if k not in ("origin", "prediction")})
    return rows or []


def evaluate_multitask(run: str | os.PathLike, data: str, *, out: str | Path | None = None,
                       **options: Any) -> dict[str, Any]:
    """``{"tasks": {column: evaluate's metrics}}`` of every column on labelled ``data`` (each
    column's labels read from the column of the same name)."""
    results = {c: {"task": RunDir(sub).card().get("task", "classification"),
                   **evaluate_run(sub, data, label_column=c, **options)} for c, sub in column_runs(run).items()}
    summary = {"task": "multi-task", "tasks": results}
    if out:
        from .runs.rundir import json_bytes

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(json_bytes(summary))
    return summary
