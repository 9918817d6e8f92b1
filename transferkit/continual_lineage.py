"""The data of a continual lineage (``continual.json``): labelled data read as the parent run
reads it (any class), the references that a lineage keeps to each step's training data and to
every test set (files, with the split's share and seed, checked by hash; a fitted run's own split
through its ``config.json``), and reading them back."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .data import prepare_data, stratified_split
from .data.dataset import Dataset
from .errors import DataValidationError, UserInputError, shown
from .model import TransferModel
from .runs import RunDir, recreate_splits


def read_labelled_any(parent: TransferModel, src: Any, text_columns, path_column, skip_bad: bool) -> Dataset:
    """Labelled ``src`` read as the parent's run reads data (its columns unless given); any class."""
    card = parent.card
    files_in = None
    if parent.modality != "text" and isinstance(src, str) and not src.endswith("/"):
        files_in = (path_column or card.get("path_column")) if Path(src).is_file() else None
    cols = None if files_in else text_columns or card.get("text_columns")
    try:
        return prepare_data(src, None, text_columns=cols, label_column=card.get("label_column", "label"),
                            modality=parent.modality, skip_bad=skip_bad, task="classification",
                            path_column=files_in).train
    except DataValidationError:
        found = found_modality(src)
        if found not in (None, parent.modality):
            raise UserInputError(f"{shown(src)} holds {found} items, and the run's model takes {parent.modality} "
                                 "data: an update keeps the parent's modality and backbone",
                                 hint=f"give labelled {parent.modality} data, or fit a new run on this data") from None
        raise


def found_modality(src: Any) -> str | None:
    """What ``src`` holds when nothing is assumed (for the message of data the run's reader
    refused: a folder of images given to a text run); ``None`` when it cannot be read at all."""
    try:
        return prepare_data(src, None, label_column=None, require_labels=False).train.modality
    except UserInputError:
        return None


def file_ref(src: str, ds: Dataset, reader: dict[str, Any], split: dict[str, Any] | None, name: str) -> dict:
    return {"name": name, "source": str(src), "split": split, "hash": ds.fingerprint(), "n": len(ds), **reader}


class Refs:
    """Reads the lineage's data references back (each source read once), ``None`` + a note when
    one is gone or changed."""

    def __init__(self, parent: TransferModel, skip_bad: bool, notes: list[str]):
        self.parent, self.skip_bad, self.notes, self._read = parent, skip_bad, notes, {}

    def get(self, ref: dict[str, Any] | None) -> Dataset | None:
        if not ref:
            return None
        try:
            if "run" in ref:
                key = ("run", ref["run"])
                if key not in self._read:
                    self._read[key] = recreate_splits(ref["run"])[:2]
                ds = self._read[key][0 if ref["part"] == "train" else 1]
            else:
                key = ("file", ref["source"], str(ref.get("text_columns")), ref.get("path_column"))
                if key not in self._read:
                    self._read[key] = read_labelled_any(self.parent, ref["source"], ref.get("text_columns"),
                                            ref.get("path_column"), self.skip_bad)
                ds = self._read[key]
                sp = ref.get("split")
                if sp:
                    ds = stratified_split(ds, test_size=sp["test_size"], seed=sp["seed"])[sp["part"] == "test"]
        except UserInputError as e:
            self.notes.append(f"{ref['name']} could not be read again ({e.message}): left out of this update")
            return None
        if ds is None or ds.fingerprint() != ref["hash"]:
            self.notes.append(f"{ref['name']} ({shown(ref.get('source') or ref.get('run'))}) changed since it was "
                              "recorded (its hash differs): left out of this update")
            return None
        return ds


def root_lineage(parent_dir: RunDir, parent: TransferModel, notes: list[str]) -> dict[str, Any]:
    """The lineage of a run that was fitted (not updated): its split from its config.json."""
    name = (parent.card.get("strategy") or {}).get("name")
    lineage = {"steps": [{"run": str(parent_dir.path), "command": "fit", "strategy": name,
                          "classes": parent.classes, "new_classes": parent.classes}],
               "train_sets": [None], "test_sets": [], "accuracy_matrix": [[]], "baseline": []}
    try:
        train, test, _ = recreate_splits(parent_dir.path)
    except UserInputError as e:
        notes.append(f"the parent's own split cannot be rebuilt ({e.message}): its data takes no part "
                     "(no test set of step 0, no joint or EWC data from it)")
        return lineage
    if train is not None:
        lineage["train_sets"] = [{"name": "step 0 training data", "run": str(parent_dir.path), "part": "train",
                                  "hash": train.fingerprint(), "n": len(train)}]
    lineage["test_sets"] = [{"name": "step 0 test", "ref": {"name": "step 0 test", "run": str(parent_dir.path),
                                                           "part": "test", "hash": test.fingerprint(),
                                                           "n": len(test)}, "first": 0}]
    return lineage
