"""Exceptions an auditor asks about, as plain rows: events back-dated beyond a threshold,
changes recorded after hours, actors who approved their own change, and breaches of
segregation of duties (the same actor did two steps of one entity that a declared
:class:`~esanalytics.domain.SegregationRule` keeps apart)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pyarrow as pa

from esanalytics.audit.trail import Scope
from esanalytics.domain import SegregationRule
from esanalytics.engine import Session
from esanalytics.projections import const

__all__ = ["audit_exceptions"]


def audit_exceptions(
    session: Session,
    scope: Scope,
    *,
    backdated_after: timedelta = timedelta(days=1),
    office_hours: tuple[int, int] = (8, 19),
    rules: Sequence[SegregationRule] | None = None,
) -> pa.Table:
    """Rows ``(kind, global_position, stream_id, event_type, actor, detail)`` in log order.

    ``back_dated``: valid time more than ``backdated_after`` before system time;
    ``after_hours``: recorded outside ``office_hours`` (UTC hours, start inclusive, whatever
    the session's TimeZone);
    ``self_approved``: the metadata's ``approved_by`` is the ``actor``;
    ``segregation``: an event in scope of a rule's ``second`` type whose actor also recorded
    an event of its ``first`` type in the same stream (anywhere in the log at the session's
    cut), for each of ``rules`` (default: the example domains' rules,
    :data:`esanalytics.catalog.SEGREGATION_RULES`).
    """
    if rules is None:
        from esanalytics.catalog import SEGREGATION_RULES

        rules = SEGREGATION_RULES
    seconds = int(backdated_after.total_seconds())
    start, end = office_hours
    # The events in scope hold only the columns asked about (never the payloads); the hour of
    # a UTC wall time is arithmetic (a TIMESTAMPTZ's goes through a time zone); and a metadata
    # text without the name approved_by (written plainly or, for JSON's
    # escapes, with a \u) has none, so most events are never parsed for it.
    # For one entity every step is in scope; otherwise a first step may lie outside it.
    steps = "scoped" if scope.kind == "entity" else "events"
    segregation = "".join(
        f"""
            UNION ALL
            SELECT 'segregation', b.global_position, b.stream_id, b.event_type, b.actor,
                   {const(rule.name)} || ': the same actor also did ' || {const(rule.first)}
                       || ' at position ' || CAST(min(a.global_position) AS VARCHAR)
            FROM (SELECT *, metadata->>'$.actor' AS actor FROM scoped
                  WHERE event_type = {const(rule.second)}) b
            JOIN (SELECT stream_id, global_position, metadata->>'$.actor' AS actor FROM {steps}
                  WHERE event_type = {const(rule.first)}) a
              ON a.stream_id = b.stream_id AND a.actor = b.actor
                 AND a.global_position <> b.global_position
            GROUP BY ALL"""
        for rule in rules
    )
    return session.sql(
        f"""
        WITH scoped AS (
            SELECT global_position, stream_id, event_type, recorded_at, occurred_at, metadata
            FROM {scope.source(session)} WHERE {scope.where()}
        )
        SELECT * FROM (
            SELECT 'back_dated' AS kind, global_position, stream_id, event_type,
                   metadata->>'$.actor' AS actor,
                   'happened ' || CAST(date_diff('day', timezone('UTC', occurred_at),
                                                 timezone('UTC', recorded_at)) AS VARCHAR)
                       || ' days before it was recorded' AS detail
            FROM scoped WHERE epoch(recorded_at) - epoch(occurred_at) > {seconds}
            UNION ALL
            SELECT 'after_hours', global_position, stream_id, event_type, metadata->>'$.actor',
                   'recorded at ' || strftime(timezone('UTC', recorded_at), '%H:%M') || ' UTC'
            FROM scoped WHERE hour(make_timestamp(epoch_us(recorded_at))) < {start}
                           OR hour(make_timestamp(epoch_us(recorded_at))) >= {end}
            UNION ALL
            SELECT 'self_approved', global_position, stream_id, event_type, metadata->>'$.actor',
                   'approved by the same actor'
            FROM scoped WHERE (contains(metadata, 'approved_by') OR contains(metadata, '\\u'))
                          AND metadata->>'$.approved_by' = metadata->>'$.actor'{segregation}
        ) ORDER BY global_position, kind, detail
        """
    ).to_arrow_table()
