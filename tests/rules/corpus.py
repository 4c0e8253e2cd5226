"""The real Asterisk 22 traces in tests/fixtures as CelRows, and a checker for expected.json."""

from __future__ import annotations

import json
from datetime import timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from celsync.cel.parse import parse_row
from celsync.config import Config, config_from_dict
from celsync.model import CallRecord, CelRow

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "asterisk22-pjsip"


@lru_cache(maxsize=1)
def scenarios() -> dict[str, list[CelRow]]:
    """Scenario id -> its rows parsed as the reader would (times are UTC in this corpus)."""
    data = json.loads((CORPUS / "corpus.json").read_text())
    return {
        s["id"]: [parse_row(dict(zip(s["columns"], r)), timezone.utc) for r in s["rows"]]
        for s in data
    }


@lru_cache(maxsize=1)
def expected() -> dict[str, list[dict[str, Any]]]:
    data = json.loads((CORPUS / "expected.json").read_text())
    return {k: v["records"] for k, v in data.items()}


def profile(**extra: Any) -> Config:
    """The recording PBX's `pbx:`/`numbers:` config, plus overrides."""
    data = yaml.safe_load((CORPUS / "profile.yaml").read_text())
    data.update(extra)
    return config_from_dict(data, "profile.yaml")


def mismatches(scenario: str, records: list[CallRecord]) -> list[str]:
    """Every way the records differ from expected.json (empty = match)."""
    want = expected()[scenario]
    problems = []
    if len(records) != len(want):
        return [f"{scenario}: {len(records)} records, expected {len(want)}: "
                f"{[(r.direction, r.extension, r.answered) for r in records]}"]
    for i, (got, exp) in enumerate(zip(records, want)):
        where = f"{scenario}[{i}]"
        for field in ("direction", "answered", "extension"):
            if field in exp and getattr(got, field) != exp[field]:
                problems.append(f"{where}.{field}: {getattr(got, field)!r} != {exp[field]!r}")
        if "missed_at" in exp:
            allowed = exp["missed_at"] if isinstance(exp["missed_at"], list) else [exp["missed_at"]]
            if got.missed_at not in allowed:
                problems.append(f"{where}.missed_at: {got.missed_at!r} not in {allowed}")
        if "external" in exp and not (got.external_number or "").endswith(exp["external"]):
            problems.append(f"{where}.external_number: {got.external_number!r} does not end in {exp['external']}")
        if "did" in exp and not (got.did or "").endswith(exp["did"]):
            problems.append(f"{where}.did: {got.did!r} does not end in {exp['did']}")
        if "results" in exp and got.result not in exp["results"]:
            problems.append(f"{where}.result: {got.result} not in {exp['results']}")
    return problems
