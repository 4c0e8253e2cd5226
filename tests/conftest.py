"""Shared fixtures for every celsync test. The names below are stable: other suites use them.

Services are real and on loopback. A fixture that needs one starts it when it is down and
fails the test (never skips) when it still does not answer.

``mariadb_url``   (function) a fresh empty MariaDB database ``celsync_t_<hex>``, dropped after
                  the test: ``mysql+pymysql://root@127.0.0.1:3306/<db>?charset=utf8mb4``.
``postgres_url``  (function) the same on PostgreSQL: ``postgresql+psycopg://postgres@127.0.0.1:5432/<db>``.
``sqlite_url``    (function) ``sqlite:///<tmp_path>/cel.sqlite`` (the file does not exist yet).
``db_url``        (function, parametrized ``mariadb`` / ``postgresql`` / ``sqlite``) one of the
                  three above: a test using it runs once per database.
``redis_url``     (session) ``redis://127.0.0.1:6379/0`` once Redis answers; the database is
                  shared, so use key names unique to the test (e.g. with ``uuid4().hex``).
``corpus``        (session) the scenarios of tests/fixtures/asterisk22-pjsip/corpus.json as
                  stored (``{id, description, truth, sip_observed, columns, rows}``); read-only.
``corpus_rows``   (function) every corpus row as a canonical dict (``celsync.model.CEL_COLUMNS``
                  keys, ``eventtime`` an aware UTC datetime), ascending by id; a fresh copy.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg
import pymysql
import pytest

from celsync.cel.schema import load_corpus, load_scenarios

_HOST = "127.0.0.1"
_START_TIMEOUT = 30.0


def _wait_up(name: str, check: Callable[[], None], start: list[str]) -> None:
    try:
        check()
        return
    except Exception:  # noqa: BLE001 - any failure means "not up yet"
        pass
    subprocess.run(start, check=False, capture_output=True, timeout=60)
    deadline = time.monotonic() + _START_TIMEOUT
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            check()
            return
        except Exception as exc:  # noqa: BLE001
            error = exc
            time.sleep(0.5)
    pytest.fail(f"{name} on {_HOST} is down and could not be started ({' '.join(start)}): {error}")


def _mariadb_admin() -> pymysql.connections.Connection:
    return pymysql.connect(host=_HOST, port=3306, user="root", autocommit=True, connect_timeout=5)


def _postgres_admin() -> psycopg.Connection[Any]:
    return psycopg.connect(host=_HOST, port=5432, user="postgres", dbname="postgres",
                           autocommit=True, connect_timeout=5)


def _ping(connect: Callable[[], Any]) -> Callable[[], None]:
    def check() -> None:
        connect().close()
    return check


def _redis_ping() -> None:
    with socket.create_connection((_HOST, 6379), timeout=2) as s:
        s.sendall(b"PING\r\n")
        if not s.recv(16).startswith(b"+PONG"):
            raise ConnectionError("Redis did not answer PONG")


@pytest.fixture(scope="session")
def _mariadb_up() -> None:
    _wait_up("MariaDB", _ping(_mariadb_admin),
             ["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd"])


@pytest.fixture(scope="session")
def _postgres_up() -> None:
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[0] \
        if Path("/etc/postgresql").is_dir() else "15"
    _wait_up("PostgreSQL", _ping(_postgres_admin),
             ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"])


@pytest.fixture(scope="session")
def redis_url() -> str:
    _wait_up("Redis", _redis_ping,
             ["redis-server", "--daemonize", "yes", "--bind", _HOST, "--port", "6379",
              "--save", "", "--appendonly", "no"])
    return f"redis://{_HOST}:6379/0"


def _db_name() -> str:
    return f"celsync_t_{secrets.token_hex(6)}"


@pytest.fixture
def mariadb_url(_mariadb_up: None) -> Iterator[str]:
    name = _db_name()
    admin = _mariadb_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield f"mysql+pymysql://root@{_HOST}:3306/{name}?charset=utf8mb4"
        with admin.cursor() as cur:  # connections a test left open would block the DROP
            cur.execute("SELECT id FROM information_schema.processlist WHERE db = %s", (name,))
            for (pid,) in cur.fetchall():
                try:
                    cur.execute("KILL %s", (pid,))
                except pymysql.MySQLError:
                    pass  # it ended on its own meanwhile ("Unknown thread id")
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        admin.close()


@pytest.fixture
def postgres_url(_postgres_up: None) -> Iterator[str]:
    name = _db_name()
    with _postgres_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@{_HOST}:5432/{name}"
    with _postgres_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cel.sqlite'}"


@pytest.fixture(params=["mariadb", "postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    fixture = {"mariadb": "mariadb_url", "postgresql": "postgres_url", "sqlite": "sqlite_url"}
    return str(request.getfixturevalue(fixture[request.param]))


@pytest.fixture(scope="session")
def corpus() -> list[dict[str, Any]]:
    return load_scenarios()


@pytest.fixture(scope="session")
def _corpus_rows() -> list[dict[str, Any]]:
    return load_corpus()


@pytest.fixture
def corpus_rows(_corpus_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(r) for r in _corpus_rows]
