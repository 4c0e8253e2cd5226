"""The imperative shell: CEL source → assembler → rules → state outbox → sinks.

Everything with a side effect (the CEL database, the state database, the clock, the sinks)
is reached from here; what happens in between is pure (``celsync.calls``, ``celsync.rules``).

Exactly-once rests on one transaction: the records of the calls closed in a batch, any
quarantined rows and the new cursor are committed together (``StateStore.commit``). The
cursor's ``low_water`` is the id below which every streamed row belongs to a call already in
the outbox, so a restart resumes there, rebuilds the calls still open, and the ledger's
fingerprints turn the records it already has into no-ops.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Sequence

from celsync.calls.assembly import Assembler, ClosedCall
from celsync.cel.gaps import GapTracker
from celsync.cel.parse import usable
from celsync.cel.source import CelSource
from celsync.config import Config
from celsync.delivery import DeliveryEngine
from celsync.metrics import Metrics
from celsync.model import CelRow
from celsync.rules.classify import Interpretation, RulesContext, interpret
from celsync.sinks import build_sinks, horizons
from celsync.state.store import Cursor, Pending, Quarantined, StateStore

log = logging.getLogger("celsync")

#: Event types the rules understand; others are kept in the leg history and counted.
KNOWN_EVENTS = frozenset({
    "CHAN_START", "CHAN_END", "HANGUP", "ANSWER", "APP_START", "APP_END", "BRIDGE_ENTER",
    "BRIDGE_EXIT", "PARK_START", "PARK_END", "BLINDTRANSFER", "ATTENDEDTRANSFER", "USER_DEFINED",
    "LINKEDID_END", "PICKUP", "FORWARD", "LOCAL_OPTIMIZE", "LOCAL_OPTIMIZE_BEGIN", "STREAM_BEGIN",
    "STREAM_END", "DTMF",
})


@dataclass
class PassStats:
    """What one pass did; `celsync poll` prints it and exits non-zero on ``failed``."""

    rows: int = 0
    calls: int = 0
    records: int = 0
    enqueued: int = 0
    unchanged: int = 0
    quarantined: int = 0
    forced: int = 0
    failed_calls: int = 0
    delivered: int = 0
    delivery_failures: int = 0
    position: int = 0
    open_calls: int = 0
    unknown_events: Counter = field(default_factory=Counter)

    @property
    def failed(self) -> bool:
        return self.failed_calls > 0


class Pipeline:
    """One CEL source, one state DB, the configured sinks."""

    def __init__(
        self, config: Config, *, wall_clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.source = CelSource(config.source)
        if self.source.degraded:
            log.warning("degraded status mode: %s", self.source.degraded_reason)
        self.rules = RulesContext.from_config(config, degraded=self.source.degraded)
        self.store = StateStore(config.state.url)
        self.store.ensure_ready()
        self.sinks = build_sinks(config.sinks)
        self.metrics = Metrics()
        self.engine = DeliveryEngine(self.store, self.sinks, horizons(config.sinks), metrics=self.metrics)
        self._wall = wall_clock or (lambda: datetime.now(timezone.utc))
        self._monotonic = monotonic
        self.source_key = f"{config.source.url.split('://', 1)[0]}:{config.source.table}"
        pbx = config.pbx
        self.assembler = Assembler(pbx.settle_seconds, pbx.quiet_seconds, pbx.max_call_age)
        self.gaps = GapTracker(config.source.gap_grace_seconds)
        self.position = self._start_position()
        self.cel_clock: datetime | None = None
        self._recovered = False
        self._pending_quarantine: list[Quarantined] = []

    # ------------------------------------------------------------------ live polling
    def _start_position(self) -> int:
        cursor = self.store.load_cursor(self.source_key)
        if cursor is not None:
            return cursor.low_water
        if self.config.source.start_at == "end":
            start = self.source.max_id() or 0
            log.info("no cursor yet: starting at the end of the CEL table (id %d)", start)
            return start
        return 0

    def recover(self) -> None:
        """Settle deliveries a crash left in doubt; done once, before anything is sent."""
        if not self._recovered:
            self.engine.recover()
            self._recovered = True

    def poll(self, *, deliver: bool = True) -> PassStats:
        """Read everything there is now, close what is over, commit, deliver what is due."""
        self.recover()
        stats = PassStats()
        batch = self.config.source.batch_size
        while True:
            rows = self.source.read_after(self.position, batch)
            end_reached = len(rows) < batch
            released, new_position = self.gaps.release(self.position, rows, self._monotonic(), self._wall())
            self._ingest(released, stats)
            self.position = max(self.position, new_position)
            now = self._clock(end_reached or len(released) < len(rows))
            self._close(self.assembler.due(now), stats, cursor=self._cursor())
            if end_reached or len(released) < len(rows) or not released:
                break
        stats.position, stats.open_calls = self.position, self.assembler.open_calls
        self.metrics.open_calls.set(self.assembler.open_calls)
        if deliver:
            self._deliver(stats)
        return stats

    def _cursor(self) -> Cursor:
        return Cursor(last_id=self.position, low_water=self.assembler.low_water(self.position))

    def _clock(self, caught_up: bool) -> datetime:
        """The CEL clock: newest eventtime read; the wall clock once the table is drained."""
        now = self.cel_clock or self._wall()
        if caught_up:
            now = max(now, self._wall())
        return now

    def _ingest(self, rows: Iterable[CelRow], stats: PassStats, *, quarantine: bool = True) -> None:
        """Feed rows to the assembler; bad rows wait for the next commit's quarantine.

        A replay does not quarantine again what the live poll already kept.
        """
        for row in rows:
            stats.rows += 1
            if row.problems and quarantine:
                reason = "; ".join(row.problems)
                self._pending_quarantine.append(Quarantined(row.id, row.linkedid or None, reason, _row_dict(row)))
            if not usable(row):
                log.warning("CEL row %d skipped for the rules (kept in quarantine): %s",
                            row.id, "; ".join(row.problems))
                continue
            if row.eventtype not in KNOWN_EVENTS:
                stats.unknown_events[row.eventtype] += 1
            if self.cel_clock is None or row.eventtime > self.cel_clock:
                self.cel_clock = row.eventtime
            if self.assembler.needs_history(row):
                history = self.source.rows_for_calls([row.linkedid], [row.uniqueid], max_id=row.id - 1)
                self.assembler.add((r for r in history if usable(r)), from_stream=False)
            self.assembler.add([row])

    def _close(self, calls: Sequence[ClosedCall], stats: PassStats, *, cursor: Cursor | None,
               sinks: Sequence[str] | None = None, force: bool = False) -> None:
        """Classify closed calls and commit their records, quarantine and cursor at once."""
        pending: list[Pending] = []
        failed: list[Quarantined] = []
        for call in calls:
            stats.calls += 1
            if call.forced:
                stats.forced += 1
                log.warning("call %s closed without ending: %s", call.call_id, call.reason)
            try:
                result = interpret(call.call_id, call.rows, self.rules)
            except Exception as exc:  # a rule bug must not stop the other calls
                stats.failed_calls += 1
                log.exception("call %s: the rule engine failed; its rows are kept in quarantine", call.call_id)
                failed.extend(Quarantined(r.id, call.call_id, f"rule engine failed: {exc!r}", _row_dict(r))
                              for r in call.rows)
                continue
            for record in result.records:
                stats.records += 1
                pending.append(Pending(record.key, record.call_id, record.to_dict()))
        quarantine = self._take_quarantine() + failed
        stats.quarantined += len(quarantine)
        if cursor is None and not pending and not quarantine:
            return
        names = list(sinks) if sinks is not None else [s.name for s in self.sinks]
        committed = self.store.commit(self.source_key, cursor, names, pending, quarantine, force=force)
        stats.enqueued += committed.enqueued
        stats.unchanged += committed.unchanged
        self.metrics.records.inc(len(pending))
        if committed.enqueued:
            self.engine.wake()

    def _take_quarantine(self) -> list[Quarantined]:
        taken, self._pending_quarantine = self._pending_quarantine, []
        return taken

    def _deliver(self, stats: PassStats, sink: str | None = None) -> None:
        for per_sink in self.engine.deliver_due(sink).values():
            stats.delivered += per_sink.delivered
            stats.delivery_failures += per_sink.retrying + per_sink.unknown + per_sink.dead

    # ------------------------------------------------------------------ replay
    def reprocess(
        self, t_from: datetime, t_to: datetime, *, sinks: Sequence[str] | None = None, force: bool = False,
        dry_run: bool = False, progress: Callable[[int], None] | None = None,
    ) -> tuple[PassStats, list[Interpretation]]:
        """Every call with a row in [t_from, t_to], whole, through the same rules.

        Delivers only what is new or changed (``force`` re-sends everything, ``dry_run``
        commits and sends nothing and returns the interpretations). The live cursor is not
        touched.
        """
        stats = PassStats()
        span = self.source.id_range(t_from, t_to)
        out: list[Interpretation] = []
        if span is None:
            return stats, out
        lo, hi = span
        assembler = Assembler(self.config.pbx.settle_seconds, self.config.pbx.quiet_seconds,
                              self.config.pbx.max_call_age)
        live, self.assembler = self.assembler, assembler
        live_clock, self.cel_clock = self.cel_clock, None
        period = (t_from, t_to)
        try:
            position = lo - 1
            batch = self.config.source.batch_size
            while position < hi:
                rows = [r for r in self.source.read_after(position, batch) if r.id <= hi]
                if not rows:
                    break
                self._ingest(rows, stats, quarantine=False)
                if progress:
                    progress(rows[-1].id - position)
                position = rows[-1].id
                out += self._finish(assembler.due(self._clock(False)), period, stats, sinks, force, dry_run)
            # Calls still open at the period's end: read the rest of them, then decide.
            open_ids = assembler.pending_ids()
            if open_ids:
                rest = [r for r in self.source.rows_for_calls(open_ids, open_ids, max_id=None)
                        if r.id > hi and usable(r)]
                assembler.add(rest, from_stream=False)
                self.cel_clock = max([self.cel_clock or t_to, *(r.eventtime for r in rest)])
            # The input is complete: like a live poll that reached the end of the table, the
            # clock is now the wall clock (a call still going on right now stays open).
            end = max(t_to, self.cel_clock or t_to, self._wall())
            out += self._finish(assembler.due(end), period, stats, sinks, force, dry_run)
            for call_id in assembler.pending_ids():
                log.warning("call %s had not ended by %s (no LINKEDID_END, a leg still up): not delivered",
                            call_id, end.isoformat())
            stats.open_calls = assembler.open_calls
        finally:
            self.assembler, self.cel_clock = live, live_clock
        if not dry_run:
            self._deliver(stats)
        return stats, out

    def _finish(self, calls: Sequence[ClosedCall], period: tuple[datetime, datetime], stats: PassStats,
                sinks: Sequence[str] | None, force: bool, dry_run: bool) -> list[Interpretation]:
        """Classify and commit the closed calls with a row in the period.

        Only a dry run returns the interpretations (to print them): a delivering run keeps
        nothing of a call once it is committed, so memory follows the open calls, not the
        length of the period.
        """
        t_from, t_to = period
        chosen = [c for c in calls if any(t_from <= r.eventtime <= t_to for r in c.rows)]
        if dry_run:
            out = []
            for call in chosen:
                stats.calls += 1
                result = interpret(call.call_id, call.rows, self.rules)
                stats.records += len(result.records)
                out.append(result)
            return out
        self._close(chosen, stats, cursor=None, sinks=sinks, force=force)
        return []

    # ------------------------------------------------------------------ inspection
    def call_rows(self, call_id: str) -> list[CelRow]:
        """All rows of a call, following linkedid/uniqueid joins a few steps (for ``explain``)."""
        linkedids, uniqueids = {call_id}, {call_id}
        rows: dict[int, CelRow] = {}
        for _ in range(4):
            found = self.source.rows_for_calls(sorted(linkedids), sorted(uniqueids), max_id=None)
            new = {r.id: r for r in found if r.id not in rows}
            if not new:
                break
            rows.update(new)
            linkedids |= {r.linkedid for r in new.values() if r.linkedid}
            uniqueids |= {r.uniqueid for r in new.values() if r.uniqueid}
        return [rows[i] for i in sorted(rows)]

    def explain(self, call_id: str) -> Interpretation | None:
        rows = [r for r in self.call_rows(call_id) if usable(r)]
        if not rows:
            return None
        first = min(rows, key=lambda r: r.id)
        return interpret(first.linkedid, rows, self.rules)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.source.close()


def _row_dict(row: CelRow) -> dict:
    data = {k: getattr(row, k) for k in row.__slots__ if k not in ("extra", "problems")}
    data["eventtime"] = row.eventtime.isoformat() if row.eventtime else None
    data["extra"] = dict(row.extra)
    data["problems"] = list(row.problems)
    return data


def parse_when(value: str, zone) -> datetime:
    """An ISO-8601 date or datetime; naive values are read in the source's time zone."""
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 date or datetime (e.g. 2026-11-21 or 2026-11-21T10:00)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=zone)
    return dt


def period_end(value: str, zone) -> datetime:
    """``--to`` with a bare date means the whole of that day."""
    dt = parse_when(value, zone)
    if len(value.strip()) == 10:
        dt = dt + timedelta(days=1) - timedelta(microseconds=1)
    return dt
