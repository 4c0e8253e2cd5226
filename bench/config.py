"""The configuration every benchmark runs with: the corpus PBX's profile around a bench table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from celsync.config import Config, config_from_dict

#: The PBX settings the corpus was recorded with (extensions, trunks, IVRs, queues, settle).
PROFILE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "asterisk22-pjsip" / "profile.yaml"


def config_data(cel_url: str, state_url: str, sinks: list[dict[str, Any]], **source: Any) -> dict[str, Any]:
    """Config as YAML-ready data; the tiled rows are stored in UTC."""
    return {
        "source": {"url": cel_url, "table": "cel", "timezone": "UTC", **source},
        "state": {"url": state_url},
        "sinks": sinks,
        **yaml.safe_load(PROFILE.read_text(encoding="utf-8")),
    }


def bench_config(cel_url: str, state_url: str, sinks: list[dict[str, Any]], **source: Any) -> Config:
    return config_from_dict(config_data(cel_url, state_url, sinks, **source), "benchmark")


def write_config(path: Path, cel_url: str, state_url: str, sinks: list[dict[str, Any]], **source: Any) -> Path:
    """The same config as a file, for runs of the real ``celsync`` command."""
    path.write_text(yaml.safe_dump(config_data(cel_url, state_url, sinks, **source), sort_keys=False))
    return path
