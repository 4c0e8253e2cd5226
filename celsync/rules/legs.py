"""A call's rows → its legs (one per uniqueid) and who talked to whom.

Pure: the same rows always give the same legs. Times stay ``datetime``; the classifier turns
them into record fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Sequence

from celsync.model import CelRow
from celsync.rules.channels import Channel, ChannelRules

#: Applications whose APP_START names the place a caller waits or rings.
DIAL_APPS = frozenset({"dial", "queue", "followme", "page", "ringgroup"})
#: CEL `extra` keys that name another channel's uniqueid (transfers, pickups, Local optimisation).
UNIQUEID_REFS = (
    "transferee_channel_uniqueid", "transfer_target_channel_uniqueid", "channel2_uniqueid",
    "pickup_channel_uniqueid", "local_two_uniqueid",
)


@dataclass(slots=True)
class AppVisit:
    """One run of a dialplan application on a leg (from APP_START, or from row snapshots)."""

    app: str  # lower-case application name
    data: str
    exten: str
    context: str
    start: datetime
    row_id: int


@dataclass(slots=True)
class Leg:
    uniqueid: str
    channel: Channel
    first_row_id: int
    linkedid: str
    created: datetime | None = None
    answered: datetime | None = None
    ended: datetime | None = None
    hangup_cause: int | None = None
    dial_status: str = ""
    hangup_source: str = ""
    start_exten: str = ""
    start_context: str = ""
    cid_num: str = ""
    cid_dnid: str = ""
    accountcode: str = ""
    userfield: str = ""
    role: str = ""  # appname of a dialled leg: AppDial, AppQueue, AppDial2 ("" for originators)
    apps: list[AppVisit] = field(default_factory=list)
    contexts: list[tuple[datetime, str, str]] = field(default_factory=list)  # (time, context, exten)
    bridges: list[tuple[str, datetime, datetime | None]] = field(default_factory=list)
    peers: set[str] = field(default_factory=set)  # channel names seen in `peer` on BRIDGE rows
    current_app: tuple[str, str] | None = None  # running application, while assembling
    picked_up_by: str | None = None  # uniqueid (or channel name) of the leg that picked this one up
    events: list[CelRow] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.channel.name

    @property
    def kind(self) -> str:
        return self.channel.kind

    @property
    def extension(self) -> str | None:
        return self.channel.extension

    @property
    def bridged(self) -> bool:
        return bool(self.bridges)


def build_legs(rows: Sequence[CelRow], channels: ChannelRules) -> dict[str, Leg]:
    """Legs in order of first appearance (dicts keep insertion order)."""
    legs: dict[str, Leg] = {}
    open_bridges: dict[tuple[str, str], int] = {}
    for row in rows:
        leg = legs.get(row.uniqueid)
        if leg is None:
            leg = Leg(row.uniqueid, channels.classify(row.channame), row.id, row.linkedid)
            legs[row.uniqueid] = leg
        _apply(leg, row, open_bridges)
    return legs


def _apply(leg: Leg, row: CelRow, open_bridges: dict[tuple[str, str], int]) -> None:
    et = row.eventtype
    leg.events.append(row)
    if not leg.cid_num and row.cid_num:
        leg.cid_num = row.cid_num
    if not leg.cid_dnid and row.cid_dnid:
        leg.cid_dnid = row.cid_dnid
    if not leg.accountcode and row.accountcode:
        leg.accountcode = row.accountcode
    if not leg.userfield and row.userfield:
        leg.userfield = row.userfield
    if row.appname in ("AppDial", "AppQueue", "AppDial2"):
        leg.role = leg.role or row.appname
    if not leg.contexts or leg.contexts[-1][1:] != (row.context, row.exten):
        leg.contexts.append((row.eventtime, row.context, row.exten))
    if et == "APP_START" and row.appname:
        leg.apps.append(AppVisit(row.appname.lower(), row.appdata, row.exten, row.context, row.eventtime, row.id))
        leg.current_app = (row.appname.lower(), row.appdata)
    elif et == "APP_END":
        leg.current_app = None
    elif row.appname and row.appname.lower() in DIAL_APPS and leg.current_app != (row.appname.lower(), row.appdata):
        # Without APP_START rows (apps= not listing it) the row snapshot still names the app.
        leg.apps.append(AppVisit(row.appname.lower(), row.appdata, row.exten, row.context, row.eventtime, row.id))
        leg.current_app = (row.appname.lower(), row.appdata)
    if et == "CHAN_START":
        leg.created = leg.created or row.eventtime
        leg.start_exten, leg.start_context = row.exten, row.context
    elif et == "ANSWER":
        leg.answered = leg.answered or row.eventtime
    elif et == "HANGUP":
        leg.ended = row.eventtime
        cause = row.extra.get("hangupcause")
        if isinstance(cause, int) or (isinstance(cause, str) and cause.isdigit()):
            leg.hangup_cause = int(cause)
        leg.dial_status = str(row.extra.get("dialstatus") or "").upper()
        leg.hangup_source = str(row.extra.get("hangupsource") or "")
    elif et == "CHAN_END":
        leg.ended = leg.ended or row.eventtime
    elif et == "BRIDGE_ENTER":
        bridge_id = str(row.extra.get("bridge_id") or f"peer:{row.id}")
        open_bridges[(leg.uniqueid, bridge_id)] = len(leg.bridges)
        leg.bridges.append((bridge_id, row.eventtime, None))
        leg.peers.update(p for p in row.peer.split(",") if p)
    elif et == "BRIDGE_EXIT":
        bridge_id = str(row.extra.get("bridge_id") or "")
        idx = open_bridges.pop((leg.uniqueid, bridge_id), None)
        if idx is None and leg.bridges and leg.bridges[-1][2] is None:
            idx = len(leg.bridges) - 1
        if idx is not None:
            bid, start, _ = leg.bridges[idx]
            leg.bridges[idx] = (bid, start, row.eventtime)
        leg.peers.update(p for p in row.peer.split(",") if p)
    elif et == "PICKUP":
        leg.picked_up_by = str(row.extra.get("pickup_channel_uniqueid") or row.extra.get("pickup_channel") or "") or None
    if leg.created is None:
        leg.created = row.eventtime


class Talks:
    """Who was connected to whom: bridges shared in time, named peers, Local halves, pickups.

    Connectivity is transitive so that a caller reaches a queue agent through
    ``caller ↔ Local;1 ≈ Local;2 ↔ PJSIP/agent``.
    """

    def __init__(self, legs: dict[str, Leg]) -> None:
        self._adj: dict[str, set[str]] = {u: set() for u in legs}
        by_name = {leg.name: u for u, leg in legs.items()}
        pairs: dict[str, list[str]] = {}
        members: dict[str, list[tuple[str, datetime, datetime | None]]] = {}
        for u, leg in legs.items():
            for bridge_id, start, end in leg.bridges:
                members.setdefault(bridge_id, []).append((u, start, end))
            for peer in leg.peers:
                other = by_name.get(peer)
                if other and other != u:
                    self._link(u, other)
            if leg.channel.local_pair:
                pairs.setdefault(leg.channel.local_pair, []).append(u)
            if leg.picked_up_by:
                other = leg.picked_up_by if leg.picked_up_by in legs else by_name.get(leg.picked_up_by)
                if other:
                    self._link(u, other)
        for group in pairs.values():
            for a, b in zip(group, group[1:]):
                self._link(a, b)
        for spans in members.values():
            for i, (a, s1, e1) in enumerate(spans):
                for b, s2, e2 in spans[i + 1:]:
                    if a != b and (e1 is None or s2 <= e1) and (e2 is None or s1 <= e2):
                        self._link(a, b)
        self.has_bridges = bool(members) or any(leg.peers for leg in legs.values())

    def _link(self, a: str, b: str) -> None:
        self._adj[a].add(b)
        self._adj[b].add(a)

    def reachable(self, start: str, legs: dict[str, Leg]) -> set[str]:
        """Legs connected to ``start``, walking only through Local and unknown channels.

        Extensions and trunks are end points: an agent who later consults a colleague does
        not make the colleague a party of the customer's conversation.
        """
        seen = {start}
        todo = [start]
        while todo:
            for nxt in self._adj.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    if legs[nxt].kind in ("local", "other"):
                        todo.append(nxt)
        return seen


def uniqueid_refs(row: CelRow) -> Iterable[str]:
    """Other channels' uniqueids that a row's ``extra`` names (joins calls in assembly)."""
    for key in UNIQUEID_REFS:
        value = row.extra.get(key)
        if isinstance(value, str) and value and value != "N/A":
            yield value
