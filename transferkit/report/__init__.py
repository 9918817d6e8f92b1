"""The run report: a self-contained HTML page with the verdict, metrics and plots.

``render_report(metrics, card=..., skipped=..., validation=...)`` returns the HTML text;
``write_report(path, metrics, ...)`` writes it.  The pages are Jinja2 templates in
``templates/`` (autoescaping on); ``rank.write_rank`` writes ``transferkit rank``'s pages.
``notebook`` gives fitted models and rankings their Jupyter views (``_repr_html_``).
matplotlib and Jinja2 are only imported when a page is rendered.
"""
from __future__ import annotations

from . import notebook  # noqa: F401  (hands TransferModel its notebook view)
from .html import render_report, write_report

__all__ = ["render_report", "write_report"]
