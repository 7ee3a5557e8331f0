"""SQL event stores: the tables of an event sourcing framework, read by its global sequence.

``open_sql_source("postgresql://USER@HOST/DB")`` or ``open_sql_source("sqlite:///PATH")``
connects (PostgreSQL through psycopg 3, SQLite through the standard library, read-only), finds
which framework's tables the database holds (a *layout*: one module each in
:mod:`esanalytics.sources.stores`) or takes the one ``schema`` names, and hands back a
:class:`SqlSource` that reads the layout's rows in batches ordered by the store's global
sequence (its *position*). The cursor is that sequence.

A layout (:class:`Layout`) says which tables it recognises (:meth:`Layout.found`), the SQL that
reads its rows (:meth:`Layout.select`, given the position condition the framework writes) and
how a batch of them becomes event rows (:meth:`Layout.rows`: JSON object text per row with the
canonical keys). A row's coordinates are ``TABLE#POSITION`` (``stored_events#42``).

The gap rule (PostgreSQL). A sequence value is handed out when a row is inserted, not when its
transaction commits, so a row with a lower position can become visible after a higher one was
read: reading "after the highest position" alone would lose it. As Axon's
``GapAwareTrackingToken`` does, the cursor remembers, besides the highest position read, the
*gaps* below it: ranges of positions not seen yet, each with the time (the database's clock)
it was first seen. Every read looks in the gaps again, and a row found there is imported then
(after the rows already read: the lake's order is the order rows became visible). A gap is
forgotten at the first read that finds it still empty more than :data:`GAP_SECONDS` after it
was first seen (a rolled-back insert or a cached sequence leaves gaps that never fill), and
only the :data:`MAX_GAPS` highest gaps are kept. So a transaction that holds its sequence
value uncommitted for longer than :data:`GAP_SECONDS` while later ones commit can be missed;
one that commits within it never is. SQLite has one writer at a time and commits rows in
position order, so its cursor is the highest position alone.

A table whose highest position is below the cursor (emptied, restored from an older backup,
replaced) is refused with :class:`SourceChangedError`: its new rows would otherwise be taken
for rows already imported. So is one whose row at the cursor's position is gone or is another
event (the cursor keeps that row's event id as ``mark``): a table truncated, or recreated and
written past the cursor again.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from esanalytics.exceptions import SourceChangedError, SourceError
from esanalytics.sources.base import RawBatch

__all__ = [
    "GAP_SECONDS",
    "LAYOUTS",
    "MAX_GAPS",
    "Database",
    "Layout",
    "SqlSource",
    "open_sql_source",
]

# How long a gap in the sequence is looked for before it is forgotten (seconds, by the
# database's clock), and how many gap ranges a cursor keeps at most (the highest).
GAP_SECONDS = 60.0
MAX_GAPS = 1000
BATCH_ROWS = 100_000  # rows a batch at most; BATCH_BYTES of rows as read, about
BATCH_BYTES = 64 << 20
FIRST_BATCH_ROWS = 1_000
CONNECT_SECONDS = 5  # libpq's connect_timeout: an unreachable server fails within it
LOCK_SECONDS = 10  # lock_timeout: a table another session holds locked fails within it

# The layouts esa knows, by name (``--schema NAME``): each module of esanalytics.sources.stores
# defines ``LAYOUT``, its layout class. A module not present is skipped.
LAYOUTS: dict[str, str] = {
    "eventsourcing": "esanalytics.sources.stores.eventsourcing",
    "rails_event_store": "esanalytics.sources.stores.rails",
    "marten": "esanalytics.sources.stores.marten",
    "axon": "esanalytics.sources.stores.axon",
}


class Layout(Protocol):
    """An event store's tables, as one framework lays them out.

    A layout class is made with the database's tables (``cls(columns, table)``: ``table`` is
    the table ``--schema NAME:TABLE`` names, else None) after :meth:`found` said yes; it may
    raise a :class:`SourceError` there (two candidate tables and no ``table``). Its instance
    says ``table`` (the table holding the global sequence, as :meth:`Database.columns` names
    it; coordinates are ``TABLE#POSITION``) and ``position`` (that sequence's column in it).
    """

    name: ClassVar[str]  # "eventsourcing", "rails_event_store", "marten", "axon"
    table: str
    position: str

    @classmethod
    def found(cls, columns: Mapping[str, set[str]]) -> bool:
        """Whether the database's tables (name -> lower-case column names, as
        :meth:`Database.columns` gives them) hold this layout."""
        ...

    def select(self, db: Database, where: str, limit: int) -> str:
        """The SQL of up to ``limit`` rows for which ``where`` holds, ordered by position.

        ``where`` is a condition the framework writes on the qualified position column
        (``"stored_events"."notification_id" > 17 OR ... BETWEEN 3 AND 5``): put it in the
        WHERE clause of the query whose FROM names ``table`` by its name (no alias), so that
        the database uses its index. The result has a column ``position`` (an integer: the
        global sequence) and whatever :meth:`rows` needs; write portable SQL or ask
        ``db.kind`` (``"postgresql"`` or ``"sqlite"``)."""
        ...

    def rows(self, con: Any, batch: pa.Table) -> pa.Array:
        """A batch of :meth:`select` rows (a DuckDB connection ``con`` to work in) as JSON
        object text, one per row (null for a row that cannot be read: it is then named by its
        coordinates), with the canonical keys: ``event_id`` (a UUID, when the store has one or
        one can be derived from the stream and its version), ``stream_id``, ``event_type``,
        ``occurred_at`` (ISO 8601 with a zone), ``recorded_at`` (optional), ``data`` (an
        object), ``metadata`` (an object of source-specific extras: ``source_version``,
        ``topic``, ``links``...) and ``category`` (optional)."""
        ...


def _layout_class(name: str) -> type[Layout] | None:
    try:
        module = importlib.import_module(LAYOUTS[name])
    except ModuleNotFoundError:
        return None
    layout: type[Layout] = module.LAYOUT
    return layout


# -- the database -----------------------------------------------------------------------------


class Database:
    """One connection to a PostgreSQL (psycopg 3) or SQLite (read-only) database: queries into
    Arrow, its tables and their columns, its clock. ``kind`` is ``"postgresql"`` or
    ``"sqlite"``; ``label`` is the URL without its password.

    PostgreSQL queries go through ADBC's driver where it is installed (rows arrive as Arrow,
    with no Python object per value: several times faster), on a second connection made
    when first needed; else through psycopg."""

    def __init__(self, kind: str, label: str, connection: Any, url: str | None = None) -> None:
        self.kind = kind
        self.label = label
        self._con = connection
        self._url = url
        self._arrow: Any = None

    @property
    def gaps_possible(self) -> bool:
        """Whether a row with a lower position can become visible after a higher one
        (PostgreSQL: sequences are not transactional; SQLite: one writer at a time)."""
        return self.kind == "postgresql"

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """A PostgreSQL error while reading (the server ended the connection, a lock held
        longer than LOCK_SECONDS) as a :class:`SourceError` saying which."""
        try:
            yield
        except Exception as error:
            # (psycopg's and ADBC's: a lost connection, a server shut down, a lock timeout)
            state = str(getattr(error, "sqlstate", None) or "")
            if state == "42P01" or (  # (undefined_table)
                isinstance(error, sqlite3.OperationalError) and "no such table" in str(error)
            ):
                said = " ".join(str(error).split("\n")[0].split())
                raise SourceChangedError(
                    f"A table the import reads is gone from {self.label}: {said}.",
                    hint="the store was dropped, renamed or moved to another schema: restore "
                    "it to go on; if it was replaced on purpose, import it under a new --name "
                    "(its events are recognised by their event ids, so none is written twice).",
                    source=None,
                    where=None,
                ) from None
            if state == "42501":  # (insufficient_privilege)
                raise _privilege_error(error, self.label) from None
            if self.kind == "sqlite" and _sqlite_locked(error):
                raise _sqlite_locked_error(self.label) from None
            if self.kind != "postgresql" or not (
                state.startswith(("08", "57", "55P03"))
                or any(c.__name__ == "OperationalError" for c in type(error).__mro__)
            ):
                raise
            raise _read_error(error, self.label) from None

    def quote(self, name: str) -> str:
        """A table or column name as SQL (``schema.table`` quoted part by part)."""
        return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))

    def query(self, sql: str) -> pa.Table:
        """The rows of ``sql`` as an Arrow table (text as string, bytes as binary)."""
        return self.query_upto(sql, None)[0]

    def query_upto(self, sql: str, max_bytes: int | None) -> tuple[pa.Table, bool]:
        """The rows of ``sql`` as :meth:`query` gives them, read no further than the row
        (ADBC: the record batch, of about a quarter of ``max_bytes``) that brings their
        text and bytes past ``max_bytes``; and whether it stopped there, rows left unread
        (the rows being ordered, what it read is a prefix of them)."""
        with self._reading():
            arrow = self._adbc()
            if arrow is not None:
                with arrow.cursor() as cursor:
                    if max_bytes is None:
                        cursor.execute(sql)
                        return cursor.fetch_arrow_table(), False
                    cursor.adbc_statement.set_options(
                        **{"adbc.postgresql.batch_size_hint_bytes": str(max(1, max_bytes // 4))}
                    )
                    cursor.execute(sql)
                    reader = cursor.fetch_record_batch()
                    chunks, size = [], 0
                    for chunk in reader:
                        chunks.append(chunk)
                        size += chunk.nbytes
                        if size >= max_bytes:
                            reader.close()  # (the rest is not read)
                            return pa.Table.from_batches(chunks, reader.schema), True
                    return pa.Table.from_batches(chunks, reader.schema), False
            cursor = self._con.execute(sql)
            names = [d[0] for d in cursor.description]
            if max_bytes is None:
                return _rows_table(names, cursor.fetchall()), False
            rows, size = [], 0
            for row in cursor:  # (sqlite3 steps through the rows as they are asked for)
                rows.append(row)
                for value in row:
                    if isinstance(value, _SIZED):
                        size += len(value)
                if size >= max_bytes:
                    cursor.close()
                    return _rows_table(names, rows), True
            return _rows_table(names, rows), False

    def _adbc(self) -> Any:
        if self.kind != "postgresql" or self._url is None:
            return None
        if self._arrow is None:
            try:
                import adbc_driver_postgresql.dbapi as adbc
            except ImportError:
                self._url = None
                return None
            try:
                self._arrow = adbc.connect(_with_timeout(self._url), autocommit=True)
                with self._arrow.cursor() as cursor:
                    for setting in _session():
                        cursor.execute(setting)
            except adbc.Error as error:  # (the psycopg connection was made a moment ago)
                parts = urllib.parse.urlsplit(self._url)
                raise _connect_error(
                    _scrub(str(error), self._url),
                    self.label,
                    f"{parts.hostname or 'localhost'}:{parts.port or 5432}",
                    parts.username,
                    parts.path.lstrip("/"),
                ) from None
        return self._arrow

    def columns(self) -> dict[str, set[str]]:
        """Each table's (lower-case) column names; PostgreSQL tables outside the current
        schema are named ``schema.table``. A SQLite table with a rowid lists ``rowid``."""
        found: dict[str, set[str]] = {}
        if self.kind == "postgresql":
            # (pg_catalog, not information_schema: that lists only the tables the user may
            # use, and a user not granted SELECT would be told there are none)
            rows = self._con.execute(
                "SELECT CASE WHEN n.nspname = current_schema() THEN c.relname "
                "ELSE n.nspname || '.' || c.relname END, lower(a.attname) "
                "FROM pg_catalog.pg_attribute a "
                "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 "
                "AND NOT a.attisdropped AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'"
            ).fetchall()
            for table, column in rows:
                found.setdefault(table, set()).add(column)
            return found
        tables = [r[0] for r in self._con.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite_%'"
        ).fetchall()]  # fmt: skip
        for table in tables:
            names = {
                r[1].lower() for r in self._con.execute(f"PRAGMA table_info({self.quote(table)})")
            }
            try:
                self._con.execute(f"SELECT rowid FROM {self.quote(table)} LIMIT 0")
                names.add("rowid")
            except sqlite3.OperationalError:  # a WITHOUT ROWID table
                pass
            found[table] = names
        return found

    def current_schema(self) -> str | None:
        """PostgreSQL's current schema (the first of the search_path that exists); None
        for SQLite."""
        if self.kind != "postgresql":
            return None
        with self._reading():
            value = self._con.execute("SELECT current_schema()").fetchone()[0]
        return None if value is None else str(value)

    def now(self) -> float:
        """The database's clock, in seconds since the epoch (for the gap rule)."""
        if self.kind == "postgresql":
            with self._reading():
                return float(
                    self._con.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0]
                )
        return time.time()

    def close(self) -> None:
        if self._arrow is not None:
            self._arrow.close()
        self._con.close()


