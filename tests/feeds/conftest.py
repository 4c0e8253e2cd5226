"""Fixtures of the feed tests: a client of the real Redis (``redis_url`` from tests/conftest.py),
a stream name per test, and a real webhook receiver."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest
import redis

from tests.feeds.feeds_support import Receiver


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
