"""Peak memory of the real ``celsync reprocess`` over a whole bench table (SPEC §11).

The command runs as a child process with a JSONL sink to ``/dev/null`` and a fresh SQLite
state, delivering for real (not ``--dry-run``, which keeps every record to print it). Its
peak resident set comes from the kernel's accounting of the finished child (``wait4``), so
nothing samples it from outside and no peak can be missed.
"""

from __future__ import annotations

import os
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
            proc = subprocess.Popen(
                [CELSYNC, "--config", str(config), "reprocess", "--from", PERIOD[0], "--to", PERIOD[1]],
                stdout=subprocess.DEVNULL, stderr=err,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    summary = lines[-1].split("\r")[-1] if lines else ""
    if proc.returncode != 0:
        raise RuntimeError(f"celsync reprocess over {rows:,} rows exited {proc.returncode}: {summary}")
    return Peak(rows, usage.ru_maxrss / 1024, seconds, summary)  # ru_maxrss is in KiB on Linux
