"""Webhook sink: POST each record, signed the Standard Webhooks v1 way (SPEC §8, issue #4).

Request: ``{"type": "call.record", "timestamp": <the call's end time>, "data": <record>}`` as
compact JSON, with ``webhook-id`` (key + content version: stable across retries, so the
receiver dedupes on it), ``webhook-timestamp`` (integer seconds of this attempt) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``).

Outcomes: 2xx delivered; 410 Gone disables the sink; every other answer, a redirect (never
followed), a timeout or a connection error is RETRY, honouring ``Retry-After``. Retrying a
timed-out POST instead of reconciling is safe because the retry carries the same
``webhook-id``, which is the standard's dedupe mechanism. A receiver that keeps refusing a
record (400, 422...) sends it to the dead letters once the retry horizon is over.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import hmac
import json
import time
from datetime import timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence
from urllib.parse import urljoin

import requests

from celsync import __version__
from celsync.config import ConfigError
from celsync.delivery import describe, redact
from celsync.sinks.base import Delivery, Outcome, Result, Sink, SinkDisabled

if TYPE_CHECKING:
    from celsync.config import WebhookSinkConfig

SECRET_PREFIX = "whsec_"
EVENT_TYPE = "call.record"
_SECRET_BYTES = (24, 64)  # Standard Webhooks: at least 192 bits, at most 512
_EXCERPT = 200  # characters of a refusal's body quoted in the error
_GENERATE = "python3 -c \"import base64,os;print('whsec_'+base64.b64encode(os.urandom(32)).decode())\""


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret. As in the reference library the prefix
    and the base64 padding are optional. Errors describe the problem, never the secret."""
    body = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "the webhook secret is not 'whsec_' followed by base64; generate one with " + _GENERATE
        ) from None
    low, high = _SECRET_BYTES
    if not low <= len(key) <= high:
        raise ValueError(
            f"the webhook secret decodes to {len(key)} bytes; Standard Webhooks needs {low} to "
            f"{high} random bytes; generate one with {_GENERATE}"
        )
    return key


def webhook_id(key: str, version: int) -> str:
    """``<key>#v<version>`` with ``.`` replaced by ``_``: the standard forbids ``.`` in ids
    (it delimits the signed content), and Asterisk uniqueids are ``epoch.sequence``."""
    return f"{key}#v{version}".replace(".", "_")


def encode_body(record: Mapping[str, Any]) -> bytes:
    """The exact bytes sent and signed. ``timestamp`` is the call's end (its start while it
    has none), never the send time, so every retry of one webhook-id carries the same body."""
    payload = {
        "type": EVENT_TYPE,
        "timestamp": record.get("ended_at") or record.get("started_at"),
        "data": record,
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now``: delay-seconds or an HTTP date; None if absent
    or unreadable (the engine's own backoff applies then)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


def judge_response(
    key: str, url: str, status: int, reason: str, headers: Mapping[str, str], text: str, now: float
) -> Result:
    """The outcome of one POST to ``url`` from the receiver's answer. Raises SinkDisabled on
    410. URLs in messages keep only scheme and host: webhook paths often are secrets."""
    where = redact(url)
    if 200 <= status < 300:
        return Result(key, Outcome.DELIVERED)
    if status == 410:
        raise SinkDisabled(
            f"webhook {where} answered 410 Gone for {key}: the endpoint is disabled; "
            "re-enable the sink once the receiver is back"
        )
    if 300 <= status < 400:
        location = redact(urljoin(url, headers["location"])) if headers.get("location") else "nowhere"
        error = (
            f"{where} answered {status} {reason} (redirect to {location}) for {key}: redirects "
            "are not followed; set the sink's url to the final address"
        )
    else:
        excerpt = " ".join(text.split())[:_EXCERPT]
        error = f"{where} answered {status} {reason} for {key}" + (f": {excerpt}" if excerpt else "")
    return Result(key, Outcome.RETRY, error, retry_after_seconds(headers.get("retry-after"), now))


class WebhookSink(Sink):
    """POST one signed record per request (the config fixes ``batch_size`` to 1)."""

    def __init__(
        self,
        cfg: WebhookSinkConfig,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = cfg.sink_name
        self.batch_size = cfg.batch_size
        self._cfg = cfg
        try:
            self._key = decode_secret(cfg.secret)
        except ValueError as exc:
            raise ConfigError(f"sink {self.name!r}: secret: {exc}") from None
        self._session = session or requests.Session()
        self._session.headers["user-agent"] = f"celsync/{__version__}"
        self._clock = clock
        self._where = redact(cfg.url)

    def send(self, batch: Sequence[Delivery]) -> list[Result]:
        return [self._post(d) for d in batch]

    def _post(self, d: Delivery) -> Result:
        msg_id = webhook_id(d.key, d.version)
        body = encode_body(d.record)
        timestamp = int(self._clock())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, msg_id, timestamp, body),
        }
        try:
            resp = self._session.post(
                self._cfg.url, data=body, headers=headers, timeout=self._cfg.timeout,
                allow_redirects=False, verify=self._cfg.verify_tls,
            )
        except requests.exceptions.SSLError:
            return Result(d.key, Outcome.RETRY, (
                f"TLS verification of {self._where} failed for {d.key}: fix the receiver's "
                "certificate (verify_tls: false only for a test endpoint)"
            ))
        except requests.RequestException as exc:
            return Result(d.key, Outcome.RETRY, (
                f"POST {self._where} for {d.key} failed: {describe(exc)}; it is retried with the "
                "same webhook-id"
            ))
        with resp:
            return judge_response(
                d.key, self._cfg.url, resp.status_code, resp.reason or "", resp.headers, resp.text,
                self._clock(),
            )

    def close(self) -> None:
        self._session.close()
