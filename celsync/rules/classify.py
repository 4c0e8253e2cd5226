"""A closed call's rows → its SubCall records (SPEC §5–§6), with the reasoning behind each.

Pure: ``interpret`` reads nothing and writes nothing. Every decision is appended to a trace
so that ``celsync explain`` can show why a record is what it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Sequence

from celsync.config import Config
from celsync.model import CallRecord, CelRow
from celsync.rules.attempts import TimedAttempt, find_attempts
from celsync.rules.channels import ChannelRules
from celsync.rules.legs import Leg, Talks, build_legs
from celsync.rules.numbers import NumberRules
from celsync.rules.tables import StatusTables

_PHONE = re.compile(r"^\+?\d{5,}$")
_REC_VAR = re.compile(r"^_*(?:REC_FILE|CALLFILENAME|MIXMON_FILENAME|MIXMONITOR_FILENAME)=(.+)$", re.I)


@dataclass(frozen=True)
class RulesContext:
    """Everything the rules need from the configuration, compiled once."""

    channels: ChannelRules
    numbers: NumberRules
    tables: StatusTables
    ivr_contexts: tuple[re.Pattern[str], ...]
    queues: dict[str, str]
    record_local_calls: bool
    degraded: bool = False

    @classmethod
    def from_config(cls, cfg: Config, *, degraded: bool = False) -> "RulesContext":
        return cls(
            channels=ChannelRules(cfg.pbx),
            numbers=NumberRules(cfg.numbers),
            tables=StatusTables.from_config(cfg.statuses),
            ivr_contexts=tuple(re.compile(p) for p in cfg.pbx.ivr_contexts),
            queues=dict(cfg.pbx.queues),
            record_local_calls=cfg.pbx.record_local_calls,
            degraded=degraded,
        )


@dataclass
class Interpretation:
    call_id: str
    records: list[CallRecord] = field(default_factory=list)
    traces: dict[str, list[str]] = field(default_factory=dict)  # record key -> reasoning
    notes: list[str] = field(default_factory=list)  # call-level reasoning
    legs: dict[str, Leg] = field(default_factory=dict)


def interpret(call_id: str, rows: Sequence[CelRow], ctx: RulesContext) -> Interpretation:
    """Classify one global call. ``rows`` are all its rows in id order."""
    return _Call(call_id, rows, ctx).run()


class _Call:
    """One call's working state; a class only to avoid threading ten arguments around."""

    def __init__(self, call_id: str, rows: Sequence[CelRow], ctx: RulesContext) -> None:
        self.ctx = ctx
        self.out = Interpretation(call_id)
        self.legs = build_legs(rows, ctx.channels)
        self.out.legs = self.legs
        self.talks = Talks(self.legs)
        self.note = self.out.notes.append

    # ------------------------------------------------------------------ entry
    def run(self) -> Interpretation:
        if not self.legs:
            self.note("no legs: nothing to record")
            return self.out
        origin = self._origin()
        if origin.kind == "trunk":
            self._incoming(origin)
        elif origin.kind == "extension":
            self._from_extension(origin)
        else:
            self.note(f"no extension or trunk leg in the call (only {origin.name}): nothing to record")
        return self.out

    def _origin(self) -> Leg:
        legs = list(self.legs.values())
        first = self.legs.get(self.out.call_id) or min(legs, key=lambda l: l.first_row_id)
        self.note(f"originating leg: {first.name} ({first.kind}, uniqueid {first.uniqueid})")
        if first.kind in ("extension", "trunk"):
            return first
        real = [l for l in legs if l.kind in ("extension", "trunk")]
        if not real:
            return first
        party = min(real, key=lambda l: l.first_row_id)
        self.note(f"{first.name} is a helper channel; the first real party is {party.name} ({party.kind})")
        return party

    # ------------------------------------------------------------------ incoming
    def _incoming(self, caller: Leg) -> None:
        ctx = self.ctx
        external = ctx.numbers.normalise(caller.cid_num)
        did = ctx.numbers.normalise(self._did(caller))
        self.note(f"incoming from {caller.cid_num or '(no caller id)'} to DID {did or '(unknown)'}")
        if ctx.channels.is_extension(caller.cid_num) and not ctx.record_local_calls:
            self.note(f"caller number {caller.cid_num} is an extension of this PBX: local call, ignored")
            return
        reach = self.talks.reachable(caller.uniqueid, self.legs)
        answered = self._answered_extensions(reach, exclude=caller)
        queue_of = self._queues_by_leg(caller)
        attempts = find_attempts(self.legs, caller, {l.uniqueid for l in answered}, queue_of, ctx.channels)
        if answered:
            self._answered_records(caller, answered, attempts, "incoming", external, did)
            return
        forwarded = [self.legs[u] for u in reach if u != caller.uniqueid
                     and self.legs[u].kind == "trunk" and self.legs[u].answered]
        if forwarded:
            via = next((self.legs[u].extension for u in reach if self.legs[u].kind == "local"
                        and self.legs[u].extension), None)
            self.note(f"no extension answered, but the caller talked to {forwarded[0].name}"
                      f"{' through extension ' + via + ' (follow-me/forward)' if via else ''}")
            self._answered_records(caller, [forwarded[0]], attempts, "incoming", external, did, extension=via)
            return
        self._missed(caller, attempts, external, did)

    def _answered_extensions(self, reach: set[str], exclude: Leg) -> list[Leg]:
        """Extension legs that answered and talked to the party (SPEC §6.1 "answered")."""
        found: dict[str, Leg] = {}
        for leg in self.legs.values():
            if leg.kind != "extension" or leg is exclude:
                continue
            if leg.picked_up_by and (leg.uniqueid in reach or leg.picked_up_by in reach):
                picker = self.legs.get(leg.picked_up_by) or next(
                    (l for l in self.legs.values() if l.name == leg.picked_up_by), None)
                if picker is not None and picker.kind == "extension":
                    self.note(f"{leg.name} was picked up by {picker.name}: extension {picker.extension} answered")
                    found[picker.uniqueid] = picker
                    continue
            if leg.answered is None or leg.uniqueid in found:
                continue
            if leg.uniqueid in reach:
                found[leg.uniqueid] = leg
            elif not self.talks.has_bridges and leg.role:
                self.note(f"no bridge events in this call: {leg.name} counts as answered from its ANSWER row")
                found[leg.uniqueid] = leg
        return sorted(found.values(), key=lambda l: (l.answered or l.created, l.first_row_id))

    # ------------------------------------------------------------------ outgoing / internal
    def _from_extension(self, origin: Leg) -> None:
        ctx = self.ctx
        dialled = self._dialled(origin)
        trunks = [l for l in self.legs.values() if l.kind == "trunk"]
        self.note(f"extension {origin.extension} ({origin.name}) dialled {dialled or '(unknown)'}")
        if trunks:
            self._outgoing(origin, dialled, trunks)
            return
        if dialled and ctx.channels.is_extension(dialled) or any(
            l.kind == "extension" and l is not origin for l in self.legs.values()
        ):
            if not ctx.record_local_calls:
                self.note("internal call between extensions: local, ignored (pbx.record_local_calls is off)")
                return
            self.note("internal call recorded because pbx.record_local_calls is on")
            self._outgoing(origin, dialled, [])
            return
        if dialled and _PHONE.match(dialled):
            self.note("no trunk channel was created: the call failed inside the PBX")
            self._outgoing(origin, dialled, [])
            return
        self.note(f"{dialled or 'nothing'} is not a phone number (feature code, voicemail...): ignored")

    def _outgoing(self, origin: Leg, dialled: str | None, trunks: list[Leg]) -> None:
        ctx = self.ctx
        reach = self.talks.reachable(origin.uniqueid, self.legs)
        # The far end: the trunk, or for a recorded internal call the colleague's phone.
        ends = trunks or [l for l in self.legs.values() if l.kind == "extension" and l is not origin]
        far = [t for t in ends if t.uniqueid in reach and t.answered]
        if not far and not self.talks.has_bridges and origin.dial_status == "ANSWER":
            far = [t for t in ends if t.answered]
        trunk = far[0] if far else (min(trunks, key=lambda l: l.first_row_id) if trunks else None)
        number = dialled if dialled else (trunk.start_exten if trunk else None)
        external = ctx.numbers.normalise(number)
        line = None
        if trunk is not None:
            # The outbound channel starts with the callee's number as its caller id; what the
            # PBX presented (the line) is what it holds at the end.
            line = next((r.cid_num for r in reversed(trunk.events) if r.cid_num and _PHONE.match(r.cid_num)), None)
            line = ctx.numbers.normalise(line) if line else trunk.channel.endpoint
        answered = bool(far)
        self.note(f"outgoing to {external}; far end {'answered' if answered else 'did not answer'}"
                  + (f" on {trunk.name}" if trunk else ""))
        self._record(
            sub=origin, direction="outgoing", answered=answered, missed_at=None,
            extension=origin.extension, external=external, did=line,
            started=origin.created, answered_at=far[0].answered if far else None,
            ended=_first_end(origin, far[0]) if far else origin.ended,
            cause_leg=origin, fallback_leg=trunk, attempts=[],
        )
        # Colleagues who took over the customer (a transfer of an outgoing call): the remote
        # number rule of SPEC §6.1 records them as incoming from the customer.
        if not trunks:
            return
        party_reach: set[str] = set()
        for t in far:
            party_reach |= self.talks.reachable(t.uniqueid, self.legs)
        others = self._answered_extensions(party_reach, exclude=origin)
        if others:
            self.note("other extensions talked to the customer: recorded with the remote number as caller")
            self._answered_records(trunk, others, [], "incoming", external, line, first_started=False)

    # ------------------------------------------------------------------ records
    def _answered_records(
        self, caller: Leg, subs: list[Leg], attempts: list[TimedAttempt], direction: str,
        external: str | None, did: str | None, *, extension: str | None = None,
        first_started: bool = True,
    ) -> None:
        previous_answer: datetime | None = None
        for i, sub in enumerate(subs):
            # An attempt belongs to the agent who answered next after it started; the last
            # agent also takes the attempts that came after every answer.
            last = i + 1 == len(subs)
            mine = [a.attempt for a in attempts
                    if (previous_answer is None or a.at > previous_answer)
                    and (last or sub.answered is None or a.at <= sub.answered)]
            # The first agent's record starts when the customer's call started; a colleague
            # reached later (transfer) starts when their own phone started ringing.
            started = caller.created if (i == 0 and first_started) else (sub.created or caller.created)
            self._record(
                sub=sub, direction=direction, answered=True, missed_at=None,
                extension=extension or sub.extension, external=external, did=did,
                started=started, answered_at=sub.answered or sub.created, ended=sub.ended,
                cause_leg=caller, fallback_leg=sub, attempts=mine,
            )
            previous_answer = sub.answered

    def _missed(self, caller: Leg, attempts: list[TimedAttempt], external: str | None, did: str | None) -> None:
        missed_at, where, why = self._missed_place(caller)
        self.note(f"the caller was never bridged to an extension: missed at {missed_at} {where or ''} ({why})")
        self._record(
            sub=caller, direction="incoming", answered=False, missed_at=missed_at, extension=where,
            external=external, did=did, started=caller.created, answered_at=None, ended=caller.ended,
            cause_leg=caller, fallback_leg=None, attempts=[a.attempt for a in attempts],
        )

    def _record(
        self, *, sub: Leg, direction: str, answered: bool, missed_at: str | None, extension: str | None,
        external: str | None, did: str | None, started: datetime | None, answered_at: datetime | None,
        ended: datetime | None, cause_leg: Leg, fallback_leg: Leg | None, attempts: list,
    ) -> None:
        ctx, trace = self.ctx, []
        cause, dial = cause_leg.hangup_cause, cause_leg.dial_status
        source = cause_leg
        if not dial and fallback_leg is not None and fallback_leg.hangup_cause is not None:
            cause, dial, source = fallback_leg.hangup_cause, fallback_leg.dial_status, fallback_leg
            trace.append(f"{cause_leg.name} has no dial status: using {fallback_leg.name}'s values (SPEC §5.1)")
        if ctx.degraded:
            result, rule = 0, "degraded mode (no usable extra column): result unknown"
        else:
            result, rule = ctx.tables.result(cause, dial)
        trace.append(f"hangup cause {cause} / dial status {dial or '(empty)'} from {source.name}: {rule}")
        incoming = direction == "incoming"
        status = ctx.tables.crm_status(result, incoming=incoming, answered=answered)
        if answered and status.bitrix24 != "200":
            status = ctx.tables.crm_status(0, incoming=incoming, answered=True)
            trace.append(f"the call was answered, so result {result} cannot make it unsuccessful: success statuses")
        elif not answered and status.bitrix24 == "200":
            status = ctx.tables.crm_status(0, incoming=incoming, answered=False)
            trace.append(f"result {result} but nobody answered: an unsuccessful call is never recorded as successful")
        trace.append(f"CRM statuses by {status.rule}: Bitrix24 {status.bitrix24}, Kommo {status.kommo} "
                     f"'{status.kommo_result}'")
        started = started or sub.created
        end = ended or sub.ended or started
        duration = _seconds(answered_at, end) if answered and answered_at else 0
        wait = _seconds(started, answered_at if answered and answered_at else end)
        record = CallRecord(
            call_id=self.out.call_id, sub_call_id=sub.uniqueid, direction=direction, answered=answered,
            missed_at=missed_at, extension=extension, external_number=external, did=did,
            started_at=started.isoformat(), answered_at=answered_at.isoformat() if answered and answered_at else None,
            ended_at=end.isoformat() if end else None, duration=duration, wait=wait,
            recording_id=self._recording(sub, answered_at), hangup_cause=cause,
            dial_status=dial or None, result=result, bitrix24_status=status.bitrix24,
            kommo_status=status.kommo, kommo_result=status.kommo_result, attempts=tuple(attempts),
            accountcode=sub.accountcode or cause_leg.accountcode or None,
            userfield=sub.userfield or cause_leg.userfield or None,
        )
        self.out.records.append(record)
        self.out.traces[record.key] = [*self.out.notes, *trace]

    # ------------------------------------------------------------------ facts
    def _did(self, caller: Leg) -> str | None:
        """The number the outside caller dialled: the inbound channel's first extension."""
        for candidate in (caller.start_exten, caller.cid_dnid):
            if candidate and candidate != "s":
                return candidate
        return next((e for _, _, e in caller.contexts if e and _PHONE.match(e)), None)

    def _dialled(self, origin: Leg) -> str | None:
        """What the extension dialled: its first extension, or the Dial's, or any phone-like one."""
        candidates = [origin.start_exten, origin.cid_dnid]
        candidates += [v.exten for v in origin.apps if v.app == "dial"]
        candidates += [e for _, _, e in origin.contexts]
        for c in candidates:
            if c and c != "s" and (_PHONE.match(c) or self.ctx.channels.is_extension(c) or not c.isalpha()):
                return c
        return None

    def _queues_by_leg(self, caller: Leg) -> dict[str, str]:
        """Queue number for each leg rung by a queue (member legs and their Local halves)."""
        visits = [v for v in caller.apps if v.app == "queue"]
        out: dict[str, str] = {}
        for leg in self.legs.values():
            if leg.role != "AppQueue" or leg.created is None:
                continue
            active = [v for v in visits if v.start <= leg.created]
            name = active[-1].data.split(",", 1)[0] if active else leg.contexts[-1][2]
            number = self.ctx.queues.get(name, name)
            out[leg.uniqueid] = number
            if leg.channel.local_pair:
                for twin in self.legs.values():
                    if twin.channel.local_pair == leg.channel.local_pair:
                        out[twin.uniqueid] = number
        return out

    def _missed_place(self, caller: Leg) -> tuple[str, str | None, str]:
        """Where a lost call was lost: last queue, else the later of IVR and ringing (SPEC §6.3)."""
        queues = [v for v in caller.apps if v.app == "queue"]
        if queues:
            name = queues[-1].data.split(",", 1)[0]
            return "queue", self.ctx.queues.get(name, name), f"last queue entered: {name}"
        members = [l for l in self.legs.values() if l.role == "AppQueue"]
        if members:
            number = members[-1].contexts[-1][2] if members[-1].contexts else None
            return "queue", number, "queue member channels rang (no Queue app rows)"
        ivr = [(t, c) for t, c, _ in caller.contexts if any(p.search(c) for p in self.ctx.ivr_contexts)]
        ring = self._ringing(caller)
        if ring and (not ivr or ring[0] >= ivr[-1][0]):
            return ring[1], ring[2], ring[3]
        if ivr:
            return "ivr", ivr[-1][1], f"hung up in IVR context {ivr[-1][1]}"
        return "extension", None, "nothing rang and no IVR or queue was visited"

    def _ringing(self, caller: Leg) -> tuple[datetime, str, str | None, str] | None:
        dials = [v for v in caller.apps if v.app == "dial"]
        channels = self.ctx.channels
        if dials:
            last = dials[-1]
            targets = channels.dial_targets(last.data)
            if len(targets) > 1:
                return last.start, "group", last.exten, f"Dial to {len(targets)} phones at {last.exten}"
            if targets:
                return last.start, "extension", targets[0], f"Dial to {targets[0]}"
        rung = [l for l in self.legs.values() if l.kind == "extension" and l is not caller and l.created]
        if len({l.extension for l in rung}) > 1:
            exten = caller.contexts[-1][2] if caller.contexts else None
            return rung[0].created, "group", exten, "several extensions rang"
        if rung:
            return rung[-1].created, "extension", rung[-1].extension, f"{rung[-1].name} rang"
        last_exten = caller.contexts[-1][2] if caller.contexts else None
        if channels.is_extension(last_exten):
            return caller.contexts[-1][0], "extension", last_exten, f"dialplan reached extension {last_exten}"
        return None

    def _recording(self, sub: Leg, answered_at: datetime | None) -> str | None:
        """MixMonitor file of the SubCall's leg, else the latest one of the call before its answer."""
        def files(leg: Leg) -> list[tuple[datetime, str]]:
            out = []
            for v in leg.apps:
                if v.app == "mixmonitor" and v.data:
                    out.append((v.start, v.data.split(",", 1)[0]))
                elif v.app == "set":
                    m = _REC_VAR.match(v.data)
                    if m:
                        out.append((v.start, m.group(1)))
            return out

        own = files(sub)
        if own:
            return _basename(own[0][1])
        found = sorted(f for leg in self.legs.values() for f in files(leg))
        if answered_at is not None:
            before = [f for f in found if f[0] <= answered_at]
            found = before or found
        return _basename(found[-1][1]) if found else None


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _seconds(a: datetime | None, b: datetime | None) -> int:
    if a is None or b is None:
        return 0
    return max(0, int((b - a).total_seconds() + 0.5))


def _first_end(a: Leg, b: Leg) -> datetime | None:
    ends = [e for e in (a.ended, b.ended) if e is not None]
    return min(ends) if ends else None
