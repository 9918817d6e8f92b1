"""The data layer: read user data, check it before any model is loaded, split it.

Typical use::

    from transferkit.data import prepare_data
    prepared = prepare_data("emails.jsonl.gz", text_columns=["subject", "body"])
    prepared.train, prepared.test, prepared.report
    prepare_data("houses.csv", label_column="price", task="regression")   # floats
    prepare_data("topics.jsonl")   # labels that are JSON lists: multi-label (a warning says so)
"""
from ..errors import shown as printable
from ._audio import AUDIO_EXTENSIONS, load_audio, resample
from ._images import IMAGE_EXTENSIONS, load_image
from ._tables import split_columns
from .checks import text_problem
from .dataset import TASK_NAMES, Dataset
from .readers import DataWarning, from_arrays, read_source
from .report import Problem, ValidationReport
from .split import few_shot_sample, split_indices, stratified_split
from .validate import PreparedData, prepare_data

__all__ = ["Dataset", "TASK_NAMES", "Problem", "ValidationReport", "PreparedData", "prepare_data",
           "read_source", "from_arrays", "load_image", "load_audio", "resample", "IMAGE_EXTENSIONS",
           "AUDIO_EXTENSIONS", "DataWarning", "stratified_split", "split_indices", "few_shot_sample",
           "split_columns", "text_problem", "printable"]
