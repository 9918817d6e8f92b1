"""Serving a run over HTTP (``transferkit serve RUN``): FastAPI + uvicorn, micro-batching with a
bounded queue, health and readiness, Prometheus metrics, drift monitoring.

Needs ``pip install 'transferkit[serve]'``; nothing here is imported by ``import transferkit``.
"""
from __future__ import annotations

from .server import BackgroundServer, serve
from .settings import ServeSettings

__all__ = ["create_app", "serve", "ServeSettings", "BackgroundServer"]


def create_app(run_dir, settings=None, *, predictor=None):
    """See :func:`transferkit.serve.app.create_app` (imported lazily: it needs FastAPI)."""
    from .server import _uvicorn

    _uvicorn()
    from .app import create_app as _create

    return _create(run_dir, settings, predictor=predictor)
