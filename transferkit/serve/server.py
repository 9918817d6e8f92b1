"""Running the app: ``serve`` (blocking, for the command line) and :class:`BackgroundServer`
(a real uvicorn server on a thread, for tests and benchmarks)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from ..errors import MissingDependencyError
from .settings import ServeSettings


def _uvicorn():
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise MissingDependencyError("transferkit serve", "'transferkit[serve]'") from None
    return uvicorn


def serve(run_dir: str | Path, settings: ServeSettings | None = None) -> None:
    """Load the run (errors are raised here, before binding), then serve until interrupted."""
    uvicorn = _uvicorn()
    from .app import create_app
    from .predictor import Predictor

    settings = settings or ServeSettings.for_run(run_dir)
    app = create_app(run_dir, settings, predictor=Predictor(run_dir))
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)


class BackgroundServer:
    """A real uvicorn server on a thread; ``with BackgroundServer(app) as url: ...``.

    Args:
        app: an ASGI app (from :func:`~transferkit.serve.create_app`).
        host: interface (loopback).
        port: 0 picks a free port; the URL says which.
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, start_timeout_s: float = 60.0):
        uvicorn = _uvicorn()
        self.config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                     lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(self.config)
        self.start_timeout_s = start_timeout_s
        self.thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> str:
        self.thread = threading.Thread(target=self.server.run, name="transferkit-uvicorn", daemon=True)
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() - t0 > self.start_timeout_s:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
