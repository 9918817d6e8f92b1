"""Experiment tracking: a fit reported to MLflow or TensorBoard (``--track``); off by default.

One small interface, :class:`Tracker`, with two back ends, each importing its library only when a
fit asks for it (``import transferkit`` imports neither), and naming the ``pip install`` when it
is absent.  :class:`FitTracking` is what :func:`transferkit.pipeline.fit` drives:

- ``start(cfg)``: the resolved :class:`~transferkit.config.FitConfig`, flattened to dotted keys
  (``strategy_params.lr``), as MLflow params / a TensorBoard text entry;
- ``observe()``: around the strategy's fit, a training-loop callback
  (:func:`~transferkit.training.callbacks.observing`) reports ``train/loss`` and ``train/lr`` per
  optimizer step and ``epoch/loss``, ``epoch/val_*`` at each epoch's last step.  Steps count the
  optimizer steps of every training phase of the fit in turn (a strategy that trains twice, the
  second phase continues the first's steps); the random-init control's training is not reported;
- ``finish(metrics, run_dir)``: the final metrics (``test/<metric>`` with ``test/<metric>_ci_low``
  and ``_ci_high``, the same per control under ``controls/<name>/`` and for a delivered model
  under ``delivered/``, ``verdict/transfer_gain`` with its interval), the verdict (MLflow tag
  ``verdict``; TensorBoard text), the confusion matrix as an image, and (MLflow) the run
  directory's report, model card, metrics and config as artifacts.

A failed fit closes the MLflow run as ``FAILED``.  Under ``torchrun`` only process 0 tracks.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .config import TRACKERS, FitConfig
from .errors import MissingDependencyError, UserInputError, shown
from .runs.rundir import CARD, CONFIG, METRICS, REPORT, TENSORBOARD
from .training.callbacks import Callback, observing

#: Files of a run directory logged as MLflow artifacts, where present (``README.md``: the
#: Hugging Face-style model card).
ARTIFACTS = (REPORT, CARD, METRICS, CONFIG, "README.md")
#: MLflow refuses longer param values.
MAX_PARAM_CHARS = 6000
#: Per-metric keys that are settings or counts, not measurements.
_NOT_METRICS = {"n", "n_boot", "confidence"}
_NAME = re.compile(r"[^A-Za-z0-9_\-./ ]")  # what MLflow allows in a metric name


class Tracker(ABC):
    """One experiment tracker's side of a fit.  ``start`` opens its run; the ``log_*`` methods
    follow; ``close`` ends it (also when ``start`` was never reached)."""

    name = ""

    @abstractmethod
    def start(self, run_name: str, params: dict[str, str], tags: dict[str, str]) -> None: ...

    @abstractmethod
    def log_metrics(self, values: dict[str, float], step: int) -> None: ...

    @abstractmethod
    def log_verdict(self, verdict: str, explanation: str) -> None: ...

    @abstractmethod
    def log_image(self, name: str, png: bytes, step: int) -> None: ...

    def log_files(self, paths: list[Path]) -> None:  # noqa: B027 (a tracker without a file store keeps none)
        """Copies of the run directory's files."""

    @abstractmethod
    def close(self, failed: bool = False) -> None: ...


class MlflowTracker(Tracker):
    """An MLflow run in a tracking store: a local folder (``./mlruns``), or any tracking URI.

    Args:
        uri: the tracking URI or a folder; ``None``: ``$MLFLOW_TRACKING_URI``, else ``./mlruns``.
            The experiment is ``$MLFLOW_EXPERIMENT_NAME``, else ``transferkit``.
    """

    name = "mlflow"

    def __init__(self, uri: str | None = None):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise MissingDependencyError("--track mlflow", "'transferkit[mlflow]'") from None
        self.uri = store_uri(uri or os.environ.get("MLFLOW_TRACKING_URI") or "mlruns")
        if self.uri.startswith("file:"):
            # MLflow 3 keeps the folder store in maintenance mode and refuses it unless told;
            # the user asked for this folder, so it is allowed (a setting of theirs wins)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
        except Exception as e:  # MLflow's own error: an unknown scheme, a missing database driver
            raise self._store_error(e) from None
        self.run_id: str | None = None
        self._pending: list[Any] = []

    def start(self, run_name: str, params: dict[str, str], tags: dict[str, str]) -> None:
        from mlflow.entities import Param

        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "transferkit"
        try:
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
            self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        except Exception as e:  # the store's own error: an unreachable server, an unwritable folder
            raise self._store_error(e) from None
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def _store_error(self, e: Exception) -> UserInputError:
        return UserInputError(f"MLflow could not open the tracking store {self.uri}: {e}",
                              hint="pass --track-uri FOLDER (a local store) or a reachable tracking URI")

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self._pending += [Metric(k, v, stamp, step) for k, v in values.items()]
        if len(self._pending) >= 1000:
            self._flush()

    def _flush(self) -> None:
        for i in range(0, len(self._pending), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=self._pending[i:i + 1000])
        self._pending = []

    def log_verdict(self, verdict: str, explanation: str) -> None:
        self.client.set_tag(self.run_id, "verdict", verdict)
        self.client.set_tag(self.run_id, "verdict_explanation", explanation[:MAX_PARAM_CHARS])

    def log_image(self, name: str, png: bytes, step: int) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name.replace('/', '_')}.png"
            path.write_bytes(png)
            self.client.log_artifact(self.run_id, str(path))

    def log_files(self, paths: list[Path]) -> None:
        for p in paths:
            self.client.log_artifact(self.run_id, str(p))

    def close(self, failed: bool = False) -> None:
        if self.run_id is None:
            return
        try:
            self._flush()
        finally:
            self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


