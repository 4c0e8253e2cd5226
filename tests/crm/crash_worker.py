"""Run one delivery pass for one CRM sink, in its own process, so that a test can SIGKILL it.

    python -m tests.crm.crash_worker <state-url> '<sink config as JSON>'
"""

from __future__ import annotations

import json
import sys

from celsync.config import Config
from celsync.delivery import DeliveryEngine
from celsync.sinks import build_sinks
from celsync.state.store import StateStore


def main(state_url: str, sink_json: str) -> None:
    cfg = Config.model_validate({"sinks": [json.loads(sink_json)]})
    store = StateStore(state_url)
    engine = DeliveryEngine(store, build_sinks(cfg.sinks))
    engine.deliver_due()


if __name__ == "__main__":
    main(*sys.argv[1:3])
