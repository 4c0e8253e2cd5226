"""JSONL sink: output format, restore after a crash, and SIGKILL at random moments."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from celsync.config import JsonlSinkConfig
from celsync.delivery import DeliveryEngine
from celsync.sinks.base import Delivery, Outcome
from celsync.sinks.jsonl import JsonlSink
from celsync.state.store import Cursor, StateStore
from tests.delivery.jsonl_writer import PER_CALL, record

WRITER = Path(__file__).with_name("jsonl_writer.py")
REPO = Path(__file__).resolve().parents[2]


def sink_at(path: str, **kw: object) -> JsonlSink:
    return JsonlSink(JsonlSinkConfig(type="jsonl", path=path, **kw))


def delivery(key: str, **record: object) -> Delivery:
    return Delivery("jsonl", key, 1, "fp", {"key": key, **record})


def test_lines_are_the_records_as_given(tmp_path: Path) -> None:
    sink = sink_at(str(tmp_path / "calls.jsonl"))
    sink.restore(None)
    results = sink.send([delivery("a/1", call_id="a", answered=True, attempts=[]), delivery("b/1", name="Пётр")])
    assert [r.outcome for r in results] == [Outcome.DELIVERED, Outcome.DELIVERED]
    text = (tmp_path / "calls.jsonl").read_text(encoding="utf-8")
    assert text.splitlines()[1] == '{"key": "b/1", "name": "Пётр"}'
    assert json.loads(text.splitlines()[0]) == {"key": "a/1", "call_id": "a", "answered": True, "attempts": []}
    assert sink.commit_state() == {"length": len(text.encode("utf-8"))}
    sink.close()


def test_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    sink = sink_at("-")
    sink.restore({"length": 99})
    sink.send([delivery("a/1")])
    assert capfd.readouterr().out == '{"key": "a/1"}\n'
    assert sink.commit_state() is None


def test_restore_cuts_what_was_never_committed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_bytes(b'{"key": "a/1"}\n{"key": "b/1"}\n{"key": "c/')
    sink = sink_at(str(path))
    sink.restore({"length": 15})
    assert path.read_bytes() == b'{"key": "a/1"}\n'
    assert "cutting 26 bytes" in caplog.text
    sink.send([delivery("d/1")])
    assert path.read_bytes() == b'{"key": "a/1"}\n{"key": "d/1"}\n'
    sink.close()


def test_a_file_shorter_than_committed_is_a_warning_not_a_crash(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_bytes(b"")  # rotated by logrotate's copytruncate
    sink = sink_at(str(path))
    with caplog.at_level(logging.WARNING):
        sink.restore({"length": 5000})
    assert "rotated or truncated" in caplog.text
    sink.send([delivery("a/1")])
    assert sink.commit_state() == {"length": len(b'{"key": "a/1"}\n')}
    sink.close()


def test_a_failed_write_is_a_retry(tmp_path: Path) -> None:
    sink = sink_at("/dev/full", fsync=False)  # every write fails with ENOSPC
    sink.restore(None)
    [result] = sink.send([delivery("a/1")])
    assert result.outcome is Outcome.RETRY and "No space left on device" in (result.error or "")
    sink.close()


def test_a_missing_directory_names_the_sink_and_the_fix(tmp_path: Path) -> None:
    sink = sink_at(str(tmp_path / "nope" / "calls.jsonl"))
    with pytest.raises(OSError, match=r"jsonl sink 'jsonl': cannot open .*nope/calls.jsonl.*directory must exist"):
        sink.restore(None)


def test_first_batch_crash_is_cut_back_to_the_pre_existing_file(tmp_path: Path, sqlite_url: str) -> None:
    """The baseline length is saved before the first send, so even a crash in the very first
    batch leaves the user's older lines and no torn or duplicate ones."""
    path = tmp_path / "calls.jsonl"
    path.write_bytes(b'{"key": "old"}\n')
    store = StateStore(sqlite_url)
    store.ensure_ready()
    store.commit("cel", Cursor(2, 2), ["jsonl"], [record(0), record(3)])
    first = sink_at(str(path))
    engine = DeliveryEngine(store, [first])
    engine.recover()
    with path.open("ab") as f:  # what the first batch got out before a SIGKILL
        f.write(b'{"key": "1716900000.0/1716900000.00", "n": 0}\n{"key": "half')
    engine2 = DeliveryEngine(StateStore(sqlite_url), [sink_at(str(path))])
    engine2.deliver_due()
    lines = [json.loads(x)["key"] for x in path.read_text().splitlines()]
    assert lines == ["old", record(0).key, record(3).key]


def _run_writer(url: str, out: Path, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), url, str(out), str(n)], cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )


def _crash_cycles(tmp_path: Path, sqlite_url: str, cycles: int) -> None:
    n = 300
    out = tmp_path / "calls.jsonl"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for _ in range(cycles):
        proc = _run_writer(sqlite_url, out, n)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", f"seed {seed}"
            try:
                proc.wait(timeout=rng.uniform(0.0, 0.4))
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
    proc = _run_writer(sqlite_url, out, n)
    out_text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out_text.split() == ["ready", "done"], f"seed {seed}"

    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    keys = [r["key"] for r in records]
    assert sorted(keys) == sorted(record(i).key for i in range(n)), f"seed {seed}: lost or doubled keys"
    assert all(r == record(r["n"]).record for r in records), f"seed {seed}"
    per_call: dict[str, list[int]] = {}
    for r in records:
        per_call.setdefault(r["call_id"], []).append(r["n"] % PER_CALL)
    assert all(order == sorted(order) for order in per_call.values()), f"seed {seed}: per-call order"
    store = StateStore(sqlite_url)
    assert store.pending_total() == 0 and store.status()["sinks"]["jsonl"]["delivered"] == n
    store.close()


def test_sigkill_at_random_moments_leaves_every_key_exactly_once(tmp_path: Path, sqlite_url: str) -> None:
    _crash_cycles(tmp_path, sqlite_url, cycles=10)


@pytest.mark.slow
def test_sigkill_200_times(tmp_path: Path, sqlite_url: str) -> None:
    _crash_cycles(tmp_path, sqlite_url, cycles=200)


def test_a_device_path_such_as_dev_null_is_written_without_fsync(tmp_path: Path) -> None:
    """fsync on /dev/null or a pipe fails with EINVAL: that must not make every batch retry."""
    sink = sink_at("/dev/null", fsync=True)
    sink.restore({"length": 123})  # nothing to cut on a device
    results = sink.send([delivery("a/1", call_id="a")])
    assert [r.outcome for r in results] == [Outcome.DELIVERED]
    sink.close()
