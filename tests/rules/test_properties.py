"""Purity: the same rows give the same records whatever the poll boundaries or interleaving."""

from __future__ import annotations

import dataclasses
import random
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celsync.calls.assembly import Assembler
from celsync.rules.classify import RulesContext, interpret

from .corpus import profile, scenarios

CTX = RulesContext.from_config(profile())
NAMES = sorted(scenarios())


def replay(rows, cuts):
    """Feed rows in polls split at ``cuts``, closing on the CEL clock, like the pipeline does.

    A row of a call already handed out re-opens it from the table (history), as
    ``Pipeline._ingest`` does with ``CelSource.rows_for_calls``.
    """
    by_id = sorted(rows, key=lambda r: r.id)
    assembler = Assembler(3, 30, 6 * 3600)
    out = {}
    clock = None
    bounds = [0, *sorted(set(cuts)), len(by_id)]
    for lo, hi in zip(bounds, bounds[1:]):
        for row in by_id[lo:hi]:
            if assembler.needs_history(row):
                history = [r for r in by_id if r.id < row.id and (r.linkedid == row.linkedid or r.uniqueid == row.uniqueid)]
                assembler.add(history, from_stream=False)
            assembler.add([row])
            clock = max(clock, row.eventtime) if clock else row.eventtime
        for call in assembler.due(clock):
            out[call.call_id] = [r.to_dict() for r in interpret(call.call_id, call.rows, CTX).records]
    for call in assembler.due(clock + timedelta(days=1)):
        out[call.call_id] = [r.to_dict() for r in interpret(call.call_id, call.rows, CTX).records]
    return out


def concurrent(picks, offsets, seed):
    """Several scenarios shifted in time so they overlap, merged and re-numbered in time order
    as Asterisk numbers rows; each call keeps its own row order, ties go either way."""
    rng = random.Random(seed)
    queues = []
    for n, (name, offset) in enumerate(zip(picks, offsets)):
        suffix = f"-{n}"

        def tag(value, suffix=suffix):
            return value + suffix if value and value != "N/A" else value

        queues.append([
            dataclasses.replace(
                r, eventtime=r.eventtime + timedelta(seconds=offset), uniqueid=tag(r.uniqueid),
                linkedid=tag(r.linkedid),
                extra={k: tag(v) if k.endswith("uniqueid") else v for k, v in r.extra.items()},
            )
            for r in scenarios()[name]
        ])
    merged = []
    while any(queues):
        heads = [q for q in queues if q]
        first = min(q[0].eventtime for q in heads)
        pick = rng.choice([q for q in heads if q[0].eventtime == first])
        merged.append(pick.pop(0))
    return [dataclasses.replace(r, id=i + 1) for i, r in enumerate(merged)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_split_into_polls_gives_identical_records(data):
    rows = [r for name in NAMES for r in scenarios()[name]]
    cuts = data.draw(st.lists(st.integers(0, len(rows)), max_size=40))
    assert replay(rows, cuts) == replay(rows, [])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    picks=st.lists(st.sampled_from(NAMES), min_size=2, max_size=6),
    offsets=st.lists(st.floats(0, 40), min_size=6, max_size=6),
    seed=st.integers(0, 2**32),
    cuts=st.lists(st.integers(0, 400), max_size=15),
)
def test_any_interleaving_of_concurrent_calls_gives_each_calls_own_records(picks, offsets, seed, cuts):
    rows = concurrent(picks, offsets, seed)
    together = replay(rows, cuts)
    for call_id in {r.linkedid for r in rows}:
        alone = [r for r in rows if r.linkedid == call_id]
        assert together[call_id] == replay(alone, [])[call_id]
