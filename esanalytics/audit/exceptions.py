"""Exceptions an auditor asks about, as plain rows: events back-dated beyond a threshold,
changes recorded after hours, and actors who approved their own change."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa

from esanalytics.audit.trail import Scope
from esanalytics.engine import Session

__all__ = ["audit_exceptions"]


def audit_exceptions(
    session: Session,
    scope: Scope,
    *,
    backdated_after: timedelta = timedelta(days=1),
    office_hours: tuple[int, int] = (8, 19),
) -> pa.Table:
    """Rows ``(kind, global_position, stream_id, event_type, actor, detail)`` in log order.

    ``back_dated``: valid time more than ``backdated_after`` before system time;
    ``after_hours``: recorded outside ``office_hours`` (UTC hours, start inclusive);
    ``self_approved``: the metadata's ``approved_by`` is the ``actor``.
    """
    seconds = int(backdated_after.total_seconds())
    start, end = office_hours
    return session.sql(
        f"""
        WITH scoped AS (SELECT * FROM {scope.source(session)} WHERE {scope.where()})
        SELECT * FROM (
            SELECT 'back_dated' AS kind, global_position, stream_id, event_type,
                   metadata->>'$.actor' AS actor,
                   'happened ' || CAST(date_diff('day', occurred_at, recorded_at) AS VARCHAR)
                       || ' days before it was recorded' AS detail
            FROM scoped WHERE epoch(recorded_at) - epoch(occurred_at) > {seconds}
            UNION ALL
            SELECT 'after_hours', global_position, stream_id, event_type, metadata->>'$.actor',
                   'recorded at ' || strftime(recorded_at, '%H:%M') || ' UTC'
            FROM scoped WHERE hour(recorded_at) < {start} OR hour(recorded_at) >= {end}
            UNION ALL
            SELECT 'self_approved', global_position, stream_id, event_type, metadata->>'$.actor',
                   'approved by the same actor'
            FROM scoped WHERE metadata->>'$.approved_by' = metadata->>'$.actor'
        ) ORDER BY global_position, kind
        """
    ).to_arrow_table()
