"""Sinks by config type. Modules are imported only when configured, so an install that never
talks to Redis never needs the Redis client to import."""

from __future__ import annotations

import importlib
from typing import Sequence

from celsync.config import SinkConfig
from celsync.sinks.base import Sink

#: config ``type`` -> (module, class); each class takes its config model as only argument
REGISTRY: dict[str, tuple[str, str]] = {
    "jsonl": ("celsync.sinks.jsonl", "JsonlSink"),
    "sqlite": ("celsync.sinks.sqlite", "SqliteSink"),
    "bitrix24": ("celsync.sinks.bitrix24", "Bitrix24Sink"),
    "kommo": ("celsync.sinks.kommo", "KommoSink"),
    "webhook": ("celsync.sinks.webhook", "WebhookSink"),
    "redis": ("celsync.sinks.redis_stream", "RedisSink"),
}


def build_sinks(cfgs: Sequence[SinkConfig]) -> list[Sink]:
    """One sink per config entry, named as the config names it (the ledger's identity)."""
    built: list[Sink] = []
    try:
        for cfg in cfgs:
            module, cls_name = REGISTRY[cfg.type]
            sink = getattr(importlib.import_module(module), cls_name)(cfg)
            sink.name = cfg.sink_name
            built.append(sink)
    except Exception:
        for sink in built:
            sink.close()
        raise
    return built


def horizons(cfgs: Sequence[SinkConfig]) -> dict[str, float]:
    """Seconds after a record's first failure at which each sink gives up on it."""
    return {cfg.sink_name: cfg.retry_horizon for cfg in cfgs}
