"""Prediction and evaluation from a run directory, on files, folders and tables."""
from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._files import write_json
from .data import prepare_data
from .data.dataset import Dataset
from .errors import UserInputError, shown
from .runs import load
from .tasks import get_task

if TYPE_CHECKING:
    import numpy as np


def _read_inputs(model, inputs: Sequence[str], text_columns, skip_bad: bool, path_column=None) -> Dataset:
    """Read unlabelled inputs of the model's modality and validate them (every problem at once).

    A table is read with the run's text columns, or with its column of file paths (``path_column``
    or the run's own); a folder (with or without class subfolders) gives every image or audio file
    under it; a single image or audio file is one item.
    """
    from .data import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS

    cols = text_columns or model.card.get("text_columns")
    exts = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS}.get(model.modality, ())
    parts = []
    for src in inputs:
        p = Path(src)
        if not p.exists():
            raise UserInputError(f"{shown(src)} does not exist", hint="give a table, a folder or files to predict")
        if exts and p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts
                           and not f.name.startswith("."))
            if not files:
                raise UserInputError(f"{shown(src)} holds no {model.modality} files ({', '.join(exts)})")
            src = Dataset(modality=model.modality, inputs=[str(f) for f in files],
                          origins=[str(f) for f in files], source=str(p))
        elif exts and p.suffix.lower() in exts:
            src = Dataset(modality=model.modality, inputs=[str(p)], origins=[str(p)], source=str(p))
        files_in = _path_column(model, src, path_column)
        ds = prepare_data(src, None, text_columns=None if files_in else cols, label_column=None,
                          modality=model.modality, skip_bad=skip_bad, require_labels=False,
                          path_column=files_in).train
        if ds.modality != model.modality:
            raise UserInputError(f"this run's model takes {model.modality} data, "
                                 f"but {shown(p)} holds {ds.modality} data")
        parts.append(ds)
    if len(parts) == 1:
        return parts[0]
    return Dataset(modality=model.modality, inputs=[x for d in parts for x in d.inputs],
                   origins=[o for d in parts for o in d.origins], source=", ".join(inputs))


def _path_column(model, src: Any, given: str | None) -> str | None:
    """The column of file paths to read ``src`` with: the one given, else the run's own; ``None``
    for a text run or a source that is not a table file (a folder, a Dataset)."""
    if model.modality == "text" or not isinstance(src, (str, Path)) or not Path(src).is_file():
        return None
    return given or model.card.get("path_column")


def tent_outputs(model, data: Dataset, options: dict[str, Any] | None = None) -> "np.ndarray":
    """Class probabilities ``(N, C)`` of ``data`` after TENT (Wang et al. 2021) adapted a copy of
    the model's normalisation parameters on ``data`` itself; the loaded model, and the run on
    disk, are unchanged afterwards (episodic).  For a classification run whose model is a backbone
    and a head on its features, in PyTorch (:func:`~transferkit.strategies.tent.episodic_outputs`).

    Raises:
        UserInputError: an ONNX-backed model, or a run that does not qualify (the reason).
    """
    from .strategies.tent import episodic_outputs

    if model.onnx is not None or model.backend != "torch":
        raise UserInputError("--tent trains the backbone's normalisation parameters, which needs the PyTorch "
                             "backbone", hint="drop --backend onnx (or --tent)")
    return episodic_outputs(model.backbone, model.strategy, data, device=model.ctx.device, seed=model.ctx.seed,
                            options=options)


def predict_files(run: str | Path, inputs: Sequence[str], *, text_columns=None, skip_bad: bool = False,
                  model=None, backend: str = "torch", load_options: dict[str, Any] | None = None,
                  path_column: str | None = None, tent: bool | dict[str, Any] = False) -> list[dict[str, Any]]:
    """Predict every item of the given tables, folders or files (``path_column``: the column of
    tables that list image or audio files; default: the run's).

    ``tent``: adapt the model by TENT on the items being predicted first (:func:`tent_outputs`;
    a dict gives TENT's options: epochs, max_items, batch_size, optimizer, lr); the run is unchanged.

    Returns:
        One row per item: ``origin`` and ``prediction``; classification adds ``confidence`` and
        a ``p(<class>)`` column per class; multi-label writes the predicted labels joined with
        ``;`` and a ``p(<label>)`` column per label; regression writes the predicted number.
    """
    model = model or load(run, backend=backend, **(load_options or {}))
    ds = _read_inputs(model, inputs, text_columns, skip_bad, path_column)
    outputs = (tent_outputs(model, ds, tent if isinstance(tent, dict) else None) if tent
               else model.predict_outputs(ds))
    decided = get_task(model.task).decide(outputs, model.strategy.thresholds_, classes=model.classes)
    classes = model.classes
    rows = []
    for i, origin in enumerate(ds.origins):
        if model.task == "regression":
            rows.append({"origin": origin, "prediction": float(decided[i])})
            continue
        p = outputs[i]
        if model.task == "multi-label":
            row = {"origin": origin, "prediction": ";".join(decided[i])}
        else:
            k = int(p.argmax())
            row = {"origin": origin, "prediction": classes[k], "confidence": round(float(p[k]), 6)}
        row.update({f"p({c})": round(float(v), 6) for c, v in zip(classes, p)})
        rows.append(row)
    return rows


