"""Projections: named definitions that fold events into rows keyed by an entity.

Three forms, one set of questions. A :class:`Projection` declares fields with reducers
(:class:`Last`, :class:`First`, :class:`Sum`, :class:`Count`, :class:`Min`, :class:`Max`)
that compile to one DuckDB aggregate (for state) or window (for history); a
:class:`SqlProjection` is any query over ``events`` with a ``key`` column; a
:class:`FoldProjection` is a Python fold, the slow fallback for what SQL cannot say.

The engine applies the time cut, so a projection is written once, without time logic:

* ``state(session, as_of=, valid_at=, position=)``: one row per key;
* ``history(session, axis="system"|"valid")``: rows ``(key, valid_from, valid_to, ...)`` with
  ``valid_to`` null for the current state (reducer projections);
* ``diff(session, before, after)``: added, removed and changed keys with before and after values;
* ``since(session, position)``: the keys touched after a log position, before and after;
* ``trail(session, key)``: one entity's events with who, why, both times, before and after.

Valid-time answers fold each entity's events in the order of ``(occurred_at, version)``;
system-time answers in the order of ``global_position``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import duckdb

from esanalytics._html import card as _card
from esanalytics._html import table as _table
from esanalytics.engine import MACRO_CUTS, Session
from esanalytics.events import validate_position
from esanalytics.exceptions import ValidationError
from esanalytics.temporal import Period

__all__ = [
    "Count",
    "First",
    "FoldProjection",
    "Last",
    "Max",
    "Min",
    "Projection",
    "SqlProjection",
    "Sum",
    "const",
    "data",
    "meta",
]

Axis = Literal["system", "valid"]
# Used with fullmatch: `$` would also match before a final newline.
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SQL_TYPE = re.compile(r"[A-Za-z0-9_(), ]+")
#: Columns of ``events`` that a typed source has not: a reducer naming one reads the JSON.
_JSON_ONLY = re.compile(
    r"\b(data|metadata|event_id|schema_version|prev_hash|hash)\b", re.IGNORECASE
)
_LITERAL = re.compile(r"'(?:[^']|'')*'")


def data(path: str, sql_type: str = "VARCHAR") -> str:
    """SQL for a field of the event's JSON data, e.g. ``data("amount", "DECIMAL(18,2)")``.

    Inside a :class:`Projection`, all the data fields it uses are parsed from each event's
    JSON once (one ``json_extract_string`` of them all), not once per field."""
    _json("data", path, sql_type)  # validates
    return f"\x01{path}\x02{sql_type}\x03"


_MARKER = re.compile(r"\x01([^\x02]*)\x02([^\x03]*)\x03")


def meta(path: str, sql_type: str = "VARCHAR") -> str:
    """SQL for a field of the event's metadata, e.g. ``meta("actor")``."""
    return _json("metadata", path, sql_type)


def _json(column: str, path: str, sql_type: str) -> str:
    if not _PATH.fullmatch(path) or not _SQL_TYPE.fullmatch(sql_type):
        raise ValidationError(
            f"{path!r} ({sql_type}) is not a plain JSON path and SQL type.",
            hint="use dotted names like 'address.city' and types like DOUBLE or DECIMAL(18,2).",
        )
    return f"TRY_CAST({column}->>'$.{path}' AS {sql_type})"


