"""The fake CRMs behave as the reference says, over raw HTTP: the sink tests stand on this."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import requests

from celsync.sinks.bitrix24 import command


def b24(server, fake, method, **params):
    return requests.post(f"{server.url}{fake.base_url_path}{method}", json=params, timeout=5)


def register_params(start: datetime, **extra):
    return {"USER_ID": 7, "PHONE_NUMBER": "+79161234567", "TYPE": 2, "CALL_START_DATE": start.isoformat(),
            "EXTERNAL_CALL_ID": "1.1/1.2", "SHOW": 0, **extra}


def test_bitrix_auth_errors(bitrix):
    fake, server = bitrix
    r = requests.post(f"{server.url}/rest/1/nope/telephony.externalcall.register", json={}, timeout=5)
    assert r.status_code == 401 and r.json() == {"error": "INVALID_CREDENTIALS",
                                                 "error_description": "Invalid request credentials"}
    r = requests.post(f"{server.url}/rest/telephony.externalcall.register", json={}, timeout=5)
    assert r.status_code == 401 and r.json()["error"] == "NO_AUTH_FOUND"
    fake.scopes = {"crm"}
    r = b24(server, fake, "telephony.externalCall.register.json", **register_params(datetime.now(timezone.utc)))
    assert r.status_code == 401 and r.json()["error"] == "insufficient_scope"


def test_bitrix_batch_envelope(bitrix):
    fake, server = bitrix
    start = datetime.now(timezone.utc)
    ok = b24(server, fake, "batch", halt=0, cmd={
        "r": command("telephony.externalcall.register", register_params(start)),
        "f": command("telephony.externalcall.finish", {"CALL_ID": "$result[r][CALL_ID]", "USER_ID": 7, "DURATION": 5}),
    }).json()["result"]
    assert ok["result"]["f"]["CALL_ID"] == ok["result"]["r"]["CALL_ID"]
    assert ok["result_error"] == [] and ok["result_total"] == [] and ok["result_next"] == []
    assert set(ok["result_time"]) == {"r", "f"}
    bad = b24(server, fake, "batch", halt=0, cmd={
        "x": "telephony.externalcall.register?TYPE=9", "y": "no.such.method", "z": "batch?cmd[a]=x",
    })
    assert bad.status_code == 200
    body = bad.json()["result"]
    assert body["result"] == []
    assert body["result_error"]["x"] == {"error": "ERROR_CORE", "error_description": "USER_ID or USER_PHONE_INNER should be set"}
    assert body["result_error"]["y"]["error"] == "ERROR_METHOD_NOT_FOUND"
    assert body["result_error"]["z"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    halted = b24(server, fake, "batch", halt=1, cmd={"x": "no.such.method", "y": "no.such.method"}).json()["result"]
    assert list(halted["result_error"]) == ["x"]


def test_bitrix_batch_refuses_commands_beyond_fifty(bitrix):
    fake, server = bitrix
    cmd = {f"s{i}": command("voximplant.statistic.get", {"FILTER": {"ID": 1}}) for i in range(53)}
    body = b24(server, fake, "batch", cmd=cmd).json()["result"]
    assert len(body["result"]) == 50
    assert body["result_error"] == {f"s{i}": {"error": "ERROR_BATCH_LENGTH_EXCEEDED",
                                              "error_description": "Max batch length exceeded"} for i in (50, 51, 52)}


def test_bitrix_dedupes_only_unfinished_calls_under_thirty_minutes(bitrix):
    fake, server = bitrix
    now = datetime.now(timezone.utc)
    first = b24(server, fake, "telephony.externalcall.register", **register_params(now)).json()["result"]["CALL_ID"]
    again = b24(server, fake, "telephony.externalcall.register", **register_params(now)).json()["result"]["CALL_ID"]
    assert again == first
    old = now - timedelta(minutes=31)
    a = b24(server, fake, "telephony.externalcall.register", **register_params(old, EXTERNAL_CALL_ID="o")).json()
    b = b24(server, fake, "telephony.externalcall.register", **register_params(old, EXTERNAL_CALL_ID="o")).json()
    assert a["result"]["CALL_ID"] != b["result"]["CALL_ID"]
    assert b24(server, fake, "telephony.externalcall.finish", CALL_ID=first, USER_ID=7).status_code == 200
    after = b24(server, fake, "telephony.externalcall.register", **register_params(now)).json()["result"]["CALL_ID"]
    assert after != first  # finished: a new register is a new call (a duplicate in the CRM)


def test_bitrix_second_finish_and_early_attach_are_refused(bitrix):
    fake, server = bitrix
    call_id = b24(server, fake, "telephony.externalcall.register",
                  **register_params(datetime.now(timezone.utc))).json()["result"]["CALL_ID"]
    early = b24(server, fake, "telephony.externalcall.attachRecord", CALL_ID=call_id, RECORD_URL="https://x/r.mp3")
    assert early.status_code == 400
    assert early.json()["error_description"] == "Call is not found in the statistic table. Looks like it is not finished yet."
    assert b24(server, fake, "telephony.externalcall.finish", CALL_ID=call_id, USER_ID=7).status_code == 200
    second = b24(server, fake, "telephony.externalcall.finish", CALL_ID=call_id, USER_ID=7)
    assert second.status_code == 400
    assert second.json()["error_description"] == "Call is not found (call should be registered prior to finishing"
    ogg = b24(server, fake, "telephony.externalcall.attachRecord", CALL_ID=call_id, RECORD_URL="https://x/r.ogg")
    assert "Only wav and mp3" in ogg.json()["error_description"]
    assert b24(server, fake, "telephony.externalcall.attachRecord", CALL_ID=call_id,
               RECORD_URL="https://x/r.mp3").json()["result"]["FILE_ID"]


def test_bitrix_statistic_filter_drops_unknown_keys(bitrix):
    fake, server = bitrix
    for ext in ("a", "b"):
        call_id = b24(server, fake, "telephony.externalcall.register", **register_params(
            datetime.now(timezone.utc), EXTERNAL_CALL_ID=ext)).json()["result"]["CALL_ID"]
        b24(server, fake, "telephony.externalcall.finish", CALL_ID=call_id, USER_ID=7)
    one = b24(server, fake, "voximplant.statistic.get", FILTER={"EXTERNAL_CALL_ID": "b"}).json()
    assert [r["EXTERNAL_CALL_ID"] for r in one["result"]] == ["b"] and one["total"] == 1
    everything = b24(server, fake, "voximplant.statistic.get", FILTER={"NO_SUCH_FIELD": "b"}).json()
    assert [r["EXTERNAL_CALL_ID"] for r in everything["result"]] == ["a", "b"]


def test_bitrix_leaky_bucket(bitrix):
    fake, server = bitrix
    fake.capacity, fake.rate = 5, 1.0
    fake.clock = lambda: 100.0  # time stands still: nothing drains
    codes = [b24(server, fake, "voximplant.statistic.get").status_code for _ in range(8)]
    assert codes[:5] == [200] * 5 and 503 in codes[5:]
    assert fake.limit_violations() and fake.limit_violations()[0].method == "voximplant.statistic.get"
    r = b24(server, fake, "voximplant.statistic.get")
    assert r.status_code == 503 and r.json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}


def kommo_post(server, fake, path, body, token=None):
    return requests.post(f"{server.url}{path}", json=body, timeout=5,
                         headers={"Authorization": f"Bearer {token or fake.token}"})


def call(**extra):
    return {"direction": "inbound", "duration": 5, "source": "t", "phone": "+79161234567", "uniq": "u", **extra}


def test_kommo_auth_validation_and_matching(kommo):
    fake, server = kommo
    assert kommo_post(server, fake, "/api/v4/calls", [call()], token="nope").status_code == 401
    bad = kommo_post(server, fake, "/api/v4/calls", [call(call_result=None), call(direction="sideways")])
    assert bad.status_code == 400
    errs = {e["request_id"]: e["errors"] for e in bad.json()["validation-errors"]}
    assert errs["0"] == [{"code": "NotNullable", "path": "call_result", "detail": "This value should not be null."}]
    assert errs["1"][0]["path"] == "direction"
    assert fake.notes == []  # nothing stored from an invalid request
    mixed = kommo_post(server, fake, "/api/v4/calls", [call(), call(phone="+1 555 000 0000")])
    assert mixed.status_code == 200
    assert [c["request_id"] for c in mixed.json()["_embedded"]["calls"]] == ["0"]
    assert mixed.json()["errors"][0]["title"] == "Entity not found"
    alone = kommo_post(server, fake, "/api/v4/calls", [call(phone="+1 555 000 0000")])
    assert alone.status_code == 400 and alone.json()["_total_items"] == 0
    assert kommo_post(server, fake, "/api/v4/calls", [call()] * 251).status_code == 422
    assert requests.get(f"{server.url}/api/v4/calls", timeout=5,
                        headers={"Authorization": f"Bearer {fake.token}"}).status_code == 405


def test_kommo_has_no_dedupe(kommo):
    fake, server = kommo
    kommo_post(server, fake, "/api/v4/calls", [call()])
    kommo_post(server, fake, "/api/v4/calls", [call()])
    assert fake.duplicates() == {"u": 2}


def test_kommo_token_bucket_429_then_403_block(kommo):
    fake, server = kommo
    fake.clock = lambda: 100.0  # time stands still: nothing refills
    fake.burst, fake._tokens, fake._tokens_t = 2, 2.0, 100.0
    fake.block_after = 3
    codes = [kommo_post(server, fake, "/api/v4/calls", [call()]).status_code for _ in range(6)]
    assert codes[:2] == [200, 200] and codes[2:5] == [429, 429, 429] and codes[5] == 403
    assert fake.throttled()[0].status == 429
    fake.unblock()


def test_bitrix_reference_to_a_failed_command_yields_an_array(bitrix):
    fake, server = bitrix
    body = b24(server, fake, "batch", cmd={
        "r": "telephony.externalcall.register?TYPE=2",  # fails: no user
        "f": command("telephony.externalcall.finish", {"CALL_ID": "$result[r][CALL_ID]", "USER_ID": 7}),
    }).json()["result"]
    assert body["result_error"]["f"] == {"error": "INVALID_ARGUMENT", "error_description": "CALL_ID must be a string"}
