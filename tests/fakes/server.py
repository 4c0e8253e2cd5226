"""A real HTTP server on 127.0.0.1 for a WSGI app, in a thread, that can go down and come back.

"Down" here means connection refused: the listening socket is closed, and ``start`` binds
the same port again, as a CRM behind a load balancer that restarts.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

logging.getLogger("werkzeug").setLevel(logging.ERROR)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:  # one line per request is noise
        pass


class ThreadedServer:
    """Serve ``app`` on ``127.0.0.1:<port>`` (port 0 picks a free one, kept across restarts)."""

    def __init__(self, app: Callable[..., Any], port: int = 0) -> None:
        self.app = app
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> "ThreadedServer":
        if self._server is None:
            self._server = make_server("127.0.0.1", self.port, self.app, threaded=True,
                                       request_handler=_QuietHandler)
            self._server.daemon_threads = True
            self.port = self._server.server_port
            self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(5)
            self._server = self._thread = None

    def __enter__(self) -> "ThreadedServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