def const(value: str | int | float | bool | None) -> str:
    """A SQL literal, e.g. ``Last(const("frozen"), on=["AccountFrozen"])``."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _types(on: Iterable[str]) -> str:
    return ", ".join(const(t) for t in on)


@dataclass(frozen=True)
class _OnTypes:
    """A reducer over the value of events of some types: ``_aggregate`` and ``_window`` name
    the DuckDB functions that compute it over a group and over a running window."""

    value: str
    on: Sequence[str]
    _aggregate = ""
    _window = ""
    _ordered = False  # the aggregate takes the fold order as its second argument

    def aggregate(self, order: str, when: str | None = None) -> str:
        """The aggregate over a group in the fold order ``order``, counting only the rows
        where ``when`` (SQL) holds, if given."""
        args = f"{self.value}, {order}" if self._ordered else self.value
        also = "" if when is None else f" AND ({when})"
        return f"{self._aggregate}({args}) FILTER (WHERE event_type IN ({_types(self.on)}){also})"

    def window(self, over: str) -> str:
        ignore = " IGNORE NULLS" if self._ordered else ""
        return f"{self._window}(CASE WHEN event_type IN ({_types(self.on)}) THEN {self.value} END{ignore}) OVER {over}"


@dataclass(frozen=True)
class Last(_OnTypes):
    """The value from the latest event of the given types."""

    _aggregate, _window, _ordered = "arg_max", "last_value", True


@dataclass(frozen=True)
class First(_OnTypes):
    """The value from the earliest event of the given types."""

    _aggregate, _window, _ordered = "arg_min", "first_value", True


@dataclass(frozen=True)
class Sum:
    """A running total: ``on`` maps event types to the sign (+1 or -1) of their value."""

    value: str
    on: Mapping[str, int]

    def _signed(self) -> str:
        cases = " ".join(
            f"WHEN {const(t)} THEN {'-' if sign < 0 else ''}({self.value})"
            for t, sign in self.on.items()
        )
        return f"CASE event_type {cases} END"

    def aggregate(self, order: str, when: str | None = None) -> str:
        """The total over a group, of only the rows where ``when`` (SQL) holds, if given."""
        only = "" if when is None else f" FILTER (WHERE {when})"
        return f"coalesce(sum({self._signed()}){only}, 0)"

    def window(self, over: str) -> str:
        return f"coalesce(sum({self._signed()}) OVER {over}, 0)"


@dataclass(frozen=True)
class Count:
    """How many events of the given types."""

    on: Sequence[str]

    def aggregate(self, order: str, when: str | None = None) -> str:
        """The count over a group, of only the rows where ``when`` (SQL) holds, if given."""
        also = "" if when is None else f" AND ({when})"
        return f"count(*) FILTER (WHERE event_type IN ({_types(self.on)}){also})"

    def window(self, over: str) -> str:
        return f"count(CASE WHEN event_type IN ({_types(self.on)}) THEN 1 END) OVER {over}"


@dataclass(frozen=True)
class Min(_OnTypes):
    """The smallest value among events of the given types."""

    _aggregate, _window = "min", "min"


@dataclass(frozen=True)
class Max(_OnTypes):
    """The largest value among events of the given types."""

    _aggregate, _window = "max", "max"


Reducer = Last | First | Sum | Count | Min | Max


def _order(axis: Axis) -> str:
    if axis == "system":
        return "global_position"
    return "(epoch_us(occurred_at)::HUGEINT * 10000000000 + version)"


def _axis_time(axis: Axis) -> str:
    return "recorded_at" if axis == "system" else "occurred_at"


def diff_sql(left: str, right: str, fields: Sequence[str]) -> str:
    """SQL comparing two states (queries with ``key`` and ``fields``): the keys added,
    removed or changed from ``left`` to ``right``, with ``<field>_before``/``_after``."""
    differs = " OR ".join(f"a.{f} IS DISTINCT FROM b.{f}" for f in fields) or "FALSE"
    values = ", ".join(f"a.{f} AS {f}_before, b.{f} AS {f}_after" for f in fields)
    return f"""
        SELECT coalesce(a.key, b.key) AS key,
               CASE WHEN a.key IS NULL THEN 'added' WHEN b.key IS NULL THEN 'removed'
                    ELSE 'changed' END AS change,
               {values}
        FROM ({left}) a FULL OUTER JOIN ({right}) b ON a.key = b.key
        WHERE a.key IS NULL OR b.key IS NULL OR {differs}
        ORDER BY key
    """


class _Base:
    name: str
    fields: Sequence[str]

    def state(self, session: Session, **cut: Any) -> duckdb.DuckDBPyRelation:
        raise NotImplementedError

    def state_sql(self, session: Session, **cut: Any) -> str:
        raise NotImplementedError

    def diff(
        self,
        session: Session,
        before: Mapping[str, Any],
        after: Mapping[str, Any] | None = None,
    ) -> duckdb.DuckDBPyRelation:
        """Keys added, removed or changed between two cuts (each a dict of ``as_of``,
        ``valid_at``, ``position``; ``after`` defaults to the session's own cut), with
        ``<field>_before`` and ``<field>_after`` for every field. ``before`` and ``after`` are
        the two sides compared, in that order, whatever their times: a later ``before``
        gives the changes that lead back to it (``esa diff`` refuses FROM after TO)."""
        left = self.state_sql(session, **before)
        right = self.state_sql(session, **(after or {}))
        return session.sql(diff_sql(left, right, self.fields))

    def since(self, session: Session, position: int) -> duckdb.DuckDBPyRelation:
        """The keys with events after ``position``: their state then and now, and how many
        events they received."""
        left = self.state_sql(session, position=position)
        right = self.state_sql(session)
        values = ", ".join(f"a.{f} AS {f}_before, b.{f} AS {f}_after" for f in self.fields)
        key_expr = getattr(self, "key_sql", "stream_id")
        return session.sql(
            f"""
            WITH touched AS (
                SELECT {key_expr} AS key, count(*) AS new_events, max(global_position) AS last_position
                FROM events WHERE global_position > {validate_position(position)} GROUP BY ALL
            )
            SELECT t.key, CASE WHEN a.key IS NULL THEN 'added' ELSE 'changed' END AS change,
                   t.new_events, t.last_position, {values}
            FROM touched t JOIN ({right}) b ON b.key = t.key LEFT JOIN ({left}) a ON a.key = t.key
            ORDER BY t.key
            """
        )


@dataclass(frozen=True)
class Projection(_Base):
    """Declared fields with reducers, compiled to SQL. ``category`` (and optionally
    ``event_types``) limits the events it reads; the key is the stream id."""

    name: str
    reducers: Mapping[str, Reducer]
    category: str | None = None
    version: int = 1

    def __post_init__(self) -> None:
        for label in (self.name, *self.reducers):
            if not _NAME.fullmatch(label):
                raise ValidationError(
                    f"{label!r} cannot name a projection or field.",
                    hint="use lower-case letters, digits and '_', starting with a letter.",
                )

    @property
    def fields(self) -> Sequence[str]:  # type: ignore[override]
        return list(self.reducers)

    def _repr_html_(self) -> str:
        rows = []
        for name, reducer in self.reducers.items():
            on = getattr(reducer, "on", None)
            events = ", ".join(on) if isinstance(on, (list, tuple, dict)) else "every event"
            value = self._bind(getattr(reducer, "value", ""))  # data fields as real SQL
            rows.append([name, type(reducer).__name__, value, events])
        return _card(
            f"Projection {self.name}",
            [("category", self.category or "every category"), ("version", self.version),
             ("key", "stream_id"), ("fields", len(self.reducers))],
            _table(["field", "reducer", "value (SQL)", "on events"], rows),
        )  # fmt: skip

    @property
    def key_sql(self) -> str:
        return "stream_id"

    def _where(self) -> str:
        return "TRUE" if self.category is None else f"category = {const(self.category)}"

    def _source(self, relation: str) -> str:
        """``relation`` with this projection's rows, plus ``d``: the data fields it uses,
        parsed from each event's JSON once."""
        text = " ".join(self._sql_of(r) for r in self.reducers.values())
        top = sorted({m.group(1) for m in _MARKER.finditer(text) if "." not in m.group(1)})
        if not top:
            return f"(SELECT * FROM {relation} WHERE {self._where()})"
        # The texts data->>'$.f' gives, parsed once (from_json writes some doubles otherwise:
        # 1e-07 for 1e-7, so a twin's text would not be the JSON read's).
        paths = ", ".join(f"'$.{name}'" for name in top)
        items = ", ".join(f'"{name}" := esa_t[{i}]' for i, name in enumerate(top, 1))
        return (
            f"(SELECT * EXCLUDE (esa_t), struct_pack({items}) AS d FROM (SELECT *, "
            f"json_extract_string(data, [{paths}]) AS esa_t FROM {relation} WHERE {self._where()}))"
        )

    @staticmethod
    def _sql_of(reducer: Reducer) -> str:
        return getattr(reducer, "value", "")

    @staticmethod
    def _bind(sql: str, typed: Mapping[tuple[str, str], str] | None = None) -> str:
        def field(match: re.Match[str]) -> str:
            path, sql_type = match.group(1), match.group(2)
            if typed is not None:
                return f'"{typed[path, sql_type]}"'
            if "." in path:
                return _json("data", path, sql_type)
            return f'TRY_CAST(d."{path}" AS {sql_type})'

        return _MARKER.sub(field, sql)

    def _typed_columns(self) -> tuple[tuple[str, str, str], ...] | None:
        """The payload fields the reducers read, as the columns of a typed source (name,
        field, SQL type), or None when a typed source cannot serve them: no category, a
        nested field, or SQL that names the JSON (``meta()``, ``data``) or another column a
        typed source has not."""
        if self.category is None:
            return None
        text = " ".join(self._sql_of(r) for r in self.reducers.values())
        pairs = sorted({(m.group(1), m.group(2)) for m in _MARKER.finditer(text)})
        if any("." in path for path, _ in pairs):
            return None
        if _JSON_ONLY.search(_LITERAL.sub("''", _MARKER.sub("NULL", text))):
            return None
        return tuple((f"esa_{i}", path, sql_type) for i, (path, sql_type) in enumerate(pairs))

    def _typed(
        self, session: Session, after: int | None = None, until: int | None = None
    ) -> tuple[str, dict[tuple[str, str], str]] | None:
        """The session's typed source of this projection's events (a view without time cut,
        or of the events in ``(after, until]``) and the column of each data field, when the
        session reads twins of the category and the reducers can read from one."""
        columns = self._typed_columns()
        if columns is None or self.category is None or not session.typed:
            return None
        if not session.has_twins(self.category):
            return None
        view = session.typed_source(self.category, columns, after=after, until=until)
        return view, {(path, sql_type): name for name, path, sql_type in columns}

    def _reading(
        self, session: Session, relation: str | None, *, typed: bool = True, **cut: Any
    ) -> tuple[str, Callable[[str], str]]:
        """Where the reducers read (the typed source at the session's cut and ``cut`` when
        ``typed`` and it serves, else ``relation``, by default the events at that cut, with
        the JSON parsed once) and how their data fields bind there."""
        found = self._typed(session) if typed else None
        if found is None:
            return self._source(relation or session.cut(**cut)), self._bind
        view, names = found
        return (
            f"(SELECT * FROM {view} WHERE {session.cut_where(**cut)})",
            lambda sql: self._bind(sql, names),
        )

    def state_sql(self, session: Session, **cut: Any) -> str:
        axis: Axis = (
            "valid" if cut.get("valid_at") is not None or session.valid_at is not None else "system"
        )
        order = _order(axis)
        source, bind = self._reading(session, None, **cut)
        columns = bind(
            ", ".join(f"{r.aggregate(order)} AS {name}" for name, r in self.reducers.items())
        )
        return (
            f"SELECT stream_id AS key, {columns}, count(*) AS events, "
            f"max(global_position) AS last_position "
            f"FROM {source} GROUP BY stream_id"
        )

    def since(self, session: Session, position: int) -> duckdb.DuckDBPyRelation:
        """The keys with events after ``position``: their state then and now, and how many
        events they received: the same answer as :meth:`_Base.since`, which folds two whole
        states and joins them, from the events of the touched streams only (a plain
        ``stream_id IN (...)`` on the source, which DuckDB pushes into the scan). On system
        time, their events up to ``position`` are folded once (then) and merged with the
        fold of the events after it (now); on valid time, where a later event can fall
        anywhere in a stream's order, one pass folds each reducer twice: over every row
        (now) and over the rows at or before ``position`` (then)."""
        position = validate_position(position)
        touched = f"stream_id IN (SELECT stream_id FROM {session.events_after(position)})"
        source, bind = self._reading(session, None)
        if session.valid_at is None:
            # In the log's order the state now is the state then merged with the events
            # after: fold the touched streams up to the position once, the few after apart.
            then_sql = self._aggregate(
                f"(SELECT * FROM {source} WHERE {touched} AND global_position <= {position})",
                bind,
            )
            delta = self._aggregate(
                f"(SELECT * FROM {source} WHERE global_position > {position})", bind
            )
            pairs = ", ".join(f"o.{f} AS {f}_before, m.{f} AS {f}_after" for f in self.fields)
            return session.sql(
                f"""
                WITH o AS ({then_sql}), d AS ({delta})
                SELECT d.key, CASE WHEN o.key IS NULL THEN 'added' ELSE 'changed' END AS change,
                       d.events AS new_events, d.last_position, {pairs}
                FROM d LEFT JOIN o ON o.key = d.key
                JOIN ({self.merge_sql("SELECT * FROM o", "SELECT * FROM d")}) m ON m.key = d.key
                ORDER BY d.key
                """
            )
        order = _order("valid")
        then = f"global_position <= {position}"
        columns = [f"{r.aggregate(order)} AS esa_a_{name}" for name, r in self.reducers.items()]
        columns += [
            f"{r.aggregate(order, when=then)} AS esa_b_{name}" for name, r in self.reducers.items()
        ]
        values = ", ".join(
            f"CASE WHEN esa_then > 0 THEN esa_b_{f} END AS {f}_before, esa_a_{f} AS {f}_after"
            for f in self.fields
        )
        return session.sql(
            f"""
            SELECT key, CASE WHEN esa_then = 0 THEN 'added' ELSE 'changed' END AS change,
                   new_events, last_position, {values}
            FROM (
                SELECT stream_id AS key, {bind(", ".join(columns))},
                       count(*) FILTER (WHERE {then}) AS esa_then,
                       count(*) FILTER (WHERE global_position > {position}) AS new_events,
                       max(global_position) FILTER (WHERE global_position > {position})
                           AS last_position
                FROM {source} WHERE {touched} GROUP BY stream_id
                HAVING count(*) FILTER (WHERE global_position > {position}) > 0
            )
            ORDER BY key
            """
        )

    def aggregate_sql(self, relation: str) -> str:
        """The state (system-time order) over any relation of events, with a hidden
        ``__n_<field>`` count of the events that set each Last/First/Min/Max field (a null
        value sets nothing): what an
        incremental refresh needs to merge a delta into an older state."""
        return self._aggregate(self._source(relation), self._bind)

    def _aggregate(self, source: str, bind: Callable[[str], str]) -> str:
        """:meth:`aggregate_sql` over ``source`` (this projection's events), its data fields
        bound by ``bind``."""
        order = _order("system")
        columns = [f"{r.aggregate(order)} AS {name}" for name, r in self.reducers.items()]
        # The events that set the field: arg_max/arg_min (Last, First) pass over a null value,
        # so an event whose value is null sets nothing, and a merge must not take its side.
        columns += [
            f"count({r.value}) FILTER (WHERE event_type IN ({_types(r.on)})) AS __n_{name}"
            for name, r in self.reducers.items()
            if isinstance(r, Last | First | Min | Max)
        ]
        return (
            f"SELECT stream_id AS key, {bind(', '.join(columns))}, count(*) AS events, "
            f"max(global_position) AS last_position FROM {source} GROUP BY stream_id"
        )

    def delta_sql(self, session: Session, after: int, until: int) -> str:
        """:meth:`aggregate_sql` over the events in ``(after, until]`` (what a materialized
        refresh merges in), read from the typed twins where they serve."""
        found = self._typed(session, after, until)
        if found is None:
            return self.aggregate_sql(session.events_after(after, until))
        view, names = found
        return self._aggregate(f"(SELECT * FROM {view})", lambda sql: self._bind(sql, names))

    def merge_sql(self, old: str, delta: str) -> str:
        """SQL that merges the state ``delta`` (of later events) into the state ``old``."""
        merged = []
        for name, r in self.reducers.items():
            o, d = f"o.{name}", f"d.{name}"
            if isinstance(r, Sum | Count):
                merged.append(f"coalesce({o}, 0) + coalesce({d}, 0) AS {name}")
                continue
            if isinstance(r, Last):
                merged.append(
                    f"CASE WHEN coalesce(d.__n_{name}, 0) > 0 THEN {d} ELSE {o} END AS {name}"
                )
            elif isinstance(r, First):
                merged.append(
                    f"CASE WHEN coalesce(o.__n_{name}, 0) > 0 THEN {o} ELSE {d} END AS {name}"
                )
            else:
                pick = "least" if isinstance(r, Min) else "greatest"
                merged.append(
                    f"CASE WHEN {o} IS NULL THEN {d} WHEN {d} IS NULL THEN {o} ELSE {pick}({o}, {d}) END AS {name}"
                )
            merged.append(f"coalesce(o.__n_{name}, 0) + coalesce(d.__n_{name}, 0) AS __n_{name}")
        return (
            f"SELECT coalesce(o.key, d.key) AS key, {', '.join(merged)}, "
            "coalesce(o.events, 0) + coalesce(d.events, 0) AS events, "
            "greatest(coalesce(o.last_position, 0), coalesce(d.last_position, 0)) AS last_position "
            f"FROM ({old}) o FULL OUTER JOIN ({delta}) d ON o.key = d.key"
        )

    def state(self, session: Session, **cut: Any) -> duckdb.DuckDBPyRelation:
        """One row per key as of the cut (``as_of``, ``valid_at``, ``position``)."""
        return session.sql(self.state_sql(session, **cut) + " ORDER BY key")

    def history(
        self,
        session: Session,
        *,
        axis: Axis = "system",
        key: str | None = None,
        period: Period | None = None,
        relation: str | None = None,
        changes_of: Sequence[str] | None = None,
    ) -> duckdb.DuckDBPyRelation:
        """Each key's state over time: ``(key, valid_from, valid_to, fields...)`` on system
        time (when we recorded it) or valid time (when it happened); ``valid_to`` is null for
        the current state; states that lasted no time are left out. ``period`` keeps the
        states that meet it (see :class:`~esanalytics.temporal.Period`). ``relation`` reads
        another relation of the session than ``events`` (a filtered view of it, say).

        ``changes_of`` (field names) gives one row per change of those fields instead of one
        per event: ``(key, valid_from, valid_to, <those fields>, global_position)``, where
        consecutive states equal on them are one row, from the first ``valid_from`` to the
        last ``valid_to``, and ``global_position`` is the event the row begins with. Only
        the events that can change those fields are folded (and each stream's first event,
        where its state begins), so ``history(session, changes_of=["status"])`` of every
        entity reads a small part of the log. ``period`` then keeps the merged rows that
        meet it."""
        if changes_of is not None:
            return self._changes(session, changes_of, axis, key, period, relation)
        events = relation or ("events" if key is None else session.stream_events(key))
        reading = self._reading(session, events, typed=relation is None and key is None)
        return session.sql(
            f"""
            SELECT key, valid_from, valid_to, {", ".join(self.fields)}, global_position
            FROM ({self._history_rows(events, self.fields, axis, reading)})
            WHERE (valid_to IS NULL OR valid_to > valid_from) AND {(period or Period.all()).states_sql()}
            ORDER BY key, valid_from, global_position
            """
        )

    def _history_rows(
        self,
        events: str,
        fields: Sequence[str],
        axis: Axis,
        reading: tuple[str, Callable[[str], str]] | None = None,
    ) -> str:
        """SQL: one row per event of ``events`` with ``fields`` as folded up to it, its time
        on ``axis`` as ``valid_from`` and the stream's next event time as ``valid_to``.
        ``reading`` (a source and how data fields bind there, from :meth:`_reading`) reads
        another way, e.g. from the typed twins."""
        source, bind = reading or (self._source(events), self._bind)
        order = _order(axis)
        over = f"(PARTITION BY stream_id ORDER BY {order} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
        columns = bind(", ".join(f"{self.reducers[f].window(over)} AS {f}" for f in fields))
        time = _axis_time(axis)
        return f"""
            SELECT stream_id AS key, {time} AS valid_from,
                   lead({time}) OVER (PARTITION BY stream_id ORDER BY {order}) AS valid_to,
                   {columns}, global_position
            FROM {source}
        """

    def _changes(
        self,
        session: Session,
        changes_of: Sequence[str],
        axis: Axis,
        key: str | None,
        period: Period | None,
        relation: str | None,
    ) -> duckdb.DuckDBPyRelation:
        """:meth:`history` with ``changes_of``: one row per change of those fields."""
        fields = list(dict.fromkeys(changes_of))
        unknown = [f for f in fields if f not in self.reducers]
        if not fields or unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], self.fields, n=1) if unknown else []
            like = (close or list(self.fields))[0]
            raise ValidationError(
                f"history(changes_of=...) needs fields of {self.name}; "
                + (
                    f"it has no {', '.join(map(repr, unknown))}." if unknown else "none were given."
                ),
                hint=f"choose among {', '.join(self.fields)}, e.g. changes_of=[{like!r}].",
                cli_hint=f"choose among {', '.join(self.fields)}, e.g. --changes-of {like}.",
            )
        types: set[str] = set()
        for f in fields:
            types.update(self.reducers[f].on)
        events = relation or ("events" if key is None else session.stream_events(key))
        # Other events leave these fields as they were, so they are never read; but a stream
        # whose first event is of none of those types begins its state there (at the initial
        # values), so that event is kept, without its payload, which nothing reads. In log
        # order with no valid-time cut that is version 1, found without grouping by stream.
        on = _types(sorted(types))
        if axis == "system" and relation is None and session.valid_at is None:
            first = f"version = 1 AND event_type NOT IN ({on})"
        else:
            order = _order(axis)
            first = (
                f"global_position IN (SELECT arg_min(global_position, {order}) FROM {events} "
                f"WHERE {self._where()} GROUP BY stream_id "
                f"HAVING arg_min(event_type, {order}) NOT IN ({on}))"
            )
        narrow = f"""(
            SELECT * FROM {events} WHERE event_type IN ({on})
            UNION ALL
            SELECT * REPLACE ('{{}}' AS data, '{{}}' AS metadata) FROM {events} WHERE {first}
        )"""
        listed = ", ".join(fields)
        # Rows that lasted no time go first (as in history()); the rest tile time, so a run of
        # equal states ends where the next change begins.
        differs = " OR ".join(
            f"{f} IS DISTINCT FROM lag({f}) OVER (PARTITION BY key ORDER BY valid_from)"
            for f in fields
        )
        return session.sql(
            f"""
            WITH kept AS (
                SELECT * FROM ({self._history_rows(narrow, fields, axis)})
                WHERE valid_to IS NULL OR valid_to > valid_from
            ), changes AS (
                SELECT key, valid_from, {listed}, global_position FROM kept
                QUALIFY row_number() OVER (PARTITION BY key ORDER BY valid_from) = 1 OR {differs}
            )
            SELECT key, valid_from, valid_to, {listed}, global_position FROM (
                SELECT key, valid_from,
                       lead(valid_from) OVER (PARTITION BY key ORDER BY valid_from) AS valid_to,
                       {listed}, global_position
                FROM changes
            )
            WHERE {(period or Period.all()).states_sql()}
            ORDER BY key, valid_from
            """
        )

    def trail(self, session: Session, key: str) -> duckdb.DuckDBPyRelation:
        """One entity's events, in log order: who, why, when on both axes, the event, and
        every field's value before and after it."""
        over = "(PARTITION BY stream_id ORDER BY global_position ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
        columns = self._bind(
            ", ".join(f"{r.window(over)} AS {name}" for name, r in self.reducers.items())
        )
        before = ", ".join(
            f"lag({f}) OVER (ORDER BY global_position) AS {f}_before, {f} AS {f}_after"
            for f in self.fields
        )
        return session.sql(
            f"""
            SELECT global_position, version, event_type, recorded_at, occurred_at,
                   metadata->>'$.actor' AS actor, metadata->>'$.reason' AS reason,
                   metadata->>'$.correlation_id' AS correlation_id, data, {before}
            FROM (
                SELECT *, {columns} FROM {self._source(session.stream_events(key))}
            )
            ORDER BY global_position
            """
        )

    def cut_state_sql(self, relation: str, axis: Axis) -> str:
        """The state over ``relation`` (events at some cut, read from the JSON), folded in the
        order of ``axis``: the body of the macros :meth:`register` makes, in any engine."""
        order = _order(axis)
        columns = self._bind(
            ", ".join(f"{r.aggregate(order)} AS {n}" for n, r in self.reducers.items())
        )
        return (
            f"SELECT stream_id AS key, {columns}, count(*) AS events, "
            f"max(global_position) AS last_position FROM {self._source(relation)} "
            "GROUP BY stream_id"
        )

    def register(self, session: Session) -> None:
        """Give SQL users ``<name>`` (the state at the session's cut) and table macros
        ``<name>_as_of(t)``, ``<name>_valid_at(t)``, ``<name>_at_position(p)``."""
        base = self.state_sql(session)
        session.con.execute(f"CREATE OR REPLACE VIEW {self.name} AS {base}")
        tail = "count(*) AS events, max(global_position) AS last_position"
        typed = self._typed(session)
        macros = []
        for suffix, param, source, axis in (
            ("as_of", "t", "events_as_of(t)", "system"),
            ("valid_at", "t", "events_valid_at(t)", "valid"),
            ("at_position", "p", "events_at_position(p)", "system"),
        ):
            if typed is None:
                body = self.cut_state_sql(source, axis)  # type: ignore[arg-type]
            else:  # the same cut over the typed source (the views follow the session's pins)
                order = _order(axis)  # type: ignore[arg-type]
                aggregates = ", ".join(
                    f"{r.aggregate(order)} AS {n}" for n, r in self.reducers.items()
                )
                columns = self._bind(aggregates, typed[1])
                read = f"(SELECT * FROM {typed[0]} WHERE {MACRO_CUTS[suffix]})"
                body = f"SELECT stream_id AS key, {columns}, {tail} FROM {read} GROUP BY stream_id"
            macros.append(f"CREATE OR REPLACE MACRO {self.name}_{suffix}({param}) AS TABLE {body};")
        session.con.execute("\n".join(macros))


