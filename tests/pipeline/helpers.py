"""Shared set-up for pipeline tests: a CEL table on disk and a config around it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from sqlalchemy import create_engine

from celsync.cel.schema import create_table, insert_rows, load_corpus
from celsync.cel.tiling import templates, tile

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "asterisk22-pjsip"
CELSYNC = str(Path(sys.executable).parent / "celsync")


def make_cel(url: str, rows: Iterable[Mapping[str, Any]], variant: str = "stock") -> None:
    engine = create_engine(url)
    create_table(engine, "cel", variant)
    insert_rows(engine, "cel", variant, rows)
    engine.dispose()


def tiled_rows(n: int, seed: int = 7) -> list[dict[str, Any]]:
    return list(tile(templates(load_corpus()), rows=n, seed=seed))


def write_config(path: Path, cel_url: str, state_url: str, sinks: list[dict], **source: Any) -> Path:
    profile = yaml.safe_load((FIXTURES / "profile.yaml").read_text())
    data = {
        "source": {"url": cel_url, "table": "cel", "timezone": "UTC", **source},
        "state": {"url": state_url},
        "sinks": sinks,
        **profile,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def celsync(config: Path, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([CELSYNC, "--config", str(config), *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"celsync {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc
