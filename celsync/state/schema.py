"""The state DB tables as SQLAlchemy Core objects (the queries use these; Alembic creates them).

Times are epoch seconds in DOUBLE columns: the delivery engine compares them with its own
(injectable) clock, and a float survives SQLite, PostgreSQL and MariaDB unchanged.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

#: Alembic's version table; prefixed so that a state DB shared with other tools stays unambiguous.
VERSION_TABLE = "celsync_alembic_version"

#: Record JSON can outgrow MySQL's 64 KiB TEXT when a call has many attempts.
LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
#: SQLite only auto-increments an INTEGER PRIMARY KEY.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

source_cursor = sa.Table(
    "source_cursor",
    metadata,
    sa.Column("source", sa.String(255), primary_key=True),
    sa.Column("last_id", sa.BigInteger, nullable=False),
    sa.Column("low_water", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
    sa.Column("sink", sa.String(64), nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("call_id", sa.String(255), nullable=False),
    # the newest content wanted at the sink
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("record", LONG_TEXT, nullable=True),  # cleared once that version is delivered
    sa.Column("state", sa.String(16), nullable=False),
    # the last send may have reached the sink: reconcile before sending again
    sa.Column("uncertain", sa.Boolean, nullable=False, default=False),
    sa.Column("sent_version", sa.Integer, nullable=True),
    sa.Column("sent_record", LONG_TEXT, nullable=True),  # kept only if a newer version replaced it
    sa.Column("delivered_version", sa.Integer, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("first_failure", sa.Double, nullable=True),
    sa.Column("next_at", sa.Double, nullable=False, default=0.0),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("remote_id", sa.String(255), nullable=True),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.UniqueConstraint("sink", "key", name="uq_deliveries_sink_key"),
    sa.Index("ix_deliveries_due", "sink", "state", "next_at", "id"),
    sa.Index("ix_deliveries_call", "sink", "call_id", "id"),
)

sink_state = sa.Table(
    "sink_state",
    metadata,
    sa.Column("sink", sa.String(64), primary_key=True),
    sa.Column("state", sa.Text, nullable=True),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("disabled_reason", sa.Text, nullable=True),
    sa.Column("disabled_at", sa.Double, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_error_at", sa.Double, nullable=True),
    sa.Column("updated_at", sa.Double, nullable=False),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(255), nullable=False),
    sa.Column("row_id", sa.BigInteger, nullable=True),
    sa.Column("call_id", sa.String(255), nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("row", LONG_TEXT, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_quarantine_row", "source", "row_id"),
)
