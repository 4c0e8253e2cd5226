"""The Redis stream sink against the real Redis: entry fields, attempts, MAXLEN, reconcile."""

from __future__ import annotations

import json

import pytest
import redis

from celsync.config import ConfigError, RedisSinkConfig
from celsync.sinks.base import Outcome
from celsync.sinks.redis_stream import RedisSink, disposition
from tests.feeds.feeds_support import LOSE_RACE, NO_ANSWER, delivery, make_record


def sink_for(stream: str, **settings: object) -> RedisSink:
    return RedisSink(RedisSinkConfig(type="redis", stream=stream, **settings))


def test_record_entry_has_the_dialer_cdr_fields_key_and_the_whole_record(client: redis.Redis, stream: str) -> None:
    record = make_record(1, userfield="CUST-77", accountcode="CAMP-3")
    results = sink_for(stream).send([delivery(record, version=2)])

    [(entry_id, fields)] = client.xrange(stream)
    assert results[0].outcome is Outcome.DELIVERED and results[0].remote_id == entry_id
    assert json.loads(fields.pop("record")) == record
    assert fields == {
        "type": "record", "key": "1716900000.1/1716900000.1001", "version": "2",
        "internal_call_ref": "1716900000.1", "ext": "101", "custom_call_ref": "CUST-77",
        "campaign_ref": "CAMP-3", "disposition": "ANSWERED", "sip_code": "200",
        "client_number": "+79161234567", "dial_number": "+74951112233", "direction": "incoming",
        "missed_at": "", "started_at": "2024-05-28T15:20:00+03:00",
        "ended_at": "2024-05-28T15:20:49+03:00", "duration": "42",
    }


def test_call_refs_come_from_the_configured_record_fields(client: redis.Redis, stream: str) -> None:
    record = make_record(1, userfield="U", accountcode="A")
    sink_for(stream, custom_call_ref="accountcode", campaign_ref=None).send([delivery(record)])
    [(_, fields)] = client.xrange(stream)
    assert (fields["custom_call_ref"], fields["campaign_ref"]) == ("A", "")


def test_a_call_refs_setting_that_names_no_record_field_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="custom_call_ref: 'user_field' is not a call record field"):
        sink_for("s", custom_call_ref="user_field")


def test_missed_in_queue_has_no_agent_extension(client: redis.Redis, stream: str) -> None:
    missed = make_record(2, answered=False, missed_at="queue", extension="500", answered_at=None,
                         duration=0, result=480, dial_status="CANCEL")
    sink_for(stream).send([delivery(missed)])
    [(_, fields)] = client.xrange(stream)
    assert (fields["ext"], fields["missed_at"], fields["disposition"], fields["sip_code"]) == ("", "queue", "MISSED", "480")


def test_outgoing_dial_number_is_the_line_and_client_number_the_callee(client: redis.Redis, stream: str) -> None:
    busy = make_record(3, direction="outgoing", answered=False, answered_at=None, result=486,
                       external_number="+79031112233", did="+74951112200", extension="102")
    sink_for(stream).send([delivery(busy)])
    [(_, fields)] = client.xrange(stream)
    assert (fields["client_number"], fields["dial_number"], fields["ext"], fields["disposition"]) == (
        "+79031112233", "+74951112200", "102", "BUSY")


@pytest.mark.parametrize(("direction", "answered", "result", "expected"), [
    ("incoming", True, 200, "ANSWERED"),
    ("outgoing", True, 0, "ANSWERED"),
    ("incoming", False, 486, "MISSED"),
    ("incoming", False, 0, "MISSED"),
    ("outgoing", False, 486, "BUSY"),
    ("outgoing", False, 603, "BUSY"),
    ("outgoing", False, 408, "NO ANSWER"),
    ("outgoing", False, 480, "NO ANSWER"),
    ("outgoing", False, 0, "NO ANSWER"),
    ("outgoing", False, 404, "FAILED"),
    ("outgoing", False, 484, "FAILED"),
    ("outgoing", False, 500, "FAILED"),
])
def test_disposition(direction: str, answered: bool, result: int, expected: str) -> None:
    assert disposition({"direction": direction, "answered": answered, "result": result}) == expected


