"""A fake Bitrix24 portal (incoming-webhook REST) that behaves as crm-apis.md §1 and §3.1 say.

What it reproduces, because the sink's correctness depends on it:

* ``/rest/<user>/<code>/<method>[.json]``, method names case-insensitive; a wrong user or
  code is 401 ``INVALID_CREDENTIALS``; a missing scope 401 ``insufficient_scope``.
* Success ``{"result": ..., "time": {...}}``; errors ``{"error", "error_description"}`` with
  the documented HTTP status (telephony errors are 400 ``ERROR_CORE``).
* ``batch``: commands are query strings run in order with ``$result[key][FIELD]``
  substitution; more than 50 commands → ``ERROR_BATCH_LENGTH_EXCEEDED`` for the extra ones;
  empty members serialize as ``[]``; ``halt=1`` stops at the first error; one batch is one
  request for the limiter.
* ``telephony.externalcall.register``: users by ``USER_ID`` (active) or ``USER_PHONE_INNER``;
  dedupe of *unfinished* calls on (user, phone, type, line, EXTERNAL_CALL_ID) whose
  ``CALL_START_DATE`` is under 30 minutes old; ``finish`` moves the call into the statistics
  (a second finish is refused); ``attachRecord`` only after finish, wav/mp3 only, replaces.
* ``voximplant.statistic.get``: FILTER on the documented fields, unknown keys silently
  dropped (then everything comes back), pages of 50.
* The leaky bucket: 503 ``QUERY_LIMIT_EXCEEDED`` once more than ``capacity`` requests are
  in it; it drains at ``rate`` per second. Every request is logged with its arrival time and
  the bucket level, so tests can prove the limit was never exceeded.

Test controls: ``fail_next`` (scripted error replies), ``down`` (503 from a proxy),
``delay_next`` (execute, then answer late: the client times out), ``hold_next`` (execute,
then block until released: for SIGKILL tests), ``failing_recordings`` (URLs the portal
cannot download).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable
from urllib.parse import parse_qsl

from werkzeug.wrappers import Request, Response

from tests.fakes.server import Faults

BATCH_MAX = 50
DEDUPE_WINDOW = 30 * 60
STAT_FILTER_FIELDS = frozenset({
    "ID", "CALL_ID", "EXTERNAL_CALL_ID", "CALL_CATEGORY", "PORTAL_USER_ID", "PORTAL_NUMBER",
    "PHONE_NUMBER", "CALL_TYPE", "CALL_DURATION", "CALL_START_DATE", "CALL_LOG", "CALL_RECORD_URL",
    "CALL_VOTE", "COST", "COST_CURRENCY", "CALL_FAILED_CODE", "CALL_FAILED_REASON", "CRM_ENTITY_TYPE",
    "CRM_ENTITY_ID", "CRM_ACTIVITY_ID", "REST_APP_ID", "REST_APP_NAME", "TRANSCRIPT_ID",
    "TRANSCRIPT_PENDING", "SESSION_ID", "REDIAL_ATTEMPT", "COMMENT", "RECORD_DURATION",
})
_OPERATORS = ("!><", "><", ">=", "<=", "!=", "!%", "=", "!", ">", "<", "%", "?")
_REF = re.compile(r"\$(result|next|total|time|error)(\S*)", re.IGNORECASE)
_SCOPES = {"telephony": "telephony", "voximplant": "telephony", "user": "user", "crm": "crm"}


class RestError(Exception):
    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status, self.code, self.description = status, code, description

    def body(self) -> dict[str, str]:
        return {"error": self.code, "error_description": self.description}


def core(description: str) -> RestError:
    return RestError(400, "ERROR_CORE", description)


def php_parse(query: str) -> dict[str, Any]:
    """``parse_str``: ``a[b][]=1&a[b][]=2&c=3`` → ``{"a": {"b": {"0": "1", "1": "2"}}, "c": "3"}``."""
    out: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        head, _, rest = name.partition("[")
        path = [head] + (re.findall(r"\[([^\]]*)\]", "[" + rest) if rest else [])
        node = out
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
            if path[i + 1] == "":
                path[i + 1] = str(len(node))
        node[path[-1]] = value
    return out


def _php_list(value: Any) -> Any:
    """A dict with keys 0..n-1 as PHP would treat it: a list."""
    if isinstance(value, dict) and value and all(k.isdigit() for k in value):
        return [value[k] for k in sorted(value, key=int)]
    return value


@dataclass
class Logged:
    t: float  # arrival, monotonic seconds
    method: str  # the REST method (for batch: "batch")
    status: int
    level: float  # leaky-bucket level after this request
    commands: list[str] = field(default_factory=list)  # batch sub-methods, in order
    limited: bool = False  # refused by the leaky bucket


class FakeBitrix24(Faults):
    """The portal. Instances are WSGI apps; wrap one in ``tests.fakes.server.ThreadedServer``."""

    def __init__(
        self,
        *,
        user_id: int = 1,
        code: str = "w3bh00kc0de",
        users: dict[int, str | None] | None = None,
        inactive: set[int] | None = None,
        contacts: dict[str, int] | None = None,
        rate: float = 2.0,
        capacity: int = 50,
        scopes: set[str] | None = None,
        can_view_statistics: bool = True,
        stat_filter_fields: frozenset[str] = STAT_FILTER_FIELDS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.user_id = user_id
        self.code = code
        self.users = dict(users if users is not None else {1: None, 7: "101", 8: "102", 9: "103"})
        self.inactive = set(inactive or ())
        self.contacts = dict(contacts or {})  # phone digits -> CRM contact id
        self.rate = rate
        self.capacity = capacity
        self.scopes = set(scopes if scopes is not None else {"telephony", "user", "crm"})
        self.can_view_statistics = can_view_statistics
        self.stat_filter_fields = stat_filter_fields
        self.clock = clock
        self.wall = wall
        super().__init__()
        self.active: dict[str, dict[str, Any]] = {}  # CALL_ID -> registered, unfinished call
        self.stats: list[dict[str, Any]] = []  # finished calls (statistics rows)
        self.registrations: list[dict[str, Any]] = []  # every register as received
        self.finishes: list[dict[str, Any]] = []  # every successful finish as received
        self.attachments: list[dict[str, Any]] = []  # every successful attachRecord
        self.failing_recordings: set[str] = set()
        self.down = False
        self._level = 0.0
        self._level_t = clock()
        self._ids = 0

    # -- test controls --------------------------------------------------------------------

    @property
    def base_url_path(self) -> str:
        return f"/rest/{self.user_id}/{self.code}/"

    def fail_next(self, n: int, status: int, code: str, description: str, *, execute: bool = False) -> None:
        """The next ``n`` requests get this error (after running, if ``execute``)."""
        self.script(n, status, {"error": code, "error_description": description}, execute=execute)

    def rows_for(self, key: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.stats if r["EXTERNAL_CALL_ID"] == key]

    def duplicates(self) -> dict[str, int]:
        """EXTERNAL_CALL_IDs with more than one statistics row (the thing that must not happen)."""
        with self.lock:
            counts: dict[str, int] = {}
            for r in self.stats:
                counts[r["EXTERNAL_CALL_ID"]] = counts.get(r["EXTERNAL_CALL_ID"], 0) + 1
            return {k: n for k, n in counts.items() if n > 1}

    def limit_violations(self) -> list[Logged]:
        """Requests refused by the leaky bucket."""
        with self.lock:
            return [e for e in self.log if e.limited]

    # -- WSGI -----------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        status, body = self._handle(request)
        if isinstance(body, str):
            response = Response(body, status=status, content_type="text/html")
        else:
            response = Response(json.dumps(body), status=status, content_type="application/json; charset=utf-8")
        return response(environ, start_response)

    def _handle(self, request: Request) -> tuple[int, Any]:
        now = self.clock()
        with self.lock:
            if self.down:
                self.log.append(Logged(now, "down", 503, self._level))
                return 503, "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
            self._level = max(0.0, self._level - max(0.0, now - self._level_t) * self.rate)
            self._level_t = now
            m = re.fullmatch(r"/rest/(\d+)/([^/]+)/([\w.]+?)(?:\.json)?/?", request.path)
            method = m.group(3).lower() if m else request.path
            if self._level + 1 > self.capacity:
                self.log.append(Logged(now, method, 503, self._level, limited=True))
                return 503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
            self._level += 1
            entry = Logged(now, method, 200, self._level)
            self.log.append(entry)
            scripted, delay, hold = self._next_faults()
            if scripted is not None and not scripted.execute:
                entry.status = scripted.status
                return scripted.status, scripted.body
            status, body = self._route(m, request, entry)
            entry.status = status
            if scripted is not None:
                entry.status = scripted.status
                status, body = scripted.status, scripted.body
        self._linger(delay, hold)
        return status, body

    def _route(self, m: re.Match[str] | None, request: Request, entry: Logged) -> tuple[int, Any]:
        started = self.wall()
        try:
            if m is None:
                raise RestError(401, "NO_AUTH_FOUND", "Wrong authorization data")
            if int(m.group(1)) != self.user_id or m.group(2) != self.code:
                raise RestError(401, "INVALID_CREDENTIALS", "Invalid request credentials")
            params = self._params(request)
            method = m.group(3).lower()
            if method == "batch":
                result: Any = self._batch(params, entry)
                extra: dict[str, Any] = {}
            else:
                result, extra = self._call(method, params)
        except RestError as exc:
            return exc.status, exc.body()
        return 200, {"result": result, **extra, "time": self._time(started)}

    @staticmethod
    def _params(request: Request) -> dict[str, Any]:
        params: dict[str, Any] = php_parse(request.query_string.decode())
        if request.mimetype == "application/json":
            data = request.get_json(silent=True)
            if not isinstance(data, dict):
                raise RestError(400, "INVALID_REQUEST", "Invalid JSON body")
            params.update(data)
        else:
            params.update(php_parse(request.get_data(as_text=True)))
        return params

    def _time(self, started: float) -> dict[str, Any]:
        finish = self.wall()
        return {
            "start": started, "finish": finish, "duration": finish - started, "processing": finish - started,
            "date_start": datetime.fromtimestamp(started).astimezone().isoformat(timespec="seconds"),
            "date_finish": datetime.fromtimestamp(finish).astimezone().isoformat(timespec="seconds"),
            "operating_reset_at": int(finish) + 600, "operating": 0,
        }

    # -- batch ----------------------------------------------------------------------------

    def _batch(self, params: dict[str, Any], entry: Logged) -> dict[str, Any]:
        cmd = params.get("cmd")
        if isinstance(cmd, list):
            cmd = {str(i): c for i, c in enumerate(cmd)}
        if not isinstance(cmd, dict):
            raise RestError(400, "ERROR_ARGUMENT", "cmd should be an array")
        halt = str(params.get("halt", "0")) not in ("0", "", "false")
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        totals: dict[str, Any] = {}
        nexts: dict[str, Any] = {}
        times: dict[str, Any] = {}
        for n, (key, line) in enumerate(cmd.items()):
            if n >= BATCH_MAX:
                errors[key] = {"error": "ERROR_BATCH_LENGTH_EXCEEDED", "error_description": "Max batch length exceeded"}
                continue
            started = self.wall()
            method, _, query = str(line).partition("?")
            method = method.lower().removesuffix(".json")
            entry.commands.append(method)
            try:
                if method == "batch":
                    raise RestError(400, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage")
                parts = {"result": results, "next": nexts, "total": totals, "time": times, "error": errors}
                sub = self._substitute(php_parse(query), parts)
                result, extra = self._call(method, sub)
            except RestError as exc:
                errors[key] = exc.body()
                if halt:
                    break
                continue
            results[key] = result
            times[key] = self._time(started)
            if "total" in extra:
                totals[key] = extra["total"]
            if "next" in extra:
                nexts[key] = extra["next"]
        return {
            "result": results or [], "result_error": errors or [], "result_total": totals or [],
            "result_next": nexts or [], "result_time": times or [],
        }

    def _substitute(self, value: Any, parts: dict[str, Any]) -> Any:
        """``$result[key][FIELD]`` (also ``$error``, ``$total``, ...) → that earlier value.

        As Bitrix24 does it: the path is followed as far as it exists, so a reference to a
        command that failed yields the enclosing array; a value that is nothing but the
        reference becomes that array itself (finish then says "CALL_ID must be a string").
        """
        if isinstance(value, dict):
            return {k: self._substitute(v, parts) for k, v in value.items()}
        if not isinstance(value, str):
            return value
        for m in list(_REF.finditer(value)):
            node: Any = parts[m.group(1).lower()]
            for step in re.findall(r"\[([^\]]+)\]", m.group(2)):
                if not isinstance(node, dict) or step not in node:
                    break
                node = node[step]
            if m.group(0) == value:
                return node
            value = value.replace(m.group(0), node if isinstance(node, str) else json.dumps(node))
        return value

    # -- methods --------------------------------------------------------------------------

    def _call(self, method: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        scope = _SCOPES.get(method.split(".")[0])
        handlers = {
            "telephony.externalcall.register": self._register,
            "telephony.externalcall.finish": self._finish,
            "telephony.externalcall.attachrecord": self._attach,
            "voximplant.statistic.get": self._statistic,
        }
        if method not in handlers:
            raise RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        if scope not in self.scopes:
            raise RestError(401, "insufficient_scope",
                            "The request requires higher privileges than provided by the webhook token")
        return handlers[method](params)

    def _user(self, params: dict[str, Any]) -> int:
        if params.get("USER_ID") not in (None, ""):
            try:
                uid = int(params["USER_ID"])
            except (TypeError, ValueError):
                raise core("User is not found or is not active") from None
            if uid not in self.users or uid in self.inactive:
                raise core("User is not found or is not active")
            return uid
        inner = str(params.get("USER_PHONE_INNER") or "")
        for uid, phone in self.users.items():
            if inner and phone == inner and uid not in self.inactive:
                return uid
        raise core("USER_ID or USER_PHONE_INNER should be set")

    def _register(self, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        self.registrations.append(dict(p))
        user = self._user(p)
        phone = re.sub(r"[A-Za-z]", "", str(p.get("PHONE_NUMBER") or ""))
        if not phone.strip():
            raise core("Unsupported phone number format")
        try:
            call_type = int(str(p.get("TYPE", "")))
        except ValueError:
            call_type = 0
        if call_type not in (1, 2, 3, 4, 5):
            raise core("Unknown TYPE")
        start = self.wall()
        if p.get("CALL_START_DATE"):
            try:
                parsed = datetime.fromisoformat(str(p["CALL_START_DATE"]))
            except ValueError:
                parsed = None
            if parsed is None or parsed.tzinfo is None:
                raise core("CALL_START_DATE should be in the ISO-8601 format")
            start = parsed.timestamp()
        line = str(p.get("LINE_NUMBER") or "")[:50]
        external = p.get("EXTERNAL_CALL_ID")
        caller = re.sub(r"\D", "", phone)
        for call_id, call in self.active.items():
            if (call["USER_ID"], call["CALLER_ID"], call["INCOMING"], call["LINE"], call["EXTERNAL_CALL_ID"]) == (
                user, caller, call_type, line, external
            ) and call["DATE_CREATE"] > self.wall() - DEDUPE_WINDOW:
                return {"CALL_ID": call_id, "CRM_CREATED_LEAD": None, "CRM_CREATED_ENTITIES": [],
                        "CRM_ENTITY_TYPE": call["CRM_ENTITY_TYPE"] or None, "CRM_ENTITY_ID": call["CRM_ENTITY_ID"]}, {}
        self._ids += 1
        call_id = f"externalCall.{hashlib.md5(f'{self._ids}{caller}'.encode()).hexdigest()}.{int(self.wall())}"
        contact = self.contacts.get(caller)
        self.active[call_id] = {
            "USER_ID": user, "CALLER_ID": caller, "PHONE_NUMBER": phone, "INCOMING": call_type, "LINE": line,
            "EXTERNAL_CALL_ID": external, "DATE_CREATE": start, "CALL_START_DATE": p.get("CALL_START_DATE"),
            "SHOW": p.get("SHOW"), "CRM_ENTITY_TYPE": "CONTACT" if contact else "", "CRM_ENTITY_ID": contact,
        }
        return {"CALL_ID": call_id, "CRM_CREATED_LEAD": None, "CRM_CREATED_ENTITIES": [],
                "CRM_ENTITY_TYPE": "CONTACT" if contact else "", "CRM_ENTITY_ID": contact}, {}

    def _finish(self, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        call_id = p.get("CALL_ID")
        if not isinstance(call_id, str):
            raise RestError(400, "INVALID_ARGUMENT", "CALL_ID must be a string")
        call = self.active.get(call_id)
        if call is None:
            raise core("Call is not found (call should be registered prior to finishing")
        user = self._user(p)
        duration = int(p.get("DURATION") or 0)
        status = str(p.get("STATUS_CODE") or ("200" if duration > 0 else "304"))
        del self.active[call_id]
        self.finishes.append(dict(p))
        row = {
            "ID": str(len(self.stats) + 1), "CALL_ID": call_id, "EXTERNAL_CALL_ID": call["EXTERNAL_CALL_ID"],
            "PORTAL_USER_ID": str(user), "PORTAL_NUMBER": call["LINE"] or "REST_APP:webHook",
            "PHONE_NUMBER": call["PHONE_NUMBER"], "CALL_TYPE": str(call["INCOMING"]),
            "CALL_DURATION": str(duration), "CALL_START_DATE": call["CALL_START_DATE"],
            "CALL_STATUS": 1 if duration > 0 else 0, "CALL_FAILED_CODE": status,
            "CALL_FAILED_REASON": str(p.get("FAILED_REASON") or ""), "CALL_VOTE": None, "COST": "0.0000",
            "COST_CURRENCY": "", "CRM_ENTITY_TYPE": call["CRM_ENTITY_TYPE"],
            "CRM_ENTITY_ID": call["CRM_ENTITY_ID"], "CRM_ACTIVITY_ID": str(1000 + len(self.stats)),
            "REST_APP_ID": None, "REST_APP_NAME": None, "CALL_RECORD_URL": None, "RECORD_FILE_ID": None,
            "ADD_TO_CHAT": p.get("ADD_TO_CHAT"),  # not a real column: lets tests see what was sent
        }
        self.stats.append(row)
        return {k: v for k, v in row.items() if k != "ADD_TO_CHAT"}, {}

    def _attach(self, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        row = next((r for r in self.stats if r["CALL_ID"] == p.get("CALL_ID")), None)
        if row is None:
            raise core("Call is not found in the statistic table. Looks like it is not finished yet.")
        url = p.get("RECORD_URL")
        name = p.get("FILENAME") or (str(url).rsplit("/", 1)[-1] if url else None)
        if not url and not (p.get("FILENAME") and p.get("FILE_CONTENT")):
            raise core("Required parameters are not set. Request should contain or URL or FILENAME parameter")
        if not re.search(r"\.(mp3|wav)$", str(name or ""), re.IGNORECASE):
            raise core("Wrong file extension. Only wav and mp3 are allowed")
        if url in self.failing_recordings:
            raise RestError(400, "SERVER_NOT_AVAILABLE", "Server returns HTTP error code 503")
        self._ids += 1
        row["RECORD_FILE_ID"] = 9000 + self._ids
        row["CALL_RECORD_URL"] = url
        self.attachments.append(dict(p))
        return {"FILE_ID": row["RECORD_FILE_ID"]}, {}

    def _statistic(self, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if not self.can_view_statistics:
            raise RestError(403, "ACCESS_DENIED", "Access denied!")
        rows = list(self.stats)
        flt = p.get("FILTER") if isinstance(p.get("FILTER"), dict) else {}
        for raw_key, value in flt.items():
            op = next((o for o in _OPERATORS if raw_key.startswith(o)), "")
            name = raw_key[len(op):]
            if name not in self.stat_filter_fields:
                continue  # Bitrix24 drops unknown filter keys without a word
            rows = [r for r in rows if _matches(r.get(name), op, _php_list(value))]
        sort = str(p.get("SORT") or "ID")
        reverse = str(p.get("ORDER") or "ASC").upper() == "DESC"
        rows.sort(key=lambda r: (str(r.get(sort) or "").zfill(20)), reverse=reverse)
        start = int(p.get("start") or 0)
        page = [{k: v for k, v in r.items() if k != "ADD_TO_CHAT"} for r in rows[start:start + 50]]
        extra: dict[str, Any] = {"total": len(rows)}
        if start + 50 < len(rows):
            extra["next"] = start + 50
        return page, extra


def _matches(have: Any, op: str, want: Any) -> bool:
    if isinstance(want, list):
        hit = str(have) in {str(w) for w in want}
        return not hit if op.startswith("!") else hit
    if op in ("", "="):
        return str(have) == str(want)
    if op in ("!", "!="):
        return str(have) != str(want)
    if op == "%":
        return str(want) in str(have)
    if op == "!%":
        return str(want) not in str(have)
    try:
        a, b = float(have), float(want)
    except (TypeError, ValueError):
        a, b = str(have), str(want)  # type: ignore[assignment]
    return {">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b}.get(op, True)
