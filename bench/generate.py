"""Large, realistic CEL tables for the benchmarks: the real corpus traces tiled (SPEC §11).

``celsync.cel.tiling.tile`` gives every copy of a recorded call fresh uniqueids, linkedids,
times and customer numbers and interleaves the copies as on a busy PBX; the rows go in
through ``celsync.cel.schema.insert_rows`` (the ``stock`` schema), so the benchmark reads
exactly what the tests read. A table is reused while it holds what was asked for:

- SQLite: ``bench/out/cel-<rows>.sqlite``, built under a temporary name and renamed when
  complete (an interrupted load is never mistaken for a finished one);
- MariaDB / PostgreSQL: database ``celsync_bench``, recreated when its ``bench_meta`` row
  (written last) does not name the requested size.

    python -m bench.generate --db sqlite|mariadb|postgresql --rows N [--out DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

from celsync.cel.schema import create_table, insert_rows, load_corpus
from celsync.cel.tiling import templates, tile

OUT = Path(__file__).resolve().parent / "out"
DIALECTS = ("sqlite", "mariadb", "postgresql")
BENCH_DB = "celsync_bench"
SEED = 11
#: Server, admin URL (no database), the benchmark database's URL, and how to start it.
SERVERS: dict[str, tuple[str, str, list[str]]] = {
    "mariadb": (
        "mysql+pymysql://root@127.0.0.1:3306/?charset=utf8mb4",
        f"mysql+pymysql://root@127.0.0.1:3306/{BENCH_DB}?charset=utf8mb4",
        ["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd"],
    ),
    "postgresql": (
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        f"postgresql+psycopg://postgres@127.0.0.1:5432/{BENCH_DB}",
        ["sh", "-c", "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"],
    ),
}


def tiled(rows: int, *, seed: int = SEED, **kwargs: Any):
    """About ``rows`` canonical CEL rows (whole calls), ids from 1, in time order."""
    return tile(templates(load_corpus()), rows=rows, seed=seed, **kwargs)


def cel_url(db: str, rows: int, log: Callable[[str], None] = print, out: Path = OUT) -> str:
    """The URL of a ``cel`` table of about ``rows`` tiled rows on ``db``; built if needed.

    SQLite files are kept in ``out``.
    """
    if db == "sqlite":
        return f"sqlite:///{ensure_sqlite(rows, log, out)}"
    if db in SERVERS:
        return ensure_server(db, rows, log)
    raise ValueError(f"--db {db!r}: expected one of {', '.join(DIALECTS)}")


def ensure_sqlite(rows: int, log: Callable[[str], None] = print, out: Path = OUT) -> Path:
    path = out / f"cel-{rows}.sqlite"
    if path.is_file():
        return path
    out.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{partial}")

    @event.listens_for(engine, "connect")
    def _fast(dbapi_conn: Any, _record: Any) -> None:
        # A throwaway benchmark file: no journal and no fsync make the load several times faster.
        dbapi_conn.execute("PRAGMA journal_mode = OFF")
        dbapi_conn.execute("PRAGMA synchronous = OFF")

    _load(engine, rows, f"SQLite {path.name}", log)
    engine.dispose()
    partial.rename(path)
    return path


def ensure_server(db: str, rows: int, log: Callable[[str], None] = print) -> str:
    admin_url, url, start = SERVERS[db]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        _wait_up(db, admin, start)
        if _stored_rows(create_engine(url)) == rows:
            return url
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DB}"))
            conn.execute(text(f"CREATE DATABASE {BENCH_DB}"))
    finally:
        admin.dispose()
    engine = create_engine(url)
    try:
        _load(engine, rows, f"{db} {BENCH_DB}", log)
    finally:
        engine.dispose()
    return url


def _load(engine: Engine, rows: int, where: str, log: Callable[[str], None]) -> None:
    started = time.monotonic()
    log(f"generating {rows:,} CEL rows into {where} ...")
    create_table(engine, "cel", "stock")
    count = insert_rows(engine, "cel", "stock", tiled(rows), tz="UTC")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_meta (requested BIGINT NOT NULL, stored BIGINT NOT NULL)"))
        conn.execute(text("INSERT INTO bench_meta VALUES (:r, :s)"), {"r": rows, "s": count})
    log(f"  {count:,} rows in {time.monotonic() - started:.0f} s")


def _stored_rows(engine: Engine) -> int | None:
    """The size the table was built for, or None if it is absent or was never finished."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT requested FROM bench_meta")).scalar()
    except Exception:  # noqa: BLE001 - no database or no table: build it
        return None
    finally:
        engine.dispose()


def _wait_up(name: str, admin: Engine, start: list[str], timeout: float = 30.0) -> None:
    """Start a local database server that is down (as the test fixtures do), or fail clearly."""
    def up() -> bool:
        try:
            with admin.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure means "not up yet"
            return False

    if up():
        return
    subprocess.run(start, check=False, capture_output=True, timeout=60)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if up():
            return
        time.sleep(0.5)
    raise SystemExit(f"{name} on 127.0.0.1 is down and could not be started with: {' '.join(start)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=DIALECTS, default="sqlite")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=OUT, help="directory of the SQLite files")
    args = parser.parse_args(argv)
    print(cel_url(args.db, args.rows, out=args.out))


if __name__ == "__main__":
    main()
