"""Alembic environment for the celsync state DB.

celsync runs migrations programmatically (``celsync db upgrade`` -> ``StateStore.upgrade``),
handing over an open connection in ``config.attributes["connection"]``; no alembic.ini is
needed. Run by hand, ``sqlalchemy.url`` in the Alembic config names the database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

from celsync.state.schema import VERSION_TABLE, metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("celsync migrations run against a live database: use `celsync db upgrade`")

_connection = config.attributes.get("connection")
if _connection is not None:
    _run(_connection)
else:
    _engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with _engine.begin() as _conn:
        _run(_conn)
