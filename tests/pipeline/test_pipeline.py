"""The whole pipeline over real databases: corpus → records, poll boundaries, late rows, bad input."""

from __future__ import annotations

import json
import random
import sqlite3
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, text

from celsync.cel.schema import insert_rows, load_corpus
from celsync.config import load_config
from celsync.pipeline import Pipeline

from ..rules.corpus import mismatches, scenarios
from .helpers import celsync, make_cel, write_config


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _by_call(records):
    out = {}
    for r in records:
        out.setdefault(r["call_id"], []).append(SimpleNamespace(**r))
    return out


def _check_corpus(records):
    by_call = _by_call(records)
    for name, rows in scenarios().items():
        got = sorted(by_call.get(rows[0].linkedid, []), key=lambda r: r.answered_at or r.started_at)
        assert mismatches(name, got) == [], name


def test_corpus_through_poll_on_each_database(db_url, tmp_path):
    make_cel(db_url, load_corpus())
    out = tmp_path / "calls.jsonl"
    cfg = write_config(tmp_path / "c.yaml", db_url, f"sqlite:///{tmp_path / 's.sqlite'}",
                       [{"type": "jsonl", "path": str(out)}])
    pipeline = Pipeline(load_config(cfg))
    stats = pipeline.poll()
    pipeline.close()
    assert stats.rows == len(load_corpus()) and stats.open_calls == 0 and not stats.failed
    _check_corpus(_lines(out))


def test_freepbx_schema_on_mariadb(mariadb_url, tmp_path):
    """FreePBX's table: no peeraccount/userfield, whole-second datetime, extra varchar(512)."""
    make_cel(mariadb_url, load_corpus(), variant="freepbx")
    out = tmp_path / "calls.jsonl"
    cfg = write_config(tmp_path / "c.yaml", mariadb_url, f"sqlite:///{tmp_path / 's.sqlite'}",
                       [{"type": "jsonl", "path": str(out)}])
    pipeline = Pipeline(load_config(cfg))
    pipeline.poll()
    pipeline.close()
    _check_corpus(_lines(out))


def test_poll_boundaries_and_batch_sizes_do_not_change_records(tmp_path):
    """Rows arrive a few at a time and are read in odd batches: same records, each sent once."""
    rows = load_corpus()
    cel = f"sqlite:///{tmp_path / 'cel.sqlite'}"
    make_cel(cel, [])
    engine = create_engine(cel)
    out = tmp_path / "calls.jsonl"
    rng = random.Random(3)
    cfg = write_config(tmp_path / "c.yaml", cel, f"sqlite:///{tmp_path / 's.sqlite'}",
                       [{"type": "jsonl", "path": str(out)}], batch_size=7, gap_grace_seconds=0)
    pipeline = Pipeline(load_config(cfg))
    i = 0
    while i < len(rows):
        n = rng.randint(1, 60)
        insert_rows(engine, "cel", "stock", rows[i:i + n])
        i += n
        pipeline.config.source.batch_size = rng.randint(1, 50)
        pipeline.poll()
    pipeline.poll()
    pipeline.close()
    records = _lines(out)
    assert sorted(r["key"] for r in records) == sorted({r["key"] for r in records})
    _check_corpus(records)


def test_late_rows_reopen_a_delivered_call_and_only_it_is_sent_again(tmp_path):
    corpus = load_corpus()
    call = scenarios()["in_direct_answered"][0].linkedid
    late_kinds = {"ANSWER", "BRIDGE_ENTER", "BRIDGE_EXIT"}
    held = [r for r in corpus if r["linkedid"] == call and r["eventtype"] in late_kinds]
    first = [r for r in corpus if r not in held]
    cel = f"sqlite:///{tmp_path / 'cel.sqlite'}"
    make_cel(cel, first)
    out = tmp_path / "calls.jsonl"
    db = tmp_path / "calls.sqlite"
    cfg = write_config(tmp_path / "c.yaml", cel, f"sqlite:///{tmp_path / 's.sqlite'}",
                       [{"type": "jsonl", "path": str(out)}, {"type": "sqlite", "url": f"sqlite:///{db}"}])
    pipeline = Pipeline(load_config(cfg))
    pipeline.poll()
    before = _lines(out)
    (missed,) = [r for r in before if r["call_id"] == call]
    assert missed["answered"] is False and missed["sub_call_id"] == call

    # The same rows written late (new ids): the call is rebuilt from all its rows.
    top = max(r["id"] for r in corpus)
    insert_rows(create_engine(cel), "cel", "stock", [dict(r, id=top + 1 + i) for i, r in enumerate(held)])
    stats = pipeline.poll()
    pipeline.close()
    after = _lines(out)[len(before):]
    assert [r["call_id"] for r in after] == [call], "only the re-opened call is sent again"
    assert after[0]["answered"] is True and after[0]["extension"] == "101"
    assert stats.unchanged == 0
    with sqlite3.connect(db) as conn:
        keys = [k for (k,) in conn.execute("select key from calls where key like ?", (call + "/%",))]
    assert f"{call}/{after[0]['sub_call_id']}" in keys


