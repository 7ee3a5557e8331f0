"""Audit-trail queries: who did what, when (on both axes) and why, for one entity, one actor,
one correlation id, or a period. Findings and rows are plain data (Arrow tables)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from esanalytics._typing import TimeLike
from esanalytics.engine import Session
from esanalytics.exceptions import EmptyScopeError, ValidationError
from esanalytics.temporal import Period

__all__ = ["Scope", "empty_scope_error", "trail"]


@dataclass(frozen=True)
class Scope:
    """What a trail covers: ``kind`` is ``entity`` (a stream id), ``actor``, ``correlation``
    (a correlation id) or ``period`` (``start``..``end`` on system time, ``FROM..TO``)."""

    kind: Literal["entity", "actor", "correlation", "period"]
    value: str | None = None
    start: TimeLike | None = None
    end: TimeLike | None = None

    def source(self, session: Session) -> str:
        """The relation to read: one entity through the store's one-stream path, anything
        else from ``events``."""
        if self.kind == "entity" and self.value:
            return session.stream_events(self.value)
        return "events"

    def where(self) -> str:
        def quoted(text: str | None) -> str:
            if not text:
                raise ValidationError(f"A {self.kind} trail needs a value.", hint="say which one.")
            return "'" + text.replace("'", "''") + "'"

        if self.kind == "entity":
            return f"stream_id = {quoted(self.value)}"
        if self.kind == "actor":
            return f"metadata->>'$.actor' = {quoted(self.value)}"
        if self.kind == "correlation":
            return f"metadata->>'$.correlation_id' = {quoted(self.value)}"
        if self.kind == "period":
            if self.start is None or self.end is None:
                raise ValidationError(
                    "A period trail needs a start and an end.", hint="pass start= and end=."
                )
            return Period.from_to(self.start, self.end).events_sql("recorded_at")
        raise ValidationError(
            f"Unknown trail scope {self.kind!r}.", hint="use entity, actor, correlation or period."
        )


def trail(session: Session, scope: Scope) -> pa.Table:
    """The events in scope, in log order, with the audit fields pulled out of the metadata."""
    return session.sql(
        f"""
        SELECT global_position, stream_id, version, event_type, recorded_at, occurred_at,
               metadata->>'$.actor' AS actor, metadata->>'$.reason' AS reason,
               metadata->>'$.approved_by' AS approved_by,
               metadata->>'$.correlation_id' AS correlation_id,
               metadata->>'$.causation_id' AS causation_id, data
        FROM {scope.source(session)} WHERE {scope.where()}
        ORDER BY global_position
        """
    ).to_arrow_table()


def empty_scope_error(session: Session, scope: Scope) -> EmptyScopeError:
    """The error for a scope with no events at the session's cut: what was asked, and the
    close names that exist (a misspelt id or actor), or the period the log does cover."""
    cuts = [f"log position {session.position:,}"]
    if session.as_of is not None:
        cuts.append(f"as of {session.as_of.isoformat()}")
    if session.valid_at is not None:
        cuts.append(f"valid at {session.valid_at.isoformat()}")
    at = " at " + ", ".join(cuts)
    wanted = scope.value or ""
    column = {"entity": "stream_id", "actor": "metadata->>'$.actor'"}.get(scope.kind)
    names: list[str] = []
    if column is not None:
        known = session.sql(f"SELECT DISTINCT {column} FROM events WHERE {column} IS NOT NULL")
        names = difflib.get_close_matches(wanted, [r[0] for r in known.fetchall()], n=3)
    maybe = f"did you mean {' or '.join(repr(n) for n in names)}? Else " if names else ""
    if scope.kind == "entity":
        problem = f"There are no events for the entity {wanted!r}{at}."
        begins = session.sql(
            f"SELECT min(recorded_at) FROM events_all WHERE {scope.where()}"
        ).fetchall()[0][0]
        hint = (
            f"its first event was recorded at {begins.isoformat()}; ask at a later cut."
            if begins is not None and session.valid_at is None
            else maybe + "check the stream id."
        )
    elif scope.kind == "actor":
        problem = f"There are no events by the actor {wanted!r}{at}."
        hint = maybe + "check the actor's name, as the events' metadata.actor records it."
    elif scope.kind == "correlation":
        problem = f"There are no events with the correlation id {wanted!r}{at}."
        hint = "copy a correlation_id from an event's metadata (esa read LAKE STREAM shows it)."
    else:
        first, last = session.sql(
            "SELECT min(recorded_at), max(recorded_at) FROM events"
        ).fetchall()[0]
        problem = (
            f"No events were recorded in [{scope.start}, {scope.end}){at}, so there is nothing "
            "to report."
        )
        hint = (
            f"the log's recorded times run from {first.isoformat()} to {last.isoformat()}; "
            "choose a period that meets them."
            if first is not None
            else "the log is empty; append or ingest events first."
        )
    return EmptyScopeError(problem, hint=hint, scope=scope, suggestions=names)
