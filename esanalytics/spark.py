"""The same projections and time cuts on Apache Spark: a session over a lake whose views and
macros are those of :class:`esanalytics.engine.Session`, in a ``pyspark`` ``SparkSession``.

Spark reads the files the commit log names at the session's position (never a glob of the
folder), and the log's unsealed tail, which is not in any file yet, is handed to Spark as a
DataFrame: a reader never seals. The session gives Spark SQL:

* ``events_all`` and ``events`` (cut at ``as_of``, ``valid_at``, both, or a ``position``);
* the table functions ``events_as_of(t)``, ``events_valid_at(t)``,
  ``events_bitemporal(system_t, valid_t)`` and ``events_at_position(p)``;
* after :meth:`Session.register`, a projection's view and its ``<name>_as_of(t)``,
  ``<name>_valid_at(t)`` and ``<name>_at_position(p)``.

Queries are written in DuckDB's SQL, as for the DuckDB session, and translated to Spark's by
`sqlglot <https://sqlglot.com>`_, with the few rewrites translation cannot know
(:func:`spark_sql`); ``dialect="spark"`` passes Spark SQL through. The same
:class:`~esanalytics.projections.Projection` definitions answer :meth:`Session.state`,
:meth:`Session.history`, :meth:`Session.diff`, :meth:`Session.since` and
:meth:`Session.trail`, equal to DuckDB's answers on the same lake (``tests/projections/test_spark.py``).
Payload fields are read from the typed twins where a lake has them and a twin gives the
JSON's value, as in DuckDB (``typed=False``: always from the JSON, with ``get_json_object``).

Needs the ``spark`` extra (``pip install 'esanalytics[spark]'``) and Java 17 or newer.

>>> spark_sql("SELECT data->>'$.amount' AS amount FROM events_as_of('2024-03-01')")
"SELECT GET_JSON_OBJECT(data, '$.amount') AS amount FROM EVENTS_AS_OF('2024-03-01')"
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import warnings
import weakref
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from esanalytics._typing import TimeLike
from esanalytics.engine import CutMixin, cut_predicate
from esanalytics.events import EVENT_SCHEMA, to_epoch_us, to_utc, validate_position
from esanalytics.exceptions import EsaError, ValidationError
from esanalytics.projections import FoldProjection, Projection, SqlProjection, diff_sql
from esanalytics.store import EventStore
from esanalytics.store.layout import EVENTS_DIR, TYPED_DIR
from esanalytics.store.typed import TWIN_BASE, field_column

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import DataFrame
    from pyspark.sql import SparkSession as PySparkSession

    from esanalytics.engine import Session as DuckSession
    from esanalytics.temporal import Period

__all__ = ["Session", "spark_session", "spark_sql"]

_INSTALL = "pip install 'esanalytics[spark]'"
_JAVA = "install Java 17 or newer, e.g. apt-get install openjdk-17-jre-headless"
#: Settings of the sessions this module starts: one local machine, few shuffle partitions
#: (the default 200 makes small questions slow), no web UI, times read and shown in UTC.
_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.session.timeZone": "UTC",
}
_COLUMNS = EVENT_SCHEMA.names
_QUERY_ATTEMPTS = 5
#: The columns of the lake's files and of their hive folders, given to Spark so that it
#: opens no file to infer them (and reads a category named like a number as text).
_FILE_DDL = (
    "global_position BIGINT, stream_id STRING, version BIGINT, event_id STRING, "
    "event_type STRING, schema_version INT, occurred_at TIMESTAMP, recorded_at TIMESTAMP, "
    "data STRING, metadata STRING, prev_hash STRING, hash STRING, category STRING, month STRING"
)


class SparkUnavailableError(EsaError, RuntimeError):
    """Spark cannot run here: the ``spark`` extra or Java is missing, or the lake is on
    object storage (which Spark reads through a connector this package does not bring)."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """PySpark warns that it does not yet fully support pandas 3 when it converts; the
    conversions this module makes go through Arrow and are exact."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PySpark does not yet fully support", FutureWarning)
        yield