@dataclass(frozen=True)
class SqlProjection(_Base):
    """Any query over ``events`` that returns a ``key`` column; the engine runs it over the
    events at the cut (``events`` is rebound to the cut inside it)."""

    name: str
    query: str
    columns: Sequence[str] = field(default_factory=list)

    @property
    def fields(self) -> Sequence[str]:  # type: ignore[override]
        return list(self.columns)

    def state_sql(self, session: Session, **cut: Any) -> str:
        return f"WITH events AS {session.cut(**cut)} SELECT * FROM ({self.query})"

    def state(self, session: Session, **cut: Any) -> duckdb.DuckDBPyRelation:
        return session.sql(self.state_sql(session, **cut) + " ORDER BY key")


@dataclass(frozen=True)
class FoldProjection(_Base):
    """A Python fold, for what SQL cannot say: ``step(state, event_row) -> state`` from
    ``initial()`` per stream, with ``event_row`` a dict of the event's columns (data and
    metadata parsed). ``to_row(state)`` gives the field values. Slower: events travel from
    DuckDB to Python."""

    name: str
    initial: Callable[[], Any]
    step: Callable[[Any, dict[str, Any]], Any]
    to_row: Callable[[Any], Mapping[str, Any]]
    columns: Sequence[str]
    category: str | None = None

    @property
    def fields(self) -> Sequence[str]:  # type: ignore[override]
        return list(self.columns)

    def _rows(self, session: Session, **cut: Any) -> list[dict[str, Any]]:
        import json

        axis_valid = cut.get("valid_at") is not None or session.valid_at is not None
        order = "occurred_at, version" if axis_valid else "global_position"
        where = "TRUE" if self.category is None else f"category = {const(self.category)}"
        relation = session.sql(
            f"SELECT * FROM {session.cut(**cut)} WHERE {where} ORDER BY stream_id, {order}"
        )
        states: dict[str, Any] = {}
        positions: dict[str, tuple[int, int]] = {}
        for batch in relation.to_arrow_reader():
            for row in batch.to_pylist():
                row["data"] = json.loads(row["data"])
                row["metadata"] = json.loads(row["metadata"])
                key = row["stream_id"]
                states[key] = self.step(
                    states.get(key, self.initial()) if key in states else self.initial(), row
                )
                count, last = positions.get(key, (0, 0))
                positions[key] = (count + 1, max(last, row["global_position"]))
        return [
            {
                "key": key,
                **self.to_row(state),
                "events": positions[key][0],
                "last_position": positions[key][1],
            }
            for key, state in sorted(states.items())
        ]

    def state_sql(self, session: Session, **cut: Any) -> str:
        import pyarrow as pa

        rows = self._rows(session, **cut)
        names = ["key", *self.columns, "events", "last_position"]
        table = (
            pa.Table.from_pylist(rows)
            if rows
            else pa.table({n: pa.array([], pa.string()) for n in names})
        )
        view = f"esa_fold_{self.name}_{abs(hash(tuple(sorted(cut.items(), key=str))))}"
        session.con.register(view, table.select(names))
        return f"SELECT * FROM {view}"

    def state(self, session: Session, **cut: Any) -> duckdb.DuckDBPyRelation:
        return session.sql(self.state_sql(session, **cut) + " ORDER BY key")