_TYPES = {int: pa.int64(), str: pa.string(), bytes: pa.binary(), memoryview: pa.binary()}
_SIZED = (str, bytes, memoryview)


def _rows_table(names: list[str], rows: list[tuple[Any, ...]]) -> pa.Table:
    """Rows of Python values as an Arrow table (no rows: columns of type null)."""
    if not rows:
        return pa.table({name: pa.array([], pa.null()) for name in names})
    return pa.table(
        {name: _column(values) for name, values in zip(names, zip(*rows, strict=True), strict=True)}
    )


def _column(values: tuple[Any, ...]) -> pa.Array:
    """A column of Python values as Arrow, typed by its first value (inferring a type
    looks at every value)."""
    first = next((v for v in values if v is not None), None)
    kind = _TYPES.get(type(first))
    if kind is None:
        return pa.array(list(values))
    if type(first) is memoryview:
        values = tuple(None if v is None else bytes(v) for v in values)
    return pa.array(values, kind)


def _with_timeout(url: str) -> str:
    """``url`` with libpq's connect_timeout, unless it sets one."""
    parts = urllib.parse.urlsplit(url)
    if any(key == "connect_timeout" for key, _ in urllib.parse.parse_qsl(parts.query)):
        return url
    # (the query as written: re-encoding it would make an encoded space '+', which libpq
    # does not read as a space)
    query = (parts.query + "&" if parts.query else "") + f"connect_timeout={CONNECT_SECONDS}"
    return urllib.parse.urlunsplit(parts._replace(query=query))


