"""The Python ``eventsourcing`` library's stored events (its SQLite and PostgreSQL recorders).

The tables, as the library's application recorders create them (eventsourcing 9.5,
``eventsourcing/sqlite.py`` ``SQLiteApplicationRecorder.construct_create_table_statements``
and ``eventsourcing/postgres.py`` ``PostgresApplicationRecorder.__init__``)::

    -- SQLite: the notification id is the rowid
    CREATE TABLE IF NOT EXISTS stored_events (originator_id TEXT, originator_version INTEGER,
        topic TEXT, state BLOB, PRIMARY KEY (originator_id, originator_version))
    -- PostgreSQL
    CREATE TABLE IF NOT EXISTS {schema}.stored_events (originator_id uuid NOT NULL,
        originator_version bigint NOT NULL, topic text, state bytea,
        notification_id bigserial, PRIMARY KEY (originator_id, originator_version))
    CREATE UNIQUE INDEX IF NOT EXISTS stored_events_notification_id_idx
        ON {schema}.stored_events (notification_id ASC)

The table is ``stored_events`` in SQLite and ``<application name>_events`` (lower case) in
PostgreSQL (``eventsourcing/postgres.py`` ``PostgresFactory.application_recorder``), so a
database may hold several: ``--schema eventsourcing:TABLE`` picks one.

Left out: the snapshot tables (``stored_snapshots``: the same columns, but a SQLite
``WITHOUT ROWID`` table and no ``notification_id`` in PostgreSQL) and the ``tracking``
table of processed notifications.

A row becomes an event so:

- ``stream_id``: ``originator_id`` (a UUID in its usual dashed form; SQLite keeps it as 32 hex
  digits); ``event_id``: a UUID derived from the originator id and version (md5), so a
  re-import under another name finds the same events;
- ``event_type``: the event class's qualified name, the part of the ``topic`` after its colon
  (``bank.domain:Account.Opened`` -> ``Account.Opened``: the class alone, ``Opened``, would
  mix the events of two aggregates); ``category``: the aggregate class (``Account``; none for
  an event class not nested in one); the whole topic is kept as ``metadata.topic``;
- ``occurred_at``: the state's ``timestamp``; ``data``: the state without it (the library
  keeps ``originator_id`` and ``originator_version`` out of the state already), and without
  ``originator_topic`` (a created event's aggregate class, kept as
  ``metadata.originator_topic``); ``class_version`` becomes the ``schema_version`` (1 when
  absent); ``metadata.source_version``: ``originator_version``.

The state's JSON transcoding is decoded to plain JSON values: ``{"_type_": "uuid_hex",
"_data_": "<hex>"}`` becomes the dashed UUID text, ``datetime_iso`` its ISO text,
``decimal_str`` its text (exact: a JSON number would be a double), and any other transcoding
its ``_data_`` value. The library's known transcodings are rewritten in DuckDB, a batch at a
time; a state holding another transcoding whose data is an object or array is decoded in
Python. A state the library compressed with zlib (``COMPRESSOR_TOPIC``) is decompressed; an
encrypted one (``CIPHER_TOPIC``/``CIPHER_KEY``) cannot be read, and stops the import naming
the row.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from esanalytics.exceptions import SourceError
from esanalytics.sources.sql import Database

__all__ = ["LAYOUT", "EventsourcingLayout"]

_COLUMNS = {"originator_id", "originator_version", "topic", "state"}

# A transcoded value, as the library's JSONTranscoder writes it (compact, "_type_" first). A
# '{"' outside a JSON string is structure (inside one a quote is escaped), so rewriting the
# text never touches a string's contents.
_STRING = r'"(?:[^"\\]|\\.)*"'
_UUID_HEX = (
    r'\{"_type_":"uuid_hex","_data_":"([0-9a-fA-F]{8})([0-9a-fA-F]{4})([0-9a-fA-F]{4})'
    r'([0-9a-fA-F]{4})([0-9a-fA-F]{12})"\}'
)
_SCALAR = (
    r'\{"_type_":"(?:[^"\\]|\\.)*","_data_":(' + _STRING + r"|-?[0-9][0-9.eE+-]*|true|false|null)\}"
)
_MARK = '{"_type_":'


def _untranscode(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 2 and "_type_" in value and "_data_" in value:
        data = value["_data_"]
        if value["_type_"] == "uuid_hex" and isinstance(data, str) and len(data) == 32:
            return f"{data[:8]}-{data[8:12]}-{data[12:16]}-{data[16:20]}-{data[20:]}"
        return data
    return value


def _decode_in_python(text: str) -> str:
    """A state holding a transcoding DuckDB's rewrite leaves (data that is an object or an
    array), decoded as the library's object hook walks it; text that is not JSON stays."""
    try:
        value = json.loads(text, object_hook=_untranscode)
    except ValueError:
        return text
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class EventsourcingLayout:
    """The ``eventsourcing`` library's application recorder table (``stored_events``)."""

    name: ClassVar[str] = "eventsourcing"

    def __init__(self, columns: Mapping[str, set[str]], table: str | None = None) -> None:
        candidates = sorted(t for t, names in columns.items() if self._fits(names))
        if table is not None:
            if table not in candidates:
                raise SourceError(
                    f"--schema eventsourcing:{table}: there is no eventsourcing events table "
                    f"{table!r} (found: {', '.join(candidates) or 'none'}).",
                    hint="name one of the tables found, or leave :TABLE out.",
                    source=None,
                    where=None,
                )
            candidates = [table]
        if len(candidates) > 1:
            raise SourceError(
                f"The database holds several eventsourcing events tables: {', '.join(candidates)}.",
                hint=f"choose one with --schema eventsourcing:{candidates[0]} (one import each, "
                "with its own --name).",
                source=None,
                where=None,
            )
        self.table = candidates[0]
        self.position = "notification_id" if "notification_id" in columns[self.table] else "rowid"

    @staticmethod
    def _fits(names: set[str]) -> bool:
        return names >= _COLUMNS and bool(names & {"notification_id", "rowid"})

    @classmethod
    def found(cls, columns: Mapping[str, set[str]]) -> bool:
        return any(cls._fits(names) for names in columns.values())

    def select(self, db: Database, where: str, limit: int) -> str:
        table = db.quote(self.table)
        position = f"{table}.{db.quote(self.position)}"
        if db.kind == "postgresql":
            originator, state = "originator_id::text", "state"
        else:
            originator, state = "CAST(originator_id AS TEXT)", "CAST(state AS BLOB)"
        return (
            f"SELECT {position} AS position, {originator} AS originator_id, "
            f"originator_version, topic, {state} AS state FROM {table} "
            f"WHERE {where} ORDER BY {position} LIMIT {int(limit)}"
        )

    def rows(self, con: Any, batch: pa.Table) -> pa.Array:
        return _assemble(con, batch, _rewrite(con, self._texts(batch)))

    def _texts(self, batch: pa.Table) -> pa.Array:
        """The states as text: zlib-compressed ones decompressed; an encrypted one raises."""
        state = batch["state"].combine_chunks()
        if state.type == pa.null():
            state = state.cast(pa.binary())
        first = pc.binary_slice(state, 0, 1) if len(state) else state
        plain = pc.fill_null(pc.equal(first, pa.scalar(b"{", pa.binary())), True)
        if not pc.all(plain).as_py():
            values = state.to_pylist()
            for index in np.flatnonzero(~plain.to_numpy(zero_copy_only=False)).tolist():
                values[index] = self._unwrap(values[index], batch, index)
            state = pa.array(values, pa.binary())
        try:
            return state.cast(pa.large_string())
        except pa.ArrowInvalid:  # text that is not UTF-8: the mapping names the row
            return pa.array(
                [
                    v.decode("utf-8", "replace") if v is not None else None
                    for v in state.to_pylist()
                ],
                pa.large_string(),
            )

    def _unwrap(self, value: bytes | None, batch: pa.Table, index: int) -> bytes | None:
        if value is None or value.lstrip()[:1] in (b"{", b"[", b'"') or not value.strip():
            return value
        try:
            return zlib.decompress(value)
        except zlib.error:
            pass
        try:
            value.decode("utf-8")
            return value  # text that is not JSON: the mapping names the row
        except UnicodeDecodeError:
            pass
        at = f"{self.table}#{batch['position'][index].as_py()}"
        raise SourceError(
            f"{at}: the state of {batch['topic'][index].as_py()} "
            f"(originator {batch['originator_id'][index].as_py()}, version "
            f"{batch['originator_version'][index].as_py()}) is neither JSON nor zlib-compressed "
            "JSON: it is encrypted (the application's CIPHER_TOPIC / CIPHER_KEY), and esa "
            "cannot read it. Nothing of this batch was written.",
            hint="export the events through the application, which holds the key (its "
            "notification log, decoded by its mapper, written as JSON Lines), and import that "
            "file; or import from a copy of the store written without a cipher.",
            source=None,
            where=at,
        )


