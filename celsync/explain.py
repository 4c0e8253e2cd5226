"""Text views for people: a call's legs on a timeline (`explain`) and the service state (`status`)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Mapping

from celsync.rules.classify import Interpretation
from celsync.rules.legs import Leg


def render(result: Interpretation) -> str:
    """Legs as bars on a shared time axis, then each record with its rule trace."""
    legs = list(result.legs.values())
    start = min((l.created for l in legs if l.created), default=None)
    end = max((l.ended or l.created for l in legs if l.created), default=start)
    span = max(1.0, (end - start).total_seconds()) if start and end else 1.0
    width = 40
    lines = [f"call {result.call_id}: {len(legs)} legs, {span:.1f} s", ""]

    def col(t: datetime | None) -> int:
        return 0 if t is None or start is None else min(width - 1, int((t - start).total_seconds() / span * (width - 1)))

    for leg in legs:
        bar = [" "] * width
        a, b = col(leg.created), col(leg.ended or end)
        for i in range(a, b + 1):
            bar[i] = "-"
        if leg.answered:
            bar[col(leg.answered)] = "A"
        for _, s, e in leg.bridges:
            for i in range(col(s), col(e or leg.ended or end) + 1):
                bar[i] = "="
        who = leg.extension or leg.channel.local_exten or ""
        lines.append(f"  {leg.name[:34]:<34} {leg.kind:<9} {who:<6} |{''.join(bar)}| {_leg_facts(leg, start)}")
    lines += ["", "  legend: - alive, A answered, = bridged", ""]
    lines += [f"  {n}" for n in result.notes]
    if not result.records:
        lines += ["", "no records: " + (result.notes[-1] if result.notes else "nothing to record")]
    for record in result.records:
        data = record.to_dict()
        lines += ["", f"record {record.key}:", "  " + json.dumps({k: v for k, v in data.items() if k != "attempts"},
                                                                   ensure_ascii=False)]
        for attempt in data["attempts"]:
            lines.append(f"  attempt: {json.dumps(attempt, ensure_ascii=False)}")
        lines.append("  why:")
        lines += [f"    - {t}" for t in result.traces.get(record.key, [])]
    return "\n".join(lines)


def _leg_facts(leg: Leg, start: datetime | None) -> str:
    def rel(t: datetime | None) -> str:
        return "-" if t is None or start is None else f"{(t - start).total_seconds():.1f}s"

    cause = "" if leg.hangup_cause is None else f" cause {leg.hangup_cause}"
    dial = f" dial {leg.dial_status}" if leg.dial_status else ""
    return f"start {rel(leg.created)} answer {rel(leg.answered)} end {rel(leg.ended)}{cause}{dial}"


def render_status(state: Mapping[str, Any], max_id: int | None) -> str:
    """The state DB's view plus how far the cursor is behind the table."""
    lines = []
    for name, cursor in (state.get("cursors") or {}).items():
        last = cursor.get("last_id")
        lag = f", {max_id - last} rows behind the table" if max_id is not None and last is not None else ""
        updated = cursor.get("updated_at")
        if isinstance(updated, (int, float)):
            updated = datetime.fromtimestamp(updated).astimezone().isoformat(timespec="seconds")
        lines.append(f"cursor {name}: last id {last}, low water {cursor.get('low_water')}{lag}"
                     + (f", updated {updated}" if updated else ""))
    if not lines:
        lines.append("cursor: none yet (nothing polled)")
    for name, sink in (state.get("sinks") or {}).items():
        counts = ", ".join(f"{k} {v}" for k, v in sink.items() if isinstance(v, int) and not isinstance(v, bool))
        lines.append(f"sink {name}: {counts}")
        if sink.get("disabled"):
            lines.append(f"  DISABLED: {sink.get('disabled_reason') or ''}")
        if sink.get("last_error"):
            lines.append(f"  last error ({sink.get('last_error_at', '')}): {sink['last_error']}")
    if state.get("quarantine"):
        lines.append(f"quarantined rows: {state['quarantine']}")
    return "\n".join(lines)
