"""HTTP plumbing shared by the CRM sinks: pacing, timeouts, redaction, "was it sent?".

The one question a CRM sink must answer after a failed request is whether the CRM may have
acted on it. A refused connection never reached the server (safe to send again); a read
timeout or a dropped connection may have (the outcome is unknown and must be reconciled
before anything is sent again). ``TransportError.maybe_sent`` carries that answer.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping
from urllib.parse import quote

import requests
from urllib3.exceptions import NewConnectionError

from celsync import __version__
from celsync.model import CallRecord
from celsync.ratelimit import TokenBucket
from celsync.sinks.base import Outcome

log = logging.getLogger(__name__)

_USER_AGENT = f"celsync/{__version__}"

#: How long a request may still be running on the CRM after we stopped waiting for it (the
#: Bitrix24 cloud ends a request after 60 s). An unknown outcome is not reconciled earlier,
#: or a batch still being executed would look missing and be sent a second time.
SETTLE_SECONDS = 60.0


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret in ``text`` by ``***`` (longest first, so parts never leak)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class Reply:
    """An HTTP response, reduced to what the sinks branch on."""

    status: int
    body: Any  # parsed JSON, or None when the body is empty or not JSON
    text: str  # the raw body, redacted and shortened, for error messages
    headers: Mapping[str, str] = field(default_factory=dict)


class TransportError(Exception):
    """The request failed below HTTP. ``maybe_sent``: the server may have acted on it."""

    def __init__(self, message: str, *, maybe_sent: bool) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent

    @property
    def outcome(self) -> Outcome:
        return Outcome.UNKNOWN if self.maybe_sent else Outcome.RETRY

    @property
    def retry_after(self) -> float | None:
        return SETTLE_SECONDS if self.maybe_sent else None


def _never_reached_server(exc: requests.RequestException) -> bool:
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0] if exc.args else None, "reason", None)
        return isinstance(reason, NewConnectionError)
    return False


class HttpClient:
    """A requests session that paces every request and never leaks a secret.

    Redirects are not followed: a CRM endpoint that redirects is misconfigured, and following
    it could carry a token or a webhook code to another host.
    """

    def __init__(
        self,
        bucket: TokenBucket,
        timeout: float,
        secrets: Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.bucket = bucket
        self.timeout = timeout
        self.secrets = tuple(s for s in secrets if s)
        self.requests = 0  # requests actually put on the wire (after pacing)
        self._session = requests.Session()
        self._session.headers.update({"User-Agent": _USER_AGENT, "Accept": "application/json"})
        if headers:
            self._session.headers.update(headers)

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def request(self, method: str, url: str, **kwargs: Any) -> Reply:
        """Send one paced request; raise ``TransportError`` if no HTTP response came back."""
        self.bucket.acquire()
        self.requests += 1
        try:
            resp = self._session.request(
                method, url, timeout=self.timeout, allow_redirects=False, **kwargs
            )
        except requests.RequestException as exc:
            raise TransportError(
                self.redact(f"{type(exc).__name__}: {exc}"), maybe_sent=not _never_reached_server(exc)
            ) from None
        try:
            body = resp.json() if resp.content else None
        except ValueError:
            body = None
        text = self.redact(resp.text[:500]) if resp.content else ""
        log.debug("%s %s -> %s", method, self.redact(url), resp.status_code)
        return Reply(resp.status_code, body, text, dict(resp.headers))

    def close(self) -> None:
        self._session.close()


_RECORD_FIELDS = ("key", *(f.name for f in dataclasses.fields(CallRecord)))


def check_recording_template(template: str | None, where: str) -> None:
    """Reject a bad ``recording_url`` template at start-up rather than at the first call."""
    if template is None:
        return
    try:
        template.format_map({name: "x" for name in _RECORD_FIELDS})
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"{where}: {template!r} is not a usable template ({type(exc).__name__}: {exc}); "
            "use call record fields in braces, e.g. 'https://pbx.example.com/rec/{recording_id}'"
        ) from None


def recording_url(template: str | None, record: Mapping[str, Any]) -> str | None:
    """The recording's URL from the configured template, or None when there is no recording.

    Values are percent-encoded (keeping ``/``) so that a recording id that is a file path
    stays one URL.
    """
    if not template or not record.get("recording_id"):
        return None
    values = {
        k: quote(str(v), safe="/")
        for k, v in record.items()
        if isinstance(v, (str, int)) and not isinstance(v, bool)
    }
    try:
        return template.format_map(values)
    except KeyError as exc:
        raise ValueError(f"recording_url needs the record field {exc}, which this record lacks") from None


def call_start(record: Mapping[str, Any]) -> datetime:
    """The record's ``started_at`` as an aware datetime (CRMs need the offset)."""
    raw = record.get("started_at")
    try:
        start = datetime.fromisoformat(str(raw))
    except ValueError:
        raise ValueError(f"started_at {raw!r} is not an ISO-8601 time") from None
    if start.tzinfo is None:
        raise ValueError(f"started_at {raw!r} has no UTC offset")
    return start