#: A cell starting with one of these is a formula to a spreadsheet (``=HYPERLINK(...)``,
#: ``+cmd|...``, ``@SUM``); tab and carriage return start one in some of them too.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string that would start a formula gets a
    leading apostrophe (OWASP's advice for CSV injection); numbers are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_predictions(rows: list[dict[str, Any]], out: str | Path | None) -> None:
    """CSV (default, or a ``.csv`` path) or JSON (a ``.json`` path); stdout when ``out`` is None.

    In CSV, text cells (origins, class names, and column names made of them) that a spreadsheet
    would run as a formula are written with a leading apostrophe; JSON keeps every value as it is.
    """
    if out and str(out).endswith(".json"):
        write_json(out, rows)
        return
    buf = io.StringIO()
    if rows:
        fields = list(rows[0])
        w = csv.writer(buf)
        w.writerow([csv_safe(f) for f in fields])
        w.writerows([csv_safe(r[f]) for f in fields] for r in rows)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(buf.getvalue(), encoding="utf-8")
    else:
        sys.stdout.write(buf.getvalue())


def read_labelled(model, data, *, text_columns=None, label_column: str | None = None, skip_bad: bool = False,
                  path_column: str | None = None) -> tuple[Dataset, Any, list[dict[str, Any]]]:
    """Labelled ``data`` read as ``model``'s run reads it (its text, label and path columns unless
    given), validated, with labels of its task: ``(dataset, encoded labels, skipped items)``.

    Raises:
        UserInputError: a label the model was not trained on (and every data problem).
    """
    files_in = _path_column(model, data, path_column)
    cols = None if files_in else text_columns or model.card.get("text_columns")
    prepared = prepare_data(data, None, text_columns=cols,
                            label_column=label_column or model.card.get("label_column", "label"),
                            modality=model.modality, skip_bad=skip_bad, task=model.task,
                            label_sep=model.card.get("label_sep"), path_column=files_in)
    ds = prepared.train
    seen = (ds.labels if model.task == "classification" else
            [name for names in ds.labels for name in names] if model.task == "multi-label" else [])
    unknown = sorted(set(seen) - set(model.classes))
    if unknown:
        raise UserInputError(f"{shown(data)}: labels the model was not trained on: {', '.join(unknown[:10])}",
                             hint=f"the model knows: {', '.join(model.classes)}")
    return ds, get_task(model.task).encode(ds.labels, model.classes), prepared.report.skipped


def evaluate_run(run: str | Path, data: str, *, text_columns=None, label_column: str | None = None,
                 skip_bad: bool = False, out: str | Path | None = None, n_boot: int = 1000, backend: str = "torch",
                 load_options: dict[str, Any] | None = None, path_column: str | None = None) -> dict[str, Any]:
    """Metrics of a trained run on labelled data, those of its task, with intervals
    (classification: accuracy, macro-F1, per class, ECE; regression: RMSE, MAE, R², Spearman;
    multi-label: micro/macro-F1, subset accuracy, Hamming loss, mAP)."""
    model = load(run, backend=backend, **(load_options or {}))
    task = get_task(model.task)
    ds, y, skipped = read_labelled(model, data, text_columns=text_columns, label_column=label_column,
                                   skip_bad=skip_bad, path_column=path_column)
    metrics = task.metrics(y, model.predict_outputs(ds), model.classes, thresholds=model.strategy.thresholds_,
                           n_boot=n_boot)
    metrics["data"] = {"source": str(data), "hash": ds.fingerprint(), "skipped": skipped}
    if out:
        write_json(out, metrics)
    return metrics
