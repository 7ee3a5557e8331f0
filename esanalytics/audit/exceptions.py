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
from esanalytics.exceptions import ValidationError
from esanalytics.projections import const

__all__ = ["KINDS", "audit_exceptions"]

#: The kinds of exception, in the order they are described.
KINDS = ("back_dated", "after_hours", "self_approved", "segregation")


def audit_exceptions(
    session: Session,
    scope: Scope,
    *,
    backdated_after: timedelta = timedelta(days=1),
    office_hours: tuple[int, int] = (8, 19),
    rules: Sequence[SegregationRule] | None = None,
    kinds: Sequence[str] | None = None,
) -> pa.Table:
    """Rows ``(kind, global_position, stream_id, event_type, actor, detail)`` in log order,
    of every kind below or of ``kinds`` only (each costs what it reads: ``back_dated`` and
    ``after_hours`` look at times first, ``self_approved`` at every event's metadata).

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
    wanted = list(KINDS) if kinds is None else list(dict.fromkeys(kinds))
    unknown = [k for k in wanted if k not in KINDS]
    if unknown or not wanted:
        raise ValidationError(
            f"Unknown exception kind(s): {', '.join(map(repr, unknown)) or 'none given'}.",
            hint=f"choose among {', '.join(KINDS)}.",
        )
    parts = {
        "back_dated": f"""
            SELECT 'back_dated' AS kind, global_position, stream_id, event_type,
                   metadata->>'$.actor' AS actor,
                   'happened ' || CAST(date_diff('day', timezone('UTC', occurred_at),
                                                 timezone('UTC', recorded_at)) AS VARCHAR)
                       || ' days before it was recorded' AS detail
            FROM scoped WHERE epoch(recorded_at) - epoch(occurred_at) > {seconds}""",
        "after_hours": f"""
            SELECT 'after_hours' AS kind, global_position, stream_id, event_type,
                   metadata->>'$.actor' AS actor,
                   'recorded at ' || strftime(timezone('UTC', recorded_at), '%H:%M') || ' UTC'
                       AS detail
            FROM scoped WHERE hour(make_timestamp(epoch_us(recorded_at))) < {start}
                           OR hour(make_timestamp(epoch_us(recorded_at))) >= {end}""",
        "self_approved": """
            SELECT 'self_approved' AS kind, global_position, stream_id, event_type,
                   metadata->>'$.actor' AS actor, 'approved by the same actor' AS detail
            FROM scoped WHERE (contains(metadata, 'approved_by') OR contains(metadata, '\\u'))
                          AND metadata->>'$.approved_by' = metadata->>'$.actor'""",
        "segregation": " UNION ALL ".join(
            f"""
            SELECT 'segregation' AS kind, b.global_position, b.stream_id, b.event_type, b.actor,
                   {const(rule.name)} || ': the same actor also did ' || {const(rule.first)}
                       || ' at position ' || CAST(min(a.global_position) AS VARCHAR) AS detail
            FROM (SELECT *, metadata->>'$.actor' AS actor FROM scoped
                  WHERE event_type = {const(rule.second)}) b
            JOIN (SELECT stream_id, global_position, metadata->>'$.actor' AS actor FROM {steps}
                  WHERE event_type = {const(rule.first)}) a
              ON a.stream_id = b.stream_id AND a.actor = b.actor
                 AND a.global_position <> b.global_position
            GROUP BY ALL"""
            for rule in rules
        ),
    }
    union = " UNION ALL ".join(parts[k] for k in wanted if parts[k])
    if not union:  # only segregation was asked for, and there are no rules
        union = "SELECT * FROM (" + parts["back_dated"] + ") WHERE FALSE"
    return session.sql(
        f"""
        WITH scoped AS (
            SELECT global_position, stream_id, event_type, recorded_at, occurred_at, metadata
            FROM {scope.source(session)} WHERE {scope.where()}
        )
        SELECT * FROM ({union}) ORDER BY global_position, kind, detail
        """
    ).to_arrow_table()
