"""Prometheus metrics (SPEC §10) on celsync's own registry, so that embedding celsync or
running tests never collides with the process-wide default registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class Metrics:
    """Every celsync metric, registered on ``self.registry``.

    The pipeline sets the cursor, call and record ones; the delivery engine the per-sink ones.
    """

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.cursor_lag_rows = Gauge(
            "celsync_cursor_lag_rows", "CEL rows in the source table beyond the cursor", registry=r)
        self.cursor_lag_seconds = Gauge(
            "celsync_cursor_lag_seconds", "Age of the newest CEL row read, against the clock", registry=r)
        self.open_calls = Gauge("celsync_open_calls", "Calls assembled but not closed yet", registry=r)
        self.records = Counter("celsync_records", "Call records produced by the pipeline", registry=r)
        self.deliveries = Counter("celsync_deliveries", "Records a sink accepted", ["sink"], registry=r)
        self.failures = Counter(
            "celsync_delivery_failures", "Failed deliveries by outcome (retry, unknown, dead)",
            ["sink", "outcome"], registry=r)
        self.queue_depth = Gauge(
            "celsync_queue_depth", "Records waiting for their first attempt or in flight",
            ["sink"], registry=r)
        self.retry_depth = Gauge(
            "celsync_retry_depth", "Records waiting for a retry or a reconcile", ["sink"], registry=r)
        self.dead_letters = Gauge(
            "celsync_dead_letters", "Records a sink gave up on (see `celsync deadletters`)",
            ["sink"], registry=r)
        self.sink_disabled = Gauge(
            "celsync_sink_disabled", "1 while a sink is disabled by its destination", ["sink"], registry=r)

    def serve(self, port: int, address: str = "127.0.0.1") -> Any:
        """Expose the metrics at http://address:port/metrics from a daemon thread; returns the server."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return server