class TensorBoardTracker(Tracker):
    """TensorBoard event files in ``logdir`` (``tensorboard --logdir`` shows them), written by
    PyTorch's ``SummaryWriter``."""

    name = "tensorboard"

    def __init__(self, logdir: str | os.PathLike):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's writer needs the tensorboard package
            raise MissingDependencyError("--track tensorboard", "'transferkit[tensorboard]'") from None
        self._writer_class = SummaryWriter
        self.logdir = Path(logdir)
        self.writer = None

    def start(self, run_name: str, params: dict[str, str], tags: dict[str, str]) -> None:
        try:
            self.writer = self._writer_class(log_dir=str(self.logdir))
        except OSError as e:
            raise UserInputError(f"cannot write TensorBoard events into {shown(self.logdir)}: {e.strerror}",
                                 hint="pass --track-uri FOLDER where you can write") from None
        rows = "\n".join(f"| {k} | {v} |" for k, v in {**tags, **params}.items())
        self.writer.add_text("config", f"| setting | value |\n|---|---|\n{rows}", 0)

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def log_verdict(self, verdict: str, explanation: str) -> None:
        self.writer.add_text("verdict", f"**{verdict}**: {explanation}", 0)

    def log_image(self, name: str, png: bytes, step: int) -> None:
        import io

        import numpy as np
        from PIL import Image

        with Image.open(io.BytesIO(png)) as im:
            pixels = np.asarray(im.convert("RGB"))
        self.writer.add_image(name, pixels, step, dataformats="HWC")

    def close(self, failed: bool = False) -> None:
        if self.writer is not None:
            self.writer.close()


def store_uri(uri: str) -> str:
    """An MLflow tracking URI: a URI with a scheme as it is, a folder as its absolute ``file:`` URI."""
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]+):", uri)
    if scheme and scheme.group(1).lower() != "file":
        return uri
    path = uri[len("file:"):].removeprefix("//") if scheme else uri
    return Path(path).expanduser().resolve().as_uri()


def config_params(cfg: FitConfig) -> dict[str, str]:
    """The resolved config as ``{dotted key: text}``: nested dicts flattened, other values as
    JSON (strings as they are), each cut to MLflow's length limit."""
    out: dict[str, str] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict) and v:
                walk(v, f"{prefix}{k}.")
            else:
                text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
                out[_NAME.sub("_", f"{prefix}{k}")] = text[:MAX_PARAM_CHARS]

    walk(cfg.to_dict(), "")
    return out


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers a fit ends with, as ``{tracker metric name: value}``: the transfer
    model's test metrics and their interval bounds, each control's, the delivered model's, and
    the transfer gain over the best control."""
    out: dict[str, float] = {}
    _numbers(metrics.get("test") or {}, "test/", out)
    for name, cm in (metrics.get("controls") or {}).items():
        _numbers(cm or {}, f"controls/{name}/", out)
    delivered = metrics.get("delivered") or {}
    if isinstance(delivered.get("test"), dict) and delivered.get("candidates"):
        _numbers(delivered["test"], "delivered/", out)
    _numbers({k: metrics[k] for k in ("transfer_gain", "transfer_gain_ci") if k in metrics}, "verdict/", out)
    return out


def _numbers(d: dict[str, Any], prefix: str, out: dict[str, float]) -> None:
    for k, v in d.items():
        if k in _NOT_METRICS:
            continue
        if _finite(v):
            out[_NAME.sub("_", prefix + k)] = float(v)
        elif k.endswith("_ci") and isinstance(v, (list, tuple)) and len(v) == 2 and all(map(_finite, v)):
            out[_NAME.sub("_", f"{prefix}{k}_low")] = float(v[0])
            out[_NAME.sub("_", f"{prefix}{k}_high")] = float(v[1])


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def open_trackers(cfg: FitConfig) -> list[Tracker]:
    """The back ends ``cfg.track`` names, their libraries imported (missing: the pip install to run)."""
    made: list[Tracker] = []
    for name in cfg.track or []:
        if name == "mlflow":
            made.append(MlflowTracker(cfg.track_uri))
        elif name == "tensorboard":
            made.append(TensorBoardTracker(tensorboard_dir(cfg)))
        else:  # FitConfig checks the names: a tracker added there and not here
            raise AssertionError(f"tracker {name!r} of {TRACKERS} has no back end")
    return made


def run_name(cfg: FitConfig) -> str:
    """The run directory's name, else ``fit-<UTC time>``."""
    return Path(cfg.out).name if cfg.out else time.strftime("fit-%Y%m%d-%H%M%S", time.gmtime())