def _rewrite(con: Any, states: pa.Array) -> pa.Array:
    """The states with the library's transcoded values replaced by plain JSON values."""
    states_table = pa.table({"s": states})  # noqa: F841  (read by DuckDB by name)
    out = (
        con.sql(
            "SELECT regexp_replace(regexp_replace(s, ?, '\"\\1-\\2-\\3-\\4-\\5\"', 'g'), ?, '\\1', 'g') "
            "AS s FROM states_table",
            params=[_UUID_HEX, _SCALAR],
        )
        .to_arrow_table()["s"]
        .combine_chunks()
    )
    left = pc.fill_null(pc.match_substring(out, _MARK), False)
    if pc.any(left).as_py():
        values = out.to_pylist()
        for index in np.flatnonzero(left.to_numpy(zero_copy_only=False)).tolist():
            values[index] = _decode_in_python(values[index])
        out = pa.array(values, pa.large_string())
    return out


_DERIVED_UUID = (
    "substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-3' || substr(h, 14, 3) || '-8' || "
    "substr(h, 18, 3) || '-' || substr(h, 21, 12)"
)


def _assemble(con: Any, batch: pa.Table, texts: pa.Array) -> pa.Array:
    """JSON object text per row with the canonical keys (a state that is not a JSON object
    is handed on as it is, for the mapping to name)."""
    rows = pa.table(  # noqa: F841  (read by DuckDB by name)
        {
            "originator_id": batch["originator_id"].cast(pa.string()),
            "version": batch["originator_version"].cast(pa.int64()),
            "topic": batch["topic"].cast(pa.string()),
            "s": texts,
        }
    )
    return (
        con.sql(
            f"""
        WITH parsed AS (
            SELECT *, CASE WHEN json_valid(s) AND json_type(s::JSON) = 'OBJECT'
                      THEN s::JSON END AS j,
                   CASE WHEN regexp_matches(originator_id, '^[0-9a-fA-F]{{32}}$')
                        THEN lower(substr(originator_id, 1, 8) || '-' || substr(originator_id, 9, 4)
                             || '-' || substr(originator_id, 13, 4) || '-'
                             || substr(originator_id, 17, 4) || '-' || substr(originator_id, 21))
                        ELSE originator_id END AS stream,
                   substr(topic, strpos(topic, ':') + 1) AS qualname
            FROM rows
        ), named AS (
            SELECT *, md5('eventsourcing' || chr(31) || stream || chr(31) || version) AS h
            FROM parsed
        )
        SELECT CASE WHEN j IS NULL THEN s ELSE json_object(
            'event_id', CASE WHEN stream IS NOT NULL AND version IS NOT NULL
                        THEN {_DERIVED_UUID} END,
            'stream_id', stream,
            'event_type', qualname,
            'category', CASE WHEN strpos(qualname, '.') > 0
                        THEN regexp_extract(qualname, '^(.*)\\.[^.]*$', 1) END,
            'occurred_at', j->>'$.timestamp',
            'schema_version', coalesce(TRY_CAST(j->>'$.class_version' AS INTEGER), 1),
            'data', json_merge_patch(j, '{{"timestamp":null,"originator_topic":null,"class_version":null}}'),
            'metadata', json_merge_patch(json_object('source_version', version, 'topic', topic),
                json_object('originator_topic', j->>'$.originator_topic'))
        )::VARCHAR END AS line
        FROM named
        """
        )
        .to_arrow_table()["line"]
        .combine_chunks()
    )


LAYOUT = EventsourcingLayout
