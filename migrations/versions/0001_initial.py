"""State DB: source cursor, delivery ledger (outbox), sink state, quarantine.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "source_cursor",
        sa.Column("source", sa.String(255), primary_key=True),
        sa.Column("last_id", sa.BigInteger, nullable=False),
        sa.Column("low_water", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("sink", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("call_id", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("record", LONG_TEXT, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("uncertain", sa.Boolean, nullable=False),
        sa.Column("sent_version", sa.Integer, nullable=True),
        sa.Column("sent_record", LONG_TEXT, nullable=True),
        sa.Column("delivered_version", sa.Integer, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("first_failure", sa.Double, nullable=True),
        sa.Column("next_at", sa.Double, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("remote_id", sa.String(255), nullable=True),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.UniqueConstraint("sink", "key", name="uq_deliveries_sink_key"),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["sink", "state", "next_at", "id"])
    op.create_index("ix_deliveries_call", "deliveries", ["sink", "call_id", "id"])
    op.create_table(
        "sink_state",
        sa.Column("sink", sa.String(64), primary_key=True),
        sa.Column("state", sa.Text, nullable=True),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("disabled_reason", sa.Text, nullable=True),
        sa.Column("disabled_at", sa.Double, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_error_at", sa.Double, nullable=True),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_table(
        "quarantine",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("row_id", sa.BigInteger, nullable=True),
        sa.Column("call_id", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("row", LONG_TEXT, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_quarantine_row", "quarantine", ["source", "row_id"])


def downgrade() -> None:
    op.drop_table("quarantine")
    op.drop_table("sink_state")
    op.drop_table("deliveries")
    op.drop_table("source_cursor")