def _pyspark() -> Any:
    try:
        import pyspark.sql
    except ImportError:
        raise SparkUnavailableError(
            "The Spark engine needs the pyspark and sqlglot packages, which are not installed.",
            hint=f"{_INSTALL} (and {_JAVA}).",
        ) from None
    return pyspark.sql


def spark_session(master: str | None = None, **conf: str) -> PySparkSession:
    """A ``pyspark`` session for lakes: the running one if there is one, else a new one on
    ``master`` (default: the configured ``spark.master``, else ``local[*]``: every core of
    this machine), with the settings this module needs (UTC, a few shuffle partitions, no
    UI) and ``conf`` on top. Raises :class:`SparkUnavailableError` with the fix when
    pyspark or Java is missing."""
    sql = _pyspark()
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise SparkUnavailableError(
            "The Spark engine needs Java, and there is no java command here (nor JAVA_HOME).",
            hint=f"{_JAVA}, or set JAVA_HOME to a Java 17+ installation.",
        )
    builder = sql.SparkSession.builder
    if master is not None:
        builder = builder.master(master)
    elif not os.environ.get("PYSPARK_SUBMIT_ARGS") and not os.environ.get("MASTER"):
        from pyspark import SparkConf

        if not SparkConf().contains("spark.master"):
            builder = builder.master("local[*]")
    for key, value in {**_CONF, **conf}.items():
        builder = builder.config(key, value)
    try:
        with _quiet():
            return cast("PySparkSession", builder.getOrCreate())
    except Exception as error:  # the JVM did not start: PySparkRuntimeError and kin
        raise SparkUnavailableError(
            f"Spark did not start: {str(error).strip().splitlines()[0]}",
            hint=f"check that `java -version` shows Java 17 or newer ({_JAVA}).",
        ) from None


def spark_sql(query: str) -> str:
    """DuckDB SQL (the toolkit's projections, time cuts and users' queries) as Spark SQL:
    sqlglot's translation, plus what it cannot know: a ``json_extract_string`` of a list of
    paths becomes a list of ``get_json_object``, ``epoch_us`` becomes ``unix_micros``,
    ``HUGEINT`` a ``DECIMAL(38,0)``, ``arg_max``/``arg_min`` pass over null values as
    DuckDB's do, and ``* REPLACE (...)`` (which only blanks payloads
    nothing reads) a plain ``*``."""
    try:
        import sqlglot
        from sqlglot import exp
    except ImportError:
        raise SparkUnavailableError(
            "Translating SQL for Spark needs the sqlglot package, which is not installed.",
            hint=f"{_INSTALL}.",
        ) from None

    def rewrite(node: Any) -> Any:
        if isinstance(node, exp.JSONExtractScalar) and isinstance(node.expression, exp.Array):
            return exp.Array(
                expressions=[
                    exp.JSONExtractScalar(this=node.this.copy(), expression=path.copy())
                    for path in node.expression.expressions
                ]
            )
        if isinstance(node, exp.Anonymous) and str(node.this).lower() == "epoch_us":
            return exp.Anonymous(this="unix_micros", expressions=node.expressions)
        if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.INT128:
            return exp.DataType.build("DECIMAL(38,0)")
        if isinstance(node, exp.Star) and node.args.get("replace"):
            return exp.Star(**{k: v for k, v in node.args.items() if k != "replace"})
        return node

    def skip_nulls(node: Any) -> Any:
        # DuckDB's arg_max passes over a null value; Spark's max_by takes it (it passes over
        # a null ordering only): a null value gets a null ordering. (A pass of its own: a
        # transform does not visit what a rewrite returns.)
        if isinstance(node, exp.ArgMax | exp.ArgMin) and node.args.get("count") is None:
            ordering = exp.If(
                this=exp.Is(this=node.this.copy(), expression=exp.Null()),
                true=exp.Null(),
                false=node.expression.copy(),
            )
            return node.__class__(this=node.this.copy(), expression=ordering)
        return node

    try:
        trees = sqlglot.parse(query, read="duckdb")
    except sqlglot.errors.SqlglotError as error:
        raise ValidationError(
            f"The query has a syntax error: {str(error).splitlines()[0]}",
            hint="write DuckDB's SQL, as for the DuckDB session (it is translated for Spark), "
            "e.g. SELECT event_type, count(*) FROM events GROUP BY ALL; or pass "
            "dialect='spark' to run Spark SQL as it is.",
        ) from None
    return ";\n".join(
        tree.transform(rewrite).transform(skip_nulls).sql(dialect="spark")
        for tree in trees
        if tree is not None
    )


