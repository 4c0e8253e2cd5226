"""Closing rules (SPEC §4) and joins of linkedids, on hand-written rows."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from celsync.calls.assembly import Assembler
from celsync.calls.unionfind import UnionFind
from celsync.model import CelRow
from celsync.rules.classify import RulesContext, interpret

from .corpus import profile

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


class Rows:
    """A tiny CEL table writer for scenario tests."""

    def __init__(self) -> None:
        self.rows: list[CelRow] = []

    def __call__(self, sec: float, event: str, chan: str, uid: str, lid: str, **kw) -> CelRow:
        row = CelRow(id=len(self.rows) + 1, eventtype=event, eventtime=T0 + timedelta(seconds=sec),
                     uniqueid=uid, linkedid=lid, channame=chan, **kw)
        self.rows.append(row)
        return row


def test_union_find_joins_and_forgets():
    uf = UnionFind()
    for a, b in [("a", "b"), ("c", "d"), ("b", "d")]:
        uf.add(a), uf.add(b), uf.union(a, b)
    uf.add("x")
    assert uf.find("a") == uf.find("c") != uf.find("x")
    root = uf.find("a")
    assert sorted(uf.members(root)) == ["a", "b", "c", "d"]
    uf.remove_set(root)
    assert "a" not in uf and len(uf) == 1


def test_linkedid_end_then_settle():
    r = Rows()
    r(0, "CHAN_START", "PJSIP/trunk-1", "1.1", "1.1")
    r(5, "HANGUP", "PJSIP/trunk-1", "1.1", "1.1", extra={"hangupcause": 16})
    r(5, "CHAN_END", "PJSIP/trunk-1", "1.1", "1.1")
    r(5, "LINKEDID_END", "PJSIP/trunk-1", "1.1", "1.1")
    a = Assembler(3, 30, 3600)
    a.add(r.rows)
    assert a.due(T0 + timedelta(seconds=7.9)) == []
    (call,) = a.due(T0 + timedelta(seconds=8))
    assert call.call_id == "1.1" and len(call.rows) == 4 and not call.forced
    assert a.open_calls == 0


def test_without_linkedid_end_closes_after_quiet_window():
    r = Rows()
    r(0, "CHAN_START", "PJSIP/trunk-1", "1.1", "1.1")
    r(5, "HANGUP", "PJSIP/trunk-1", "1.1", "1.1")
    a = Assembler(3, 30, 3600)
    a.add(r.rows)
    assert a.due(T0 + timedelta(seconds=34)) == []
    assert [c.call_id for c in a.due(T0 + timedelta(seconds=35))] == ["1.1"]


def test_call_that_never_ends_is_forced_closed_at_max_age():
    r = Rows()
    r(0, "CHAN_START", "PJSIP/trunk-1", "1.1", "1.1")
    a = Assembler(3, 30, 3600)
    a.add(r.rows)
    assert a.due(T0 + timedelta(seconds=3599)) == []
    (call,) = a.due(T0 + timedelta(seconds=3600))
    assert call.forced and "max_call_age" in call.reason


def test_shared_uniqueid_joins_two_linkedids_and_oldest_names_the_call():
    r = Rows()
    r(0, "CHAN_START", "PJSIP/trunk-1", "1.1", "1.1")
    r(1, "CHAN_START", "PJSIP/103-2", "2.2", "2.2")  # a second call (a pickup's own linkedid)
    r(2, "BRIDGE_ENTER", "PJSIP/103-2", "2.2", "1.1")  # the channel moved into the first call
    for uid in ("1.1", "2.2"):
        r(9, "HANGUP", "x", uid, "1.1")
    r(9, "LINKEDID_END", "x", "2.2", "2.2")
    a = Assembler(3, 30, 3600)
    a.add(r.rows)
    assert a.open_calls == 1
    assert a.due(T0 + timedelta(seconds=20)) == []  # linkedid 1.1 has not ended yet
    r(9, "LINKEDID_END", "x", "1.1", "1.1")
    a.add(r.rows[-1:])
    (call,) = a.due(T0 + timedelta(seconds=20))
    assert call.call_id == "1.1" and len(call.rows) == 7


def test_transfer_extra_joins_calls_through_named_uniqueid():
    r = Rows()
    r(0, "CHAN_START", "PJSIP/trunk-1", "1.1", "1.1")
    r(1, "CHAN_START", "PJSIP/101-2", "5.5", "5.5")
    r(2, "ATTENDEDTRANSFER", "PJSIP/101-2", "5.5", "5.5", extra={"transferee_channel_uniqueid": "1.1"})
    a = Assembler(3, 30, 3600)
    a.add(r.rows)
    assert a.open_calls == 1


def test_late_row_needs_history_and_low_water():
    r = Rows()
    r(0, "CHAN_START", "PJSIP/trunk-1", "1.1", "1.1")
    r(1, "CHAN_START", "PJSIP/trunk-2", "2.2", "2.2")
    a = Assembler(3, 30, 3600)
    a.add(r.rows)
    assert a.low_water(2) == 0
    late = CelRow(id=9, eventtype="HANGUP", eventtime=T0, uniqueid="7.7", linkedid="7.7", channame="x")
    assert a.needs_history(late)
    assert not a.needs_history(CelRow(id=10, eventtype="CHAN_START", eventtime=T0, uniqueid="8.8", linkedid="8.8"))
    assert not a.needs_history(CelRow(id=11, eventtype="ANSWER", eventtime=T0, uniqueid="1.1", linkedid="1.1"))


def test_call_with_5000_legs_is_assembled_and_classified():
    """A ring-all to thousands of phones (or a runaway loop) is slow-proof, not a crash."""
    r = Rows()
    r(0, "CHAN_START", "PJSIP/trunk-1", "1.0", "1.0", cid_num="79161234567", exten="74951112233")
    for i in range(1, 5001):
        r(1, "CHAN_START", f"PJSIP/{1000 + i % 9000}-{i:08x}", f"1.{i}", "1.0", appname="AppDial")
    for i in range(1, 5001):
        r(20, "HANGUP", f"PJSIP/{1000 + i % 9000}-{i:08x}", f"1.{i}", "1.0", extra={"hangupcause": 0})
    r(20, "HANGUP", "PJSIP/trunk-1", "1.0", "1.0", extra={"hangupcause": 16, "dialstatus": "NOANSWER"})
    r(20, "LINKEDID_END", "PJSIP/trunk-1", "1.0", "1.0")
    a = Assembler(3, 30, 3600)
    a.add(r.rows)
    (call,) = a.due(T0 + timedelta(seconds=60))
    ctx = RulesContext.from_config(profile(pbx={"extensions": r"^\d{4}$", "trunk_channels": ["^PJSIP/trunk-"]}))
    (record,) = interpret(call.call_id, call.rows, ctx).records
    assert not record.answered and record.missed_at == "group"
    assert len(record.attempts) == 5000
