"""CEL tables as real installations have them, for tests, the bundled sample and benchmarks.

Each variant reproduces a schema met in the wild (cel.md §2.3) on MySQL/MariaDB, PostgreSQL
or SQLite, so the reader is exercised against the column names, types and precision it will
meet, not against an idealised table:

- ``stock``: every canonical column, ``id`` auto-increment primary key, ``eventtime`` with
  microseconds, ``extra`` text, indexes on ``linkedid``, ``uniqueid`` and ``eventtime``;
- ``freepbx``: FreePBX ``asteriskcdrdb.cel``: no ``peeraccount``/``userfield``, ``eventtime``
  in whole seconds (MariaDB truncates the fraction, MySQL and PostgreSQL round it; SQLite
  keeps it), ``extra varchar(512)``, indexes on ``uniqueid``, ``linkedid``, ``context``;
- ``renamed``: third-party names (``AcctId``, ``channel``, ``cidname``..., ``app``,
  ``bridgepeer``, ``eventextra varchar(255)``);
- ``noextra``: the docs.asterisk.org PostgreSQL schema: no ``extra``, everything NOT NULL,
  no primary key or index (where the database allows an auto-increment without a key);
- ``numeric``: ``stock`` with an integer ``eventtype`` (Asterisk 12+ numbers);
- ``sqlite3_custom``: cel_sqlite3_custom's default table: ``AcctId``, no ``linkedid`` or
  ``peeraccount``, ``eventextra``, ``eventtime`` as ``'sec.usec'`` text.

Values longer than a limited ``extra`` column are cut as cel_odbc does, so a truncated JSON
is what lands in the table.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger, Column, DateTime, Identity, Index, Integer, MetaData, String, Table, Text, func,
    select,
)
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Engine
from sqlalchemy.types import TypeEngine

from celsync.cel.parse import EVENT_NUMBERS
from celsync.model import CEL_COLUMNS

#: The corpus of real Asterisk 22 CEL rows bundled with the tests.
CORPUS = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "asterisk22-pjsip" / "corpus.json"
SCHEMA_VARIANTS = ("stock", "freepbx", "renamed", "noextra", "numeric", "sqlite3_custom")
#: Canonical -> real column names of the variants that rename columns.
RENAMES: dict[str, dict[str, str]] = {
    "renamed": {
        "id": "AcctId", "channame": "channel", "cid_name": "cidname", "cid_num": "cidnum",
        "cid_ani": "cidani", "cid_rdnis": "cidrdnis", "cid_dnid": "ciddnid", "appname": "app",
        "peer": "bridgepeer", "extra": "eventextra",
    },
    "sqlite3_custom": {
        "id": "AcctId", "cid_name": "cidname", "cid_num": "cidnum", "cid_ani": "cidani",
        "cid_rdnis": "cidrdnis", "cid_dnid": "ciddnid", "extra": "eventextra",
    },
}
_ABSENT = {
    "freepbx": {"peeraccount", "userfield"},
    "noextra": {"extra"},
    "sqlite3_custom": {"linkedid", "peeraccount"},
}
_EXTRA_LENGTH = {"freepbx": 512, "renamed": 255}
_INDEXED = {
    "stock": ("linkedid", "uniqueid", "eventtime"),
    "numeric": ("linkedid", "uniqueid", "eventtime"),
    "freepbx": ("uniqueid", "linkedid", "context"),
    "renamed": ("linkedid",),
}
_LENGTHS = {"eventtype": 30, "cid_name": 80, "cid_num": 80, "cid_ani": 80, "cid_rdnis": 80,
            "cid_dnid": 80, "exten": 80, "context": 80, "channame": 80, "appname": 80,
            "appdata": 255, "accountcode": 20, "peeraccount": 80, "uniqueid": 150,
            "linkedid": 150, "userfield": 255, "peer": 80, "userdeftype": 255}
_CHUNK = 5000


def real_columns(variant: str) -> dict[str, str]:
    """Canonical -> real column name for every canonical column the variant has."""
    _check(variant)
    renames = RENAMES.get(variant, {})
    absent = _ABSENT.get(variant, set())
    return {c: renames.get(c, c) for c in CEL_COLUMNS if c not in absent}


def cel_table(variant: str, dialect: str, name: str = "cel", metadata: MetaData | None = None) -> Table:
    """The SQLAlchemy table of ``variant`` as it is declared on ``dialect``."""
    real = real_columns(variant)
    columns: list[Column[Any]] = []
    for canonical, column_name in real.items():
        if canonical == "id":
            columns.append(_id_column(variant, dialect, column_name))
            continue
        nullable = variant != "noextra"
        columns.append(Column(column_name, _type(variant, canonical), nullable=nullable))
    tbl = Table(name, metadata or MetaData(), *columns, mysql_charset="utf8mb4")
    for canonical in _INDEXED.get(variant, ()):
        Index(f"{name}_{canonical}_index", tbl.c[real[canonical]])
    return tbl


def create_table(engine: Engine, table: str = "cel", variant: str = "stock") -> Table:
    """Create (if absent) the CEL table ``table`` of ``variant`` in ``engine``'s database."""
    tbl = cel_table(variant, engine.dialect.name, table)
    tbl.metadata.create_all(engine)
    return tbl


