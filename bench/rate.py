"""Engine rate against raw fetch (SPEC §11, first target).

Raw fetch: the same DBAPI driver celsync uses, the same columns, the same query shape as
``CelSource.read_after`` (``WHERE id > :after ORDER BY id LIMIT :batch``) and the same batch
size, every row fetched into Python tuples and nothing else done. It is the ceiling: no
engine can read faster than its driver can hand over rows.

Engine: the real ``Pipeline.poll`` over the whole table (read, parse, assemble, classify,
commit to a fresh SQLite state outbox, deliver) with a JSONL sink writing to ``/dev/null``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.config import bench_config
from celsync.cel.source import CelSource
from celsync.config import SourceConfig
from celsync.pipeline import Pipeline

#: The engine's default batch size (``source.batch_size``); both sides use it.
BATCH = SourceConfig.model_fields["batch_size"].default


@dataclass(frozen=True)
class Rate:
    db: str
    rows: int
    raw_seconds: float
    engine_seconds: float
    records: int

    @property
    def raw_rate(self) -> float:
        return self.rows / self.raw_seconds

    @property
    def engine_rate(self) -> float:
        return self.rows / self.engine_seconds

    @property
    def ratio(self) -> float:
        return self.engine_rate / self.raw_rate


def raw_fetch(url: str, batch: int = BATCH) -> tuple[int, float]:
    """(rows, seconds) to page through the whole table as ``read_after`` does, driver only."""
    source = CelSource(SourceConfig(url=url, table="cel", timezone="UTC"))
    try:
        columns = ", ".join(source.columns.actual.values())
        mark = "?" if source.engine.dialect.paramstyle == "qmark" else "%s"
        sql = f"SELECT {columns} FROM cel WHERE id > {mark} ORDER BY id LIMIT {mark}"
        raw = source.engine.raw_connection()
        try:
            cursor = raw.cursor()
            count, after = 0, 0
            started = time.perf_counter()
            while True:
                cursor.execute(sql, (after, batch))
                rows = cursor.fetchall()
                if not rows:
                    break
                count += len(rows)
                after = rows[-1][0]
            elapsed = time.perf_counter() - started
            cursor.close()
        finally:
            raw.close()
    finally:
        source.close()
    return count, elapsed


def engine_run(url: str, batch: int = BATCH) -> tuple[int, int, float]:
    """(rows, records, seconds) of one real poll over the whole table into /dev/null."""
    with tempfile.TemporaryDirectory(prefix="celsync-bench-") as tmp:
        config = bench_config(url, f"sqlite:///{Path(tmp) / 'state.sqlite'}",
                              [{"type": "jsonl", "path": "/dev/null", "fsync": False}], batch_size=batch)
        pipeline = Pipeline(config)  # set-up (state DB creation) is not timed
        try:
            started = time.perf_counter()
            stats = pipeline.poll()
            elapsed = time.perf_counter() - started
        finally:
            pipeline.close()
    if stats.failed or stats.delivery_failures or stats.delivered != stats.records:
        raise RuntimeError(f"the engine run on {url} did not deliver everything: {stats}")
    return stats.rows, stats.records, elapsed


def measure(db: str, url: str) -> Rate:
    raw_fetch(url)  # warm the database's cache, so both sides read from memory
    rows, raw_seconds = raw_fetch(url)
    engine_rows, records, engine_seconds = engine_run(url)
    if engine_rows != rows:
        raise RuntimeError(f"{db}: the engine read {engine_rows} rows, the raw fetch {rows}")
    return Rate(db, rows, raw_seconds, engine_seconds, records)
