"""``celsync doctor``: is the CEL source fit for celsync, and if not, what to change (SPEC §10).

:func:`gather_facts` asks the database a few questions; :func:`evaluate` turns the answers
into findings without any I/O, so every verdict is testable from plain values.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Mapping

from celsync.cel.columns import ColumnMap, SourceError
from celsync.cel.parse import usable
from celsync.cel.source import CelSource
from celsync.config import SourceConfig

#: Rows looked at for the event checks.
SAMPLE_ROWS = 5000
#: Below this many rows, missing event types say nothing about cel.conf.
MIN_ROWS_FOR_EVENTS = 50
_FUTURE_TOLERANCE = timedelta(minutes=2)
_LAG_WARN = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Finding:
    """One verdict: ``level`` is ``ok``, ``warn`` or ``error``; ``fix`` says what to change."""

    level: str
    check: str
    message: str
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class SourceFacts:
    """What :func:`gather_facts` learnt from the database."""

    table: str
    url: str
    zone: tzinfo
    columns: ColumnMap
    degraded_reason: str | None
    indexed: frozenset[str]
    max_id: int
    sampled: int
    events: Mapping[str, int]
    malformed_extra: int
    unusable: int
    newest_eventtime: datetime | None
    naive_times: bool
    db_now: datetime
    db_utc_offset: timedelta | None
    cursor_id: int | None = None
    rows_behind: int = 0
    first_unread_eventtime: datetime | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def run_doctor(config: SourceConfig, cursor_id: int | None = None, last: int = SAMPLE_ROWS) -> list[Finding]:
    """All checks against the configured source; ``cursor_id`` is celsync's read position."""
    try:
        source = CelSource(config)
    except SourceError as exc:
        return [Finding("error", "table", str(exc),
                        "correct source.url, source.table or source.columns as the message says")]
    try:
        return evaluate(gather_facts(source, cursor_id, last))
    finally:
        source.close()


def gather_facts(source: CelSource, cursor_id: int | None = None, last: int = SAMPLE_ROWS) -> SourceFacts:
    """The thin I/O part of the doctor: one query per fact."""
    rows = source.newest_rows(last)
    rows_behind, first_unread = source.lag(cursor_id) if cursor_id is not None else (0, None)
    return SourceFacts(
        table=source.config.table, url=source.url, zone=source.zone, columns=source.columns,
        degraded_reason=source.degraded_reason, indexed=frozenset(source.indexed_columns()),
        max_id=source.max_id(), sampled=len(rows),
        events=Counter(r.eventtype for r in rows),
        malformed_extra=sum(1 for r in rows if r.extra_raw and not r.extra),
        unusable=sum(1 for r in rows if not usable(r)),
        newest_eventtime=rows[0].eventtime if rows and usable(rows[0]) else None,
        naive_times=source.eventtime_representation() in ("naive", "text", "text_iso"),
        db_now=source.db_now(), db_utc_offset=source.db_utc_offset(),
        cursor_id=cursor_id, rows_behind=rows_behind, first_unread_eventtime=first_unread,
        warnings=source.warnings,
    )


def evaluate(facts: SourceFacts) -> list[Finding]:
    """Every finding, in the order an administrator would fix them."""
    return [
        *_table(facts), *_columns(facts), *_extra(facts), *_indexes(facts), *_events(facts),
        *_clock(facts), *_lag(facts),
    ]


def _table(f: SourceFacts) -> list[Finding]:
    if not f.max_id:
        return [Finding("warn", "table", f"table {f.table} at {f.url} is readable but empty",
                        "enable CEL in Asterisk (cel.conf enable=yes) and check that its backend "
                        "writes into this table")]
    out = [Finding("ok", "table", f"table {f.table} at {f.url} is readable; highest id {f.max_id}")]
    if f.unusable:
        out.append(Finding(
            "warn", "table",
            f"{f.unusable} of the newest {f.sampled} rows lack uniqueid, linkedid, eventtype or a "
            "readable eventtime; celsync quarantines them",
            "check the CEL backend's column mapping (cel_odbc / cel_pgsql)"))
    return out


def _columns(f: SourceFacts) -> list[Finding]:
    out = [Finding("ok", "columns", f"columns: {f.columns.summary()}")]
    out += [Finding("warn", "columns", w) for w in f.warnings]
    return out


def _extra(f: SourceFacts) -> list[Finding]:
    if f.degraded_reason:
        return [Finding("warn", "extra", f.degraded_reason,
                        "give the CEL table a text 'extra' column (e.g. TEXT or varchar(2048)) and "
                        "reload the CEL backend, or set source.columns.extra")]
    if f.malformed_extra:
        return [Finding(
            "warn", "extra",
            f"{f.malformed_extra} of the newest {f.sampled} rows have an extra value that is not a "
            "JSON object, usually cut short by a too narrow column; their hangup causes are lost",
            "widen the extra column (e.g. ALTER it to TEXT); cel_odbc truncates silently")]
    return [Finding("ok", "extra", "extra holds Asterisk's JSON: hangup causes and dial statuses are read")]


_INDEX_ADVICE = {
    "id": ("error", "every poll (WHERE id > cursor ORDER BY id) scans the whole table"),
    "linkedid": ("warn", "rebuilding a call that a late row re-opens scans the table"),
    "uniqueid": ("warn", "rebuilding a call that a late row re-opens scans the table"),
    "eventtime": ("warn", "`celsync reprocess --from --to` scans the table to find the period"),
}


