"""The feed consumer against the real Redis: groups, load sharing, claims, dedupe, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from click.testing import CliRunner

from celsync.config import Config, RedisSinkConfig, config_from_dict
from celsync.feed import ConsumeOptions, FeedEntry, FeedInterrupted, StopFlag, consume, feed, read_new
from celsync.sinks.redis_stream import RedisSink
from tests.feeds.feeds_support import LOSE_RACE, delivery, make_record, read_lines

ONCE = ConsumeOptions(once=True, count=7)


def produce(stream: str, numbers: range, **settings: object) -> list[str]:
    sink = RedisSink(RedisSinkConfig(type="redis", stream=stream, batch_size=500, **settings))
    batch = [delivery(make_record(n)) for n in numbers]
    sink.send(batch)
    sink.close()
    return [d.key for d in batch]


def collect(client: redis.Redis, stream: str, group: str, consumer: str = "c1",
            options: ConsumeOptions = ONCE) -> list[str]:
    seen: list[str] = []
    consume(client, stream, group, consumer, lambda e: seen.append(e.fields["key"]), options)
    return seen


def pending(client: redis.Redis, stream: str, group: str) -> int:
    return client.xpending(stream, group)["pending"]


def test_every_group_receives_every_record(client: redis.Redis, stream: str) -> None:
    keys = produce(stream, range(20))
    assert collect(client, stream, "bitrix") == keys
    assert collect(client, stream, "kommo") == keys
    assert pending(client, stream, "bitrix") == pending(client, stream, "kommo") == 0


def test_consumers_of_one_group_share_the_records(client: redis.Redis, stream: str) -> None:
    keys = produce(stream, range(20))
    first = collect(client, stream, "crm", "worker-a", ConsumeOptions(once=True, count=5))
    # a's loop drained everything; interleave reads to show that the load is shared
    more = produce(stream, range(100, 120))
    a = [e.fields["key"] for e in read_new(client, stream, "crm", "worker-a", 10, None)]
    b = [e.fields["key"] for e in read_new(client, stream, "crm", "worker-b", 10, None)]
    assert first == keys
    assert a and b and not set(a) & set(b) and sorted(a + b) == sorted(more)


def test_a_new_group_starting_latest_sees_only_new_records(client: redis.Redis, stream: str) -> None:
    produce(stream, range(5))
    assert collect(client, stream, "late", options=ConsumeOptions(once=True, start="$")) == []
    later = produce(stream, range(10, 13))
    assert collect(client, stream, "late", options=ConsumeOptions(once=True)) == later


def test_a_record_sent_twice_is_handled_once_and_a_new_version_again(client: redis.Redis, stream: str) -> None:
    sink = RedisSink(RedisSinkConfig(type="redis", stream=stream))
    record = make_record(1)
    sink.send([delivery(record)])
    sink.send([delivery(record)])  # a producer crash between XADD and the ledger write
    sink.send([delivery(record, version=2)])
    handled: list[tuple[str, str]] = []
    stats = consume(client, stream, "g", "c", lambda e: handled.append(e.dedupe_id), ONCE)
    assert handled == [(record["key"], "1"), (record["key"], "2")]
    assert (stats.handled, stats.duplicates) == (2, 1)
    assert pending(client, stream, "g") == 0


def test_attempt_entries_reach_the_consumer_with_their_fields(client: redis.Redis, stream: str) -> None:
    sink = RedisSink(RedisSinkConfig(type="redis", stream=stream, attempts=True))
    sink.send([delivery(make_record(1, attempts=(LOSE_RACE,)))])
    entries: list[FeedEntry] = []
    consume(client, stream, "g", "c", entries.append, ONCE)
    assert [e.fields["type"] for e in entries] == ["record", "attempt"]
    assert entries[0].record is not None and entries[1].record is None
    assert json.loads(entries[1].as_json())["hangup_cause"] == "LOSE_RACE"


def test_a_failing_handler_leaves_its_entry_pending_for_the_next_run(client: redis.Redis, stream: str) -> None:
    keys = produce(stream, range(3))

    def fail_on_second(entry: FeedEntry) -> None:
        if entry.fields["key"] == keys[1]:
            raise RuntimeError("CRM down")

    with pytest.raises(RuntimeError, match="CRM down"):
        consume(client, stream, "g", "c", fail_on_second, ONCE)
    assert pending(client, stream, "g") == 2  # the failed entry and the one after it
    assert collect(client, stream, "g", "c") == keys[1:]  # a restart re-reads its own pending first


def test_entries_pending_at_a_live_consumer_are_not_taken_before_claim_idle(client: redis.Redis, stream: str) -> None:
    produce(stream, range(4))
    consume_nothing = ConsumeOptions(once=True, claim_idle=60)
    client.xgroup_create(stream, "g", id="0")
    read_new(client, stream, "g", "busy", 10, None)  # delivered to 'busy', not yet acknowledged
    assert collect(client, stream, "g", "other", consume_nothing) == []
    assert collect(client, stream, "g", "other", ConsumeOptions(once=True, claim_idle=0)) != []


DOOMED_CONSUMER = textwrap.dedent("""
    import sys, time
    import redis
    from celsync.feed import ConsumeOptions, consume

    stream, group, out = sys.argv[1:4]
    handled = 0

    def handler(entry):
        global handled
        handled += 1
        if handled == 4:
            open(out + ".stuck", "w").close()
            time.sleep(600)  # killed here, in the middle of its batch of 10
        with open(out, "a") as f:
            f.write(entry.fields["key"] + "\\n")

    consume(redis.Redis(decode_responses=True), stream, group, "doomed", handler,
            ConsumeOptions(count=10, block_ms=1000))
