"""The trail as a reader of a report sees it: each event's payload in words (the amounts) and,
for an entity with a projection, what the event changed (each field before and after), so the
PDF and the HTML report show the same facts as the extracts, in fewer characters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from esanalytics.audit.package import AuditPackage

__all__ = ["payload_text", "readable_trail", "when"]


def when(value: Any) -> str:
    """A time as ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC (the report says so once)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return str(value)


def payload_text(data: Any) -> str:
    """An event's JSON payload as ``amount 584.19, channel card``; text that is not a JSON
    object is returned as it is."""
    if data is None:
        return ""
    try:
        fields = json.loads(data)
    except (TypeError, ValueError):
        return str(data)
    if not isinstance(fields, dict):
        return str(data)
    return ", ".join(f"{k} {v if isinstance(v, str) else json.dumps(v)}" for k, v in fields.items())


def _changes(data: AuditPackage) -> dict[int, str]:
    """``global_position -> "balance 0.00→584.19; deposits 0→1"`` from the entity's state
    history (empty when the report has none)."""
    history = data.history
    if history is None or not history.num_rows or "global_position" not in history.column_names:
        return {}
    skip = {"key", "valid_from", "valid_to", "global_position"}
    fields = [n for n in history.column_names if n not in skip]
    rows = history.sort_by("global_position").to_pylist()
    out: dict[int, str] = {}
    before: dict[str, Any] = {}
    for row in rows:
        parts = []
        for field in fields:
            old, new = before.get(field), row[field]
            if old != new:
                parts.append(f"{field} {'∅' if old is None else old}→{'∅' if new is None else new}")
        out[row["global_position"]] = "; ".join(parts)
        before = row
    return out


def readable_trail(data: AuditPackage, *, limit: int | None = None) -> list[dict[str, str]]:
    """The first ``limit`` events of the trail (all when None) as text cells: position,
    stream (unless the report is about one entity), version, type, both times, actor, reason,
    approver, payload, what changed (for an entity with a projection), correlation and
    causation ids."""
    trail = data.trail if limit is None else data.trail.slice(0, limit)
    one_stream = data.scope.startswith("entity:")
    changes = _changes(data)
    rows = []
    for event in trail.to_pylist():
        row = {"position": str(event["global_position"])}
        if not one_stream:
            row["stream"] = str(event["stream_id"])
        row |= {
            "version": str(event["version"]),
            "event_type": str(event["event_type"]),
            "recorded_at (UTC)": when(event["recorded_at"]),
            "occurred_at (UTC)": when(event["occurred_at"]),
            "actor": event.get("actor") or "",
            "reason": event.get("reason") or "",
            "approved_by": event.get("approved_by") or "",
            "payload": payload_text(event.get("data")),
        }
        if changes:
            row["changes"] = changes.get(event["global_position"], "")
        row["correlation_id"] = event.get("correlation_id") or ""
        row["causation_id"] = event.get("causation_id") or ""
        rows.append(row)
    return rows
