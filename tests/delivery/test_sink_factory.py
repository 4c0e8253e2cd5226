"""Sinks are built from config by type, named as the config names them; horizons per sink."""

from __future__ import annotations

from pathlib import Path

from celsync.config import config_from_dict
from celsync.sinks import REGISTRY, build_sinks, horizons


def test_every_type_builds_its_class_under_the_configured_name(tmp_path: Path, redis_url: str) -> None:
    cfg = config_from_dict({"sinks": [
        {"type": "jsonl", "path": str(tmp_path / "calls.jsonl")},
        {"type": "sqlite", "name": "calllog", "url": f"sqlite:///{tmp_path}/calls.sqlite", "retry_horizon": "2h"},
        {"type": "bitrix24", "webhook_url": "https://portal.example/rest/1/abc123/"},
        {"type": "kommo", "base_url": "https://example.kommo.com", "token": "t0ken"},
        {"type": "webhook", "url": "https://crm.example/hooks", "secret": "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="},
        {"type": "redis", "url": redis_url, "stream": "celsync:test"},
    ]})
    sinks = build_sinks(cfg.sinks)
    try:
        assert [(type(s).__module__, type(s).__name__) for s in sinks] == [
            REGISTRY[t] for t in ("jsonl", "sqlite", "bitrix24", "kommo", "webhook", "redis")]
        assert [s.name for s in sinks] == ["jsonl", "calllog", "bitrix24", "kommo", "webhook", "redis"]
        assert horizons(cfg.sinks) == {
            "jsonl": 172800.0, "calllog": 7200.0, "bitrix24": 172800.0, "kommo": 172800.0,
            "webhook": 172800.0, "redis": 172800.0,
        }
    finally:
        for s in sinks:
            s.close()
