"""The Prometheus endpoint serves celsync's own registry."""

from __future__ import annotations

import urllib.request

from celsync.metrics import Metrics


def test_serve_exposes_the_metrics() -> None:
    m = Metrics()
    m.deliveries.labels("kommo").inc(3)
    m.dead_letters.labels("kommo").set(2)
    m.cursor_lag_rows.set(17)
    server = m.serve(0)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'celsync_deliveries_total{sink="kommo"} 3.0' in body
    assert 'celsync_dead_letters{sink="kommo"} 2.0' in body
    assert "celsync_cursor_lag_rows 17.0" in body
    assert "python_gc_objects_collected_total" not in body  # not the process-wide default registry