def insert_rows(
    engine: Engine, table: str, variant: str, rows: Iterable[Mapping[str, Any]],
    tz: str = "UTC",
) -> int:
    """Insert canonical rows into an existing table of ``variant``; return how many.

    Rows map canonical column names to values (missing ones are written as ``""``/NULL as
    the column allows). Aware ``eventtime`` values are written as wall-clock time in ``tz``
    (what Asterisk does without ``usegmtime``), naive ones as they are. Either every row
    carries an ``id`` or none does (then the database numbers them). The INSERT is compiled
    once and run with the driver's executemany in chunks, one transaction per chunk: the
    benchmarks load millions of rows through it.
    """
    dialect = engine.dialect.name
    tbl = cel_table(variant, dialect, table)
    real = real_columns(variant)
    stream = iter(rows)
    first = next(stream, None)
    if first is None:
        return 0
    with_ids = first.get("id") is not None
    keys = [name for canonical, name in real.items() if with_ids or canonical != "id"]
    compiled = tbl.insert().compile(dialect=engine.dialect, column_keys=keys)
    sql, order = str(compiled), compiled.positiontup if compiled.positional else None
    convert = _Converter(variant, real, ZoneInfo(tz), with_ids, dialect == "sqlite")
    count = 0
    for chunk in _chunks(itertools.chain([first], stream), _CHUNK):
        params: list[Any] = [convert(row) for row in chunk]
        if order:
            params = [tuple(p[k] for k in order) for p in params]
        with engine.begin() as conn:
            conn.exec_driver_sql(sql, params)
        count += len(params)
    if with_ids and dialect == "postgresql" and variant != "noextra":
        id_col = tbl.c[real["id"]]
        top = select(func.max(id_col)).scalar_subquery()
        with engine.begin() as conn:  # explicit ids leave the serial behind: catch it up
            conn.execute(select(func.setval(func.pg_get_serial_sequence(tbl.name, id_col.name), top)))
    return count


def load_scenarios(path: str | Path = CORPUS) -> list[dict[str, Any]]:
    """The corpus file as stored: ``{id, description, truth, sip_observed, columns, rows}``."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_corpus(path: str | Path = CORPUS) -> list[dict[str, Any]]:
    """Every corpus row as a canonical dict, ascending by id (ids kept).

    The corpus stores eventtime as UTC text; here it is an aware UTC datetime.
    """
    rows = []
    for scenario in load_scenarios(path):
        names = scenario["columns"]
        for values in scenario["rows"]:
            row = dict(zip(names, values))
            row["eventtime"] = datetime.fromisoformat(row["eventtime"]).replace(tzinfo=timezone.utc)
            rows.append(row)
    rows.sort(key=lambda r: r["id"])
    return rows


def _check(variant: str) -> None:
    if variant not in SCHEMA_VARIANTS:
        raise ValueError(f"unknown CEL schema variant {variant!r}; known: {', '.join(SCHEMA_VARIANTS)}")


def _id_column(variant: str, dialect: str, name: str) -> Column[Any]:
    if variant == "noextra" and dialect == "postgresql":  # 'id serial', no primary key
        return Column(name, Integer, Identity(), nullable=False)
    if variant in ("renamed", "sqlite3_custom", "freepbx"):
        return Column(name, Integer, primary_key=True, autoincrement=True)
    return Column(name, BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)


def _type(variant: str, canonical: str) -> TypeEngine[Any]:
    if canonical == "eventtime":
        if variant == "sqlite3_custom":
            return String(32)
        if variant == "freepbx":
            return DateTime().with_variant(mysql.DATETIME(fsp=0), "mysql", "mariadb").with_variant(
                postgresql.TIMESTAMP(precision=0), "postgresql")
        return DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    if canonical == "eventtype" and variant == "numeric":
        return Integer()
    if canonical == "amaflags":
        return Integer()
    if canonical == "extra":
        limit = _EXTRA_LENGTH.get(variant)
        return String(limit) if limit else Text()
    length = _LENGTHS[canonical]
    if variant == "freepbx" and canonical in ("uniqueid", "linkedid"):
        length = 32
    return String(length)


class _Converter:
    """A canonical row -> the driver-ready parameters of one variant's INSERT."""

    def __init__(self, variant: str, real: Mapping[str, str], zone: tzinfo, with_ids: bool,
                 text_times: bool) -> None:
        self.variant, self.real, self.zone = variant, real, zone
        self.with_ids, self.text_times = with_ids, text_times
        self.extra_limit = _EXTRA_LENGTH.get(variant)

    def __call__(self, row: Mapping[str, Any]) -> dict[str, Any]:
        variant = self.variant
        out: dict[str, Any] = {}
        for canonical, name in self.real.items():
            value = row.get(canonical)
            if canonical == "id":
                if self.with_ids:
                    out[name] = value
                continue
            if canonical == "eventtime":
                value = self._time(value)
            elif canonical == "amaflags":
                value = int(value) if value not in (None, "") else (0 if variant == "noextra" else None)
            elif canonical == "eventtype" and variant == "numeric":
                value = EVENT_NUMBERS.get(value, 13) if isinstance(value, str) else value
            elif value is None:
                value = ""
            elif canonical == "extra" and self.extra_limit and len(value) > self.extra_limit:
                value = value[:self.extra_limit]  # cel_odbc cuts values to the column length
            out[name] = value
        if variant == "numeric" and isinstance(row.get("eventtype"), str) \
                and row["eventtype"] not in EVENT_NUMBERS and not out.get("userdeftype"):
            out["userdeftype"] = row["eventtype"]  # a user event: the name survives here
        return out

    def _time(self, value: Any) -> Any:
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if not isinstance(value, datetime):
            return value
        if value.tzinfo is not None:
            value = value.astimezone(self.zone).replace(tzinfo=None)
        if self.variant == "sqlite3_custom":  # cel.conf's default dateformat: '<sec>.<usec>'
            instant = value.replace(tzinfo=self.zone)
            return f"{int(instant.timestamp())}.{instant.microsecond:06d}"
        if self.text_times:  # SQLite has no time type: the text SQLAlchemy would store
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")
        return value


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
