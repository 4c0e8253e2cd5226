"""The YAML configuration, validated with pydantic (SPEC §10).

Keys named in the specification are an interface: they may gain siblings but are never
renamed. ``${VAR}`` references are replaced from the environment before validation, so
secrets live in the environment and never in the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


def parse_duration(value: Any) -> float:
    """Seconds from ``30``, ``"30s"``, ``"5m"``, ``"6h"``, ``"2d"`` or ``"250ms"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"{value!r} is not a duration (use seconds or e.g. '30s', '5m', '6h')")


Duration = Annotated[float, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _DurationsMixin:
    @field_validator(
        "settle_seconds", "quiet_seconds", "max_call_age", "gap_grace_seconds", "poll_interval",
        "retry_horizon", "timeout", check_fields=False, mode="before",
    )
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_duration(v)


class SourceConfig(_DurationsMixin, _Model):
    url: str = "sqlite:///examples/sample-cel.sqlite"
    table: str = "cel"
    columns: dict[str, str] = Field(default_factory=dict)
    timezone: str | None = None  # IANA name; None = the host's zone
    batch_size: int = Field(5000, ge=1, le=1_000_000)
    gap_grace_seconds: float = 10.0
    poll_interval: float = 2.0
    # Where a state DB with no cursor starts: the whole table, or only rows written from now on
    # (a live install with years of CEL history usually wants 'end').
    start_at: Literal["beginning", "end"] = "beginning"

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        parts = v.split(".")
        if len(parts) > 2 or not all(_IDENTIFIER.match(p) for p in parts):
            raise ValueError(f"{v!r} is not a plain table name (letters, digits, '_', optional schema.)")
        return v

    @field_validator("columns")
    @classmethod
    def _columns(cls, v: dict[str, str]) -> dict[str, str]:
        from celsync.model import CEL_COLUMNS

        for canonical, actual in v.items():
            if canonical not in CEL_COLUMNS:
                raise ValueError(f"unknown CEL column {canonical!r}; known: {', '.join(CEL_COLUMNS)}")
            if not isinstance(actual, str) or not _IDENTIFIER.match(actual):
                raise ValueError(
                    f"alias for {canonical!r} must be a column name (letters, digits, '_'), "
                    f"got {actual!r}: aliases are identifiers, never SQL"
                )
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is None:
            return None
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not an IANA time zone name (e.g. 'Europe/Moscow', 'UTC')") from None
        return v


class StateConfig(_Model):
    url: str = "sqlite:///celsync-state.sqlite"


class PbxConfig(_DurationsMixin, _Model):
    extensions: str = r"^\d{3,4}$"
    extension_channels: list[str] = Field(default_factory=list)
    endpoints: dict[str, str] = Field(default_factory=dict)
    trunk_channels: list[str] = Field(default_factory=list)
    ivr_contexts: list[str] = Field(default_factory=list)
    queues: dict[str, str] = Field(default_factory=dict)
    settle_seconds: float = 3.0
    quiet_seconds: float = 30.0
    max_call_age: float = 6 * 3600.0
    record_local_calls: bool = False

    @field_validator("extensions")
    @classmethod
    def _regex(cls, v: str) -> str:
        _compile(v)
        return v

    @field_validator("trunk_channels", "ivr_contexts")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for r in v:
            _compile(r)
        return v

    @field_validator("extension_channels")
    @classmethod
    def _ext_channels(cls, v: list[str]) -> list[str]:
        for r in v:
            if "ext" not in _compile(r).groupindex:
                raise ValueError(f"{r!r} needs a named group (?P<ext>...) that captures the extension")
        return v


class Rewrite(_Model):
    match: str
    replace: str

    @field_validator("match")
    @classmethod
    def _regex(cls, v: str) -> str:
        _compile(v)
        return v


class NumbersConfig(_Model):
    default_region: str = "RU"
    rewrite: list[Rewrite] = Field(default_factory=list)


class _SinkBase(_DurationsMixin, _Model):
    name: str | None = None  # unique id of this sink in the ledger; default: its type
    retry_horizon: float = 48 * 3600.0
    batch_size: int = Field(50, ge=1, le=10_000)

    @property
    def sink_name(self) -> str:
        return self.name or self.type  # type: ignore[attr-defined]


class JsonlSinkConfig(_SinkBase):
    type: Literal["jsonl"]
    path: str = "-"  # '-' = standard output
    fsync: bool = True


class SqliteSinkConfig(_SinkBase):
    type: Literal["sqlite"]
    url: str = "sqlite:///celsync-calls.sqlite"
    table: str = "calls"


class Bitrix24SinkConfig(_SinkBase):
    type: Literal["bitrix24"]
    webhook_url: str
    users: dict[str, int] = Field(default_factory=dict)
    default_user: int | None = None
    rate: float = Field(2.0, gt=0)
    burst: int = Field(40, ge=1, le=249)  # below the leaky bucket: 50 (Enterprise portals: 250)
    recording_url: str | None = None
    add_to_chat: bool = False
    timeout: float = 30.0
    batch_size: int = Field(50, ge=3, le=50)  # commands per batch request; a call takes 2-3


class KommoSinkConfig(_SinkBase):
    type: Literal["kommo"]
    base_url: str
    token: str
    users: dict[str, int] = Field(default_factory=dict)
    default_user: int | None = None
    rate: float = Field(7.0, gt=0)
    source: str = "celsync"
    recording_url: str | None = None
    create_unsorted_leads: bool = False
    timeout: float = 30.0
    batch_size: int = Field(50, ge=1, le=50)


class WebhookSinkConfig(_SinkBase):
    # the secret never shows in errors or reprs
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    type: Literal["webhook"]
    url: str
    secret: str = Field(repr=False)  # Standard Webhooks 'whsec_<base64 of 24-64 bytes>'
    timeout: float = 10.0
    verify_tls: bool = True
    batch_size: int = Field(1, ge=1, le=1)

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        from celsync.sinks.webhook import decode_secret

        decode_secret(v)  # raises ValueError saying what is wrong, never echoing the secret
        return v


class RedisSinkConfig(_SinkBase):
    type: Literal["redis"]
    url: str = "redis://127.0.0.1:6379/0"
    stream: str = "celsync:calls"
    maxlen: int | None = Field(None, ge=1)  # approximate MAXLEN (~) for XADD
    attempts: bool = False  # also XADD each missed dial attempt as its own entry (type=attempt)
    custom_call_ref: str | None = "userfield"  # record field for the dialer's custom_call_ref
    campaign_ref: str | None = "accountcode"  # record field for the dialer's campaign_ref
    timeout: float = 10.0  # socket timeout: a hung Redis must not stall the delivery engine


SinkConfig = Annotated[
    Union[
        JsonlSinkConfig, SqliteSinkConfig, Bitrix24SinkConfig, KommoSinkConfig,
        WebhookSinkConfig, RedisSinkConfig,
    ],
    Field(discriminator="type"),
]


class MetricsConfig(_Model):
    port: int | None = Field(None, ge=1, le=65535)  # Prometheus endpoint for `celsync run`
    address: str = "127.0.0.1"


class Config(_Model):
    source: SourceConfig = Field(default_factory=SourceConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    pbx: PbxConfig = Field(default_factory=PbxConfig)
    numbers: NumbersConfig = Field(default_factory=NumbersConfig)
    sinks: list[SinkConfig] = Field(default_factory=lambda: [JsonlSinkConfig(type="jsonl")])
    statuses: dict[str, Any] = Field(default_factory=dict)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @model_validator(mode="after")
    def _unique_sinks(self) -> "Config":
        seen: set[str] = set()
        for s in self.sinks:
            if s.sink_name in seen:
                raise ValueError(
                    f"two sinks are named {s.sink_name!r}: give one of them a distinct 'name'"
                )
            seen.add(s.sink_name)
        from celsync.rules.tables import StatusTables

        StatusTables.from_config(self.statuses)  # raises ValueError naming the bad entry
        return self


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from None


def _substitute_env(node: Any, path: str, missing: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute_env(v, f"{path}.{k}" if path else str(k), missing) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute_env(v, f"{path}[{i}]", missing) for i, v in enumerate(node)]
    if isinstance(node, str):
        def repl(m: re.Match[str]) -> str:
            value = os.environ.get(m.group(1))
            if value is None:
                missing.append(f"{path}: environment variable {m.group(1)} is not set")
                return ""
            return value

        return _ENV_REF.sub(repl, node)
    return node


def config_from_dict(data: dict[str, Any], origin: str = "<config>") -> Config:
    """Validate a configuration mapping; errors name ``origin`` and every bad key."""
    missing: list[str] = []
    data = _substitute_env(data or {}, "", missing)
    if missing:
        raise ConfigError(f"{origin}: " + "; ".join(missing))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {where}: {msg}")
        raise ConfigError(f"{origin}: invalid configuration\n" + "\n".join(lines)) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML file. Relative SQLite paths stay relative to the working dir."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such configuration file (pass --config or set CELSYNC_CONFIG)"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections (source, state, pbx, ...)")
    return config_from_dict(data or {}, str(p))
