"""The CEL table as a stream of :class:`CelRow` ordered by id (SPEC §3).

The imperative shell around :mod:`celsync.cel.columns` and :mod:`celsync.cel.parse`: it
connects, reflects the table, and runs the few queries the pipeline, ``reprocess`` and
``doctor`` need. Every query is built with SQLAlchemy Core from quoted identifiers and bound
parameters; rows are streamed from the driver so memory follows the batch, not the table.
"""

from __future__ import annotations

import math
import os
import sqlite3
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Numeric, and_, cast, column, create_engine, func, inspect, null, select, table, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, NoSuchTableError
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Select

from celsync.cel.columns import (
    EXTRA_SAMPLE, ColumnInfo, ColumnMap, SourceError, extra_problem, kind_of, resolve,
)
from celsync.cel.parse import as_text, parse_eventtime, parse_values
from celsync.config import SourceConfig
from celsync.model import CEL_COLUMNS, CelRow

_IN_CHUNK = 500  # values per IN (...) list: well under every driver's parameter limit
_YIELD_PER = 1000  # rows fetched from a server-side cursor at a time


def resolve_timezone(name: str | None) -> tzinfo:
    """``source.timezone``, or the host's zone (``TZ``, then ``/etc/localtime``), else UTC."""
    if name:
        return ZoneInfo(name)
    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        try:
            return ZoneInfo(env)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    link = os.path.realpath("/etc/localtime")
    if "/zoneinfo/" in link:
        try:
            return ZoneInfo(link.split("/zoneinfo/", 1)[1])
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return timezone.utc