_Columns = tuple[tuple[str, str, str], ...]  # (column name, payload field, SQL type)


def _literal(path: str) -> str:
    """A file's path as Spark reads it: Spark takes each path it reads as a glob pattern, so
    the glob characters a category may hold (``[``, ``]``, ``{``, ``}``) are escaped."""
    return re.sub(r"([\[\]{}*?\\])", r"\\\1", path)


def _quoted(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _spark_type(sql_type: str) -> str:
    """A DuckDB type name (``VARCHAR``, ``DECIMAL(18,2)``, ``HUGEINT``) as Spark's."""
    cast = spark_sql(f"SELECT CAST(NULL AS {sql_type})")
    return cast.removeprefix("SELECT CAST(NULL AS ").removesuffix(")")


def _value_error(error: Exception) -> ValidationError | None:
    """Spark's error about a value the query gives (a time it cannot read, a number that
    overflows) as a :class:`ValidationError`; None for any other error."""
    from pyspark.errors import ArithmeticException, DateTimeException, NumberFormatException

    if not isinstance(error, ArithmeticException | DateTimeException | NumberFormatException):
        return None
    return ValidationError(
        f"Spark cannot run the query: {str(error).strip().splitlines()[0]}",
        hint="Spark reads times as ISO text with seconds, e.g. '2024-03-01', "
        "'2024-03-01 09:30:00' (UTC) or '2024-03-01T09:30:00+01:00'; fix the value named.",
    )


class Session(CutMixin):
    """A Spark session whose ``events`` view is the lake at one position and time cut, as
    :class:`esanalytics.engine.Session` is in DuckDB: ``as_of`` (system time), ``valid_at``
    (valid time) and ``position``, alone or together. ``typed=False`` reads every payload
    field from the JSON, never from the typed twins (the same answers, slower). ``spark`` is the ``pyspark`` session
    to run on (default: :func:`spark_session`); this one keeps its views and functions in a
    session of its own (``spark.newSession()``: the same cluster and cache), so sessions on
    other lakes or cuts never see them.

    >>> import tempfile, esanalytics as esa
    >>> from esanalytics.catalog import account_balances
    >>> store = esa.open(tempfile.mkdtemp() + "/lake", create=True)
    >>> _ = store.append("account-1", [esa.NewEvent("AccountOpened", {"owner": "Ada"})])
    >>> with Session(store) as spark:  # doctest: +SKIP
    ...     spark.state(account_balances).select("key", "owner").collect()
    [Row(key='account-1', owner='Ada')]
    """

    def __init__(
        self,
        store: EventStore,
        *,
        spark: PySparkSession | None = None,
        as_of: TimeLike | None = None,
        valid_at: TimeLike | None = None,
        position: int | None = None,
        typed: bool = True,
    ) -> None:
        if not store.fs.local:
            raise SparkUnavailableError(
                f"The Spark engine reads lakes on local disk (or a shared file system), and "
                f"{store.fs.url} is on object storage.",
                hint="Spark reads S3 through Hadoop's s3a connector (hadoop-aws), which a "
                "cluster brings and this package does not: run the DuckDB Session on the S3 "
                "lake, or copy the lake to a folder Spark's workers can read.",
            )
        self.store = store
        self.typed = typed
        self.as_of = None if as_of is None else to_utc(as_of, what="as_of")
        self.valid_at = None if valid_at is None else to_utc(valid_at, what="valid_at")
        self._requested_position = None if position is None else validate_position(position)
        self.spark = (spark or spark_session()).newSession()
        for key, value in _CONF.items():
            if not key.startswith("spark.ui"):
                self.spark.conf.set(key, value)
        # A category named like a number ("2024") is a category, not an integer.
        self.spark.conf.set("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
        # The log names every file: listing them needs no cluster job, however many.
        self.spark.conf.set("spark.sql.sources.parallelPartitionDiscovery.threshold", "100000")
        self.position = 0
        self._registered: dict[str, Projection | SqlProjection] = {}
        # The Spark SQL of each DataFrame made here, while the caller holds it.
        self._texts: weakref.WeakKeyDictionary[DataFrame, str] = weakref.WeakKeyDictionary()
        # Typed sources: (category, columns, (after, upto) or None) -> view name.
        self._typed: dict[tuple[str, _Columns, tuple[int, int] | None], str] = {}
        self.refresh()
        if self.as_of is not None:
            self.warn_if_future(self.as_of)

    # -- the views -------------------------------------------------------------------------

    def refresh(self) -> int:
        """Re-pin to the store's newest position (or the requested one); returns it."""
        return self._pin(self._requested_position)

    def _pin(self, position: int | None) -> int:
        import pyarrow as pa
        import pyarrow.compute as pc

        snapshot = self.store.snapshot(position=position)
        self._snapshot = snapshot
        self.position = snapshot.position
        self._twins = {
            entry.path: twin
            for entry, twin in zip(snapshot.entries, snapshot.twins, strict=True)
            if twin is not None and self.typed
        }
        self._last_recorded_us = max(
            [e.max_recorded_us for e in snapshot.entries]
            + [to_epoch_us(t) for t in snapshot.tail["recorded_at"].to_pylist()]
            or [0]
        )
        tail = snapshot.tail
        months = (
            pc.strftime(tail["recorded_at"], format="%Y-%m")
            if tail.num_rows
            else pa.array([], pa.string())
        )
        with _quiet():
            self._tail = self.spark.createDataFrame(tail.append_column("month", months))
        frame = self._tail
        if snapshot.files:
            frame = self._events(snapshot.files).unionByName(frame)
        frame.where(f"global_position <= {self.position}").createOrReplaceTempView("events_all")
        where = spark_sql(
            "SELECT 1 WHERE " + cut_predicate(as_of=self.as_of, valid_at=self.valid_at)
        ).removeprefix("SELECT 1 WHERE ")
        self.spark.sql(
            f"CREATE OR REPLACE TEMPORARY VIEW events AS SELECT * FROM events_all WHERE {where}"
        )
        self._macros()
        for (category, columns, bounds), name in self._typed.items():
            self._typed_view(name, category, columns, bounds)
        for projection in self._registered.values():
            self.register(projection)
        return self.position

    def _events(self, paths: list[str]) -> DataFrame:
        """The events of these files of the lake, with category and month from their hive
        folders."""
        with _quiet():
            read = self.spark.read.schema(_FILE_DDL).option(
                "basePath", self.store.fs.uri(EVENTS_DIR)
            )
            return read.parquet(*map(_literal, paths)).select(*_COLUMNS, "month")

    def _macros(self) -> None:
        # A cut is an instant: with the session's zone at UTC, Spark reads a time with an
        # offset as that instant and one without as a UTC wall time, as esa_utc does.
        system = (
            "recorded_at <= CAST({t} AS TIMESTAMP) "
            "AND month <= date_format(CAST({t} AS TIMESTAMP), 'yyyy-MM')"
        )
        valid = "occurred_at <= CAST({t} AS TIMESTAMP)"
        for name, params, where in (
            ("events_as_of", "t STRING", system.format(t="t")),
            ("events_valid_at", "t STRING", valid.format(t="t")),
            (
                "events_bitemporal",
                "system_t STRING, valid_t STRING",
                f"{system.format(t='system_t')} AND {valid.format(t='valid_t')}",
            ),
            ("events_at_position", "p BIGINT", "global_position <= p"),
        ):
            self.spark.sql(
                f"CREATE OR REPLACE TEMPORARY FUNCTION {name}({params}) RETURNS TABLE "
                f"RETURN SELECT * FROM events_all WHERE {where}"
            )

    def _log_end(self) -> datetime | None:
        if not self.position:
            return None
        return datetime.fromtimestamp(self._last_recorded_us / 1e6, UTC)

    # -- what projections ask of a session ---------------------------------------------------

    def stream_events(self, stream_id: str) -> str:
        """A SQL subquery of one stream's events at the session's cut."""
        return (
            f"(SELECT * FROM events WHERE stream_id = '{stream_id.replace(chr(39), chr(39) * 2)}')"
        )

    def events_after(self, position: int, until: int | None = None) -> str:
        """A SQL subquery of the events after ``position`` (up to ``until``, or the session's
        position), without time cut."""
        position = validate_position(position)
        top = self.position if until is None else min(validate_position(until), self.position)
        return (
            f"(SELECT * FROM events_all WHERE global_position > {position} "
            f"AND global_position <= {top})"
        )

    # -- typed twins -----------------------------------------------------------------------

    def typed_source(
        self,
        category: str,
        columns: _Columns,
        *,
        after: int | None = None,
        until: int | None = None,
    ) -> str:
        """The name of a view of one category's events up to the session's position (or
        those in ``(after, until]``), with :data:`~esanalytics.engine.TYPED_BASE` and one
        column per ``(name, field, SQL type)`` of ``columns``, whose values are those of
        ``TRY_CAST(data->>'$.field' AS type)``: read from the typed twins where a twin's
        stored type gives that same value (:func:`~esanalytics.store.typed.safe`), from the
        JSON elsewhere, as :meth:`esanalytics.engine.Session.typed_source` does."""
        bounds = None
        if after is not None:
            top = self.position if until is None else min(validate_position(until), self.position)
            bounds = (validate_position(after), top)
        key = (category, tuple(columns), bounds)
        if key not in self._typed:
            name = f"esa_typed_{len(self._typed)}"
            self._typed_view(name, category, key[1], bounds)
            self._typed[key] = name
        return self._typed[key]

    def _typed_view(
        self, name: str, category: str, columns: _Columns, bounds: tuple[int, int] | None
    ) -> None:
        """Create ``name``: one Parquet read per group of twins that store the wanted fields
        alike, and one JSON read of the other files and the unsealed tail."""
        low, top = (-1, self.position) if bounds is None else bounds
        twins: dict[tuple[str | None, ...], list[str]] = {}
        plain: list[str] = []
        for path, entry in zip(self._snapshot.files, self._snapshot.entries, strict=True):
            if entry.category != category:
                continue
            if not (entry.max_position > low and entry.min_position <= top):
                continue
            stored = self._stored(entry, columns)
            if stored is None:
                plain.append(path)
            else:
                twins.setdefault(stored, []).append(self._twins[entry.path])
        within = f"global_position > {low} AND global_position <= {top}"
        base = [*TWIN_BASE, "category", "month"]
        frames = []
        for stored, paths in twins.items():
            values = [
                f"TRY_CAST(`{field_column(path)}` AS {_spark_type(sql_type)}) AS `{column}`"
                if kind is not None
                else f"CAST(NULL AS {_spark_type(sql_type)}) AS `{column}`"
                for (column, path, sql_type), kind in zip(columns, stored, strict=True)
            ]
            with _quiet():
                read = self.spark.read.option("basePath", self.store.fs.uri(TYPED_DIR)).parquet(
                    *map(_literal, paths)
                )
            frames.append(read.selectExpr(*base, *values).where(within))
        raw = self._tail.where(f"category = {_quoted(category)}")
        if plain:
            raw = self._events(plain).unionByName(raw)
        raw.where(within).createOrReplaceTempView(f"{name}_json")
        values = [
            f"TRY_CAST(data->>'$.{path}' AS {sql_type}) AS \"{column}\""
            for column, path, sql_type in columns
        ]
        union = self.spark.sql(spark_sql(f"SELECT {', '.join([*base, *values])} FROM {name}_json"))
        for frame in frames:
            union = union.unionByName(frame)
        union.createOrReplaceTempView(name)

    # -- queries ---------------------------------------------------------------------------

    def sql(self, query: str, *, dialect: str = "duckdb") -> DataFrame:
        """Run a query over the session's views: DuckDB SQL (translated by :func:`spark_sql`)
        or, with ``dialect="spark"``, Spark SQL as it is. Returns a lazy Spark DataFrame
        (:meth:`arrow` and :meth:`df` collect one). Only queries run here: a statement that
        writes or defines anything is refused (``session.spark`` is plain Spark, unguarded)."""
        if dialect not in ("duckdb", "spark"):
            raise ValidationError(
                f"Unknown SQL dialect {dialect!r}.", hint="use 'duckdb' (default) or 'spark'."
            )
        text = spark_sql(query) if dialect == "duckdb" else query
        self._refuse_writes(text)
        return self._run(text)

    def _refuse_writes(self, text: str) -> None:
        import sqlglot
        from sqlglot import exp

        try:
            trees = sqlglot.parse(text, read="spark")
        except sqlglot.errors.SqlglotError:
            return  # Spark names the syntax error when it runs
        if len(trees) != 1 or not isinstance(trees[0], exp.Query):
            raise ValidationError(
                "Only one query (SELECT, WITH, or set operations of them) runs in a Spark "
                "session's sql(); nothing was run.",
                hint="a lake's files are written only by esa; to run other Spark statements "
                "use session.spark.sql(...), outside the lake folder.",
            )

    def _run(self, text: str) -> DataFrame:
        from pyspark.errors import AnalysisException

        try:
            frame = self.spark.sql(text)
        except AnalysisException as error:
            raise ValidationError(
                f"Spark cannot run the query: {str(error).strip().splitlines()[0]}",
                hint="the lake's tables are events and events_all, with the functions "
                "events_as_of(t), events_valid_at(t), events_bitemporal(s, v) and "
                "events_at_position(p); payload fields are data->>'$.amount'; a registered "
                "projection adds its table and <name>_as_of(t), <name>_valid_at(t), "
                "<name>_at_position(p).",
            ) from None
        self._texts[frame] = text  # (so :meth:`arrow` can plan it again over moved files)
        return frame

    def arrow(self, query: str | DataFrame, *, dialect: str = "duckdb") -> pa.Table:
        """The rows of a query (or of a DataFrame of this session) as an Arrow table, times as
        UTC instants like DuckDB's. If compaction moved a file the session reads meanwhile,
        the views are pointed at the files that hold the same position now and it runs
        again (a query, or a DataFrame this session made: :meth:`state` and the rest)."""
        frame = self.sql(query, dialect=dialect) if isinstance(query, str) else query
        for attempt in range(_QUERY_ATTEMPTS):
            try:
                with _quiet():
                    return frame.toArrow()
            except Exception as error:
                moved = "FileNotFound" in str(error) or "does not exist" in str(error)
                text = self._texts.get(frame)  # a DataFrame this session made from SQL
                if not moved or text is None or attempt == _QUERY_ATTEMPTS - 1:
                    raise _value_error(error) or error from None
                self._pin(self.position)
                frame = self._run(text)
        raise AssertionError("unreachable")

    def df(self, query: str | DataFrame, *, dialect: str = "duckdb") -> pd.DataFrame:
        """The rows of a query (or DataFrame) as pandas, through :meth:`arrow`."""
        frame: pd.DataFrame = self.arrow(query, dialect=dialect).to_pandas()
        return frame

    # -- projections -----------------------------------------------------------------------

    def _engine(self) -> DuckSession:
        """This session where the projections expect a session: they ask the same of both
        (:meth:`cut`, :meth:`sql` and the rest) and get Spark DataFrames back here."""
        return cast("DuckSession", self)

    @staticmethod
    def _checked(projection: Any) -> Projection | SqlProjection:
        if isinstance(projection, FoldProjection):
            raise ValidationError(
                f"{projection.name} is a FoldProjection (a Python fold), which runs only in "
                "the DuckDB session.",
                hint="write it as a Projection (reducers) or a SqlProjection to run on Spark, "
                "or answer it with esanalytics.engine.Session.",
            )
        return cast("Projection | SqlProjection", projection)

    def state(self, projection: Projection | SqlProjection, **cut: Any) -> DataFrame:
        """One row per key as of the cut (``as_of``, ``valid_at``, ``position``), ordered by
        key: :meth:`Projection.state <esanalytics.projections.Projection.state>` on Spark."""
        chosen = self._checked(projection)
        return cast("DataFrame", chosen.state(self._engine(), **cut))

    def diff(
        self,
        projection: Projection | SqlProjection,
        before: Mapping[str, Any],
        after: Mapping[str, Any] | None = None,
    ) -> DataFrame:
        """Keys added, removed or changed between two cuts (see
        :meth:`Projection.diff <esanalytics.projections.Projection.diff>`)."""
        chosen = self._checked(projection)
        left = chosen.state_sql(self._engine(), **before)
        right = chosen.state_sql(self._engine(), **(after or {}))
        return self.sql(diff_sql(left, right, chosen.fields))

    def since(self, projection: Projection | SqlProjection, position: int) -> DataFrame:
        """The keys with events after ``position``, then and now (see
        :meth:`Projection.since <esanalytics.projections.Projection.since>`)."""
        return cast("DataFrame", self._checked(projection).since(self._engine(), position))

    def history(
        self,
        projection: Projection,
        *,
        axis: str = "system",
        key: str | None = None,
        period: Period | None = None,
        changes_of: list[str] | None = None,
    ) -> DataFrame:
        """Each key's state over time (see
        :meth:`Projection.history <esanalytics.projections.Projection.history>`)."""
        return cast(
            "DataFrame",
            projection.history(
                self._engine(),
                axis=axis,  # type: ignore[arg-type]
                key=key,
                period=period,
                changes_of=changes_of,
            ),
        )

    def trail(self, projection: Projection, key: str) -> DataFrame:
        """One entity's events with who, why, both times, before and after (see
        :meth:`Projection.trail <esanalytics.projections.Projection.trail>`)."""
        return cast("DataFrame", projection.trail(self._engine(), key))

    def register(self, projection: Projection | SqlProjection) -> None:
        """Give SQL users ``<name>`` (the state at the session's cut) and, for a reducer
        :class:`~esanalytics.projections.Projection`, the table functions ``<name>_as_of(t)``,
        ``<name>_valid_at(t)``, ``<name>_at_position(p)``; they follow :meth:`refresh`."""
        chosen = self._checked(projection)
        self._registered[chosen.name] = chosen
        state = spark_sql(chosen.state_sql(self._engine()))
        self.spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW {chosen.name} AS {state}")
        if not isinstance(chosen, Projection):
            return
        for suffix, params, source, axis in (
            ("as_of", "t STRING", "events_as_of(t)", "system"),
            ("valid_at", "t STRING", "events_valid_at(t)", "valid"),
            ("at_position", "p BIGINT", "events_at_position(p)", "system"),
        ):
            body = spark_sql(chosen.cut_state_sql(source, axis))  # type: ignore[arg-type]
            self.spark.sql(
                f"CREATE OR REPLACE TEMPORARY FUNCTION {chosen.name}_{suffix}({params}) "
                f"RETURNS TABLE RETURN {body}"
            )

    def close(self) -> None:
        """Drop this session's views (the Spark cluster stays up)."""
        typed = [name for view in self._typed.values() for name in (view, f"{view}_json")]
        for view in ("events", "events_all", *self._registered, *typed):
            self.spark.catalog.dropTempView(view)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
