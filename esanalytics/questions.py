"""The analyst's questions over a whole lake, as data: each a function of a
:class:`~esanalytics.engine.Session` that returns a DuckDB relation (``.df()``, ``.arrow()``,
``.fetchall()``), the numbers the charts in :mod:`esanalytics.viz` draw, with no row limit.

* :func:`state_intervals`: each stay of each entity in each state of a projection's field
  (time in each state);
* :func:`population`: how many entities were in each state at the end of every day, week or
  month;
* :func:`variants`: the process variants, each distinct sequence of event types an entity
  went through, with how many entities took it;
* :func:`activity`: events by weekday and hour of day (or week and weekday);
* :func:`spike_days`: the days with far more events than usual.

Each reads only what its shape needs: the state questions fold only the events that can
change the field (:meth:`~esanalytics.projections.Projection.history` with ``changes_of``);
variants and activity read event types, stream ids and times, never the JSON payloads.

>>> import tempfile, esanalytics as esa
>>> from esanalytics.catalog import order_status
>>> store = esa.open(tempfile.mkdtemp() + "/lake", create=True)
>>> _ = store.append("order-1", [esa.NewEvent("OrderPlaced", {"customer": "c1"}),
...                              esa.NewEvent("OrderPaid", {"amount": 5})])
>>> population(Session(store), order_status, "status").fetchall()[-1][1:]
('paid', 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

import duckdb

from esanalytics._typing import TimeLike
from esanalytics.engine import Session, sql_time
from esanalytics.events import to_utc
from esanalytics.exceptions import ValidationError
from esanalytics.projections import Projection, const

__all__ = [
    "activity",
    "activity_sql",
    "population",
    "population_sql",
    "spike_days",
    "state_intervals",
    "stays_sql",
    "variants",
]

Axis = Literal["system", "valid"]
Every = Literal["day", "week", "month"]
_AXIS_TIME = {"system": "recorded_at", "valid": "occurred_at"}


def _axis(axis: str) -> str:
    if axis not in _AXIS_TIME:
        raise ValidationError(f"Unknown time axis {axis!r}.", hint="use axis='system' or 'valid'.")
    return _AXIS_TIME[axis]


def _field(projection: Projection, field: str) -> None:
    if field not in projection.fields:
        raise ValidationError(
            f"The projection {projection.name} has no field {field!r}.",
            hint=f"choose one of {', '.join(projection.fields)}.",
        )


def stays_sql(history: str, field: str, until: datetime, *, naive: bool = False) -> str:
    """SQL: the stays in a history relation (``key``, ``valid_from``, ``valid_to`` and
    ``field``, one row per state or per change): consecutive rows of a key equal on ``field``
    are one stay, ``(key, state, start, end, open, days)``. A current stay (``valid_to``
    null) is ``open`` and lasts until ``until``, never ending before it began. ``naive``:
    the history's times are TIMESTAMP (UTC wall times) rather than TIMESTAMPTZ."""
    cut = (
        f"TIMESTAMP '{until.astimezone(UTC).replace(tzinfo=None).isoformat()}'"
        if naive
        else sql_time(until)
    )
    return f"""
        WITH marked AS (
            SELECT key, {field} AS state, valid_from, valid_to,
                   row_number() OVER w = 1 OR {field} IS DISTINCT FROM lag({field}) OVER w AS changed
            FROM {history} WINDOW w AS (PARTITION BY key ORDER BY valid_from)
        ), runs AS (
            SELECT *, sum(CAST(changed AS INTEGER)) OVER (PARTITION BY key ORDER BY valid_from
                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS stay
            FROM marked
        ), stays AS (
            SELECT key, any_value(state) AS state, min(valid_from) AS start,
                   CASE WHEN bool_or(valid_to IS NULL) THEN greatest(max(valid_from), {cut})
                        ELSE max(valid_to) END AS "end",
                   bool_or(valid_to IS NULL) AS open
            FROM runs GROUP BY key, stay
        )
        SELECT key, state, start, "end", open,
               round_even((epoch_us("end") - epoch_us(start)) / 86400e6, 1) AS days
        FROM stays ORDER BY key, start
    """


