"""``celsync doctor``: verdicts from plain facts, and the checks against real databases."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import create_engine, text

from celsync.cel.columns import ColumnInfo, resolve
from celsync.cel.doctor import Finding, SourceFacts, evaluate, run_doctor
from celsync.config import SourceConfig
from celsync.model import CEL_COLUMNS
from tests.cel.helpers import load

NOW = datetime(2026, 11, 21, 22, 0, tzinfo=timezone.utc)
ALL_EVENTS = {e: 10 for e in ("CHAN_START", "CHAN_END", "HANGUP", "ANSWER", "APP_START", "APP_END",
                              "BRIDGE_ENTER", "BRIDGE_EXIT", "LINKEDID_END")}


def facts(**over: Any) -> SourceFacts:
    base = SourceFacts(
        table="cel", url="sqlite:///cel.sqlite", zone=timezone.utc,
        columns=resolve("cel", [ColumnInfo(c, "text") for c in CEL_COLUMNS], {}),
        degraded_reason=None, indexed=frozenset({"id", "linkedid", "uniqueid", "eventtime"}),
        max_id=1000, sampled=1000, events=ALL_EVENTS, malformed_extra=0, unusable=0,
        newest_eventtime=NOW - timedelta(seconds=5), naive_times=True, db_now=NOW, db_utc_offset=None,
    )
    return dataclasses.replace(base, **over)


def by_check(findings: list[Finding], check: str) -> list[Finding]:
    return [f for f in findings if f.check == check]


def levels(findings: list[Finding]) -> set[str]:
    return {f.level for f in findings}


def test_healthy_source_is_all_ok() -> None:
    findings = evaluate(facts())
    assert levels(findings) == {"ok"}
    assert {f.check for f in findings} == {"table", "columns", "extra", "indexes", "events", "clock", "lag"}


def test_missing_events() -> None:
    events = {k: v for k, v in ALL_EVENTS.items() if k not in ("LINKEDID_END", "BRIDGE_ENTER", "APP_START")}
    found = by_check(evaluate(facts(events=events)), "events")
    assert [(f.level, f.message.split(" among")[0]) for f in found] == [
        ("warn", "no LINKEDID_END"), ("error", "no BRIDGE_ENTER"), ("warn", "no APP_START")]
    app = found[2]
    assert "`apps=all` is not a wildcard on Asterisk 22" in app.message
    assert app.fix and "apps=dial,queue" in app.fix


def test_too_few_rows_for_event_checks() -> None:
    (finding,) = by_check(evaluate(facts(sampled=10, events={"CHAN_START": 10})), "events")
    assert finding.level == "warn" and "too few" in finding.message


def test_indexes() -> None:
    found = by_check(evaluate(facts(indexed=frozenset())), "indexes")
    assert [(f.level, f.message.split(":")[0]) for f in found] == [
        ("error", "no index on id"), ("warn", "no index on linkedid"),
        ("warn", "no index on uniqueid"), ("warn", "no index on eventtime")]
    assert found[3].fix == "CREATE INDEX cel_eventtime_idx ON cel (eventtime)"


def test_degraded_and_truncated_extra() -> None:
    (finding,) = by_check(evaluate(facts(degraded_reason="degraded status mode: no extra")), "extra")
    assert finding.level == "warn" and finding.message == "degraded status mode: no extra"
    (finding,) = by_check(evaluate(facts(malformed_extra=7)), "extra")
    assert finding.level == "warn" and finding.message.startswith("7 of the newest 1000 rows")


def test_eventtime_ahead_of_the_database_clock() -> None:
    """Asterisk writes Moscow time, the config says UTC: rows look 3 h in the future."""
    (finding,) = by_check(evaluate(facts(newest_eventtime=NOW + timedelta(hours=3, seconds=-4))), "clock")
    assert finding.level == "error" and "3h00m ahead" in finding.message
    assert finding.fix and "UTC+03:00" in finding.fix


def test_whole_hours_old_is_suspicious() -> None:
    (finding,) = by_check(evaluate(facts(newest_eventtime=NOW - timedelta(hours=2, seconds=20))), "clock")
    assert finding.level == "warn" and "2h00m old" in finding.message
    (finding,) = by_check(evaluate(facts(newest_eventtime=NOW - timedelta(hours=2, minutes=13))), "clock")
    assert finding.level == "ok"


def test_database_zone_differs_from_configured_zone() -> None:
    moscow_now = (NOW - timedelta(seconds=5)).astimezone(ZoneInfo("Europe/Moscow"))
    found = by_check(evaluate(facts(newest_eventtime=moscow_now, db_utc_offset=timedelta(0))), "clock")
    assert [f.level for f in found] == ["ok", "warn"]
    assert "UTC+00:00 but source.timezone" in found[1].message
    found = by_check(evaluate(facts(db_utc_offset=timedelta(0))), "clock")
    assert [f.level for f in found] == ["ok"]


def test_cursor_lag() -> None:
    found = by_check(evaluate(facts(cursor_id=900, rows_behind=100,
                                    first_unread_eventtime=NOW - timedelta(minutes=30))), "lag")
    assert found[0].level == "warn" and found[0].message == "cursor at id 900: 100 rows (30m) behind"
    found = by_check(evaluate(facts(cursor_id=5000)), "lag")
    assert found[0].level == "error" and "beyond the highest id 1000" in found[0].message


def test_doctor_on_the_corpus(db_url: str, corpus_rows: list[dict[str, Any]]) -> None:
    load(db_url, "stock", corpus_rows)
    findings = run_doctor(SourceConfig(url=db_url, timezone="UTC"), cursor_id=corpus_rows[100]["id"])
    assert levels(by_check(findings, "events")) == {"ok"}
    assert levels(by_check(findings, "indexes")) == {"ok"}
    assert levels(by_check(findings, "extra")) == {"ok"}
    (lag,) = by_check(findings, "lag")
    assert lag.message.startswith(f"cursor at id {corpus_rows[100]['id']}: {len(corpus_rows) - 101} rows")


def test_doctor_on_the_documented_postgres_schema(
    postgres_url: str, corpus_rows: list[dict[str, Any]]
) -> None:
    """No extra, no primary key, no index; apps=all gave no APP rows."""
    rows = [r for r in corpus_rows if r["eventtype"] not in ("APP_START", "APP_END")]
    load(postgres_url, "noextra", rows)
    findings = run_doctor(SourceConfig(url=postgres_url, timezone="UTC"))
    assert [f.level for f in by_check(findings, "indexes")] == ["error", "warn", "warn", "warn"]
    (extra,) = by_check(findings, "extra")
    assert extra.level == "warn" and "no extra column" in extra.message
    events = by_check(findings, "events")
    assert [f.message.split(" among")[0] for f in events] == ["no APP_START"]


def test_doctor_sees_a_wrong_timezone(sqlite_url: str, corpus_rows: list[dict[str, Any]]) -> None:
    """Fresh rows written in Moscow wall time, read as UTC."""
    shift = datetime.now(timezone.utc) - corpus_rows[-1]["eventtime"]
    fresh = [dict(r, eventtime=r["eventtime"] + shift) for r in corpus_rows]
    load(sqlite_url, "stock", fresh, tz="Europe/Moscow")
    (clock,) = by_check(run_doctor(SourceConfig(url=sqlite_url, timezone="UTC")), "clock")
    assert clock.level == "error" and "ahead of the database clock" in clock.message
    assert clock.fix and "UTC+03:00" in clock.fix
    (clock,) = by_check(run_doctor(SourceConfig(url=sqlite_url, timezone="Europe/Moscow")), "clock")
    assert clock.level == "ok"


def test_doctor_reports_an_unusable_source(sqlite_url: str, mariadb_url: str) -> None:
    (finding,) = run_doctor(SourceConfig(url=sqlite_url))
    assert finding.level == "error" and "does not exist" in finding.message
    engine = create_engine(mariadb_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE cel (id INT PRIMARY KEY, eventtype VARCHAR(30))"))
    engine.dispose()
    (finding,) = run_doctor(SourceConfig(url=mariadb_url))
    assert finding.level == "error" and "lacks required column(s) eventtime, uniqueid" in finding.message
