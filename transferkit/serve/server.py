"""Running the app: ``serve`` (blocking, for the command line) and :class:`BackgroundServer`
(a real uvicorn server on a thread, for tests and benchmarks)."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError
from .settings import ServeSettings


def _uvicorn():
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise MissingDependencyError("transferkit serve", "'transferkit[serve]'") from None
    return uvicorn


def _idle_protocol():
    """uvicorn's HTTP protocol, with the keep-alive timer also running before a connection's
    first request: uvicorn starts it only after a response, so a client that connects and
    sends nothing would hold its socket for ever (300 such sockets stayed open)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class IdleTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)

    return IdleTimeoutProtocol


def uvicorn_config(app, settings: ServeSettings, *, host: str | None = None, port: int | None = None,
                   log_level: str = "info"):
    """The uvicorn configuration of a served app: the settings' host and port, connections
    closed after ``keep_alive_s`` idle (before their first request too), at most
    ``max_connections`` open (requests beyond get 503), a bounded graceful shutdown."""
    uvicorn = _uvicorn()
    return uvicorn.Config(app, host=settings.host if host is None else host,
                          port=settings.port if port is None else port, log_level=log_level, access_log=False,
                          lifespan="on", http=_idle_protocol(), ws="none", timeout_keep_alive=settings.keep_alive_s,
                          limit_concurrency=settings.max_connections, timeout_graceful_shutdown=5)


def serve(run_dir: str | Path, settings: ServeSettings | None = None,
          load_options: dict[str, Any] | None = None, tent: bool = False) -> None:
    """Load the run (errors are raised here, before binding), then serve until interrupted.

    Args:
        load_options: passed to :func:`~transferkit.runs.load` (``backbone``, ``trust_remote_code``,
            ``allow_pickle``): the user's own permissions, never the run's.
        tent: adapt on each request's items by TENT before predicting them, the model reset after
            each request (:class:`~transferkit.serve.predictor.Predictor`).
    """
    uvicorn = _uvicorn()
    from .app import create_app
    from .predictor import Predictor

    settings = settings or ServeSettings.for_run(run_dir)
    app = create_app(run_dir, settings, predictor=Predictor(run_dir, load_options, tent=tent,
                                                                **settings.predictor_options()))
    try:
        uvicorn.Server(uvicorn_config(app, settings)).run()
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it handled: the shutdown was clean
        pass


class BackgroundServer:
    """A real uvicorn server on a thread; ``with BackgroundServer(app) as url: ...``.

    Args:
        app: an ASGI app (from :func:`~transferkit.serve.create_app`); its settings give the
            connection limits, as for ``transferkit serve``.
        host: interface (loopback).
        port: 0 picks a free port; the URL says which.
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, start_timeout_s: float = 60.0):
        uvicorn = _uvicorn()
        state = getattr(getattr(app, "state", None), "serve", None)
        settings = state.settings if state is not None else ServeSettings()
        self.config = uvicorn_config(app, settings, host=host, port=port, log_level="warning")
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
