"""The data layer: read user data, check it before any model is loaded, split it.

Typical use::

    from transferkit.data import prepare_data
    prepared = prepare_data("emails.jsonl.gz", text_columns=["subject", "body"])
    prepared.train, prepared.test, prepared.report
"""
from .dataset import Dataset
from .validate import PreparedData, Problem, ValidationReport, prepare_data
from .readers import (AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, DataWarning, from_arrays, load_audio,
                      load_image, read_source)
from .split import few_shot_sample, stratified_split

__all__ = ["Dataset", "Problem", "ValidationReport", "PreparedData", "prepare_data",
           "read_source", "from_arrays", "load_image", "load_audio", "IMAGE_EXTENSIONS",
           "AUDIO_EXTENSIONS", "DataWarning", "stratified_split", "few_shot_sample"]
