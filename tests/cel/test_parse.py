"""Raw row -> CelRow: names and numbers, times in every representation, bad data."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from celsync.cel.parse import (
    EVENT_NAMES, NO_TIME, parse_eventtime, parse_eventtype, parse_extra, parse_row, usable,
)

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
MOSCOW = ZoneInfo("Europe/Moscow")
HANGUP_EXTRA = '{"hangupcause":16,"hangupsource":"PJSIP/101-0000002a","dialstatus":"ANSWER"}'


def raw(**over: Any) -> dict[str, Any]:
    row = {"id": 7, "eventtype": "HANGUP", "eventtime": "2026-11-21 22:02:10.388163",
           "uniqueid": "1795298530.1", "linkedid": "1795298530.0", "channame": "PJSIP/101-0000002a",
           "amaflags": 3, "extra": HANGUP_EXTRA}
    row.update(over)
    return row


def test_complete_row() -> None:
    row = parse_row(raw(cid_num="79161234567", peer=None), UTC)
    assert (row.id, row.eventtype) == (7, "HANGUP")
    assert (row.uniqueid, row.linkedid) == ("1795298530.1", "1795298530.0")
    assert row.eventtime == datetime(2026, 11, 21, 22, 2, 10, 388163, tzinfo=UTC)
    assert row.extra == {"hangupcause": 16, "hangupsource": "PJSIP/101-0000002a", "dialstatus": "ANSWER"}
    assert row.extra_raw == HANGUP_EXTRA
    assert (row.cid_num, row.amaflags, row.peer, row.peeraccount) == ("79161234567", "3", "", "")
    assert row.problems == () and usable(row)


@pytest.mark.parametrize("value", [14, "14", 14.0, Decimal(14), b"14", "LINKEDID_END", "LINKEDID_END  "])
def test_eventtype_names_and_numbers(value: Any) -> None:
    assert parse_eventtype(value) == "LINKEDID_END"


def test_asterisk_12_numbering() -> None:
    assert [EVENT_NAMES[n] for n in (1, 3, 7, 17, 21)] == [
        "CHAN_START", "HANGUP", "BRIDGE_ENTER", "LOCAL_OPTIMIZE", "DTMF"]
    assert len(EVENT_NAMES) == 21


def test_user_defined_and_unknown_events() -> None:
    assert parse_eventtype(13, "MENU_CHOICE") == "MENU_CHOICE"  # numeric user event keeps its name
    assert parse_eventtype(13) == "USER_DEFINED"
    assert parse_eventtype("MENU_CHOICE", "MENU_CHOICE") == "MENU_CHOICE"
    assert parse_eventtype("SOME_FUTURE_EVENT") == "SOME_FUTURE_EVENT"
    assert parse_eventtype(99) == "99"
    row = parse_row(raw(eventtype=13, userdeftype="MENU_CHOICE", extra='{"extra":"2"}'), UTC)
    assert (row.eventtype, row.userdeftype) == ("MENU_CHOICE", "MENU_CHOICE")
    assert (row.extra, row.problems) == ({"extra": "2"}, ())


@pytest.mark.parametrize("column", ["uniqueid", "linkedid", "eventtype"])
@pytest.mark.parametrize("value", [None, ""])
def test_null_key_columns_make_the_row_unusable(column: str, value: Any) -> None:
    row = parse_row(raw(**{column: value}), UTC)
    assert len(row.problems) == 1 and row.problems[0].startswith(f"{column} is NULL or empty")
    assert not usable(row)


def test_null_text_columns_read_as_empty() -> None:
    row = parse_row({"id": 1, "eventtype": "ANSWER", "eventtime": datetime(2026, 1, 1),
                     "uniqueid": "1.1", "linkedid": "1.1", "cid_name": None, "appdata": None,
                     "amaflags": None, "extra": None}, UTC)
    assert (row.cid_name, row.appdata, row.amaflags, row.channame, row.extra, row.extra_raw) == (
        "", "", "", "", {}, None)
    assert row.problems == ()


def test_unreadable_or_null_eventtime() -> None:
    for value, problem in [(None, "eventtime is NULL"), ("yesterday", "eventtime 'yesterday' is not a time"),
                           ("0000-00-00 00:00:00", "eventtime '0000-00-00 00:00:00' is not a time")]:
        row = parse_row(raw(eventtime=value), UTC)
        assert row.problems == (problem,) and row.eventtime == NO_TIME and not usable(row)


@pytest.mark.parametrize("text", [HANGUP_EXTRA[:50], '{"hangupcause":16,', "{", '{"a":1}}'])
def test_malformed_or_truncated_extra(text: str) -> None:
    row = parse_row(raw(extra=text), UTC)
    assert row.extra == {} and row.extra_raw == text
    assert row.problems == ("malformed extra JSON (truncated column?); its fields are treated as absent",)
    assert usable(row)  # only the extra fields are lost


@pytest.mark.parametrize("text", ["[1, 2]", '"text"', "42", "null", "parking lot 700"])
def test_extra_that_is_not_an_object(text: str) -> None:
    row = parse_row(raw(eventtype="PARK_START", extra=text), UTC)
    assert row.extra == {} and row.extra_raw == text and usable(row)
    assert len(row.problems) == 1 and "not a JSON object" in row.problems[0]


def test_empty_extra_is_no_extra() -> None:
    row = parse_row(raw(eventtype="ANSWER", extra=""), UTC)
    assert (row.extra, row.extra_raw, row.problems) == ({}, None, ())
    assert parse_extra("") == ({}, None)
    assert parse_extra(' {"a": 1}') == ({"a": 1}, None)


@pytest.mark.parametrize("text, fields", [
    ("16,dialplan/builtin,ANSWER",
     {"hangupcause": 16, "hangupsource": "dialplan/builtin", "dialstatus": "ANSWER"}),
    ("16,,ANSWER", {"hangupcause": 16, "hangupsource": "", "dialstatus": "ANSWER"}),
    ("16,dialplan/builtin,", {"hangupcause": 16, "hangupsource": "dialplan/builtin", "dialstatus": ""}),
    ("17,SIP/101-000a", {"hangupcause": 17, "hangupsource": "SIP/101-000a", "dialstatus": ""}),
])
def test_pre_12_hangup_extra(text: str, fields: dict[str, Any]) -> None:
    row = parse_row(raw(extra=text), UTC)
    assert (row.extra, row.extra_raw, row.problems) == (fields, text, ())


def test_pre_12_text_on_other_events_is_not_read_as_a_hangup() -> None:
    assert parse_extra("16,dialplan/builtin,ANSWER", "BLINDTRANSFER")[0] == {}
    assert parse_extra("abc,def", "HANGUP")[0] == {}


EPOCH = datetime(2024, 5, 28, 12, 40, 0, tzinfo=UTC)


@pytest.mark.parametrize("value, want", [
    (1716900000, EPOCH),
    (1716900000.25, EPOCH + timedelta(microseconds=250000)),
    (Decimal("1716900000.000001"), EPOCH + timedelta(microseconds=1)),
    ("1716900000.123456", EPOCH + timedelta(microseconds=123456)),
    ("1716900000.5", EPOCH + timedelta(microseconds=500000)),
    ("1716900000", EPOCH),
    (b"1716900000.000002", EPOCH + timedelta(microseconds=2)),
    ("2024-05-28 15:40:00", EPOCH),  # naive: Moscow wall clock
    ("2024-05-28 15:40:00.000007", EPOCH + timedelta(microseconds=7)),
    ("2024-05-28T15:40:00", EPOCH),
    ("2024-05-28T12:40:00+00:00", EPOCH),
    ("2024-05-28 12:40:00Z", EPOCH),
    (datetime(2024, 5, 28, 15, 40), EPOCH),
    (datetime(2024, 5, 28, 14, 40, tzinfo=timezone(timedelta(hours=2))), EPOCH),
])
def test_eventtime_representations(value: Any, want: datetime) -> None:
    got = parse_eventtime(value, MOSCOW)
    assert got == want
    assert got is not None and got.utcoffset() == timedelta(hours=3)  # shown in the source zone


def test_same_wall_clock_in_different_zones() -> None:
    naive = datetime(2026, 7, 1, 12, 0)
    assert parse_eventtime(naive, MOSCOW) == datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
    assert parse_eventtime(naive, BERLIN) == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    assert parse_eventtime(naive, MOSCOW) == datetime(2026, 7, 1, 9, 0, tzinfo=UTC)


def test_dst_fall_back_repeated_hour() -> None:
    """02:30 happens twice in Berlin on 2026-10-25; the channel's uniqueid tells which."""
    wall = "2026-10-25 02:30:00"
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    second = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET
    assert parse_eventtime(wall, BERLIN) == first
    created_between = str(int((first + timedelta(minutes=10)).timestamp())) + ".17"
    assert parse_eventtime(wall, BERLIN, created_between) == second
    assert parse_eventtime(wall, BERLIN, "pbx1-" + created_between) == second
    created_before = str(int((first - timedelta(minutes=10)).timestamp())) + ".17"
    assert parse_eventtime(wall, BERLIN, created_before) == first
    assert parse_eventtime(wall, BERLIN, "MyCustomId") == first
    row = parse_row(raw(eventtime=wall, uniqueid=created_between), BERLIN)
    assert row.eventtime == second and row.eventtime.utcoffset() == timedelta(hours=1)


def test_dst_arithmetic_is_exact() -> None:
    before = parse_eventtime("2026-10-25 01:59:00", BERLIN)
    after = parse_eventtime("2026-10-25 03:01:00", BERLIN)
    assert before is not None and after is not None
    assert after - before == timedelta(hours=2, minutes=2)
    assert (before.utcoffset(), after.utcoffset()) == (timedelta(hours=2), timedelta(hours=1))


def test_dst_spring_forward_gap() -> None:
    """02:30 does not exist in Berlin on 2026-03-29: read with the offset in force before."""
    got = parse_eventtime("2026-03-29 02:30:00", BERLIN)
    assert got == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    just_after = parse_eventtime("2026-03-29 03:00:00", BERLIN)
    assert just_after == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert parse_eventtime("2026-03-29 01:59:59", BERLIN) == datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC)