def population_sql(stays: str, every: Every) -> str:
    """SQL: from a relation of stays (:func:`stays_sql`), how many keys were in each state at
    the end of every ``every`` (``bucket``, ``state``, ``entities``), for every bucket from
    the first to the last in which a key entered or left a state; a null state is not
    counted."""
    unit = _every(every)
    return f"""
        WITH moves AS (
            SELECT date_trunc('{unit}', start) AS bucket, CAST(state AS VARCHAR) AS state, 1 AS delta
            FROM {stays} WHERE state IS NOT NULL
            UNION ALL
            SELECT date_trunc('{unit}', "end"), CAST(state AS VARCHAR), -1
            FROM {stays} WHERE state IS NOT NULL AND NOT open
        ), per AS (
            SELECT bucket, state, sum(delta) AS delta FROM moves GROUP BY ALL
        ), grid AS (
            SELECT unnest(generate_series(min(bucket), max(bucket), INTERVAL 1 {unit})) AS bucket
            FROM moves
        )
        SELECT g.bucket, s.state,
               CAST(sum(coalesce(p.delta, 0)) OVER (PARTITION BY s.state ORDER BY g.bucket) AS BIGINT)
                   AS entities
        FROM grid g CROSS JOIN (SELECT DISTINCT state FROM moves) s
        LEFT JOIN per p ON p.bucket = g.bucket AND p.state = s.state
        ORDER BY g.bucket, s.state
    """


def _every(every: str) -> str:
    if every not in ("day", "week", "month"):
        raise ValidationError(
            f"Unknown bucket {every!r}.", hint="use every='day', 'week' or 'month'."
        )
    return every


def _histories(
    session: Session, projection: Projection, field: str, keys: Sequence[str] | None, axis: Axis
) -> duckdb.DuckDBPyRelation:
    """The changes of ``field`` for ``keys`` (each through the one-stream path) or every key."""
    _field(projection, field)
    _axis(axis)
    if keys is None:
        return projection.history(session, axis=axis, changes_of=[field])
    import pyarrow as pa

    parts = [projection.history(session, axis=axis, key=k, changes_of=[field]) for k in keys]
    tables = [p.to_arrow_table() for p in parts]
    if not tables:  # no keys: no rows, of the same columns
        none = "(SELECT * FROM events WHERE FALSE)"
        return projection.history(session, axis=axis, changes_of=[field], relation=none)
    return session.con.from_arrow(pa.concat_tables(tables))


def state_intervals(
    session: Session,
    projection: Projection,
    field: str = "status",
    *,
    keys: Sequence[str] | None = None,
    axis: Axis = "system",
    until: TimeLike | None = None,
) -> duckdb.DuckDBPyRelation:
    """Each stay of each entity (or of ``keys``) in each value of ``field``, in order:
    ``(key, state, start, end, open, days)`` on system time (when we recorded it) or valid
    time (when it happened). A current stay is ``open`` and lasts until ``until``: by default
    the session's cut (on valid time its ``valid_at``, else its ``as_of``), else now.

    >>> import tempfile, esanalytics as esa
    >>> from esanalytics.catalog import order_status
    >>> store = esa.open(tempfile.mkdtemp() + "/lake", create=True)
    >>> _ = store.append("order-1", [esa.NewEvent("OrderPlaced", {}, occurred_at="2024-01-01"),
    ...                              esa.NewEvent("OrderPaid", {}, occurred_at="2024-01-03")])
    >>> stays = state_intervals(Session(store), order_status, axis="valid", until="2024-01-10")
    >>> [(s, d) for _, s, _, _, _, d in stays.fetchall()]
    [('placed', 2.0), ('paid', 7.0)]
    """
    if until is None:
        until = (session.valid_at if axis == "valid" else None) or session.as_of
    cut = datetime.now(UTC) if until is None else to_utc(until, what="until")
    history = _histories(session, projection, field, keys, axis)
    return _over(session, history, stays_sql("esa_q_history", field, cut))


def _over(
    session: Session, relation: duckdb.DuckDBPyRelation, sql: str, name: str = "esa_q_history"
) -> duckdb.DuckDBPyRelation:
    """``sql`` run with ``name`` bound to ``relation`` (a small, computed one)."""
    session.con.register(name, relation.to_arrow_table())
    try:
        return session.sql(sql)
    finally:
        session.con.unregister(name)


def population(
    session: Session,
    projection: Projection,
    field: str = "status",
    *,
    every: Every = "day",
    axis: Axis = "system",
) -> duckdb.DuckDBPyRelation:
    """How many entities were in each value of ``field`` at the end of every day, week or
    month: ``(bucket, state, entities)``, one row per bucket and state for every bucket from
    the first to the last in which an entity entered or left a state (the last holds the
    counts now); entities whose field is null are not counted. Any number of days: only the
    events that can change ``field`` are folded."""
    _every(every)
    history = _histories(session, projection, field, None, axis)
    stays = _over(session, history, stays_sql("esa_q_history", field, datetime.now(UTC)))
    return _over(session, stays, population_sql("esa_q_stays", every), "esa_q_stays")