_USERINFO = re.compile(r"^([^:/?#]+://)([^/?#]*)@")  # (to the netloc's last @)
_URL_HINT = (
    "write it as postgresql://USER:PASSWORD@HOST:PORT/DATABASE?OPTION=VALUE (libpq's "
    "options), with @ : / % in the user or password percent-encoded (%40 %3A %2F %25)."
)


def _session() -> tuple[str, str]:
    """Each connection's settings: how long a lock may keep a read waiting, and text in
    UTF-8 (Arrow's strings) whatever the database's encoding (ADBC hands on its bytes)."""
    return f"SET lock_timeout = '{LOCK_SECONDS}s'", "SET client_encoding = 'UTF8'"


def _redact(url: str) -> str:
    """``url`` without its password (in the user part or a ``password=`` option); it need
    not be a valid URL."""
    found = _USERINFO.match(url)
    if found and ":" in found.group(2):
        url = found.group(1) + found.group(2).split(":", 1)[0] + "@" + url[found.end() :]
    base, question, rest = url.partition("?")
    if not question:
        return url
    query, hash_, fragment = rest.partition("#")
    kept = [p for p in query.split("&") if not p.lower().startswith("password=")]
    return base + ("?" + "&".join(kept) if kept else "") + hash_ + fragment


def _scrub(text: str, url: str) -> str:
    """``text`` (a driver's message) with the URL's password, as written or decoded, hidden."""
    secrets = []
    found = _USERINFO.match(url)
    if found and ":" in found.group(2):
        secrets.append(found.group(2).split(":", 1)[1])
    secrets += re.findall(r"[?&]password=([^&#]*)", url, flags=re.IGNORECASE)
    for secret in sorted({*secrets, *map(urllib.parse.unquote, secrets)}, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def _connect_postgres(url: str) -> Database:
    try:
        import psycopg
    except ImportError:
        raise SourceError(
            f"Reading {_redact(url)} needs psycopg, which is not installed.",
            hint='pip install "esanalytics[postgres]" (or: pip install "psycopg[binary]").',
            source=None,
            where=None,
        ) from None
    try:
        parts = urllib.parse.urlsplit(url)
        where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    except ValueError as error:  # (a port that is no number, a broken [IPv6] host)
        raise SourceError(
            f"{_redact(url)} is not a PostgreSQL URL esa can read: {_scrub(str(error), url)}.",
            hint=_URL_HINT,
            source=None,
            where=None,
        ) from None
    database = parts.path.lstrip("/") or parts.username or "(the user's name)"
    try:
        con = psycopg.connect(url, connect_timeout=CONNECT_SECONDS, autocommit=True)
        for setting in _session():
            con.execute(setting)
    except psycopg.Error as error:
        raise _connect_error(
            _scrub(str(error), url), _redact(url), where, parts.username, database
        ) from None
    return Database("postgresql", _redact(url), con, url)


def _connect_error(
    text: str, label: str, where: str, user: str | None, database: str
) -> SourceError:
    said = " ".join(text.split())
    if (
        "password authentication failed" in said
        or "no password supplied" in said
        or ("role" in said and "does not exist" in said)
        or "pg_hba.conf" in said
    ):
        problem = (
            f"The PostgreSQL server at {where} refused the login of {user or 'the user'}: {said}"
        )
        hint = ("give the user and its password in the URL (postgresql://USER:PASSWORD@HOST/"
                "DATABASE) or in PGPASSWORD or ~/.pgpass, and check that the server lets "
                "that user in from here (pg_hba.conf).")  # fmt: skip
    elif "database" in said and "does not exist" in said:
        problem = f"There is no database {database!r} on the PostgreSQL server at {where}."
        hint = "check the database name after the last / of the URL (psql -l lists them)."
    elif "invalid" in said and "connection to server" not in said:  # (libpq read the URL)
        problem = f"The URL is not one PostgreSQL reads: {said}"
        hint = _URL_HINT
    elif "FATAL:" in said:  # (the server answered, and said no)
        problem = f"The PostgreSQL server at {where} refused the connection: {said}"
        hint = ("check what the URL asks of the server (its options= settings, the database, "
                "sslmode) and that the server takes connections now (not starting up or "
                "shutting down, not at max_connections).")  # fmt: skip
    else:
        problem = f"The PostgreSQL server at {where} cannot be reached: {said}"
        hint = (f"check that PostgreSQL runs there and listens on that address and port "
                f"(pg_isready -h {where.rsplit(':', 1)[0]} -p {where.rsplit(':', 1)[1]}), "
                "and that no firewall is in the way; esa waits "
                f"{CONNECT_SECONDS} seconds for an answer.")  # fmt: skip
    return SourceError(f"{problem} ({label})", hint=hint, source=None, where=None)


def _privilege_error(error: Exception, label: str) -> SourceError:
    said = " ".join(str(error).split("\n")[0].split())
    found = re.search(r"permission denied for (?:table|relation|view) (\S+)", said)
    table = found.group(1) if found else "TABLE"
    try:
        user = urllib.parse.urlsplit(label).username or "USER"
    except ValueError:
        user = "USER"
    return SourceError(
        f"The user {user} may not read a table the import reads: {said} ({label}).",
        hint=f"have its owner grant it: GRANT SELECT ON {table} TO {user} (Rails Event Store "
        "reads event_store_events_in_streams too, Marten mt_streams), or import as a user "
        "who may read it.",
        source=None,
        where=None,
    )


def _read_error(error: Exception, label: str) -> SourceError:
    said = " ".join(str(error).split())
    if getattr(error, "sqlstate", None) == "55P03" or "lock timeout" in said:
        return SourceError(
            f"A table the import reads is locked by another session, and stayed locked for "
            f"{LOCK_SECONDS} seconds: {said} ({label}). Nothing of this batch was written.",
            hint="see which session holds it (SELECT * FROM pg_locks JOIN pg_stat_activity "
            "USING (pid) WHERE relation = 'TABLE'::regclass): a migration, a LOCK TABLE or a "
            "VACUUM FULL; run the import again when it is done (it goes on after its last "
            "committed batch).",
            source=None,
            where=None,
        )
    return SourceError(
        f"The PostgreSQL server broke off the import's read: {said} ({label}). Nothing of "
        "this batch was written.",
        hint="the lake keeps the batches committed before it; run it again when the server is "
        "back (it goes on after its last committed batch).",
        source=None,
        where=None,
    )


def _sqlite_path(url: str) -> Path:
    # sqlite:///abs/path and SQLAlchemy's sqlite:////abs/path both name /abs/path; its
    # relative sqlite:///file.db names ./file.db when there is no /file.db
    rest = urllib.parse.unquote(url.split("://", 1)[1].split("?", 1)[0])
    path = Path(rest)
    if not path.exists() and rest.startswith("/") and Path(rest[1:]).exists():
        path = Path(rest[1:])
    return path


def _sqlite_locked(error: Exception) -> bool:
    return isinstance(error, sqlite3.OperationalError) and (
        "locked" in str(error) or "busy" in str(error)
    )


def _sqlite_locked_error(where: str) -> SourceError:
    return SourceError(
        f"The SQLite database {where} is locked by a writer, and stayed locked for "
        f"{LOCK_SECONDS} seconds. Nothing of this batch was written.",
        hint="run the import again when the application's write is done (it goes on after "
        "its last committed batch); a database in WAL mode (PRAGMA journal_mode = WAL) lets "
        "esa read while the application writes.",
        source=None,
        where=None,
    )


def _connect_sqlite(url: str) -> Database:
    path = _sqlite_path(url)
    if not path.is_file():
        raise SourceError(
            f"There is no SQLite database file {path} ({url}).",
            hint="check the path: sqlite:///PATH with an absolute PATH, e.g. "
            "sqlite:///home/me/app.sqlite (esa opens it read-only and never creates one).",
            source=None,
            where=None,
        )
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    con = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=LOCK_SECONDS)
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as error:
        con.close()
        if _sqlite_locked(error):
            raise _sqlite_locked_error(str(path)) from None
        raise SourceError(
            f"The file {path} is not a SQLite database: {error}.",
            hint="give the database file the application writes (its SQLITE_DBNAME).",
            source=None,
            where=None,
        ) from None
    return Database("sqlite", url, con)


