"""Bitrix24 sink: every record becomes register → finish → attachRecord, sent through ``batch``.

Why it is built this way (SPEC §8, reference crm-apis.md §1, §3.1):

* One call's commands always travel in one ``batch`` request, the later ones reading the
  ``CALL_ID`` of the register through ``$result[...]``; a request carries up to 50 commands
  (about 20 calls), and a client-side token bucket keeps to the portal's 2 requests/s.
* Bitrix24 dedupes only *unfinished* calls younger than 30 minutes, so a finished call sent
  again is a duplicate in the CRM. The delivery ledger is the guard; when an outcome is
  unknown (timeout, crash), ``reconcile`` asks ``voximplant.statistic.get`` for the
  ``EXTERNAL_CALL_ID`` (our key) before anything is sent again — and checks the returned
  rows, because that method silently drops filter keys it does not know.
* A finished call cannot be changed. A record that changes after delivery is looked up and
  only its recording is (re)attached; the statistics row keeps the first version.
* An unknown extension never loses the call: it falls back to ``default_user``.
* Recordings are attached to answered calls only: 2 req/s × 50 commands bound the rate at
  100 / (commands per call) calls/s, and a missed call's file holds no conversation.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence
from urllib.parse import urlencode, urlsplit

from celsync.config import Bitrix24SinkConfig
from celsync.ratelimit import TokenBucket
from celsync.sinks.base import Delivery, Outcome, Result, Sink
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

REGISTER = "telephony.externalcall.register"
FINISH = "telephony.externalcall.finish"
ATTACH = "telephony.externalcall.attachRecord"
STATISTIC = "voximplant.statistic.get"

TYPE_OUTGOING = 1
TYPE_INCOMING = 2

#: Calls per ``send`` for each command a batch request holds: 500 calls with the default 50,
#: about 25 full requests, so that the partly filled last request of a send costs little
#: (sustained throughput is 2 req/s × commands per request ÷ commands per call).
CALLS_PER_COMMAND = 10
#: How often a recording is offered again within one send when the portal could not fetch it.
ATTACH_TRIES = 3
#: Pause after a 503 QUERY_LIMIT_EXCEEDED: lets the portal's leaky bucket drain by ~20.
QUERY_LIMIT_PAUSE = 10.0
#: Pause after a 503 OVERLOAD_LIMIT (an administrator blocked the REST API).
OVERLOAD_PAUSE = 600.0
#: Pause after a 429 OPERATION_TIME_LIMIT when the portal did not say when it resets.
OPERATION_LIMIT_PAUSE = 60.0
#: A send that would have to wait longer than this for the bucket returns RETRY instead.
MAX_PACING_WAIT = 1.0

_UNKNOWN_INNER = "USER_ID or USER_PHONE_INNER should be set"
_INACTIVE_USER = "User is not found or is not active"
_TRANSIENT_CODES = frozenset({
    "QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT", "OVERLOAD_LIMIT", "INTERNAL_SERVER_ERROR",
    "ERROR_UNEXPECTED_ANSWER", "ERROR_BATCH_LENGTH_EXCEEDED", "SERVER_NOT_AVAILABLE",
})
_TRANSIENT_TEXT = ("Unexpected database error", "Server returns HTTP error code", "Too many requests")
_WEBHOOK = re.compile(r"^(?P<base>https?://[^/\s]+/rest/\d+/)(?P<code>[^/\s]+)/?$")
_AUDIO_NAME = re.compile(r"[^/?#]+\.(?:mp3|wav)$", re.IGNORECASE)


class Bitrix24Error(Exception):
    """Bitrix24 could not answer a reconcile question; the deliveries stay unknown."""


# --- pure request building -------------------------------------------------------------


def php_query(params: Mapping[str, Any]) -> str:
    """URL-encode ``params`` the way PHP's ``parse_str`` reads them back (``a[b]=c``).

    ``batch`` commands are query strings, so nested filters must be spelled in brackets.
    """
    pairs: list[tuple[str, str]] = []

    def walk(name: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{name}[{k}]", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{name}[{i}]", v)
        elif isinstance(value, bool):
            pairs.append((name, "1" if value else "0"))
        else:
            pairs.append((name, str(value)))

    for key, value in params.items():
        walk(key, value)
    return urlencode(pairs)


def command(method: str, params: Mapping[str, Any]) -> str:
    return f"{method}?{php_query(params)}"


@dataclass(frozen=True)
class User:
    """Who the call belongs to in Bitrix24: a user id, or an extension the portal resolves."""

    field: str  # "USER_ID" | "USER_PHONE_INNER"
    value: int | str

    def params(self) -> dict[str, int | str]:
        return {self.field: self.value}


def pick_user(
    extension: str | None,
    users: Mapping[str, int],
    default_user: int | None,
    needs_default: frozenset[str] | set[str] = frozenset(),
) -> User | None:
    """Mapped user, else the extension itself (``USER_PHONE_INNER``), else the default user."""
    if extension and extension not in needs_default:
        if extension in users:
            return User("USER_ID", users[extension])
        return User("USER_PHONE_INNER", extension)
    return User("USER_ID", default_user) if default_user is not None else None


def call_commands(
    record: Mapping[str, Any], user: User, tag: str, *, add_to_chat: bool, record_url: str | None
) -> dict[str, str]:
    """The batch commands of one record, named ``r<tag>``, ``f<tag>`` and ``a<tag>``.

    Raises ValueError naming the field when the record cannot become a Bitrix24 call.
    """
    phone = record.get("external_number")
    if not phone:
        raise ValueError("the record has no external number (Bitrix24 requires PHONE_NUMBER)")
    answered = bool(record.get("answered"))
    register = {
        **user.params(),
        "PHONE_NUMBER": phone,
        "TYPE": TYPE_OUTGOING if record.get("direction") == "outgoing" else TYPE_INCOMING,
        "CALL_START_DATE": call_start(record).isoformat(timespec="seconds"),
        "SHOW": 0,
        "EXTERNAL_CALL_ID": record["key"],
    }
    if record.get("did"):
        register["LINE_NUMBER"] = str(record["did"])[:50]
    ref = f"$result[r{tag}][CALL_ID]"
    # CALL_STATUS is 1 exactly when DURATION > 0: an answered call lasts at least a second.
    duration = max(1, math.ceil(record.get("duration") or 0)) if answered else 0
    finish = {
        "CALL_ID": ref,
        **user.params(),
        "DURATION": duration,
        "STATUS_CODE": str(record.get("bitrix24_status") or ("200" if answered else "304")),
        "ADD_TO_CHAT": 1 if add_to_chat else 0,
    }
    commands = {f"r{tag}": command(REGISTER, register), f"f{tag}": command(FINISH, finish)}
    if record_url:
        commands[f"a{tag}"] = attach_command(ref, record_url)
    return commands


def attach_command(call_id: str, url: str) -> str:
    params = {"CALL_ID": call_id, "RECORD_URL": url}
    name = _AUDIO_NAME.search(urlsplit(url).path)
    if name:
        params["FILENAME"] = name.group(0)
    return command(ATTACH, params)


def describe_error(error: Any) -> str:
    """``CODE: description`` of a Bitrix24 error object, whatever its shape."""
    if isinstance(error, Mapping):
        code = str(error.get("error") or "").strip()
        text = str(error.get("error_description") or "").strip()
        return ": ".join(p for p in (code, text) if p) or "error without a description"
    return str(error)


def is_transient(error: Any) -> bool:
    """Errors that say "later", not "never" (limits, server trouble, recording host down)."""
    code = str(error.get("error") or "") if isinstance(error, Mapping) else ""
    return code in _TRANSIENT_CODES or any(t in describe_error(error) for t in _TRANSIENT_TEXT)


def envelope(body: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(result, result_error)`` of a batch reply; Bitrix24 writes empty ones as ``[]``."""
    if not isinstance(body, Mapping) or not isinstance(body.get("result"), Mapping):
        return None
    inner = body["result"]
    results = inner.get("result")
    errors = inner.get("result_error")
    return (
        dict(results) if isinstance(results, Mapping) else {},
        dict(errors) if isinstance(errors, Mapping) else {},
    )


