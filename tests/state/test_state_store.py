"""The state DB on SQLite, PostgreSQL and MariaDB (real servers): migrations, the outbox
commit, claims and verdicts, dead letters, sink state, quarantine, status."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from celsync.delivery import DeliveryEngine
from celsync.sinks.base import Outcome
from celsync.state.store import (
    DEAD, DELIVERED, PENDING, RETRYING, UNKNOWN, CommitStats, Cursor, Quarantined,
    StateError, StateStore, Transition, fingerprint,
)
from tests.delivery.support import FileSink, Step, rec, states


@pytest.fixture
def store(db_url: str) -> Iterator[StateStore]:
    s = StateStore(db_url)
    s.upgrade()
    yield s
    s.close()


def delivered(store: StateStore, sink: str, now: float = 10.0) -> None:
    """Claim everything due for ``sink`` and record it as delivered."""
    while items := store.claim(sink, 100, now):
        store.finish(sink, [(i, Transition(DELIVERED, False, 0, None, 0.0, None)) for i in items], now=now)


def test_fresh_database_needs_upgrade_then_is_ready(db_url: str) -> None:
    s = StateStore(db_url)
    if s.engine.dialect.name == "sqlite":
        s.ensure_ready()  # the embedded default creates itself
    else:
        with pytest.raises(StateError, match="run `celsync db upgrade`"):
            s.ensure_ready()
        s.upgrade()
        s.ensure_ready()
    s.upgrade()  # idempotent
    with s.engine.connect() as conn:
        insp = sa.inspect(conn)
        assert {"source_cursor", "deliveries", "sink_state", "quarantine", "celsync_alembic_version"} <= set(
            insp.get_table_names())
        assert {"ix_deliveries_due", "ix_deliveries_call"} <= {i["name"] for i in insp.get_indexes("deliveries")}
        uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("deliveries")}
        uniques |= {tuple(i["column_names"]) for i in insp.get_indexes("deliveries") if i["unique"]}
        assert ("sink", "key") in uniques
        assert conn.execute(sa.text("SELECT version_num FROM celsync_alembic_version")).scalar() == "0001"
    s.close()


def test_old_schema_is_refused_with_the_fix(db_url: str) -> None:
    s = StateStore(db_url)
    s.upgrade()
    with s.engine.begin() as conn:
        conn.execute(sa.text("UPDATE celsync_alembic_version SET version_num = '0000'"))
    with pytest.raises(StateError, match=r"has 0000.*needs revision 0001: run `celsync db upgrade`"):
        s.ensure_ready()
    s.close()


def test_state_error_hides_the_password() -> None:
    s = StateStore("postgresql+psycopg://celsync:s3cret-pw@127.0.0.1:5432/celsync_no_such_db")
    with pytest.raises(StateError) as info:
        s.ensure_ready()
    assert "s3cret-pw" not in str(info.value)
    assert "celsync_no_such_db" in str(info.value)


def test_commit_enqueues_once_per_sink_and_skips_unchanged(store: StateStore) -> None:
    recs = [rec("a/1", v=1), rec("a/2", v=1), rec("b/1", v=1)]
    assert store.commit("src", Cursor(10, 5), ["s1", "s2"], recs) == CommitStats(enqueued=6, unchanged=0)
    assert store.load_cursor("src") == Cursor(10, 5)
    assert store.commit("src", Cursor(12, 6), ["s1", "s2"], recs) == CommitStats(enqueued=0, unchanged=6)
    assert store.load_cursor("src") == Cursor(12, 6)
    assert states(store, "s1") == {PENDING: 3}
    assert store.pending_total() == 6 and store.pending_total(["s1"]) == 3
    store.commit("src", None, ["s1"], [rec("c/1")])  # reprocess: enqueue without moving the cursor
    assert store.load_cursor("src") == Cursor(12, 6) and store.pending_total(["s1"]) == 4


def test_changed_record_gets_next_version_unchanged_does_not(store: StateStore) -> None:
    store.commit("src", Cursor(1, 1), ["s"], [rec("a/1", v=1), rec("b/1", v=1)])
    delivered(store, "s")
    stats = store.commit("src", Cursor(2, 2), ["s"], [rec("a/1", v=2), rec("b/1", v=1)])
    assert stats == CommitStats(enqueued=1, unchanged=1)
    [item] = store.claim("s", 10, 10.0)
    assert (item.key, item.version, item.record["v"], item.previously_delivered) == ("a/1", 2, 2, True)
    assert item.fingerprint == fingerprint(item.record)


def test_force_requeues_what_the_sink_has_without_a_new_version(store: StateStore) -> None:
    store.commit("src", Cursor(1, 1), ["s"], [rec("a/1", v=1)])
    delivered(store, "s")
    assert store.commit("src", Cursor(1, 1), ["s"], [rec("a/1", v=1)]).unchanged == 1
    assert store.commit("src", Cursor(1, 1), ["s"], [rec("a/1", v=1)], force=True) == CommitStats(1, 0)
    [item] = store.claim("s", 10, 10.0)
    assert (item.version, item.record, item.previously_delivered) == (1, {"key": "a/1", "call_id": "a", "v": 1}, True)


def test_commit_is_all_or_nothing(store: StateStore) -> None:
    store.commit("src", Cursor(10, 5), ["s"], [rec("a/1", v=1)], [Quarantined(7, "a", "bad extra", {"id": 7})])
    before = (store.load_cursor("src"), store.counts(), store.status()["quarantine"])
    bad = Quarantined(8, "b", None, {"id": 8})  # type: ignore[arg-type]  # NOT NULL violated in the DB
    with pytest.raises(sa.exc.IntegrityError):
        store.commit("src", Cursor(20, 15), ["s"], [rec("a/1", v=2), rec("c/1", v=1)], [bad])
    assert (store.load_cursor("src"), store.counts(), store.status()["quarantine"]) == before
    [item] = store.claim("s", 10, 10.0)
    assert (item.key, item.version) == ("a/1", 1)


def test_quarantine_keeps_one_entry_per_row(store: StateStore) -> None:
    q = [Quarantined(7, "a", "malformed extra", {"id": 7, "extra": "{"}), Quarantined(None, None, "no id", {})]
    store.commit("src", Cursor(10, 5), ["s"], [], q)
    store.commit("src", Cursor(10, 5), ["s"], [], [Quarantined(7, "a", "malformed extra again", {"id": 7})])
    entries = store.quarantined()
    assert sorted((e.row_id, e.reason) for e in entries if e.row_id) == [(7, "malformed extra again")]
    assert len(entries) == 2 and store.status()["quarantine"] == 2


def test_claim_keeps_per_call_order_and_marks_inflight(store: StateStore) -> None:
    store.commit("src", Cursor(1, 1), ["s"], [rec("c/1"), rec("c/2"), rec("d/1")])
    items = store.claim("s", 10, 100.0)
    assert [i.key for i in items] == ["c/1", "d/1"]  # c/2 waits for c/1
    assert states(store, "s") == {"inflight": 2, PENDING: 1}
    c1 = items[0]
    store.finish("s", [(c1, Transition(RETRYING, False, 1, 100.0, 130.0, "503"))], now=100.0)
    assert store.claim("s", 10, 120.0) == []  # c/1 not due yet, c/2 held back behind it
    assert [i.key for i in store.claim("s", 10, 130.0)] == ["c/1"]
    assert store.next_wakeup("s", 100.0) is None


def test_change_while_inflight_is_sent_after_the_old_version(store: StateStore) -> None:
    store.commit("src", Cursor(1, 1), ["s"], [rec("a/1", v=1)])
    [v1] = store.claim("s", 10, 5.0)
    store.commit("src", Cursor(2, 2), ["s"], [rec("a/1", v=2)])
    assert store.claim("s", 10, 5.0) == []  # still inflight
    store.finish("s", [(v1, Transition(DELIVERED, False, 0, None, 0.0, None))], now=6.0)
    [v2] = store.claim("s", 10, 6.0)
    assert (v2.version, v2.record["v"], v2.previously_delivered) == (2, 2, True)


def test_unknown_item_is_reconciled_with_the_version_that_went_out(store: StateStore) -> None:
    store.commit("src", Cursor(1, 1), ["s"], [rec("a/1", v=1)])
    [v1] = store.claim("s", 10, 5.0)
    store.finish("s", [(v1, Transition(UNKNOWN, True, 1, 5.0, 9.0, "timeout"))], now=5.0)
    store.commit("src", Cursor(2, 2), ["s"], [rec("a/1", v=2)])
    store.commit("src", Cursor(3, 3), ["s"], [rec("a/1", v=3)])
    [ask] = store.claim("s", 10, 9.0)
    assert (ask.uncertain, ask.version, ask.record["v"]) == (True, 1, 1)
    assert ask.fingerprint == fingerprint({"key": "a/1", "call_id": "a", "v": 1})
    # the sink never got v1: the newest content is what goes out next
    store.finish("s", [(ask, Transition(PENDING, False, 1, 5.0, 0.0, "timeout"))], now=9.0)
    [send] = store.claim("s", 10, 9.0)
    assert (send.uncertain, send.version, send.record["v"], send.previously_delivered) == (False, 3, 3, False)


def test_dead_letters_list_retry_and_sink_disable(store: StateStore) -> None:
    store.commit("src", Cursor(1, 1), ["s", "t"], [rec("a/1"), rec("b/1")])
    items = store.claim("s", 10, 5.0)
    store.finish("s", [
        (items[0], Transition(DEAD, False, 1, 5.0, 0.0, "400 bad phone")),
        (items[1], Transition(DEAD, True, 9, 1.0, 0.0, "gave up: timeout")),
    ], now=5.0, disable="403 token revoked")
    assert store.claim("s", 10, 5.0) == []
    assert store.disabled_reason("s") == "403 token revoked"
    letters = store.dead_letters("s")
    assert [(d.key, d.last_error, d.uncertain) for d in letters] == [
        ("a/1", "400 bad phone", False), ("b/1", "gave up: timeout", True)]
    assert store.dead_letters("t") == []
    sinks = store.status(["u"])["sinks"]
    assert sinks["s"][DEAD] == 2 and sinks["s"]["disabled"] and sinks["s"]["last_error"] == "gave up: timeout"
    assert sinks["t"][PENDING] == 2 and not sinks["t"]["disabled"] and sinks["u"][PENDING] == 0
    assert store.retry_dead("s", "a/1") == [("s", "a/1")]
    assert store.retry_dead("s") == [("s", "b/1")]
    assert store.enable_sink("s") == "403 token revoked" and store.enable_sink("s") is None
    again = {i.key: i for i in store.claim("s", 10, 5.0)}
    assert again["a/1"].uncertain is False and again["b/1"].uncertain is True  # b/1 is asked first
    assert again["a/1"].attempts == 0


def test_sink_state_round_trip(store: StateStore) -> None:
    assert store.load_sink_state("s") is None
    store.finish("s", [], now=1.0, sink_state={"length": 42})
    store.finish("s", [], now=2.0)  # keeps it
    assert store.load_sink_state("s") == {"length": 42}
    store.disable_sink("s", "410 gone")
    assert store.load_sink_state("s") == {"length": 42} and store.disabled_reason("s") == "410 gone"


def test_reset_inflight_after_a_crash(store: StateStore) -> None:
    store.commit("src", Cursor(1, 1), ["s"], [rec("a/1"), rec("b/1")])
    claimed = store.claim("s", 10, 5.0)
    reopened = StateStore(store.url)  # a new process
    assert sorted(reopened.reset_inflight("s")) == sorted(i.id for i in claimed)
    assert all(i.uncertain for i in reopened.claim("s", 10, 0.0))
    reopened.close()


def test_concurrent_commits_and_claims_stay_consistent(store: StateStore) -> None:
    """Four writers on overlapping keys while a claimer runs: deadlocks are retried, and every
    (sink, key) ends up as one ledger row."""
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for round_ in range(8):
                store.commit(f"src{n}", Cursor(round_, round_), ["s1", "s2"],
                             [rec(f"k{(3 * n + i) % 12}/1", v=round_ % 3) for i in range(6)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def claimer() -> None:
        try:
            for _ in range(10):
                for i in store.claim("s1", 5, 1e12):
                    store.finish("s1", [(i, Transition(DELIVERED, False, 0, None, 0.0, None))], now=1.0)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)] + [threading.Thread(target=claimer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    counts = store.counts()
    assert sum(counts["s1"].values()) == 12 and sum(counts["s2"].values()) == 12


def test_engine_round_trip_on_every_backend(store: StateStore, tmp_path: Path) -> None:
    """Claims (row locks, the per-call EXISTS), verdicts and sink state through the engine."""
    a, b = FileSink("a", tmp_path / "a.jsonl", batch_size=2), FileSink("b", tmp_path / "b.jsonl")
    a.script["c/1"] = [Step(Outcome.RETRY, error="503")]
    t = [100.0]
    eng = DeliveryEngine(store, [a, b], clock=lambda: t[0])
    store.commit("src", Cursor(5, 5), ["a", "b"], [rec("c/1"), rec("c/2"), rec("d/1"), rec("e/1")])
    stats = eng.deliver_due()
    assert (stats["a"].delivered, stats["a"].retrying, stats["b"].delivered) == (2, 1, 4)
    t[0] += 10_000
    assert eng.deliver_due()["a"].delivered == 2
    assert [k for k, _, _ in a.sent] == ["c/1", "d/1", "e/1", "c/1", "c/2"]
    assert eng.pending_total() == 0 and states(store, "a") == {DELIVERED: 4}