def connect(url: str) -> Database:
    """A :class:`Database` for a ``postgresql://`` (``postgres://``) or ``sqlite:///`` URL;
    a :class:`SourceError` naming the problem when it cannot be opened."""
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        return _connect_postgres(url)
    if scheme == "sqlite":
        return _connect_sqlite(url)
    raise SourceError(
        f"{url} is not a database URL esa reads.",
        hint="give postgresql://USER@HOST/DATABASE or sqlite:///PATH.",
        source=None,
        where=None,
    )


# -- finding the layout -----------------------------------------------------------------------


def find_layout(db: Database, schema: str | None) -> Layout:
    """The layout ``schema`` names (``NAME`` or ``NAME:TABLE``), else the one layout whose
    tables the database holds; a :class:`SourceError` listing what was found otherwise."""
    columns = db.columns()
    name, _, table = (schema or "").partition(":")
    if schema is not None:
        if name not in LAYOUTS:
            raise SourceError(
                f"--schema {schema}: esa knows no event store layout {name!r}.",
                hint=f"give one of {', '.join(LAYOUTS)} (optionally NAME:TABLE).",
                source=None,
                where=None,
            )
        cls = _layout_class(name)
        if cls is None or not cls.found(columns):
            raise SourceError(
                f"The database {db.label} does not hold {name} tables"
                + (
                    f" (its tables: {', '.join(sorted(columns))})."
                    if columns
                    else " (it has no tables)."
                ),
                hint=f"check the URL (the database, the schema); --schema takes one of {', '.join(LAYOUTS)}.",
                source=None,
                where=None,
            )
        return cls(columns, table or None)  # type: ignore[call-arg]
    classes = [c for n in LAYOUTS if (c := _layout_class(n)) is not None]
    found = [c for c in classes if c.found(columns)]
    if len(found) == 1:
        return found[0](columns, None)  # type: ignore[call-arg]
    if not found:
        raise SourceError(
            f"The database {db.label} holds no event store esa knows"
            + (
                f" (its tables: {', '.join(sorted(columns))})."
                if columns
                else " (it has no tables)."
            ),
            hint=f"esa reads the tables of {', '.join(LAYOUTS)}; check the URL (the database, "
            "the schema, PGOPTIONS=-csearch_path=...), or name the layout with --schema.",
            source=None,
            where=None,
        )
    raise SourceError(
        f"The database {db.label} holds the tables of several event stores: "
        f"{', '.join(c.name for c in found)}.",
        hint=f"choose one with --schema {found[0].name} (or another of them).",
        source=None,
        where=None,
    )


