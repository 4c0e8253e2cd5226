"""Missed dial attempts (SPEC §6.5): every extension that rang for a call and did not answer."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta

from celsync.model import Attempt
from celsync.rules.channels import ChannelRules
from celsync.rules.legs import Leg

_CAUSE_NAMES = {17: "USER_BUSY", 21: "CALL_REJECTED", 18: "NO_USER_RESPONSE", 19: "NO_ANSWER", 26: "LOSE_RACE"}
_NO_DEVICE_CAUSES = frozenset({3, 20, 27, 38, 44, 66})
_RACE_WINDOW = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class TimedAttempt:
    """An attempt with the moment it started, so the classifier can hand it to a record."""

    at: datetime
    attempt: Attempt


def find_attempts(
    legs: dict[str, Leg], caller: Leg, answered: set[str], queue_of: dict[str, str],
    channels: ChannelRules,
) -> list[TimedAttempt]:
    """Attempts for every unanswered extension leg, and for targets that never got a leg.

    ``queue_of`` maps a leg's uniqueid to the queue number it was rung for.
    """
    answer_times = [legs[u].answered for u in answered if legs[u].answered]
    index = _Index(legs, channels)
    found: list[TimedAttempt] = []
    rung: list[tuple[str, datetime]] = []  # (extension, created) of every extension leg
    for leg in legs.values():
        if leg.kind != "extension" or leg.uniqueid == caller.uniqueid or leg.created is None:
            continue
        rung.append((leg.extension or "", leg.created))
        if leg.uniqueid in answered or leg.picked_up_by:
            continue
        parent = index.parent(leg)
        queue = queue_of.get(leg.uniqueid) or (queue_of.get(parent.uniqueid) if parent else None)
        dial_type = _dial_type(leg, parent, queue, caller, index)
        end = leg.ended or leg.created
        ring = max(0, round((end - leg.created).total_seconds()))
        found.append(TimedAttempt(leg.created, Attempt(
            extension=leg.extension or "",
            dial_type=dial_type,
            hangup_cause=_cause(leg, caller, answer_times),
            missed_call_type=_missed_type(leg, ring),
            ring_seconds=ring,
            queue=queue,
            sub_call_id=leg.uniqueid,
            started_at=leg.created.isoformat(),
        )))
    found.extend(_unreached(legs, caller, rung, queue_of, channels))
    found.sort(key=lambda t: (t.at, t.attempt.extension))
    return found


class _Index:
    """Lookups built once per call, so that a call with thousands of legs stays linear."""

    def __init__(self, legs: dict[str, Leg], channels: ChannelRules) -> None:
        self.locals: dict[str, list[Leg]] = {}  # extension -> Local/<ext>@...;2 halves
        self.dialers: dict[str, list[Leg]] = {}  # extension -> legs whose Dial named it
        self.created: dict[str, list[float]] = {}  # role -> sorted creation times of extension legs
        self.targets: dict[int, list[str]] = {}  # AppVisit row id -> its Dial targets
        for leg in legs.values():
            if leg.kind == "local" and leg.channel.local_half == 2 and leg.channel.local_exten:
                self.locals.setdefault(leg.channel.local_exten, []).append(leg)
            for v in leg.apps:
                if v.app == "dial":
                    self.targets[v.row_id] = channels.dial_targets(v.data)
                    for t in self.targets[v.row_id]:
                        self.dialers.setdefault(t, []).append(leg)
            if leg.kind == "extension" and leg.created is not None:
                self.created.setdefault(leg.role, []).append(leg.created.timestamp())
        for times in self.created.values():
            times.sort()

    def parent(self, leg: Leg) -> Leg | None:
        """The leg that dialled this one: a Local/<ext>@... half, or a leg whose Dial named it."""
        ext = leg.extension or ""
        for candidates in (self.locals.get(ext, []), self.dialers.get(ext, [])):
            before = [c for c in candidates if c is not leg and c.created and leg.created and c.created <= leg.created]
            if before:
                return max(before, key=lambda c: c.created)
        return None

    def siblings(self, leg: Leg) -> int:
        """Other extension legs of the same kind created within half a second of this one."""
        times = self.created.get(leg.role, [])
        t = leg.created.timestamp() if leg.created else 0.0
        return bisect_right(times, t + 0.5) - bisect_left(times, t - 0.5) - 1

    def dial_visits(self, dialer: Leg, extension: str | None) -> list[list[str]]:
        return [self.targets[v.row_id] for v in dialer.apps
                if v.app == "dial" and extension in self.targets.get(v.row_id, ())]


def _dial_type(leg: Leg, parent: Leg | None, queue: str | None, caller: Leg, index: _Index) -> str:
    if queue or leg.role == "AppQueue":
        return "queue"
    visits = index.dial_visits(parent or caller, leg.extension)
    if visits and len(visits[-1]) > 1:
        return "group"
    if not visits and index.siblings(leg) > 0:
        return "group"
    if caller.kind == "trunk":
        return "DDI"
    if caller.kind == "extension":
        return "user"
    return "unknown"


def _cause(leg: Leg, caller: Leg, answer_times: list[datetime]) -> str:
    cause = leg.hangup_cause
    if cause == 26 or any(
        leg.created <= t <= (leg.ended or t) + _RACE_WINDOW for t in answer_times if leg.created
    ):
        return "LOSE_RACE"
    if cause in _CAUSE_NAMES:
        return _CAUSE_NAMES[cause]
    caller_gave_up = caller.dial_status == "CANCEL" or (
        caller.hangup_source == caller.name and caller.ended is not None and leg.ended is not None
        and caller.ended <= leg.ended + _RACE_WINDOW
    )
    if caller_gave_up:
        return "ORIGINATOR_CANCEL"
    return "ALLOTTED_TIMEOUT"


def _missed_type(leg: Leg, ring: int) -> str:
    if leg.hangup_cause in _NO_DEVICE_CAUSES:
        return "no_devices"
    if leg.hangup_cause == 17:
        return "all_busy"
    if ring < 1:
        return "trying"
    return "ringing"


def _unreached(
    legs: dict[str, Leg], caller: Leg, rung: list[tuple[str, datetime]], queue_of: dict[str, str],
    channels: ChannelRules,
) -> list[TimedAttempt]:
    """Extensions a Dial asked for that never got a channel (unregistered phone: no devices)."""
    out: list[TimedAttempt] = []
    for dialer in legs.values():
        if dialer.kind not in ("trunk", "local", "extension"):
            continue
        for visit in dialer.apps:
            if visit.app != "dial":
                continue
            targets = [t for t in channels.dial_targets(visit.data) if channels.is_extension(t)]
            for ext in targets:
                if any(e == ext and t >= visit.start - _RACE_WINDOW for e, t in rung):
                    continue
                queue = queue_of.get(dialer.uniqueid)
                dial_type = "queue" if queue else ("group" if len(targets) > 1 else
                                                   "DDI" if caller.kind == "trunk" else
                                                   "user" if caller.kind == "extension" else "unknown")
                out.append(TimedAttempt(visit.start, Attempt(
                    extension=ext, dial_type=dial_type,
                    hangup_cause="NO_USER_RESPONSE" if dialer.hangup_cause in _NO_DEVICE_CAUSES else "NO_ANSWER",
                    missed_call_type="no_devices", ring_seconds=0, queue=queue,
                    sub_call_id=None, started_at=visit.start.isoformat(),
                )))
    return out
