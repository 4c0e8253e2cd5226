"""``make bench``: every SPEC §11 target measured, one table printed.

    python -m bench [--rows 1000000] [--big 10000000] [--quick] [--only rate|memory|crm|latency]
                    [--db sqlite|mariadb|postgresql] [--out bench/out]

Progress goes to standard error, the table to standard output. Generated tables are cached
(bench/out/ for SQLite, database celsync_bench on MariaDB/PostgreSQL), so a second run
skips the generation. Exit status 0 when every measured target holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench import crm_backlog, latency, machine, memory, rate
from bench.generate import DIALECTS, OUT, cel_url

SECTIONS = ("rate", "memory", "crm", "latency")
RATIO_TARGET = 0.5
RSS_LIMIT_MB = 200.0
FLAT = 1.10  # the big table's peak may exceed the small one's by at most 10 %
CRM_RECORDS = 2000  # a backlog well past Bitrix24's start-up burst


@dataclass(frozen=True)
class Line:
    measure: str
    value: str
    target: str
    ok: bool


@dataclass(frozen=True)
class Plan:
    rows: int  # rate comparison and the small memory run
    big: int  # the large memory run
    crm_records: int
    latency_seconds: float
    dbs: tuple[str, ...]  # databases of the rate comparison
    out: Path  # where the SQLite tables are kept


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rate_lines(plan: Plan) -> list[Line]:
    lines = []
    for db in plan.dbs:
        r = rate.measure(db, cel_url(db, plan.rows, _say, plan.out))
        _say(f"rate {db}: raw {r.raw_rate:,.0f} rows/s, engine {r.engine_rate:,.0f} rows/s "
             f"({r.rows:,} rows, {r.records:,} records in {r.engine_seconds:.1f} s)")
        lines.append(Line(
            f"engine / raw fetch, {db}, {r.rows:,} rows",
            f"{r.engine_rate:,.0f} / {r.raw_rate:,.0f} rows/s = {r.ratio:.2f}",
            f">= {RATIO_TARGET}", r.ratio >= RATIO_TARGET,
        ))
    return lines


def memory_lines(plan: Plan) -> list[Line]:
    peaks = []
    for rows in (plan.rows, plan.big):
        url = cel_url("sqlite", rows, _say, plan.out)
        _say(f"memory: celsync reprocess over {rows:,} rows ...")
        peaks.append(memory.reprocess_peak(url, rows))
        _say(f"  peak {peaks[-1].peak_mb:.0f} MB in {peaks[-1].seconds:.0f} s; {peaks[-1].summary}")
    lines = [
        Line(f"peak RSS, celsync reprocess, {p.rows:,} rows", f"{p.peak_mb:.0f} MB ({p.seconds:.0f} s)",
             f"< {RSS_LIMIT_MB:.0f} MB", p.peak_mb < RSS_LIMIT_MB)
        for p in peaks
    ]
    small, big = peaks
    lines.append(Line(
        f"peak RSS growth, {small.rows:,} -> {big.rows:,} rows", f"{big.peak_mb - small.peak_mb:+.0f} MB",
        f"flat (<= +{(FLAT - 1) * 100:.0f} %)", big.peak_mb <= small.peak_mb * FLAT,
    ))
    return lines


def crm_lines(plan: Plan) -> list[Line]:
    logging.getLogger("celsync").setLevel(logging.ERROR)  # the default-user fallback is expected there
    _say(f"crm: draining {plan.crm_records:,} records into the Bitrix24 and Kommo fakes ...")
    result = crm_backlog.run(plan.crm_records)
    lines = []
    for crm, label in (("bitrix24", "Bitrix24"), ("kommo", "Kommo")):
        r = result[crm]
        target = result["targets"][f"{crm}_calls_per_s"]
        rate_now = r.get("steady_calls_per_s", r["calls_per_s"])  # a long backlog's rate, burst left out
        clean = r["violations"] == 0 and r["duplicates"] == 0 and r["delivered"] == r["records"]
        lines.append(Line(
            f"{label} backlog, {r['records']:,} calls, {r['limit']}",
            f"{rate_now} calls/s ({r['violations']} over limit, {r['duplicates']} duplicates)",
            f">= {target} calls/s", clean and rate_now >= target,
        ))
    return lines


def latency_lines(plan: Plan) -> list[Line]:
    _say(f"latency: {plan.latency_seconds:.0f} s of live calls with celsync run polling ...")
    r = latency.measure(duration=plan.latency_seconds)
    where = f"{r.calls} calls, {r.rows_per_second:.0f} rows/s"
    _say(f"  p50 {r.p50:.2f} s, p95 {r.p95:.2f} s, worst {r.worst:.2f} s; {where}; "
         f"{r.unrecorded} ended calls gave no record (local calls)")
    return [
        Line(f"live latency p50 ({where})", f"{r.p50:.2f} s", f"<= {r.target:.1f} s", r.p50 <= r.target),
        Line(f"live latency p95 ({where})", f"{r.p95:.2f} s", f"<= {r.target:.1f} s", r.p95 <= r.target),
    ]


RUNNERS: dict[str, Callable[[Plan], list[Line]]] = {
    "rate": rate_lines, "memory": memory_lines, "crm": crm_lines, "latency": latency_lines,
}


def render(lines: list[Line]) -> str:
    rows = [("measure", "value", "target", "result")] + [
        (ln.measure, ln.value, ln.target, "pass" if ln.ok else "FAIL") for ln in lines
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    out = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, help="rate comparison and small memory run (default 1,000,000)")
    parser.add_argument("--big", type=int, help="large memory run, SQLite (default 10,000,000)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 50k/200k rows, 300 CRM calls, 20 s of live calls")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only this part (repeatable)")
    parser.add_argument("--db", choices=DIALECTS, action="append", help="rate comparison only on this database")
    parser.add_argument("--out", type=Path, default=OUT, help="directory of the generated SQLite tables")
    args = parser.parse_args(argv)
    rows, big, crm, live = (50_000, 200_000, 300, 20.0) if args.quick else (1_000_000, 10_000_000, CRM_RECORDS, 60.0)
    plan = Plan(args.rows or rows, args.big or big, crm, live, tuple(args.db or DIALECTS), args.out)
    started = time.monotonic()
    lines: list[Line] = []
    for section in args.only or SECTIONS:
        lines += RUNNERS[section](plan)
    print("\n".join(machine.describe()))
    print(f"celsync benchmark ({time.monotonic() - started:.0f} s)")
    print(render(lines))
    return 0 if all(ln.ok for ln in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
