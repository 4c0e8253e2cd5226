"""Both CRM sinks behind the real delivery engine and state DB: exactly once, end to end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from celsync.delivery import DeliveryEngine
from celsync.sinks.bitrix24 import Bitrix24Sink
from celsync.sinks.kommo import KommoSink
from celsync.state.store import DELIVERED, Pending, StateStore
from tests.crm.conftest import bitrix_config, kommo_config
from tests.fakes.records import records
from tests.fakes.server import most_in_window

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path):
    s = StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    s.ensure_ready()
    yield s
    s.close()


def enqueue(store: StateStore, recs, sinks, *, force: bool = False):
    return store.commit("cel", None, sinks, [Pending(r["key"], r["call_id"], r) for r in recs], force=force)


def delivered(store: StateStore, sink: str) -> int:
    return store.counts(sink)[sink][DELIVERED]


def test_backlog_once_then_rerun_and_reprocess_send_nothing_new(store, bitrix, kommo):
    (b_fake, b_srv), (k_fake, k_srv) = bitrix, kommo
    b_sink, k_sink = Bitrix24Sink(bitrix_config(b_fake, b_srv)), KommoSink(kommo_config(k_fake, k_srv))
    recs = records(400)
    enqueue(store, recs, [b_sink.name, k_sink.name])
    engine = DeliveryEngine(store, [b_sink, k_sink])
    stats = engine.deliver_due()
    assert stats["bitrix24"].delivered == stats["kommo"].delivered == 400
    assert {r["EXTERNAL_CALL_ID"] for r in b_fake.stats} == {r["key"] for r in recs} and b_fake.duplicates() == {}
    assert {n["params"]["uniq"] for n in k_fake.call_notes()} == {r["key"] for r in recs} and k_fake.duplicates() == {}
    assert b_fake.limit_violations() == [] and k_fake.throttled() == []
    assert most_in_window([e.t for e in k_fake.log]) <= 7

    requests = len(b_fake.log), len(k_fake.log)
    assert enqueue(store, recs, [b_sink.name, k_sink.name]).enqueued == 0  # a rerun: same records
    engine.deliver_due()
    assert (len(b_fake.log), len(k_fake.log)) == requests

    # reprocess --force: both look the calls up and store no second copy
    assert enqueue(store, recs[:60], [b_sink.name, k_sink.name], force=True).enqueued == 120
    engine.deliver_due()
    assert len(b_fake.stats) == 400 and b_fake.duplicates() == {}
    assert len(k_fake.call_notes()) == 400 and k_fake.duplicates() == {}
    assert delivered(store, "bitrix24") == delivered(store, "kommo") == 400


def test_crm_down_for_a_while_then_back_loses_nothing_and_holds_no_one_else(store, bitrix, kommo):
    (b_fake, b_srv), (k_fake, k_srv) = bitrix, kommo
    clock = Clock()
    b_sink, k_sink = Bitrix24Sink(bitrix_config(b_fake, b_srv)), KommoSink(kommo_config(k_fake, k_srv))
    engine = DeliveryEngine(store, [b_sink, k_sink], clock=clock)
    recs = records(120)
    enqueue(store, recs, [b_sink.name, k_sink.name])
    b_srv.stop()  # connection refused
    stats = engine.deliver_due()
    assert stats["kommo"].delivered == 120  # the other CRM is not held back
    assert stats["bitrix24"].delivered == 0 and stats["bitrix24"].retrying == 120
    b_srv.start()
    b_fake.down = True  # back, but its proxy answers 503 for a while
    clock.t += 3600
    assert engine.deliver_due()["bitrix24"].delivered == 0
    b_fake.down = False
    clock.t += 3600
    engine.deliver_due()
    assert delivered(store, "bitrix24") == 120 and len(b_fake.stats) == 120 and b_fake.duplicates() == {}


def test_timeouts_are_reconciled_not_resent(store, bitrix, kommo):
    (b_fake, b_srv), (k_fake, k_srv) = bitrix, kommo
    clock = Clock()
    b_sink = Bitrix24Sink(bitrix_config(b_fake, b_srv, timeout=0.3))
    k_sink = KommoSink(kommo_config(k_fake, k_srv, timeout=0.3))
    engine = DeliveryEngine(store, [b_sink, k_sink], clock=clock)
    recs = records(90)
    enqueue(store, recs, [b_sink.name, k_sink.name])
    b_fake.delay_next(1.0)
    k_fake.delay_next(1.0)
    stats = engine.deliver_due()
    assert stats["bitrix24"].unknown > 0 and stats["kommo"].unknown > 0
    clock.t += 3600
    stats = engine.deliver_due()
    assert stats["bitrix24"].reconciled > 0 and stats["kommo"].reconciled > 0
    assert delivered(store, "bitrix24") == delivered(store, "kommo") == 90
    assert len(b_fake.stats) == 90 and b_fake.duplicates() == {}
    assert len(k_fake.call_notes()) == 90 and k_fake.duplicates() == {}


def test_kommo_block_disables_the_sink_until_an_operator_retries(store, kommo):
    k_fake, k_srv = kommo
    k_sink = KommoSink(kommo_config(k_fake, k_srv))
    engine = DeliveryEngine(store, [k_sink])
    enqueue(store, records(10), [k_sink.name])
    k_fake.blocked = True
    stats = engine.deliver_due()
    assert stats["kommo"].disabled and "blocked" in stats["kommo"].disabled
    assert store.disabled_reason("kommo")
    k_fake.unblock()
    store.enable_sink("kommo")
    engine.deliver_due()
    assert delivered(store, "kommo") == 10 and len(k_fake.call_notes()) == 10


@pytest.mark.parametrize("crm", ["bitrix24", "kommo"])
def test_sigkill_during_a_batch_then_restart_leaves_no_duplicate(store, tmp_path, bitrix, kommo, crm):
    fake, server = bitrix if crm == "bitrix24" else kommo
    cfg = (bitrix_config if crm == "bitrix24" else kommo_config)(fake, server)
    recs = records(700)
    enqueue(store, recs, [crm])
    executed, release = fake.hold_next(after=2)  # the third request runs, its answer never arrives
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.crm.crash_worker", store.url, json.dumps(cfg.model_dump())],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        assert executed.wait(60), worker.stderr.read().decode() if worker.poll() is not None else "no request"
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        release.set()
        if worker.poll() is None:
            worker.kill()
    held_back = len(fake.stats) if crm == "bitrix24" else len(fake.call_notes())
    assert 0 < held_back < 700  # killed mid-backlog, with a batch the CRM stored but never confirmed
    sink = (Bitrix24Sink if crm == "bitrix24" else KommoSink)(cfg)
    engine = DeliveryEngine(store, [sink])
    engine.deliver_due()
    assert delivered(store, crm) == 700
    if crm == "bitrix24":
        assert len(fake.stats) == 700 and fake.duplicates() == {} and fake.limit_violations() == []
    else:
        assert len(fake.call_notes()) == 700 and fake.duplicates() == {} and fake.throttled() == []


def test_rate_limits_hold_over_a_long_drain(store, bitrix, kommo):
    """Scaled-up limits so that many more requests than the burst go out in a second or two;
    the fakes refuse anything beyond their limit, and refused nothing."""
    (b_fake, b_srv), (k_fake, k_srv) = bitrix, kommo
    b_fake.rate, b_fake.capacity = 100.0, 10
    k_fake.rate, k_fake.burst = 50.0, 5
    b_sink = Bitrix24Sink(bitrix_config(b_fake, b_srv, rate=100, burst=8, batch_size=3))  # one call a request
    k_sink = KommoSink(kommo_config(k_fake, k_srv, rate=50, batch_size=1))
    recs = records(90)
    enqueue(store, recs, [b_sink.name, k_sink.name])
    DeliveryEngine(store, [b_sink, k_sink]).deliver_due()
    assert delivered(store, "bitrix24") == delivered(store, "kommo") == 90
    assert len(b_fake.log) >= 90 and b_fake.limit_violations() == []
    assert max(e.level for e in b_fake.log) <= 10
    assert len(k_fake.log) == 90 and k_fake.throttled() == []
    assert most_in_window([e.t for e in k_fake.log]) <= 50
