"""The Kommo sink against the fake account: payloads, errors, 429/403, reconcile."""

from __future__ import annotations

import pytest

from celsync.sinks.base import Outcome, SinkDisabled
from celsync.sinks.kommo import call_item
from tests.fakes.records import PHONES, deliveries, record, records, send_all


def by_key(results):
    return {r.key: r for r in results}


def test_call_item_omits_what_is_unknown_and_never_sends_null():
    rec = record(4)  # missed in the IVR: no extension, no recording
    item = call_item(rec, source="celsync", users={"101": 11}, default_user=None, link=None)
    assert item == {
        "direction": "inbound", "uniq": rec["key"], "duration": 0, "source": "celsync",
        "phone": rec["external_number"], "created_at": 1716879600 + 37 * 4, "call_status": 6,
        "call_result": "Missed call",
    }
    answered = call_item(record(2, duration=12.4), source="s", users={"102": 12}, default_user=10, link="https://x/y.wav")
    assert answered["direction"] == "outbound" and answered["duration"] == 13
    assert answered["responsible_user_id"] == answered["created_by"] == 12 and answered["link"] == "https://x/y.wav"
    assert call_item(record(5), source="s", users={}, default_user=10, link=None)["created_by"] == 10


def test_corpus_is_delivered_once(kommo, kommo_sink):
    fake, _ = kommo
    sink = kommo_sink()
    recs = records(130)
    results = send_all(sink, recs)
    assert {r.outcome for r in results} == {Outcome.DELIVERED}
    notes = {n["params"]["uniq"]: n for n in fake.call_notes()}
    assert len(notes) == len(fake.call_notes()) == 130
    for rec in recs:
        note = notes[rec["key"]]
        assert note["note_type"] == ("call_in" if rec["direction"] == "incoming" else "call_out")
        assert note["params"]["call_status"] == rec["kommo_status"]
        assert note["params"]["call_result"] == rec["kommo_result"]
        assert note["params"].get("link") == (
            f"https://pbx.example.com/rec/{rec['recording_id']}" if rec["recording_id"] else None)
        assert note["responsible_user_id"] == {"101": 11, "102": 12}.get(rec["extension"], 10)
    posts = [e for e in fake.log if e.path == "/api/v4/calls"]
    assert len(posts) == 3 and max(e.items for e in posts) == 50
    assert fake.throttled() == []


def test_unmatched_phone_is_dead_with_the_reason(kommo, kommo_sink):
    fake, _ = kommo
    sink = kommo_sink()
    known, stranger = record(0), record(1, external_number="+74990000000")
    res = by_key(sink.send(deliveries([known, stranger], sink.name)))
    assert res[known["key"]].outcome is Outcome.DELIVERED
    assert res[stranger["key"]].outcome is Outcome.DEAD
    assert "Entity not found" in res[stranger["key"]].error and "+74990000000" in res[stranger["key"]].error
    (alone,) = sink.send(deliveries([record(2, external_number="+74990000001")], sink.name))  # all unmatched: 400
    assert alone.outcome is Outcome.DEAD and "Entity not found" in alone.error
    assert len(fake.call_notes()) == 1


def test_unmatched_phone_becomes_an_incoming_lead_when_configured(kommo, kommo_sink):
    fake, _ = kommo
    sink = kommo_sink(create_unsorted_leads=True)
    stranger = record(0, external_number="+74990000000")
    (res,) = sink.send(deliveries([stranger], sink.name))
    assert res.outcome is Outcome.DELIVERED and res.remote_id.startswith("unsorted-")
    (lead,) = fake.unsorted
    assert lead["source_uid"] == stranger["key"] and lead["metadata"]["uniq"] == stranger["key"]
    assert lead["metadata"]["phone"] == "+74990000000" and lead["metadata"]["link"].endswith(".wav")
    # an unknown outcome for it is settled by reading the incoming leads back
    assert [r.outcome for r in sink.reconcile(deliveries([stranger], sink.name))] == [Outcome.DELIVERED]


def test_invalid_call_is_dead_and_the_rest_of_its_request_still_delivered(kommo, kommo_sink):
    fake, _ = kommo
    sink = kommo_sink(source=" ")  # Kommo refuses a blank source for every call
    (res,) = sink.send(deliveries([record(0)], sink.name))
    assert res.outcome is Outcome.DEAD and "source: This value should not be blank." in res.error
    sink = kommo_sink()
    good, bad = record(0), record(1, kommo_status=9)
    res = by_key(sink.send(deliveries([good, bad], sink.name)))
    assert res[bad["key"]].outcome is Outcome.DEAD and "call_status" in res[bad["key"]].error
    assert res[good["key"]].outcome is Outcome.DELIVERED
    assert [n["params"]["uniq"] for n in fake.call_notes()] == [good["key"]]


def test_record_without_a_phone_is_dead(kommo_sink):
    sink = kommo_sink()
    (res,) = sink.send(deliveries([record(0, external_number=None)], sink.name))
    assert res.outcome is Outcome.DEAD and "external number" in res.error


def test_bad_token_is_dead_and_never_shown(kommo, kommo_sink):
    fake, _ = kommo
    sink = kommo_sink(token="s3cret-wrong-token")
    results = sink.send(deliveries(records(2), sink.name))
    assert {r.outcome for r in results} == {Outcome.DEAD}
    assert all("401" in r.error and "s3cret-wrong-token" not in r.error for r in results)


