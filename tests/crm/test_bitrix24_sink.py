"""The Bitrix24 sink against the fake portal: payloads, batching, errors, reconcile."""

from __future__ import annotations

import math
import pytest

from celsync.sinks.base import Outcome
from celsync.sinks.bitrix24 import ATTACH_TRIES, Bitrix24Error, User, call_commands, php_query
from celsync.sinks.crm_http import SETTLE_SECONDS
from tests.fakes.bitrix24 import STAT_FILTER_FIELDS, php_parse
from tests.fakes.records import deliveries, record, records, send_all


def by_key(results):
    return {r.key: r for r in results}


def test_commands_of_one_call_share_the_register_result():
    rec = record(0)  # incoming, answered, recorded, extension 101
    cmds = call_commands(rec, User("USER_ID", 7), "3", add_to_chat=False,
                         record_url="https://pbx.example.com/rec/a%20b.wav")
    assert list(cmds) == ["r3", "f3", "a3"]
    method, _, query = cmds["r3"].partition("?")
    assert method == "telephony.externalcall.register"
    reg = php_parse(query)
    assert reg == {
        "USER_ID": "7", "PHONE_NUMBER": rec["external_number"], "TYPE": "2",
        "CALL_START_DATE": "2024-05-28T10:00:00+03:00", "SHOW": "0", "EXTERNAL_CALL_ID": rec["key"],
        "LINE_NUMBER": "+74951112201",
    }
    fin = php_parse(cmds["f3"].partition("?")[2])
    assert fin == {"CALL_ID": "$result[r3][CALL_ID]", "USER_ID": "7", "DURATION": str(rec["duration"]),
                   "STATUS_CODE": "200", "ADD_TO_CHAT": "0"}
    att = php_parse(cmds["a3"].partition("?")[2])
    assert att == {"CALL_ID": "$result[r3][CALL_ID]", "RECORD_URL": "https://pbx.example.com/rec/a%20b.wav",
                   "FILENAME": "a%20b.wav"}


def test_unanswered_outgoing_call_has_no_duration_and_its_own_status():
    rec = record(3)  # outgoing to a number out of service
    cmds = call_commands(rec, User("USER_PHONE_INNER", "103"), "0", add_to_chat=True, record_url=None)
    assert list(cmds) == ["r0", "f0"]
    reg = php_parse(cmds["r0"].partition("?")[2])
    assert reg["TYPE"] == "1" and reg["USER_PHONE_INNER"] == "103" and "LINE_NUMBER" not in reg
    fin = php_parse(cmds["f0"].partition("?")[2])
    assert fin["DURATION"] == "0" and fin["STATUS_CODE"] == "404" and fin["ADD_TO_CHAT"] == "1"


def test_answered_duration_is_rounded_up_and_never_zero():
    for duration, expected in ((0, 1), (12.2, 13), (30, 30)):
        cmds = call_commands(record(0, duration=duration), User("USER_ID", 7), "0", add_to_chat=False, record_url=None)
        assert php_parse(cmds["f0"].partition("?")[2])["DURATION"] == str(expected)


def test_php_query_round_trips_nested_filters():
    assert php_parse(php_query({"FILTER": {"EXTERNAL_CALL_ID": "1.2/1.3", "@ID": [1, 7]}, "start": 0})) == {
        "FILTER": {"EXTERNAL_CALL_ID": "1.2/1.3", "@ID": {"0": "1", "1": "7"}}, "start": "0"}


def test_corpus_is_delivered_once_in_full_batches(bitrix, bitrix_sink):
    fake, _ = bitrix
    sink = bitrix_sink()
    recs = records(120)
    results = send_all(sink, recs)
    assert {r.outcome for r in results} == {Outcome.DELIVERED}
    assert all(r.remote_id and r.remote_id.startswith("externalCall.") for r in results)
    assert fake.duplicates() == {}
    assert not fake.active  # every registered call was finished
    for rec in recs:
        (row,) = fake.rows_for(rec["key"])
        assert row["CALL_TYPE"] == ("2" if rec["direction"] == "incoming" else "1")
        assert row["CALL_FAILED_CODE"] == rec["bitrix24_status"]
        assert row["CALL_DURATION"] == str(max(1, math.ceil(rec["duration"])) if rec["answered"] else 0)
        assert row["ADD_TO_CHAT"] == "0"
        # 101 is mapped to user 7; 102 and 103 are known to the portal by their inner number;
        # 105, the queue 400, the ring group 600 and the IVR (no extension) fall back to the
        # default user 1
        expected_user = {"101": "7", "102": "8", "103": "9"}.get(rec["extension"], "1")
        assert row["PORTAL_USER_ID"] == expected_user
        # recordings go with answered calls only
        attached = rec["answered"] and rec["recording_id"]
        assert row["CALL_RECORD_URL"] == (f"https://pbx.example.com/rec/{rec['recording_id']}" if attached else None)
        assert (row["RECORD_FILE_ID"] is not None) == bool(attached)
    assert all(r["SHOW"] == "0" for r in fake.registrations)
    batches = [e for e in fake.log if e.method == "batch"]
    assert all(len(e.commands) <= 50 for e in batches)
    commands = sum(len(e.commands) for e in batches)
    assert len(batches) <= math.ceil(commands / 50) + 2  # packed, not one request per call
    assert fake.limit_violations() == []


