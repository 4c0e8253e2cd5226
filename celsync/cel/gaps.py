"""When the reader may move past a hole in the id sequence (SPEC §3, ``gap_grace_seconds``).

Auto-increment ids are handed out at INSERT and become visible at COMMIT, so a reader can see
id 11 before id 10 commits (several Asterisks writing, slow transactions). Moving the cursor
past 10 then would lose it forever. Holes are also normal for good (rollbacks, failed
inserts, purged rows), so a hole cannot block forever either: it is passed once it has stayed
a hole for the grace period. Pure: the caller passes the clocks in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

from celsync.model import CelRow


class GapTracker:
    """Decides, poll after poll, which rows read after ``position`` may be processed now.

    Guarantees (property-tested): a row is released at most once, rows are released in
    increasing id order, and no row that was passed in is ever skipped. The one row a live
    reader cannot wait for is one that commits more than the grace period after its id was
    taken: its hole has been passed by then (``reprocess`` picks such rows up).

    In ``reprocess`` mode the period is history, so the pipeline uses ``grace_seconds=0``:
    every hole is passed at once.
    """

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        # held row id -> since when (monotonic) the ids between the position and it are known
        # to be missing: the first poll that read it, or any row above it, showed that.
        self._hole_since: dict[int, float] = {}

    def release(
        self, position: int, rows: Sequence[CelRow], now: float, wall_now: datetime
    ) -> tuple[list[CelRow], int]:
        """The rows that may be processed now, and the new position (highest released id).

        ``rows`` is what ``read_after(position, limit)`` returned (every row with an id above
        ``position``, ascending). A row is released when it directly follows the position or
        the previous released row, or when the hole below it may be passed: the hole has been
        seen for ``grace_seconds`` (``now``, a monotonic clock) or the row after it is already
        older than ``grace_seconds`` by ``wall_now`` (aware) — a hole under old rows is
        permanent (deleted or never committed). Rows after a hole that must still be waited
        for are held back; the caller reads them again on its next poll.
        """
        if any(a.id > b.id for a, b in zip(rows, rows[1:])):
            rows = sorted(rows, key=lambda r: r.id)
        grace = self.grace_seconds
        known = self._hole_since
        # A read returns every committed id below its last row, so a hole below a row has
        # existed at least since the first poll that read that row or any row above it.
        since = [known.get(r.id, now) for r in rows]
        for i in range(len(since) - 2, -1, -1):
            if since[i + 1] < since[i]:
                since[i] = since[i + 1]

        released: list[CelRow] = []
        expected = position + 1
        held = len(rows)
        for i, row in enumerate(rows):
            if row.id < expected:
                continue  # at or below the position: released before
            if row.id > expected and not (
                now - since[i] >= grace or (wall_now - row.eventtime).total_seconds() >= grace
            ):
                held = i
                break
            released.append(row)
            expected = row.id + 1
        self._hole_since = {rows[i].id: since[i] for i in range(held, len(rows))}
        return released, expected - 1
