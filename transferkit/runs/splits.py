"""A run's training and test sets, rebuilt from its ``config.json`` exactly as ``fit`` made them."""
from __future__ import annotations

import os

from ..config import FitConfig
from ..data import few_shot_sample, prepare_data, stratified_split
from ..data.dataset import Dataset
from ..errors import UserInputError, shown
from .rundir import RunDir


def recreate_splits(run: str | os.PathLike) -> tuple[Dataset | None, Dataset, FitConfig]:
    """The training and test sets of a run (same files, split, seed and few-shot sample),
    checked against the data hashes of its model card.

    Raises:
        UserInputError: no config.json, no data path (a run fitted on in-memory data), or
            the files changed since the run (the hashes differ).
    """
    rd = RunDir(run)
    if not rd.file("config.json").is_file():
        raise UserInputError(f"{shown(rd.path)} has no config.json",
                             hint="give a run directory written by `transferkit fit`")
    cfg = FitConfig.from_file(rd.file("config.json"), any_command=True)
    if cfg.data is None and cfg.test:  # zero-shot evaluated on a test set alone: no training split
        return None, prepare_data(cfg.test, None, text_columns=cfg.text_columns, label_column=cfg.label_column,
                                  modality=cfg.modality, skip_bad=cfg.skip_bad, task=cfg.task,
                                  label_sep=cfg.label_sep, path_column=cfg.path_column).train, cfg
    if cfg.data is None:
        raise UserInputError(f"the run {shown(rd.path)} was fitted on data given in memory, so its split cannot be "
                             "rebuilt", hint="fit it from files (--data) to distil or measure it later")
    prepared = prepare_data(cfg.data, cfg.test, text_columns=cfg.text_columns, label_column=cfg.label_column,
                            modality=cfg.modality, skip_bad=cfg.skip_bad, task=cfg.task,
                            label_sep=cfg.label_sep, path_column=cfg.path_column)
    train, test = prepared.train, prepared.test
    if test is None:
        train, test = stratified_split(train, test_size=cfg.test_size, seed=cfg.seed)
    if cfg.labels_per_class:
        train = few_shot_sample(train, cfg.labels_per_class, seed=cfg.seed)
    want = (rd.read_json("model_card.json", {}) or {}).get("data") or {}
    for name, ds in (("training", train), ("test", test)):
        h = want.get("train_hash" if name == "training" else "test_hash")
        if h and h != ds.fingerprint():
            raise UserInputError(f"the {name} data of {shown(rd.path)} changed since the run ({shown(cfg.data)}"
                                 f"{', ' + shown(cfg.test) if cfg.test else ''}): "
                                 "its hash differs from the model card's",
                                 hint="restore the files the run was fitted on")
    return train, test, cfg
