"""Call records shaped like the bundled corpus's (SPEC §7), built through ``CallRecord`` so that
they are exactly what the pipeline hands to a sink.

The mix is the corpus's own: one shape per record of tests/fixtures/asterisk22-pjsip
(6 of 15 answered). As in the pipeline's output, nearly every call has a recording id (the
PBX records from the first ring), the IVR-abandoned one excepted.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from celsync.model import CallRecord
from celsync.sinks.base import Delivery, Result, Sink

MSK = timezone(timedelta(hours=3))
BASE = datetime(2024, 5, 28, 10, 0, 0, tzinfo=MSK)

#: (corpus scenario, direction, answered, missed_at, extension, result, bitrix24, kommo,
#:  kommo text, recorded)
SHAPES: tuple[tuple[Any, ...], ...] = (
    ("in_direct_answered", "incoming", True, None, "101", 200, "200", 4, "Success call", True),
    ("in_direct_busy", "incoming", False, "extension", "101", 486, "304", 6, "Number busy", True),
    ("out_answered", "outgoing", True, None, "102", 200, "200", 4, "Success call", True),
    ("out_404", "outgoing", False, None, "103", 404, "404", 5, "Number out of service", True),
    ("in_ivr_abandoned", "incoming", False, "ivr", None, 0, "304", 6, "Missed call", False),
    ("in_ringgroup_answered", "incoming", True, None, "105", 200, "200", 4, "Success call", True),
    ("in_direct_480", "incoming", False, "extension", "102", 480, "304", 3, "Subscriber did not answer", True),
    ("in_queue_abandoned", "incoming", False, "queue", "400", 200, "304", 6, "Missed call", True),
    ("in_ivr_queue_answered", "incoming", True, None, "101", 200, "200", 4, "Success call", True),
    ("in_direct_unavailable", "incoming", False, "extension", "105", 500, "500", 6, "Server error", True),
    ("out_noanswer", "outgoing", False, None, "101", 408, "304", 3, "Subscriber did not answer", True),
    ("in_blind_transfer", "incoming", True, None, "101", 200, "200", 4, "Success call", True),
    ("in_ringgroup_noanswer", "incoming", False, "group", "600", 480, "304", 3, "Subscriber did not answer", True),
    ("in_blind_transfer", "incoming", True, None, "102", 200, "200", 4, "Success call", True),
    ("out_caller_cancel", "outgoing", False, None, "101", 480, "304", 3, "Subscriber did not answer", True),
)

#: the customers who call; the Kommo fake knows them all
PHONES = tuple(f"+7916{n:07d}" for n in range(1234567, 1234567 + 20))


def record(i: int, *, start: datetime = BASE, **overrides: Any) -> dict[str, Any]:
    """The ``i``-th record of the mix, as ``CallRecord.to_dict()``; keys are unique per ``i``."""
    _, direction, answered, missed_at, ext, result, b24, kommo, text, recorded = SHAPES[i % len(SHAPES)]
    started = start + timedelta(seconds=37 * i)
    talk = 20 + (i * 7) % 200 if answered else 0
    wait = 3 + i % 11
    linked = f"{1716879600 + i}.{2 * i}"
    rec = CallRecord(
        call_id=linked,
        sub_call_id=f"{1716879600 + i}.{2 * i + 1}",
        direction=direction,
        answered=answered,
        missed_at=missed_at,
        extension=ext,
        external_number=PHONES[i % len(PHONES)],
        did="+74951112201" if direction == "incoming" else None,
        started_at=started.isoformat(),
        answered_at=(started + timedelta(seconds=wait)).isoformat() if answered else None,
        ended_at=(started + timedelta(seconds=wait + talk)).isoformat(),
        duration=talk,
        wait=wait,
        recording_id=f"2024/05/28/{direction[:2]}-{linked}.wav" if recorded else None,
        hangup_cause=16,
        dial_status="ANSWER" if answered else "NOANSWER",
        result=result,
        bitrix24_status=b24,
        kommo_status=kommo,
        kommo_result=text,
    ).to_dict()
    rec.update(overrides)
    return rec


def records(n: int, *, start: datetime = BASE, first: int = 0) -> list[dict[str, Any]]:
    return [record(i, start=start) for i in range(first, first + n)]


def deliveries(recs: list[dict[str, Any]], sink: str, *, previously_delivered: bool = False) -> list[Delivery]:
    return [
        Delivery(sink=sink, key=r["key"], version=1, fingerprint=f"fp-{r['key']}", record=r,
                 previously_delivered=previously_delivered)
        for r in recs
    ]


def send_all(sink: Sink, recs: list[dict[str, Any]]) -> list[Result]:
    """Send ``recs`` straight through ``sink`` in batches of its size, as the engine would."""
    results: list[Result] = []
    for i in range(0, len(recs), sink.batch_size):
        results += sink.send(deliveries(recs[i:i + sink.batch_size], sink.name))
    return results
