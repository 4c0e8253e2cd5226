"""CRM backlog benchmark: how fast a backlog drains into Bitrix24 and Kommo under their limits.

    python -m bench.crm_backlog [-n 2000]

For each CRM: ``n`` call records (the corpus mix: about half answered with a recording) are
enqueued in a fresh state DB, and the real sink drains them through the real delivery
engine into a fake CRM on 127.0.0.1 that enforces the published limits — Bitrix24 a leaky
bucket of 50 draining at 2 requests/s (503 beyond), Kommo 7 requests/s (429 beyond). The
rate is records / wall time of the drain. The "steady" rate leaves out the start-up burst
(Bitrix24 lets 50 requests through at once; the sink uses 40 of them), which is what a
backlog much larger than ``n`` converges to. Violations (requests the fake refused for the
limit) and duplicates must both be 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from celsync.config import Bitrix24SinkConfig, KommoSinkConfig
from celsync.delivery import DeliveryEngine
from celsync.sinks.base import Sink
from celsync.sinks.bitrix24 import Bitrix24Sink
from celsync.sinks.kommo import KommoSink
from celsync.state.store import DELIVERED, Pending, StateStore
from tests.fakes.bitrix24 import FakeBitrix24
from tests.fakes.kommo import FakeKommo
from tests.fakes.records import PHONES, records
from tests.fakes.server import ThreadedServer, most_in_window

RECORDINGS = "https://pbx.example.com/rec/{recording_id}"


def _drain(sink_factory: Callable[[str], Sink], server: ThreadedServer, recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Enqueue ``recs`` for one sink in a fresh state DB and time one delivery pass."""
    with tempfile.TemporaryDirectory(prefix="celsync-bench-") as tmp:
        store = StateStore(f"sqlite:///{Path(tmp) / 'state.sqlite'}")
        store.ensure_ready()
        sink = sink_factory(server.url)
        try:
            store.commit("bench", None, [sink.name], [Pending(r["key"], r["call_id"], r) for r in recs])
            engine = DeliveryEngine(store, [sink])
            engine.recover()
            started = time.monotonic()
            engine.deliver_due()
            elapsed = time.monotonic() - started
            delivered = store.counts(sink.name)[sink.name][DELIVERED]
        finally:
            sink.close()
            store.close()
    return {"records": len(recs), "delivered": delivered, "seconds": round(elapsed, 2),
            "calls_per_s": round(delivered / elapsed, 1)}


def bitrix24(recs: list[dict[str, Any]]) -> dict[str, Any]:
    fake = FakeBitrix24(rate=2.0, capacity=50)

    def sink(url: str) -> Sink:
        return Bitrix24Sink(Bitrix24SinkConfig(
            type="bitrix24", webhook_url=f"{url}{fake.base_url_path}", users={"101": 7}, default_user=1,
            recording_url=RECORDINGS,
        ))

    with ThreadedServer(fake) as server:
        out = _drain(sink, server, recs)
    batches = [e for e in fake.log if e.method == "batch"]
    burst = 40  # the sink's default client-side burst
    steady = batches[burst:]
    if len(steady) > 1:
        calls = sum(e.commands.count("telephony.externalcall.finish") for e in steady[1:])
        out["steady_calls_per_s"] = round(calls / (steady[-1].t - steady[0].t), 1)
    out.update(
        limit="leaky bucket 50, drains 2 req/s",
        requests=len(fake.log),
        commands_per_request=round(sum(len(e.commands) for e in batches) / max(1, len(batches)), 1),
        peak_bucket_level=round(max((e.level for e in fake.log), default=0.0), 1),
        violations=len(fake.limit_violations()),
        duplicates=len(fake.duplicates()),
        recordings_attached=len(fake.attachments),
    )
    return out


def kommo(recs: list[dict[str, Any]]) -> dict[str, Any]:
    fake = FakeKommo(contacts={p: ("contacts", 500 + i) for i, p in enumerate(PHONES)}, rate=7.0, burst=7)

    def sink(url: str) -> Sink:
        return KommoSink(KommoSinkConfig(
            type="kommo", base_url=url, token=fake.token, users={"101": 11}, default_user=10,
            recording_url=RECORDINGS,
        ))

    with ThreadedServer(fake) as server:
        out = _drain(sink, server, recs)
    out.update(
        limit="7 req/s",
        requests=len(fake.log),
        most_requests_in_1s=most_in_window([e.t for e in fake.log]),
        violations=len(fake.throttled()),
        duplicates=len(fake.duplicates()),
    )
    return out


def run(n: int = 2000) -> dict[str, Any]:
    """Both CRMs, one after the other, on the same ``n`` records."""
    recs = records(n)
    recorded = sum(1 for r in recs if r["recording_id"])
    return {
        "records": n,
        "with_recording": recorded,
        "bitrix24": bitrix24(recs),
        "kommo": kommo(recs),
        "targets": {"bitrix24_calls_per_s": 40, "kommo_calls_per_s": 300},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="backlog size in call records (default 2000)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    logging.getLogger("celsync").setLevel(logging.ERROR)  # the default-user fallback is expected here
    result = run(args.n)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"CRM backlog: {result['records']} records, {result['with_recording']} with a recording")
    for crm in ("bitrix24", "kommo"):
        r = result[crm]
        target = result["targets"][f"{crm}_calls_per_s"]
        steady = f", steady {r['steady_calls_per_s']} calls/s" if "steady_calls_per_s" in r else ""
        print(f"  {crm:9} {r['calls_per_s']:7.1f} calls/s{steady} (target >= {target}) | "
              f"{r['delivered']}/{r['records']} in {r['seconds']} s, {r['requests']} requests under "
              f"{r['limit']}, {r['violations']} limit violations, {r['duplicates']} duplicates")


if __name__ == "__main__":
    main()