# -- the source ---------------------------------------------------------------------------------


class SqlSource:
    """A layout's rows in a database, read by position in batches of about BATCH_BYTES (at
    most ``batch_rows`` rows; the first of FIRST_BATCH_ROWS, to measure the rows).

    The cursor is ``{"table", "position", "gaps", "mark"}``: the highest position read, the
    gaps below it (``[low, high, first_seen]`` ranges; see the module's gap rule) and the
    event id of the row at that position."""

    kind = "sql"

    @property
    def empty_hint(self) -> str:
        """The hint when the store holds no events yet (a first run)."""
        return (
            f"the table {self.layout.table} ({self.layout.name}) has no rows yet: check that "
            "the URL names the application's database (and --schema its table), or run the "
            "import with --follow to wait for its first events."
        )

    def __init__(
        self, url: str, db: Database, layout: Layout, *, batch_rows: int = BATCH_ROWS
    ) -> None:
        self.url = url
        self.kind_of_database = db.kind
        self.layout = layout
        self.label = db.label
        self.batch_rows = batch_rows
        # the schema a table named without one is in (search_path), so that the identity
        # names the table whatever the search_path of a later run
        self.schema = db.current_schema()

    @property
    def identity(self) -> str:
        if self.kind_of_database == "sqlite":
            where = str(_sqlite_path(self.url).resolve())
        else:
            parts = urllib.parse.urlsplit(self.url)
            where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
        table = self.layout.table
        if self.schema is not None and "." not in table:
            table = f"{self.schema}.{table}"
        return f"{self.kind_of_database}:{where}#{self.layout.name}:{table}"

    other_source_hint = (
        "to continue, give the URL and --schema of the import's first run: the same host name "
        "(localhost and 127.0.0.1 are told apart), port and database, and the same table; "
        "another database or table gets its own --name. A new --name reads the store from its "
        "start and writes none of its events twice (each has its event id), so a store that "
        "moved to another host can be imported under a new name."
    )

    @property
    def origins(self) -> dict[str, str]:
        """What each field of this source's rows is, in the store's own terms (for printing
        the mapping): ``stream_id`` is ``originator_id`` ..."""
        return dict(getattr(self.layout, "origins", {}))

    def default_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", "-", self.layout.table)

    def size(self) -> int | None:
        db = connect(self.url)
        try:
            return self._top(db) or 0
        finally:
            db.close()

    def _top(self, db: Database) -> int | None:
        t, p = db.quote(self.layout.table), db.quote(self.layout.position)
        value = db.query(f"SELECT max({t}.{p}) AS m FROM {t}")["m"][0].as_py()
        return None if value is None else int(value)

    def read(
        self, at: dict[str, Any] | None, *, con: Any, follow: bool = False, name: str | None = None
    ) -> Iterator[RawBatch]:
        """Batches after the cursor ``at``, on a connection of their own (closed at the end)."""
        if at and at.get("table") != self.layout.table:
            raise SourceChangedError(
                f"The import's cursor is in the table {at.get('table')}, not {self.layout.table}.",
                hint="import this table under a new --name.",
                source=name,
                where=None,
            )
        db = connect(self.url)
        try:
            if at:
                self._check(db, int(at["position"]), name)
                if at.get("mark") is not None:
                    self._check_mark(db, con, int(at["position"]), at["mark"], name)
            yield from self._read(db, at, con)
        finally:
            db.close()

    def _check(self, db: Database, position: int, name: str | None) -> None:
        """Refuse a table whose sequence is now below the cursor: it was emptied or replaced
        (its new rows would be taken for rows already imported)."""
        top = self._top(db)
        if top is None or top < position:
            raise SourceChangedError(
                f"The table {self.layout.table} of {self.label} changed under the import's "
                f"cursor: the import has read up to position {position:,}, and the table's "
                f"highest position is now {'none (it is empty)' if top is None else f'{top:,}'}.",
                hint="the store was emptied, restored from an older backup or replaced: "
                "restore it to go on; if it was replaced on purpose, import it under a new "
                "--name (its events are recognised by their event ids, so none is written "
                "twice).",
                source=name,
                where=None,
            )

    def _check_mark(
        self, db: Database, con: Any, position: int, mark: str, name: str | None
    ) -> None:
        """Refuse a table whose row at the cursor's position is gone or another event: it was
        truncated, or recreated and written past the cursor again."""
        column = f"{db.quote(self.layout.table)}.{db.quote(self.layout.position)}"
        batch = db.query(self.layout.select(db, f"({column} = {int(position)})", 1))
        now = _event_id(self.layout.rows(con, batch)) if batch.num_rows else None
        if now != mark:
            what = "gone" if not batch.num_rows else f"now the event {now}"
            raise SourceChangedError(
                f"The table {self.layout.table} of {self.label} changed under the import's "
                f"cursor: the import has read up to position {position:,}, the event {mark}, "
                f"and that row is {what} (the table was emptied, recreated or replaced).",
                hint="restore the store to go on; if it was replaced on purpose, import it "
                "under a new --name (its events are recognised by their event ids, so none is "
                "written twice).",
                source=name,
                where=None,
            )

    def _read(self, db: Database, at: dict[str, Any] | None, con: Any) -> Iterator[RawBatch]:
        layout = self.layout
        column = f"{db.quote(layout.table)}.{db.quote(layout.position)}"
        after = int(at["position"]) if at else 0
        gaps: list[list[float]] = [list(g) for g in at.get("gaps", [])] if at else []
        mark = at.get("mark") if at else None
        # a first batch of a few rows, then as many as make about BATCH_BYTES (a store of
        # large states is read in fewer rows a batch), at most batch_rows; and a batch is
        # cut once it has read BATCH_BYTES (rows larger than those before them)
        limit = min(self.batch_rows, FIRST_BATCH_ROWS)
        while True:
            now = db.now() if db.gaps_possible else 0.0
            where = f"{column} > {after}" + "".join(
                f" OR {column} BETWEEN {int(lo)} AND {int(hi)}" for lo, hi, _ in gaps
            )
            batch, cut = db.query_upto(layout.select(db, f"({where})", limit), BATCH_BYTES)
            if batch.num_rows == 0:
                return
            full = cut or batch.num_rows >= limit  # (a cut batch is followed by more)
            positions = batch["position"].to_numpy(zero_copy_only=False).astype(np.int64)
            last = int(positions.max())
            if db.gaps_possible:
                gaps = _next_gaps(gaps, positions, after, now, full=full)
            lines = layout.rows(con, batch)
            if last >= after:  # (rows are ordered: the last is the one at the new position)
                mark = _event_id(lines.slice(len(lines) - 1))
            after = max(after, last)
            cursor = {"table": layout.table, "position": after}
            if db.gaps_possible:
                cursor["gaps"] = gaps
            cursor["mark"] = mark
            coordinates = pc.binary_join_element_wise(
                pa.array([f"{layout.table}#"] * len(positions), pa.string()),
                pa.array(positions).cast(pa.string()),
                "",
            )
            yield RawBatch(lines, coordinates, cursor, after)
            if not full:
                return
            per_row = max(1, batch.nbytes // batch.num_rows)
            limit = max(1, min(self.batch_rows, BATCH_BYTES // per_row))


def _event_id(lines: pa.Array) -> str | None:
    """The event id of a one-row batch's line (None when it has none or is not JSON)."""
    text = lines[0].as_py()
    try:
        row = json.loads(text) if text is not None else None
    except ValueError:
        return None
    value = row.get("event_id") if isinstance(row, dict) else None
    return None if value is None else str(value)


def _next_gaps(
    gaps: list[list[float]], positions: np.ndarray[Any, Any], after: int, now: float, *, full: bool
) -> list[list[float]]:
    """The gap ranges after a read that saw ``positions`` (ordered) at time ``now``, the
    highest position read before being ``after``: filled positions split their range, the
    missing ones above ``after`` become new ranges, and a range the read covered is forgotten
    once it is older than GAP_SECONDS."""
    seen = set(positions[positions <= after].tolist()) if gaps else set()
    covered_to = int(positions[-1]) if full else None  # a full batch covers up to its last row
    pieces: list[list[float]] = []
    for lo, hi, first in gaps:
        lo, hi = int(lo), int(hi)
        start = lo
        for p in sorted(x for x in seen if lo <= x <= hi):
            if p > start:
                pieces.append([start, p - 1, first])
            start = p + 1
        if start <= hi:
            pieces.append([start, hi, first])
    kept = [
        [lo, hi, first]
        for lo, hi, first in pieces
        if not ((covered_to is None or hi <= covered_to) and now - first > GAP_SECONDS)
    ]
    new = positions[positions > after]
    if len(new):
        bounds = np.r_[after, new]
        jumps = np.flatnonzero(np.diff(bounds) > 1)
        for index in jumps.tolist():
            kept.append([int(bounds[index]) + 1, int(bounds[index + 1]) - 1, now])
    kept.sort(key=lambda g: g[0])
    return kept[-MAX_GAPS:]


def open_sql_source(
    url: str, *, schema: str | None = None, batch_rows: int = BATCH_ROWS
) -> SqlSource:
    """The event store in the database at ``url`` (``postgresql://USER[:PASSWORD]@HOST[:PORT]/
    DATABASE``, ``postgres://...`` or ``sqlite:///PATH``), its layout found by its tables or
    named by ``schema`` (``eventsourcing``, ``rails_event_store``, ``marten``, ``axon``;
    ``NAME:TABLE`` to pick one of several tables)."""
    db = connect(url)
    try:
        layout = find_layout(db, schema)
        return SqlSource(url, db, layout, batch_rows=batch_rows)
    finally:
        db.close()