def variants(session: Session, *, category: str | None = None) -> duckdb.DuckDBPyRelation:
    """The process variants: each distinct sequence of event types an entity (stream) went
    through, in its own order, with ``events`` (its length), ``entities`` (how many took it),
    ``share`` (of all the entities counted) and ``example`` (the first such stream id), most
    common first. ``category`` counts one category's streams. Reads event types, stream ids
    and versions only."""
    where = "TRUE" if category is None else f"category = {const(category)}"
    # Event types are names without spaces (esanalytics.events), so a path joined by spaces
    # splits back into its types exactly; text groups faster than lists.
    return session.sql(
        f"""
        WITH paths AS (
            SELECT stream_id, string_agg(event_type, ' ' ORDER BY version) AS path,
                   count(*) AS events
            FROM {session.base_source()} WHERE {where} GROUP BY stream_id
        ), counted AS (
            SELECT path, any_value(events) AS events, count(*) AS entities,
                   min(stream_id) AS example
            FROM paths GROUP BY path
        )
        SELECT string_split(path, ' ') AS variant, events, entities,
               entities / sum(entities) OVER () AS share, example
        FROM counted ORDER BY entities DESC, example
        """
    )


def activity_sql(
    by: str = "hour", *, where: str = "TRUE", axis: str = "system", source: str = "events"
) -> str:
    """SQL over ``source`` (``events``, or ``events_base`` when ``where`` reads no more):
    events counted by weekday and hour of day (``by="hour"``: every
    one of the 24 x 7 cells) or by week and weekday (``by="week"``: every weekday of every
    week with events), in UTC, with the share recorded after hours (before 8 or from 19)."""
    time = _axis(axis)
    # The times as UTC wall times: the hour and weekday of a plain TIMESTAMP are arithmetic,
    # where a TIMESTAMPTZ's go through the session's time zone.
    if by == "hour":
        rows, grid = "hour(t) AS hour", "SELECT unnest(range(24)) AS hour"
    elif by == "week":
        rows = "CAST(date_trunc('week', t) AS DATE) AS week"
        grid = "SELECT DISTINCT week FROM counted"
    else:
        raise ValidationError(
            f"Unknown heatmap grouping {by!r}.", hint="use by='hour' or by='week'."
        )
    return f"""
        WITH counted AS (
            SELECT {rows}, isodow(t) AS weekday, count(*) AS events,
                   round(100 * avg(CASE WHEN hour(t) < 8 OR hour(t) >= 19 THEN 1 ELSE 0 END), 1)
                       AS after_hours_pct
            FROM (SELECT *, make_timestamp(epoch_us({time})) AS t FROM {source} WHERE {where})
            GROUP BY ALL
        )
        SELECT g.{by}, d.weekday, coalesce(c.events, 0) AS events,
               coalesce(c.after_hours_pct, 0.0) AS after_hours_pct
        FROM ({grid}) g CROSS JOIN (SELECT unnest(range(1, 8)) AS weekday) d
        LEFT JOIN counted c ON c.{by} = g.{by} AND c.weekday = d.weekday
        ORDER BY g.{by}, d.weekday
    """


def activity(
    session: Session,
    *,
    by: Literal["hour", "week"] = "hour",
    where: str = "TRUE",
    axis: Axis = "system",
) -> duckdb.DuckDBPyRelation:
    """Events by weekday (1 Monday .. 7 Sunday) and hour of day, or by week and weekday, in
    UTC: ``(hour|week, weekday, events, after_hours_pct)``, a quiet cell as 0 (see
    :func:`activity_sql`). ``where`` filters the events (e.g.
    ``"metadata->>'$.actor' = 'alice'"``); without it only the times are read."""
    return session.sql(activity_sql(by, where=where, axis=axis, source=session.base_source(where)))


def spike_days(
    session: Session, *, factor: float = 3.0, where: str = "TRUE", axis: Axis = "system"
) -> duckdb.DuckDBPyRelation:
    """The days (UTC) with at least ``factor`` times the median day's events (over the days
    with any): ``(day, weekday, events, times_median)``, busiest first."""
    time = _axis(axis)
    if not factor > 0:
        raise ValidationError(f"factor={factor!r} is not above 0.", hint="use e.g. factor=3.0.")
    return session.sql(
        f"""
        WITH days AS (
            SELECT CAST(make_timestamp(epoch_us({time})) AS DATE) AS day, count(*) AS events
            FROM {session.base_source(where)} WHERE {where} GROUP BY ALL
        ), usual AS (SELECT median(events) AS median FROM days)
        SELECT day, isodow(day) AS weekday, events, round(events / median, 1) AS times_median
        FROM days, usual WHERE events >= {float(factor)!r} * median
        ORDER BY events DESC, day
        """
    )
