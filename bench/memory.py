"""Peak memory of the real ``celsync reprocess`` over a whole bench table (SPEC §11).

The command runs as a child process with a JSONL sink to ``/dev/null`` and a fresh SQLite
state, delivering for real (not ``--dry-run``, which keeps every record to print it). Its
peak resident set comes from the kernel's accounting of the finished child (``wait4``), so
nothing samples it from outside and no peak can be missed.

A small launcher process starts it: Linux carries the forking process's peak over into the
child's ``ru_maxrss`` across ``exec``, so a child forked straight from this (large) benchmark
process would report the benchmark's own size whenever that is larger.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.config import write_config

CELSYNC = str(Path(sys.executable).parent / "celsync")
#: Wider than any tiled table (they start on 2026-01-05 and last days, not months).
PERIOD = ("2026-01-01", "2026-12-31")
#: Runs argv[1:] with its standard output discarded; prints its exit code and ru_maxrss (KiB).
_LAUNCHER = (
    "import os, sys\n"
    "pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ,"
    " file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n"
)


@dataclass(frozen=True)
class Peak:
    rows: int
    peak_mb: float
    seconds: float
    summary: str  # the command's own last line: rows read, records, deliveries


def reprocess_peak(cel_url: str, rows: int) -> Peak:
    """Run ``celsync reprocess`` over the whole table; its peak RSS and wall time."""
    with tempfile.TemporaryDirectory(prefix="celsync-bench-") as tmp:
        config = write_config(Path(tmp) / "config.yaml", cel_url, f"sqlite:///{Path(tmp) / 'state.sqlite'}",
                              [{"type": "jsonl", "path": "/dev/null", "fsync": False}])
        log = Path(tmp) / "stderr.log"
        started = time.monotonic()
        with log.open("wb") as err:
            launched = subprocess.run(
                [sys.executable, "-c", _LAUNCHER, CELSYNC, "--config", str(config), "reprocess",
                 "--from", PERIOD[0], "--to", PERIOD[1]],
                stdout=subprocess.PIPE, stderr=err, text=True, check=True,
            )
        seconds = time.monotonic() - started
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    summary = lines[-1].split("\r")[-1] if lines else ""
    code, max_rss_kib = (int(v) for v in launched.stdout.split())
    if code != 0:
        raise RuntimeError(f"celsync reprocess over {rows:,} rows exited {code}: {summary}")
    return Peak(rows, max_rss_kib / 1024, seconds, summary)
