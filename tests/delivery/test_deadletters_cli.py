"""`celsync deadletters list|retry` against a real state DB, through click's runner."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Iterator

import click
import pytest
from click.testing import CliRunner

from celsync.config import config_from_dict
from celsync.deadletters import deadletters
from celsync.state.store import DEAD, DELIVERED, Cursor, Pending, StateStore, Transition


@pytest.fixture
def store(sqlite_url: str) -> Iterator[StateStore]:
    s = StateStore(sqlite_url)
    s.ensure_ready()
    s.commit("src", Cursor(3, 3), ["kommo", "log"],
             [Pending(k, k.split("/")[0], {"key": k}) for k in ("a/1", "b/1", "c/1")])
    items = s.claim("kommo", 10, 5.0)
    s.finish("kommo", [
        (items[0], Transition(DEAD, False, 3, 1.0, 0.0, "400 invalid phone number")),
        (items[1], Transition(DEAD, True, 9, 1.0, 0.0, "gave up after 9 attempts: timeout")),
        (items[2], Transition(DELIVERED, False, 0, None, 0.0, None)),
    ], now=5.0, disable="403 Forbidden: account blocked")
    yield s
    s.close()


def invoke(store: StateStore, *args: str):
    cfg = config_from_dict({"sinks": [{"type": "kommo", "base_url": "https://x.kommo.com", "token": "t"},
                                      {"type": "jsonl", "name": "log"}]})
    group = click.Group(commands={"deadletters": deadletters})
    return CliRunner().invoke(group, ["deadletters", *args], obj=SimpleNamespace(store=store, config=cfg))


def test_list_names_sinks_keys_and_errors(store: StateStore) -> None:
    result = invoke(store, "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("sink kommo is DISABLED since 1970-01-01T00:00:05+00:00: 403 Forbidden: account blocked")
    assert "celsync deadletters retry --sink kommo" in lines[0]
    assert lines[1].startswith("kommo  a/1  v1  attempts=3  first_failure=1970-01-01T00:00:01+00:00")
    assert lines[1].endswith("error: 400 invalid phone number")
    assert lines[2].startswith("kommo  b/1") and "may have arrived" in lines[2]
    assert invoke(store, "list", "--sink", "log").output == "no dead letters for sink log\n"


def test_an_unknown_sink_is_refused_with_the_known_ones(store: StateStore) -> None:
    result = invoke(store, "list", "--sink", "bitrix")
    assert result.exit_code == 2 and "no sink named 'bitrix'; configured: kommo, log" in result.output


def test_retry_one_key_does_not_re_enable(store: StateStore) -> None:
    result = invoke(store, "retry", "--key", "a/1")
    assert result.exit_code == 0, result.output
    assert result.output == "kommo: a/1 queued again\n1 dead letter(s) queued again, 0 sink(s) re-enabled\n"
    assert store.disabled_reason("kommo") is not None
    assert [d.key for d in store.dead_letters()] == ["b/1"]
    missing = invoke(store, "retry", "--key", "zzz/1")
    assert missing.exit_code == 1 and "no dead letter with key 'zzz/1'" in missing.output


def test_retry_a_sink_requeues_and_re_enables_it(store: StateStore) -> None:
    result = invoke(store, "retry", "--sink", "kommo")
    assert result.exit_code == 0, result.output
    assert "kommo: a/1 queued again" in result.output and "kommo: b/1 queued again" in result.output
    assert "sink kommo re-enabled (it was disabled: 403 Forbidden: account blocked)" in result.output
    assert store.dead_letters() == [] and store.disabled_reason("kommo") is None
    assert {k: v for k, v in store.counts("kommo")["kommo"].items() if v} == {"pending": 1, "unknown": 1, "delivered": 1}
