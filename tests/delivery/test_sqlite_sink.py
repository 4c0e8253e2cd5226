"""SQL call-log sink on SQLite, PostgreSQL and MariaDB: created on first use, UPSERT by key."""

from __future__ import annotations

import json

import sqlalchemy as sa

from celsync.config import SqliteSinkConfig
from celsync.sinks.base import Delivery, Outcome
from celsync.sinks.sqlite import SqliteSink


def record(**over: object) -> dict:
    base = {
        "key": "1716900000.12/1716900000.14", "call_id": "1716900000.12", "sub_call_id": "1716900000.14",
        "direction": "incoming", "answered": True, "missed_at": None, "extension": "101",
        "external_number": "+79161234567", "did": "+74951112233", "started_at": "2024-05-28T15:40:00+03:00",
        "answered_at": "2024-05-28T15:40:07+03:00", "ended_at": "2024-05-28T15:40:49+03:00", "duration": 42,
        "wait": 7, "recording_id": "rec-1", "hangup_cause": 16, "dial_status": "ANSWER", "result": 200,
        "bitrix24_status": "200", "kommo_status": 4, "kommo_result": "Success call",
        "attempts": [{"extension": "102", "dial_type": "queue", "hangup_cause": "LOSE_RACE",
                      "missed_call_type": "ringing", "ring_seconds": 7, "queue": "500"}],
        "accountcode": None, "userfield": None,
    }
    return {**base, **over}


def delivery(version: int, **over: object) -> Delivery:
    r = record(**over)
    return Delivery("sqlite", r["key"], version, f"fp{version}", r)


def rows(url: str) -> list[dict]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        out = [dict(r) for r in conn.execute(sa.text("SELECT * FROM calls")).mappings()]
    engine.dispose()
    return out


def test_upsert_by_key_is_idempotent_and_never_goes_back(db_url: str) -> None:
    sink = SqliteSink(SqliteSinkConfig(type="sqlite", url=db_url))
    assert [r.outcome for r in sink.send([delivery(1)])] == [Outcome.DELIVERED]
    sink.send([delivery(1)])  # the same delivery again (a reconcile said "send again")
    [row] = rows(db_url)
    assert (row["key"], row["version"], row["duration"], row["extension"], bool(row["answered"])) == (
        "1716900000.12/1716900000.14", 1, 42, "101", True)
    assert json.loads(row["record"]) == record()

    sink.send([delivery(2, duration=50, recording_id="rec-2")])
    sink.send([delivery(1)])  # a stale version must not overwrite the newer one
    [row] = rows(db_url)
    assert (row["version"], row["duration"], row["recording_id"]) == (2, 50, "rec-2")
    assert json.loads(row["record"])["duration"] == 50
    sink.close()


def test_a_batch_of_many_keys_and_a_custom_table(db_url: str) -> None:
    sink = SqliteSink(SqliteSinkConfig(type="sqlite", url=db_url, table="call_log"))
    batch = [Delivery("sqlite", f"c{i}/s{i}", 1, "fp", record(key=f"c{i}/s{i}", call_id=f"c{i}")) for i in range(60)]
    assert all(r.outcome is Outcome.DELIVERED for r in sink.send(batch))
    assert all(r.outcome is Outcome.DELIVERED for r in sink.send(batch[:10]))
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM call_log")).scalar() == 60
    engine.dispose()
    sink.close()


def test_an_unreachable_database_is_a_retry(tmp_path) -> None:
    sink = SqliteSink(SqliteSinkConfig(type="sqlite", url=f"sqlite:///{tmp_path}/missing-dir/calls.sqlite"))
    [result] = sink.send([delivery(1)])
    assert result.outcome is Outcome.RETRY and "unable to open database file" in (result.error or "")
