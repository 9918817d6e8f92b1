"""Run directories: one owner for every file (:class:`RunDir`), loading a run back
(:func:`load`), a run as a backbone (:class:`RunBackbone`), and rebuilding its splits
(:func:`recreate_splits`)."""
from __future__ import annotations

from .loading import load
from .run_backbone import RunBackbone, is_run_dir
from .rundir import DELIVERED_WEIGHTS, FORMAT, REFERENCE_MAX_ROWS, RunDir, now_iso, versions
from .splits import recreate_splits

__all__ = ["DELIVERED_WEIGHTS", "FORMAT", "REFERENCE_MAX_ROWS", "RunBackbone", "RunDir", "is_run_dir", "load",
           "now_iso", "recreate_splits", "versions"]