def test_bad_input_is_quarantined_counted_and_never_stops_the_loop(tmp_path):
    corpus = load_corpus()
    busy = scenarios()["in_direct_busy"][0].linkedid
    ivr = scenarios()["in_ivr_abandoned"][0].linkedid
    rows = []
    for r in corpus:
        r = dict(r)
        if r["linkedid"] == busy and r["eventtype"] == "HANGUP" and "trunk" in r["channame"]:
            r["extra"] = r["extra"][:25]  # truncated by a short column
        if r["linkedid"] == ivr and r["eventtype"] == "LINKEDID_END":
            continue  # LINKEDID_END not enabled / lost
        rows.append(r)
    top = max(r["id"] for r in rows)
    t = rows[-1]["eventtime"]
    rows.append({**rows[0], "id": top + 1, "eventtype": "SOMETHING_NEW", "eventtime": t, "linkedid": busy,
                 "uniqueid": busy})
    rows.append({**rows[0], "id": top + 2, "eventtype": "HANGUP", "eventtime": t, "uniqueid": None,
                 "linkedid": None, "cid_num": None})
    cel = f"sqlite:///{tmp_path / 'cel.sqlite'}"
    make_cel(cel, rows)
    out = tmp_path / "calls.jsonl"
    cfg = write_config(tmp_path / "c.yaml", cel, f"sqlite:///{tmp_path / 's.sqlite'}",
                       [{"type": "jsonl", "path": str(out)}])
    pipeline = Pipeline(load_config(cfg))
    stats = pipeline.poll()
    assert stats.quarantined == 2 and stats.unknown_events["SOMETHING_NEW"] == 1
    quarantined = pipeline.store.quarantined()
    reasons = " | ".join(q.reason for q in quarantined)
    assert "extra" in reasons and "uniqueid" in reasons
    pipeline.close()
    records = {r["call_id"]: r for r in _lines(out)}
    assert records[busy]["result"] == 0 and records[busy]["answered"] is False  # no cause: unknown
    assert records[ivr]["missed_at"] == "ivr"  # closed by the quiet window instead
    assert len(records) == 14


def test_reprocess_period_dry_run_force_and_sink_choice(tmp_path):
    cel = f"sqlite:///{tmp_path / 'cel.sqlite'}"
    make_cel(cel, load_corpus())
    out, out2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    cfg = write_config(tmp_path / "c.yaml", cel, f"sqlite:///{tmp_path / 's.sqlite'}",
                       [{"type": "jsonl", "path": str(out)}, {"type": "jsonl", "name": "second", "path": str(out2)}])
    celsync(cfg, "poll")
    assert len(_lines(out)) == len(_lines(out2)) == 15

    period = ("--from", "2026-11-21", "--to", "2026-11-21")
    proc = celsync(cfg, "reprocess", *period)
    assert "0 queued" in proc.stderr or "(0 new" in proc.stderr
    assert len(_lines(out)) == 15  # nothing new

    rows = scenarios()["in_queue_abandoned"]
    one = ("--from", (rows[0].eventtime + timedelta(seconds=0.3)).isoformat(),
           "--to", (rows[0].eventtime + timedelta(seconds=0.6)).isoformat())  # one row of it
    dry = celsync(cfg, "reprocess", *one, "--dry-run")
    printed = [json.loads(line) for line in dry.stdout.splitlines()]
    assert [(r["call_id"], r["missed_at"]) for r in printed] == [(rows[0].linkedid, "queue")]
    assert len(_lines(out)) == 15

    celsync(cfg, "reprocess", *one, "--force", "--sink", "second")
    assert len(_lines(out)) == 15 and len(_lines(out2)) == 16
    assert _lines(out2)[-1]["call_id"] == rows[0].linkedid


def test_explain_and_status(tmp_path):
    cel = f"sqlite:///{tmp_path / 'cel.sqlite'}"
    make_cel(cel, load_corpus())
    cfg = write_config(tmp_path / "c.yaml", cel, f"sqlite:///{tmp_path / 's.sqlite'}",
                       [{"type": "jsonl", "path": str(tmp_path / 'a.jsonl')}])
    celsync(cfg, "poll")
    call = scenarios()["in_ivr_queue_answered"][0].linkedid
    shown = celsync(cfg, "explain", call).stdout
    assert "PJSIP/trunk-0000002a" in shown and "Local/101@from-queue-00000008;1" in shown
    assert f"record {call}/" in shown and "why:" in shown and "LOSE_RACE" in shown
    status = celsync(cfg, "status").stdout
    assert "last id 1110" in status and "delivered 15" in status
    missing = celsync(cfg, "explain", "no.such", check=False)
    assert missing.returncode != 0 and "no CEL rows" in missing.stderr
