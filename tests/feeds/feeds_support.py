"""Shared helpers of the feed tests: records through the real model, and a real webhook
receiver that verifies Standard Webhooks signatures with its own code, written from the
specification, so a bug in the sink's signer cannot hide behind a shared helper.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from celsync.model import Attempt, CallRecord
from celsync.sinks.base import Delivery

SECRET_KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(SECRET_KEY).decode()
TOLERANCE = 300  # seconds, as the reference libraries


def make_record(n: int, **overrides: Any) -> dict[str, Any]:
    """An answered incoming record (SPEC §7) through the real model, numbered ``n``."""
    values: dict[str, Any] = dict(
        call_id=f"1716900000.{n}", sub_call_id=f"1716900000.{n + 1000}", direction="incoming",
        answered=True, missed_at=None, extension="101", external_number="+79161234567",
        did="+74951112233", started_at="2024-05-28T15:20:00+03:00",
        answered_at="2024-05-28T15:20:07+03:00", ended_at="2024-05-28T15:20:49+03:00",
        duration=42, wait=7, recording_id=None, hangup_cause=16, dial_status="ANSWER", result=200,
        bitrix24_status="200", kommo_status=4, kommo_result="Success call",
    )
    values.update(overrides)
    return CallRecord(**values).to_dict()


def read_lines(proc: subprocess.Popen[str], n: int, timeout: float = 30.0) -> list[str]:
    """``n`` lines of a child's stdout; a child that goes quiet is killed, so a broken
    consumer fails the test (with short reads) instead of hanging it."""
    assert proc.stdout is not None
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        return [proc.stdout.readline() for _ in range(n)]
    finally:
        watchdog.cancel()


def delivery(record: dict[str, Any], version: int = 1, sink: str = "feed") -> Delivery:
    return Delivery(sink=sink, key=record["key"], version=version, fingerprint=f"fp{version}", record=record)


LOSE_RACE = Attempt(extension="102", dial_type="queue", hangup_cause="LOSE_RACE",
                    missed_call_type="ringing", ring_seconds=7, queue="500")
NO_ANSWER = Attempt(extension="103", dial_type="queue", hangup_cause="NO_ANSWER",
                    missed_call_type="ringing", ring_seconds=15, queue="500", sub_call_id="x.3")


# --- webhook receiver --------------------------------------------------------------------


class SignatureError(Exception):
    pass


def verify(key: bytes, headers: Any, body: bytes, now: float) -> dict[str, Any]:
    """Standard Webhooks v1 verification, from the specification: HMAC-SHA256 over
    ``id.timestamp.body`` with the base64-decoded secret, any ``v1,`` entry matching in
    constant time, timestamp within the tolerance."""
    msg_id, stamp, signatures = (headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and signatures):
        raise SignatureError("missing webhook headers")
    if "." in msg_id or not stamp.isdigit():
        raise SignatureError("malformed id or timestamp")
    if abs(now - int(stamp)) > TOLERANCE:
        raise SignatureError("timestamp outside the tolerance")
    expected = base64.b64encode(
        hmac.new(key, msg_id.encode() + b"." + stamp.encode() + b"." + body, hashlib.sha256).digest()
    )
    for entry in signatures.split(" "):
        version, _, sig = entry.partition(",")
        if version == "v1" and hmac.compare_digest(sig.encode(), expected):
            return json.loads(body)
    raise SignatureError("no matching v1 signature")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int


@dataclass
class Planned:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Receiver:
    """A threaded HTTP server that records every request and answers from a plan
    (default 204); unverifiable requests get 401 whatever the plan."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.received: list[Received] = []
        self.plan: deque[Planned] = deque()
        self._lock = threading.Lock()
        self._scheme = "https" if tls else "http"
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True, ssl_context=tls)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self._server.server_port}/hooks/calls"

    def start(self) -> "Receiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            verify(SECRET_KEY, headers, body, time.time())
            ok = True
        except SignatureError:
            ok = False
        with self._lock:
            planned = self.plan.popleft() if (self.plan and ok) else Planned()
            status = planned.status if ok else 401
            self.received.append(Received(request.path, headers, body, ok, status))
        time.sleep(planned.delay)
        return Response(status=status, headers=planned.headers)(environ, start_response)

    def verified(self) -> list[Received]:
        return [r for r in self.received if r.verified]