# --- the sink ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """Work for one delivery: the whole call, or (``call_id`` known) only its recording."""

    delivery: Delivery
    user: User | None = None
    call_id: str | None = None
    url: str | None = None
    attach_tries: int = 0

    @property
    def key(self) -> str:
        return self.delivery.key

    @property
    def weight(self) -> int:
        if self.call_id is not None:
            return 1
        return 2 + (self.url is not None)


@dataclass(frozen=True)
class _Failure:
    """A batch request that did not come back with a batch envelope."""

    outcome: Outcome
    message: str
    retry_after: float | None = None


class Bitrix24Sink(Sink):
    """Delivers call records to a Bitrix24 portal through an incoming webhook."""

    def __init__(self, cfg: Bitrix24SinkConfig) -> None:
        m = _WEBHOOK.match(cfg.webhook_url.strip())
        if not m:
            raise ValueError(
                f"sinks[{cfg.sink_name}].webhook_url must look like "
                "https://<portal>/rest/<user>/<code>/ (value not shown: it holds a secret)"
            )
        check_recording_template(cfg.recording_url, f"sinks[{cfg.sink_name}].recording_url")
        self.cfg = cfg
        self.name = cfg.sink_name
        # cfg.batch_size counts commands per batch request; a call takes 2-3 of them.
        self.batch_size = CALLS_PER_COMMAND * cfg.batch_size
        self._base = m.group("base") + m.group("code") + "/"
        bucket = TokenBucket(cfg.rate, cfg.burst)
        self.client = HttpClient(bucket, cfg.timeout, secrets=(m.group("code"),))
        self._needs_default: set[str] = set()  # extensions the portal does not know
        self._operating_reset_at: float | None = None

    # -- engine interface --

    def send(self, batch: Sequence[Delivery]) -> list[Result]:
        results: dict[str, Result] = {}
        wait = self.client.bucket.available_in()
        if wait > MAX_PACING_WAIT:
            return [Result(d.key, Outcome.RETRY, "paused after a Bitrix24 limit", wait) for d in batch]
        jobs: list[_Job] = []
        changed = [d for d in batch if d.previously_delivered]
        found = self._lookup(changed) if changed else {}
        for d in batch:
            row = found.get(d.key)
            if row is not None:
                jobs.extend(self._update(d, row, results))
            else:
                jobs.extend(self._plan(d, results))
        self._run(jobs, results)
        return [results[d.key] for d in batch]

    def reconcile(self, batch: Sequence[Delivery]) -> list[Result]:
        wait = self.client.bucket.available_in()
        if wait > MAX_PACING_WAIT:
            raise Bitrix24Error(f"paused for {wait:.0f} s after a Bitrix24 limit; reconcile later")
        results: dict[str, Result] = {}
        found = self._lookup(batch)
        jobs: list[_Job] = []
        for d in batch:
            row = found.get(d.key)
            if row is None:
                results[d.key] = Result(d.key, Outcome.RETRY, "not in Bitrix24 call statistics")
            else:
                jobs.extend(self._update(d, row, results))
        self._run(jobs, results)
        # Every job left here is a call Bitrix24 has: a recording that still failed is given up.
        return [
            replace(r, outcome=Outcome.DELIVERED) if r.outcome is Outcome.UNKNOWN else r
            for r in (results[d.key] for d in batch)
        ]

    def close(self) -> None:
        self.client.close()

    # -- planning --

    def _plan(self, d: Delivery, results: dict[str, Result]) -> list[_Job]:
        record = d.record
        user = pick_user(record.get("extension"), self.cfg.users, self.cfg.default_user, self._needs_default)
        if user is None:
            results[d.key] = Result(d.key, Outcome.DEAD, (
                f"call {d.key}: extension {record.get('extension')!r} has no Bitrix24 user; "
                "map it under users or set default_user"))
            return []
        try:
            job = _Job(d, user=user, url=self._recording(record))
            self._commands(job, "0")  # validate the record before it takes a place in a request
        except (ValueError, KeyError) as exc:
            results[d.key] = Result(d.key, Outcome.DEAD, f"call {d.key}: {exc}")
            return []
        return [job]

    def _update(self, d: Delivery, row: Mapping[str, Any], results: dict[str, Result]) -> list[_Job]:
        """A call Bitrix24 already has: only a missing recording can still be added."""
        call_id = str(row.get("CALL_ID") or "")
        try:
            url = self._recording(d.record)
        except ValueError as exc:
            url = None
            log.warning("call %s: recording not attached: %s", d.key, exc)
        if url and not row.get("RECORD_FILE_ID") and call_id:
            return [_Job(d, call_id=call_id, url=url)]
        if d.previously_delivered:
            log.info("call %s changed after delivery; Bitrix24 keeps the finished call as it was", d.key)
        results[d.key] = Result(d.key, Outcome.DELIVERED, remote_id=call_id or None)
        return []

    def _recording(self, record: Mapping[str, Any]) -> str | None:
        """The recording to attach: only a call someone answered has a conversation on it (an
        unanswered call's file holds ringing and hold music), and each costs a command."""
        return recording_url(self.cfg.recording_url, record) if record.get("answered") else None

    def _commands(self, job: _Job, tag: str) -> dict[str, str]:
        if job.call_id is not None:
            return {f"a{tag}": attach_command(job.call_id, job.url or "")}
        assert job.user is not None
        return call_commands(
            job.delivery.record, job.user, tag, add_to_chat=self.cfg.add_to_chat, record_url=job.url
        )

    # -- execution --

    def _run(self, jobs: list[_Job], results: dict[str, Result]) -> None:
        """Send jobs in packed batch requests until done or a request fails."""
        queue = jobs
        while queue:
            taken, queue = self._pack(queue)
            cmd: dict[str, str] = {}
            for i, job in enumerate(taken):
                cmd.update(self._commands(job, str(i)))
            reply = self._batch(cmd)
            if isinstance(reply, _Failure):
                for job in taken:
                    results[job.key] = self._failed(job, reply.outcome, reply.message, reply.retry_after)
                pause = reply.retry_after if reply.outcome is Outcome.RETRY else None
                for job in queue:  # never sent
                    results[job.key] = self._failed(job, Outcome.RETRY, reply.message, pause)
                return
            found, errors = reply
            for i, job in enumerate(taken):
                follow_up = self._interpret(job, str(i), found, errors, results)
                if follow_up is not None:
                    queue.append(follow_up)

    def _pack(self, queue: list[_Job]) -> tuple[list[_Job], list[_Job]]:
        """First fit, biggest calls first: one request of at most ``batch_size`` commands."""
        room = self.cfg.batch_size
        taken: list[_Job] = []
        rest: list[_Job] = []
        for job in sorted(queue, key=lambda j: -j.weight):
            if job.weight <= room:
                taken.append(job)
                room -= job.weight
            else:
                rest.append(job)
        return taken, rest

    @staticmethod
    def _failed(job: _Job, outcome: Outcome, message: str, retry_after: float | None) -> Result:
        if job.call_id is not None:
            # The call is finished in Bitrix24 already: never RETRY (that would register it
            # again); reconcile finds it and offers the recording once more.
            outcome = Outcome.UNKNOWN
        return Result(job.key, outcome, f"call {job.key}: {message}", retry_after)

    def _interpret(
        self, job: _Job, tag: str, found: dict[str, Any], errors: dict[str, Any],
        results: dict[str, Result],
    ) -> _Job | None:
        """Turn one job's part of a batch reply into a Result, or a follow-up job."""
        key = job.key
        call_id = job.call_id
        if call_id is None:
            r, f = f"r{tag}", f"f{tag}"
            if r in errors:
                return self._register_failed(job, errors[r], results)
            if not isinstance(found.get(r), Mapping) or not found[r].get("CALL_ID"):
                results[key] = Result(key, Outcome.RETRY, f"call {key}: register was not executed")
                return None
            call_id = str(found[r]["CALL_ID"])
            if f in errors:
                err = errors[f]
                outcome = Outcome.RETRY if is_transient(err) else Outcome.DEAD
                if "Call is not found" in describe_error(err):
                    outcome = Outcome.UNKNOWN  # someone else finished it? ask the statistics
                results[key] = Result(key, outcome, f"call {key}: finish: {describe_error(err)}")
                return None
            if f not in found:
                results[key] = Result(key, Outcome.RETRY, f"call {key}: finish was not executed")
                return None
            if job.url is None:
                results[key] = Result(key, Outcome.DELIVERED, remote_id=call_id)
                return None
        a = f"a{tag}"
        if a in found:
            results[key] = Result(key, Outcome.DELIVERED, remote_id=call_id)
            return None
        err = errors.get(a, {"error_description": "attachRecord was not executed"})
        tries = job.attach_tries + 1
        if (is_transient(err) or a not in errors) and tries < ATTACH_TRIES:
            return _Job(job.delivery, call_id=call_id, url=job.url, attach_tries=tries)
        log.warning("call %s: delivered without its recording: %s", key, describe_error(err))
        results[key] = Result(
            key, Outcome.DELIVERED, f"call {key}: recording not attached: {describe_error(err)}",
            remote_id=call_id,
        )
        return None

    def _register_failed(self, job: _Job, err: Any, results: dict[str, Result]) -> _Job | None:
        key, text = job.key, describe_error(err)
        user = job.user
        assert user is not None
        default = self.cfg.default_user
        unknown_user = (user.field == "USER_PHONE_INNER" and _UNKNOWN_INNER in text) or (
            user.field == "USER_ID" and _INACTIVE_USER in text and user.value != default
        )
        extension = job.delivery.record.get("extension")
        if unknown_user and default is not None:
            if extension:
                if extension not in self._needs_default:
                    log.warning("extension %s is unknown to Bitrix24 (%s): using default_user %s",
                                extension, text, default)
                self._needs_default.add(extension)
            return replace(job, user=User("USER_ID", default))
        outcome = Outcome.RETRY if is_transient(err) else Outcome.DEAD
        hint = ""
        if unknown_user:
            hint = "; map the extension under users or set default_user"
        elif _INACTIVE_USER in text:
            hint = f"; default_user {default} must be an active Bitrix24 user"
        results[key] = Result(key, outcome, f"call {key}: register: {text}{hint}")
        return None

    def _batch(self, cmd: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]] | _Failure:
        try:
            reply = self.client.request("POST", self._base + "batch", json={"halt": 0, "cmd": dict(cmd)})
        except TransportError as exc:
            return _Failure(exc.outcome, f"Bitrix24 unreachable: {exc}", exc.retry_after)
        if reply.status == 200:
            parts = envelope(reply.body)
            if parts is not None:
                self._note_operating(reply.body)
                return parts
            return _Failure(Outcome.UNKNOWN, f"Bitrix24 answered 200 without a batch result: {reply.text!r}",
                            SETTLE_SECONDS)
        return self._http_failure(reply)

    def _note_operating(self, body: Mapping[str, Any]) -> None:
        """Remember when the operation-time limit resets, for the next 429."""
        timing = body.get("time")
        reset = timing.get("operating_reset_at") if isinstance(timing, Mapping) else None
        if isinstance(reset, (int, float)):
            self._operating_reset_at = float(reset)

    def _http_failure(self, reply: Reply) -> _Failure:
        body = reply.body if isinstance(reply.body, Mapping) else {}
        code = str(body.get("error") or "")
        text = describe_error(body) if body else (reply.text or "no body")
        message = f"Bitrix24 answered HTTP {reply.status}: {text}"
        if reply.status == 503:
            if code not in ("QUERY_LIMIT_EXCEEDED", "OVERLOAD_LIMIT"):
                return _Failure(Outcome.RETRY, message)  # down (e.g. behind a proxy): not run
            pause = OVERLOAD_PAUSE if code == "OVERLOAD_LIMIT" else QUERY_LIMIT_PAUSE
            if code == "OVERLOAD_LIMIT":
                log.error("%s: the portal's REST API is blocked; ask its administrator", message)
            self.client.bucket.defer(pause)
            return _Failure(Outcome.RETRY, message, pause)
        if reply.status == 429:
            pause = OPERATION_LIMIT_PAUSE
            if self._operating_reset_at is not None:
                pause = max(1.0, self._operating_reset_at - time.time())
            self.client.bucket.defer(pause)
            return _Failure(Outcome.RETRY, message, pause)
        if reply.status in (401, 403):
            log.error("%s: check the webhook URL, that it is active and has the telephony scope", message)
            return _Failure(Outcome.DEAD, message + " (check the webhook URL and its telephony scope)")
        if reply.status >= 500 and code != "PORTAL_DELETED":
            return _Failure(Outcome.UNKNOWN, message, SETTLE_SECONDS)
        if 300 <= reply.status < 400:
            message += " (a redirect: put the portal's canonical https address in webhook_url)"
        return _Failure(Outcome.DEAD, message)

    # -- reading back --

    def _lookup(self, deliveries: Sequence[Delivery]) -> dict[str, Mapping[str, Any]]:
        """Statistics rows of the keys that Bitrix24 has (finished calls), by key.

        Raises Bitrix24Error when it cannot tell, e.g. when the filter was ignored.
        """
        found: dict[str, Mapping[str, Any]] = {}
        keys = [d.key for d in deliveries]
        step = self.cfg.batch_size
        for start in range(0, len(keys), step):
            chunk = keys[start:start + step]
            cmd = {f"s{i}": command(STATISTIC, {"FILTER": {"EXTERNAL_CALL_ID": k}}) for i, k in enumerate(chunk)}
            reply = self._batch(cmd)
            if isinstance(reply, _Failure):
                raise Bitrix24Error(f"cannot check call statistics: {reply.message}")
            rows_by_cmd, errors = reply
            for i, key in enumerate(chunk):
                name = f"s{i}"
                if name in errors:
                    raise Bitrix24Error(
                        f"cannot check call {key} in statistics: {describe_error(errors[name])} "
                        "(the webhook's user needs the permission to view call statistics)")
                rows = rows_by_cmd.get(name)
                rows = rows if isinstance(rows, list) else []
                strangers = [r for r in rows if not isinstance(r, Mapping) or r.get("EXTERNAL_CALL_ID") != key]
                if strangers:
                    raise Bitrix24Error(
                        f"{STATISTIC} ignored the EXTERNAL_CALL_ID filter for call {key} "
                        "(it returned other calls); cannot tell whether the call was delivered")
                if rows:
                    found[key] = rows[0]
        return found
