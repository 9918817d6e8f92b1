"""Tasks: what a label is, how outputs are decided and scored, and the transfer verdict.

``get_task(name)`` returns the registered stateless task (``classification``, ``regression``,
``multi-label``): ``encode`` labels, ``decide`` outputs, ``metrics`` with bootstrap intervals,
``verdict`` against the controls on the task's primary metric.  ``fit_linear`` /
``linear_outputs`` are the task's linear head on fixed features (the probe's and the controls').
Layer 1: numpy, scipy and scikit-learn only.
"""
from __future__ import annotations

from . import classification, multilabel, regression  # noqa: F401  (registers the tasks)
from .base import TASKS, Outputs, Task, get_task
from .linear import LinearFit, fit_linear, fit_logistic, linear_outputs, sigmoid, softmax

__all__ = ["TASKS", "LinearFit", "Outputs", "Task", "fit_linear", "fit_logistic", "get_task", "linear_outputs",
           "sigmoid", "softmax"]