def test_unknown_extension_falls_back_to_the_default_user_once(bitrix, bitrix_sink):
    fake, _ = bitrix
    sink = bitrix_sink()
    first = [record(5), record(9)]  # extension 105, unknown to the portal
    results = sink.send(deliveries(first, sink.name))
    assert {r.outcome for r in results} == {Outcome.DELIVERED}
    assert [r["PORTAL_USER_ID"] for r in fake.stats] == ["1", "1"]
    tried = len(fake.registrations)
    assert tried == 4  # each tried by its inner number, then with the default user
    sink.send(deliveries([record(20)], sink.name))
    assert len(fake.registrations) == tried + 1  # the sink remembers that 105 is unknown


def test_unknown_extension_without_default_user_is_dead_with_the_reason(bitrix, bitrix_sink):
    fake, _ = bitrix
    sink = bitrix_sink(default_user=None)
    (res,) = sink.send(deliveries([record(5)], sink.name))
    assert res.outcome is Outcome.DEAD
    assert "USER_ID or USER_PHONE_INNER should be set" in res.error and "default_user" in res.error
    (ivr,) = sink.send(deliveries([record(4)], sink.name))  # no extension at all
    assert ivr.outcome is Outcome.DEAD and "default_user" in ivr.error
    assert fake.stats == []


def test_inactive_mapped_user_falls_back_to_the_default_user(bitrix, bitrix_sink):
    fake, _ = bitrix
    fake.inactive.add(7)
    sink = bitrix_sink()
    (res,) = sink.send(deliveries([record(0)], sink.name))
    assert res.outcome is Outcome.DELIVERED
    assert fake.stats[0]["PORTAL_USER_ID"] == "1"


def test_a_record_bitrix_cannot_take_is_dead_and_the_rest_delivered(bitrix, bitrix_sink):
    fake, _ = bitrix
    sink = bitrix_sink()
    good, no_phone, naive = record(0), record(1, external_number=None), record(2, started_at="2024-05-28T10:00:00")
    res = by_key(sink.send(deliveries([good, no_phone, naive], sink.name)))
    assert res[good["key"]].outcome is Outcome.DELIVERED
    assert res[no_phone["key"]].outcome is Outcome.DEAD and "external number" in res[no_phone["key"]].error
    assert res[naive["key"]].outcome is Outcome.DEAD and "UTC offset" in res[naive["key"]].error
    assert len(fake.stats) == 1


def test_wrong_webhook_code_is_dead_and_the_code_never_shows(bitrix, bitrix_sink):
    fake, server = bitrix
    sink = bitrix_sink(webhook_url=f"{server.url}/rest/1/wr0ngc0de/")
    results = sink.send(deliveries(records(3), sink.name))
    assert {r.outcome for r in results} == {Outcome.DEAD}
    assert all("INVALID_CREDENTIALS" in r.error for r in results)
    assert all("wr0ngc0de" not in r.error for r in results)
    assert fake.stats == []


