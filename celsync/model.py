"""Plain data that flows through the pipeline: CEL rows in, call records out.

Everything here is treated as immutable and is free of I/O so that the rule engine can be a set of pure
functions over it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Mapping

#: The canonical CEL columns, in the order of SPEC §1 (plus ``userdeftype``, which Asterisk
#: writes for user events, DTMF and STREAM rows).
CEL_COLUMNS: tuple[str, ...] = (
    "id", "eventtype", "eventtime", "cid_name", "cid_num", "cid_ani", "cid_rdnis", "cid_dnid",
    "exten", "context", "channame", "appname", "appdata", "amaflags", "accountcode",
    "peeraccount", "uniqueid", "linkedid", "userfield", "peer", "extra", "userdeftype",
)


@dataclass(slots=True)
class CelRow:
    """One row of the CEL table, normalised. Treat it as immutable.

    (Not ``frozen``: a frozen dataclass costs three times as much to build, and millions of
    rows are built during a reprocess.)

    ``eventtype`` is always a name (numeric types are translated); ``eventtime`` is
    timezone-aware; text columns are ``""`` when absent or NULL. ``extra`` is the parsed JSON
    object (empty when the column is absent, empty or malformed); ``extra_raw`` keeps the text
    as stored so that a malformed value can be inspected. ``problems`` lists what was wrong
    with the row (malformed extra, NULL in a key column...), each a short sentence.
    """

    id: int
    eventtype: str
    eventtime: datetime
    uniqueid: str
    linkedid: str
    channame: str = ""
    cid_name: str = ""
    cid_num: str = ""
    cid_ani: str = ""
    cid_rdnis: str = ""
    cid_dnid: str = ""
    exten: str = ""
    context: str = ""
    appname: str = ""
    appdata: str = ""
    amaflags: str = ""
    accountcode: str = ""
    peeraccount: str = ""
    userfield: str = ""
    peer: str = ""
    userdeftype: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    extra_raw: str | None = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Attempt:
    """An extension leg that rang and was not answered (SPEC §6.5)."""

    extension: str
    dial_type: str  # DDI | queue | group | user | number | unknown
    hangup_cause: str  # USER_BUSY | NO_ANSWER | CALL_REJECTED | ORIGINATOR_CANCEL | ...
    missed_call_type: str  # no_devices | trying | ringing | all_busy | unknown
    ring_seconds: int
    queue: str | None = None
    sub_call_id: str | None = None
    started_at: str | None = None


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One SubCall record: the contract every sink receives (SPEC §7).

    Times are ISO-8601 strings with an offset so that the record is plain JSON as it stands.
    """

    call_id: str
    sub_call_id: str
    direction: str  # incoming | outgoing
    answered: bool
    missed_at: str | None  # queue | ivr | extension | group | None
    extension: str | None
    external_number: str | None
    did: str | None
    started_at: str
    answered_at: str | None
    ended_at: str | None
    duration: int
    wait: int
    recording_id: str | None
    hangup_cause: int | None
    dial_status: str | None
    result: int
    bitrix24_status: str
    kommo_status: int
    kommo_result: str
    attempts: tuple[Attempt, ...] = ()
    accountcode: str | None = None
    userfield: str | None = None

    @property
    def key(self) -> str:
        """The idempotency key used by every sink and the delivery ledger."""
        return f"{self.call_id}/{self.sub_call_id}"

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON object of SPEC §7 (``key`` first)."""
        data = asdict(self)
        data["attempts"] = [dict(a) for a in data["attempts"]]
        return {"key": self.key, **data}
