"""GapTracker: holes in the id sequence are waited for, then passed; no row twice, none lost."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from celsync.cel.gaps import GapTracker
from celsync.model import CelRow

BASE = datetime(2026, 11, 21, 22, 0, tzinfo=timezone.utc)


def row(i: int, at: float = 0.0) -> CelRow:
    """Row ``i`` whose eventtime is ``at`` seconds after BASE."""
    return CelRow(id=i, eventtype="ANSWER", eventtime=BASE + timedelta(seconds=at),
                  uniqueid="u", linkedid="l")


def ids(rows: list[CelRow]) -> list[int]:
    return [r.id for r in rows]


def wall(t: float) -> datetime:
    return BASE + timedelta(seconds=t)


def test_contiguous_rows_are_released() -> None:
    gaps = GapTracker(10)
    released, position = gaps.release(0, [row(1), row(2), row(3)], 0.0, wall(0))
    assert (ids(released), position) == ([1, 2, 3], 3)
    assert gaps.release(3, [], 1.0, wall(1)) == ([], 3)


def test_hole_is_waited_for_then_filled() -> None:
    gaps = GapTracker(10)
    released, position = gaps.release(0, [row(1), row(3), row(4)], 0.0, wall(0))
    assert (ids(released), position) == ([1], 1)
    released, position = gaps.release(1, [row(3), row(4)], 5.0, wall(5))
    assert (ids(released), position) == ([], 1)
    released, position = gaps.release(1, [row(2), row(3), row(4)], 6.0, wall(6))
    assert (ids(released), position) == ([2, 3, 4], 4)


def test_hole_is_passed_after_the_grace_period() -> None:
    gaps = GapTracker(10)
    gaps.release(0, [row(1), row(3)], 0.0, wall(0))
    assert gaps.release(1, [row(3), row(5, at=9.9)], 9.9, wall(9.9)) == ([], 1)
    released, position = gaps.release(1, [row(3), row(5, at=9.9)], 10.0, wall(10))
    assert (ids(released), position) == ([3], 3)  # hole 4 was first seen at 9.9: wait on
    assert gaps.release(3, [row(5, at=9.9)], 19.8, wall(19.8)) == ([], 3)
    released, position = gaps.release(3, [row(5, at=9.9)], 19.9, wall(19.9))
    assert (ids(released), position) == ([5], 5)


def test_partly_filled_hole_keeps_its_age() -> None:
    """Ids 2-4 missing since t=0; 2 arrives at t=8: 3-4 are still due at t=10, not t=18."""
    gaps = GapTracker(10)
    gaps.release(0, [row(1), row(5)], 0.0, wall(0))
    released, position = gaps.release(1, [row(2), row(5)], 8.0, wall(8))
    assert (ids(released), position) == ([2], 2)
    released, position = gaps.release(2, [row(5)], 10.0, wall(10))
    assert (ids(released), position) == ([5], 5)


def test_hole_under_old_rows_is_permanent() -> None:
    """Rows read long after they were written (restart, backlog): their holes are history."""
    gaps = GapTracker(10)
    released, position = gaps.release(0, [row(1, at=0), row(4, at=1), row(9, at=50)], 0.0, wall(60))
    assert (ids(released), position) == ([1, 4, 9], 9)
    released, position = gaps.release(9, [row(11, at=45), row(13, at=59)], 1.0, wall(60))
    assert (ids(released), position) == ([11], 11)  # hole 12 lies under a fresh row: wait


def test_reprocess_passes_every_hole() -> None:
    released, position = GapTracker(0).release(100, [row(105), row(200)], 0.0, wall(0))
    assert (ids(released), position) == ([105, 200], 200)


def test_rows_at_or_below_the_position_are_not_released_again() -> None:
    gaps = GapTracker(10)
    released, position = gaps.release(2, [row(1), row(2), row(3), row(3)], 0.0, wall(0))
    assert (ids(released), position) == ([3], 3)


def test_unordered_input_is_ordered() -> None:
    released, position = GapTracker(10).release(0, [row(3), row(1), row(2)], 0.0, wall(0))
    assert (ids(released), position) == ([1, 2, 3], 3)


GRACE = 10.0

# One id per entry: (seconds after the previous id was taken, commit delay or None = never).
ids_strategy = st.lists(
    st.tuples(st.floats(0, 6, allow_nan=False),
              st.one_of(st.none(), st.floats(0, GRACE - 0.01, allow_nan=False))),
    min_size=1, max_size=40,
)
polls_strategy = st.lists(st.floats(0, 15, allow_nan=False), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(ids_strategy, polls_strategy, st.integers(1, 8))
def test_every_committed_row_is_released_once_in_order(
    plan: list[tuple[float, float | None]], poll_steps: list[float], limit: int
) -> None:
    """Rows commit out of id order (each within the grace period of taking its id) and some
    ids never commit. Whatever the poll times and batch size, every committed row comes out
    exactly once, in increasing id order."""
    taken, commits, t = {}, {}, 0.0
    for i, (step, delay) in enumerate(plan, start=1):
        t += step
        taken[i] = t
        if delay is not None:
            commits[i] = t + delay
    gaps = GapTracker(GRACE)
    position, now, out = 0, 0.0, []
    poll_times = []
    for step in poll_steps:
        now += step
        poll_times.append(now)
    # then keep polling until everything is through (the last commit is before t + GRACE)
    poll_times += [t + GRACE * k for k in range(1, len(plan) + 3)]
    for now in poll_times:
        visible = sorted(i for i, c in commits.items() if c <= now and i > position)[:limit]
        rows = [row(i, at=taken[i]) for i in visible]
        released, new_position = gaps.release(position, rows, now, wall(now))
        assert new_position >= position
        assert all(position < r.id <= new_position for r in released)
        out.extend(r.id for r in released)
        position = new_position
    assert out == sorted(commits)
