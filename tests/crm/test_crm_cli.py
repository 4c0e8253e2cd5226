"""`celsync poll` / `reprocess` as a user runs them, delivering real CEL traffic to both fake CRMs."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.fakes.bitrix24 import FakeBitrix24
from tests.fakes.kommo import FakeKommo
from tests.fakes.server import ThreadedServer
from tests.pipeline.helpers import CELSYNC, make_cel, tiled_rows, write_config


@pytest.fixture
def crms():
    b_fake = FakeBitrix24(users={1: None, 7: "101", 8: "102", 9: "103", 10: "104", 11: "105"})
    k_fake = FakeKommo(match_any=True)
    with ThreadedServer(b_fake) as b_srv, ThreadedServer(k_fake) as k_srv:
        yield b_fake, b_srv, k_fake, k_srv


@pytest.fixture
def setup(tmp_path, crms):
    b_fake, b_srv, k_fake, k_srv = crms
    cel = f"sqlite:///{tmp_path / 'cel.sqlite'}"
    make_cel(cel, tiled_rows(2500, seed=5))
    sinks = [
        {"type": "bitrix24", "webhook_url": "${BITRIX24_WEBHOOK_URL}", "default_user": 1,
         "recording_url": "https://pbx.example.com/rec/{recording_id}"},
        {"type": "kommo", "base_url": k_srv.url, "token": "${KOMMO_TOKEN}", "default_user": 10},
    ]
    cfg = write_config(tmp_path / "celsync.yaml", cel, f"sqlite:///{tmp_path / 'state.sqlite'}", sinks)
    env = dict(os.environ, BITRIX24_WEBHOOK_URL=f"{b_srv.url}{b_fake.base_url_path}", KOMMO_TOKEN=k_fake.token)
    return cfg, env


def cli(cfg, env, *args, check=True):
    proc = subprocess.run([CELSYNC, "--config", str(cfg), *args], capture_output=True, text=True, env=env, timeout=120)
    assert not check or proc.returncode == 0, proc.stderr
    return proc


def keys(b_fake, k_fake):
    return sorted(r["EXTERNAL_CALL_ID"] for r in b_fake.stats), sorted(n["params"]["uniq"] for n in k_fake.call_notes())


def no_secret(proc, b_fake, k_fake):
    out = proc.stdout + proc.stderr
    assert b_fake.code not in out and k_fake.token not in out


def test_poll_delivers_once_and_a_rerun_or_reprocess_sends_nothing(setup, crms):
    cfg, env = setup
    b_fake, _, k_fake, _ = crms
    no_secret(cli(cfg, env, "poll"), b_fake, k_fake)
    b_keys, k_keys = keys(b_fake, k_fake)
    assert len(b_keys) > 40 and b_keys == k_keys == sorted(set(b_keys))
    assert b_fake.limit_violations() == [] and k_fake.throttled() == []
    requests = len(b_fake.log), len(k_fake.log)
    cli(cfg, env, "poll")
    cli(cfg, env, "reprocess", "--from", "2026-01-05", "--to", "2026-01-06")
    assert (len(b_fake.log), len(k_fake.log)) == requests
    assert keys(b_fake, k_fake) == (b_keys, k_keys)


def test_crm_down_then_back_loses_nothing(setup, crms):
    cfg, env = setup
    b_fake, b_srv, k_fake, _ = crms
    b_srv.stop()
    no_secret(cli(cfg, env, "poll", check=False), b_fake, k_fake)
    assert b_fake.stats == [] and k_fake.call_notes()  # Kommo was not held back
    b_srv.start()
    deadline = time.monotonic() + 60
    while len(b_fake.stats) < len(k_fake.call_notes()) and time.monotonic() < deadline:
        time.sleep(1)  # the retry is due after the engine's backoff
        cli(cfg, env, "poll", check=False)
    assert keys(b_fake, k_fake)[0] == keys(b_fake, k_fake)[1] and b_fake.duplicates() == {}


@pytest.mark.parametrize("crm", ["bitrix24", "kommo"])
def test_sigkill_during_a_batch_then_restart_leaves_no_duplicate(setup, crms, crm):
    cfg, env = setup
    b_fake, _, k_fake, _ = crms
    fake = b_fake if crm == "bitrix24" else k_fake
    executed, release = fake.hold_next(after=1)
    proc = subprocess.Popen([CELSYNC, "--config", str(cfg), "poll"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert executed.wait(60), "celsync never sent the second request"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
    stored = len(b_fake.stats) if crm == "bitrix24" else len(k_fake.call_notes())
    cli(cfg, env, "poll")
    b_keys, k_keys = keys(b_fake, k_fake)
    assert b_keys == k_keys == sorted(set(b_keys)) and len(b_keys) > 40
    assert 0 < stored < len(b_keys)  # killed mid-backlog, after the CRM stored an unconfirmed batch
    assert b_fake.duplicates() == {} and k_fake.duplicates() == {}