def test_429_pauses_the_sink_for_retry_after_without_more_requests(kommo, kommo_sink):
    fake, _ = kommo
    fake.retry_after = 300
    sink = kommo_sink()
    fake.fail_next(1, 429, {"title": "Too Many Requests", "status": 429, "retry_after": 300})
    results = sink.send(deliveries(records(3), sink.name))
    assert {r.outcome for r in results} == {Outcome.RETRY} and {r.retry_after for r in results} == {300}
    again = sink.send(deliveries(records(3), sink.name))
    assert {r.outcome for r in again} == {Outcome.RETRY} and all(299 < r.retry_after <= 300 for r in again)
    assert len(fake.log) == 1


def test_429_without_json_still_pauses(kommo, kommo_sink):
    fake, _ = kommo
    sink = kommo_sink()
    fake.fail_next(1, 429, "Too many requests")
    (res,) = sink.send(deliveries([record(0)], sink.name))
    assert res.outcome is Outcome.RETRY and res.retry_after >= 1


def test_403_stops_the_sink(kommo, kommo_sink):
    fake, _ = kommo
    fake.blocked = True
    sink = kommo_sink()
    with pytest.raises(SinkDisabled, match="blocked"):
        sink.send(deliveries(records(2), sink.name))
    with pytest.raises(SinkDisabled):
        sink.reconcile(deliveries(records(2), sink.name))


def test_server_error_and_timeout_are_unknown_and_reconcile_tells(kommo, kommo_sink):
    fake, _ = kommo
    sink = kommo_sink(timeout=0.3)
    recs = records(6)
    fake.fail_next(1, 500, {"title": "ErrInternalServer", "status": 500}, execute=True)
    assert {r.outcome for r in sink.send(deliveries(recs[:2], sink.name))} == {Outcome.UNKNOWN}
    fake.delay_next(1.0)
    assert {r.outcome for r in sink.send(deliveries(recs[2:4], sink.name))} == {Outcome.UNKNOWN}
    fake.fail_next(1, 502, "<html>Bad Gateway</html>")  # the proxy did not pass it on
    assert {r.outcome for r in sink.send(deliveries(recs[4:], sink.name))} == {Outcome.UNKNOWN}
    verdict = by_key(sink.reconcile(deliveries(recs, sink.name)))
    assert [verdict[r["key"]].outcome for r in recs] == [Outcome.DELIVERED] * 4 + [Outcome.RETRY] * 2
    sink.send(deliveries(recs[4:], sink.name))
    assert len(fake.call_notes()) == 6 and fake.duplicates() == {}


def test_reconcile_pages_through_notes_and_ignores_other_calls(kommo, kommo_sink):
    fake, _ = kommo
    sink = kommo_sink()
    send_all(sink, records(300, first=1000))
    mine = records(2)
    sink.send(deliveries(mine[:1], sink.name))
    verdict = by_key(sink.reconcile(deliveries(mine, sink.name)))
    assert verdict[mine[0]["key"]].outcome is Outcome.DELIVERED
    assert verdict[mine[1]["key"]].outcome is Outcome.RETRY
    pages = [e for e in fake.log if e.path == "/api/v4/contacts/notes"]
    assert len(pages) >= 2  # 301 notes do not fit one page of 250


def test_connection_refused_is_retry(kommo, kommo_sink):
    fake, server = kommo
    sink = kommo_sink()
    server.stop()
    assert {r.outcome for r in sink.send(deliveries(records(2), sink.name))} == {Outcome.RETRY}
    server.start()
    assert {r.outcome for r in sink.send(deliveries(records(2), sink.name))} == {Outcome.DELIVERED}


def test_phones_are_matched_on_their_last_ten_digits(kommo, kommo_sink):
    fake, _ = kommo
    sink = kommo_sink()
    (res,) = sink.send(deliveries([record(0, external_number="8" + PHONES[0][2:])], sink.name))
    assert res.outcome is Outcome.DELIVERED


def test_a_changed_record_edits_its_note_instead_of_adding_one(kommo, kommo_sink):
    fake, _ = kommo
    sink = kommo_sink()
    rec = record(0)
    sink.send(deliveries([rec], sink.name))
    changed = dict(rec, duration=rec["duration"] + 30, kommo_result="Success call (transferred)")
    (res,) = sink.send(deliveries([changed], sink.name, previously_delivered=True))
    assert res.outcome is Outcome.DELIVERED
    (note,) = fake.call_notes()
    assert note["params"]["duration"] == rec["duration"] + 30
    assert note["params"]["call_result"] == "Success call (transferred)"
    (res,) = sink.send(deliveries([changed], sink.name, previously_delivered=True))  # unchanged now
    assert res.outcome is Outcome.DELIVERED and len(fake.edits) == 1
    fresh = record(1)  # "previously delivered" but Kommo has no note: sent as new
    (res,) = sink.send(deliveries([fresh], sink.name, previously_delivered=True))
    assert res.outcome is Outcome.DELIVERED and len(fake.call_notes()) == 2


def test_reconcile_of_records_kommo_could_never_take_sends_nothing(kommo, kommo_sink):
    fake, _ = kommo
    sink = kommo_sink()
    (res,) = sink.reconcile(deliveries([record(0, external_number=None)], sink.name))
    assert res.outcome is Outcome.DEAD and fake.log == []
