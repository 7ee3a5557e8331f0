"""The DuckDB session over a lake: the one place that talks to DuckDB.

A session pins one log position and exposes:

* ``events_all``: every event up to that position (the Parquet files plus the unsealed tail),
  with the partition column ``month`` that lets DuckDB skip whole files;
* ``events``: the same, cut at the session's time bound (system time ``as_of``, valid time
  ``valid_at``, or both), so any SQL, and any SQL projection, is answered as of that moment;
* table macros for people who write only SQL: ``events_as_of(t)``, ``events_valid_at(t)``,
  ``events_bitemporal(system_t, valid_t)`` and ``events_at_position(p)``;
* ``events_base``: the rows of ``events`` with only the columns :data:`TYPED_BASE`, read
  from the typed twins where files have them: what questions of types and times scan;
* ``events_<category>`` for each category whose files have typed twins (see
  :mod:`esanalytics.store.typed`): its events at the cut, with one typed column per payload
  field, named by the field, read from the twins where that is the JSON's answer.

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
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import duckdb

from esanalytics._duck import connect
from esanalytics._html import card as _card
from esanalytics._html import counts as _counts
from esanalytics._typing import TimeLike
from esanalytics.events import EVENT_SCHEMA, to_epoch_us, to_utc, validate_position
from esanalytics.exceptions import FutureCutWarning, LakeChangedError, ValidationError
from esanalytics.store import EventStore, LakeSnapshot
from esanalytics.store.commitlog import FileEntry
from esanalytics.store.layout import inside_lake
from esanalytics.store.typed import TWIN_BASE, derive, field_column, safe

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["Session", "query_error", "sql_time"]

COLUMNS = ", ".join(EVENT_SCHEMA.names)
#: The columns of a typed source besides its payload fields: what questions filter, group
#: and order by.
TYPED_BASE = (*TWIN_BASE, "category", "month")
_HIVE = "hive_partitioning = true, hive_types = {'category': VARCHAR, 'month': VARCHAR}"
#: ``events_<category>`` names that are already taken by the session's own views and macros.
_TAKEN = frozenset({"all", "base", "as_of", "valid_at", "bitemporal", "at_position"})
#: Untwinned events (small sealed files, the unsealed tail) of one category that a session
#: reads to type ``events_<category>``'s columns; beyond this, fields they may hold are text.
_CLASSIFY_ROWS = 200_000
#: The fields of files without a twin, as derive() types them (committed files never change),
#: by (lake, file, digest, first position).
_CLASSIFIED: dict[tuple[str, str, str | None, int], tuple[dict[str, str], bool]] = {}
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


def lake_targets(con: duckdb.DuckDBPyConnection, query: str, lake: Path | str) -> list[str]:
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


class CutMixin:
    """What a session of any engine gives projections about time cuts and twins: the events
    at a cut (:meth:`cut`), a cut's WHERE clause (:meth:`cut_where`), the warning for a
    system-time cut in the future, and whether a category has twins. A session sets
    ``as_of``, ``valid_at``, ``position``, ``_snapshot`` and ``_twins``, and says where its
    log ends (:meth:`_log_end`)."""

    as_of: datetime | None
    valid_at: datetime | None
    position: int
    _snapshot: LakeSnapshot  # the files the session is pinned to
    _twins: Mapping[str, Any]  # their typed twins, by events file

    def _log_end(self) -> datetime | None:
        """The newest ``recorded_at`` of the session's log (None when it is empty)."""
        raise NotImplementedError

    def _stored(self, entry: FileEntry, columns: _Columns) -> tuple[str | None, ...] | None:
        """How the entry's twin stores each wanted field (None: in none of its events), or
        None when the twin cannot give every wanted value as the JSON does."""
        if entry.typed is None or entry.path not in self._twins:
            return None
        fields = entry.typed.fields
        folded = {name.lower() for name in fields}
        if len(folded) < len(fields):
            return None  # names that differ only in case: an engine's columns would not tell them apart
        stored = []
        for _, path, sql_type in columns:
            kind = fields.get(path)
            if kind is None:
                if entry.typed.more or path.lower() in folded:
                    return None
            elif not safe(kind, sql_type):
                return None
            stored.append(kind)
        return tuple(stored)

    def has_twins(self, category: str) -> bool:
        """Whether the session reads twins of any file of ``category``."""
        return any(
            entry.category == category and entry.path in self._twins
            for entry in self._snapshot.entries
        )

    def warn_if_future(self, as_of: TimeLike) -> None:
        """Warn (:class:`~esanalytics.exceptions.FutureCutWarning`) when a system-time cut
        lies after now: it would silently mean "now"."""
        as_of = to_utc(as_of, what="as_of")
        if as_of <= datetime.now(UTC):
            return
        last = self._log_end()
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

    def cut(
        self,
        *,
        as_of: TimeLike | None = None,
        valid_at: TimeLike | None = None,
        position: int | None = None,
    ) -> str:
        """A SQL subquery of the events at a cut (combined with the session's own)."""
        return f"(SELECT * FROM events WHERE {self._extra_cut(as_of, valid_at, position)})"

    def cut_where(
        self,
        *,
        as_of: TimeLike | None = None,
        valid_at: TimeLike | None = None,
        position: int | None = None,
    ) -> str:
        """The WHERE clause of the session's own cut combined with another (as in :meth:`cut`),
        for relations with the columns of ``events_all``."""
        own = cut_predicate(as_of=self.as_of, valid_at=self.valid_at)
        return f"{own} AND {self._extra_cut(as_of, valid_at, position)}"

    def _extra_cut(
        self, as_of: TimeLike | None, valid_at: TimeLike | None, position: int | None
    ) -> str:
        """The WHERE clause of a cut given to :meth:`cut` (warning when it lies in the future)."""
        position = None if position is None else validate_position(position)
        system = None if as_of is None else to_utc(as_of, what="as_of")
        if system is not None:
            self.warn_if_future(system)
        return cut_predicate(
            as_of=system,
            valid_at=None if valid_at is None else to_utc(valid_at, what="valid_at"),
            position=position,
        )


