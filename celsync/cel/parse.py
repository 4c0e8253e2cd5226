"""Raw CEL rows (as a database driver returns them) to normalised :class:`CelRow` values.

Pure and hot: it runs once per row on tables of millions of rows, so it avoids regexes,
skips ``json.loads`` for the common empty ``extra`` and dispatches on exact value classes.
It never raises on bad data: what is wrong with a row goes into ``CelRow.problems`` and
:func:`usable` tells the pipeline whether the row can be processed at all or must be
quarantined.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from celsync.model import CEL_COLUMNS, CelRow

#: Asterisk 12+ numbering (``enum ast_cel_event_type``), used by integer ``eventtype`` columns.
#: The 1.8-11 numbers still printed in cel_odbc.conf.sample are different and not supported.
EVENT_NAMES: dict[int, str] = {
    1: "CHAN_START", 2: "CHAN_END", 3: "HANGUP", 4: "ANSWER", 5: "APP_START", 6: "APP_END",
    7: "BRIDGE_ENTER", 8: "BRIDGE_EXIT", 9: "PARK_START", 10: "PARK_END", 11: "BLINDTRANSFER",
    12: "ATTENDEDTRANSFER", 13: "USER_DEFINED", 14: "LINKEDID_END", 15: "PICKUP", 16: "FORWARD",
    17: "LOCAL_OPTIMIZE", 18: "LOCAL_OPTIMIZE_BEGIN", 19: "STREAM_BEGIN", 20: "STREAM_END",
    21: "DTMF",
}
EVENT_NUMBERS: dict[str, int] = {name: num for num, name in EVENT_NAMES.items()}
_USER_DEFINED = 13

#: Sentinel time of a row whose eventtime is NULL or unreadable (the row is not usable).
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
NO_TIME = _EPOCH

_EMPTY: Mapping[str, Any] = MappingProxyType({})  # shared by most rows: read-only
_combine = datetime.combine  # attaching a tzinfo this way is 5x cheaper than .replace()
_FIXED: dict[timedelta, timezone] = {}
#: Memo of (zone, date, hour) -> offset for wall-clock hours without an offset change: it
#: makes reading a naive time about 4x cheaper. Bounded; purely a cache.
_HOURS: dict[tuple[Any, ...], timezone] = {}
_P_UNIQUEID = "uniqueid is NULL or empty: the row cannot be assigned to a channel"
_P_LINKEDID = "linkedid is NULL or empty: the row cannot be assigned to a call"
_P_EVENTTYPE = "eventtype is NULL or empty"
_P_ID = "id is NULL or not an integer"
_P_TIME = "eventtime "  # prefix of "eventtime is NULL" / "eventtime '...' is not a time"
_P_MALFORMED = "malformed extra JSON (truncated column?); its fields are treated as absent"
_P_NOT_OBJECT = "extra is not a JSON object (pre-Asterisk-12 text?); its fields are treated as absent"
#: Problems that make a row impossible to place in a call: such rows are quarantined.
FATAL_PROBLEMS = frozenset({_P_UNIQUEID, _P_LINKEDID, _P_EVENTTYPE, _P_ID})


def usable(row: CelRow) -> bool:
    """False when the row cannot be processed (missing key column or time): quarantine it.

    Other problems (a malformed ``extra``) only lose that row's extra fields: process and
    count them.
    """
    return not row.problems or not any(
        p in FATAL_PROBLEMS or p.startswith(_P_TIME) for p in row.problems
    )


def parse_row(raw: Mapping[str, Any], zone: tzinfo) -> CelRow:
    """One raw row (canonical column name -> driver value) as a :class:`CelRow`.

    Absent keys read as NULL. ``zone`` says how to read naive times (the source timezone).
    """
    return parse_values(tuple(map(raw.get, CEL_COLUMNS)), zone)


def parse_values(values: Sequence[Any], zone: tzinfo) -> CelRow:
    """:func:`parse_row` for driver values in ``CEL_COLUMNS`` order, as the reader selects them.

    Unpacking a tuple is far cheaper than building a dict per row, and this runs once per row.
    """
    (rid, eventtype, raw_time, cid_name, cid_num, cid_ani, cid_rdnis, cid_dnid, exten, context,
     channame, appname, appdata, amaflags, accountcode, peeraccount, uniqueid, linkedid, userfield,
     peer, raw_extra, userdeftype) = values
    problems: list[str] = []

    if rid.__class__ is not int:
        try:
            rid = int(rid)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            rid = 0
            problems.append(_P_ID)

    uniqueid = as_text(uniqueid)
    if not uniqueid:
        problems.append(_P_UNIQUEID)
    linkedid = as_text(linkedid)
    if not linkedid:
        problems.append(_P_LINKEDID)

    userdeftype = as_text(userdeftype)
    eventtype = parse_eventtype(eventtype, userdeftype)
    if not eventtype:
        problems.append(_P_EVENTTYPE)

    eventtime = parse_eventtime(raw_time, zone, uniqueid)
    if eventtime is None:
        eventtime = NO_TIME
        problems.append(
            f"{_P_TIME}is NULL" if raw_time is None else f"{_P_TIME}{raw_time!r} is not a time"
        )

    if raw_extra is None or raw_extra == "":
        extra, extra_raw = _EMPTY, None
    else:
        extra_raw = as_text(raw_extra)
        extra, problem = parse_extra(extra_raw, eventtype)
        if problem:
            problems.append(problem)

    text = as_text
    return CelRow(
        id=rid, eventtype=eventtype, eventtime=eventtime, uniqueid=uniqueid, linkedid=linkedid,
        channame=text(channame), cid_name=text(cid_name), cid_num=text(cid_num),
        cid_ani=text(cid_ani), cid_rdnis=text(cid_rdnis), cid_dnid=text(cid_dnid),
        exten=text(exten), context=text(context), appname=text(appname), appdata=text(appdata),
        amaflags=text(amaflags), accountcode=text(accountcode), peeraccount=text(peeraccount),
        userfield=text(userfield), peer=text(peer), userdeftype=userdeftype,
        extra=extra, extra_raw=extra_raw, problems=tuple(problems) if problems else (),
    )


def parse_eventtype(value: Any, userdeftype: str = "") -> str:
    """The event name from a name or an Asterisk 12+ number.

    A numeric user event (13) takes the user's name from ``userdeftype``, as a char column
    would hold it. Unknown names are kept as they are; unknown numbers become their digits.
    """
    if value is None:
        return ""
    if value.__class__ is str:
        name = value.rstrip() if value[-1:] == " " else value
        if not name.isdigit():
            return name
        value = int(name)
    elif isinstance(value, bytes):
        return parse_eventtype(value.decode("utf-8", "replace"), userdeftype)
    try:
        number = int(value)
    except (TypeError, ValueError):
        return str(value)
    if number == _USER_DEFINED and userdeftype:
        return userdeftype
    return EVENT_NAMES.get(number, str(number))


def parse_extra(raw: str, eventtype: str = "") -> tuple[Mapping[str, Any], str | None]:
    """``extra`` text -> (fields, problem or None). Never raises.

    JSON objects are the Asterisk 12+ format. A pre-12 HANGUP stored
    ``"<cause>,<hangupsource>,<dialstatus>"``; that is read into the same three keys.
    """
    if not raw:
        return _EMPTY, None
    if raw[0] != "{" and raw.lstrip()[:1] != "{":
        if eventtype == "HANGUP":
            csv = _hangup_csv(raw)
            if csv is not None:
                return csv, None
        return _EMPTY, _P_NOT_OBJECT
    try:
        value = json.loads(raw)
    except ValueError:
        return _EMPTY, _P_MALFORMED
    if not isinstance(value, dict):
        return _EMPTY, _P_NOT_OBJECT
    return value, None


def _hangup_csv(raw: str) -> dict[str, Any] | None:
    parts = raw.split(",")
    cause = parts[0].strip()
    if len(parts) < 2 or not cause.isdigit():
        return None
    if len(parts) == 2:
        return {"hangupcause": int(cause), "hangupsource": parts[1], "dialstatus": ""}
    return {"hangupcause": int(cause), "hangupsource": ",".join(parts[1:-1]), "dialstatus": parts[-1]}


def parse_eventtime(value: Any, zone: tzinfo, uniqueid: str = "") -> datetime | None:
    """A timezone-aware time (fixed UTC offset as of that instant), or None if unreadable.

    Accepts datetimes (naive ones are wall-clock time in ``zone``), ``'%Y-%m-%d %H:%M:%S[.f]'``
    strings (ISO-8601 with an offset too) and epoch seconds as int, float, Decimal or a
    ``'sec.usec'`` string. The result carries a fixed offset rather than ``zone`` itself so
    that comparisons and differences are exact across DST changes. ``uniqueid`` (the row's)
    settles the repeated hour of a DST fall-back, see :func:`localize`.
    """
    cls = value.__class__
    if cls is datetime:
        return _aware(value, zone, uniqueid)
    if cls is str:
        text = value.strip()
        if not text:
            return None
        if ":" in text or "-" in text[1:]:
            try:
                return _aware(datetime.fromisoformat(text), zone, uniqueid)
            except ValueError:
                return None
        return _from_epoch_text(text, zone)
    if cls is int or cls is float or cls is Decimal:
        try:
            micros = round(value * 1_000_000)
            return _aware(_EPOCH + timedelta(microseconds=micros), zone, uniqueid)
        except (OverflowError, ValueError, ArithmeticError):
            return None
    if isinstance(value, datetime):  # a driver's own datetime subclass
        return _aware(value, zone, uniqueid)
    if isinstance(value, bytes):
        return parse_eventtime(value.decode("ascii", "replace"), zone, uniqueid)
    return None


def _aware(value: datetime, zone: tzinfo, uniqueid: str) -> datetime:
    if value.tzinfo is None:
        return localize(value, zone, uniqueid)
    local = value.astimezone(zone)
    return local.replace(tzinfo=_fixed(local.utcoffset()), fold=0)


def _from_epoch_text(text: str, zone: tzinfo) -> datetime | None:
    sec, _, frac = text.partition(".")
    if not sec.isdigit() or (frac and not frac.isdigit()):
        return None
    micros = int(frac[:6].ljust(6, "0")) if frac else 0
    try:
        return _aware(_EPOCH + timedelta(seconds=int(sec), microseconds=micros), zone, "")
    except OverflowError:
        return None


def localize(naive: datetime, zone: tzinfo, uniqueid: str = "") -> datetime:
    """Wall-clock ``naive`` in ``zone`` as an aware time with a fixed offset.

    In the repeated hour of a DST fall-back both readings exist. Asterisk's default
    uniqueid ``[system-]<epoch>.<seq>`` says when the channel was created; a reading before
    that is impossible, so the later one is taken. Without that evidence the first
    (daylight-saving) reading is used. A time in the spring-forward gap is read with the
    offset in force before the change.
    """
    hour = (zone, naive.year, naive.month, naive.day, naive.hour)
    tz = _HOURS.get(hour)
    if tz is not None:
        return _combine(naive, naive.time(), tz)
    first, second = _offsets(naive, zone)
    offset = first
    if first == second and _steady_hour(naive, zone, first):
        if len(_HOURS) > 100_000:
            _HOURS.clear()
        _HOURS[hour] = _fixed(first)
    elif first > second:  # ambiguous: the wall clock went back over this time
        created = _uniqueid_epoch(uniqueid)
        early = (naive - first).replace(tzinfo=timezone.utc).timestamp()
        if created is not None and early < created - 1:
            offset = second
    return _combine(naive, naive.time(), _fixed(offset))


def _steady_hour(naive: datetime, zone: tzinfo, offset: timedelta) -> bool:
    """True when the whole wall-clock hour of ``naive`` has one unambiguous ``offset``."""
    start = naive.replace(minute=0, second=0, microsecond=0)
    end = naive.replace(minute=59, second=59, microsecond=999999)
    return _offsets(start, zone) == (offset, offset) == _offsets(end, zone)


def _offsets(naive: datetime, zone: tzinfo) -> tuple[timedelta, timedelta]:
    first = naive.replace(tzinfo=zone).utcoffset()
    second = naive.replace(tzinfo=zone, fold=1).utcoffset()
    if first is None or second is None:
        raise ValueError(f"time zone {zone!r} gives no UTC offset for {naive}")
    return first, second


def _uniqueid_epoch(uniqueid: str) -> float | None:
    tail = uniqueid.rpartition("-")[2]
    sec, dot, seq = tail.partition(".")
    if not (dot and sec.isdigit() and seq.isdigit() and len(sec) >= 9):
        return None
    return float(sec)


def _fixed(offset: timedelta | None) -> timezone:
    if offset is None:
        return timezone.utc
    tz = _FIXED.get(offset)
    if tz is None:
        tz = _FIXED[offset] = timezone.utc if not offset else timezone(offset)
    return tz


def as_text(value: Any) -> str:
    """A column value as text: NULL is ``""``, bytes are decoded as UTF-8."""
    if value.__class__ is str:
        return value
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)
