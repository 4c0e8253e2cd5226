"""The delivery engine against a real state DB and file-backed sinks, on an injected clock."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from celsync.config import JsonlSinkConfig
from celsync.delivery import Backoff, DeliveryEngine, decide, describe
from celsync.metrics import Metrics
from celsync.sinks.base import Outcome, Result, Sink
from celsync.sinks.jsonl import JsonlSink
from celsync.state.store import (
    DEAD, DELIVERED, PENDING, RETRYING, UNKNOWN, Cursor, Item, StateStore,
)
from tests.delivery.support import FileSink, Step, rec, states


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Crash(BaseException):
    """Stands for the process dying mid-send: nothing after the raise runs."""


@pytest.fixture
def store(sqlite_url: str) -> Iterator[StateStore]:
    s = StateStore(sqlite_url)
    s.ensure_ready()
    yield s
    s.close()


def engine(store: StateStore, *sinks: Sink, clock: Clock, seed: int = 7, **kw: object) -> DeliveryEngine:
    return DeliveryEngine(store, sinks, clock=clock, rng=random.Random(seed), **kw)  # type: ignore[arg-type]


def keys(sink: FileSink) -> list[str]:
    return [line["key"] for line in sink.lines()]


def wait_for(cond, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_each_record_is_delivered_once(store: StateStore, tmp_path: Path) -> None:
    sink = FileSink("f", tmp_path / "f.jsonl")
    metrics = Metrics()
    eng = engine(store, sink, clock=Clock(), metrics=metrics)
    recs = [rec("a/1"), rec("b/1"), rec("c/1")]
    store.commit("src", Cursor(3, 3), ["f"], recs)
    assert eng.deliver_due()["f"].delivered == 3
    assert eng.deliver_due()["f"].delivered == 0
    assert store.commit("src", Cursor(3, 3), ["f"], recs).unchanged == 3
    eng.deliver_due()
    assert keys(sink) == ["a/1", "b/1", "c/1"]
    assert states(store, "f") == {DELIVERED: 3} and eng.pending_total() == 0
    assert metrics.registry.get_sample_value("celsync_deliveries_total", {"sink": "f"}) == 3
    assert metrics.registry.get_sample_value("celsync_queue_depth", {"sink": "f"}) == 0


def test_backoff_is_exponential_with_full_jitter_and_a_cap() -> None:
    b, rng = Backoff(base=5, cap=900, minimum=1), random.Random(3)
    for attempts in (1, 2, 3, 8, 40):
        ceiling = min(900, 5 * 2 ** (attempts - 1))
        draws = [b.delay(attempts, rng) for _ in range(200)]
        assert all(1 <= d <= max(1, ceiling) for d in draws)
        assert len(set(draws)) > 100  # jitter, not a fixed schedule
    assert all(b.delay(1, rng, retry_after=300) >= 300 for _ in range(50))


def test_retry_waits_for_backoff_and_honours_retry_after(store: StateStore, tmp_path: Path) -> None:
    sink = FileSink("f", tmp_path / "f.jsonl")
    sink.script["a/1"] = [Step(Outcome.RETRY, error="503 busy"), Step(Outcome.RETRY, retry_after=120, error="429")]
    clock = Clock(1000.0)
    eng = engine(store, sink, clock=clock, seed=42)
    same = random.Random(42)
    store.commit("src", Cursor(1, 1), ["f"], [rec("a/1")])

    assert eng.deliver_due()["f"].retrying == 1
    first = store.next_wakeup("f", clock.t)
    assert first == pytest.approx(1000.0 + max(1.0, same.uniform(0, 5)))
    assert store.status()["sinks"]["f"]["last_error"] == "503 busy"
    clock.t = first - 0.01
    eng.deliver_due()
    assert len(sink.sent) == 1  # not due yet

    clock.t = first
    assert eng.deliver_due()["f"].retrying == 1
    second = store.next_wakeup("f", clock.t)
    assert second == pytest.approx(first + 120)  # jitter (<= 10 s) below the floor retry_after
    clock.t = second - 1
    eng.deliver_due()
    assert len(sink.sent) == 2

    clock.t = second
    assert eng.deliver_due()["f"].delivered == 1
    assert keys(sink) == ["a/1"] and len(sink.sent) == 3


def test_retry_horizon_turns_failures_into_a_dead_letter(store: StateStore, tmp_path: Path) -> None:
    sink = FileSink("f", tmp_path / "f.jsonl")
    sink.script["a/1"] = [Step(Outcome.RETRY, error="503 busy")] * 100
    clock = Clock(0.0)
    metrics = Metrics()
    eng = engine(store, sink, clock=clock, metrics=metrics, horizons={"f": 60.0})
    store.commit("src", Cursor(1, 1), ["f"], [rec("a/1")])
    eng.deliver_due()
    while (nxt := store.next_wakeup("f", clock.t)) is not None:
        clock.t = nxt
        eng.deliver_due()
    [dl] = store.dead_letters("f")
    assert dl.key == "a/1" and dl.first_failure == 0.0 and dl.attempts == len(sink.sent) >= 2
    assert dl.last_error.startswith(f"gave up after {dl.attempts} attempts") and dl.last_error.endswith("503 busy")
    assert metrics.registry.get_sample_value("celsync_dead_letters", {"sink": "f"}) == 1
    assert metrics.registry.get_sample_value("celsync_retry_depth", {"sink": "f"}) == 0
    assert metrics.registry.get_sample_value(
        "celsync_delivery_failures_total", {"sink": "f", "outcome": "dead"}) == 1


def test_dead_outcome_then_dead_letter_retry(store: StateStore, tmp_path: Path) -> None:
    sink = FileSink("f", tmp_path / "f.jsonl")
    sink.script["a/1"] = [Step(Outcome.DEAD, error="400 invalid phone number")]
    eng = engine(store, sink, clock=Clock())
    store.commit("src", Cursor(2, 2), ["f"], [rec("a/1"), rec("b/1")])
    stats = eng.deliver_due()["f"]
    assert (stats.dead, stats.delivered, stats.error) == (1, 1, "400 invalid phone number")
    assert [d.key for d in store.dead_letters()] == ["a/1"]
    assert store.retry_dead("f") == [("f", "a/1")]
    assert eng.deliver_due()["f"].delivered == 1
    assert sorted(keys(sink)) == ["a/1", "b/1"] and store.dead_letters() == []


def test_disabled_sink_stops_only_itself_until_re_enabled(store: StateStore, tmp_path: Path) -> None:
    crm, log = FileSink("crm", tmp_path / "crm.jsonl"), FileSink("log", tmp_path / "log.jsonl")
    calls: list[int] = []
    crm.on_send = lambda batch: calls.append(len(batch))
    crm.disabled = "403 Forbidden: the token was revoked"
    eng = engine(store, crm, log, clock=Clock())
    store.commit("src", Cursor(3, 3), ["crm", "log"], [rec("a/1"), rec("b/1"), rec("c/1")])
    stats = eng.deliver_due()
    assert stats["crm"].disabled == "403 Forbidden: the token was revoked"
    assert stats["log"].delivered == 3 and keys(log) == ["a/1", "b/1", "c/1"]
    assert store.disabled_reason("crm") == "403 Forbidden: the token was revoked"

    store.commit("src", Cursor(4, 4), ["crm", "log"], [rec("d/1")])
    eng.deliver_due()
    assert calls == [3] and keys(log)[-1] == "d/1"  # nothing more went to crm
    assert store.dead_letters() == [] and states(store, "crm") == {UNKNOWN: 3, PENDING: 1}

    crm.disabled = None
    assert store.enable_sink("crm") is not None
    eng.deliver_due()
    assert sorted(k for k, _ in crm.reconciled) == ["a/1", "b/1", "c/1"]  # asked before resending
    assert sorted(keys(crm)) == ["a/1", "b/1", "c/1", "d/1"] and states(store, "crm") == {DELIVERED: 4}


def test_a_slow_sink_never_delays_another(store: StateStore, tmp_path: Path) -> None:
    slow, fast = FileSink("slow", tmp_path / "slow.jsonl"), FileSink("fast", tmp_path / "fast.jsonl")
    slow.gate = threading.Event()
    eng = engine(store, slow, fast, clock=Clock())
    eng.recover()
    store.commit("src", Cursor(2, 2), ["slow", "fast"], [rec("a/1"), rec("b/1")])
    done: dict = {}
    worker = threading.Thread(target=lambda: done.update(eng.deliver_due()))
    worker.start()
    wait_for(lambda: len(fast.lines()) == 2, "the fast sink's records")
    assert slow.lines() == [] and worker.is_alive()  # fast finished while slow is still stuck
    slow.gate.set()
    worker.join(timeout=30)
    assert done["slow"].delivered == 2 and done["fast"].delivered == 2


def test_a_sink_that_cannot_resume_holds_back_only_itself(store: StateStore, tmp_path: Path) -> None:
    out = tmp_path / "later" / "calls.jsonl"
    jsonl = JsonlSink(JsonlSinkConfig(type="jsonl", path=str(out)))
    other = FileSink("other", tmp_path / "other.jsonl")
    eng = engine(store, jsonl, other, clock=Clock())
    store.commit("src", Cursor(1, 1), ["jsonl", "other"], [rec("a/1")])
    stats = eng.deliver_due()
    assert stats["other"].delivered == 1 and stats["jsonl"].delivered == 0
    assert "cannot resume" in stats["jsonl"].error and "directory must exist" in stats["jsonl"].error
    assert store.status()["sinks"]["jsonl"]["last_error"] == stats["jsonl"].error
    out.parent.mkdir()  # the operator fixes it; the next pass resumes the sink
    assert eng.deliver_due()["jsonl"].delivered == 1
    assert [json.loads(line)["key"] for line in out.read_text().splitlines()] == ["a/1"]
    jsonl.close()


def test_a_raising_sink_is_recorded_reconciled_and_redacted(store: StateStore, tmp_path: Path) -> None:
    broken, ok = FileSink("broken", tmp_path / "b.jsonl"), FileSink("ok", tmp_path / "ok.jsonl")
    broken.fail_with = ConnectionError(
        "HTTPSConnectionPool(host='x.bitrix24.ru', port=443): Max retries exceeded with url: "
        "/rest/1/s3cr3tcode/telephony.externalcall.register.json")
    clock = Clock()
    eng = engine(store, broken, ok, clock=clock)
    store.commit("src", Cursor(2, 2), ["broken", "ok"], [rec("a/1"), rec("b/1")])
    stats = eng.deliver_due()
    assert stats["ok"].delivered == 2 and stats["broken"].unknown == 2
    error = store.status()["sinks"]["broken"]["last_error"]
    assert error.startswith("ConnectionError") and "s3cr3tcode" not in error
    clock.t += 10_000  # past both jittered retries
    assert eng.deliver_due()["broken"].delivered == 2
    assert sorted(k for k, _ in broken.reconciled) == ["a/1", "b/1"]
    assert sorted(keys(broken)) == ["a/1", "b/1"]


def test_unknown_outcome_is_reconciled_before_anything_is_resent(store: StateStore, tmp_path: Path) -> None:
    sink = FileSink("f", tmp_path / "f.jsonl")
    sink.script["a/1"] = [Step(Outcome.UNKNOWN, write=True, error="read timeout")]  # it did arrive
    sink.script["b/1"] = [Step(Outcome.UNKNOWN, write=False, error="read timeout")]  # it did not
    clock = Clock()
    eng = engine(store, sink, clock=clock)
    store.commit("src", Cursor(2, 2), ["f"], [rec("a/1"), rec("b/1")])
    assert eng.deliver_due()["f"].unknown == 2
    clock.t += 10_000
    stats = eng.deliver_due()["f"]
    assert stats.reconciled == 2 and stats.delivered == 2
    assert [k for k, _, _ in sink.sent] == ["a/1", "b/1", "b/1"]
    assert sorted(keys(sink)) == ["a/1", "b/1"]


def test_a_failing_reconcile_sends_nothing_in_its_batch(store: StateStore, tmp_path: Path) -> None:
    sink = FileSink("f", tmp_path / "f.jsonl")
    sink.script["a/1"] = [Step(Outcome.UNKNOWN, error="read timeout")]
    clock = Clock()
    eng = engine(store, sink, clock=clock)
    store.commit("src", Cursor(1, 1), ["f"], [rec("a/1")])
    eng.deliver_due()
    clock.t += 10_000
    store.commit("src", Cursor(2, 2), ["f"], [rec("b/1")])
    batches: list[list[str]] = []
    sink.on_send = lambda batch: batches.append([d.key for d in batch])
    sink.fail_reconcile_with = TimeoutError("status query timed out")
    stats = eng.deliver_due()["f"]
    assert batches == [["b/1"]]  # b/1 waited for a batch of its own, after the failed reconcile
    assert stats.unknown == 1 and stats.delivered == 1 and states(store, "f") == {UNKNOWN: 1, DELIVERED: 1}
    clock.t += 10_000
    assert eng.deliver_due()["f"].delivered == 1 and sorted(keys(sink)) == ["a/1", "b/1"]


def test_crash_mid_send_is_reconciled_after_restart(store: StateStore, tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    first = FileSink("f", path)

    def write_two_then_die(batch) -> None:
        for d in batch[:2]:
            first._write(d)
        raise Crash()

    first.on_send = write_two_then_die
    store.commit("src", Cursor(4, 4), ["f"], [rec("a/1"), rec("b/1"), rec("c/1"), rec("d/1")])
    with pytest.raises(Crash):
        engine(store, first, clock=Clock()).deliver_due()
    assert states(store, "f") == {"inflight": 4}

    restarted, second = StateStore(store.url), FileSink("f", path)
    eng = engine(restarted, second, clock=Clock())
    eng.recover()
    assert sorted(second.reconciled) == [("a/1", 1), ("b/1", 1), ("c/1", 1), ("d/1", 1)]
    assert states(restarted, "f") == {DELIVERED: 2, PENDING: 2}
    eng.deliver_due()
    assert [k for k, _, _ in second.sent] == ["c/1", "d/1"]
    assert sorted(keys(second)) == ["a/1", "b/1", "c/1", "d/1"]
    restarted.close()


def test_per_call_order_is_kept_while_an_earlier_item_retries(store: StateStore, tmp_path: Path) -> None:
    sink = FileSink("f", tmp_path / "f.jsonl")
    sink.script["c/1"] = [Step(Outcome.RETRY, error="503")]
    clock = Clock()
    eng = engine(store, sink, clock=clock)
    store.commit("src", Cursor(4, 4), ["f"], [rec("c/1"), rec("c/2"), rec("c/3"), rec("d/1")])
    eng.deliver_due()
    assert [k for k, _, _ in sink.sent] == ["c/1", "d/1"]  # d/1 is another call: not held back
    eng.deliver_due()
    assert len(sink.sent) == 2
    clock.t = store.next_wakeup("f", clock.t)
    eng.deliver_due()
    assert [k for k, _, _ in sink.sent] == ["c/1", "d/1", "c/1", "c/2", "c/3"]
    assert keys(sink) == ["d/1", "c/1", "c/2", "c/3"]


def test_a_change_while_inflight_is_delivered_after_the_old_version(store: StateStore, tmp_path: Path) -> None:
    sink = FileSink("f", tmp_path / "f.jsonl")
    eng = engine(store, sink, clock=Clock())
    store.commit("src", Cursor(1, 1), ["f"], [rec("a/1", duration=10)])

    def reopen_call(batch) -> None:
        if batch[0].version == 1:  # late CEL rows re-open the call while v1 is on the wire
            store.commit("src", Cursor(2, 2), ["f"], [rec("a/1", duration=42)])

    sink.on_send = reopen_call
    assert eng.deliver_due()["f"].delivered == 2
    assert sink.sent == [("a/1", 1, False), ("a/1", 2, True)]
    assert [(line["version"], line["record"]["duration"]) for line in sink.lines()] == [(1, 10), (2, 42)]


def test_workers_deliver_on_wake_and_stop(store: StateStore, tmp_path: Path) -> None:
    sink = FileSink("f", tmp_path / "f.jsonl")
    eng = DeliveryEngine(store, [sink], idle_seconds=30.0)
    stop = threading.Event()
    threads = eng.start(stop)
    try:
        store.commit("src", Cursor(1, 1), ["f"], [rec("a/1")])
        eng.wake()
        wait_for(lambda: keys(sink) == ["a/1"], "the worker to deliver after wake()")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)


def _item(**kw: object) -> Item:
    base = dict(id=1, sink="s", key="k", call_id="c", version=1, fingerprint="f", record={}, uncertain=False,
                attempts=0, first_failure=None, last_error=None, previously_delivered=False)
    return Item(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("outcome, reconciling, state, uncertain, attempts", [
    (Outcome.DELIVERED, False, DELIVERED, False, 0),
    (Outcome.RETRY, False, RETRYING, False, 3),
    (Outcome.UNKNOWN, False, UNKNOWN, True, 3),
    (Outcome.DEAD, False, DEAD, False, 3),
    (Outcome.RETRY, True, PENDING, False, 2),  # reconcile: not there, send now, no attempt counted
    (Outcome.DELIVERED, True, DELIVERED, False, 0),
])
def test_decide(outcome: Outcome, reconciling: bool, state: str, uncertain: bool, attempts: int) -> None:
    t = decide(_item(attempts=2, first_failure=50.0), Result("k", outcome), reconciling=reconciling, now=100.0,
               horizon=3600.0, delay=lambda n, after: 7.0)
    assert (t.state, t.uncertain, t.attempts) == (state, uncertain, attempts)
    assert t.next_at == (107.0 if state in (RETRYING, UNKNOWN) else 0.0)


def test_decide_gives_up_at_the_horizon_keeping_uncertainty() -> None:
    t = decide(_item(attempts=5, first_failure=0.0), Result("k", Outcome.UNKNOWN, "timeout"), reconciling=False,
               now=7200.0, horizon=7200.0, delay=lambda n, after: 1.0)
    assert (t.state, t.uncertain, t.attempts) == (DEAD, True, 6)
    assert t.last_error == "gave up after 6 attempts over 2.0 h (retry horizon 2.0 h): timeout"


def test_describe_keeps_secrets_out_of_errors() -> None:
    text = describe(RuntimeError("POST https://bot:pa55@portal.example/rest/1/abc123/x?auth=tok failed"))
    assert text == "RuntimeError: POST https://portal.example/… failed"
