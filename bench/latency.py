"""Live latency: a call's ``LINKEDID_END`` committed → its record in the sink (SPEC §11).

A writer thread replays tiled calls into a SQLite CEL table in real time (each row inserted
when its ``eventtime`` comes, so the table grows as on a busy PBX) and notes when each
``LINKEDID_END`` row is committed. The real ``celsync run`` polls the table with a JSONL
file sink, and the file is tailed: a call's latency is the moment its first record line
appears minus the commit of its ``LINKEDID_END``. The database numbers the rows, so there
are no id gaps for the gap grace to wait on. Calls that end in the first seconds, while
``celsync`` starts up, are left out.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import create_engine, event

from bench.config import bench_config, write_config
from bench.generate import tiled
from bench.memory import CELSYNC
from celsync.cel.schema import create_table, insert_rows, load_corpus
from celsync.cel.tiling import templates

WARM_UP = 5.0  # seconds after celsync starts before calls count
DRAIN = 60.0  # seconds the calls started before the cut-off may take to end


@dataclass(frozen=True)
class Latency:
    calls: int  # calls ended after the warm-up whose record was seen
    unrecorded: int  # calls ended after the warm-up with no record (local calls are not recorded)
    p50: float
    p95: float
    worst: float
    target: float  # poll interval + settle_seconds + 1 s
    rows: int
    rows_per_second: float  # written while new calls were starting


class _Writer(threading.Thread):
    """Inserts tiled rows as their time comes; starts no new call after ``duration``."""

    def __init__(self, url: str, rows_per_second: float, duration: float) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url)
        event.listen(self.engine, "connect", lambda c, _r: c.execute("PRAGMA journal_mode = WAL"))
        create_table(self.engine, "cel", "stock")
        calls = templates(load_corpus())
        per_call = sum(len(c) for c in calls) / len(calls)
        self.start_at = datetime.now(timezone.utc) + timedelta(seconds=0.5)
        self.cutoff = self.start_at + timedelta(seconds=duration)
        self.rows = tiled(10**9, start=self.start_at, calls_per_minute=rows_per_second * 60 / per_call)
        self.ends: dict[str, float] = {}  # linkedid -> time its LINKEDID_END was committed
        self.written = self.before_cutoff = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._replay()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc

    def _replay(self) -> None:
        started: set[str] = set()
        pending = next(self.rows)
        while True:
            now = datetime.now(timezone.utc)
            due = []
            while pending["eventtime"] <= now:
                if pending["eventtime"] < self.cutoff:
                    started.add(pending["linkedid"])
                if pending["linkedid"] in started:
                    pending.pop("id")  # the database numbers rows in commit order: no gaps
                    due.append(pending)
                pending = next(self.rows)
            if due:
                insert_rows(self.engine, "cel", "stock", due, tz="UTC")
                committed = time.time()
                self.written += len(due)
                self.before_cutoff += sum(1 for row in due if row["eventtime"] < self.cutoff)
                for row in due:
                    if row["eventtype"] == "LINKEDID_END":
                        self.ends[row["linkedid"]] = committed
            if now > self.cutoff and started <= self.ends.keys():
                return
            if now > self.cutoff + timedelta(seconds=DRAIN):
                raise RuntimeError(f"calls started in the latency run did not end within {DRAIN:.0f} s")
            time.sleep(min(0.01, max(0.0, (pending["eventtime"] - now).total_seconds())))


def _tail(path: Path, seen: dict[str, float], stop: threading.Event) -> None:
    """Note when each call's first record line appears in the JSONL file."""
    offset, partial = 0, b""
    while not stop.is_set():
        if path.exists():
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            stamp = time.time()
            offset += len(data)
            *lines, partial = (partial + data).split(b"\n")
            for line in lines:
                seen.setdefault(json.loads(line)["call_id"], stamp)
        stop.wait(0.01)


def measure(duration: float = 60.0, rows_per_second: float = 200.0, interval: float = 0.5) -> Latency:
    with tempfile.TemporaryDirectory(prefix="celsync-bench-") as tmp:
        cel = f"sqlite:///{Path(tmp) / 'cel.sqlite'}"
        jsonl = Path(tmp) / "calls.jsonl"
        sinks = [{"type": "jsonl", "path": str(jsonl)}]
        state = f"sqlite:///{Path(tmp) / 'state.sqlite'}"
        config = write_config(Path(tmp) / "config.yaml", cel, state, sinks, poll_interval=interval)
        target = interval + bench_config(cel, state, sinks).pbx.settle_seconds + 1.0
        writer = _Writer(cel, rows_per_second, duration)
        writer.start()
        time.sleep(1.0)  # a table with rows in it: celsync judges `extra` from the newest rows
        seen: dict[str, float] = {}
        stop = threading.Event()
        tail = threading.Thread(target=_tail, args=(jsonl, seen, stop), daemon=True)
        tail.start()
        log_path = Path(tmp) / "celsync.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen([CELSYNC, "--config", str(config), "run", "--interval", str(interval)],
                                    stdout=subprocess.DEVNULL, stderr=log)
        counted_from = time.time() + WARM_UP
        try:
            writer.join()
            if writer.error is not None:
                raise writer.error
            # Every record due has had time to arrive well past the target; then stop.
            time.sleep(max(0.0, max(writer.ends.values(), default=0.0) + 3 * target - time.time()))
        finally:
            stop.set()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            tail.join()
            writer.engine.dispose()
            errors = log_path.read_text(errors="replace")
        if proc.returncode not in (0, -signal.SIGTERM):
            raise RuntimeError(f"celsync run exited {proc.returncode}: {errors[-2000:]}")
    counted = {c: t for c, t in writer.ends.items() if t >= counted_from}
    delays = sorted(seen[c] - t for c, t in counted.items() if c in seen)
    if not delays:
        raise RuntimeError(f"no call records appeared in the JSONL sink; celsync said: {errors[-2000:]}")
    return Latency(
        calls=len(delays), unrecorded=len(counted) - len(delays), p50=_quantile(delays, 0.50),
        p95=_quantile(delays, 0.95), worst=delays[-1], target=target, rows=writer.written,
        rows_per_second=writer.before_cutoff / duration,
    )


def _quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile of sorted ``values``."""
    return values[max(0, math.ceil(q * len(values)) - 1)]
