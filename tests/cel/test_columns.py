"""Column resolution and the degraded-mode verdict, from column lists and sample values."""

from __future__ import annotations

import pytest
from sqlalchemy import types
from sqlalchemy.dialects import mysql, postgresql

from celsync.cel.columns import ColumnInfo, SourceError, extra_problem, kind_of, resolve
from celsync.model import CEL_COLUMNS

STOCK = [ColumnInfo(c, "integer" if c in ("id", "amaflags") else "datetime" if c == "eventtime" else "text")
         for c in CEL_COLUMNS]
SQLITE3_CUSTOM = [ColumnInfo(n, k) for n, k in [
    ("AcctId", "integer"), ("eventtype", "text"), ("eventtime", "text"), ("cidname", "text"),
    ("cidnum", "text"), ("cidani", "text"), ("cidrdnis", "text"), ("ciddnid", "text"), ("context", "text"),
    ("exten", "text"), ("channame", "text"), ("appname", "text"), ("appdata", "text"), ("amaflags", "text"),
    ("accountcode", "text"), ("uniqueid", "text"), ("userfield", "text"), ("peer", "text"),
    ("userdeftype", "text"), ("eventextra", "text")]]


def test_stock_table_needs_nothing() -> None:
    cols = resolve("cel", STOCK, {})
    assert dict(cols.actual) == {c: c for c in CEL_COLUMNS}
    assert (cols.detected, cols.missing, cols.warnings) == ({}, (), ())
    assert cols.summary() == "all canonical columns present"


def test_sqlite3_custom_is_detected_with_linkedid_fallback() -> None:
    cols = resolve("cel", SQLITE3_CUSTOM, {})
    assert cols.actual["id"] == "AcctId" and cols.actual["extra"] == "eventextra"
    assert cols.actual["linkedid"] == "uniqueid"
    assert cols.missing == ("peeraccount",)
    assert len(cols.warnings) == 1 and "source.columns.linkedid" in cols.warnings[0]


def test_configured_alias_wins_over_detection() -> None:
    columns = STOCK + [ColumnInfo("eventextra", "text")]
    cols = resolve("cel", columns, {"extra": "eventextra"})
    assert cols.actual["extra"] == "eventextra" and cols.configured == {"extra": "eventextra"}
    assert "aliases extra=eventextra" in cols.summary()


def test_alias_matches_case_insensitively() -> None:
    cols = resolve("cel", SQLITE3_CUSTOM, {"id": "acctid"})
    assert cols.actual["id"] == "AcctId"


def test_alias_to_missing_column() -> None:
    with pytest.raises(SourceError) as err:
        resolve("cel", STOCK, {"extra": "eventextra"})
    assert str(err.value).startswith(
        "source.columns.extra: column 'eventextra' does not exist in table 'cel'")
    assert "its columns are: id, eventtype, eventtime" in str(err.value)


def test_missing_required_columns() -> None:
    columns = [c for c in STOCK if c.name not in ("channame", "eventtime")]
    with pytest.raises(SourceError) as err:
        resolve("asteriskcdrdb.cel", columns, {})
    message = str(err.value)
    assert "lacks required column(s) eventtime, channame" in message
    assert "channame: channame, channel" in message and "source.columns.<name>" in message


def test_optional_columns_may_be_absent() -> None:
    columns = [c for c in STOCK if c.name not in ("peeraccount", "userfield", "cid_rdnis", "userdeftype")]
    cols = resolve("cel", columns, {})
    assert cols.missing == ("cid_rdnis", "peeraccount", "userfield", "userdeftype")
    assert "absent (read as empty): cid_rdnis" in cols.summary()


@pytest.mark.parametrize("sqltype, kind", [
    (types.Integer(), "integer"), (mysql.BIGINT(), "integer"), (types.Numeric(10, 2), "number"),
    (postgresql.DOUBLE_PRECISION(), "number"), (mysql.DATETIME(fsp=6), "datetime"),
    (postgresql.TIMESTAMP(timezone=True), "datetime_tz"), (types.String(512), "text"),
    (types.Text(), "text"), (types.NullType(), "text"), (types.Boolean(), "other"),
])
def test_kinds(sqltype: types.TypeEngine, kind: str) -> None:  # type: ignore[type-arg]
    assert kind_of(sqltype) == kind


def test_extra_verdicts() -> None:
    stock = resolve("cel", STOCK, {})
    hangup = ("HANGUP", '{"hangupcause":16,"hangupsource":"","dialstatus":""}')
    assert extra_problem(stock, [("ANSWER", ""), hangup]) is None
    assert extra_problem(stock, []) is None  # an empty table proves nothing
    assert extra_problem(stock, [("ANSWER", ""), ("CHAN_START", None)]) is None
    assert extra_problem(stock, [(3, "16,dialplan/builtin,ANSWER")]) is None  # pre-12 text

    empty_hangups = extra_problem(stock, [("HANGUP", ""), (3, None), ("ANSWER", "")])
    assert empty_hangups and "empty on all 2 HANGUP rows among the newest 3" in empty_hangups
    not_json = extra_problem(stock, [("HANGUP", "PJSIP/101-0001"), ("ANSWER", "PJSIP/101-0001")])
    assert not_json and "none of its 2 non-empty values" in not_json


def test_extra_absent_or_of_wrong_type_is_degraded() -> None:
    noextra = resolve("cel", [c for c in STOCK if c.name != "extra"], {})
    reason = extra_problem(noextra, [])
    assert reason and reason.startswith("degraded status mode: the table has no extra column")
    to_id = resolve("cel", STOCK, {"extra": "id"})
    reason = extra_problem(to_id, [])
    assert reason and "column 'id' of integer type" in reason
