"""Prediction and evaluation from a run directory, on files, folders and tables."""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._files import write_json
from .artifact import load
from .data import prepare_data, read_source
from .data.dataset import Dataset
from .errors import UserInputError
from .evaluation import classification_metrics


def _read_inputs(model, inputs: Sequence[str], text_columns, skip_bad: bool) -> Dataset:
    """Read unlabelled inputs of the model's modality and validate them (every problem at once)."""
    cols = text_columns or model.card.get("text_columns")
    parts = []
    for src in inputs:
        ds = read_source(src, text_columns=cols, label_column=None, modality=model.modality)
        parts.extend(ds if isinstance(ds, tuple) else [ds])
    merged = parts[0] if len(parts) == 1 else Dataset(
        modality=parts[0].modality, inputs=[x for p in parts for x in p.inputs],
        origins=[o for p in parts for o in p.origins], source=", ".join(inputs))
    if merged.modality != model.modality:
        raise UserInputError(f"this run's model takes {model.modality} data, but {', '.join(inputs)} "
                             f"holds {merged.modality} data")
    return prepare_data(merged, None, skip_bad=skip_bad, require_labels=False).train


def predict_files(run: str | Path, inputs: Sequence[str], *, text_columns=None, skip_bad: bool = False,
                  model=None) -> list[dict[str, Any]]:
    """Predict every item of the given tables, folders or files.

    Returns:
        One row per item: ``origin``, ``prediction``, ``confidence`` and ``p(<class>)`` columns.
    """
    model = model or load(run)
    ds = _read_inputs(model, inputs, text_columns, skip_bad)
    proba = model.predict_proba(ds)
    classes = model.classes
    rows = []
    for origin, p in zip(ds.origins, proba):
        k = int(p.argmax())
        row = {"origin": origin, "prediction": classes[k], "confidence": round(float(p[k]), 6)}
        row.update({f"p({c})": round(float(v), 6) for c, v in zip(classes, p)})
        rows.append(row)
    return rows


def write_predictions(rows: list[dict[str, Any]], out: str | Path | None) -> None:
    """CSV (default, or a ``.csv`` path) or JSON (a ``.json`` path); stdout when ``out`` is None."""
    if out and str(out).endswith(".json"):
        write_json(out, rows)
        return
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(buf.getvalue(), encoding="utf-8")
    else:
        sys.stdout.write(buf.getvalue())


def evaluate_run(run: str | Path, data: str, *, text_columns=None, label_column: str | None = None,
                 skip_bad: bool = False, out: str | Path | None = None, n_boot: int = 1000) -> dict[str, Any]:
    """Metrics of a trained run on labelled data (accuracy, macro-F1, per class, ECE, intervals)."""
    model = load(run)
    prepared = prepare_data(data, None, text_columns=text_columns or model.card.get("text_columns"),
                            label_column=label_column or model.card.get("label_column", "label"),
                            modality=model.modality, skip_bad=skip_bad)
    ds = prepared.train
    unknown = sorted(set(ds.labels) - set(model.classes))
    if unknown:
        raise UserInputError(f"{data}: labels the model was not trained on: {', '.join(unknown[:10])}",
                             hint=f"the model knows: {', '.join(model.classes)}")
    y = np.array([model.classes.index(c) for c in ds.labels])
    metrics = classification_metrics(y, model.predict_proba(ds), model.classes, n_boot=n_boot)
    metrics["data"] = {"source": str(data), "hash": ds.fingerprint(), "skipped": prepared.report.skipped}
    if out:
        write_json(out, metrics)
    return metrics
