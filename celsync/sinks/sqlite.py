"""SQL call-log sink: a ``calls`` table (name configurable) with one row per record key.

Despite the name the URL may be any SQLAlchemy URL. Writes are UPSERTs by key that never
replace a newer version with an older one, so sending a record again is harmless: the sink
is idempotent and the default ``reconcile`` (send again) is exact.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from celsync.config import SqliteSinkConfig
from celsync.sinks.base import Delivery, Outcome, Result, Sink

_STR = sa.String(255)
#: record fields copied into columns of their own, for plain SQL queries
FIELDS: dict[str, sa.types.TypeEngine] = {
    "call_id": _STR, "sub_call_id": _STR, "direction": sa.String(16), "answered": sa.Boolean(),
    "missed_at": sa.String(16), "extension": _STR, "external_number": _STR, "did": _STR,
    "started_at": sa.String(40), "answered_at": sa.String(40), "ended_at": sa.String(40),
    "duration": sa.Integer(), "wait": sa.Integer(), "recording_id": _STR, "hangup_cause": sa.Integer(),
    "dial_status": sa.String(32), "result": sa.Integer(), "bitrix24_status": sa.String(16),
    "kommo_status": sa.Integer(), "kommo_result": _STR, "accountcode": _STR, "userfield": _STR,
}
_LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def calls_table(name: str) -> sa.Table:
    md = sa.MetaData()
    return sa.Table(
        name, md,
        sa.Column("key", sa.String(255), primary_key=True),
        *(sa.Column(field, type_) for field, type_ in FIELDS.items()),
        sa.Column("record", _LONG_TEXT, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index(f"ix_{name}_call_id", "call_id"),
        sa.Index(f"ix_{name}_started_at", "started_at"),
    )


def row_of(d: Delivery, now: datetime) -> dict[str, Any]:
    """The table row for one delivery (pure)."""
    return {
        "key": d.key, **{f: d.record.get(f) for f in FIELDS},
        "record": json.dumps(d.record, ensure_ascii=False, default=str),
        "version": d.version, "updated_at": now,
    }


class SqliteSink(Sink):
    def __init__(self, cfg: SqliteSinkConfig) -> None:
        self.name = cfg.sink_name
        self.batch_size = cfg.batch_size
        self._url = cfg.url
        self.table = calls_table(cfg.table)
        self._engine: Engine | None = None

    def _ready(self) -> Engine:
        """Connect and create the table on first use."""
        if self._engine is None:
            url = sa.make_url(self._url)
            kwargs: dict[str, Any] = {"pool_pre_ping": True}
            if url.get_backend_name() == "sqlite":
                kwargs = {"connect_args": {"timeout": 30}}
            engine = sa.create_engine(url, **kwargs)
            self.table.metadata.create_all(engine)
            self._engine = engine
        return self._engine

    def send(self, batch: Sequence[Delivery]) -> list[Result]:
        now = datetime.now(timezone.utc)
        rows = [row_of(d, now) for d in batch]
        try:
            with self._ready().begin() as conn:
                self._upsert(conn, rows)
        except sa.exc.SQLAlchemyError as exc:  # nothing committed: send again later
            orig = getattr(exc, "orig", None) or exc
            error = f"{type(orig).__name__}: {str(orig).splitlines()[0] if str(orig) else ''}"
            return [Result(d.key, Outcome.RETRY, error) for d in batch]
        return [Result(d.key, Outcome.DELIVERED) for d in batch]

    def _upsert(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        t = self.table
        cols = [c for c in rows[0] if c != "key"]
        dialect = conn.dialect.name
        if dialect in ("sqlite", "postgresql"):
            ins = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(t)
            stmt = ins.on_conflict_do_update(
                index_elements=[t.c.key], set_={c: ins.excluded[c] for c in cols},
                where=t.c.version <= ins.excluded.version,  # never go back to an older version
            )
            conn.execute(stmt, rows)
        elif dialect in ("mysql", "mariadb"):
            ins = mysql.insert(t)
            newer = ins.inserted.version >= t.c.version
            # MySQL applies the assignments in order, so `version` goes last
            stmt = ins.on_duplicate_key_update(
                [(c, sa.case((newer, ins.inserted[c]), else_=t.c[c])) for c in cols if c != "version"]
                + [("version", sa.case((newer, ins.inserted.version), else_=t.c.version))]
            )
            conn.execute(stmt, rows)
        else:
            for row in rows:
                updated = conn.execute(
                    sa.update(t).where(t.c.key == row["key"], t.c.version <= row["version"])
                    .values({c: row[c] for c in cols})
                ).rowcount
                if not updated and conn.execute(sa.select(t.c.key).where(t.c.key == row["key"])).first() is None:
                    conn.execute(sa.insert(t).values(row))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
