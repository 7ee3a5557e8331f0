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
from esanalytics.sources.stores.serialized import choose_table

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
    # where each part of the event comes from, as `esa import` prints the mapping
    origins: ClassVar[dict[str, str]] = {
        "stream_id": "originator_id",
        "event_type": "topic (its class path)",
        "event_id": "a UUID of originator_id and originator_version",
        "occurred_at": "the state's timestamp",
        "data": "state (its transcoded values as plain JSON)",
        "metadata": "originator_version, topic",
        "category": "topic (the aggregate class)",
        "schema_version": "the state's class_version",
    }

    def __init__(self, columns: Mapping[str, set[str]], table: str | None = None) -> None:
        candidates = [t for t, names in columns.items() if self._fits(names)]
        self.table = choose_table("eventsourcing", "eventsourcing events table", candidates, table)
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
        return _lines(con, batch, self._texts(batch))

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


_DERIVED_UUID = (
    "substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-3' || substr(h, 14, 3) || '-8' || "
    "substr(h, 18, 3) || '-' || substr(h, 21, 12)"
)
# How the library's states begin (its event objects' attributes in order, the originator id
# and version taken out): the timestamp, then a created event's aggregate class.
_TIMESTAMP = '{"timestamp":{"_type_":"datetime_iso","_data_":"'
_ORIGINATOR_TOPIC = ',"originator_topic":"'


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _untranscoded(expr: str) -> str:
    """SQL of JSON text ``expr`` with the library's transcoded values made plain (each
    rewrite only where the text holds one)."""
    uuids = (
        f"CASE WHEN contains({expr}, '\"uuid_hex\"') THEN regexp_replace({expr}, "
        f"{_sql_text(_UUID_HEX)}, '\"\\1-\\2-\\3-\\4-\\5\"', 'g') ELSE {expr} END"
    )
    return (
        f"CASE WHEN contains({expr}, {_sql_text(_MARK)}) THEN regexp_replace(({uuids}), "
        f"{_sql_text(_SCALAR)}, '\\1', 'g') ELSE {expr} END"
    )


# A row's event as JSON text, in two queries. The states as the library writes them (the
# timestamp first, no class_version) are cut and joined as text: the first query finds where
# the timestamp and a created event's aggregate class end (small columns), the second cuts
# there (each offset a column, so no cut is computed twice). No JSON is parsed on this path,
# and a state that is not JSON makes a line that is not JSON, which the mapping names. Other
# states are parsed.
_OFFSETS = f"""
SELECT fast, stream, ts_end,
    CASE WHEN fast AND substr(s, ts_end + 2, {len(_ORIGINATOR_TOPIC)}) = {_sql_text(_ORIGINATOR_TOPIC)}
         THEN strpos(substr(s, ts_end + {len(_ORIGINATOR_TOPIC) + 2}), '"') END AS ot_len,
    CASE WHEN stream IS NOT NULL AND version IS NOT NULL THEN
        md5('eventsourcing' || chr(31) || stream || chr(31) || version) END AS h
FROM (
    SELECT s, version,
        starts_with(s, {_sql_text(_TIMESTAMP)}) AND NOT contains(s, '"class_version":') AS fast,
        strpos(s, '"}}') AS ts_end,
        CASE WHEN regexp_full_match(originator_id, '[0-9a-fA-F]{{32}}')
             THEN lower(substr(originator_id, 1, 8) || '-' || substr(originator_id, 9, 4) || '-'
                  || substr(originator_id, 13, 4) || '-' || substr(originator_id, 17, 4) || '-'
                  || substr(originator_id, 21))
             ELSE originator_id END AS stream
    FROM esa_es_rows
)
"""
_REST = (  # where the state goes on after the timestamp (and the aggregate class)
    f"CASE WHEN ot_len IS NULL THEN ts_end + 3 ELSE ts_end + {len(_ORIGINATOR_TOPIC) + 3} + ot_len END"
)
_DATA = (  # the state after the timestamp (and the aggregate class), as an object: {} when
    # they were all it held (an event with no attributes of its own)
    f"CASE WHEN substr(s, {_REST} - 1, 1) = '}}' THEN '{{}}' ELSE concat('{{', substr(s, {_REST})) END"
)
_LINES = f"""
SELECT line, contains(line, {_sql_text(_MARK)}) AS leftover FROM (
SELECT CASE
    WHEN fast THEN concat(  -- (one copy per row: each || would copy the line so far)
        '{{"event_id":', CASE WHEN h IS NULL THEN 'null' ELSE '"' || {_DERIVED_UUID} || '"' END,
        ',"stream_id":', coalesce(to_json(stream)::VARCHAR, 'null'), named,
        ',"occurred_at":"', substr(s, {len(_TIMESTAMP) + 1}, ts_end - {len(_TIMESTAMP) + 1}),
        '","schema_version":1,"data":', data,
        ',"metadata":{{"source_version":', coalesce(version::VARCHAR, 'null'), topic_json,
        CASE WHEN ot_len IS NOT NULL THEN concat(',"originator_topic":"',
             substr(s, ts_end + {len(_ORIGINATOR_TOPIC) + 2}, ot_len - 1), '"') END,
        '}}}}')
    WHEN j IS NULL THEN plain
    ELSE json_object(
        'event_id', CASE WHEN h IS NOT NULL THEN {_DERIVED_UUID} END,
        'stream_id', stream,
        'event_type', qualname,
        'category', category,
        'occurred_at', j->>'$.timestamp',
        'schema_version', coalesce(TRY_CAST(j->>'$.class_version' AS INTEGER), 1),
        'data', json_merge_patch(j,
            '{{"timestamp":null,"originator_topic":null,"class_version":null}}'),
        'metadata', json_merge_patch(json_object('source_version', version, 'topic', topic),
            json_object('originator_topic', j->>'$.originator_topic'))
    )::VARCHAR END AS line
FROM (
    SELECT *, CASE WHEN NOT fast AND json_valid(plain) AND json_type(plain::JSON) = 'OBJECT'
                   THEN plain::JSON END AS j
    FROM (
        SELECT *, CASE WHEN fast THEN {_untranscoded("raw")} END AS data,
            CASE WHEN NOT fast THEN {_untranscoded("s")} END AS plain
        FROM (SELECT *, CASE WHEN fast THEN {_DATA} END AS raw FROM esa_es_rows POSITIONAL JOIN esa_es_offsets)
    )
))
"""


