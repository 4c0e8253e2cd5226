"""The feed sinks driven by the real delivery engine and ledger: per-call order under retries,
Retry-After, 410, and a crash between XADD and the ledger write."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from celsync.config import RedisSinkConfig, WebhookSinkConfig
from celsync.delivery import DeliveryEngine
from celsync.sinks.base import Delivery, Sink
from celsync.sinks.redis_stream import RedisSink
from celsync.sinks.webhook import WebhookSink
from celsync.state.store import DELIVERED, Cursor, Pending, StateStore
from tests.feeds.feeds_support import SECRET, Planned, Receiver, make_record

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    s.ensure_ready()
    yield s
    s.close()


def enqueue(store: StateStore, sink: str, records: list[dict[str, Any]]) -> None:
    store.commit("cel", Cursor(1, 1), [sink], [Pending(r["key"], r["call_id"], r) for r in records])


def engine(store: StateStore, sink: Sink, clock: Clock) -> DeliveryEngine:
    return DeliveryEngine(store, [sink], clock=clock, rng=random.Random(4))


# call A has two records (a transfer: two agents), call B one
A1 = make_record(1)
A2 = make_record(1, sub_call_id="1716900000.2001", extension="102")
B = make_record(2)


def test_webhook_retries_keep_order_per_call_and_honour_retry_after(store: StateStore, receiver: Receiver) -> None:
    receiver.plan.append(Planned(429, {"Retry-After": "120"}))
    sink = WebhookSink(WebhookSinkConfig(type="webhook", url=receiver.url, secret=SECRET))
    enqueue(store, sink.name, [A1, A2, B])
    clock = Clock()
    e = engine(store, sink, clock)

    first = e.deliver_due()[sink.name]
    assert (first.delivered, first.retrying) == (1, 1)  # B went ahead; A2 waits behind A1
    clock.now = T0 + 60
    e.deliver_due()
    assert len(receiver.received) == 2  # Retry-After 120 s: nothing yet
    clock.now = T0 + 121
    e.deliver_due()

    sent = [(r.status, json.loads(r.body)["data"]["key"]) for r in receiver.received]
    assert sent == [(429, A1["key"]), (204, B["key"]), (204, A1["key"]), (204, A2["key"])]
    assert all(r.verified for r in receiver.received)
    assert store.counts(sink.name)[sink.name][DELIVERED] == 3


def test_webhook_410_disables_the_sink_in_the_ledger(store: StateStore, receiver: Receiver) -> None:
    receiver.plan.append(Planned(410))
    sink = WebhookSink(WebhookSinkConfig(type="webhook", url=receiver.url, secret=SECRET))
    enqueue(store, sink.name, [A1, B])
    clock = Clock()
    e = engine(store, sink, clock)

    stats = e.deliver_due()[sink.name]
    clock.now = T0 + 3600
    e.deliver_due()
    assert stats.disabled and "410 Gone" in stats.disabled
    assert store.disabled_reason(sink.name) == stats.disabled
    assert len(receiver.received) == 1  # nothing more goes to a disabled endpoint


def test_redis_retries_keep_order_per_call(store: StateStore, client: redis.Redis, stream: str) -> None:
    client.rpush(stream, "not a stream yet")  # every XADD fails with WRONGTYPE
    sink = RedisSink(RedisSinkConfig(type="redis", stream=stream, batch_size=1))
    enqueue(store, sink.name, [A1, A2, B])
    clock = Clock()
    e = engine(store, sink, clock)

    failed = e.deliver_due()[sink.name]
    assert (failed.retrying, failed.delivered) == (2, 0) and "WRONGTYPE" in failed.error
    client.delete(stream)
    clock.now = T0 + 3600
    e.deliver_due()

    keys = [f["key"] for _, f in client.xrange(stream)]
    assert sorted(keys) == sorted(r["key"] for r in (A1, A2, B))
    assert keys.index(A1["key"]) < keys.index(A2["key"])


def test_a_crash_between_xadd_and_the_ledger_write_sends_nothing_twice(
    store: StateStore, client: redis.Redis, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = RedisSinkConfig(type="redis", stream=stream)
    enqueue(store, cfg.sink_name, [A1, A2, B])
    # the process that crashed: it claimed the items and XADDed them, then died before `finish`
    items = store.claim(cfg.sink_name, 50, T0)
    assert [i.key for i in items] == [A1["key"], B["key"]]  # A2 waits behind A1
    RedisSink(cfg).send([Delivery(i.sink, i.key, i.version, i.fingerprint, i.record) for i in items])

    restarted = engine(store, RedisSink(cfg), Clock())
    with caplog.at_level(logging.WARNING, logger="celsync.delivery"):
        stats = restarted.deliver_due()[cfg.sink_name]

    assert "the sink confirmed 2, 0 will be sent again" in caplog.text  # reconciled at start-up
    assert stats.delivered == 1  # only A2 was still owed
    assert sorted(f["key"] for _, f in client.xrange(stream)) == sorted(r["key"] for r in (A1, A2, B))
    assert store.counts(cfg.sink_name)[cfg.sink_name][DELIVERED] == 3
