"""The typed, round-tripping configuration of a fit.

Every run writes its resolved :class:`FitConfig` to ``config.json``;
``transferkit fit --config runs/x/config.json`` re-runs it exactly.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data.dataset import TASK_NAMES
from .errors import UserInputError, shown

DEFAULT_MODELS = {"text": "minilm-l6", "image": "efficientnet-lite0", "timeseries": "ts-fcn-ucr"}
#: Experiment trackers a fit can report to (:mod:`transferkit.tracking`).
TRACKERS = ("mlflow", "tensorboard")


@dataclass(frozen=True)
class FitConfig:
    """Everything that determines a fit.

    Attributes:
        data: training data: a table (CSV/TSV/JSONL/JSON/Parquet, optionally .gz) or a folder
            of images/audio with one subfolder per class (optionally under train/ and test/).
        test: a separate labelled test set; without one, a stratified split of ``data``.
        text_columns: table columns holding the text (several are joined with a newline).
        path_column: a table whose rows name image or audio files: the column of their paths
            (relative to the table's folder); the modality comes from the files' extensions.
        label_column: table column holding the label; several, comma-separated (or a list),
            make a multi-task fit: one shared backbone, one head per column
            (:func:`transferkit.multitask.fit_multitask`).
        task: ``classification``, ``regression`` or ``multi-label``; ``None`` infers it from the
            labels (JSON lists or ``label_sep``: multi-label; many distinct numbers stop the run
            and ask for ``--task``); the resolved task is what ``config.json`` records.  With
            several label columns, one name for all or ``"topic=classification,stars=regression"``
            (a dict in Python).
        label_sep: multi-label labels written as one delimited string (``"sports;politics"``).
        modality: ``text``/``image``/``audio``; inferred from the data when ``None``.
        model: zoo name, local transformers directory or hub id (default per modality), or
            ``"auto"``: rank ``candidates`` on the training split and take the best
            (:mod:`transferkit.auto`).
        candidates: with ``model="auto"``: the ``NAME[@LAYER]`` candidates (default: the
            installed zoo models of the data's modality).
        backbone_options: ``layer``, ``pooling``, ``max_length``, ``max_chunks``, ``image_size``,
            ``allow_pickle``, ``trust_remote_code``.
        strategy: registry name of the adaptation strategy; ``None`` means ``linear-probe``, or
            ``auto`` (chosen from the data) when ``model="auto"``.
        strategy_params: its hyper-parameters.
        labels_per_class: few-shot: sample this many labelled training items per class.
        target_unlabelled: unlabelled data of the domain the model will meet (a table or
            folder; labels in it are never read).  The domain-adaptation strategies (``dann``,
            ``mmd``, ``coral``, ``self-training``) adapt to it; with any strategy the report
            gives the domain distance between the training data and it.
        test_size: share of ``data`` held out when there is no ``test``.
        seed: seeds the split, sampling, training and bootstrap.
        out: the run directory (``None``: nothing is written).
        skip_bad: leave out bad items (recorded in the run) instead of stopping.
        control: train the no-transfer controls and give a verdict.
        select: deliver the best model that selection on the training data finds among the
            transfer model, the linear probe, the hybrid and the classical model
            (:mod:`transferkit.selection`); ``False`` delivers the transfer model itself.  The
            verdict always judges the transfer model.
        batch_size: items per forward pass during feature extraction.
        backend: runtime of feature extraction: ``torch``, or ``onnx`` (ONNX Runtime on CPU, the
            backbone's feature graph exported once per cache key and checked against PyTorch;
            needs ``transferkit[export]``).  Training that tunes the backbone runs in PyTorch.
        cache: reuse and fill the on-disk feature cache.
        n_boot: bootstrap resamples for the intervals.
        resume: strategies that train continue from the newest complete checkpoint in
            ``out/checkpoints/`` (re-running a killed command picks up where it stopped);
            ``False`` starts over.
        keep_checkpoints: training checkpoints kept per model once the run is written (they
            only serve to resume a killed fit, and can weigh several times the model): 0, the
            default, removes them; K keeps the newest K.
        track: experiment trackers to report the fit to: ``["mlflow"]``, ``["tensorboard"]`` or
            both (text: ``"mlflow,tensorboard"``); ``None``: none (:mod:`transferkit.tracking`).
        track_uri: MLflow's tracking URI (default ``$MLFLOW_TRACKING_URI``, else ``./mlruns``), or
            TensorBoard's log folder (default ``out/tensorboard``, else ``./tensorboard``); with
            both trackers it cannot name both places, so it is refused.
    """

    data: str | None = None
    test: str | None = None
    text_columns: list[str] | None = None
    path_column: str | None = None
    label_column: str = "label"
    task: str | None = None
    label_sep: str | None = None
    modality: str | None = None
    model: str | None = None
    candidates: list[str] | None = None
    backbone_options: dict[str, Any] = field(default_factory=dict)
    strategy: str | None = None
    strategy_params: dict[str, Any] = field(default_factory=dict)
    labels_per_class: int | None = None
    target_unlabelled: str | None = None
    test_size: float = 0.2
    seed: int = 0
    out: str | None = None
    skip_bad: bool = False
    control: bool = True
    select: bool = True
    batch_size: int = 32
    backend: str = "torch"
    cache: bool = True
    n_boot: int = 1000
    resume: bool = True
    keep_checkpoints: int = 0
    track: list[str] | None = None
    track_uri: str | None = None

    def __post_init__(self) -> None:
        for name in ("data", "test", "target_unlabelled", "out"):  # a path object is written as its text
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                if not isinstance(v, os.PathLike):
                    raise UserInputError(f"{name} must be a path, got {type(v).__name__}",
                                         hint="an in-memory Dataset goes to fit(train=..., test=...)")
                object.__setattr__(self, name, os.fspath(v))
        if isinstance(self.candidates, str):
            object.__setattr__(self, "candidates", [c.strip() for c in self.candidates.split(",") if c.strip()])
        if self.candidates and self.model != "auto":
            raise UserInputError("candidates are only used with model='auto'",
                                 hint="pass --model auto --models a,b,c, or one --model")
        if isinstance(self.text_columns, str):
            object.__setattr__(self, "text_columns",
                               [c.strip() for c in self.text_columns.split(",") if c.strip()])
        if self.path_column is not None and (not isinstance(self.path_column, str) or not self.path_column.strip()):
            raise UserInputError(f"path_column must be a column name, got {self.path_column!r}",
                                 hint="e.g. --path-column file")
        if self.path_column is not None and self.text_columns:
            raise UserInputError("give either text_columns (texts in the table) or path_column (files listed in it)",
                                 hint="use --text-column for texts, --path-column for image or audio files")
        if self.labels_per_class is not None and (not isinstance(self.labels_per_class, int)
                                                  or self.labels_per_class < 1):
            raise UserInputError(f"labels_per_class must be a positive integer, got {self.labels_per_class!r}")
        if not 0.0 < float(self.test_size) < 1.0:
            raise UserInputError(f"test_size must be between 0 and 1, got {self.test_size!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UserInputError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.backend not in ("torch", "onnx"):
            raise UserInputError(f"backend must be torch or onnx, got {self.backend!r}")
        if isinstance(self.label_column, (list, tuple)):  # Python: label_column=["topic", "stars"]
            object.__setattr__(self, "label_column", ",".join(str(c) for c in self.label_column))
        if isinstance(self.task, dict):  # Python: task={"topic": "classification", "stars": "regression"}
            object.__setattr__(self, "task", ",".join(f"{k}={v}" for k, v in self.task.items()))
        columns = self.label_columns
        if not columns or len(set(columns)) != len(columns):
            raise UserInputError(f"label_column must name one column or several distinct ones, got "
                                 f"{self.label_column!r}",
                                 hint="e.g. --label-column label, or --label-column topic,stars")
        by_column = self.tasks_by_column()  # checks the task names
        if len(columns) == 1:  # "label=regression" for one column is plain "regression"
            object.__setattr__(self, "task", by_column[columns[0]])
        if self.label_sep is not None and (not isinstance(self.label_sep, str) or not self.label_sep):
            raise UserInputError(f"label_sep must be a non-empty string, got {self.label_sep!r}",
                                 hint='e.g. --label-sep ";" for labels written as "sports;politics"')
        if self.modality not in (None, "text", "image", "audio", "timeseries"):
            raise UserInputError(f"modality must be text, image, audio or timeseries, not {self.modality!r}")
        if isinstance(self.keep_checkpoints, bool) or not isinstance(self.keep_checkpoints, int) \
                or self.keep_checkpoints < 0:
            raise UserInputError(f"keep_checkpoints must be a whole number >= 0, got {self.keep_checkpoints!r}")
        if not isinstance(self.n_boot, int) or self.n_boot < 100:
            raise UserInputError(f"n_boot must be an integer >= 100, got {self.n_boot!r}")
        self._check_tracking()

    def _check_tracking(self) -> None:
        track = self.track
        if isinstance(track, str):  # "mlflow,tensorboard" from the command line or JSON
            track = [t.strip() for t in track.split(",") if t.strip()]
        if not track:
            object.__setattr__(self, "track", None)
            if self.track_uri is not None:
                raise UserInputError("track_uri is set but no tracker is",
                                     hint="add --track mlflow or --track tensorboard")
            return
        bad = [t for t in track if t not in TRACKERS]
        if bad or len(set(track)) != len(track):
            raise UserInputError(f"track must name distinct trackers among {', '.join(TRACKERS)}, got {track!r}",
                                 hint="e.g. --track mlflow, or --track mlflow,tensorboard")
        object.__setattr__(self, "track", list(track))
        if self.track_uri is not None and (not isinstance(self.track_uri, str) or not self.track_uri.strip()):
            raise UserInputError(f"track_uri must be a URI or folder, got {self.track_uri!r}")
        if self.track_uri is not None and len(track) > 1:
            raise UserInputError("track_uri names one place, and two trackers are asked for",
                                 hint="set MLflow's with the MLFLOW_TRACKING_URI variable and leave --track-uri out: "
                                      "TensorBoard then writes into the run directory (out/tensorboard)")
        if len(self.label_columns) > 1:
            raise UserInputError("experiment tracking follows one model's training; a multi-task fit (several "
                                 "label columns) is not tracked", hint="leave out --track, or fit one column at a time")

    @property
    def label_columns(self) -> list[str]:
        """The label column(s): several for a multi-task fit (``"topic,stars"``)."""
        return [c.strip() for c in str(self.label_column).split(",") if c.strip()]

    def tasks_by_column(self) -> dict[str, str | None]:
        """``{column: task or None (inferred)}`` from ``task``: one task name applies to every
        column; ``"topic=classification,stars=regression"`` names each (unnamed columns: inferred).

        Raises:
            UserInputError: an unknown task name, or a column that is not a label column.
        """
        columns = self.label_columns
        spec = self.task
        if spec is None or "=" not in spec:
            if spec not in (None, *TASK_NAMES):
                raise UserInputError(f"task must be one of {', '.join(TASK_NAMES)}, not {spec!r}",
                                     hint="leave it out to infer it from the labels" + (
                                         "; with several label columns: --task topic=classification,stars=regression"
                                         if len(columns) > 1 else ""))
            return dict.fromkeys(columns, spec)
        out: dict[str, str | None] = dict.fromkeys(columns)
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            column, _, name = (x.strip() for x in part.partition("="))
            if column not in out:
                raise UserInputError(f"task {part!r} names column {column!r}, which is not a label column "
                                     f"({', '.join(columns)})", hint="pass --label-column with every column it names")
            if name not in TASK_NAMES:
                raise UserInputError(f"task {part!r}: {name!r} is not one of {', '.join(TASK_NAMES)}")
            out[column] = name
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> FitConfig:
        """A copy with ``changes`` (validated like a new config)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserInputError(f"unknown configuration keys: {', '.join(unknown)}",
                                 hint=f"allowed: {', '.join(sorted(names))}")
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> FitConfig:
        """The config of ``path``: a bare config, or a run's ``config.json`` written by ``fit``."""
        return cls.from_file(path)

    @classmethod
    def from_file(cls, path: str | Path, *, any_command: bool = False) -> FitConfig:
        """Read a config file.

        Args:
            any_command: also accept the config.json of a run another command wrote (a distilled
                student's names the teacher's data and split); ``fit --config`` takes only fit's.
        """
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise UserInputError(f"cannot read config {shown(path)}: {e.strerror}") from None
        except ValueError as e:
            raise UserInputError(f"{shown(path)} is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise UserInputError(f"{shown(path)} is not a JSON object")
        command = d.get("command", "fit")
        if command != "fit" and not any_command:
            raise UserInputError(f"{shown(path)} is the config of a `transferkit {command}` run, not of a fit",
                                 hint=f"re-run it with `transferkit {command}`")
        d = d.get("config", d)  # accept a bare config or {"config": ..., "transferkit_version": ...}
        if not isinstance(d, dict):
            raise UserInputError(f"{shown(path)}: 'config' is not a JSON object")
        return cls.from_dict(d)
