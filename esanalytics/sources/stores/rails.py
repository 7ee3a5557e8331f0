"""Rails Event Store: ``event_store_events`` and ``event_store_events_in_streams``.

The tables are those of ``ruby_event_store-active_record``'s migration (RailsEventStore/
rails_event_store, ruby_event_store-active_record/lib/ruby_event_store/active_record/
generators/templates/[postgres/]create_event_store_events_template.erb), on PostgreSQL with
``data``/``metadata`` of type ``jsonb``, ``json`` or ``bytea``, or on SQLite (``blob``).

How a row becomes an event:

- position and cursor: ``event_store_events.id`` (the global stream's order); the row is
  ``event_store_events#ID``.
- event id: ``event_id`` (RES's UUID); event type: ``event_type`` (the Ruby class name,
  ``Ordering::OrderPlaced``, as written).
- times: ``occurred_at`` is ``COALESCE(valid_at, created_at)`` (RES's ``as_of``: the
  business time a ``valid_at`` gives, else the time of writing) and ``recorded_at`` is
  ``created_at`` (``as_at``); ActiveRecord keeps both as UTC wall time (``timestamp``,
  SQLite text), or as instants where Rails 7's ``datetime_type = :timestamptz`` made the
  columns ``timestamptz``.
- data: the ``data`` column, JSON (``jsonb``/``json``, or JSON text in ``bytea``/``blob`` as
  ``serializer: JSON`` writes it; a doubly encoded JSON string, which older RES versions wrote
  into ``jsonb``, is unwrapped as RES's ``rescue_from_double_json_serialization!`` does).
  YAML (RES's default serializer), Ruby Marshal and other bytes are refused naming the row,
  as is an event whose metadata carries ``encryption`` (its data fields are ciphered by RES's
  Encryption transformation).
- metadata: RES's ``metadata`` as written (``correlation_id``, ``causation_id``, request
  ids, ``types``...), with ``links``, ``source_version`` and ``source_position`` added.
- links and stream: an event linked into several streams is imported once, at its
  ``event_store_events.id``. ``metadata.links`` lists every ``event_store_events_in_streams``
  row it has when the import reads it, in the order they were made (``{"stream",
  "position"}``). The lake's stream is the first of them, the stream the event was published
  to (``append_to_stream`` writes that row with the event, in one transaction; later
  ``link_to_stream`` calls add rows after it), leaving out ``all`` (the global stream, which
  RES before 2.0 wrote as rows of its own). An event with no link (published to the global
  stream only) goes to the stream ``all``. ``source_version`` is its ``position`` in that
  stream (NULL when appended with ``expected_version: :any``).
- links made after an import read the event are not imported: the cursor moves on
  ``event_store_events.id``, which a new link does not change. They show in ``links`` of
  events read later only; the lake never rewrites an event.
- category: the stream name before its first ``$`` (RES's ``Ordering::Order$ID``
  convention; ``::`` becomes ``.`` since a category is a folder name), else before its first
  ``-``; ``all`` for the global stream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import pyarrow as pa

from esanalytics.sources.stores.serialized import (
    choose_table,
    column_types,
    event_line,
    json_text,
    parse_object,
    safe_category,
    schema_of,
    unreadable,
)

__all__ = ["LAYOUT", "RailsEventStoreLayout"]

EVENTS = "event_store_events"
LINKS = "event_store_events_in_streams"
GLOBAL = "all"
_EVENT_COLUMNS = {"id", "event_id", "event_type", "data", "metadata", "created_at"}
_LINK_COLUMNS = {"id", "stream", "position", "event_id"}

_HINT = (
    "esa reads RES events serialized as JSON. Move the store to JSON "
    "(RailsEventStore::JSONClient with a jsonb column, or EventRepository.new(serializer: "
    "JSON)) and rewrite the stored events through RES, or read them through RES and import "
    "an export: event_store.read.each { |e| puts({stream_id: ..., event_type: e.event_type, "
    "data: e.data, metadata: e.metadata.to_h}.to_json) } > events.jsonl, then esa import "
    "LAKE events.jsonl."
)


class RailsEventStoreLayout:
    """The layout of Rails Event Store's ActiveRecord repository (see the module)."""

    name: ClassVar[str] = "rails_event_store"
    # where each part of the event comes from, as `esa import` prints the mapping
    origins: ClassVar[dict[str, str]] = {
        "stream_id": "event_store_events_in_streams.stream (the first link)",
        "event_type": "event_type",
        "event_id": "event_id",
        "occurred_at": "valid_at, else created_at",
        "recorded_at": "created_at",
        "data": "data",
        "metadata": "metadata, with every stream link",
        "category": "the stream name's prefix",
    }

    def __init__(self, columns: Mapping[str, set[str]], table: str | None) -> None:
        """The one RES events table of the database (``table`` picks one of several)."""
        tables = [t for t in columns if self._is_events(t, columns)]
        what = f"Rails Event Store events table (with its {LINKS} beside it)"
        self.table = choose_table("rails_event_store", what, tables, table)
        self.links = schema_of(self.table) + LINKS
        self.position = "id"
        self._types: dict[str, str] | None = None

    @staticmethod
    def _is_events(table: str, columns: Mapping[str, set[str]]) -> bool:
        """Whether ``table`` is RES's events table, its links table beside it."""
        return (
            table.rsplit(".", 1)[-1] == EVENTS
            and columns[table] >= _EVENT_COLUMNS
            and columns.get(schema_of(table) + LINKS, set()) >= _LINK_COLUMNS
        )

    @classmethod
    def found(cls, columns: Mapping[str, set[str]]) -> bool:
        """Whether some schema holds RES's two tables."""
        return any(cls._is_events(t, columns) for t in columns)

    def select(self, db: Any, where: str, limit: int) -> str:
        """The events after the cursor, each with its links as a JSON array."""
        events, links = db.quote(self.table), db.quote(self.links)
        if db.kind == "postgresql":
            if self._types is None:
                self._types = column_types(db, self.table)

            def payload(column: str) -> str:
                kind = self._types.get(column, "") if self._types else ""
                return f"{events}.{column}" + ("" if kind == "bytea" else "::text")

            def moment(column: str) -> str:
                # ActiveRecord writes UTC wall time into `timestamp`; into `timestamptz`
                # (Rails 7's datetime_type = :timestamptz) an instant, shown here in UTC
                zoned = (self._types or {}).get(column) == "timestamp with time zone"
                value = f"{events}.{column}" + (" AT TIME ZONE 'UTC'" if zoned else "")
                return f"to_char({value}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"

            agg = "json_agg(json_build_array(s.id, s.stream, s.position))::text"
            event_id = f"{events}.event_id::text"
        else:

            def payload(column: str) -> str:
                return f"{events}.{column}"

            def moment(column: str) -> str:
                return f"{events}.{column}"

            agg = "json_group_array(json_array(s.id, s.stream, s.position))"
            event_id = f"{events}.event_id"
        return (
            f"SELECT {events}.id AS position, {event_id} AS event_id, "
            f"{events}.event_type AS event_type, {payload('data')} AS data, "
            f"{payload('metadata')} AS metadata, {moment('created_at')} AS created_at, "
            f"{moment('valid_at')} AS valid_at, "
            f"(SELECT {agg} FROM {links} s WHERE s.event_id = {events}.event_id) AS links "
            f"FROM {events} WHERE {where} ORDER BY {events}.id LIMIT {int(limit)}"
        )

    def rows(self, con: Any, batch: pa.Table) -> pa.Array:
        """Each row as an event line (see the module)."""
        lines = []
        for row in batch.to_pylist():
            where = f"{self.table}#{row['position']}"
            data = self._payload(row["data"], where, "data")
            metadata = parse_object(self._payload(row["metadata"], where, "metadata"))
            if isinstance(metadata, dict) and "encryption" in metadata:
                raise unreadable(
                    where,
                    "data",
                    "encrypted by RES's Encryption transformation (metadata.encryption)",
                    hint="esa does not hold RES's encryption keys: read the events through "
                    "RES (which decrypts them) and import an export of them. " + _HINT,
                )
            links = sorted(json.loads(row["links"] or "[]"), key=lambda link: link[0] or 0)
            named = [(s, p) for _, s, p in links if s != GLOBAL]
            stream, version = named[0] if named else (GLOBAL, None)
            lines.append(
                event_line(
                    event_id=row["event_id"],
                    stream_id=stream,
                    event_type=row["event_type"],
                    occurred_at=_utc(row["valid_at"] or row["created_at"]),
                    recorded_at=_utc(row["created_at"]),
                    category=_category(stream),
                    data=data,
                    metadata=metadata,
                    extras={
                        "links": [{"stream": s, "position": p} for _, s, p in links],
                        "source_version": version,
                        "source_position": row["position"],
                    },
                )
            )
        return pa.array(lines, pa.string())

    def _payload(self, value: str | bytes | None, where: str, column: str) -> str | None:
        """A data or metadata column as JSON text, or the error naming the row."""
        text: str | None = value if isinstance(value, str) else None
        if text is not None and (self._types or {}).get(column) in ("json", "jsonb"):
            pass  # (PostgreSQL keeps only valid JSON in these types)
        else:
            text, kind = json_text(value)
            if kind != "json":
                raise unreadable(where, column, kind, hint=_HINT)
        if text is not None and text.startswith('"'):
            # JSON written into jsonb twice over (RES < 2.9 with serializer: JSON): RES's
            # rescue_from_double_json_serialization! reads the inner text
            inner = json.loads(text)
            if isinstance(inner, str) and inner.lstrip().startswith("{"):
                return json_text(inner)[0]
        return text


def _utc(moment: str | None) -> str | None:
    """ActiveRecord's UTC wall time (``2025-03-01 09:00:00.123456``) as ISO 8601 in UTC."""
    if not moment:
        return None
    return moment.replace(" ", "T", 1) + "+00:00"


def _category(stream: str) -> str:
    """The lake category of a RES stream name (see the module)."""
    head = stream.split("$", 1)[0] if "$" in stream else stream.split("-", 1)[0]
    return safe_category(head, GLOBAL)


LAYOUT = RailsEventStoreLayout
