"""`python -m bench` itself works: it builds a tiled table, runs its measures and prints the
table (no timing is asserted: the numbers belong in docs/benchmarks.md, not in tests)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_prints_one_table_row_per_measure(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "rate", "--only", "memory", "--db", "sqlite",
         "--rows", "3000", "--big", "6000", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1 = a target missed, still a full table
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("measure"))
    table = [[cell.strip() for cell in line.split(" | ")] for line in lines[header + 2:]]
    expected = ["engine / raw fetch, sqlite, 3,", "peak RSS, celsync reprocess, 3,",
                "peak RSS, celsync reprocess, 6,", "peak RSS growth, 3,000 -> 6,000 rows"]
    assert len(table) == len(expected)
    assert all(row[0].startswith(prefix) for row, prefix in zip(table, expected)), table
    assert all(row[3] in ("pass", "FAIL") for row in table)
    assert (proc.returncode == 0) == all(row[3] == "pass" for row in table)
    # The tables were generated where asked, whole calls of about the requested size.
    for rows in (3000, 6000):
        with sqlite3.connect(tmp_path / f"cel-{rows}.sqlite") as db:
            stored = db.execute("SELECT count(*) FROM cel").fetchone()[0]
            meta = db.execute("SELECT requested, stored FROM bench_meta").fetchone()
        assert meta == (rows, stored) and rows <= stored < rows + 100
    assert "machine:" in proc.stdout
