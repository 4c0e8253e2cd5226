"""Redis stream sink: one XADD per record, read through consumer groups (SPEC §8, issue #4).

The dialer of seed 004 pushes CDRs onto a list that a single worker pops. A stream instead
keeps the entries: every consumer group gets every record, the consumers of one group share
the load, and an entry stays pending until acknowledged, so a dead consumer's work can be
claimed (``celsync.feed``).

Each entry has flat string fields that cover the dialer's CDR plus ``key``, ``version`` and
the whole record as JSON (``record``). With ``attempts: true`` every missed dial attempt
(SPEC §6.5) follows its record as its own entry (``type=attempt``). A batch is one MULTI/EXEC:
its entries land together or not at all, so reconciling an unknown outcome only has to look
for the record entry.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from celsync.config import ConfigError
from celsync.model import CallRecord
from celsync.sinks.base import Delivery, Outcome, Result, Sink

if TYPE_CHECKING:
    from celsync.config import RedisSinkConfig

#: newest entries scanned by ``reconcile`` (XREVRANGE pages). An entry older than that is
#: sent again; consumers drop the duplicate by key + version.
RECONCILE_SCAN = 10_000
_PAGE = 500
#: record fields a custom_call_ref / campaign_ref setting may name
RECORD_FIELDS = ("key", *(f.name for f in dataclasses.fields(CallRecord)))
#: missed_at values that mean no agent's phone was involved: the dialer's "extension is null"
NO_AGENT = frozenset({"queue", "ivr", "group"})
#: unanswered outgoing results -> disposition (anything else unanswered is FAILED)
_OUTGOING = {486: "BUSY", 603: "BUSY", 408: "NO ANSWER", 480: "NO ANSWER", 0: "NO ANSWER"}


def disposition(record: Mapping[str, Any]) -> str:
    """ANSWERED | MISSED | BUSY | NO ANSWER | FAILED, the CDR-style summary of a record.

    Answered is ANSWERED whatever the result. An unanswered incoming record is a missed call
    (MISSED; ``sip_code`` says why). Unanswered outgoing: 486 busy and 603 declined are
    BUSY, 408/480 and an unknown result (0) are NO ANSWER, any other failure is FAILED.
    """
    if record.get("answered"):
        return "ANSWERED"
    if record.get("direction") == "incoming":
        return "MISSED"
    return _OUTGOING.get(int(record.get("result") or 0), "FAILED")


def agent_extension(record: Mapping[str, Any]) -> str:
    """The agent's extension, or ``""`` when the call never reached an agent's phone (a
    missed call's ``extension`` then names the queue, IVR or ring group)."""
    if not record.get("answered") and record.get("missed_at") in NO_AGENT:
        return ""
    return _text(record.get("extension"))


def record_fields(
    record: Mapping[str, Any], version: int, custom_ref: str | None, campaign_ref: str | None
) -> dict[str, str]:
    """The flat fields of a record entry (all strings, ``""`` for absent values).

    ``dial_number`` is the PBX side's number (the DID dialled for incoming calls, the line
    used for outgoing ones), like the seed's "dialer's number"; ``client_number`` is the
    other party.
    """
    return {
        "type": "record",
        "key": _text(record["key"]),
        "version": str(version),
        "internal_call_ref": _text(record.get("call_id")),
        "ext": agent_extension(record),
        "custom_call_ref": _text(record.get(custom_ref)) if custom_ref else "",
        "campaign_ref": _text(record.get(campaign_ref)) if campaign_ref else "",
        "disposition": disposition(record),
        "sip_code": _text(record.get("result")),
        "client_number": _text(record.get("external_number")),
        "dial_number": _text(record.get("did")),
        "direction": _text(record.get("direction")),
        "missed_at": _text(record.get("missed_at")),
        "started_at": _text(record.get("started_at")),
        "ended_at": _text(record.get("ended_at")),
        "duration": _text(record.get("duration")),
        "record": json.dumps(record, separators=(",", ":"), ensure_ascii=False),
    }


def attempt_fields(parent: Mapping[str, str], number: int, attempt: Mapping[str, Any]) -> dict[str, str]:
    """The flat fields of the ``number``-th (from 1) missed dial attempt of a record entry."""
    return {
        "type": "attempt",
        "key": f"{parent['key']}#attempt{number}",
        "record_key": parent["key"],
        "version": parent["version"],
        "internal_call_ref": parent["internal_call_ref"],
        "custom_call_ref": parent["custom_call_ref"],
        "campaign_ref": parent["campaign_ref"],
        "ext": _text(attempt.get("extension")),
        "hangup_cause": _text(attempt.get("hangup_cause")),
        "dial_type": _text(attempt.get("dial_type")),
        "missed_call_type": _text(attempt.get("missed_call_type")),
        "ring_seconds": _text(attempt.get("ring_seconds")),
        "queue": _text(attempt.get("queue")),
        "started_at": _text(attempt.get("started_at")),
    }


def stream_entries(d: Delivery, cfg: RedisSinkConfig) -> list[dict[str, str]]:
    """Every entry one delivery adds: its record, then its attempts when enabled."""
    head = record_fields(d.record, d.version, cfg.custom_call_ref, cfg.campaign_ref)
    if not cfg.attempts:
        return [head]
    return [head, *(attempt_fields(head, i, a) for i, a in enumerate(d.record.get("attempts") or (), 1))]


def connect(cfg: RedisSinkConfig, read_timeout: float | None = None) -> redis.Redis:
    """A client for the sink's URL. No transparent retries: a retried EXEC whose reply was
    lost would add the entries twice; the delivery engine decides what to re-send."""
    return redis.Redis.from_url(
        cfg.url, decode_responses=True, socket_connect_timeout=cfg.timeout,
        socket_timeout=read_timeout or cfg.timeout, retry=Retry(NoBackoff(), 0),
    )


class RedisSink(Sink):
    """XADD records (and optionally their attempts) to one stream, one MULTI per batch."""

    def __init__(self, cfg: RedisSinkConfig, client: redis.Redis | None = None) -> None:
        self.name = cfg.sink_name
        self.batch_size = cfg.batch_size
        for setting in ("custom_call_ref", "campaign_ref"):
            value = getattr(cfg, setting)
            if value is not None and value not in RECORD_FIELDS:
                raise ConfigError(
                    f"sink {self.name!r}: {setting}: {value!r} is not a call record field; use one of "
                    f"{', '.join(RECORD_FIELDS)} (or null for an empty field)"
                )
        self._cfg = cfg
        self._client = client or connect(cfg)

    def send(self, batch: Sequence[Delivery]) -> list[Result]:
        pipe = self._client.pipeline(transaction=True)
        spans: list[tuple[Delivery, int]] = []
        for d in batch:
            entries = stream_entries(d, self._cfg)
            for fields in entries:
                pipe.xadd(self._cfg.stream, fields, maxlen=self._cfg.maxlen, approximate=True)
            spans.append((d, len(entries)))
        try:
            replies = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            error = f"XADD to stream {self._cfg.stream!r}: {exc}; the outcome is unknown"
            return [Result(d.key, Outcome.UNKNOWN, error) for d in batch]
        except redis.ResponseError as exc:  # EXEC refused as a whole: nothing was added
            error = f"XADD to stream {self._cfg.stream!r} refused: {exc}"
            return [Result(d.key, Outcome.RETRY, error) for d in batch]
        results, at = [], 0
        for d, n in spans:
            errors = [r for r in replies[at:at + n] if isinstance(r, Exception)]
            at += n
            if errors:
                results.append(Result(d.key, Outcome.RETRY, (
                    f"XADD of {d.key} to stream {self._cfg.stream!r} failed: {errors[0]} "
                    "(is the key a stream? check the sink's 'stream')"
                )))
            else:
                results.append(Result(d.key, Outcome.DELIVERED, remote_id=replies[at - n]))
        return results

    def reconcile(self, batch: Sequence[Delivery]) -> list[Result]:
        """DELIVERED for deliveries whose record entry (same key and version) is among the
        newest RECONCILE_SCAN entries, RETRY for the rest: a crash between EXEC and the
        ledger write is then not sent twice."""
        wanted = {(d.key, str(d.version)) for d in batch}
        found: dict[tuple[str, str], str] = {}
        upper, scanned = "+", 0
        while scanned < RECONCILE_SCAN and len(found) < len(wanted):
            page = self._client.xrevrange(self._cfg.stream, max=upper, min="-", count=_PAGE)
            for entry_id, fields in page:
                ident = (fields.get("key", ""), fields.get("version", ""))
                if fields.get("type") == "record" and ident in wanted:
                    found.setdefault(ident, entry_id)
            scanned += len(page)
            if len(page) < _PAGE:
                break
            upper = "(" + page[-1][0]
        results = []
        for d in batch:
            entry_id = found.get((d.key, str(d.version)))
            results.append(
                Result(d.key, Outcome.DELIVERED, remote_id=entry_id) if entry_id
                else Result(d.key, Outcome.RETRY)
            )
        return results

    def close(self) -> None:
        self._client.close()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