def _indexes(f: SourceFacts) -> list[Finding]:
    out = []
    for canonical, (level, cost) in _INDEX_ADVICE.items():
        real = f.columns.actual.get(canonical, canonical)
        if canonical in f.indexed:
            out.append(Finding("ok", "indexes", f"{real} is indexed"))
        else:
            out.append(Finding(level, "indexes", f"no index on {real}: {cost}",
                               f"CREATE INDEX {f.table.rpartition('.')[2]}_{real}_idx "
                               f"ON {f.table} ({real})"))
    return out


def _events(f: SourceFacts) -> list[Finding]:
    if f.sampled < MIN_ROWS_FOR_EVENTS:
        return [Finding("warn", "events",
                        f"only {f.sampled} rows in the table: too few to check which CEL events are "
                        "enabled; run doctor again after some calls")]
    where = f"among the newest {f.sampled} rows"
    out = []
    if not f.events.get("LINKEDID_END"):
        out.append(Finding(
            "warn", "events", f"no LINKEDID_END {where}: calls are closed only after "
            "pbx.quiet_seconds of silence, so records arrive later",
            "add LINKEDID_END to events= in cel.conf (or use events=ALL) and reload cel"))
    if not f.events.get("BRIDGE_ENTER"):
        out.append(Finding(
            "error", "events", f"no BRIDGE_ENTER {where}: celsync cannot tell which extension "
            "really talked to the caller, so answered calls look missed",
            "add BRIDGE_ENTER and BRIDGE_EXIT to events= in cel.conf (or use events=ALL)"))
    if not f.events.get("APP_START"):
        out.append(Finding(
            "warn", "events", f"no APP_START {where}: queues and IVRs cannot be named as the place "
            "a call was missed. `apps=all` is not a wildcard on Asterisk 22 (it tracks an "
            "application literally named 'all')",
            "list the applications in cel.conf, e.g. apps=dial,queue,background,playback,read,"
            "voicemail,mixmonitor, with APP_START and APP_END in events="))
    for name in ("CHAN_START", "HANGUP", "CHAN_END", "ANSWER"):
        if not f.events.get(name):
            out.append(Finding("error", "events", f"no {name} {where}: legs cannot be followed",
                               f"add {name} to events= in cel.conf (or use events=ALL)"))
    if not out:
        out.append(Finding("ok", "events", f"the events celsync needs are enabled ({where})"))
    return out


def _clock(f: SourceFacts) -> list[Finding]:
    if f.newest_eventtime is None:
        return []
    age = f.db_now - f.newest_eventtime
    zone_name = str(f.zone)
    out = []
    if age < -_FUTURE_TOLERANCE:
        out.append(Finding(
            "error", "clock",
            f"the newest row's eventtime, read in {zone_name}, is {_span(-age)} ahead of the "
            "database clock: eventtime is not written in that zone",
            f"set source.timezone to the zone Asterisk writes eventtime in (one about "
            f"{_offset(_written_offset(f.newest_eventtime, age))}), or cel_odbc usegmtime=yes "
            "with source.timezone: UTC"))
    elif _whole_hours(age):
        out.append(Finding(
            "warn", "clock",
            f"the newest row is {_span(age)} old by the database clock, a whole number of hours: "
            f"if calls are going on now, eventtime is not written in {zone_name}",
            "set source.timezone to the zone Asterisk writes eventtime in"))
    else:
        out.append(Finding("ok", "clock", f"the newest row is {_span(age)} old by the database clock"))
    if f.naive_times and f.db_utc_offset is not None:
        configured = f.newest_eventtime.utcoffset()
        if configured is not None and configured != f.db_utc_offset:
            out.append(Finding(
                "warn", "clock",
                f"the database server's zone is {_offset(f.db_utc_offset)} but source.timezone "
                f"({zone_name}) was {_offset(configured)}; if Asterisk runs on the database host it "
                "writes eventtime in the server's zone",
                "make source.timezone the zone of the Asterisk host"))
    return out


def _lag(f: SourceFacts) -> list[Finding]:
    if f.cursor_id is None:
        return [Finding("ok", "lag", "no cursor yet: celsync has not read this source")]
    if f.cursor_id > f.max_id:
        return [Finding(
            "error", "lag",
            f"the cursor (id {f.cursor_id}) is beyond the highest id {f.max_id}: the table was "
            "emptied or recreated, new rows would be skipped",
            "reset the cursor (delete the state database or start it at the current table)")]
    behind = timedelta(0)
    if f.first_unread_eventtime is not None and f.newest_eventtime is not None:
        behind = max(timedelta(0), f.newest_eventtime - f.first_unread_eventtime)
    message = f"cursor at id {f.cursor_id}: {f.rows_behind} rows ({_span(behind)}) behind"
    if behind > _LAG_WARN:
        return [Finding("warn", "lag", message, "check that `celsync run` is running and not failing")]
    return [Finding("ok", "lag", message)]


def _written_offset(newest: datetime, age: timedelta) -> timedelta:
    """The offset the PBX wrote in, if its newest row is fresh: configured offset - age."""
    configured = newest.utcoffset() or timedelta(0)
    quarters = round((configured - age).total_seconds() / 900)
    return timedelta(seconds=quarters * 900)


def _whole_hours(age: timedelta) -> bool:
    """An age of 1-14 h within a minute of a half-hour multiple smells like a zone error."""
    seconds = age.total_seconds()
    if not 3600 - 60 <= seconds <= 14 * 3600 + 60:
        return False
    return abs(seconds - round(seconds / 1800) * 1800) <= 60


def _span(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def _offset(delta: timedelta) -> str:
    minutes = round(delta.total_seconds() / 60)
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{rest:02d}"
