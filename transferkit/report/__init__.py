"""The run report: a self-contained HTML page with the verdict, metrics and plots.

``render_report(metrics, card=..., skipped=..., validation=...)`` returns the HTML text;
``write_report(path, metrics, ...)`` writes it.  matplotlib is only imported when a report
is rendered.
"""
from __future__ import annotations

from .html import render_report, write_report

__all__ = ["render_report", "write_report"]
