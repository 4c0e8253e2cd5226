"""`celsync run`: polls and delivers continuously, serves metrics, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request

import yaml

from celsync.cel.schema import load_corpus

from .helpers import CELSYNC, make_cel, write_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_delivers_serves_metrics_and_stops_on_sigterm(tmp_path):
    cel = f"sqlite:///{tmp_path / 'cel.sqlite'}"
    make_cel(cel, load_corpus())
    out = tmp_path / "calls.jsonl"
    cfg = write_config(tmp_path / "c.yaml", cel, f"sqlite:///{tmp_path / 's.sqlite'}",
                       [{"type": "jsonl", "path": str(out)}])
    port = _free_port()
    data = yaml.safe_load(cfg.read_text())
    data["metrics"] = {"port": port}
    cfg.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen([CELSYNC, "--config", str(cfg), "run", "--interval", "0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if out.exists() and len(out.read_text().splitlines()) == 15:
                break
            time.sleep(0.1)
        assert len(out.read_text().splitlines()) == 15
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "celsync_records_total 15.0" in metrics
        assert 'celsync_deliveries_total{sink="jsonl"} 15.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopping" in err
    assert all(json.loads(line)["key"] for line in out.read_text().splitlines())