def _by_topic(topics: pa.Array) -> dict[str, pa.Array]:
    """What each row's topic gives (the type, the category and their JSON), worked out once
    per distinct topic."""
    encoded = pc.dictionary_encode(topics)
    qualnames, categories, named, topic_json = [], [], [], []
    for topic in encoded.dictionary.to_pylist():
        qualname = topic.partition(":")[2] if ":" in topic else topic
        category = qualname.rpartition(".")[0] or None
        qualnames.append(qualname)
        categories.append(category)
        named.append(
            f',"event_type":{json.dumps(qualname, ensure_ascii=False)}'
            f',"category":{json.dumps(category, ensure_ascii=False)}'
        )
        topic_json.append(f',"topic":{json.dumps(topic, ensure_ascii=False)}')
    columns = {
        "qualname": qualnames,
        "category": categories,
        "named": named,
        "topic_json": topic_json,
    }
    none = {"named": ',"event_type":null,"category":null', "topic_json": ',"topic":null'}
    out = {}
    for name, values in columns.items():
        column = pa.array(values, pa.string()).take(encoded.indices)
        out[name] = pc.fill_null(column, none[name]) if name in none else column
    return out


def _lines(con: Any, batch: pa.Table, texts: pa.Array) -> pa.Array:
    """JSON object text per row with the canonical keys (a state that is not a JSON object
    is handed on as it is, for the mapping to name)."""
    topics = batch["topic"].cast(pa.string()).combine_chunks()
    rows = pa.table(
        {
            "originator_id": batch["originator_id"].cast(pa.string()),
            "version": batch["originator_version"].cast(pa.int64()),
            "topic": topics,
            "s": texts,
            **_by_topic(topics),
        }
    )
    con.register("esa_es_rows", rows)
    try:
        con.register("esa_es_offsets", con.sql(_OFFSETS).to_arrow_table())
        result = con.sql(_LINES).to_arrow_table()
    finally:
        con.unregister("esa_es_rows")
        con.unregister("esa_es_offsets")
    out = result["line"].combine_chunks()
    left = pc.fill_null(result["leftover"].combine_chunks(), False)
    if pc.any(left).as_py():  # a transcoding whose data is an object or an array
        values = out.to_pylist()
        for index in np.flatnonzero(left.to_numpy(zero_copy_only=False)).tolist():
            values[index] = _decode_in_python(values[index])
        out = pa.array(values, pa.large_string())
    return out


LAYOUT = EventsourcingLayout
