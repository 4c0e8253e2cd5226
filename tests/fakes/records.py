"""Call records shaped like the bundled corpus's (SPEC §7), built through ``CallRecord`` so that
they are exactly what the pipeline hands to a sink.

The mix follows the corpus: about half the records are answered calls with a recording, the
rest missed incoming calls (queue, IVR, extension) and unanswered outgoing ones.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from celsync.model import CallRecord
from celsync.sinks.base import Delivery, Result, Sink

MSK = timezone(timedelta(hours=3))
BASE = datetime(2024, 5, 28, 10, 0, 0, tzinfo=MSK)

#: (direction, answered, missed_at, extension, result, bitrix24, kommo, kommo text, recorded)
SHAPES: tuple[tuple[Any, ...], ...] = (
    ("incoming", True, None, "101", 200, "200", 4, "Success call", True),
    ("incoming", False, "queue", "400", 200, "304", 6, "Missed call", False),
    ("outgoing", True, None, "102", 200, "200", 4, "Success call", True),
    ("outgoing", False, None, "103", 486, "486", 7, "Number busy", False),
    ("incoming", False, "ivr", None, 0, "304", 6, "Missed call", False),
    ("incoming", True, None, "105", 200, "200", 4, "Success call", True),
)

#: the customers who call; the Kommo fake knows them all
PHONES = tuple(f"+7916{n:07d}" for n in range(1234567, 1234567 + 20))


def record(i: int, *, start: datetime = BASE, **overrides: Any) -> dict[str, Any]:
    """The ``i``-th record of the mix, as ``CallRecord.to_dict()``; keys are unique per ``i``."""
    direction, answered, missed_at, ext, result, b24, kommo, text, recorded = SHAPES[i % len(SHAPES)]
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
