"""Large realistic CEL streams made by tiling real traces (for benchmarks and stress tests).

Each copy of a recorded call gets fresh uniqueids/linkedids (also inside ``extra``), a fresh
customer number and a start time; copies overlap in time as on a busy PBX, and the merged
stream is numbered in time order, as Asterisk numbers its rows. Memory stays proportional to
the calls in progress, so ten million rows stream through without being held.
"""

from __future__ import annotations

import heapq
import json
import random
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Mapping, Sequence

CUSTOMER = "79161234567"
_TEXT = ("cid_name", "cid_num", "cid_ani", "cid_dnid", "exten", "appdata", "userfield")


def templates(rows: Sequence[Mapping[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split canonical corpus rows (aware ``eventtime``) into one template per linkedid."""
    calls: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: r["id"]):
        calls.setdefault(row["linkedid"], []).append(dict(row))
    return list(calls.values())


def tile(
    calls: Sequence[Sequence[Mapping[str, Any]]], *, rows: int, start: datetime | None = None,
    calls_per_minute: float = 120.0, seed: int = 1, first_id: int = 1,
) -> Iterator[dict[str, Any]]:
    """Yield about ``rows`` canonical rows (whole calls only), ids ascending from ``first_id``."""
    rng = random.Random(seed)
    start = start or datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)
    gap = 60.0 / calls_per_minute
    heap: list[tuple[datetime, int, int, list[dict[str, Any]]]] = []
    planned = copy = 0
    next_start = start
    next_id = first_id
    while True:
        # Start new copies while they begin before the earliest pending row.
        while planned < rows and (not heap or next_start <= heap[0][0]):
            template = calls[rng.randrange(len(calls))]
            body = _copy(template, copy, next_start, rng)
            heapq.heappush(heap, (body[0]["eventtime"], copy, 0, body))
            planned += len(body)
            copy += 1
            next_start += timedelta(seconds=rng.expovariate(1.0 / gap))
        if not heap:
            return
        _, c, i, body = heapq.heappop(heap)
        row = body[i]
        row["id"] = next_id
        next_id += 1
        yield row
        if i + 1 < len(body):
            heapq.heappush(heap, (body[i + 1]["eventtime"], c, i + 1, body))


def _copy(template: Sequence[Mapping[str, Any]], n: int, at: datetime, rng: random.Random) -> list[dict[str, Any]]:
    t0 = template[0]["eventtime"]
    ids: dict[str, str] = {}

    def fresh(uid: str) -> str:
        if uid not in ids:
            ids[uid] = f"{1700000000 + n // 1000}.{(n % 1000) * 100 + len(ids)}"
        return ids[uid]

    customer = f"7916{rng.randrange(10**7):07d}"
    out = []
    for row in template:
        new = dict(row)
        new["eventtime"] = at + (row["eventtime"] - t0)
        new["uniqueid"] = fresh(row["uniqueid"])
        new["linkedid"] = fresh(row["linkedid"])
        for key in _TEXT:
            value = new.get(key)
            if isinstance(value, str) and CUSTOMER in value:
                new[key] = value.replace(CUSTOMER, customer)
        extra = new.get("extra")
        if isinstance(extra, str) and "uniqueid" in extra:
            data = json.loads(extra)
            for k, v in data.items():
                if k.endswith("uniqueid") and isinstance(v, str) and v not in ("", "N/A"):
                    data[k] = fresh(v)
            new["extra"] = json.dumps(data, separators=(",", ":"))
        out.append(new)
    return out
