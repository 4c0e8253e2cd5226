"""Kommo (amoCRM) sink: ``POST /api/v4/calls`` in arrays of up to 50 (SPEC §8, crm-apis.md §2).

Why it is built this way:

* Kommo stores ``uniq`` but never checks it, so a call sent twice is two notes. The
  delivery ledger is the only guard, and an unknown outcome (timeout, crash) is resolved by
  reading the call notes back (``GET /api/v4/{entity}/notes``, compare ``params.uniq``)
  before anything is sent again.
* Kommo blocks an IP that keeps getting 429s (every request then gets 403). So requests are
  paced a little under the published 7/s, a 429 pauses the sink for its ``retry_after``
  without another request, and a 403 stops the sink (``SinkDisabled``) for an operator.
* Kommo rejects ``null`` for optional keys: they are left out.
* A phone Kommo cannot match ("Entity not found") is dead-lettered with the reason, or, if
  configured, becomes an incoming (Unsorted) SIP lead carrying the call.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from celsync.config import KommoSinkConfig
from celsync.ratelimit import TokenBucket
from celsync.sinks.base import Delivery, Outcome, Result, Sink, SinkDisabled
from celsync.sinks.crm_http import (
    SETTLE_SECONDS,
    HttpClient,
    Reply,
    TransportError,
    call_start,
    check_recording_template,
    recording_url,
)

log = logging.getLogger(__name__)

CALLS = "/api/v4/calls"
UNSORTED_SIP = "/api/v4/leads/unsorted/sip"
UNSORTED = "/api/v4/leads/unsorted"
#: Entities a call note can land on (Kommo's attachment rule picks one of them).
NOTE_ENTITIES = ("leads", "contacts", "companies", "customers")
CALL_NOTE_TYPES = ("call_in", "call_out")

#: Requests per ``send``.
REQUESTS_PER_SEND = 4
#: Pace at this share of the configured rate, so that network jitter never puts one
#: request too many into a one-second window (repeated 429s get the IP blocked).
RATE_MARGIN = 0.95
#: Pause after a 429 that does not say how long to wait.
DEFAULT_RETRY_AFTER = 10.0
#: A send that would have to wait longer than this for the bucket returns RETRY instead.
MAX_PACING_WAIT = 1.0
#: How far before a call's start its note may be stamped (clock skew between PBX and CRM).
NOTE_TIME_SLACK = 24 * 3600
LIST_LIMIT = 250
#: The call fields a call note keeps in its ``params`` (what an update rewrites).
NOTE_PARAMS = ("uniq", "duration", "source", "link", "phone", "call_status", "call_result")


class KommoError(Exception):
    """Kommo could not answer a reconcile question; the deliveries stay unknown."""


# --- pure request building -------------------------------------------------------------


def call_item(
    record: Mapping[str, Any], *, source: str, users: Mapping[str, int], default_user: int | None,
    link: str | None,
) -> dict[str, Any]:
    """The ``/api/v4/calls`` object of one record; optional keys are omitted, never null.

    Raises ValueError naming the field when the record cannot become a Kommo call.
    """
    phone = record.get("external_number")
    if not phone:
        raise ValueError("the record has no external number (Kommo matches calls by phone)")
    answered = bool(record.get("answered"))
    item: dict[str, Any] = {
        "direction": "outbound" if record.get("direction") == "outgoing" else "inbound",
        "uniq": record["key"],
        "duration": math.ceil(record.get("duration") or 0) if answered else 0,
        "source": source,
        "phone": str(phone),
        "created_at": int(call_start(record).timestamp()),
    }
    if record.get("kommo_status") is not None:
        item["call_status"] = int(record["kommo_status"])
    if record.get("kommo_result"):
        item["call_result"] = str(record["kommo_result"])
    if link:
        item["link"] = link
    user = users.get(record.get("extension") or "", default_user)
    if user is not None:
        item["responsible_user_id"] = user
        item["created_by"] = user
    return item


def note_params(item: Mapping[str, Any]) -> dict[str, Any]:
    """What a call note keeps of a call (``params``), as an edit writes it."""
    return {k: item[k] for k in NOTE_PARAMS if k in item}


def unsorted_item(item: Mapping[str, Any], *, source: str, request_id: str) -> dict[str, Any]:
    """An incoming SIP lead that carries the call, for a phone no contact has yet."""
    metadata = {
        "uniq": item["uniq"],
        "duration": item["duration"],
        "service_code": source,
        "phone": item["phone"],
        "called_at": item["created_at"],
        "is_call_event_needed": True,
    }
    if "link" in item:
        metadata["link"] = item["link"]
    if "responsible_user_id" in item:
        metadata["from"] = item["responsible_user_id"]
    return {
        "source_uid": item["uniq"],
        "source_name": source,
        "created_at": item["created_at"],
        "metadata": metadata,
        "_embedded": {"contacts": [{
            "name": item["phone"],
            "custom_fields_values": [{"field_code": "PHONE", "values": [{"value": item["phone"]}]}],
        }]},
        "request_id": request_id,
    }


def problem(reply: Reply) -> str:
    """A readable one-liner of a Kommo error reply (problem+json or plain text)."""
    body = reply.body
    if isinstance(body, Mapping):
        parts = [str(body[k]) for k in ("title", "detail") if body.get(k)]
        if parts:
            return f"HTTP {reply.status} " + ": ".join(parts)
    return f"HTTP {reply.status} {reply.text!r}" if reply.text else f"HTTP {reply.status}"


def validation_errors(body: Any) -> dict[str, str]:
    """``request_id -> "path: detail; ..."`` from a 400 ``validation-errors`` reply."""
    out: dict[str, str] = {}
    for entry in body.get("validation-errors") or [] if isinstance(body, Mapping) else []:
        if not isinstance(entry, Mapping):
            continue
        details = [
            f"{e.get('path', '?')}: {e.get('detail') or e.get('code') or 'invalid'}"
            for e in entry.get("errors") or [] if isinstance(e, Mapping)
        ]
        out[str(entry.get("request_id"))] = "; ".join(details) or "invalid"
    return out


def per_item(body: Any, embedded: str, id_field: str) -> tuple[dict[str, str], dict[str, str]] | None:
    """``(accepted request_id -> remote id, rejected request_id -> reason)``, or None.

    Kommo answers a calls batch with ``_embedded.calls`` for what it took and ``errors`` for
    what it did not; everything it does not mention counts as not taken.
    """
    if not isinstance(body, Mapping) or "validation-errors" in body:
        return None
    if not any(k in body for k in ("_embedded", "errors", "_total_items")):
        return None
    accepted: dict[str, str] = {}
    inner = body.get("_embedded")
    for row in (inner.get(embedded) or []) if isinstance(inner, Mapping) else []:
        if isinstance(row, Mapping) and row.get("request_id") is not None:
            accepted[str(row["request_id"])] = str(row.get(id_field, ""))
    rejected: dict[str, str] = {}
    for err in body.get("errors") or []:
        if isinstance(err, Mapping) and err.get("request_id") is not None:
            reason = ": ".join(str(err[k]) for k in ("title", "detail") if err.get(k))
            rejected[str(err["request_id"])] = reason or "rejected"
    return accepted, rejected


# --- the sink ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    delivery: Delivery
    item: dict[str, Any]

    @property
    def key(self) -> str:
        return self.delivery.key


@dataclass(frozen=True)
class _Failure:
    """A request Kommo did not answer with per-call results."""

    outcome: Outcome
    message: str
    retry_after: float | None = None

    def result(self, call: _Call) -> Result:
        return Result(call.key, self.outcome, f"call {call.key}: {self.message}", self.retry_after)


class KommoSink(Sink):
    """Delivers call records to a Kommo account with a long-lived token."""

    def __init__(self, cfg: KommoSinkConfig) -> None:
        check_recording_template(cfg.recording_url, f"sinks[{cfg.sink_name}].recording_url")
        if not cfg.base_url.startswith(("https://", "http://")):
            raise ValueError(f"sinks[{cfg.sink_name}].base_url must look like https://<subdomain>.kommo.com")
        if not cfg.token.strip():
            raise ValueError(f"sinks[{cfg.sink_name}].token is empty (set it from the environment)")
        self.cfg = cfg
        self.name = cfg.sink_name
        self.batch_size = REQUESTS_PER_SEND * cfg.batch_size
        self._base = cfg.base_url.rstrip("/")
        bucket = TokenBucket(cfg.rate * RATE_MARGIN, 1)
        self.client = HttpClient(
            bucket, cfg.timeout, secrets=(cfg.token,), headers={"Authorization": f"Bearer {cfg.token}"}
        )

    # -- engine interface --

    def send(self, batch: Sequence[Delivery]) -> list[Result]:
        wait = self.client.bucket.available_in()
        if wait > MAX_PACING_WAIT:
            return [Result(d.key, Outcome.RETRY, "paused after a Kommo 429", wait) for d in batch]
        results: dict[str, Result] = {}
        calls = self._calls(batch, results)
        changed = [c for c in calls if c.delivery.previously_delivered]
        if changed:  # Kommo may have it: edit its note rather than add a second one
            self._sync(changed, self._find([c.delivery for c in changed]), results)
            calls = [c for c in calls if c.key not in results]
        unmatched: dict[str, str] = {}  # key -> Kommo's reason
        failure = self._post_all(CALLS, calls, results, unmatched)
        later = [c for c in calls if c.key in unmatched and c.key not in results]
        if failure is None and later:
            if self.cfg.create_unsorted_leads:
                failure = self._post_all(UNSORTED_SIP, later, results, unmatched)
            else:
                for c in later:
                    results[c.key] = Result(c.key, Outcome.DEAD, (
                        f"call {c.key}: Kommo has no contact, company or lead with phone {c.item['phone']} "
                        f"({unmatched[c.key]}); add the contact and retry the dead letter, "
                        "or enable create_unsorted_leads"))
        if failure is not None:  # what this send did not get to was never sent
            pause = failure.retry_after if failure.outcome is Outcome.RETRY else None
            for c in calls:
                results.setdefault(c.key, _Failure(Outcome.RETRY, failure.message, pause).result(c))
        return [results[d.key] for d in batch]

    def reconcile(self, batch: Sequence[Delivery]) -> list[Result]:
        results: dict[str, Result] = {}
        calls = self._calls(batch, results)
        self._sync(calls, self._find([c.delivery for c in calls]), results)
        missing = {c.key for c in calls if c.key not in results}
        if self.cfg.create_unsorted_leads and missing:
            leads = self._scan(UNSORTED, {"filter[category][]": ["sip"]}, "unsorted", missing, "metadata")
            results.update((key, Result(key, Outcome.DELIVERED)) for key in leads)
        for key in missing - set(results):
            results[key] = Result(key, Outcome.RETRY, f"call {key}: no Kommo call note carries this uniq")
        return [results[d.key] for d in batch]

    def close(self) -> None:
        self.client.close()

    # -- sending --

    def _calls(self, batch: Sequence[Delivery], results: dict[str, Result]) -> list[_Call]:
        calls = []
        for d in batch:
            try:
                link = recording_url(self.cfg.recording_url, d.record)
                item = call_item(d.record, source=self.cfg.source, users=self.cfg.users,
                                 default_user=self.cfg.default_user, link=link)
            except (ValueError, KeyError) as exc:
                results[d.key] = Result(d.key, Outcome.DEAD, f"call {d.key}: {exc}")
                continue
            calls.append(_Call(d, item))
        return calls

    def _post_all(
        self, path: str, calls: list[_Call], results: dict[str, Result], unmatched: dict[str, str],
    ) -> _Failure | None:
        """POST ``calls`` in chunks; fill ``results`` (and ``unmatched`` for calls Kommo found
        no entity for). Stops at the first chunk Kommo did not answer per call."""
        queue = list(calls)
        while queue:
            chunk, queue = queue[: self.cfg.batch_size], queue[self.cfg.batch_size:]
            payload = [self._payload(path, c, str(i)) for i, c in enumerate(chunk)]
            reply = self._request("POST", path, payload)
            if isinstance(reply, Reply) and reply.status == 400 and validation_errors(reply.body):
                invalid = validation_errors(reply.body)
                named = any(str(i) in invalid for i in range(len(chunk)))
                for i, c in enumerate(chunk):
                    if str(i) in invalid or not named:
                        why = invalid.get(str(i)) or problem(reply)
                        results[c.key] = Result(c.key, Outcome.DEAD, f"call {c.key}: Kommo rejected it: {why}")
                # the others were refused only because of the invalid ones: send them again
                queue = [c for c in chunk if c.key not in results] + queue
                continue
            embedded, id_field = ("unsorted", "uid") if path == UNSORTED_SIP else ("calls", "id")
            parts = per_item(reply.body, embedded, id_field) if isinstance(reply, Reply) and reply.status in (200, 400) else None
            if parts is None:
                failure = reply if isinstance(reply, _Failure) else self._http_failure(reply)
                for c in chunk:
                    results[c.key] = failure.result(c)
                return failure
            accepted, rejected = parts
            for i, c in enumerate(chunk):
                if str(i) in accepted:
                    results[c.key] = Result(c.key, Outcome.DELIVERED, remote_id=accepted[str(i)] or None)
                elif path == UNSORTED_SIP:
                    results[c.key] = Result(c.key, Outcome.DEAD, f"call {c.key}: Kommo refused the incoming "
                                            f"lead: {rejected.get(str(i), 'not created')}")
                else:
                    unmatched[c.key] = rejected.get(str(i), "Entity not found")
        return None

    def _payload(self, path: str, call: _Call, request_id: str) -> dict[str, Any]:
        if path == UNSORTED_SIP:
            return unsorted_item(call.item, source=self.cfg.source, request_id=request_id)
        return dict(call.item, request_id=request_id)

    def _request(self, method: str, path: str, payload: Any = None, params: Any = None) -> Reply | _Failure:
        """One paced request; transport trouble and 429 come back as a ``_Failure``.

        A 403 raises ``SinkDisabled``: the engine stops the sink and treats the batch as
        unknown, so calls this send already stored are found by ``reconcile``, not re-sent.
        """
        try:
            reply = self.client.request(method, self._base + path, json=payload, params=params)
        except TransportError as exc:
            return _Failure(exc.outcome, f"Kommo unreachable: {exc}", exc.retry_after)
        if reply.status == 429:
            pause = self._retry_after(reply)
            self.client.bucket.defer(pause)
            log.warning("Kommo answered 429: pausing %.0f s (repeated 429s get the IP blocked)", pause)
            return _Failure(Outcome.RETRY, f"Kommo answered {problem(reply)}", pause)
        if reply.status == 403:
            message = (f"Kommo refused the integration ({problem(reply)}): the IP or account is blocked "
                       "or the token lacks access; fix it, then re-enable the sink")
            log.error(message)
            raise SinkDisabled(message)
        return reply

    @staticmethod
    def _retry_after(reply: Reply) -> float:
        body = reply.body if isinstance(reply.body, Mapping) else {}
        for value in (body.get("retry_after"), reply.headers.get("Retry-After")):
            try:
                if value is not None and float(value) >= 0:
                    return float(value)
            except (TypeError, ValueError):
                continue
        return DEFAULT_RETRY_AFTER

    @staticmethod
    def _http_failure(reply: Reply) -> _Failure:
        message = f"Kommo answered {problem(reply)}"
        if reply.status == 401:
            return _Failure(Outcome.DEAD, message + " (the token is invalid or expired: generate a new one)")
        if reply.status in (500, 502, 504) or 200 <= reply.status < 300:
            return _Failure(Outcome.UNKNOWN, message, SETTLE_SECONDS)  # it may have stored some calls
        if reply.status == 503:
            return _Failure(Outcome.RETRY, message)
        return _Failure(Outcome.DEAD, message)

    # -- reading back --

    def _find(self, batch: Sequence[Delivery]) -> dict[str, tuple[str, Mapping[str, Any]]]:
        """The call notes that carry the batch's keys: ``uniq -> (entity type, note)``.

        Kommo has no read-back for calls, so every entity kind a call can land on is paged
        through, from a day before the earliest call of the batch.
        """
        if not batch:
            return {}
        wanted = {d.key for d in batch}
        since = min(int(call_start(d.record).timestamp()) for d in batch) - NOTE_TIME_SLACK
        params = {"filter[note_type][]": list(CALL_NOTE_TYPES), "filter[updated_at][from]": since}
        found: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for entity in NOTE_ENTITIES:
            rows = self._scan(f"/api/v4/{entity}/notes", params, "notes", wanted - set(found), "params")
            found.update((uniq, (entity, row)) for uniq, row in rows.items())
            if len(found) == len(wanted):
                break
        return found

    def _sync(
        self, calls: list[_Call], notes: Mapping[str, tuple[str, Mapping[str, Any]]], results: dict[str, Result],
    ) -> None:
        """Calls Kommo has a note for are delivered; a note that differs from the call is
        rewritten first. A note edit is idempotent, so a failed one is simply retried."""
        stale: dict[str, list[tuple[_Call, Mapping[str, Any]]]] = {}
        for c in calls:
            if c.key not in notes:
                continue
            entity, note = notes[c.key]
            if dict(note.get("params") or {}) == note_params(c.item):
                results[c.key] = Result(c.key, Outcome.DELIVERED, remote_id=str(note.get("id")))
            else:
                stale.setdefault(entity, []).append((c, note))
        for entity, pairs in stale.items():
            payload = [{"id": note["id"], "note_type": note.get("note_type") or "call_in", "request_id": str(i),
                        "params": note_params(c.item)} for i, (c, note) in enumerate(pairs)]
            reply = self._request("PATCH", f"/api/v4/{entity}/notes", payload)
            failure = reply if isinstance(reply, _Failure) else (
                None if reply.status == 200 else self._http_failure(reply))
            for c, note in pairs:
                if failure is None:
                    results[c.key] = Result(c.key, Outcome.DELIVERED, remote_id=str(note["id"]))
                else:
                    outcome = Outcome.RETRY if failure.outcome is Outcome.UNKNOWN else failure.outcome
                    results[c.key] = Result(c.key, outcome, f"call {c.key}: updating its Kommo note: "
                                            f"{failure.message}", failure.retry_after)

    def _scan(
        self, path: str, params: Mapping[str, Any], embedded: str, wanted: set[str], holder: str,
    ) -> dict[str, Mapping[str, Any]]:
        """Page through a list; return the rows whose ``row[holder]["uniq"]`` is wanted."""
        found: dict[str, Mapping[str, Any]] = {}
        page = 1
        while len(found) < len(wanted):
            reply = self._request("GET", path, params={**params, "limit": LIST_LIMIT, "page": page})
            if isinstance(reply, _Failure):
                raise KommoError(f"cannot read {path} to reconcile: {reply.message}")
            if reply.status == 204 or (reply.status == 404 and embedded == "notes"):
                break  # nothing (more); 404: this account has no such entity kind
            if reply.status != 200 or not isinstance(reply.body, Mapping):
                raise KommoError(f"cannot read {path} to reconcile: Kommo answered {problem(reply)}")
            inner = reply.body.get("_embedded")
            rows = (inner.get(embedded) or []) if isinstance(inner, Mapping) else []
            for row in rows:
                meta = row.get(holder) if isinstance(row, Mapping) else None
                uniq = meta.get("uniq") if isinstance(meta, Mapping) else None
                if uniq in wanted:
                    found[uniq] = row
            links = reply.body.get("_links")
            if len(rows) < LIST_LIMIT or not (isinstance(links, Mapping) and links.get("next")):
                break
            page += 1
        return found
