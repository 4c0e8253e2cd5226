"""Every real trace gives exactly its expected records: alone, interleaved, and degraded."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from celsync.calls.assembly import Assembler
from celsync.rules.classify import RulesContext, interpret

from .corpus import mismatches, profile, scenarios

CTX = RulesContext.from_config(profile())


@pytest.mark.parametrize("scenario", sorted(scenarios()))
def test_scenario_alone(scenario):
    rows = scenarios()[scenario]
    result = interpret(rows[0].linkedid, rows, CTX)
    assert mismatches(scenario, result.records) == []


def _assemble(rows, ctx=CTX):
    """All rows through the assembler in id order, closed at the end of the stream."""
    assembler = Assembler(3, 30, 6 * 3600)
    records = {}
    for row in sorted(rows, key=lambda r: r.id):
        assembler.add([row])
        for call in assembler.due(row.eventtime):
            records[call.call_id] = interpret(call.call_id, call.rows, ctx).records
    last = max(r.eventtime for r in rows)
    for call in assembler.due(last + timedelta(hours=7)):
        records[call.call_id] = interpret(call.call_id, call.rows, ctx).records
    assert assembler.open_calls == 0
    return records


def test_all_scenarios_interleaved_in_one_stream():
    """Loaded into one table the ids interleave; each call still gives its own records."""
    all_rows = [r for rows in scenarios().values() for r in rows]
    by_call = _assemble(all_rows)
    assert len(by_call) == len(scenarios())
    for scenario, rows in scenarios().items():
        assert mismatches(scenario, by_call[rows[0].linkedid]) == []


def test_without_app_rows():
    """Asterisk 22 with `apps=all` writes no APP_START/APP_END at all: same outcomes."""
    for scenario, rows in scenarios().items():
        kept = [r for r in rows if r.eventtype not in ("APP_START", "APP_END")]
        result = interpret(kept[0].linkedid, kept, CTX)
        assert mismatches(scenario, result.records) == [], scenario


def test_degraded_mode_without_extra_keeps_answered_and_missed():
    """No `extra` column: result 0 everywhere, and the two-status rule still splits the calls."""
    ctx = RulesContext.from_config(profile(), degraded=True)
    for scenario, rows in scenarios().items():
        stripped = [dataclasses.replace(r, extra={}, extra_raw=None) for r in rows]
        records = interpret(stripped[0].linkedid, stripped, ctx).records
        for record in records:
            assert record.result == 0
            assert record.bitrix24_status == ("200" if record.answered else "304")
            assert record.kommo_status == (4 if record.answered else 6)
        problems = [p for p in mismatches(scenario, records) if ".result" not in p]
        assert problems == [], scenario


def test_records_are_json_contract():
    rows = scenarios()["in_ringgroup_answered"]
    (record,) = interpret(rows[0].linkedid, rows, CTX).records
    data = record.to_dict()
    assert data["key"] == f"{data['call_id']}/{data['sub_call_id']}"
    assert data["started_at"].endswith("+00:00") and data["answered_at"] and data["ended_at"]
    assert data["duration"] == 10 and data["wait"] == 4
    assert data["external_number"] == "+79161234567" and data["did"] == "+74951112260"
    assert data["recording_id"].startswith("rg-600-79161234567-")
    assert [(a["extension"], a["dial_type"], a["hangup_cause"]) for a in data["attempts"]] == [
        ("101", "group", "LOSE_RACE"), ("103", "group", "LOSE_RACE"),
    ]


def test_missed_in_queue_has_attempts_per_member():
    rows = scenarios()["in_queue_abandoned"]
    (record,) = interpret(rows[0].linkedid, rows, CTX).records
    assert (record.missed_at, record.extension, record.answered) == ("queue", "400", False)
    assert record.bitrix24_status == "304" and record.kommo_status == 6
    assert sorted((a.extension, a.dial_type, a.queue, a.hangup_cause) for a in record.attempts) == [
        ("101", "queue", "400", "ORIGINATOR_CANCEL"), ("102", "queue", "400", "ORIGINATOR_CANCEL"),
    ]
    assert all(a.ring_seconds == 10 for a in record.attempts)


def test_blind_transfer_gives_one_record_per_agent():
    rows = scenarios()["in_blind_transfer"]
    first, second = interpret(rows[0].linkedid, rows, CTX).records
    assert (first.extension, first.duration) == ("101", 4)
    assert second.extension == "102" and second.duration == 13
    assert first.call_id == second.call_id and first.sub_call_id != second.sub_call_id


def test_internal_calls_recorded_only_when_configured():
    ctx = RulesContext.from_config(profile(pbx={**profile().pbx.model_dump(), "record_local_calls": True}))
    rows = scenarios()["internal_answered"]
    (record,) = interpret(rows[0].linkedid, rows, ctx).records
    assert (record.direction, record.extension, record.external_number, record.answered) == ("outgoing", "101", "102", True)
