"""Configuration: validated with errors that name the file and the key; secrets from ${ENV}."""

from __future__ import annotations

import pytest

from celsync.config import ConfigError, config_from_dict, load_config, parse_duration


def test_defaults_and_durations():
    cfg = config_from_dict({"pbx": {"max_call_age": "6h", "quiet_seconds": "30s", "settle_seconds": 3}})
    assert (cfg.pbx.max_call_age, cfg.pbx.quiet_seconds, cfg.pbx.settle_seconds) == (21600, 30, 3)
    assert [s.sink_name for s in cfg.sinks] == ["jsonl"]
    assert parse_duration("250ms") == 0.25 and parse_duration("2d") == 172800
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_error_names_file_and_key(tmp_path):
    path = tmp_path / "celsync.yaml"
    path.write_text("source:\n  batch_size: 0\npbx:\n  extensions: '(['\n  settle_seconds: later\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert str(path) in text
    assert "source.batch_size" in text and "pbx.extensions" in text and "pbx.settle_seconds" in text


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match="source.tabel"):
        config_from_dict({"source": {"tabel": "cel"}})


def test_alias_must_be_an_identifier_not_sql():
    with pytest.raises(ConfigError, match=r"source\.columns.*never SQL"):
        config_from_dict({"source": {"columns": {"extra": "extra; DROP TABLE cel"}}})
    with pytest.raises(ConfigError, match="unknown CEL column"):
        config_from_dict({"source": {"columns": {"nonsense": "x"}}})


def test_secrets_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("KOMMO_TOKEN", "t0ken-value")
    cfg = config_from_dict({"sinks": [{"type": "kommo", "base_url": "http://127.0.0.1:1", "token": "${KOMMO_TOKEN}"}]})
    assert cfg.sinks[0].token == "t0ken-value"
    monkeypatch.delenv("KOMMO_TOKEN")
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.token: environment variable KOMMO_TOKEN is not set"):
        config_from_dict({"sinks": [{"type": "kommo", "base_url": "http://x", "token": "${KOMMO_TOKEN}"}]})


def test_two_sinks_of_one_type_need_names():
    with pytest.raises(ConfigError, match="distinct 'name'"):
        config_from_dict({"sinks": [{"type": "jsonl"}, {"type": "jsonl", "path": "/tmp/x"}]})
    cfg = config_from_dict({"sinks": [{"type": "jsonl"}, {"type": "jsonl", "name": "archive", "path": "/tmp/x"}]})
    assert [s.sink_name for s in cfg.sinks] == ["jsonl", "archive"]


def test_missing_file_and_bad_timezone(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="IANA"):
        config_from_dict({"source": {"timezone": "Mars/Olympus"}})


def test_shipped_example_config_is_valid():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "config.yaml")
    assert cfg.source.url.endswith("examples/sample-cel.sqlite")
