"""The delivery engine: moves ledger items to their sinks, exactly once as far as the sink
lets us know, with retries, backoff, dead letters and per-call order.

For every batch: claim (items inflight, committed BEFORE sending) -> reconcile the items whose
last send may have arrived -> send the rest -> record every verdict together with the sink's
``commit_state()`` in one transaction. A crash anywhere leaves items inflight; ``recover``
turns them into "unknown" and asks the sink (``reconcile``) before anything is sent again.

The verdicts are a pure function (``decide``) of the item, the sink's answer and the clock,
so the policy is tested without any I/O.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, TypeVar

from celsync.metrics import Metrics
from celsync.sinks.base import Delivery, Outcome, Result, Sink, SinkDisabled
from celsync.state.store import (
    DEAD, DELIVERED, INFLIGHT, PENDING, RETRYING, UNKNOWN, Item, StateStore, Transition,
)

T = TypeVar("T")

DEFAULT_HORIZON = 48 * 3600.0
_NO_RESULT = "the sink returned no result for this record"
_DEFAULT_ERROR = {
    Outcome.RETRY: "the destination asked to retry later",
    Outcome.UNKNOWN: "the outcome is unknown (timeout or interrupted send)",
    Outcome.DEAD: "the destination will not accept this record",
}
_STATS_FIELD = {DELIVERED: "delivered", RETRYING: "retrying", UNKNOWN: "unknown", DEAD: "dead"}
_URL = re.compile(r"\b([a-z][a-z0-9+.-]*://)(?:[^/@\s'\"]*@)?([^/\s'\"]+)[^\s'\"]*", re.I)
_URL_PATH = re.compile(r"(\burl: )\S+")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter; ``retry_after`` from the destination is a floor."""

    base: float = 5.0
    cap: float = 900.0
    minimum: float = 1.0  # never due again within the same pass

    def delay(self, attempts: int, rng: random.Random, retry_after: float | None = None) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(max(attempts - 1, 0), 30))
        return max(self.minimum, rng.uniform(0.0, ceiling), retry_after or 0.0)


@dataclass
class DeliveryStats:
    """What one pass did for one sink."""

    batches: int = 0
    delivered: int = 0
    retrying: int = 0
    unknown: int = 0
    dead: int = 0
    reconciled: int = 0  # items decided by ``sink.reconcile`` (delivered or cleared to resend)
    disabled: str | None = None  # why the sink is disabled, if it is
    error: str | None = None  # the last failure seen in this pass

    @property
    def failed(self) -> int:
        return self.retrying + self.unknown + self.dead


def redact(text: str) -> str:
    """Keep only scheme and host of URLs in an error: webhook URLs carry secrets in their path."""
    return _URL_PATH.sub(r"\1<redacted>", _URL.sub(r"\1\2/…", text))


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {redact(str(exc))}" if str(exc) else type(exc).__name__


