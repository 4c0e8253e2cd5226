"""Child process of the JSONL crash test: enqueue records in chunks and deliver them through
the engine to a JSONL file, resuming from the state DB; the test SIGKILLs it at random.

usage: python jsonl_writer.py STATE_URL OUT_PATH N_RECORDS
Prints "ready" once recovered and "done" when everything is delivered.
"""

from __future__ import annotations

import sys

from celsync.config import JsonlSinkConfig
from celsync.delivery import DeliveryEngine
from celsync.sinks.jsonl import JsonlSink
from celsync.state.store import Cursor, Pending, StateStore

CHUNK = 25
PER_CALL = 3


def record(i: int) -> Pending:
    call = f"1716900000.{i // PER_CALL}"
    key = f"{call}/{call}{i % PER_CALL}"
    return Pending(key, call, {"key": key, "call_id": call, "sub_call_id": f"{call}{i % PER_CALL}",
                               "n": i, "external_number": "+79161234567", "note": "Ünïcode ✓"})


def main(url: str, out: str, n: int) -> None:
    store = StateStore(url)
    store.ensure_ready()
    sink = JsonlSink(JsonlSinkConfig(type="jsonl", path=out, batch_size=4))
    engine = DeliveryEngine(store, [sink])
    engine.recover()
    print("ready", flush=True)
    cursor = store.load_cursor("cel")
    for start in range(cursor.last_id if cursor else 0, n, CHUNK):
        end = min(n, start + CHUNK)
        store.commit("cel", Cursor(end, end), ["jsonl"], [record(i) for i in range(start, end)])
        engine.deliver_due(max_batches=3)
    while engine.pending_total():
        engine.deliver_due()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