def tensorboard_dir(cfg: FitConfig) -> Path:
    """Where the event files go: ``track_uri/<run name>``, else ``out/tensorboard``, else
    ``./tensorboard/<run name>``."""
    if cfg.track_uri:
        return Path(cfg.track_uri).expanduser() / run_name(cfg)
    if cfg.out:
        return Path(cfg.out) / TENSORBOARD
    return Path(TENSORBOARD) / run_name(cfg)


class _Reporter(Callback):
    """The training loop's side: per-step and per-epoch logs, at a step that keeps counting
    across the loop calls of one fit."""

    def __init__(self, tracking: FitTracking):
        self.tracking = tracking
        self.offset = 0  # optimizer steps of the fit's earlier loop calls

    def on_step_end(self, state, logs: dict[str, Any]) -> None:
        self.tracking.log({f"train/{k}": v for k, v in logs.items() if _finite(v)}, self.offset + state.step)

    def on_epoch_end(self, state, logs: dict[str, Any]) -> None:
        values = {f"epoch/{k}": v for k, v in logs.items() if k not in ("epoch", "step", "best_epoch") and _finite(v)}
        self.tracking.log(values, self.offset + state.step)

    def on_train_end(self, state) -> None:
        self.offset += state.step


class FitTracking:
    """The trackers of one fit (none: every method does nothing).

    Use as a context manager around the fit: leaving it by an exception closes the runs as failed.
    """

    def __init__(self, trackers: list[Tracker], cfg: FitConfig):
        self.trackers = trackers
        self.cfg = cfg
        self.step = 0  # the last step reported: final metrics are logged there
        self._reporter = _Reporter(self)

    @classmethod
    def open(cls, cfg: FitConfig, *, active: bool = True) -> FitTracking:
        """The trackers ``cfg.track`` names; ``active=False`` (processes other than 0): none."""
        return cls(open_trackers(cfg) if active else [], cfg)

    def __enter__(self) -> FitTracking:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for t in self.trackers:
            t.close(failed=exc_type is not None)

    def start(self, cfg: FitConfig) -> None:
        """Open the runs with the resolved config's params."""
        if not self.trackers:
            return
        self.cfg = cfg
        tags = {"transferkit.strategy": str(cfg.strategy), "transferkit.backbone": str(cfg.model),
                "transferkit.task": str(cfg.task)}
        if cfg.out:
            tags["transferkit.run_dir"] = str(Path(cfg.out).resolve())
        params = config_params(cfg)
        for t in self.trackers:
            t.start(run_name(cfg), params, tags)

    @contextmanager
    def observe(self) -> Iterator[None]:
        """Report every training loop run inside the block."""
        if not self.trackers:
            yield
            return
        with observing(self._reporter):
            yield

    def log(self, values: dict[str, float], step: int) -> None:
        self.step = max(self.step, step)
        if values:
            for t in self.trackers:
                t.log_metrics(values, step)

    def finish(self, metrics: dict[str, Any], run_dir: str | os.PathLike | None) -> None:
        """The fit's results: final metrics, verdict, confusion matrix, the run directory's files."""
        if not self.trackers:
            return
        self.log(final_metrics(metrics), self.step)
        png = _confusion_png(metrics)
        files = [Path(run_dir) / name for name in ARTIFACTS] if run_dir is not None else []
        for t in self.trackers:
            if metrics.get("verdict"):
                t.log_verdict(str(metrics["verdict"]), str(metrics.get("verdict_explanation") or ""))
            if png is not None:
                t.log_image("test/confusion_matrix", png, self.step)
            t.log_files([p for p in files if p.is_file()])


def _confusion_png(metrics: dict[str, Any]) -> bytes | None:
    """The transfer model's test confusion matrix as the report draws it (classification only)."""
    test = metrics.get("test") or {}
    if not test.get("confusion_matrix"):
        return None
    from .report.plots import confusion_heatmap

    classes = [str(c) for c in (test.get("classes") or metrics.get("classes") or [])]
    return confusion_heatmap(test["confusion_matrix"], classes)
