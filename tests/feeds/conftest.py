"""Fixtures of the feed tests: the real Redis on 127.0.0.1:6379 and a real webhook receiver."""

from __future__ import annotations

import subprocess
import time
import uuid
from typing import Iterator

import pytest
import redis

from feeds_support import Receiver

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.ConnectionError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _redis_up():
        subprocess.run(
            ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379",
             "--save", "", "--appendonly", "no"],
            check=False, capture_output=True,
        )
        for _ in range(50):
            if _redis_up():
                break
            time.sleep(0.1)
        else:
            pytest.fail("Redis is not reachable on 127.0.0.1:6379 and could not be started")
    return REDIS_URL


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()


@pytest.fixture
def stream(client: redis.Redis) -> Iterator[str]:
    """A stream name no other test uses; deleted afterwards."""
    name = f"celsync:test:{uuid.uuid4().hex}"
    yield name
    client.delete(name)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()