def test_attempts_follow_their_record_as_own_entries_when_enabled(client: redis.Redis, stream: str) -> None:
    record = make_record(4, attempts=(LOSE_RACE, NO_ANSWER), userfield="C1")
    sink_for(stream, attempts=True).send([delivery(record, version=3)])

    entries = [fields for _, fields in client.xrange(stream)]
    assert [e["type"] for e in entries] == ["record", "attempt", "attempt"]
    assert entries[2] == {
        "type": "attempt", "key": f"{record['key']}#attempt2", "record_key": record["key"],
        "version": "3", "internal_call_ref": "1716900000.4", "custom_call_ref": "C1", "campaign_ref": "",
        "ext": "103", "hangup_cause": "NO_ANSWER", "dial_type": "queue", "missed_call_type": "ringing",
        "ring_seconds": "15", "queue": "500", "started_at": "",
    }
    assert entries[1]["key"].endswith("#attempt1") and entries[1]["hangup_cause"] == "LOSE_RACE"


def test_attempts_ride_only_inside_the_record_by_default(client: redis.Redis, stream: str) -> None:
    sink_for(stream).send([delivery(make_record(5, attempts=(LOSE_RACE,)))])
    [(_, fields)] = client.xrange(stream)
    assert json.loads(fields["record"])["attempts"][0]["hangup_cause"] == "LOSE_RACE"


def test_a_batch_is_one_transaction_in_order(client: redis.Redis, stream: str) -> None:
    batch = [delivery(make_record(n)) for n in range(30)]
    results = sink_for(stream).send(batch)
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 30
    assert [f["key"] for _, f in client.xrange(stream)] == [d.key for d in batch]


def test_maxlen_trims_the_stream_approximately(client: redis.Redis, stream: str) -> None:
    sink = sink_for(stream, maxlen=10, batch_size=100)
    for start in range(0, 600, 100):
        sink.send([delivery(make_record(n)) for n in range(start, start + 100)])
    # '~' trims whole radix-tree nodes (100 entries by default): never below MAXLEN, far below 600
    assert 10 <= client.xlen(stream) <= 10 + 100


def test_reconcile_finds_what_reached_the_stream_by_key_and_version(client: redis.Redis, stream: str) -> None:
    sink = sink_for(stream)
    sent = [delivery(make_record(n)) for n in range(3)]
    sink.send(sent)
    sink.send([delivery(make_record(n)) for n in range(100, 1300)])  # push them off the first page
    never_sent = delivery(make_record(9))
    other_version = delivery(make_record(0), version=2)

    results = {(r.key, r.outcome) for r in sink.reconcile([*sent, never_sent])}
    assert results == {(d.key, Outcome.DELIVERED) for d in sent} | {(never_sent.key, Outcome.RETRY)}
    assert [r.outcome for r in sink.reconcile([other_version])] == [Outcome.RETRY]


def test_a_key_that_is_not_a_stream_is_retried_with_a_clear_error(client: redis.Redis, stream: str) -> None:
    client.rpush(stream, "a dialer's list")
    [result] = sink_for(stream).send([delivery(make_record(1))])
    assert result.outcome is Outcome.RETRY
    assert "WRONGTYPE" in result.error and repr(stream) in result.error


def test_an_unreachable_redis_is_an_unknown_outcome_without_the_password() -> None:
    cfg = RedisSinkConfig(type="redis", url="redis://:hunter2secret@127.0.0.1:1/0", stream="s", timeout=1)
    [result] = RedisSink(cfg).send([delivery(make_record(1))])
    assert result.outcome is Outcome.UNKNOWN
    assert "'s'" in result.error and "hunter2secret" not in result.error
