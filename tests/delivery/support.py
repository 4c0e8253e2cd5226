"""Test support for the state and delivery suites: ledger helpers and a file-backed sink.

``FileSink`` is a sink whose destination is a real file of JSON lines, with scriptable answers.

``script[key]`` is a list of ``Step``s consumed one per send of that key (then: delivered).
A step says what the destination does (write the line or not) and what the sink reports,
so "timed out but it arrived" (write + UNKNOWN) is as easy as "rejected" (no write + DEAD).
``reconcile`` reads the file, as a real sink would query its destination.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from celsync.sinks.base import Delivery, Outcome, Result, Sink, SinkDisabled
from celsync.state.store import Pending, StateStore


def rec(key: str, **extra: object) -> Pending:
    """A minimal record for ``key`` = "call/sub"."""
    call_id = key.split("/")[0]
    return Pending(key, call_id, {"key": key, "call_id": call_id, **extra})


def states(store: StateStore, sink: str) -> dict[str, int]:
    """The sink's ledger counts, without the zeros."""
    return {k: v for k, v in store.counts(sink)[sink].items() if v}


@dataclass(frozen=True)
class Step:
    outcome: Outcome
    write: bool = False
    retry_after: float | None = None
    error: str | None = None


class FileSink(Sink):
    def __init__(self, name: str, path: Path, batch_size: int = 10) -> None:
        self.name = name
        self.path = path
        self.batch_size = batch_size
        self.script: dict[str, list[Step]] = {}
        self.sent: list[tuple[str, int, bool]] = []  # (key, version, previously_delivered)
        self.reconciled: list[tuple[str, int]] = []
        self.fail_with: BaseException | None = None  # raised by the next send, then cleared
        self.fail_reconcile_with: BaseException | None = None  # the same for the next reconcile
        self.disabled: str | None = None  # while set, every send raises SinkDisabled
        self.on_send: Callable[[Sequence[Delivery]], None] | None = None
        self.gate: threading.Event | None = None  # send waits for it (a slow destination)

    def _write(self, d: Delivery) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"key": d.key, "version": d.version, "record": dict(d.record)}) + "\n")

    def lines(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines()]

    def send(self, batch: Sequence[Delivery]) -> list[Result]:
        if self.gate is not None:
            self.gate.wait(timeout=30)
        if self.on_send is not None:
            self.on_send(batch)
        if self.disabled is not None:
            raise SinkDisabled(self.disabled)
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc
        results = []
        for d in batch:
            self.sent.append((d.key, d.version, d.previously_delivered))
            steps = self.script.get(d.key)
            step = steps.pop(0) if steps else Step(Outcome.DELIVERED, write=True)
            if step.write:
                self._write(d)
            results.append(Result(d.key, step.outcome, step.error, step.retry_after))
        return results

    def reconcile(self, batch: Sequence[Delivery]) -> list[Result]:
        if self.fail_reconcile_with is not None:
            exc, self.fail_reconcile_with = self.fail_reconcile_with, None
            raise exc
        have = {(line["key"], line["version"]) for line in self.lines()}
        out = []
        for d in batch:
            self.reconciled.append((d.key, d.version))
            out.append(Result(d.key, Outcome.DELIVERED if (d.key, d.version) in have else Outcome.RETRY))
        return out