class Session(CutMixin):
    """A DuckDB connection whose ``events`` view is the lake at one position and time cut.

    ``as_of`` (system time: what had been recorded), ``valid_at`` (valid time: what had
    happened) and ``position`` may be combined (bitemporal). ``threads`` caps DuckDB's
    threads (default: all cores). ``typed=False`` reads every payload field from the JSON,
    never from the typed twins (the answers are the same; only slower).
    ``category_views=False`` leaves out the ``events_<category>`` views (for sessions that
    run only the toolkit's own queries, such as a materialized refresh: cheaper to pin).
    ``memory_limit`` (``"4GB"``) bounds DuckDB's memory, ``temp_dir`` and ``max_temp_size``
    where it spills what does not fit and how much; each left out is read from
    ``ESA_MEMORY_LIMIT``, ``ESA_TEMP_DIR`` and ``ESA_MAX_TEMP_SIZE`` (see
    :mod:`esanalytics._duck`).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        as_of: TimeLike | None = None,
        valid_at: TimeLike | None = None,
        position: int | None = None,
        threads: int | None = None,
        typed: bool = True,
        category_views: bool = True,
        memory_limit: str | None = None,
        temp_dir: str | Path | None = None,
        max_temp_size: str | None = None,
    ) -> None:
        self.store = store
        self.typed = typed
        # The events_<category> views are for people writing SQL; a session that only runs
        # the toolkit's own queries (a materialized refresh) skips typing them at every pin.
        self._with_category_views = category_views
        self.as_of = None if as_of is None else to_utc(as_of, what="as_of")
        self.valid_at = None if valid_at is None else to_utc(valid_at, what="valid_at")
        self.con = connect(
            threads=threads,
            memory_limit=memory_limit,
            temp_dir=temp_dir,
            max_temp_size=max_temp_size,
        )
        self.con.execute("SET TimeZone = 'UTC'")
        # Committed files never change: keep their footers between queries.
        self.con.execute("SET parquet_metadata_cache = true")
        if not store.fs.local:  # a lake on object storage: DuckDB reads it through the seam
            from esanalytics.store.s3 import register_with_duckdb

            register_with_duckdb(self.con, store.fs)
        self._requested_position = None if position is None else validate_position(position)
        self._streams: list[str] = []
        self._after: dict[str, tuple[int, int]] = {}  # views of events_after: (after, upto)
        # Typed sources: view name -> (category, columns, (after, upto) or None).
        self._typed: dict[tuple[str, _Columns, tuple[int, int] | None], str] = {}
        self.category_views: dict[str, str] = {}  # category -> its events_<category> view
        self.position = 0
        self.refresh()
        if self.as_of is not None:
            self.warn_if_future(self.as_of)

    def _log_end(self) -> datetime | None:
        last: datetime | None = self.con.sql("SELECT max(recorded_at) FROM events_all").fetchall()[
            0
        ][0]
        return last

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
            except (duckdb.IOException, LakeChangedError):  # a twin vacuumed since the snapshot
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
            sources.insert(
                0, f"SELECT {COLUMNS}, month FROM read_parquet({_listed(snapshot.files)}, {_HIVE})"
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
        self._twins = self._twin_paths(snapshot)
        self._base_view(where)
        for (category, columns, bounds), name in self._typed.items():
            self._typed_view(name, category, columns, bounds)
        if self._with_category_views:
            self._category_views(snapshot.entries, tail)
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
            sources.insert(
                0, f"SELECT {COLUMNS}, month FROM read_parquet({_listed(files)}, {_HIVE})"
            )
        union = " UNION ALL ".join(sources)
        self.con.execute(
            f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM ({union}) "
            f"WHERE global_position > {position} AND global_position <= {top}"
        )

    # -- typed twins -----------------------------------------------------------------------

    def _twin_paths(self, snapshot: LakeSnapshot) -> dict[str, str]:
        """Where the twin of each file of the snapshot that has one is (by the entry's
        path); none when the session reads only the JSON."""
        if not self.typed:
            return {}
        return {
            entry.path: twin
            for entry, twin in zip(snapshot.entries, snapshot.twins, strict=True)
            if twin is not None
        }

    def _base_view(self, where: str) -> None:
        """Create ``events_base``: the rows of ``events`` with only :data:`TYPED_BASE`, read
        from the twins where a file has one (their large row groups scan fast) and from the
        events files and the unsealed tail elsewhere."""
        twins: list[str] = []
        plain: list[str] = []
        for path, entry in zip(self._snapshot.files, self._snapshot.entries, strict=True):
            twin = self._twins.get(entry.path)
            if twin is None:
                plain.append(path)
            else:
                twins.append(twin)
        base = ", ".join(TYPED_BASE)
        sources = [f"SELECT {base} FROM esa_tail"]
        for paths in (twins, plain):
            if paths:
                sources.insert(0, f"SELECT {base} FROM read_parquet({_listed(paths)}, {_HIVE})")
        self.con.execute(
            f"CREATE OR REPLACE VIEW events_base AS SELECT * FROM ({' UNION ALL '.join(sources)}) "
            f"WHERE global_position <= {self.position} AND {where}"
        )

    def base_source(self, where: str = "TRUE") -> str:
        """``events_base`` when ``where`` names only its columns (the event's position,
        stream, version, type, times, category and month), else ``events``: the relation a
        question that reads no payload or metadata scans."""
        try:
            self.con.sql(f"SELECT 1 FROM events_base WHERE {where} LIMIT 0")
        except duckdb.Error:
            return "events"
        return "events_base"

    def typed_events(self, category: str, wanted: Mapping[str, str], **cut: Any) -> str:
        """A SQL subquery of one category's events at the session's cut (and ``cut``, as in
        :meth:`cut`): the columns :data:`TYPED_BASE` and one column per wanted payload field
        (``{"amount": "DECIMAL(18,2)"}``), named by the field, whose values are those of
        ``TRY_CAST(data->>'$.amount' AS DECIMAL(18,2))``. They are read from the typed twins
        wherever a twin's stored type gives that same value, from the JSON elsewhere."""
        columns = tuple((name, name, sql_type) for name, sql_type in wanted.items())
        return (
            f"(SELECT * FROM {self.typed_source(category, columns)} WHERE {self.cut_where(**cut)})"
        )

    def typed_source(
        self,
        category: str,
        columns: _Columns,
        *,
        after: int | None = None,
        until: int | None = None,
    ) -> str:
        """The name of a view of one category's events up to the session's position (no time
        cut: the ``events_all`` of one category), or only those after ``after`` (up to
        ``until``) like :meth:`events_after`, with :data:`TYPED_BASE` and one column per
        ``(name, field, SQL type)`` of ``columns``: ``TRY_CAST(data->>'$.field' AS type)``,
        read from the twins where that is the same. It follows the session's pins."""
        for name, path, sql_type in columns:
            if not _FIELD.fullmatch(path) or not _TYPE.fullmatch(sql_type) or '"' in name:
                raise ValidationError(
                    f"{path!r} ({sql_type}) is not a top-level payload field and SQL type.",
                    hint="name a field of the payload's top level, like 'amount', and a type "
                    "like DOUBLE or DECIMAL(18,2).",
                )
        bounds = None
        if after is not None:
            top = self.position if until is None else min(validate_position(until), self.position)
            bounds = (validate_position(after), top)
        key = (category, tuple(columns), bounds)
        if key not in self._typed:
            name = f"esa_typed_{len(self._typed)}"
            self._settled(lambda: self._typed_view(name, category, key[1], bounds))
            self._typed[key] = name
        return self._typed[key]

    def _typed_view(
        self, name: str, category: str, columns: _Columns, bounds: tuple[int, int] | None
    ) -> None:
        """Create ``name`` (see :meth:`typed_source`): one ``read_parquet`` per group of twins
        that store the wanted fields alike (so each reads one schema), and one JSON read of
        the other files and the unsealed tail."""
        low, top = (-1, self.position) if bounds is None else bounds
        twins: dict[tuple[str | None, ...], list[str]] = {}
        cut: set[tuple[str | None, ...]] = set()  # groups with rows beyond (low, top]
        plain = []
        for path, entry in zip(self._snapshot.files, self._snapshot.entries, strict=True):
            if entry.category != category:
                continue
            if not (entry.max_position > low and entry.min_position <= top):
                continue
            stored = self._stored(entry, columns)
            if stored is None:
                plain.append(path)
                continue
            twins.setdefault(stored, []).append(self._twins[entry.path])
            if entry.min_position <= low or entry.max_position > top:
                cut.add(stored)
        base = ", ".join(TWIN_BASE)
        within = f"global_position > {low} AND global_position <= {top}"
        sources = []
        for stored, paths in twins.items():
            values = "".join(
                f', TRY_CAST("{field_column(path)}" AS {sql_type}) AS "{name_}"'
                if kind is not None
                else f', CAST(NULL AS {sql_type}) AS "{name_}"'
                for (name_, path, sql_type), kind in zip(columns, stored, strict=True)
            )
            sources.append(
                f"SELECT {base}, category, month{values} FROM read_parquet({_listed(paths)}, {_HIVE})"
                + (f" WHERE {within}" if stored in cut else "")  # whole files need no filter
            )
        raw = [f"SELECT * FROM esa_tail WHERE category = {_literal(category)}"]
        if plain:
            raw.insert(0, f"SELECT {COLUMNS}, month FROM read_parquet({_listed(plain)}, {_HIVE})")
        fields = sorted({path for _, path, _ in columns})
        parsed, values = "", ""
        if fields:
            # The texts data->>'$.f' gives, as derive() reads them (from_json writes some
            # doubles otherwise: 1e-07 for 1e-7).
            wanted = ", ".join(f"'$.{path}'" for path in fields)
            parsed = f", json_extract_string(data, [{wanted}]) AS d"
            values = "".join(
                f', TRY_CAST(d[{fields.index(path) + 1}] AS {sql_type}) AS "{name_}"'
                for name_, path, sql_type in columns
            )
        sources.append(
            f"SELECT {base}, category, month{values} "
            f"FROM (SELECT *{parsed} FROM ({' UNION ALL '.join(raw)}) WHERE {within})"
        )
        self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {' UNION ALL '.join(sources)}")

    def _category_views(self, entries: Sequence[FileEntry], tail: pa.Table) -> None:
        """Create ``events_<category>`` for each category with twins (see the module's
        docstring): one column per payload field its twins name, typed so that every event's
        value is what the JSON gives (:func:`_combined`), cut like ``events``."""
        categories = sorted({e.category for e in entries if e.typed is not None})
        where = cut_predicate(as_of=self.as_of, valid_at=self.valid_at)
        made: dict[str, str] = {}
        # A name several categories spell (Account, account; a-b, a_b) is the view of the
        # one spelled exactly so, or of none: never another category's events under it.
        spelled = {
            c: "events_" + re.sub(r"[^a-z0-9_]", "_", c.lower())
            for c in {e.category for e in entries} | set(tail["category"].to_pylist())
        }
        claims = Counter(spelled.values())
        for category in categories:
            view = spelled[category]
            if view[len("events_") :] in _TAKEN or view in made.values():
                continue  # a name the session's own views use, or another category's
            if claims[view] > 1 and view != "events_" + category:
                continue
            kinds = self._kinds(category, entries, tail)
            if kinds is None:
                continue
            taken = {c.lower() for c in TYPED_BASE}
            columns = []
            for field in sorted(kinds):
                name = field if field.lower() not in taken else field_column(field)
                taken.add(name.lower())
                columns.append((name, field, kinds[field]))
            key = (category, tuple(columns), None)
            if key not in self._typed:
                self._typed[key] = f"esa_typed_{len(self._typed)}"
                self._typed_view(self._typed[key], category, key[1], None)
            self.con.execute(
                f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {self._typed[key]} WHERE {where}"
            )
            made[category] = view
        for category, view in self.category_views.items():
            if category not in made:
                self.con.execute(f"DROP VIEW IF EXISTS {view}")
        self.category_views = made

    def _kinds(
        self, category: str, entries: Sequence[FileEntry], tail: pa.Table
    ) -> dict[str, str] | None:
        """The type of each field of ``category``'s twins that holds every event's JSON
        value exactly (fields whose names differ only in case left out: SQL would not tell
        their columns apart), or None when there is none to tell, or too many events without
        a twin to read."""
        import pyarrow.compute as pc

        seen: list[tuple[dict[str, str], bool]] = []
        rows = 0
        for path, entry in zip(self._snapshot.files, entries, strict=True):
            if entry.category != category:
                continue
            if entry.typed is not None:
                seen.append((entry.typed.fields, entry.typed.more))
            else:
                key = (str(self.store.path), entry.path, entry.sha256, entry.min_position)
                if key not in _CLASSIFIED:
                    rows += entry.rows
                    if rows > _CLASSIFY_ROWS:
                        return None
                    body = self.con.sql(  # a file moved meanwhile: IOException, and _pin again
                        f"SELECT {', '.join(TWIN_BASE)}, data FROM read_parquet({_literal(path)})"
                    ).to_arrow_table()
                    if len(_CLASSIFIED) > 10_000:
                        _CLASSIFIED.clear()
                    _CLASSIFIED[key] = derive(body)[1:]
                seen.append(_CLASSIFIED[key])
        mine = tail.filter(pc.equal(tail["category"], category)) if tail.num_rows else tail
        if mine.num_rows:
            seen.append(derive(mine.select([*TWIN_BASE, "data"]))[1:])
        names = {name for fields, _ in seen for name in fields}
        folded = Counter(name.lower() for name in names)
        names = {name for name in names if folded[name.lower()] == 1}  # SQL names ignore case
        if not names:
            return None
        return {
            name: _combined(
                [fields.get(name) for fields, _ in seen],
                unknown=any(more and name not in fields for fields, more in seen),
            )
            for name in names
        }

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
            sources.append(
                f"SELECT global_position, recorded_at FROM read_parquet({_listed(straddling)})"
            )
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

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_Columns = tuple[tuple[str, str, str], ...]  # (column name, payload field, SQL type)
#: The cuts of the table macros (``events_as_of(t)``...), as predicates over a relation with
#: the columns of ``events_all``, for macros over other such relations (``t`` or ``p``).
MACRO_CUTS = {
    "as_of": "recorded_at <= timezone('UTC', esa_utc(t)) AND month <= strftime(esa_utc(t), '%Y-%m')",
    "valid_at": "occurred_at <= timezone('UTC', esa_utc(t))",
    "at_position": "global_position <= p",
}
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TYPE = re.compile(r"[A-Za-z0-9_(), ]+")


