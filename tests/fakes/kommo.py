"""A fake Kommo (amoCRM) account that behaves as crm-apis.md §2 and §3.2 say.

What it reproduces:

* ``Authorization: Bearer <token>`` or 401 problem+json.
* A token bucket of ``burst`` requests refilled at ``rate`` per second → 429 with
  ``retry_after`` (JSON, or plain text with ``plain_429``); after ``block_after`` 429s in a
  row the IP is blocked: 403 for every request until ``unblock``.
* ``POST /api/v4/calls``: a JSON array; > 250 items → 422; validation (missing required keys,
  ``null`` anywhere, bad ``direction``/``call_status``, unknown keys) → 400
  ``validation-errors`` and nothing stored; phones matched on their last 10 digits against
  ``contacts``; matched calls become call notes (``call_in``/``call_out`` with ``params``);
  unmatched ones are ``errors`` "Entity not found" (all unmatched → 400, mixed → 200).
  No dedupe on ``uniq``: sending twice stores twice.
* ``GET /api/v4/calls`` → 405. ``GET /api/v4/{entity}/notes`` with ``filter[note_type]``,
  ``filter[updated_at]``, ``page``/``limit`` (204 when empty); ``PATCH`` of the same path edits
  notes by ``id``. ``customers`` routes are 404 unless ``customers_enabled``.
* ``POST /api/v4/leads/unsorted/sip`` (a second identical ``source_uid`` is refused) and
  ``GET /api/v4/leads/unsorted``.

Test controls: ``fail_next`` (scripted replies, optionally after running the request),
``down`` (503), ``delay_next``/``hold_next`` as in the Bitrix24 fake. Every request is logged
with its arrival time so tests can check the rate was never exceeded.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from werkzeug.wrappers import Request, Response

from tests.fakes.server import Faults

MAX_ITEMS = 250
CALL_FIELDS: dict[str, tuple[type, ...]] = {
    "direction": (str,), "uniq": (str,), "duration": (int,), "source": (str,), "link": (str,),
    "phone": (str, int), "call_result": (str,), "call_status": (int,), "call_responsible": (int, str),
    "responsible_user_id": (int,), "created_by": (int,), "updated_by": (int,), "created_at": (int,),
    "updated_at": (int,), "request_id": (str,),
}
REQUIRED = ("direction", "duration", "source", "phone")
ENTITIES = ("leads", "contacts", "companies", "customers")


def _problem(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"title": title, "type": f"https://httpstatus.es/{status}", "status": status, "detail": detail, **extra}


def _digits(phone: Any) -> str:
    return re.sub(r"\D", "", str(phone))[-10:]


@dataclass
class Logged:
    t: float  # arrival, monotonic seconds
    method: str
    path: str
    status: int
    items: int = 0  # calls in a POST /api/v4/calls


class FakeKommo(Faults):
    def __init__(
        self,
        *,
        token: str = "kommo-long-lived-token",
        contacts: dict[str, tuple[str, int]] | None = None,
        rate: float = 7.0,
        burst: int = 7,
        retry_after: int = 1,
        block_after: int = 5,
        plain_429: bool = False,
        customers_enabled: bool = False,
        match_any: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.token = token
        # last 10 digits of a phone -> (entity type, entity id) its call notes land on
        self.contacts = {_digits(k): v for k, v in (contacts or {}).items()}
        self.rate = rate
        self.burst = burst
        self.retry_after = retry_after
        self.block_after = block_after
        self.plain_429 = plain_429
        self.customers_enabled = customers_enabled
        self.match_any = match_any  # every phone has a contact (for traffic with fresh numbers)
        self.clock = clock
        self.wall = wall
        super().__init__()
        self.notes: list[dict[str, Any]] = []
        self.unsorted: list[dict[str, Any]] = []
        self.edits: list[dict[str, Any]] = []  # every note edit (PATCH) as received
        self.blocked = False
        self.down = False
        self._tokens = float(burst)
        self._tokens_t = clock()
        self._throttled_in_a_row = 0
        self._ids = 1000

    # -- test controls --------------------------------------------------------------------

    def add_contact(self, phone: str, entity: tuple[str, int] = ("contacts", 0)) -> None:
        with self.lock:
            self._ids += 1
            self.contacts[_digits(phone)] = (entity[0], entity[1] or self._ids)

    def fail_next(self, n: int, status: int, body: Any, *, execute: bool = False) -> None:
        """The next ``n`` requests get this reply (after running, if ``execute``)."""
        self.script(n, status, body, execute=execute)

    def unblock(self) -> None:
        with self.lock:
            self.blocked = False
            self._throttled_in_a_row = 0

    def call_notes(self) -> list[dict[str, Any]]:
        with self.lock:
            return [n for n in self.notes if n["note_type"] in ("call_in", "call_out")]

    def duplicates(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.call_notes():
            counts[n["params"]["uniq"]] = counts.get(n["params"]["uniq"], 0) + 1
        return {k: c for k, c in counts.items() if c > 1}

    def throttled(self) -> list[Logged]:
        with self.lock:
            return [e for e in self.log if e.status == 429]

    # -- WSGI -----------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        status, body = self._handle(request)
        if status == 204:
            response = Response(status=204)
        elif isinstance(body, str):
            response = Response(body, status=status, content_type="text/html")
        else:
            kind = "application/hal+json" if status < 400 else "application/problem+json"
            response = Response(json.dumps(body), status=status, content_type=kind)
        return response(environ, start_response)

    def _handle(self, request: Request) -> tuple[int, Any]:
        now = self.clock()
        delay, hold = 0.0, None
        with self.lock:
            entry = Logged(now, request.method, request.path, 0)
            self.log.append(entry)
            status, body = self._admit(request, now)
            if status == 0:
                scripted, delay, hold = self._next_faults()
                if scripted is not None and not scripted.execute:
                    status, body = scripted.status, scripted.body
                else:
                    status, body = self._route(request, entry)
                    if scripted is not None:
                        status, body = scripted.status, scripted.body
            entry.status = status
        self._linger(delay, hold)
        return status, body

    def _admit(self, request: Request, now: float) -> tuple[int, Any]:
        """Down, blocked, throttled or unauthorized: the reply; else status 0 (go on)."""
        if self.down:
            return 503, "<html><body>503 Service Unavailable</body></html>"
        if self.blocked:
            return 403, _problem(403, "Forbidden", "Access denied: too many requests from this IP")
        self._tokens = min(float(self.burst), self._tokens + max(0.0, now - self._tokens_t) * self.rate)
        self._tokens_t = now
        if self._tokens < 1:
            self._throttled_in_a_row += 1
            if self._throttled_in_a_row >= self.block_after:
                self.blocked = True
            if self.plain_429:
                return 429, "Too many requests"
            return 429, _problem(
                429, "Too Many Requests",
                "You have sent too many requests in a given amount of time. Please try again later.",
                retry_after=self.retry_after)
        self._tokens -= 1
        self._throttled_in_a_row = 0
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return 401, _problem(401, "Unauthorized", "Invalid user name or password")
        return 0, None

    def _route(self, request: Request, entry: Logged) -> tuple[int, Any]:
        path = request.path.rstrip("/")
        if path == "/api/v4/calls":
            if request.method != "POST":
                return 405, _problem(405, "Method Not Allowed", f"Method {request.method} is not allowed")
            return self._calls(request.get_json(silent=True), entry)
        if path == "/api/v4/leads/unsorted/sip" and request.method == "POST":
            return self._unsorted_sip(request.get_json(silent=True))
        if path == "/api/v4/leads/unsorted" and request.method == "GET":
            return self._list(self.unsorted, request, "unsorted")
        m = re.fullmatch(r"/api/v4/(\w+)/notes", path)
        if m and m.group(1) in ENTITIES and request.method in ("GET", "PATCH"):
            if m.group(1) == "customers" and not self.customers_enabled:
                return 404, _problem(404, "Not Found", f"Cannot {request.method} {request.url}")
            if request.method == "PATCH":
                return self._edit_notes(m.group(1), request.get_json(silent=True))
            return self._notes(m.group(1), request)
        return 404, _problem(404, "Not Found", f"Cannot {request.method} {request.url}")

    # -- calls ----------------------------------------------------------------------------

    def _calls(self, data: Any, entry: Logged) -> tuple[int, Any]:
        if not isinstance(data, list) or not data:
            return 400, _problem(400, "Bad Request", "Request data can not be empty")
        entry.items = len(data)
        if len(data) > MAX_ITEMS:
            return 422, _problem(422, "Unprocessable Entity", "Limit 250 per page")
        invalid = []
        for i, item in enumerate(data):
            rid = str(item.get("request_id", i)) if isinstance(item, dict) else str(i)
            errors = _validate(item)
            if errors:
                invalid.append({"request_id": rid, "errors": errors})
        if invalid:
            return 400, _problem(400, "Bad Request", "Request validation failed", **{"validation-errors": invalid})
        created, errors = [], []
        for i, item in enumerate(data):
            rid = str(item.get("request_id", i))
            if self.match_any and _digits(item["phone"]) not in self.contacts:
                self.add_contact(str(item["phone"]))
            target = self.contacts.get(_digits(item["phone"]))
            if target is None:
                errors.append({"request_id": rid, "title": "Entity not found", "status": 400,
                               "detail": f"No entity found for phone {item['phone']}"})
                continue
            note = self._note(target, item)
            created.append({"id": note["id"], "entity_id": target[1], "entity_type": target[0].rstrip("s"),
                            "account_id": 28805383, "request_id": rid,
                            "_embedded": {"entity": {"id": target[1]}}})
        body = {"_total_items": len(created), "errors": errors, "_embedded": {"calls": created}}
        return (400 if errors and not created else 200), body

    def _note(self, target: tuple[str, int], item: dict[str, Any]) -> dict[str, Any]:
        self._ids += 1
        now = int(self.wall())
        note = {
            "id": self._ids, "entity_id": target[1], "entity_type": target[0],
            "note_type": "call_out" if item.get("direction") == "outbound" else "call_in",
            "created_by": item.get("created_by", 0), "responsible_user_id": item.get("responsible_user_id", 0),
            "created_at": item.get("created_at", now), "updated_at": now, "account_id": 28805383,
            "params": {k: item[k] for k in ("uniq", "duration", "source", "link", "phone", "call_result",
                                             "call_status") if k in item},
            "received": dict(item),  # not a real field: what the client sent
        }
        self.notes.append(note)
        return note

    def _unsorted_sip(self, data: Any) -> tuple[int, Any]:
        if not isinstance(data, list) or not data:
            return 400, _problem(400, "Bad Request", "Request data can not be empty")
        created, errors = [], []
        for i, item in enumerate(data):
            rid = str(item.get("request_id", i))
            meta = item.get("metadata") or {}
            if not item.get("source_uid") or not item.get("source_name") or not meta.get("phone"):
                errors.append({"request_id": rid, "title": "Bad Request", "detail": "source_uid, source_name and "
                               "metadata.phone are required"})
                continue
            if any(u["source_uid"] == item["source_uid"] for u in self.unsorted):
                errors.append({"request_id": rid, "title": "Duplicate", "detail": "Entity already exists"})
                continue
            self._ids += 1
            lead_id, contact_id = self._ids, self._ids + 1
            self._ids += 1
            uid = f"unsorted-{lead_id}"
            self.unsorted.append({"uid": uid, "source_uid": item["source_uid"], "source_name": item["source_name"],
                                  "category": "sip", "created_at": item.get("created_at", int(self.wall())),
                                  "metadata": meta, "account_id": 28805383,
                                  "_embedded": {"leads": [{"id": lead_id}], "contacts": [{"id": contact_id}]}})
            if meta.get("is_call_event_needed"):
                self._note(("leads", lead_id), {"direction": "inbound", "uniq": meta.get("uniq"),
                                                "duration": meta.get("duration", 0), "source": item["source_name"],
                                                "phone": meta["phone"], **({"link": meta["link"]} if "link" in meta else {})})
            created.append({"uid": uid, "account_id": 28805383, "request_id": rid,
                            "_embedded": {"leads": [{"id": lead_id}], "contacts": [{"id": contact_id}]}})
        body = {"_total_items": len(created), "errors": errors, "_embedded": {"unsorted": created}}
        return (400 if errors and not created else 200), body

    def _edit_notes(self, entity: str, data: Any) -> tuple[int, Any]:
        if not isinstance(data, list) or not data:
            return 400, _problem(400, "Bad Request", "Request data can not be empty")
        by_id = {n["id"]: n for n in self.notes if n["entity_type"] == entity}
        invalid = [{"request_id": str(item.get("request_id", i)) if isinstance(item, dict) else str(i),
                    "errors": [{"code": "NotFound", "path": "id", "detail": "Note not found"}]}
                   for i, item in enumerate(data) if not isinstance(item, dict) or item.get("id") not in by_id]
        if invalid:
            return 400, _problem(400, "Bad Request", "Request validation failed", **{"validation-errors": invalid})
        edited = []
        for i, item in enumerate(data):
            note = by_id[item["id"]]
            nulls = [k for k, v in (item.get("params") or {}).items() if v is None]
            if nulls:
                return 400, _problem(400, "Bad Request", "Request validation failed", **{"validation-errors": [
                    {"request_id": str(i), "errors": [{"code": "NotNullable", "path": f"params.{k}",
                                                       "detail": "This value should not be null."} for k in nulls]}]})
            note["params"].update(item.get("params") or {})
            note["updated_at"] = int(self.wall())
            self.edits.append(dict(item))
            edited.append({"id": note["id"], "entity_id": note["entity_id"], "request_id": str(item.get("request_id", i))})
        return 200, {"_embedded": {"notes": edited}}

    # -- lists ----------------------------------------------------------------------------

    def _notes(self, entity: str, request: Request) -> tuple[int, Any]:
        args = request.args
        types = set(args.getlist("filter[note_type][]") + args.getlist("filter[note_type]"))
        rows = [n for n in self.notes if n["entity_type"] == entity and (not types or n["note_type"] in types)]
        lo = args.get("filter[updated_at][from]", type=int)
        hi = args.get("filter[updated_at][to]", type=int)
        if lo is not None:
            rows = [n for n in rows if n["updated_at"] >= lo]
        if hi is not None:
            rows = [n for n in rows if n["updated_at"] <= hi]
        public = [{k: v for k, v in n.items() if k != "received"} for n in rows]
        return self._page(public, request, "notes")

    def _list(self, rows: list[dict[str, Any]], request: Request, name: str) -> tuple[int, Any]:
        cats = set(request.args.getlist("filter[category][]"))
        return self._page([r for r in rows if not cats or r.get("category") in cats], request, name)

    @staticmethod
    def _page(rows: list[dict[str, Any]], request: Request, name: str) -> tuple[int, Any]:
        limit = min(request.args.get("limit", 50, type=int), 250)
        page = max(1, request.args.get("page", 1, type=int))
        chunk = rows[(page - 1) * limit: page * limit]
        if not chunk:
            return 204, None
        links: dict[str, Any] = {"self": {"href": request.url}}
        if page * limit < len(rows):
            links["next"] = {"href": request.base_url + f"?page={page + 1}&limit={limit}"}
        return 200, {"_page": page, "_links": links, "_embedded": {name: chunk}}


def _validate(item: Any) -> list[dict[str, str]]:
    if not isinstance(item, dict):
        return [{"code": "InvalidType", "path": "", "detail": "This value should be of type object."}]
    errors = []
    for key, value in item.items():
        if key not in CALL_FIELDS:
            errors.append({"code": "ExtraField", "path": key, "detail": "This field was not expected."})
        elif value is None:
            errors.append({"code": "NotNullable", "path": key, "detail": "This value should not be null."})
        elif not isinstance(value, CALL_FIELDS[key]) or isinstance(value, bool):
            errors.append({"code": "InvalidType", "path": key, "detail": "This value has an invalid type."})
    for key in REQUIRED:
        if key not in item:
            errors.append({"code": "NotBlank", "path": key, "detail": "This value should not be blank."})
    if item.get("direction") not in (None, "inbound", "outbound"):
        errors.append({"code": "NotSupportedChoice", "path": "direction",
                       "detail": "The value you selected is not a valid choice."})
    status = item.get("call_status")
    if isinstance(status, int) and status not in range(1, 8):
        errors.append({"code": "NotSupportedChoice", "path": "call_status",
                       "detail": "The value you selected is not a valid choice."})
    if isinstance(item.get("source"), str) and not item["source"].strip():
        errors.append({"code": "NotBlank", "path": "source", "detail": "This value should not be blank."})
    return errors