def make_engine(url: str) -> Engine:
    """An engine for the CEL database. A SQLite file is opened read-only and must exist.

    Read-only means celsync can never write to (or accidentally create) the PBX's database,
    and it works on files the service user may only read.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SourceError(f"source.url: {url!r} is not a database URL (e.g. sqlite:///cel.sqlite)") from None
    safe = parsed.render_as_string(hide_password=True)
    database = parsed.database or ""
    try:
        if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
            path = Path(database)
            if not path.is_file():
                raise SourceError(f"source.url: SQLite file {str(path)!r} does not exist ({safe})")
            uri = f"file:{quote(str(path.resolve()))}?mode=ro"
            return create_engine(
                "sqlite://",
                creator=lambda: sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False),
            )
        return create_engine(parsed, pool_pre_ping=True)
    except (NoSuchModuleError, ImportError) as exc:
        raise SourceError(f"source.url: no database driver for {safe}: {exc}") from None


class CelSource:
    """Reads one CEL table. Construction connects, resolves columns and checks ``extra``.

    Raises :class:`SourceError` (naming the config key) when the table or a required
    column cannot be found. ``degraded`` / ``degraded_reason`` say whether ``extra`` is
    usable; ``warnings`` lists other one-time notes for the start-up log.
    """

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.zone = resolve_timezone(config.timezone)
        self.engine = make_engine(config.url)
        #: the URL for messages, password hidden
        self.url = make_url(config.url).render_as_string(hide_password=True)
        schema, _, name = config.table.rpartition(".")
        self._schema = schema or None
        self._name = name
        try:
            self.columns: ColumnMap = resolve(config.table, self._reflect(), config.columns)
        except SourceError:
            self.engine.dispose()
            raise
        actual = self.columns.actual
        tbl = table(name, *(column(c) for c in dict.fromkeys(actual.values())), schema=self._schema)
        self._col = {canonical: tbl.c[real] for canonical, real in actual.items()}
        self._id = self._col["id"]
        self._table = tbl
        self.degraded_reason = extra_problem(self.columns, self._extra_samples())
        # Every canonical column in CEL_COLUMNS order, NULL where the table has none, so that
        # each row arrives as the tuple parse_values unpacks. In degraded mode the extra
        # column is not read at all: it holds nothing useful and would only tag every row
        # with a "not JSON" problem.
        self._select: Select[Any] = select(*(
            tbl.c[actual[canonical]].label(canonical)
            if canonical in actual and not (canonical == "extra" and self.degraded_reason)
            else null().label(canonical)
            for canonical in CEL_COLUMNS
        )).select_from(tbl)
        self.warnings: tuple[str, ...] = self.columns.warnings

    @property
    def degraded(self) -> bool:
        """True when ``extra`` gives no data: statuses fall back to answered/missed."""
        return self.degraded_reason is not None

    def describe(self) -> str:
        """One line for logs: where the rows come from and how they are read."""
        return (
            f"CEL source {self.url} table {self.config.table} ({self.columns.summary()}); "
            f"naive eventtime read in {self.zone}"
        )

    # ---------------------------------------------------------------- reading

    def read_after(self, after_id: int, limit: int) -> list[CelRow]:
        """Up to ``limit`` rows with ``id > after_id``, ascending by id.

        Fewer than ``limit`` rows means the reader has reached the end of the table (for
        now): the pipeline switches its clock to the wall clock then (SPEC §4). Pass the
        result through a :class:`~celsync.cel.gaps.GapTracker` before moving the cursor.
        """
        stmt = self._select.where(self._id > after_id).order_by(self._id).limit(limit)
        return list(self._stream(stmt))

    def rows_for_calls(
        self, linkedids: Iterable[str], uniqueids: Iterable[str], max_id: int | None = None
    ) -> list[CelRow]:
        """Every row whose linkedid or uniqueid is in the given sets (and ``id <= max_id``).

        Ascending by id, each row once. Used to rebuild a call that a late row re-opens or
        that was in progress when celsync restarted.
        """
        found: dict[int, CelRow] = {}
        for col, values in ((self._col["linkedid"], linkedids), (self._col["uniqueid"], uniqueids)):
            wanted = sorted({v for v in values if v})
            for start in range(0, len(wanted), _IN_CHUNK):
                cond: ColumnElement[bool] = col.in_(wanted[start:start + _IN_CHUNK])
                if max_id is not None:
                    cond = and_(cond, self._id <= max_id)
                for row in self._stream(self._select.where(cond)):
                    found[row.id] = row
        return [found[i] for i in sorted(found)]

    def id_range(self, t_from: datetime, t_to: datetime) -> tuple[int, int] | None:
        """(min id, max id) of the rows with ``t_from <= eventtime <= t_to``, or None.

        The bounds are aware datetimes; they are converted to what the column stores
        (naive wall-clock time in the source zone, epoch numbers, or text).
        """
        cond = _time_condition(
            self._col["eventtime"], self.eventtime_representation(), self.zone, t_from, t_to)
        stmt = select(func.min(self._id), func.max(self._id)).select_from(self._table).where(cond)
        with self.engine.connect() as conn:
            low, high = conn.execute(stmt).one()
        return None if low is None else (int(low), int(high))

    def max_id(self) -> int:
        """The highest id in the table; 0 when it is empty."""
        with self.engine.connect() as conn:
            value = conn.execute(select(func.max(self._id)).select_from(self._table)).scalar()
        return int(value or 0)

    def db_now(self) -> datetime:
        """The database server's clock, aware (compared with eventtime by ``doctor``)."""
        dialect = self.engine.dialect.name
        query = {
            "mysql": "SELECT UTC_TIMESTAMP(6)",
            "mariadb": "SELECT UTC_TIMESTAMP(6)",
            "postgresql": "SELECT clock_timestamp()",
            "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
        }.get(dialect, "SELECT CURRENT_TIMESTAMP")
        with self.engine.connect() as conn:
            value = conn.execute(text(query)).scalar()
        zone = timezone.utc if dialect in ("mysql", "mariadb", "sqlite") else self.zone
        now = parse_eventtime(value, zone)
        if now is None:
            raise SourceError(f"the database at {self.url} returned {value!r} as its current time")
        return now

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    # ---------------------------------------------------------------- facts for doctor

    def newest_rows(self, last: int) -> list[CelRow]:
        """The ``last`` rows with the highest ids, newest first."""
        return list(self._stream(self._select.order_by(self._id.desc()).limit(last)))

    def eventtime_representation(self) -> str:
        """How the table stores eventtime (see :func:`time_representation`)."""
        return time_representation(self._time_sample(), self.columns.kinds["eventtime"])

    def lag(self, cursor_id: int) -> tuple[int, datetime | None]:
        """Rows after ``cursor_id``, and the eventtime of the first of them (None if none)."""
        with self.engine.connect() as conn:
            count = conn.execute(
                select(func.count()).select_from(self._table).where(self._id > cursor_id)
            ).scalar()
        first = self.read_after(cursor_id, 1)
        return int(count or 0), first[0].eventtime if first else None

    def indexed_columns(self) -> set[str]:
        """Canonical columns that lead an index or the primary key (so lookups can use it)."""
        insp = inspect(self.engine)
        leading: set[str] = set()
        pk = insp.get_pk_constraint(self._name, schema=self._schema).get("constrained_columns") or []
        if pk:
            leading.add(pk[0].lower())
        for index in insp.get_indexes(self._name, schema=self._schema):
            names = [n for n in index.get("column_names") or [] if n]
            if names:
                leading.add(names[0].lower())
        return {c for c, real in self.columns.actual.items() if real.lower() in leading}

    def db_utc_offset(self) -> timedelta | None:
        """The database session's own UTC offset (MySQL/PostgreSQL), None where it has none."""
        query = {
            "mysql": "SELECT TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), NOW())",
            "mariadb": "SELECT TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), NOW())",
            "postgresql": "SELECT EXTRACT(TIMEZONE FROM now())",
        }.get(self.engine.dialect.name)
        if query is None:
            return None
        with self.engine.connect() as conn:
            seconds = conn.execute(text(query)).scalar()
        return timedelta(seconds=round(float(seconds or 0) / 60) * 60)

    # ---------------------------------------------------------------- internals

    def _reflect(self) -> list[ColumnInfo]:
        insp_target = f"{self.config.table!r} in {self.url}"
        try:
            insp = inspect(self.engine)
            try:
                found = insp.get_columns(self._name, schema=self._schema)
            except NoSuchTableError:
                tables = insp.get_table_names(schema=self._schema)
                raise SourceError(
                    f"source.table: no table {insp_target}; tables there: "
                    f"{', '.join(sorted(tables)[:40]) or 'none'}"
                ) from None
        except DBAPIError as exc:
            raise SourceError(f"source.url: cannot read table {insp_target}: {exc.orig}") from None
        if not found:  # some dialects return no columns instead of raising
            raise SourceError(f"source.table: no table {insp_target}")
        return [ColumnInfo(c["name"], kind_of(c["type"])) for c in found]

    def _extra_samples(self) -> list[tuple[Any, Any]]:
        if "extra" not in self._col or self.columns.kinds["extra"] != "text":
            return []
        stmt = (
            select(self._col["eventtype"], self._col["extra"]).select_from(self._table)
            .order_by(self._id.desc()).limit(EXTRA_SAMPLE)
        )
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(stmt)]

    def _time_sample(self) -> Any:
        stmt = (
            select(self._col["eventtime"]).select_from(self._table)
            .where(self._col["eventtime"].is_not(None)).order_by(self._id.desc()).limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(stmt).scalar()

    def _stream(self, stmt: Select[Any]) -> Iterator[CelRow]:
        zone = self.zone
        with self.engine.connect() as conn:
            for raw in conn.execution_options(yield_per=_YIELD_PER).execute(stmt):
                yield parse_values(raw, zone)


def time_representation(sample: Any, kind: str) -> str:
    """How a column stores eventtime, from one stored value (or, if none, its type kind).

    One of ``naive`` (wall clock in the source zone), ``aware``, ``epoch_int``, ``epoch``,
    ``epoch_text`` (``'sec.usec'``), ``text`` (``'%Y-%m-%d %H:%M:%S[.f]'``), ``text_iso``
    (with a ``T``).
    """
    if isinstance(sample, datetime):
        return "naive" if sample.tzinfo is None else "aware"
    if isinstance(sample, int):
        return "epoch_int"
    if isinstance(sample, (float, Decimal)):
        return "epoch"
    value = as_text(sample)
    if value:
        if ":" not in value:
            return "epoch_text"
        return "text_iso" if "T" in value else "text"
    return {"datetime": "naive", "datetime_tz": "aware", "integer": "epoch_int",
            "number": "epoch"}.get(kind, "text")


def _time_condition(
    col: ColumnElement[Any], representation: str, zone: tzinfo, t_from: datetime, t_to: datetime
) -> ColumnElement[bool]:
    """``t_from <= col <= t_to`` with the bounds in the column's own representation."""
    if representation == "aware":
        return and_(col >= t_from, col <= t_to)
    if representation == "naive":
        return and_(col >= _naive(t_from, zone), col <= _naive(t_to, zone))
    if representation == "epoch_int":
        return and_(col >= math.ceil(t_from.timestamp()), col <= math.floor(t_to.timestamp()))
    if representation == "epoch":
        return and_(col >= t_from.timestamp(), col <= t_to.timestamp())
    if representation == "epoch_text":
        as_number = cast(col, Numeric(20, 6))  # exact; a FLOAT cast is single precision on MySQL
        return and_(as_number >= _epoch(t_from), as_number <= _epoch(t_to))
    # Text times compare as strings, and a whole second may be stored as '10:00:00' or
    # '10:00:00.000000': the lower bound drops a zero fraction, the upper one keeps it.
    sep = "T" if representation == "text_iso" else " "
    low = _naive(t_from, zone).isoformat(sep)
    high = _naive(t_to, zone).isoformat(sep, timespec="microseconds")
    return and_(col >= low, col <= high)


def _epoch(t: datetime) -> Decimal:
    return Decimal(f"{t.timestamp():.6f}")


def _naive(t: datetime, zone: tzinfo) -> datetime:
    return t.astimezone(zone).replace(tzinfo=None)
