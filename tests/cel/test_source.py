"""The reader against real MariaDB, PostgreSQL and SQLite tables in every schema variant."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from celsync.cel.columns import SourceError
from celsync.cel.schema import RENAMES, SCHEMA_VARIANTS
from celsync.config import ConfigError, config_from_dict
from tests.cel.helpers import (
    actual, backend_of, expected, load, open_source, read_all, source, stored_time,
)

DEGRADED = {"noextra"}


@pytest.mark.parametrize("variant", SCHEMA_VARIANTS)
def test_corpus_round_trip(db_url: str, variant: str, corpus_rows: list[dict[str, Any]]) -> None:
    """Rows come back exactly, in id order, batch after batch, whatever the schema."""
    load(db_url, variant, corpus_rows, tz="Europe/Moscow")
    with open_source(db_url, timezone="Europe/Moscow") as src:
        got = read_all(src, batch=37)
        assert src.degraded is (variant in DEGRADED)
        assert [actual(r) for r in got] == [expected(r, backend_of(db_url), variant) for r in corpus_rows]
        assert all(r.eventtime.utcoffset() == timedelta(hours=3) for r in got)
        assert src.max_id() == corpus_rows[-1]["id"]
        assert src.read_after(src.max_id(), 10) == []


def test_renamed_columns_via_aliases(db_url: str, corpus_rows: list[dict[str, Any]]) -> None:
    load(db_url, "renamed", corpus_rows)
    with open_source(db_url, timezone="UTC", columns=RENAMES["renamed"]) as src:
        got = read_all(src, batch=100)
        assert [actual(r) for r in got] == [expected(r, backend_of(db_url), "renamed") for r in corpus_rows]
        assert dict(src.columns.configured) == RENAMES["renamed"]
        assert not src.columns.detected
        assert "aliases id=AcctId" in src.describe()


def test_renamed_columns_detected(sqlite_url: str, corpus_rows: list[dict[str, Any]]) -> None:
    load(sqlite_url, "renamed", corpus_rows)
    with open_source(sqlite_url, timezone="UTC") as src:
        assert dict(src.columns.detected) == RENAMES["renamed"]
        assert src.columns.missing == ()
        assert not src.degraded


def test_sqlite3_custom_falls_back_to_uniqueid(sqlite_url: str, corpus_rows: list[dict[str, Any]]) -> None:
    load(sqlite_url, "sqlite3_custom", corpus_rows)
    with open_source(sqlite_url, timezone="UTC") as src:
        assert len(src.warnings) == 1 and "no linkedid column" in src.warnings[0]
        assert all(r.linkedid == r.uniqueid for r in src.read_after(0, 1000))


def test_rows_for_calls(db_url: str, corpus_rows: list[dict[str, Any]]) -> None:
    """Whole calls by linkedid or uniqueid, ordered, each row once, bounded by max_id."""
    load(db_url, "stock", corpus_rows)
    with open_source(db_url, timezone="UTC") as src:
        linkedids = {corpus_rows[0]["linkedid"], corpus_rows[-1]["linkedid"], "no-such-call"}
        uniqueids = {corpus_rows[300]["uniqueid"], corpus_rows[0]["uniqueid"]}
        want = [r["id"] for r in corpus_rows if r["linkedid"] in linkedids or r["uniqueid"] in uniqueids]
        assert [r.id for r in src.rows_for_calls(linkedids, uniqueids)] == want
        cut = corpus_rows[-1]["id"] - 5
        assert [r.id for r in src.rows_for_calls(linkedids, uniqueids, max_id=cut)] == [
            i for i in want if i <= cut]
        assert src.rows_for_calls([], []) == []


def test_rows_for_calls_chunks_long_lists(sqlite_url: str, corpus_rows: list[dict[str, Any]]) -> None:
    load(sqlite_url, "stock", corpus_rows)
    with open_source(sqlite_url, timezone="UTC") as src:
        uniqueids = [f"x{i}" for i in range(1500)] + [r["uniqueid"] for r in corpus_rows]
        assert [r.id for r in src.rows_for_calls([], uniqueids)] == [r["id"] for r in corpus_rows]


@pytest.mark.parametrize("variant", ["stock", "freepbx", "sqlite3_custom", "numeric"])
def test_id_range(db_url: str, variant: str, corpus_rows: list[dict[str, Any]]) -> None:
    """Bounds in any zone select the rows whose stored time lies in [from, to]."""
    load(db_url, variant, corpus_rows, tz="Europe/Berlin")
    with open_source(db_url, timezone="Europe/Berlin") as src:
        stored = [(r["id"], stored_time(r["eventtime"], backend_of(db_url), variant)) for r in corpus_rows]
        moscow = timezone(timedelta(hours=3))
        for lo, hi in [(10, 60), (100, 101), (200, 574), (0, 0)]:
            t_from = stored[lo][1].astimezone(moscow)
            t_to = stored[hi][1]
            ids = [i for i, t in stored if t_from <= t <= t_to]
            assert src.id_range(t_from, t_to) == (min(ids), max(ids))
        assert src.id_range(datetime(2001, 1, 1, tzinfo=timezone.utc),
                            datetime(2001, 1, 2, tzinfo=timezone.utc)) is None


def test_timestamptz_column(postgres_url: str) -> None:
    """A Wazo-style timestamptz column: times are instants whatever the session zone."""
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text(
            "CREATE TABLE cel (id serial PRIMARY KEY, eventtype text, eventtime timestamptz, "
            "channame text, uniqueid text, linkedid text, extra text)"))
        conn.execute(text("SET TIME ZONE 'Asia/Tokyo'"))
        conn.execute(
            text("INSERT INTO cel (eventtype, eventtime, channame, uniqueid, linkedid, extra) "
                 "VALUES ('HANGUP', '2026-03-29 00:30:00.25+00', 'PJSIP/101-1', '1.1', '1.1', :x)"),
            {"x": '{"hangupcause":16,"hangupsource":"","dialstatus":"ANSWER"}'},
        )
    engine.dispose()
    with open_source(postgres_url, timezone="Europe/Berlin") as src:
        (row,) = src.read_after(0, 10)
        assert row.eventtime == datetime(2026, 3, 29, 0, 30, 0, 250000, tzinfo=timezone.utc)
        assert row.eventtime.utcoffset() == timedelta(hours=1)  # Berlin before the DST switch
        assert row.extra == {"hangupcause": 16, "hangupsource": "", "dialstatus": "ANSWER"}
        assert src.id_range(row.eventtime, row.eventtime) == (1, 1)


def test_db_now_is_the_database_clock(db_url: str, corpus_rows: list[dict[str, Any]]) -> None:
    load(db_url, "stock", corpus_rows[:3])
    with open_source(db_url, timezone="Asia/Tokyo") as src:
        now = src.db_now()
        assert now.tzinfo is not None
        assert abs(now - datetime.now(timezone.utc)) < timedelta(minutes=5)


def test_extra_aliased_to_id_is_degraded(db_url: str, corpus_rows: list[dict[str, Any]]) -> None:
    load(db_url, "stock", corpus_rows[:50])
    with open_source(db_url, timezone="UTC", columns={"extra": "id"}) as src:
        assert src.degraded
        reason = src.degraded_reason or ""
        assert "integer" in reason and "source.columns.extra" in reason
        rows = src.read_after(0, 100)
        assert len(rows) == 50 and all(r.extra == {} and not r.problems for r in rows)


def test_extra_aliased_to_a_text_column_without_json_is_degraded(
    sqlite_url: str, corpus_rows: list[dict[str, Any]]
) -> None:
    load(sqlite_url, "stock", corpus_rows)
    with open_source(sqlite_url, timezone="UTC", columns={"extra": "userfield"}) as src:
        assert src.degraded and "HANGUP" in (src.degraded_reason or "")
    with open_source(sqlite_url, timezone="UTC", columns={"extra": "channame"}) as src:
        assert src.degraded and "JSON" in (src.degraded_reason or "")


def test_alias_to_missing_column_names_key_and_columns(
    sqlite_url: str, corpus_rows: list[dict[str, Any]]
) -> None:
    load(sqlite_url, "stock", corpus_rows[:2])
    with pytest.raises(SourceError) as err:
        source(sqlite_url, columns={"extra": "eventextra"})
    message = str(err.value)
    assert "source.columns.extra" in message and "'eventextra'" in message
    assert "linkedid" in message and "userdeftype" in message  # the columns that do exist


def test_alias_that_tries_sql_is_rejected_by_config() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"source": {"columns": {"extra": "extra; DROP TABLE cel"}}})
    message = str(err.value)
    assert "source.columns" in message and "'extra'" in message and "never SQL" in message


def test_missing_required_column(sqlite_url: str) -> None:
    con = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    con.execute("CREATE TABLE cel (id INTEGER PRIMARY KEY, eventtype TEXT, eventtime TEXT, uniqueid TEXT)")
    con.close()
    with pytest.raises(SourceError) as err:
        source(sqlite_url)
    message = str(err.value)
    assert "channame" in message and "channame, channel" in message and "source.columns" in message
    assert "linkedid" not in message.split("(")[0]  # linkedid falls back to uniqueid


def test_missing_table_and_file(sqlite_url: str, corpus_rows: list[dict[str, Any]]) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        source(sqlite_url)
    load(sqlite_url, "stock", corpus_rows[:1], table="cel_other")
    with pytest.raises(SourceError, match=r"source\.table: no table 'cel'.*cel_other"):
        source(sqlite_url)


def test_missing_table_on_server(postgres_url: str) -> None:
    with pytest.raises(SourceError, match=r"source\.table: no table 'cel'.*tables there: none"):
        source(postgres_url)


def test_sqlite_source_is_read_only(sqlite_url: str, corpus_rows: list[dict[str, Any]]) -> None:
    load(sqlite_url, "stock", corpus_rows[:5])
    with open_source(sqlite_url, timezone="UTC") as src:
        with src.engine.connect() as conn, pytest.raises(OperationalError, match="readonly"):
            conn.execute(text("DELETE FROM cel"))
        assert len(src.read_after(0, 10)) == 5


def test_new_rows_are_seen_by_later_reads(db_url: str, corpus_rows: list[dict[str, Any]]) -> None:
    """Each read is a fresh snapshot: rows committed between polls appear."""
    load(db_url, "stock", corpus_rows[:10])
    with open_source(db_url, timezone="UTC") as src:
        first = src.read_after(0, 100)
        load(db_url, "stock", corpus_rows[10:20])
        second = src.read_after(first[-1].id, 100)
        assert [r.id for r in first + second] == [r["id"] for r in corpus_rows[:20]]


def test_narrow_extra_column_truncates_like_cel_odbc(db_url: str, corpus_rows: list[dict[str, Any]]) -> None:
    """FreePBX's varchar(512): a longer JSON is cut, the row is kept with a problem."""
    long_extra = '{"extension":"102","context":"' + "x" * 600 + '"}'
    rows = [dict(corpus_rows[0], extra=long_extra)] + corpus_rows[1:40]
    load(db_url, "freepbx", rows)
    with open_source(db_url, timezone="UTC") as src:
        cut, *others = src.read_after(0, 100)
        assert cut.extra == {} and cut.extra_raw == long_extra[:512]
        assert cut.problems == ("malformed extra JSON (truncated column?); its fields are treated as absent",)
        assert len(others) == 39 and not any(r.problems for r in others) and not src.degraded


