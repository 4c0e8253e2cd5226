"""Reading the Redis feed: ``celsync feed tail`` and the consumer loop behind it.

The loop is the recipe of docs/feeds.md in Python, usable as a library (``consume``):

1. ``XGROUP CREATE <stream> <group> 0|$ MKSTREAM`` (an existing group is kept);
2. ``XREADGROUP ... 0``: entries this consumer read before a restart but never acknowledged;
3. ``XAUTOCLAIM`` entries idle longer than ``claim_idle``: a dead consumer's unfinished work;
4. ``XREADGROUP ... >``: new entries;
5. the handler, then ``XACK`` — only after the handler returned, so a crash re-delivers.

Delivery is at least once. Duplicates (a record re-sent after a producer crash between
XADD and its ledger write, an entry handled but not acknowledged before a consumer died) are
dropped by ``(key, version)`` within a bounded window of recent entries; a consumer that must
never see one keeps that set durably. A higher ``version`` of a key is an update, not a
duplicate.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import click
import redis

from celsync.config import RedisSinkConfig, parse_duration
from celsync.sinks.redis_stream import connect

if TYPE_CHECKING:
    from celsync.config import Config

#: where a new group starts reading: the oldest entry the stream keeps, or only new ones
STARTS = {"earliest": "0", "latest": "$"}
log = logging.getLogger(__name__)
_DONE = "0-0"  # XAUTOCLAIM's cursor at the end of a sweep


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One stream entry: ``fields`` as written by the Redis sink (all strings)."""

    id: str
    fields: Mapping[str, str]

    @property
    def dedupe_id(self) -> tuple[str, str] | None:
        key = self.fields.get("key")
        return (key, self.fields.get("version", "")) if key else None

    @property
    def record(self) -> dict[str, Any] | None:
        """The SPEC §7 record of a ``type=record`` entry; None for an attempt entry."""
        raw = self.fields.get("record")
        return json.loads(raw) if raw else None

    def as_json(self) -> str:
        """One JSON line: the record itself, or the flat fields of any other entry."""
        return self.fields.get("record") or json.dumps(dict(self.fields), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class ConsumeOptions:
    count: int = 100  # entries per read
    block_ms: int = 5000  # how long one read waits for new entries
    claim_idle: float = 60.0  # seconds a pending entry must be idle before it is taken over
    once: bool = False  # return when there is nothing left to do instead of waiting
    start: str = "0"  # where a group created here starts: "0" (earliest) or "$" (latest)
    dedupe_window: int = 10_000  # recent (key, version) pairs remembered


@dataclass(slots=True)
class ConsumeStats:
    handled: int = 0
    duplicates: int = 0  # acknowledged without calling the handler
    claimed: int = 0  # taken over from idle consumers
    trimmed: int = 0  # pending entries the stream had already trimmed (data lost: raise MAXLEN)


class RecentKeys:
    """A bounded set that forgets its oldest members first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def add(self, item: tuple[str, str]) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


class FeedInterrupted(Exception):
    """A stop signal arrived while the loop was waiting for new entries."""


class StopFlag:
    """Set by SIGINT/SIGTERM: the loop stops between entries, or at once while it waits."""

    def __init__(self) -> None:
        self.requested = False
        self._waiting = False

    def request(self, *_: object) -> None:
        self.requested = True
        if self._waiting:
            raise FeedInterrupted

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        self._waiting = True
        try:
            if self.requested:  # the signal came just before the wait began: do not block
                raise FeedInterrupted
            yield
        finally:
            self._waiting = False


def ensure_group(client: redis.Redis, stream: str, group: str, start: str = "0") -> bool:
    """Create the consumer group (and the stream) unless it exists; True if created."""
    try:
        client.xgroup_create(stream, group, id=start, mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return False
    return True


def _entries(reply: Any) -> list[FeedEntry]:
    """Entries of an XREADGROUP reply for one stream (RESP2 list or RESP3 dict)."""
    streams = reply.values() if isinstance(reply, dict) else (s[1:] for s in reply or ())
    return [FeedEntry(i, f or {}) for (items,) in streams for i, f in items or ()]


def read_own_pending(client: redis.Redis, stream: str, group: str, consumer: str, count: int) -> list[FeedEntry]:
    """Entries delivered to ``consumer`` and never acknowledged (its work before a restart)."""
    return _entries(client.xreadgroup(group, consumer, {stream: "0"}, count=count))


def read_new(
    client: redis.Redis, stream: str, group: str, consumer: str, count: int, block_ms: int | None
) -> list[FeedEntry]:
    """Entries never delivered to the group; waits up to ``block_ms`` (None: no wait)."""
    return _entries(client.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms))


def claim_idle(
    client: redis.Redis, stream: str, group: str, consumer: str, min_idle_ms: int, cursor: str, count: int
) -> tuple[str, list[FeedEntry], list[str]]:
    """One XAUTOCLAIM step: (next cursor, entries now ours, pending ids already trimmed)."""
    reply = client.xautoclaim(stream, group, consumer, min_idle_ms, start_id=cursor, count=count)
    trimmed = list(reply[2]) if len(reply) > 2 else []
    return reply[0], [FeedEntry(i, f or {}) for i, f in reply[1]], trimmed


def consume(
    client: redis.Redis,
    stream: str,
    group: str,
    consumer: str,
    handler: Callable[[FeedEntry], None],
    options: ConsumeOptions = ConsumeOptions(),
    stop: StopFlag | None = None,
) -> ConsumeStats:
    """Run the consumer loop until ``stop`` is requested (or, with ``options.once``, until
    there is nothing to do: no own pending, nothing idle to claim, nothing new).

    A handler exception propagates; its entry stays pending (re-read after a restart under
    the same consumer name, or claimed by another consumer after ``claim_idle``).
    """
    stop = stop or StopFlag()
    stats = ConsumeStats()
    recent = RecentKeys(options.dedupe_window)
    ensure_group(client, stream, group, options.start)
    own_backlog, cursor, last_sweep = True, _DONE, float("-inf")
    claim_every = 0.0 if options.once else max(options.claim_idle / 2, 1.0)

    def handle(entry: FeedEntry) -> None:
        ident = entry.dedupe_id
        if not entry.fields:
            stats.trimmed += 1
            log.warning("entry %s of %r was trimmed before group %r handled it: data lost; raise the "
                        "sink's maxlen", entry.id, stream, group)
        elif ident is not None and ident in recent:
            stats.duplicates += 1
        else:
            handler(entry)
            stats.handled += 1
        client.xack(stream, group, entry.id)
        if ident is not None:
            recent.add(ident)

    while not stop.requested:
        entries: list[FeedEntry] = []
        if own_backlog:
            entries = read_own_pending(client, stream, group, consumer, options.count)
            own_backlog = bool(entries)
        if not entries and (cursor != _DONE or time.monotonic() - last_sweep >= claim_every):
            if cursor == _DONE:
                last_sweep = time.monotonic()
            cursor, entries, gone = claim_idle(
                client, stream, group, consumer, int(options.claim_idle * 1000), cursor, options.count
            )
            stats.claimed += len(entries)
            stats.trimmed += len(gone)
            if gone:
                log.warning("%d pending entries of %r were trimmed before group %r handled them: data "
                            "lost; raise the sink's maxlen", len(gone), stream, group)
        if not entries:
            try:
                with stop.waiting():
                    entries = read_new(client, stream, group, consumer, options.count,
                                       None if options.once else options.block_ms)
            except FeedInterrupted:
                break
        if not entries and options.once and cursor == _DONE:
            break
        for entry in entries:
            handle(entry)
            if stop.requested:
                break
    return stats


def find_redis_sink(config: Config, name: str | None) -> RedisSinkConfig:
    """The redis sink named ``name``, or the only one configured."""
    sinks = [s for s in config.sinks if isinstance(s, RedisSinkConfig)]
    if name is not None:
        for s in sinks:
            if s.sink_name == name:
                return s
        known = ", ".join(s.sink_name for s in sinks) or "none"
        raise click.UsageError(f"no redis sink named {name!r} in the configuration (redis sinks: {known})")
    if len(sinks) != 1:
        found = ", ".join(s.sink_name for s in sinks)
        raise click.UsageError(
            "pick the redis sink with --sink NAME (configured: " + found + ")" if sinks else
            "the configuration has no redis sink: add {type: redis, url: ..., stream: ...} under sinks"
        )
    return sinks[0]


@click.group()
def feed() -> None:
    """Read the Redis stream feed that the redis sink writes."""


@feed.command()
@click.option("--group", required=True, help="Consumer group: each group receives every record.")
@click.option("--consumer", default=lambda: f"{socket.gethostname()}-{os.getpid()}", show_default="host-pid",
              help="Consumer name within the group; consumers of one group share the records.")
@click.option("--sink", "sink_name", help="Name of the redis sink to read (default: the only one).")
@click.option("--start", type=click.Choice(sorted(STARTS)), default="earliest", show_default=True,
              help="Where a group created now starts: the oldest kept entry or only new ones.")
@click.option("--count", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="Entries per read.")
@click.option("--block", type=click.IntRange(1), default=5000, show_default=True,
              help="Milliseconds one read waits for new entries.")
@click.option("--claim-idle", default="60s", show_default=True,
              help="Take over entries another consumer left pending this long (e.g. 60s, 5m).")
@click.option("--once", is_flag=True, help="Exit when nothing is left to do (for cron and tests).")
@click.pass_context
def tail(ctx: click.Context, group: str, consumer: str, sink_name: str | None, start: str, count: int,
         block: int, claim_idle: str, once: bool) -> None:
    """Print each record of the feed as one JSON line, acknowledging it once printed."""
    try:
        idle = parse_duration(claim_idle)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--claim-idle") from None
    cfg = find_redis_sink(ctx.obj.config, sink_name)
    options = ConsumeOptions(count=count, block_ms=block, claim_idle=idle, once=once, start=STARTS[start])
    client = connect(cfg, read_timeout=cfg.timeout + block / 1000)
    stop = StopFlag()
    previous = {s: signal.signal(s, stop.request) for s in (signal.SIGINT, signal.SIGTERM)}

    def emit(entry: FeedEntry) -> None:
        sys.stdout.write(entry.as_json() + "\n")
        sys.stdout.flush()

    try:
        stats = consume(client, cfg.stream, group, consumer, emit, options, stop)
    except BrokenPipeError:  # the reader went away (| head): the entry stays pending
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        ctx.exit(1)
    except redis.RedisError as exc:
        raise click.ClickException(f"reading stream {cfg.stream!r} of sink {cfg.sink_name!r}: {exc}") from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        client.close()
    click.echo(f"celsync feed: {stats.handled} handled, {stats.duplicates} duplicates dropped, "
               f"{stats.claimed} claimed from idle consumers", err=True)
