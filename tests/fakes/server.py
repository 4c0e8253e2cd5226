"""A real HTTP server on 127.0.0.1 for a WSGI app, in a thread, that can go down and come back,
and the fault controls the fake CRMs share.

"Down" here means connection refused: the listening socket is closed, and ``start`` binds
the same port again, as a CRM behind a load balancer that restarts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
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


@dataclass
class Scripted:
    """A reply given instead of the real one (after running the request, if ``execute``)."""

    status: int
    body: Any
    execute: bool = False


class Faults:
    """Test controls shared by the fake CRMs: scripted replies, late and held answers.

    A fake appends one entry per request to ``log`` (under ``lock``), then asks
    ``_next_faults`` what to do with that request, and calls ``_linger`` after replying.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.log: list[Any] = []
        self._script: deque[Scripted] = deque()
        self._delays: deque[float] = deque()
        self._holds: dict[int, tuple[threading.Event, threading.Event]] = {}  # by request number

    def script(self, n: int, status: int, body: Any, *, execute: bool = False) -> None:
        """The next ``n`` requests get this reply (after running, if ``execute``)."""
        with self.lock:
            self._script.extend(Scripted(status, body, execute) for _ in range(n))

    def delay_next(self, seconds: float) -> None:
        """Run the next request, then answer ``seconds`` late (the client times out)."""
        with self.lock:
            self._delays.append(seconds)

    def hold_next(self, after: int = 0) -> tuple[threading.Event, threading.Event]:
        """Let ``after`` requests pass, then run the next one, set ``executed``, and answer
        only once ``release`` is set (a client killed meanwhile never hears back)."""
        pair = (threading.Event(), threading.Event())
        with self.lock:
            self._holds[len(self.log) + after + 1] = pair
        return pair

    def _next_faults(self) -> tuple[Scripted | None, float, tuple[threading.Event, threading.Event] | None]:
        """For the request just logged: (scripted reply, delay, hold)."""
        scripted = self._script.popleft() if self._script else None
        delay = self._delays.popleft() if self._delays else 0.0
        return scripted, delay, self._holds.pop(len(self.log), None)

    @staticmethod
    def _linger(delay: float, hold: tuple[threading.Event, threading.Event] | None) -> None:
        if hold is not None:
            executed, release = hold
            executed.set()
            release.wait(60)
        if delay:
            time.sleep(delay)


def most_in_window(times: list[float], width: float = 1.0) -> int:
    """The most requests that arrived within any ``width`` seconds (a sliding-window limit)."""
    times = sorted(times)
    best = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
