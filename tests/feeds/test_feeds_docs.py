"""The 10-line consumer at the top of docs/feeds.md works as printed, against the real Redis."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import redis

from celsync.config import RedisSinkConfig
from celsync.sinks.redis_stream import RedisSink
from tests.feeds.feeds_support import delivery, make_record, read_lines

DOC = Path(__file__).parents[2] / "docs" / "feeds.md"


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def consumer_example() -> str:
    block = re.search(r"<!-- consumer-example:start -->\n```python\n(.*?)```\n<!-- consumer-example:end -->",
                      DOC.read_text(encoding="utf-8"), re.S)
    assert block, "docs/feeds.md lost its marked consumer example"
    return block.group(1)


def test_the_documented_consumer_is_ten_lines() -> None:
    assert len(consumer_example().splitlines()) == 10


def test_the_documented_consumer_reads_and_acknowledges_every_record(client: redis.Redis, stream: str) -> None:
    code = consumer_example().replace('"celsync:calls"', repr(stream))
    sink = RedisSink(RedisSinkConfig(type="redis", stream=stream))
    records = [make_record(n) for n in range(5)]
    sink.send([delivery(r) for r in records])
    for run in range(2):  # the second run finds its group already there (BUSYGROUP)
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            lines = read_lines(proc, len(records))
            acknowledged = wait_until(lambda: client.xpending(stream, "my-crm")["pending"] == 0)
        finally:
            proc.kill()
            _, err = proc.communicate(timeout=10)
        assert [json.loads(x)["key"] for x in lines] == [r["key"] for r in records], err
        assert acknowledged  # it prints, then acknowledges
        records = [make_record(n) for n in range(10, 15)]
        sink.send([delivery(r) for r in records])