def _listed(paths: Sequence[str]) -> str:
    """A SQL list of path literals, for ``read_parquet``."""
    return "[" + ", ".join(_literal(path) for path in paths) + "]"


def _literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _combined(kinds: Sequence[str | None], *, unknown: bool = False) -> str:
    """The one type that holds every value of a field stored as ``kinds`` (None: absent)
    exactly as the JSON gives it: the common type, a DECIMAL wide enough for integers and
    decimals together, else VARCHAR (the text itself)."""
    found = {kind for kind in kinds if kind is not None}
    if unknown or not found or "VARCHAR" in found:
        return "VARCHAR"
    if len(found) == 1:
        return found.pop()
    if "BOOLEAN" in found:
        return "VARCHAR"
    scales = [int(kind[len("DECIMAL(18,") : -1]) for kind in found if kind.startswith("DECIMAL(")]
    whole = max(
        18 if kind == "BIGINT" else 15 - int(kind[len("DECIMAL(18,") : -1]) for kind in found
    )
    scale = max(scales)
    return f"DECIMAL({max(18, min(38, whole + scale))},{scale})"


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
        if name.lower() in {c.lower() for c in EVENT_SCHEMA.names}:  # a column events has
            return ValidationError(
                f"The query names a column its view does not have: {message}",
                hint=f"{name} is a column of events; the typed views events_<category> and "
                "events_base hold only global_position, stream_id, version, event_type, "
                "occurred_at, recorded_at, category, month (and, events_<category>, a column "
                f"per payload field): read {name} from events, e.g. SELECT stream_id, {name} "
                "FROM events WHERE category = 'account'.",
            )
        return ValidationError(
            f"The query names something the lake's views do not have: {message}",
            hint=f"events has the columns {COLUMNS}, month; payload fields live in the JSON "
            f"columns: data->>'$.{name}' reads one as text, CAST(data->>'$.{name}' AS DOUBLE) "
            "as a number, metadata->>'$.actor' the actor. Faster: events_<category> (e.g. "
            f"events_account, for compacted lakes) has a typed column per payload field: "
            f"SELECT stream_id, {name} FROM events_account.",
        )
    if isinstance(error, duckdb.CatalogException):
        return ValidationError(
            f"The query names a table or function that is not there: {message}",
            hint="the lake's tables are events and events_all, with the macros "
            "events_as_of(t), events_valid_at(t), events_bitemporal(s, v) and "
            "events_at_position(p), and events_<category> (e.g. events_account: a typed "
            "column per payload field) for each category with typed twins (compacted); a "
            "registered projection adds its table and "
            "<name>_as_of(t), <name>_valid_at(t), <name>_at_position(p) "
            "(account_balances and order_status are registered for you).",
            cli_hint="the lake's tables are events and events_all, with the macros "
            "events_as_of(t), events_valid_at(t), events_bitemporal(s, v) and "
            "events_at_position(p), and events_<category> (e.g. events_account: a typed "
            "column per payload field) for each category with typed twins (esa compact); the "
            "projections account_balances and order_status are "
            "tables too, with <name>_as_of(t), <name>_valid_at(t), <name>_at_position(p), and "
            "--projection FILE adds your own.",
        )
    return None