def _human(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def decide(
    item: Item, result: Result, *, reconciling: bool, now: float, horizon: float,
    delay: Callable[[int, float | None], float],
) -> Transition:
    """The ledger verdict for one item given the sink's answer (pure).

    ``delay(attempts, retry_after)`` gives the backoff. A reconcile that finds the record
    missing (RETRY) makes it due at once: the wait was spent before the reconcile.
    """
    o = result.outcome
    if o is Outcome.DELIVERED:
        return Transition(DELIVERED, False, 0, None, 0.0, None, result.remote_id)
    if o is Outcome.RETRY and reconciling:
        return Transition(PENDING, False, item.attempts, item.first_failure, 0.0, item.last_error)
    error = result.error or _DEFAULT_ERROR[o]
    attempts = item.attempts + 1
    first = item.first_failure if item.first_failure is not None else now
    uncertain = o is Outcome.UNKNOWN
    if o is Outcome.DEAD:
        return Transition(DEAD, False, attempts, first, 0.0, error)
    if now - first >= horizon:
        return Transition(
            DEAD, uncertain, attempts, first, 0.0,
            f"gave up after {attempts} attempts over {_human(now - first)} "
            f"(retry horizon {_human(horizon)}): {error}",
        )
    state = UNKNOWN if uncertain else RETRYING
    return Transition(state, uncertain, attempts, first, now + delay(attempts, result.retry_after), error)


def _delivery(item: Item) -> Delivery:
    return Delivery(
        sink=item.sink, key=item.key, version=item.version, fingerprint=item.fingerprint,
        record=item.record, previously_delivered=item.previously_delivered,
    )


class DeliveryEngine:
    """Drives every sink's ledger items; one failing sink never holds back another."""

    def __init__(
        self,
        store: StateStore,
        sinks: Sequence[Sink],
        horizons: Mapping[str, float] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        log: logging.Logger | None = None,
        backoff: Backoff = Backoff(),
        metrics: Metrics | None = None,
        idle_seconds: float = 5.0,
    ) -> None:
        self.store = store
        self.sinks: dict[str, Sink] = {}
        for sink in sinks:
            if sink.name in self.sinks:
                raise ValueError(f"two sinks are named {sink.name!r}: give one of them a distinct 'name'")
            self.sinks[sink.name] = sink
        self._horizons = {name: (horizons or {}).get(name, DEFAULT_HORIZON) for name in self.sinks}
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._log = log or logging.getLogger(__name__)
        self._backoff = backoff
        self._metrics = metrics or Metrics()
        self._idle = idle_seconds
        self._locks = {name: threading.Lock() for name in self.sinks}
        self._wakes = {name: threading.Event() for name in self.sinks}
        self._dirty: set[str] = set(self.sinks)  # sinks to restore before their next batch
        self._recovered = False

    # -- start-up ------------------------------------------------------------------------

    def recover(self) -> None:
        """Give every sink its committed state, then reconcile whatever was inflight when the
        previous process stopped, before anything is sent."""
        def one(name: str) -> None:
            with self._locks[name]:
                sink = self.sinks[name]
                stats = DeliveryStats()
                ids = self._restore(name, stats) or []
                for i in range(0, len(ids), sink.batch_size):
                    items = self.store.claim(name, sink.batch_size, self._clock(), ids=ids[i : i + sink.batch_size])
                    if items:
                        self._run_batch(name, items, stats)
                if ids:
                    self._log.warning(
                        "%s: %d records were in flight when celsync last stopped; the sink "
                        "confirmed %d, %d will be sent again, %d are still unknown",
                        name, len(ids), stats.delivered, stats.reconciled - stats.delivered, stats.unknown,
                    )

        self._each_sink(list(self.sinks), one)
        self._recovered = True

    def _restore(self, name: str, stats: DeliveryStats) -> list[int] | None:
        """Hand the sink its committed state and turn what was left inflight into "unknown";
        returns those ids, or None (recorded as the sink's error) if the sink cannot resume."""
        sink = self.sinks[name]
        state = self.store.load_sink_state(name)
        try:
            sink.restore(state)
            baseline = sink.commit_state()
        except Exception as exc:  # this sink's problem (a path, a server): the others go on
            stats.error = f"cannot resume: {describe(exc)}"
            self._log.error("%s: %s; nothing is sent to it until this works", name, stats.error)
            self.store.note_error(name, stats.error)
            return None
        # make the restored state durable before the first send: a crash inside the very
        # first batch must find a length (or the like) to cut back to
        self.store.finish(name, [], now=self._clock(), sink_state=baseline)
        ids = self.store.reset_inflight(name)
        self._dirty.discard(name)
        return ids

    # -- delivering ----------------------------------------------------------------------

    def deliver_due(self, sink: str | None = None, *, max_batches: int | None = None) -> dict[str, DeliveryStats]:
        """One pass over the items due now, sinks side by side. A sink's failures are recorded
        in the ledger, not raised; only a failing state DB raises."""
        if sink is not None and sink not in self.sinks:
            raise ValueError(f"no sink named {sink!r}; configured: {', '.join(self.sinks)}")
        if not self._recovered:
            self.recover()
        names = [sink] if sink is not None else list(self.sinks)
        return self._each_sink(names, lambda name: self._drain(name, max_batches))

    def _drain(self, name: str, max_batches: int | None) -> DeliveryStats:
        sink = self.sinks[name]
        stats = DeliveryStats()
        with self._locks[name]:
            if name in self._dirty and self._restore(name, stats) is None:
                return stats
            start = self._clock()  # items re-scheduled during the pass wait for the next one
            while max_batches is None or stats.batches < max_batches:
                items = self.store.claim(name, sink.batch_size, start)
                if not items:
                    break
                self._run_batch(name, items, stats)
            stats.disabled = self.store.disabled_reason(name)
            self._update_gauges(name, stats.disabled)
        return stats

    def _run_batch(self, name: str, items: list[Item], stats: DeliveryStats) -> None:
        sink = self.sinks[name]
        unsure = [i for i in items if i.uncertain]
        sure = [i for i in items if not i.uncertain]
        verdicts: list[tuple[Item, Transition]] = []
        disabled: str | None = None
        raised = False
        if unsure:
            answers, disabled, raised = self._ask(name, sink.reconcile, unsure)
            verdicts += self._judge(name, unsure, answers, disabled, reconciling=True)
            stats.reconciled += sum(1 for _, t in verdicts if t.state in (DELIVERED, PENDING))
        if sure:
            if not raised:
                answers, disabled, raised = self._ask(name, sink.send, sure)
                verdicts += self._judge(name, sure, answers, disabled, reconciling=False)
            else:  # reconcile failed: send nothing in this batch, so that a restore undoes no send
                verdicts += [(i, Transition(PENDING, False, i.attempts, i.first_failure, 0.0, i.last_error))
                             for i in sure]
        self._record(name, items, verdicts, disabled, raised)
        stats.batches += 1
        for _, t in verdicts:
            field = _STATS_FIELD.get(t.state)
            if field is not None:
                setattr(stats, field, getattr(stats, field) + 1)
            if t.state != DELIVERED and t.last_error:
                stats.error = t.last_error

    def _ask(
        self, name: str, call: Callable[[Sequence[Delivery]], list[Result]], items: list[Item]
    ) -> tuple[dict[str, Result], str | None, bool]:
        """Call ``send`` or ``reconcile``: (results by key, disabled reason, whether it raised)."""
        try:
            results = call([_delivery(i) for i in items])
        except SinkDisabled as exc:
            reason = redact(str(exc)) or "the destination refused celsync"
            self._log.error(
                "%s: disabled: %s. Nothing more goes to it until `celsync deadletters retry --sink %s`",
                name, reason, name,
            )
            return {}, reason, True
        except Exception as exc:  # a sink bug or an unexpected network error: outcome unknown
            error = describe(exc)
            self._log.warning("%s: batch of %d failed, outcome unknown: %s", name, len(items), error)
            return {i.key: Result(i.key, Outcome.UNKNOWN, error) for i in items}, None, True
        return {r.key: r for r in results}, None, False

    def _judge(
        self, name: str, items: list[Item], answers: Mapping[str, Result], disabled: str | None,
        *, reconciling: bool,
    ) -> list[tuple[Item, Transition]]:
        now = self._clock()
        horizon = self._horizons[name]
        out = []
        for item in items:
            if disabled is not None:  # not this record's fault: no attempt counted, ask first later
                out.append((item, Transition(UNKNOWN, True, item.attempts, item.first_failure, 0.0, disabled)))
                continue
            result = answers.get(item.key) or Result(item.key, Outcome.UNKNOWN, _NO_RESULT)
            t = decide(item, result, reconciling=reconciling, now=now, horizon=horizon, delay=self._delay)
            out.append((item, t))
            self._count(name, item, t)
        return out

    def _delay(self, attempts: int, retry_after: float | None) -> float:
        return self._backoff.delay(attempts, self._rng, retry_after)

    def _count(self, name: str, item: Item, t: Transition) -> None:
        if t.state == DELIVERED:
            self._metrics.deliveries.labels(name).inc()
        elif t.state in (RETRYING, UNKNOWN, DEAD):
            self._metrics.failures.labels(name, t.state if t.state != RETRYING else "retry").inc()
            log = self._log.error if t.state == DEAD else self._log.warning
            log("%s: %s v%d %s: %s", name, item.key, item.version,
                "is a dead letter" if t.state == DEAD else f"attempt {t.attempts} failed", t.last_error)

    def _record(
        self, name: str, items: list[Item], verdicts: list[tuple[Item, Transition]],
        disabled: str | None, raised: bool,
    ) -> None:
        """Commit the verdicts with the sink's state; on failure undo what the sink wrote."""
        sink = self.sinks[name]
        try:
            if raised:  # a half-done batch: keep the last good state and cut what was written
                self.store.finish(name, verdicts, now=self._clock(), disable=disabled)
                sink.restore(self.store.load_sink_state(name))
            else:
                self.store.finish(name, verdicts, now=self._clock(), sink_state=sink.commit_state())
        except Exception:
            self._dirty.add(name)  # restore the sink before its next batch
            try:
                self.store.release(items, self._clock() + self._backoff.base)
            except Exception as exc:
                self._log.error("%s: cannot mark the batch unknown either: %s", name, describe(exc))
            raise

    # -- background workers ----------------------------------------------------------------

    def start(self, stop: threading.Event) -> list[threading.Thread]:
        """One worker thread per sink (``celsync run``); they end when ``stop`` is set."""
        if not self._recovered:
            self.recover()
        threads = [
            threading.Thread(target=self._worker, args=(name, stop), name=f"celsync-sink-{name}", daemon=True)
            for name in self.sinks
        ]
        for t in threads:
            t.start()
        return threads

    def wake(self) -> None:
        """New work was enqueued: let the workers look now rather than at their next timer."""
        for event in self._wakes.values():
            event.set()

    def pending_total(self) -> int:
        """Records still owed to this engine's sinks (not delivered, not dead)."""
        return self.store.pending_total(list(self.sinks))

    def _worker(self, name: str, stop: threading.Event) -> None:
        wake = self._wakes[name]
        failures = 0
        while not stop.is_set():
            wake.clear()
            try:
                self._drain(name, None)
                failures = 0
                wait = self._next_wait(name)
            except Exception as exc:  # the state DB is down: keep trying, slower and slower
                failures += 1
                wait = min(60.0, 2.0**failures)
                self._log.error("%s: delivery pass failed (%s); retrying in %.0f s", name, describe(exc), wait)
                self._pause(wait, stop)
                continue
            deadline = time.monotonic() + wait
            while not stop.is_set() and not wake.is_set() and (left := deadline - time.monotonic()) > 0:
                wake.wait(min(0.5, left))

    def _next_wait(self, name: str) -> float:
        now = self._clock()
        nxt = self.store.next_wakeup(name, now)
        return self._idle if nxt is None else min(self._idle, max(0.0, nxt - now))

    def _pause(self, seconds: float, stop: threading.Event) -> None:
        while seconds > 0 and not stop.is_set():
            self._sleep(min(0.5, seconds))
            seconds -= 0.5

    # -- helpers -------------------------------------------------------------------------

    def _each_sink(self, names: list[str], fn: Callable[[str], T]) -> dict[str, T]:
        """Run ``fn`` per sink, in parallel when there are several, so a slow sink waits alone."""
        if len(names) == 1:
            return {names[0]: fn(names[0])}
        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="celsync-deliver") as pool:
            futures = {name: pool.submit(fn, name) for name in names}
        return {name: f.result() for name, f in futures.items()}

    def _update_gauges(self, name: str, disabled: str | None) -> None:
        counts = self.store.counts(name, states=(PENDING, INFLIGHT, RETRYING, UNKNOWN, DEAD))[name]
        m = self._metrics
        m.queue_depth.labels(name).set(counts[PENDING] + counts[INFLIGHT])
        m.retry_depth.labels(name).set(counts[RETRYING] + counts[UNKNOWN])
        m.dead_letters.labels(name).set(counts[DEAD])
        m.sink_disabled.labels(name).set(1 if disabled else 0)