""")


def test_a_consumer_killed_mid_batch_loses_nothing(client: redis.Redis, stream: str, tmp_path: Path) -> None:
    keys = produce(stream, range(25))
    out = tmp_path / "handled"
    proc = subprocess.Popen([sys.executable, "-c", DOOMED_CONSUMER, stream, "g", str(out)])
    try:
        for _ in range(300):
            if (tmp_path / "handled.stuck").exists():
                break
            time.sleep(0.05)
        else:
            pytest.fail("the doomed consumer never reached its fourth entry")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert pending(client, stream, "g") == 7  # its batch of 10 minus the 3 it acknowledged

    rescued: list[str] = []
    stats = consume(client, stream, "g", "rescuer", lambda e: rescued.append(e.fields["key"]),
                    ConsumeOptions(once=True, claim_idle=0))
    done_before = out.read_text().split()
    assert stats.claimed == 7
    assert sorted(done_before + rescued) == sorted(keys) and len(done_before) == 3
    assert pending(client, stream, "g") == 0


def cli_config(stream: str, *sinks: dict[str, object]) -> Config:
    return config_from_dict({"sinks": list(sinks) or [{"type": "redis", "stream": stream}]})


def test_tail_prints_each_record_as_a_json_line_and_acknowledges_it(client: redis.Redis, stream: str) -> None:
    keys = produce(stream, range(3))
    result = CliRunner().invoke(feed, ["tail", "--group", "ops", "--once"],
                                obj=SimpleNamespace(config=cli_config(stream)))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [json.loads(line)["key"] for line in lines] == keys
    assert "3 handled" in result.stderr
    assert pending(client, stream, "ops") == 0


def test_tail_picks_the_redis_sink_by_name(client: redis.Redis, stream: str) -> None:
    config = cli_config(stream, {"type": "redis", "name": "a", "stream": stream},
                        {"type": "redis", "name": "b", "stream": stream + ":other"})
    runner = CliRunner()
    ambiguous = runner.invoke(feed, ["tail", "--group", "g", "--once"], obj=SimpleNamespace(config=config))
    assert ambiguous.exit_code == 2 and "--sink NAME (configured: a, b)" in ambiguous.output
    produce(stream, range(2))
    picked = runner.invoke(feed, ["tail", "--group", "g", "--once", "--sink", "a"], obj=SimpleNamespace(config=config))
    assert picked.exit_code == 0 and len(picked.stdout.splitlines()) == 2


def test_tail_without_a_redis_sink_says_how_to_add_one() -> None:
    result = CliRunner().invoke(feed, ["tail", "--group", "g"],
                                obj=SimpleNamespace(config=config_from_dict({})))
    assert result.exit_code == 2 and "has no redis sink" in result.output


TAIL = textwrap.dedent("""
    import sys
    from types import SimpleNamespace
    from celsync.config import config_from_dict
    from celsync.feed import feed

    config = config_from_dict({"sinks": [{"type": "redis", "stream": sys.argv[1]}]})
    feed.main(["tail", "--group", "g", "--block", "60000"], obj=SimpleNamespace(config=config))
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_tail_stops_on_a_signal_while_waiting(client: redis.Redis, stream: str, signum: int) -> None:
    produce(stream, range(2))
    proc = subprocess.Popen([sys.executable, "-c", TAIL, stream], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first, second = read_lines(proc, 2)  # then it waits up to 60 s
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert [json.loads(x)["key"] for x in (first, second)] == [make_record(n)["key"] for n in range(2)]
    assert "2 handled" in err
    assert pending(client, stream, "g") == 0


def test_claim_idle_must_be_a_duration(stream: str) -> None:
    result = CliRunner().invoke(feed, ["tail", "--group", "g", "--claim-idle", "soon"],
                                obj=SimpleNamespace(config=cli_config(stream)))
    assert result.exit_code == 2 and "--claim-idle" in result.output


def test_celsync_feed_tail_killed_mid_batch_loses_nothing(client: redis.Redis, stream: str, tmp_path: Path) -> None:
    """The real command: its stdout is a pipe nobody reads, so it blocks in the middle of its
    first batch of 100 (after about 80 lines); SIGKILL it there, then let another consumer
    claim what it left pending."""
    keys = produce(stream, range(300))
    config = tmp_path / "celsync.yaml"
    config.write_text(json.dumps({"state": {"url": f"sqlite:///{tmp_path}/state.sqlite"},
                                  "sinks": [{"type": "redis", "stream": stream}]}))
    celsync = [str(Path(sys.executable).with_name("celsync")), "--config", str(config), "feed", "tail",
               "--group", "g", "--count", "100"]
    client.xgroup_create(stream, "g", id="0")
    stuck = subprocess.Popen([*celsync, "--consumer", "stuck"], stdout=subprocess.PIPE)
    try:
        seen = [0]
        while len(seen) < 300 and not (seen[-1] > 0 and len(set(seen[-5:])) == 1):
            time.sleep(0.1)
            seen.append(pending(client, stream, "g"))  # until it stops moving: blocked on the pipe
        assert stuck.poll() is None
        os.kill(stuck.pid, signal.SIGKILL)
        printed = stuck.communicate(timeout=10)[0].decode().split("\n")
    finally:
        stuck.kill()
    left = pending(client, stream, "g")
    assert 0 < left < 100  # killed mid-batch: part of it acknowledged, the rest pending

    rescue = subprocess.run([*celsync, "--consumer", "rescuer", "--once", "--claim-idle", "0s"],
                            capture_output=True, text=True, timeout=60)
    assert rescue.returncode == 0, rescue.stderr
    done = [json.loads(line)["key"] for line in printed[:-1]]  # the last one may be cut short
    rescued = [json.loads(line)["key"] for line in rescue.stdout.splitlines()]
    assert set(done) | set(rescued) == set(keys)
    assert len(done) + len(rescued) <= len(keys) + 1  # at most the line it died writing twice
    assert f"{left} claimed" in rescue.stderr and pending(client, stream, "g") == 0


def test_a_stop_requested_just_before_the_wait_does_not_block() -> None:
    """A signal between the loop's check and the blocking read must not cost the whole block."""
    flag = StopFlag()
    flag.request()
    with pytest.raises(FeedInterrupted):
        with flag.waiting():
            raise AssertionError("the blocking read must not start")
