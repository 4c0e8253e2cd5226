"""Fixtures: the fake CRMs on real loopback ports, and sinks pointed at them."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from celsync.config import Bitrix24SinkConfig, KommoSinkConfig
from celsync.sinks.bitrix24 import Bitrix24Sink
from celsync.sinks.kommo import KommoSink
from tests.fakes.bitrix24 import FakeBitrix24
from tests.fakes.kommo import FakeKommo
from tests.fakes.records import PHONES
from tests.fakes.server import ThreadedServer

RECORDINGS = "https://pbx.example.com/rec/{recording_id}"


@pytest.fixture
def bitrix() -> Iterator[tuple[FakeBitrix24, ThreadedServer]]:
    fake = FakeBitrix24()
    with ThreadedServer(fake) as server:
        yield fake, server


@pytest.fixture
def kommo() -> Iterator[tuple[FakeKommo, ThreadedServer]]:
    fake = FakeKommo(contacts={p: ("contacts", 500 + i) for i, p in enumerate(PHONES)})
    with ThreadedServer(fake) as server:
        yield fake, server


def bitrix_config(fake: FakeBitrix24, server: ThreadedServer, **overrides: Any) -> Bitrix24SinkConfig:
    data: dict[str, Any] = {
        "type": "bitrix24",
        "webhook_url": f"{server.url}{fake.base_url_path}",
        "users": {"101": 7},
        "default_user": 1,
        "recording_url": RECORDINGS,
        "timeout": 5,
    }
    data.update(overrides)
    return Bitrix24SinkConfig.model_validate(data)


def kommo_config(fake: FakeKommo, server: ThreadedServer, **overrides: Any) -> KommoSinkConfig:
    data: dict[str, Any] = {
        "type": "kommo",
        "base_url": server.url,
        "token": fake.token,
        "users": {"101": 11, "102": 12},
        "default_user": 10,
        "recording_url": RECORDINGS,
        "timeout": 5,
    }
    data.update(overrides)
    return KommoSinkConfig.model_validate(data)


def _factory(build: Callable[..., Any], *fake_and_server: Any) -> Iterator[Callable[..., Any]]:
    """A sink maker bound to one fake; every sink made is closed after the test."""
    made: list[Any] = []

    def make(**overrides: Any) -> Any:
        made.append(build(*fake_and_server, **overrides))
        return made[-1]

    yield make
    for sink in made:
        sink.close()


@pytest.fixture
def bitrix_sink(bitrix: tuple[FakeBitrix24, ThreadedServer]) -> Iterator[Callable[..., Bitrix24Sink]]:
    yield from _factory(lambda f, s, **kw: Bitrix24Sink(bitrix_config(f, s, **kw)), *bitrix)


@pytest.fixture
def kommo_sink(kommo: tuple[FakeKommo, ThreadedServer]) -> Iterator[Callable[..., KommoSink]]:
    yield from _factory(lambda f, s, **kw: KommoSink(kommo_config(f, s, **kw)), *kommo)