def test_query_limit_is_retried_later_and_slows_the_sink(bitrix, bitrix_sink):
    fake, _ = bitrix
    sink = bitrix_sink()
    fake.fail_next(1, 503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
    results = sink.send(deliveries(records(4), sink.name))
    assert {r.outcome for r in results} == {Outcome.RETRY}
    assert all(r.retry_after and r.retry_after >= 1 for r in results)
    again = sink.send(deliveries(records(4), sink.name))  # paused: no request at all
    assert {r.outcome for r in again} == {Outcome.RETRY}
    assert len(fake.log) == 1 and fake.stats == []


def test_operation_time_limit_waits_for_the_reset(bitrix, bitrix_sink):
    fake, _ = bitrix
    sink = bitrix_sink()
    sink.send(deliveries([record(0)], sink.name))  # a good reply tells when the limit resets
    fake.fail_next(1, 429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")
    (res,) = sink.send(deliveries([record(1)], sink.name))
    assert res.outcome is Outcome.RETRY and 500 < res.retry_after <= 600


def test_server_error_is_unknown_and_reconcile_tells(bitrix, bitrix_sink):
    fake, _ = bitrix
    sink = bitrix_sink()
    recs = [record(i) for i in (0, 2, 3, 6, 8, 10)]  # extensions the portal knows: one request each
    fake.fail_next(1, 500, "INTERNAL_SERVER_ERROR", "", execute=True)  # ran, then failed to answer
    results = sink.send(deliveries(recs[:3], sink.name))
    assert {r.outcome for r in results} == {Outcome.UNKNOWN}
    fake.fail_next(1, 500, "INTERNAL_SERVER_ERROR", "")  # did not run
    results = sink.send(deliveries(recs[3:], sink.name))
    assert {r.outcome for r in results} == {Outcome.UNKNOWN}
    verdict = by_key(sink.reconcile(deliveries(recs, sink.name)))
    assert [verdict[r["key"]].outcome for r in recs] == [Outcome.DELIVERED] * 3 + [Outcome.RETRY] * 3
    assert {verdict[r["key"]].remote_id for r in recs[:3]} == {row["CALL_ID"] for row in fake.stats}
    sink.send(deliveries(recs[3:], sink.name))
    assert len(fake.stats) == 6 and fake.duplicates() == {}


def test_timeout_is_unknown_and_never_sent_twice(bitrix, bitrix_sink):
    fake, _ = bitrix
    sink = bitrix_sink(timeout=0.3)
    recs = [record(i) for i in (0, 2, 3, 6)]
    fake.delay_next(1.0)
    results = sink.send(deliveries(recs, sink.name))
    assert {r.outcome for r in results} == {Outcome.UNKNOWN}
    assert {r.retry_after for r in results} == {SETTLE_SECONDS}  # not reconciled while it may still run
    verdict = sink.reconcile(deliveries(recs, sink.name))
    assert {r.outcome for r in verdict} == {Outcome.DELIVERED}
    assert len(fake.stats) == 4 and fake.duplicates() == {}


def test_connection_refused_is_retry(bitrix, bitrix_sink):
    fake, server = bitrix
    sink = bitrix_sink()
    server.stop()
    results = sink.send(deliveries(records(2), sink.name))
    assert {r.outcome for r in results} == {Outcome.RETRY}
    assert all("w3bh00kc0de" not in r.error for r in results)
    server.start()
    assert {r.outcome for r in sink.send(deliveries(records(2), sink.name))} == {Outcome.DELIVERED}


def test_down_behind_a_proxy_is_retry(bitrix, bitrix_sink):
    fake, _ = bitrix
    sink = bitrix_sink()
    fake.down = True
    assert {r.outcome for r in sink.send(deliveries(records(2), sink.name))} == {Outcome.RETRY}
    fake.down = False
    assert {r.outcome for r in sink.send(deliveries(records(2), sink.name))} == {Outcome.DELIVERED}


def test_reconcile_refuses_to_guess_when_the_filter_is_ignored(bitrix, bitrix_sink):
    fake, _ = bitrix
    fake.stat_filter_fields = STAT_FILTER_FIELDS - {"EXTERNAL_CALL_ID"}
    sink = bitrix_sink()
    sink.send(deliveries([record(0)], sink.name))
    with pytest.raises(Bitrix24Error, match="ignored the EXTERNAL_CALL_ID filter"):
        sink.reconcile(deliveries([record(1)], sink.name))


def test_reconcile_without_statistics_permission_says_so(bitrix, bitrix_sink):
    fake, _ = bitrix
    fake.can_view_statistics = False
    sink = bitrix_sink()
    with pytest.raises(Bitrix24Error, match="permission to view call statistics"):
        sink.reconcile(deliveries([record(0)], sink.name))


def test_a_recording_the_portal_cannot_fetch_does_not_hold_the_call(bitrix, bitrix_sink):
    fake, _ = bitrix
    sink = bitrix_sink()
    rec = record(0)
    url = f"https://pbx.example.com/rec/{rec['recording_id']}"
    fake.failing_recordings.add(url)
    (res,) = sink.send(deliveries([rec], sink.name))
    assert res.outcome is Outcome.DELIVERED and "recording not attached" in res.error
    attempts = [c for e in fake.log for c in e.commands if c == "telephony.externalcall.attachrecord"]
    assert len(attempts) == ATTACH_TRIES
    fake.failing_recordings.clear()
    (res,) = sink.reconcile(deliveries([rec], sink.name))  # a later look attaches it
    assert res.outcome is Outcome.DELIVERED
    assert fake.rows_for(rec["key"])[0]["CALL_RECORD_URL"] == url and len(fake.stats) == 1


def test_a_changed_record_only_adds_its_recording(bitrix, bitrix_sink):
    fake, _ = bitrix
    sink = bitrix_sink()
    rec = record(0, recording_id=None)
    sink.send(deliveries([rec], sink.name))
    changed = dict(rec, recording_id="late/take-2.wav", duration=rec["duration"] + 5)
    (res,) = sink.send(deliveries([changed], sink.name, previously_delivered=True))
    assert res.outcome is Outcome.DELIVERED
    (row,) = fake.rows_for(rec["key"])
    assert row["CALL_RECORD_URL"] == "https://pbx.example.com/rec/late/take-2.wav"
    (res,) = sink.send(deliveries([changed], sink.name, previously_delivered=True))
    assert res.outcome is Outcome.DELIVERED and len(fake.attachments) == 1
