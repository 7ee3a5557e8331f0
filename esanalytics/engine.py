"""The DuckDB session over a lake: the one place that talks to DuckDB.

A session pins one log position and exposes:

* ``events_all``: every event up to that position (the Parquet files plus the unsealed tail),
  with the partition column ``month`` that lets DuckDB skip whole files;
* ``events``: the same, cut at the session's time bound (system time ``as_of``, valid time
  ``valid_at``, or both), so any SQL, and any SQL projection, is answered as of that moment;
* table macros for people who write only SQL: ``events_as_of(t)``, ``events_valid_at(t)``,
  ``events_bitemporal(system_t, valid_t)`` and ``events_at_position(p)``.

Only DuckDB's built-in extensions (json, parquet, icu) are used; nothing is installed.

>>> import tempfile, esanalytics as esa
>>> store = esa.open(tempfile.mkdtemp() + "/lake", create=True)
>>> _ = store.append("account-1", [esa.NewEvent("MoneyDeposited", {"amount": 5})])
>>> Session(store).sql("SELECT stream_id, data->>'$.amount' AS amount FROM events").fetchall()
[('account-1', '5')]
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import duckdb

from esanalytics._html import card as _card
from esanalytics._html import counts as _counts
from esanalytics._typing import TimeLike
from esanalytics.events import EVENT_SCHEMA, to_epoch_us, to_utc, validate_position
from esanalytics.exceptions import FutureCutWarning, ValidationError
from esanalytics.store import EventStore
from esanalytics.store.layout import inside_lake

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["Session", "query_error", "sql_time"]

COLUMNS = ", ".join(EVENT_SCHEMA.names)
#: Times a query runs again, on the files the log names now, when compaction moved a file of
#: the session's view under it.
_QUERY_ATTEMPTS = 5
_T = TypeVar("_T")


#: A time of day followed by a zone (``Z``, ``+05:30``, ``-05``): how a cut's text says it
#: is an instant rather than a wall time.
_ZONED = r"\d:\d\d(:\d\d(\.\d*)?)?\s*([zZ]|[+-]\d\d(:?\d\d)?(:?\d\d)?)$"


def sql_time(moment: datetime) -> str:
    """A UTC timestamp literal DuckDB reads exactly."""
    return f"TIMESTAMPTZ '{moment.isoformat()}'"


def month_of(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def cut_predicate(
    *, as_of: datetime | None = None, valid_at: datetime | None = None, position: int | None = None
) -> str:
    """The WHERE clause of a time cut. A system-time cut also bounds the partition column,
    so DuckDB never opens files of later months."""
    parts = ["TRUE"]
    if position is not None:
        parts.append(f"global_position <= {validate_position(position)}")
    if as_of is not None:
        parts.append(f"recorded_at <= {sql_time(as_of)} AND month <= '{month_of(as_of)}'")
    if valid_at is not None:
        parts.append(f"occurred_at <= {sql_time(valid_at)}")
    return " AND ".join(parts)


def lake_targets(con: duckdb.DuckDBPyConnection, query: str, lake: Path) -> list[str]:
    """The paths inside the lake that a statement other than a plain SELECT names at its
    top level (a COPY ... TO target, an EXPORT folder, an ATTACH file, a SET directory)."""
    found = []
    for statement in con.extract_statements(query):
        if statement.type.name == "SELECT":
            continue  # reads; the paths it names are sources
        text, depth = statement.query, 0
        tokens = duckdb.tokenize(text)
        for index, (start, kind) in enumerate(tokens):
            end = tokens[index + 1][0] if index + 1 < len(tokens) else len(text)
            token = text[start:end].strip().rstrip(";").strip()
            if kind == duckdb.token_type.operator:
                depth += token.count("(") - token.count(")")
            elif kind == duckdb.token_type.string_const and depth == 0:
                literal = token[1:-1].replace("''", "'")
                if inside_lake(lake, literal):
                    found.append(literal)
    return found


class Session:
    """A DuckDB connection whose ``events`` view is the lake at one position and time cut.

    ``as_of`` (system time: what had been recorded), ``valid_at`` (valid time: what had
    happened) and ``position`` may be combined (bitemporal). ``threads`` caps DuckDB's
    threads (default: all cores).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        as_of: TimeLike | None = None,
        valid_at: TimeLike | None = None,
        position: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.store = store
        self.as_of = None if as_of is None else to_utc(as_of, what="as_of")
        self.valid_at = None if valid_at is None else to_utc(valid_at, what="valid_at")
        self.con = duckdb.connect(config={"threads": threads} if threads else {})
        self.con.execute("SET TimeZone = 'UTC'")
        # Committed files never change: keep their footers between queries.
        self.con.execute("SET parquet_metadata_cache = true")
        self._requested_position = None if position is None else validate_position(position)
        self._streams: list[str] = []
        self._after: dict[str, tuple[int, int]] = {}  # views of events_after: (after, upto)
        self.position = 0
        self.refresh()
        if self.as_of is not None:
            self.warn_if_future(self.as_of)

    def warn_if_future(self, as_of: TimeLike) -> None:
        """Warn (:class:`~esanalytics.exceptions.FutureCutWarning`) when a system-time cut
        lies after now: it would silently mean "now"."""
        as_of = to_utc(as_of, what="as_of")
        if as_of <= datetime.now(UTC):
            return
        last = self.con.sql("SELECT max(recorded_at) FROM events_all").fetchall()[0][0]
        ends = (
            f"the log ends at {last.astimezone(UTC).isoformat()} (position {self.position:,})"
            if last is not None
            else "the log is empty"
        )
        warnings.warn(
            FutureCutWarning(
                f"The as-of cut {as_of.isoformat()} is in the future: {ends}, so this answers "
                "as of now.",
                hint="leave the as-of cut out to ask about now, or choose a time before now.",
            ),
            stacklevel=3,
        )

    def _repr_html_(self) -> str:
        cut = [
            ("position", self.position),
            ("as of (system time)", self.as_of or "now"),
            ("valid at", self.valid_at or "any time"),
        ]
        counted = self.con.sql(
            "SELECT count(*), min(recorded_at), max(recorded_at), count(DISTINCT stream_id) "
            "FROM events"
        ).fetchall()[0]
        cats = dict(self.con.sql("SELECT category, count(*) FROM events GROUP BY ALL").fetchall())
        return _card(
            f"Session on {self.store.path}",
            [
                *cut,
                ("events at this cut", counted[0]),
                ("streams", counted[3]),
                ("recorded", f"{counted[1]} .. {counted[2]}"),
                ("categories", _counts(cats)),
            ],
        )

    # -- the views -------------------------------------------------------------------------

    def refresh(self) -> int:
        """Re-pin to the store's newest position (or the requested one); returns it."""
        return self._pin(self._requested_position)

    def _pin(self, position: int | None) -> int:
        """Point every view at the files that hold the log up to ``position`` now (DuckDB
        opens them to create the views: again if compaction moved one meanwhile)."""
        for attempt in range(_QUERY_ATTEMPTS):
            try:
                return self._point(position)
            except duckdb.IOException:
                if attempt == _QUERY_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _point(self, position: int | None) -> int:
        snapshot = self.store.snapshot(position=position)
        self._snapshot = snapshot
        self.position = snapshot.position
        tail = snapshot.tail
        import pyarrow as pa
        import pyarrow.compute as pc

        months = (
            pc.strftime(tail["recorded_at"], format="%Y-%m")
            if tail.num_rows
            else pa.array([], pa.string())
        )
        self.con.register("esa_tail", tail.append_column("month", months))
        sources = [f"SELECT {COLUMNS}, month FROM esa_tail"]
        if snapshot.files:
            files = ", ".join("'" + path.replace("'", "''") + "'" for path in snapshot.files)
            sources.insert(
                0,
                f"SELECT {COLUMNS}, month FROM read_parquet([{files}], hive_partitioning = true, "
                "hive_types = {'category': VARCHAR, 'month': VARCHAR})",
            )
        union = " UNION ALL ".join(sources)
        self.con.execute(
            f"CREATE OR REPLACE VIEW events_all AS SELECT * FROM ({union}) "
            f"WHERE global_position <= {self.position}"
        )
        where = cut_predicate(as_of=self.as_of, valid_at=self.valid_at)
        self.con.execute(f"CREATE OR REPLACE VIEW events AS SELECT * FROM events_all WHERE {where}")
        self._macros()
        for name, (after, upto) in self._after.items():
            self._after_view(name, after, upto)
        return self.position

    def _settled(self, run: Callable[[], _T]) -> _T:
        """``run()``; when compaction moved a file of the session's view meanwhile, the views
        are pointed at the files that hold the same events now (the same position, so the
        same answer) and it runs again."""
        for attempt in range(_QUERY_ATTEMPTS):
            try:
                return run()
            except duckdb.IOException:
                if attempt == _QUERY_ATTEMPTS - 1:
                    raise
                self._pin(self.position)
        raise AssertionError("unreachable")

    def register_codec(self, codec: Any, *, name: str = "events_upcast") -> str:
        """Create the view ``name``: ``events`` with every payload lifted to its type's
        current schema version by the codec's ``sql_upcasters`` (the SQL twin of the
        upcasting the write side does in Python)."""
        current = {t: v for t, v in codec.schema_versions.items()}
        versions = " ".join(
            f"WHEN '{t.replace(chr(39), chr(39) * 2)}' THEN {v}" for t, v in current.items()
        )
        schema = (
            f"CASE event_type {versions} ELSE schema_version END" if current else "schema_version"
        )
        self.con.execute(
            f"CREATE OR REPLACE VIEW {name} AS SELECT * REPLACE ({codec.upcast_sql()} AS data, "
            f"CAST({schema} AS INTEGER) AS schema_version) FROM events"
        )
        return name

    def stream_events(self, stream_id: str) -> str:
        """A SQL subquery of one stream's events at the session's cut, read through the
        store's one-stream path (only the row groups that can hold it), which beats a scan
        of every file for questions about one entity."""
        table = self.store.read_stream(
            stream_id, position=self.position, as_of=self.as_of
        ).to_arrow()
        name = f"esa_stream_{len(self._streams)}"
        self._streams.append(name)
        self.con.register(name, table)
        return f"(SELECT * FROM {name} WHERE {cut_predicate(valid_at=self.valid_at)})"

    def events_after(self, position: int, until: int | None = None) -> str:
        """A SQL subquery of the events after ``position`` (up to ``until``, or the session's
        position) that opens only the files which can hold them: how incremental work and
        answers from checkpoints stay small."""
        position = validate_position(position)
        top = self.position if until is None else min(validate_position(until), self.position)
        name = f"esa_after_{int(position)}_{top}"
        if name not in self._after:
            self._settled(lambda: self._after_view(name, int(position), top))
            self._after[name] = (int(position), top)
        return f"(SELECT * FROM {name})"

    def _after_view(self, name: str, position: int, top: int) -> None:
        files = [
            path
            for path, entry in zip(self._snapshot.files, self._snapshot.entries, strict=True)
            if entry.max_position > position and entry.min_position <= top
        ]
        sources = [f"SELECT {COLUMNS}, month FROM esa_tail"]
        if files:
            listed = ", ".join("'" + path.replace("'", "''") + "'" for path in files)
            sources.insert(
                0,
                f"SELECT {COLUMNS}, month FROM read_parquet([{listed}], hive_partitioning = true, "
                "hive_types = {'category': VARCHAR, 'month': VARCHAR})",
            )
        union = " UNION ALL ".join(sources)
        self.con.execute(
            f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM ({union}) "
            f"WHERE global_position > {position} AND global_position <= {top}"
        )

    def position_at(self, as_of: TimeLike) -> int:
        """The last log position recorded at or before ``as_of`` (0 if none), within this
        session's position. Recorded times never decrease along the log, so a system-time cut
        is a position cut; only the files whose time range straddles ``as_of`` are opened."""
        cut = to_utc(as_of, what="as_of")
        return self._settled(lambda: self._position_at(cut))

    def _position_at(self, cut: datetime) -> int:
        us = to_epoch_us(cut)
        best = 0
        straddling = []
        for path, entry in zip(self._snapshot.files, self._snapshot.entries, strict=True):
            if entry.max_recorded_us <= us:
                best = max(best, entry.max_position)
            elif entry.min_recorded_us <= us:
                straddling.append(path)
        sources = ["SELECT global_position, recorded_at FROM esa_tail"]
        if straddling:
            listed = ", ".join("'" + path.replace("'", "''") + "'" for path in straddling)
            sources.append(f"SELECT global_position, recorded_at FROM read_parquet([{listed}])")
        found = self.con.sql(
            f"SELECT max(global_position) FROM ({' UNION ALL '.join(sources)}) "
            f"WHERE recorded_at <= {sql_time(cut)}"
        ).fetchall()[0][0]
        return min(max(best, int(found or 0)), self.position)

    def _macros(self) -> None:
        # A cut is an instant, whatever the connection's TimeZone: `esa_utc(t)` reads it as a
        # UTC wall time (a time with an offset is converted, one without is taken as UTC,
        # as a bare date is everywhere in esanalytics) and the month partition is taken
        # from that, never from the session's zone.
        self.con.execute(
            """
            CREATE OR REPLACE MACRO esa_utc(t) AS
                CASE WHEN regexp_matches(CAST(t AS VARCHAR), '{_ZONED}')
                     THEN timezone('UTC', CAST(CAST(t AS VARCHAR) AS TIMESTAMPTZ))
                     ELSE CAST(CAST(t AS VARCHAR) AS TIMESTAMP) END;
            CREATE OR REPLACE MACRO events_as_of(t) AS TABLE
                SELECT * FROM events_all
                WHERE recorded_at <= timezone('UTC', esa_utc(t))
                  AND month <= strftime(esa_utc(t), '%Y-%m');
            CREATE OR REPLACE MACRO events_valid_at(t) AS TABLE
                SELECT * FROM events_all WHERE occurred_at <= timezone('UTC', esa_utc(t));
            CREATE OR REPLACE MACRO events_bitemporal(system_t, valid_t) AS TABLE
                SELECT * FROM events_all
                WHERE recorded_at <= timezone('UTC', esa_utc(system_t))
                  AND month <= strftime(esa_utc(system_t), '%Y-%m')
                  AND occurred_at <= timezone('UTC', esa_utc(valid_t));
            CREATE OR REPLACE MACRO events_at_position(p) AS TABLE
                SELECT * FROM events_all WHERE global_position <= p;
            """.replace("{_ZONED}", _ZONED)
        )

    # -- queries ---------------------------------------------------------------------------

    def sql(self, query: str, params: Any = None) -> duckdb.DuckDBPyRelation:
        """Run SQL over the session's views now; returns a DuckDB relation over the result
        (``.df()``, ``.arrow()``, ``.fetchall()``). If compaction moves a file while the
        query runs, the query runs again on the files that hold the same events now: the
        session stays at its position (:meth:`refresh` moves it).

        A statement that would write inside the lake's folder (``COPY ... TO``, ``EXPORT``,
        ``ATTACH`` or ``SET`` naming a path in it) is refused with
        :class:`~esanalytics.exceptions.ValidationError` before anything runs: the lake's
        files are written only by the store, so that its commit log and digests stay true.
        Any other path is yours to write. (``session.con`` is plain DuckDB, unguarded.)"""
        try:
            targets = lake_targets(self.con, query, self.store.path)
        except duckdb.Error:
            targets = []  # not readable as SQL: DuckDB names the error when it runs
        if targets:
            raise ValidationError(
                f"The query writes inside the lake ({', '.join(targets)}). Nothing was run.",
                hint="a lake's files are written only by esa, so that its commit log and "
                "digests stay true; write query results to a path outside the lake folder "
                "(any other path is yours), and add events with store.append.",
            )
        return self._run(query, params)

    def _run(self, query: str, params: Any = None) -> duckdb.DuckDBPyRelation:
        """:meth:`sql` without the guard, for the store's own writers (materialized states)."""

        def run() -> duckdb.DuckDBPyRelation:
            relation = cast("duckdb.DuckDBPyRelation | None", self.con.sql(query, params=params))
            if relation is None:  # a statement without rows (CREATE VIEW ...): nothing to hold
                return cast("duckdb.DuckDBPyRelation", relation)
            return self.con.from_arrow(relation.to_arrow_table())

        return self._settled(run)

    def df(self, query: str, params: Any = None) -> pd.DataFrame:
        frame: pd.DataFrame = self.sql(query, params).df()
        return frame

    def arrow(self, query: str, params: Any = None) -> pa.Table:
        relation = self.sql(query, params)
        return relation.to_arrow_table()

    def explain(self, query: str) -> str:
        """The executed plan of ``query`` (EXPLAIN ANALYZE), e.g. to see which files a time
        cut let DuckDB skip."""
        rows = self.con.sql(f"EXPLAIN ANALYZE {query}").fetchall()
        return "\n".join(str(row[-1]) for row in rows)

    def cut(
        self,
        *,
        as_of: TimeLike | None = None,
        valid_at: TimeLike | None = None,
        position: int | None = None,
    ) -> str:
        """A SQL subquery of the events at a cut (combined with the session's own)."""
        position = None if position is None else validate_position(position)
        system = None if as_of is None else to_utc(as_of, what="as_of")
        if system is not None:
            self.warn_if_future(system)
        where = cut_predicate(
            as_of=system,
            valid_at=None if valid_at is None else to_utc(valid_at, what="valid_at"),
            position=position,
        )
        return f"(SELECT * FROM events WHERE {where})"

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def query_error(error: Exception) -> ValidationError | None:
    """DuckDB's error about a query itself (its syntax, a column or a table it names) as a
    :class:`ValidationError` whose hint says how the lake reads in SQL; None for any other
    error. The esa command and the ``%%esql`` magic show these instead of a traceback."""
    message = str(error).strip()
    if not isinstance(error, duckdb.Error):
        return None
    if isinstance(error, duckdb.ParserException):
        return ValidationError(
            f"The query has a syntax error: {message}",
            hint="fix the SQL where DuckDB points, e.g. "
            "SELECT event_type, count(*) FROM events GROUP BY ALL.",
            cli_hint="fix the SQL where DuckDB points, and quote the whole query for the shell: "
            'esa sql LAKE "SELECT event_type, count(*) FROM events GROUP BY ALL".',
        )
    if isinstance(error, duckdb.BinderException):
        found = re.search(r'column "([^"]+)" not found', message)
        name = found.group(1) if found else "amount"
        return ValidationError(
            f"The query names something the lake's views do not have: {message}",
            hint=f"events has the columns {COLUMNS}, month; payload fields live in the JSON "
            f"columns: data->>'$.{name}' reads one as text, CAST(data->>'$.{name}' AS DOUBLE) "
            "as a number, metadata->>'$.actor' the actor.",
        )
    if isinstance(error, duckdb.CatalogException):
        return ValidationError(
            f"The query names a table or function that is not there: {message}",
            hint="the lake's tables are events and events_all, with the macros "
            "events_as_of(t), events_valid_at(t), events_bitemporal(s, v) and "
            "events_at_position(p); a registered projection adds its table and "
            "<name>_as_of(t), <name>_valid_at(t), <name>_at_position(p) "
            "(account_balances and order_status are registered for you).",
            cli_hint="the lake's tables are events and events_all, with the macros "
            "events_as_of(t), events_valid_at(t), events_bitemporal(s, v) and "
            "events_at_position(p); the projections account_balances and order_status are "
            "tables too, with <name>_as_of(t), <name>_valid_at(t), <name>_at_position(p), and "
            "--projection FILE adds your own.",
        )
    return None