def _hand_made(url: str, column_type: str, times: list[Any]) -> None:
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    con.execute(f"CREATE TABLE cel (id INTEGER PRIMARY KEY, eventtype TEXT, eventtime {column_type}, "
                "channame TEXT, uniqueid TEXT, linkedid TEXT)")
    con.executemany("INSERT INTO cel VALUES (?, 'ANSWER', ?, 'PJSIP/101-1', '1.1', '1.1')",
                    list(enumerate(times, start=1)))
    con.commit()
    con.close()


def test_id_range_on_text_times_with_and_without_fraction(sqlite_url: str) -> None:
    _hand_made(sqlite_url, "TEXT", ["2026-01-01 10:00:00", "2026-01-01 10:00:00.000000",
                                    "2026-01-01 10:00:00.250000", "2026-01-01 10:00:01"])
    at = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
    with open_source(sqlite_url, timezone="UTC") as src:
        assert [r.eventtime for r in src.read_after(0, 10)] == [
            at, at, at + timedelta(microseconds=250000), at + timedelta(seconds=1)]
        assert src.id_range(at, at) == (1, 2)
        assert src.id_range(at + timedelta(microseconds=1), at + timedelta(microseconds=999999)) == (3, 3)
        assert src.id_range(at + timedelta(microseconds=250000), at + timedelta(seconds=1)) == (3, 4)


@pytest.mark.parametrize("column_type, times", [
    ("INTEGER", [1767261600, 1767261601, 1767261602]),
    ("REAL", [1767261600.0, 1767261600.75, 1767261602.0]),
])
def test_id_range_on_epoch_numbers(sqlite_url: str, column_type: str, times: list[Any]) -> None:
    _hand_made(sqlite_url, column_type, times)
    at = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
    with open_source(sqlite_url, timezone="Europe/Moscow") as src:
        rows = src.read_after(0, 10)
        assert rows[0].eventtime == at and rows[0].eventtime.utcoffset() == timedelta(hours=3)
        assert src.id_range(at, at + timedelta(seconds=1)) == (1, 2)
        assert src.id_range(at + timedelta(microseconds=1), at + timedelta(seconds=5)) == (2, 3)
