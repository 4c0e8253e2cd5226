"""`celsync run` killed with SIGKILL at random moments and restarted: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter

import pytest

from .helpers import CELSYNC, celsync, make_cel, tiled_rows, write_config


def _keys(path):
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(json.loads(line)["key"] for line in lines)


def _kill_and_restart(tmp_path, cycles: int, seed: int):
    cel = f"sqlite:///{tmp_path / 'cel.sqlite'}"
    make_cel(cel, tiled_rows(4000, seed=seed))
    # The reference: one clean pass.
    ref_cfg = write_config(tmp_path / "ref.yaml", cel, f"sqlite:///{tmp_path / 'ref-state.sqlite'}",
                           [{"type": "jsonl", "path": str(tmp_path / "ref.jsonl")}])
    celsync(ref_cfg, "poll")
    expected = _keys(tmp_path / "ref.jsonl")
    assert expected and max(expected.values()) == 1

    out = tmp_path / "calls.jsonl"
    calls_db = tmp_path / "calls.sqlite"
    cfg = write_config(
        tmp_path / "crash.yaml", cel, f"sqlite:///{tmp_path / 'state.sqlite'}",
        [{"type": "jsonl", "path": str(out)}, {"type": "sqlite", "url": f"sqlite:///{calls_db}"}],
        batch_size=97,
    )
    rng = random.Random(seed)
    for _ in range(cycles):
        proc = subprocess.Popen([CELSYNC, "--config", str(cfg), "run", "--interval", "0.05"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    celsync(cfg, "poll")  # finish whatever the last kill interrupted

    got = _keys(out)
    assert set(got) == set(expected), f"missing {set(expected) - set(got)}, extra {set(got) - set(expected)}"
    assert [k for k, n in got.items() if n > 1] == []
    with sqlite3.connect(calls_db) as db:
        assert db.execute("select count(*), count(distinct key) from calls").fetchone() == (len(expected),) * 2


def test_sigkill_at_20_random_moments(tmp_path):
    _kill_and_restart(tmp_path, cycles=20, seed=11)


@pytest.mark.slow
def test_sigkill_at_200_random_moments(tmp_path):
    _kill_and_restart(tmp_path, cycles=200, seed=12)
