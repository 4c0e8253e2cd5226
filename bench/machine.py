"""The machine the numbers came from: they mean nothing without it."""

from __future__ import annotations

import os
import platform
import sqlite3
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.generate import SERVERS


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _server_version(db: str) -> str:
    admin_url, _, _ = SERVERS[db]
    engine = create_engine(admin_url)
    try:
        with engine.connect() as conn:
            version = str(conn.execute(text("SELECT version()")).scalar())
            return version.removeprefix("PostgreSQL ").split(" on ")[0]
    except Exception as exc:  # noqa: BLE001 - a server that is down is reported, not fatal
        return f"unavailable ({exc.__class__.__name__})"
    finally:
        engine.dispose()


def describe() -> list[str]:
    return [
        f"machine: {os.cpu_count()} CPUs ({_cpu_model()}), {_memory_gib():.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}",
        f"software: Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"MariaDB {_server_version('mariadb')}, PostgreSQL {_server_version('postgresql')}",
    ]
