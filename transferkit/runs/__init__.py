"""Run directories: one owner for every file (:class:`RunDir`), loading a run back
(:func:`load`), and rebuilding its splits (:func:`recreate_splits`)."""
from __future__ import annotations

from .loading import load
from .rundir import DELIVERED_WEIGHTS, FORMAT, REFERENCE_MAX_ROWS, RunDir, now_iso, versions
from .splits import recreate_splits

__all__ = ["DELIVERED_WEIGHTS", "FORMAT", "REFERENCE_MAX_ROWS", "RunDir", "load", "now_iso", "recreate_splits",
           "versions"]
