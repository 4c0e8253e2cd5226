"""Rows → global calls, and the decision that a call is over (SPEC §4).

A global call is every row whose linkedid or uniqueid is joined to the others: a channel
that moves to another linkedid (transfer, pickup) carries its uniqueid along and so joins
the two linkedids; transfer and pickup rows also name the other channel's uniqueid.

The assembler is pure state: it never reads a database or the clock. The caller passes the
time to decide with (the CEL clock, see ``celsync.pipeline``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterable

from celsync.calls.unionfind import UnionFind
from celsync.model import CelRow
from celsync.rules.legs import uniqueid_refs

_ENDED = frozenset({"HANGUP", "CHAN_END"})


@dataclass
class _OpenCall:
    rows: dict[int, CelRow] = field(default_factory=dict)
    linkedids: set[str] = field(default_factory=set)
    linkedid_ends: dict[str, datetime] = field(default_factory=dict)
    legs: set[str] = field(default_factory=set)
    ended_legs: set[str] = field(default_factory=set)
    first: tuple[int, str] = (0, "")  # (lowest row id, its linkedid): names the call
    first_time: datetime | None = None
    last_time: datetime | None = None
    stream_min_id: int | None = None  # lowest id that came from the cursor stream (not history)

    def add(self, row: CelRow, from_stream: bool) -> None:
        if row.id in self.rows:
            return
        self.rows[row.id] = row
        if not self.first[1] or row.id < self.first[0]:
            self.first = (row.id, row.linkedid)
        if from_stream and (self.stream_min_id is None or row.id < self.stream_min_id):
            self.stream_min_id = row.id
        self.linkedids.add(row.linkedid)
        self.legs.add(row.uniqueid)
        if row.eventtype in _ENDED:
            self.ended_legs.add(row.uniqueid)
        elif row.eventtype == "LINKEDID_END":
            self.linkedid_ends[row.linkedid] = row.eventtime
        if self.first_time is None or row.eventtime < self.first_time:
            self.first_time = row.eventtime
        if self.last_time is None or row.eventtime > self.last_time:
            self.last_time = row.eventtime

    def absorb(self, other: "_OpenCall") -> None:
        for row in other.rows.values():
            self.add(row, from_stream=False)
        if other.stream_min_id is not None and (self.stream_min_id is None or other.stream_min_id < self.stream_min_id):
            self.stream_min_id = other.stream_min_id


@dataclass(frozen=True)
class ClosedCall:
    """A call whose rows are complete enough to classify."""

    call_id: str
    rows: tuple[CelRow, ...]  # in id order
    reason: str  # why it was closed now, for logs and `explain`
    forced: bool = False  # closed by max_call_age, not because it ended


class Assembler:
    """Groups rows into open calls and hands out the ones that are over."""

    def __init__(self, settle_seconds: float, quiet_seconds: float, max_call_age: float) -> None:
        self._settle = timedelta(seconds=settle_seconds)
        self._quiet = timedelta(seconds=quiet_seconds)
        self._max_age = timedelta(seconds=max_call_age)
        self._ids = UnionFind()
        self._calls: dict[str, _OpenCall] = {}  # union-find root -> call

    @property
    def open_calls(self) -> int:
        return len(self._calls)

    def needs_history(self, row: CelRow) -> bool:
        """True when a row belongs to no open call yet is not the birth of a new one.

        That is a late row for a call already closed, or the middle of a call after a restart:
        the caller should fetch the call's earlier rows and ``add`` them first.
        """
        if row.linkedid in self._ids or row.uniqueid in self._ids:
            return False
        return not (row.eventtype == "CHAN_START" and row.uniqueid == row.linkedid)

    def add(self, rows: Iterable[CelRow], *, from_stream: bool = True) -> None:
        uf = self._ids
        for row in rows:
            refs = list(uniqueid_refs(row)) if row.extra else []
            if not refs and row.linkedid in uf and row.uniqueid in uf:
                # The common row: both ids already in one open call and nothing to join.
                root = uf.find(row.linkedid)
                if uf.find(row.uniqueid) == root:
                    self._calls[root].add(row, from_stream)
                    continue
            ids = [row.linkedid, row.uniqueid, *refs]
            roots = {self._ids.find(i) for i in ids if i in self._ids}
            calls = [self._calls.pop(r) for r in roots]
            for i in ids:
                self._ids.add(i)
            root = ids[0]
            for i in ids[1:]:
                root = self._ids.union(root, i)
            for r in roots:
                root = self._ids.union(root, r)
            call = max(calls, key=lambda c: len(c.rows)) if calls else _OpenCall()
            for other in calls:
                if other is not call:
                    call.absorb(other)
            call.add(row, from_stream)
            self._calls[self._ids.find(root)] = call

    def due(self, now: datetime) -> list[ClosedCall]:
        """Remove and return every call that is over at ``now`` (oldest first)."""
        closed: list[ClosedCall] = []
        for root, call in list(self._calls.items()):
            decision = self._decide(call, now)
            if decision is None:
                continue
            reason, forced = decision
            del self._calls[root]
            self._ids.remove_set(root)
            rows = tuple(sorted(call.rows.values(), key=lambda r: r.id))
            closed.append(ClosedCall(call.first[1], rows, reason, forced))
        closed.sort(key=lambda c: c.rows[0].id)
        return closed

    def _decide(self, call: _OpenCall, now: datetime) -> tuple[str, bool] | None:
        assert call.first_time is not None and call.last_time is not None
        if call.linkedids <= call.linkedid_ends.keys():
            ended = max(call.linkedid_ends.values())
            if now >= ended + self._settle:
                return "LINKEDID_END seen and settle time passed", False
            return None
        if call.legs <= call.ended_legs and now >= call.last_time + self._quiet:
            return "no LINKEDID_END, but every leg hung up and the call was quiet", False
        if now >= call.first_time + self._max_age:
            open_legs = len(call.legs - call.ended_legs)
            return f"still open after max_call_age ({open_legs} leg(s) never hung up)", True
        return None

    def low_water(self, position: int) -> int:
        """Highest id below which every streamed row belongs to a call already handed out."""
        lows = [c.stream_min_id for c in self._calls.values() if c.stream_min_id is not None]
        return min(lows) - 1 if lows else position

    def pending_ids(self) -> list[str]:
        """Call ids still open (for progress output and the end of a reprocess)."""
        return sorted(c.first[1] for c in self._calls.values())
