"""The state DB: source cursor, delivery ledger (a transactional outbox), sink state, quarantine.

The pipeline records its progress with ONE call, ``StateStore.commit``: in one transaction it
enqueues every changed record for every sink, keeps the quarantined rows and moves the source
cursor. The cursor therefore never passes work that is not durably recorded, and delivering
that work is the delivery engine's job (``celsync.delivery``), which drives the ledger rows
through ``claim`` (pending -> inflight, committed before sending) and ``finish``.

Ledger states: ``pending`` (due now), ``inflight`` (claimed; may be at the sink),
``retrying`` (failed, due at ``next_at``), ``unknown`` (the last send may have arrived:
reconcile before sending again), ``delivered``, ``dead`` (a dead letter).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from celsync.state.schema import VERSION_TABLE, deliveries, quarantine, sink_state, source_cursor

T = TypeVar("T")
log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

PENDING, INFLIGHT, RETRYING, UNKNOWN, DELIVERED, DEAD = (
    "pending", "inflight", "retrying", "unknown", "delivered", "dead",
)
STATES: tuple[str, ...] = (PENDING, INFLIGHT, RETRYING, UNKNOWN, DELIVERED, DEAD)
#: states that still owe the sink something; an earlier one holds back later items of its call
ACTIVE: tuple[str, ...] = (PENDING, INFLIGHT, RETRYING, UNKNOWN)
#: states the engine may claim once ``next_at`` has passed
DUE: tuple[str, ...] = (PENDING, RETRYING, UNKNOWN)

_CHUNK = 500  # keys per IN (...) list: well below every backend's parameter limit
_KEEP: Any = object()  # finish(): leave the sink's saved state as it is


class StateError(Exception):
    """The state DB cannot be used as it is; the message says what to run."""


def canonical_json(record: Mapping[str, Any]) -> str:
    """Stable text of a record: sorted keys, no spaces, so equal content gives equal text."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def fingerprint(record: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON: the ledger's test for "did this record change?"."""
    return hashlib.sha256(canonical_json(record).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Cursor:
    last_id: int  # highest CEL id read
    low_water: int  # every call with rows below this id is closed and enqueued


@dataclass(frozen=True)
class Pending:
    key: str
    call_id: str
    record: dict  # CallRecord.to_dict()


@dataclass(frozen=True)
class Quarantined:
    row_id: int | None
    call_id: str | None
    reason: str
    row: dict


@dataclass(frozen=True)
class CommitStats:
    enqueued: int  # (sink, key) pairs that will be (re-)sent, over all sinks
    unchanged: int  # (sink, key) pairs skipped because the sink has or gets this content already


@dataclass(frozen=True)
class Item:
    """A claimed ledger row: what to send, or (``uncertain``) what to ask the sink about."""

    id: int
    sink: str
    key: str
    call_id: str
    version: int
    fingerprint: str
    record: dict
    uncertain: bool
    attempts: int
    first_failure: float | None
    last_error: str | None
    previously_delivered: bool


@dataclass(frozen=True)
class Transition:
    """The engine's verdict on one claimed item. ``finish`` adapts it when a newer version of
    the record was enqueued meanwhile (that version is then due next)."""

    state: str
    uncertain: bool
    attempts: int
    first_failure: float | None
    next_at: float
    last_error: str | None
    remote_id: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    sink: str
    key: str
    call_id: str
    version: int
    attempts: int
    first_failure: float | None
    last_error: str | None
    updated_at: float
    uncertain: bool  # the last attempt may have arrived: retry reconciles first


@dataclass(frozen=True)
class QuarantineEntry:
    id: int
    source: str
    row_id: int | None
    call_id: str | None
    reason: str
    row: dict
    created_at: float


def _chunks(seq: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def _transient(exc: sa.exc.DBAPIError) -> bool:
    """Deadlocks, serialization failures, lock timeouts and a concurrent insert of the same
    key (``SELECT ... FOR UPDATE`` cannot lock a row that does not exist yet): the
    transaction may simply be rerun, and then sees the other writer's row."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in ("40001", "40P01", "23505"):
        return True
    args = getattr(orig, "args", ())
    if args and args[0] in (1205, 1213, 1062):  # MySQL/MariaDB lock wait timeout, deadlock, duplicate
        return True
    return "database is locked" in str(orig)


def _make_engine(url: str) -> Engine:
    u = sa.make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        memory = u.database in (None, "", ":memory:")
        if memory:
            engine = sa.create_engine(
                u, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            engine = sa.create_engine(u, connect_args={"timeout": 30})
        _sqlite_transactions(engine, wal=not memory)
        return engine
    if backend in ("mysql", "mariadb"):
        # fewer gap locks between concurrent enqueues than REPEATABLE READ
        return sa.create_engine(u, isolation_level="READ COMMITTED", pool_pre_ping=True)
    return sa.create_engine(u, pool_pre_ping=True)


def _sqlite_transactions(engine: Engine, *, wal: bool) -> None:
    """WAL, a busy timeout and BEGIN IMMEDIATE: writers queue up instead of failing with
    SQLITE_BUSY when a read transaction later wants to write."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 30000")
        if wal:
            cur.execute("PRAGMA journal_mode = WAL")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


_LEDGER_MUTABLE = (
    "call_id", "version", "fingerprint", "record", "state", "next_at", "attempts",
    "first_failure", "last_error", "sent_record", "updated_at",
)
_RESULT_MUTABLE = (
    "state", "uncertain", "attempts", "first_failure", "next_at", "last_error", "remote_id",
    "sent_version", "sent_record", "delivered_version", "record", "updated_at",
)


def plan_enqueue(
    row: Mapping[str, Any], call_id: str, fp: str, record_json: str, *, force: bool, now: float
) -> tuple[dict[str, Any] | None, bool]:
    """New values for an existing ledger row given a freshly produced record.

    Returns (values to write or None, whether the sink will get this content). A changed
    record gets ``version + 1``; if the old version may be at the sink right now
    (``uncertain``), its content is kept in ``sent_record`` so that it can be reconciled.
    """
    changed = row["fingerprint"] != fp
    settled = row["state"] in (DELIVERED, DEAD)
    if not changed and not (force and settled):
        return None, force  # already queued (force) or already there
    values = {c: row[c] for c in _LEDGER_MUTABLE}
    values["record"] = record_json
    values["updated_at"] = now
    if changed:
        values.update(call_id=call_id, version=row["version"] + 1, fingerprint=fp)
        if row["uncertain"] and row["sent_record"] is None and row["sent_version"] == row["version"]:
            values["sent_record"] = row["record"]
    if settled:
        values.update(state=PENDING, next_at=0.0, attempts=0, first_failure=None, last_error=None)
    return values, True


def resolve(row: Mapping[str, Any], item: Item, t: Transition, now: float) -> dict[str, Any]:
    """Ledger values after the engine's verdict ``t`` on ``item``, given the row as it is now.

    If a newer version was enqueued while ``item`` was out, a delivered or dead verdict on
    the old version makes the new one due at once, so no change is ever lost.
    """
    values = {c: row[c] for c in _RESULT_MUTABLE}
    values.update(
        state=t.state, uncertain=t.uncertain, attempts=t.attempts, first_failure=t.first_failure,
        next_at=t.next_at, last_error=t.last_error, updated_at=now,
    )
    if t.remote_id is not None:
        values["remote_id"] = t.remote_id
    if not t.uncertain:
        values.update(sent_version=None, sent_record=None)
    if t.state == DELIVERED:
        values["delivered_version"] = item.version
    if row["version"] > item.version and t.state in (DELIVERED, DEAD):
        values.update(state=PENDING, next_at=0.0, attempts=0, first_failure=None)
        if t.state == DELIVERED:
            values["last_error"] = None
    elif t.state == DELIVERED:
        values["record"] = None  # the sink has it; the ledger keeps only the fingerprint
    return values


class StateStore:
    """The state DB behind one SQLAlchemy engine; safe to share between threads (every
    operation takes its own connection and transaction)."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self._clock = clock
        self._is_sqlite = self.engine.dialect.name == "sqlite"

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    # -- schema --------------------------------------------------------------------------

    def _alembic_config(self) -> AlembicConfig:
        if not (MIGRATIONS_DIR / "env.py").is_file():
            raise StateError(
                f"the migrations directory {MIGRATIONS_DIR} is missing: "
                "install celsync from its source tree (pip install -e .)"
            )
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        return cfg

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (``celsync db upgrade``)."""
        cfg = self._alembic_config()
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def ensure_ready(self) -> None:
        """Refuse to run against an old schema; a brand-new SQLite state DB is created."""
        heads = set(ScriptDirectory.from_config(self._alembic_config()).get_heads())
        try:
            with self.engine.connect() as conn:
                ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
                current = set(ctx.get_current_heads())
                fresh = not current and not sa.inspect(conn).get_table_names()
        except sa.exc.OperationalError as exc:
            raise StateError(
                f"cannot open the state database {self.safe_url}: {exc.orig} "
                "(check state.url; for SQLite the directory must exist)"
            ) from None
        if current == heads:
            return
        if fresh and self._is_sqlite:
            log.info("creating the state database %s", self.safe_url)
            self.upgrade()
            return
        have = ", ".join(sorted(current)) or "no celsync schema"
        raise StateError(
            f"the state database {self.safe_url} has {have}, this celsync needs revision "
            f"{', '.join(sorted(heads))}: run `celsync db upgrade`"
        )

    # -- transactions --------------------------------------------------------------------

    def _tx(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction, rerunning it after a deadlock or lock timeout."""
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    return work(conn)
            except sa.exc.DBAPIError as exc:
                if attempt == 4 or not _transient(exc):
                    raise
                log.debug("state DB transaction conflict (%s); retrying", exc.orig)
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    def _locked(self, query: sa.Select) -> sa.Select:
        # SQLite's BEGIN IMMEDIATE already serialises writers; elsewhere lock the rows read
        return query if self._is_sqlite else query.with_for_update()

    # -- source cursor and the outbox ----------------------------------------------------

    def load_cursor(self, source: str) -> Cursor | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(source_cursor.c.last_id, source_cursor.c.low_water).where(
                    source_cursor.c.source == source
                )
            ).first()
        return Cursor(int(row.last_id), int(row.low_water)) if row else None

    def commit(
        self,
        source: str,
        cursor: Cursor | None,
        sinks: Sequence[str],
        pending: Sequence[Pending],
        quarantine: Sequence[Quarantined] = (),
        *,
        force: bool = False,
    ) -> CommitStats:
        """Enqueue changed records for every sink, keep quarantined rows, move the cursor:
        all or nothing. ``force`` re-enqueues records the sinks already have; ``cursor=None``
        leaves the cursor where it is (reprocessing history)."""
        latest: dict[str, Pending] = {}
        for p in pending:
            latest[p.key] = p  # a key produced twice: the later content wins, first position
        prepared = [(p, fingerprint(p.record), json.dumps(p.record, ensure_ascii=False, default=str))
                    for p in latest.values()]
        q_rows = [(q, json.dumps(q.row, ensure_ascii=False, default=str)) for q in quarantine]

        def work(conn: Connection) -> CommitStats:
            now = self._clock()
            enqueued = unchanged = 0
            for sink in sinks:
                for chunk in _chunks(prepared):
                    e, u = self._enqueue(conn, sink, chunk, force, now)
                    enqueued += e
                    unchanged += u
            self._quarantine(conn, source, q_rows, now)
            if cursor is not None:  # reprocess replays history without moving the live cursor
                self._save_cursor(conn, source, cursor, now)
            return CommitStats(enqueued, unchanged)

        return self._tx(work)

    def _enqueue(
        self, conn: Connection, sink: str, chunk: Sequence[tuple[Pending, str, str]],
        force: bool, now: float,
    ) -> tuple[int, int]:
        d = deliveries
        cols = [d.c.id, d.c.key, d.c.uncertain, d.c.sent_version] + [d.c[c] for c in _LEDGER_MUTABLE]
        rows = conn.execute(
            self._locked(sa.select(*cols).where(d.c.sink == sink, d.c.key.in_([p.key for p, _, _ in chunk])))
        ).mappings().all()
        existing = {r["key"]: r for r in rows}
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        enqueued = 0
        for p, fp, text in chunk:
            row = existing.get(p.key)
            if row is None:
                inserts.append(dict(
                    sink=sink, key=p.key, call_id=p.call_id, version=1, fingerprint=fp, record=text,
                    state=PENDING, uncertain=False, attempts=0, next_at=0.0, updated_at=now,
                ))
                enqueued += 1
                continue
            values, sends = plan_enqueue(row, p.call_id, fp, text, force=force, now=now)
            enqueued += sends
            if values is not None:
                updates.append({"b_id": row["id"], **{f"b_{k}": v for k, v in values.items()}})
        if inserts:
            conn.execute(sa.insert(d), inserts)
        if updates:
            conn.execute(
                sa.update(d).where(d.c.id == sa.bindparam("b_id"))
                .values({c: sa.bindparam(f"b_{c}") for c in _LEDGER_MUTABLE}),
                updates,
            )
        return enqueued, len(chunk) - enqueued

    def _quarantine(
        self, conn: Connection, source: str, rows: Sequence[tuple[Quarantined, str]], now: float
    ) -> None:
        if not rows:
            return
        q = quarantine
        row_ids = [item.row_id for item, _ in rows if item.row_id is not None]
        for chunk in _chunks(row_ids):  # a row quarantined again replaces its old entry
            conn.execute(sa.delete(q).where(q.c.source == source, q.c.row_id.in_(chunk)))
        conn.execute(sa.insert(q), [
            dict(source=source, row_id=item.row_id, call_id=item.call_id, reason=item.reason,
                 row=text, created_at=now)
            for item, text in rows
        ])

    def _save_cursor(self, conn: Connection, source: str, cursor: Cursor, now: float) -> None:
        c = source_cursor
        values = dict(last_id=cursor.last_id, low_water=cursor.low_water, updated_at=now)
        found = conn.execute(self._locked(sa.select(c.c.source).where(c.c.source == source))).first()
        if found:
            conn.execute(sa.update(c).where(c.c.source == source).values(values))
        else:
            conn.execute(sa.insert(c).values(source=source, **values))

    # -- the delivery engine's side ------------------------------------------------------

    def claim(
        self, sink: str, limit: int, now: float, *, ids: Sequence[int] | None = None
    ) -> list[Item]:
        """Mark up to ``limit`` due items inflight (committed before anything is sent).

        Due = pending, or retrying/unknown with ``next_at <= now``, and no earlier active item
        of the same call ahead of it (per-call order). With ``ids``: exactly those items that
        are in a due state, whatever their time. Nothing while the sink is disabled.
        """
        d = deliveries

        def work(conn: Connection) -> list[Item]:
            if self._disabled_reason(conn, sink) is not None:
                return []
            if ids is not None:
                rows = conn.execute(self._locked(
                    sa.select(d).where(d.c.sink == sink, d.c.id.in_(list(ids)), d.c.state.in_(DUE))
                    .order_by(d.c.id)
                )).mappings().all()[:limit]
            else:
                rows = self._due_rows(conn, sink, limit, now)
            sure = [r["id"] for r in rows if not r["uncertain"]]
            unsure = [r["id"] for r in rows if r["uncertain"]]
            if sure:
                conn.execute(sa.update(d).where(d.c.id.in_(sure)).values(
                    state=INFLIGHT, uncertain=True, sent_version=d.c.version, updated_at=now))
            if unsure:
                conn.execute(sa.update(d).where(d.c.id.in_(unsure)).values(state=INFLIGHT, updated_at=now))
            return [_item(r) for r in rows]

        return self._tx(work)

    def _due_rows(self, conn: Connection, sink: str, limit: int, now: float) -> list[Mapping[str, Any]]:
        d = deliveries
        e = deliveries.alias("earlier")
        held_back = sa.exists().where(
            e.c.sink == d.c.sink, e.c.call_id == d.c.call_id, e.c.id < d.c.id, e.c.state.in_(ACTIVE)
        )
        rows: list[Mapping[str, Any]] = []
        for state in DUE:  # one index range per state: each query stops after `limit` rows
            rows += conn.execute(self._locked(
                sa.select(d).where(d.c.sink == sink, d.c.state == state, d.c.next_at <= now, ~held_back)
                .order_by(d.c.next_at, d.c.id).limit(limit)
            )).mappings().all()
        rows.sort(key=lambda r: r["id"])  # oldest records first, whatever their state
        return rows[:limit]

    def finish(
        self,
        sink: str,
        outcomes: Sequence[tuple[Item, Transition]],
        *,
        now: float,
        sink_state: Mapping[str, Any] | None = _KEEP,
        disable: str | None = None,
    ) -> None:
        """Record the verdicts of one batch, the sink's ``commit_state()`` and, if the sink
        refused us as a whole, its disabled flag: one transaction."""
        d = deliveries

        def work(conn: Connection) -> None:
            ids = [item.id for item, _ in outcomes]
            current: dict[int, Mapping[str, Any]] = {}
            for chunk in _chunks(ids):
                cols = [d.c.id, d.c.version] + [d.c[c] for c in _RESULT_MUTABLE]
                for r in conn.execute(self._locked(sa.select(*cols).where(d.c.id.in_(chunk)))).mappings():
                    current[r["id"]] = r
            updates = [
                {"b_id": item.id, **{f"b_{k}": v for k, v in resolve(current[item.id], item, t, now).items()}}
                for item, t in outcomes if item.id in current
            ]
            if updates:
                conn.execute(
                    sa.update(d).where(d.c.id == sa.bindparam("b_id"))
                    .values({c: sa.bindparam(f"b_{c}") for c in _RESULT_MUTABLE}),
                    updates,
                )
            errors = [t.last_error for _, t in outcomes if t.state != DELIVERED and t.last_error]
            changes: dict[str, Any] = {}
            if sink_state is not _KEEP:
                changes["state"] = None if sink_state is None else json.dumps(sink_state)
            if errors:
                changes.update(last_error=errors[-1], last_error_at=now)
            if disable is not None:
                changes.update(disabled=True, disabled_reason=disable, disabled_at=now)
            if changes:
                self._update_sink(conn, sink, changes, now)

        self._tx(work)

    def release(self, items: Sequence[Item], next_at: float) -> None:
        """After ``finish`` failed: the items may have reached the sink; mark them unknown."""
        d = deliveries
        ids = [i.id for i in items]

        def work(conn: Connection) -> None:
            for chunk in _chunks(ids):
                conn.execute(sa.update(d).where(d.c.id.in_(chunk), d.c.state == INFLIGHT)
                             .values(state=UNKNOWN, next_at=next_at))

        self._tx(work)

    def reset_inflight(self, sink: str) -> list[int]:
        """At start-up: items left inflight by a stopped process become unknown and due now."""
        d = deliveries

        def work(conn: Connection) -> list[int]:
            ids = list(conn.execute(
                self._locked(sa.select(d.c.id).where(d.c.sink == sink, d.c.state == INFLIGHT))
            ).scalars())
            for chunk in _chunks(ids):
                conn.execute(sa.update(d).where(d.c.id.in_(chunk)).values(state=UNKNOWN, next_at=0.0))
            return ids

        return self._tx(work)

    def next_wakeup(self, sink: str, now: float) -> float | None:
        """When the next waiting retry or reconcile of ``sink`` falls due (None: none waits)."""
        d = deliveries
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.min(d.c.next_at)).where(
                    d.c.sink == sink, d.c.state.in_((RETRYING, UNKNOWN)), d.c.next_at > now
                )
            ).scalar()

    def pending_total(self, sinks: Sequence[str] | None = None) -> int:
        """Items not yet delivered nor dead, over ``sinks`` (default: every sink in the ledger)."""
        d = deliveries
        q = sa.select(sa.func.count()).where(d.c.state.in_(ACTIVE))
        if sinks is not None:
            q = q.where(d.c.sink.in_(list(sinks)))  # lets the (sink, state, ...) index answer
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    def counts(self, sink: str | None = None, states: Sequence[str] = STATES) -> dict[str, dict[str, int]]:
        """{sink: {state: n}} with every state in ``states`` present (0 if none)."""
        d = deliveries
        q = sa.select(d.c.sink, d.c.state, sa.func.count()).where(d.c.state.in_(states))
        if sink is not None:
            q = q.where(d.c.sink == sink)
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for name, state, n in conn.execute(q.group_by(d.c.sink, d.c.state)):
                out.setdefault(name, dict.fromkeys(states, 0))[state] = int(n)
        if sink is not None:
            out.setdefault(sink, dict.fromkeys(states, 0))
        return out

    # -- sink state ----------------------------------------------------------------------

    def _update_sink(self, conn: Connection, sink: str, changes: Mapping[str, Any], now: float) -> None:
        s = sink_state
        found = conn.execute(self._locked(sa.select(s.c.sink).where(s.c.sink == sink))).first()
        if found:
            conn.execute(sa.update(s).where(s.c.sink == sink).values(updated_at=now, **changes))
        else:
            conn.execute(sa.insert(s).values(
                sink=sink, updated_at=now, **{"disabled": False, **changes}))

    @staticmethod
    def _disabled_reason(conn: Connection, sink: str) -> str | None:
        s = sink_state
        row = conn.execute(sa.select(s.c.disabled, s.c.disabled_reason).where(s.c.sink == sink)).first()
        if row is None or not row.disabled:
            return None
        return row.disabled_reason or "disabled"

    def disabled_reason(self, sink: str) -> str | None:
        """Why the sink is disabled, or None if it is enabled."""
        with self.engine.connect() as conn:
            return self._disabled_reason(conn, sink)

    def load_sink_state(self, sink: str) -> Mapping[str, Any] | None:
        """The sink's last committed ``commit_state()`` (None if it never saved one)."""
        with self.engine.connect() as conn:
            text = conn.execute(sa.select(sink_state.c.state).where(sink_state.c.sink == sink)).scalar()
        return None if text is None else json.loads(text)

    def note_error(self, sink: str, error: str) -> None:
        """Record a sink-wide failure (e.g. it cannot resume) for ``status``."""
        now = self._clock()
        self._tx(lambda conn: self._update_sink(conn, sink, dict(last_error=error, last_error_at=now), now))

    def disable_sink(self, sink: str, reason: str) -> None:
        now = self._clock()
        self._tx(lambda conn: self._update_sink(
            conn, sink, dict(disabled=True, disabled_reason=reason, disabled_at=now), now))

    def enable_sink(self, sink: str) -> str | None:
        """Clear the disabled flag; returns the reason it had (None if it was enabled)."""
        now = self._clock()

        def work(conn: Connection) -> str | None:
            reason = self._disabled_reason(conn, sink)
            if reason is not None:
                self._update_sink(conn, sink, dict(disabled=False, disabled_reason=None, disabled_at=None), now)
            return reason

        return self._tx(work)

    # -- dead letters, quarantine, status ------------------------------------------------

    def dead_letters(
        self, sink: str | None = None, key: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        d = deliveries
        q = sa.select(d).where(d.c.state == DEAD)
        if sink is not None:
            q = q.where(d.c.sink == sink)
        if key is not None:
            q = q.where(d.c.key == key)
        q = q.order_by(d.c.sink, d.c.id)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [
                DeadLetter(r.sink, r.key, r.call_id, r.version, r.attempts, r.first_failure,
                           r.last_error, r.updated_at, bool(r.uncertain))
                for r in conn.execute(q)
            ]

    def retry_dead(self, sink: str | None = None, key: str | None = None) -> list[tuple[str, str]]:
        """Put dead letters back in the queue (due now, attempts and horizon restarted).

        One whose last attempt may have arrived goes to ``unknown`` so that it is reconciled
        first. Returns the (sink, key) pairs moved.
        """
        d = deliveries
        now = self._clock()

        def work(conn: Connection) -> list[tuple[str, str]]:
            q = sa.select(d.c.id, d.c.sink, d.c.key, d.c.uncertain).where(d.c.state == DEAD)
            if sink is not None:
                q = q.where(d.c.sink == sink)
            if key is not None:
                q = q.where(d.c.key == key)
            rows = conn.execute(self._locked(q.order_by(d.c.id))).all()
            for uncertain in (False, True):
                ids = [r.id for r in rows if bool(r.uncertain) is uncertain]
                for chunk in _chunks(ids):
                    conn.execute(sa.update(d).where(d.c.id.in_(chunk)).values(
                        state=UNKNOWN if uncertain else PENDING, next_at=0.0, attempts=0,
                        first_failure=None, updated_at=now))
            return [(r.sink, r.key) for r in rows]

        return self._tx(work)

    def quarantined(self, source: str | None = None, limit: int = 100) -> list[QuarantineEntry]:
        q = quarantine
        query = sa.select(q).order_by(q.c.id.desc()).limit(limit)
        if source is not None:
            query = query.where(q.c.source == source)
        with self.engine.connect() as conn:
            return [
                QuarantineEntry(r.id, r.source, r.row_id, r.call_id, r.reason, json.loads(r.row), r.created_at)
                for r in conn.execute(query)
            ]

    def status(self, sinks: Sequence[str] = ()) -> dict[str, Any]:
        """{"cursors": {source: {last_id, low_water, updated_at}}, "sinks": {name: {<state>: n
        for every state, disabled, disabled_reason, disabled_at, last_error, last_error_at}},
        "quarantine": n}. ``sinks`` adds configured sinks that have no ledger rows yet."""
        counts = self.counts()
        with self.engine.connect() as conn:
            cursors = {
                r.source: {"last_id": int(r.last_id), "low_water": int(r.low_water), "updated_at": r.updated_at}
                for r in conn.execute(sa.select(source_cursor))
            }
            infos = {r.sink: r for r in conn.execute(sa.select(sink_state))}
            n_quarantine = int(conn.execute(sa.select(sa.func.count()).select_from(quarantine)).scalar() or 0)
        out: dict[str, Any] = {}
        for name in sorted(set(counts) | set(infos) | set(sinks)):
            info = infos.get(name)
            out[name] = {
                **counts.get(name, dict.fromkeys(STATES, 0)),
                "disabled": bool(info and info.disabled),
                "disabled_reason": info.disabled_reason if info else None,
                "disabled_at": info.disabled_at if info else None,
                "last_error": info.last_error if info else None,
                "last_error_at": info.last_error_at if info else None,
            }
        return {"cursors": cursors, "sinks": out, "quarantine": n_quarantine}


def _item(r: Mapping[str, Any]) -> Item:
    if r["uncertain"]:  # ask about the version that went out
        text = r["sent_record"] if r["sent_record"] is not None else r["record"]
        record = json.loads(text)
        fp = r["fingerprint"] if r["sent_record"] is None else fingerprint(record)
        version = r["sent_version"]
    else:
        record, fp, version = json.loads(r["record"]), r["fingerprint"], r["version"]
    return Item(
        id=r["id"], sink=r["sink"], key=r["key"], call_id=r["call_id"], version=version,
        fingerprint=fp, record=record, uncertain=bool(r["uncertain"]), attempts=r["attempts"],
        first_failure=r["first_failure"], last_error=r["last_error"],
        previously_delivered=r["delivered_version"] is not None,
    )
