"""What the reader must return for a corpus row stored in a given schema variant.

Written independently of celsync.cel.parse (plain json.loads, explicit precision rules) so
that the round-trip tests check the reader against the data, not against itself.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Iterable, Iterator, Mapping

from sqlalchemy import create_engine

from celsync.cel.schema import create_table, insert_rows
from celsync.cel.source import CelSource
from celsync.config import SourceConfig
from celsync.model import CelRow

#: Canonical columns each variant lacks: the reader returns "" for them.
ABSENT = {"freepbx": {"peeraccount", "userfield"}, "noextra": {"extra"},
          "sqlite3_custom": {"peeraccount"}}
TEXT_FIELDS = ("channame", "cid_name", "cid_num", "cid_ani", "cid_rdnis", "cid_dnid", "exten",
               "context", "appname", "appdata", "accountcode", "peeraccount", "userfield", "peer",
               "uniqueid", "linkedid", "userdeftype")


def stored_time(t: datetime, backend: str, variant: str) -> datetime:
    """The instant a database keeps for ``t``: FreePBX's DATETIME has whole seconds."""
    if variant != "freepbx" or backend == "sqlite":
        return t
    whole = t.replace(microsecond=0)
    if backend == "mariadb":
        return whole  # MariaDB truncates the fraction
    return whole + timedelta(seconds=1) if t.microsecond >= 500_000 else whole  # rounds


def expected(row: Mapping[str, Any], backend: str, variant: str) -> dict[str, Any]:
    absent = ABSENT.get(variant, set())
    out: dict[str, Any] = {f: ("" if f in absent else str(row.get(f) or "")) for f in TEXT_FIELDS}
    if variant == "sqlite3_custom":
        out["linkedid"] = row["uniqueid"]  # no linkedid column: the reader falls back
    out.update(
        id=row["id"], eventtype=row["eventtype"], amaflags=str(row["amaflags"]),
        eventtime=stored_time(row["eventtime"], backend, variant),
        extra={} if "extra" in absent or not row["extra"] else json.loads(row["extra"]),
        problems=(),
    )
    return out


def actual(row: CelRow) -> dict[str, Any]:
    fields = ("id", "eventtype", "eventtime", "amaflags", "extra", "problems") + TEXT_FIELDS
    return {f: getattr(row, f) for f in fields}


def backend_of(url: str) -> str:
    dialect = url.split(":")[0].split("+")[0]
    return {"mysql": "mariadb", "postgresql": "postgresql", "sqlite": "sqlite"}[dialect]


def load(url: str, variant: str, rows: Iterable[Mapping[str, Any]], tz: str = "UTC",
         table: str = "cel") -> None:
    """Create ``table`` of ``variant`` at ``url`` and insert ``rows`` (wall clock in ``tz``)."""
    engine = create_engine(url)
    try:
        create_table(engine, table, variant)
        insert_rows(engine, table, variant, rows, tz=tz)
    finally:
        engine.dispose()


def source(url: str, **config: Any) -> CelSource:
    return CelSource(SourceConfig(url=url, **config))


@contextmanager
def open_source(url: str, **config: Any) -> Iterator[CelSource]:
    """A CelSource on ``url`` (``config``: SourceConfig fields), closed afterwards."""
    src = source(url, **config)
    try:
        yield src
    finally:
        src.close()


def read_all(src: CelSource, batch: int) -> list[CelRow]:
    """Everything after id 0, read ``batch`` rows at a time as the pipeline does."""
    out: list[CelRow] = []
    position = 0
    while True:
        rows = src.read_after(position, batch)
        out.extend(rows)
        if len(rows) < batch:
            return out
        position = rows[-1].id
