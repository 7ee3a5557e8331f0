"""Axon Framework's JPA and JDBC event storage engines: ``domain_event_entry``.

Two namings of one table (AxonFramework/AxonFramework, axon-4.x): the JPA entity
(eventsourcing/src/main/java/org/axonframework/eventsourcing/eventstore/jpa/
DomainEventEntry.java) under Spring Boot's snake_case naming, ``domain_event_entry`` with
``global_index``, ``aggregate_identifier``, ``sequence_number``, ``type``,
``event_identifier``, ``meta_data``, ``payload``, ``payload_revision``, ``payload_type``,
``time_stamp``; and the JDBC engine's (eventsourcing/.../jdbc/AbstractEventTableFactory.java,
EventSchema.java) ``DomainEventEntry`` with ``globalIndex``, ``aggregateIdentifier`` ...,
which PostgreSQL folds to lower case. A table of another name (``EventSchema`` lets one
rename it) is found by its columns; ``--schema axon:TABLE`` picks one of several. Payload
and metadata columns may be ``bytea`` (the JDBC default and the advised JPA mapping on
PostgreSQL), ``oid`` (Hibernate's default for ``@Lob`` on PostgreSQL: read with ``lo_get``),
text or ``jsonb``; on SQLite, blobs or text.

How a row becomes an event:

- position and cursor: ``global_index`` (the order Axon's tracking processors read, with
  Axon's own gap-aware token); the row is ``domain_event_entry#GLOBAL_INDEX``. Hibernate
  hands out JPA ids in blocks (allocation size 50), so with several nodes a block one node
  uses slowly leaves gaps that fill late: like Axon's ``GapAwareTrackingToken`` (its
  ``gapTimeout``), the cursor waits a bounded time for a gap (see
  :mod:`esanalytics.sources.sql`), and an id used after that is missed, by esa as by Axon's
  processors. A sequence of increment 1 (or the JDBC engine's ``BIGSERIAL``) avoids it.
- event id: ``event_identifier`` (a UUID by Axon's default ``IdentifierFactory``).
- stream: ``aggregate_identifier``; category: the aggregate ``type`` (``GiftCard``), or
  ``axon`` for an event no aggregate applied (Axon stores those with their own identifier as
  aggregate identifier, sequence 0 and no type).
- event type: ``payload_type`` (the payload's class name, or its XStream alias) as Java's
  canonical name (``com.example.Card$Redeemed`` is ``com.example.Card.Redeemed``: the lake's
  event types hold no ``$``); ``metadata.payload_type`` keeps it as written, and
  ``metadata.payload_revision`` the ``payload_revision`` when set.
- times: ``time_stamp``, the ISO 8601 text Axon writes (``2025-03-01T09:00:00.123Z``), is
  both ``occurred_at`` and ``recorded_at``.
- data: the ``payload``. JSON (Jackson) is taken as it is. XML (XStream) is turned into JSON
  by :func:`xstream_json`'s rule. Java object serialization (``JavaSerializer``), bytes that
  are not text (a cipher such as AxonIQ's Data Protection module, CBOR) and other text are
  refused naming the row.
- metadata: Axon's ``meta_data`` map (JSON or XStream's ``<meta-data>``), with
  ``correlation_id`` from its ``traceId`` and ``causation_id`` from its ``correlationId``
  (Axon's ``MessageOriginProvider``: ``correlationId`` is the message that caused this one,
  ``traceId`` the first of the chain) unless the map has those keys, ``aggregate_type``,
  ``payload_type``, ``payload_revision``, ``source_version`` (``sequence_number``) and
  ``source_position`` (``global_index``).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any, ClassVar

import pyarrow as pa

from esanalytics.sources.stores.serialized import (
    NOT_JSON,
    choose_table,
    column_types,
    event_line,
    json_text,
    parse_object,
    safe_category,
    sniff,
    text_of,
    unreadable,
)

__all__ = ["LAYOUT", "AxonLayout", "xstream_json"]

# The columns of each naming, by role.
NAMINGS: tuple[dict[str, str], ...] = (
    {
        "global_index": "global_index", "aggregate_identifier": "aggregate_identifier",
        "sequence_number": "sequence_number", "type": "type",
        "event_identifier": "event_identifier", "meta_data": "meta_data", "payload": "payload",
        "payload_revision": "payload_revision", "payload_type": "payload_type",
        "time_stamp": "time_stamp",
    },
    {
        "global_index": "globalindex", "aggregate_identifier": "aggregateidentifier",
        "sequence_number": "sequencenumber", "type": "type",
        "event_identifier": "eventidentifier", "meta_data": "metadata", "payload": "payload",
        "payload_revision": "payloadrevision", "payload_type": "payloadtype",
        "time_stamp": "timestamp",
    },
)  # fmt: skip

_HINT = (
    "esa reads Axon payloads written by the JacksonSerializer (JSON) or the XStreamSerializer "
    "(XML). Configure the events serializer as Jackson (axon.serializer.events=jackson) for "
    "new events; for these, read them through Axon (an event processor that writes each "
    "event as a JSON line) and import that file."
)


def _naming(columns: set[str]) -> dict[str, str] | None:
    """Which of Axon's two namings a table's columns follow, if either."""
    for naming in NAMINGS:
        if set(naming.values()) <= columns:
            return naming
    return None


class AxonLayout:
    """The layout of Axon's domain event table (see the module)."""

    name: ClassVar[str] = "axon"
    # where each part of the event comes from, as `esa import` prints the mapping
    origins: ClassVar[dict[str, str]] = {
        "stream_id": "aggregate_identifier",
        "event_type": "payload_type",
        "event_id": "event_identifier",
        "occurred_at": "time_stamp",
        "recorded_at": "time_stamp",
        "data": "payload (XML as JSON by a rule)",
        "metadata": "meta_data, sequence_number",
        "category": "type (the aggregate's)",
    }

    def __init__(self, columns: Mapping[str, set[str]], table: str | None) -> None:
        """The one Axon event table of the database (``table`` picks one of several)."""
        tables = [t for t in columns if _naming(columns[t]) is not None]
        self.table = choose_table("axon", "Axon domain event table", tables, table)
        naming = _naming(columns[self.table])
        assert naming is not None
        self.columns = naming
        self.position = naming["global_index"]
        self._types: dict[str, str] | None = None

    @classmethod
    def found(cls, columns: Mapping[str, set[str]]) -> bool:
        """Whether a table has the columns of either naming."""
        return any(_naming(c) is not None for c in columns.values())

    def select(self, db: Any, where: str, limit: int) -> str:
        """The rows after the cursor, the large-object columns read as bytes or text."""
        t = db.quote(self.table)
        c = {role: f"{t}.{db.quote(name)}" for role, name in self.columns.items()}
        if db.kind == "postgresql" and self._types is None:
            self._types = column_types(db, self.table)

        def lob(role: str) -> str:
            """The column as bytes (bytea, blob; an oid through lo_get) or text."""
            kind = (self._types or {}).get(self.columns[role], "bytea")
            if db.kind != "postgresql" or kind == "bytea":
                return c[role]
            if kind == "oid":
                return f"lo_get({c[role]})"
            return f"{c[role]}::text"

        return (
            f"SELECT {c['global_index']} AS position, "
            f"{c['aggregate_identifier']} AS aggregate_identifier, "
            f"{c['sequence_number']} AS sequence_number, {c['type']} AS type, "
            f"{c['event_identifier']} AS event_identifier, {lob('meta_data')} AS meta_data, "
            f"{lob('payload')} AS payload, {c['payload_revision']} AS payload_revision, "
            f"{c['payload_type']} AS payload_type, {c['time_stamp']} AS time_stamp "
            f"FROM {t} WHERE {where} ORDER BY {c['global_index']} LIMIT {int(limit)}"
        )

    def rows(self, con: Any, batch: pa.Table) -> pa.Array:
        """Each row as an event line (see the module)."""
        lines = []
        for row in batch.to_pylist():
            where = f"{self.table}#{row['position']}"
            data = _json_or_xml(row["payload"], where, "payload", root=True)
            meta = _json_or_xml(row["meta_data"], where, "metadata", root=False)
            metadata = parse_object(meta)
            if isinstance(metadata, dict):
                if "traceId" in metadata and "correlation_id" not in metadata:
                    metadata["correlation_id"] = metadata["traceId"]
                if "correlationId" in metadata and "causation_id" not in metadata:
                    metadata["causation_id"] = metadata["correlationId"]
            lines.append(
                event_line(
                    event_id=row["event_identifier"],
                    stream_id=row["aggregate_identifier"],
                    event_type=_canonical(row["payload_type"]),
                    occurred_at=row["time_stamp"],
                    recorded_at=row["time_stamp"],
                    category=safe_category(row["type"], "axon"),
                    data=data,
                    metadata=metadata,
                    extras={
                        "aggregate_type": row["type"],
                        "payload_type": row["payload_type"],
                        "payload_revision": row["payload_revision"],
                        "source_version": row["sequence_number"],
                        "source_position": row["position"],
                    },
                )
            )
        return pa.array(lines, pa.string())


def _canonical(payload_type: str | None) -> str | None:
    """A class name as Java's canonical name: a nested class's ``$`` is ``.``."""
    return None if payload_type is None else payload_type.replace("$", ".")


def _json_or_xml(value: str | bytes | None, where: str, column: str, *, root: bool) -> str | None:
    """A payload or metadata column as JSON text: JSON as it is, XStream XML converted."""
    if value is not None and sniff(value) == "xml":
        xml = text_of(value) or ""
        try:
            element = ET.fromstring(xml)
        except ET.ParseError:
            return NOT_JSON + xml
        return json.dumps(xstream_json(element, root=root), ensure_ascii=False)
    text, kind = json_text(value)
    if kind != "json":
        raise unreadable(where, column, kind, hint=_HINT)
    return text


# XStream's aliases for the JDK types it names collection items after
# (com.thoughtworks.xstream.XStream#setupAliases), less those a Java field is often called
# (number, object, date, url, list, map, entry...): an element named so is a field.
XSTREAM_ITEMS = frozenset(
    {
        "null", "int", "long", "short", "byte", "char", "float", "double", "boolean", "big-int",
        "big-decimal", "string", "string-buffer", "string-builder", "java-class", "uuid",
        "sql-timestamp", "sql-time", "sql-date", "gregorian-calendar", "linked-list",
        "tree-map", "tree-set", "sorted-set", "hashtable", "linked-hash-map",
        "linked-hash-set", "empty-list", "empty-map", "empty-set", "singleton-list",
        "singleton-map", "singleton-set", "enum-set", "enum-map", "string-array", "int-array",
        "long-array",
    }
)  # fmt: skip
# Attributes by which XStream names a Java type, not a value.
_TYPE_ATTRIBUTES = frozenset({"class", "resolves-to", "defined-in"})


def _java_name(tag: str) -> str:
    """An XStream element name as the Java name: ``_-`` was ``$``, ``__`` was ``_``."""
    return tag.replace("_-", "$").replace("__", "_")


def xstream_json(element: ET.Element, *, root: bool = True) -> Any:
    """XStream's XML as JSON, by this rule:

    - the root element names the payload's class (or alias) and is dropped: its fields are
      the payload object (a payload that is not an object, say a ``<string>``, becomes
      ``{"value": ...}``); ``<meta-data>`` is a map (empty when it has no entries);
    - an element with text only is that text: XStream writes numbers, booleans and dates as
      text with no type, and they stay text (``"10"``, ``"true"``); ``<null/>`` is null;
    - an element whose children are all ``<entry>`` of two elements (a ``Map``) is an object
      of key text to value;
    - an element whose children are all named after a type, a JDK type alias no field can
      be mistaken for (``string``, ``long``, ``big-decimal``, ``null``..., see
      :data:`XSTREAM_ITEMS`) or a class name (with a ``.``), is a list (a ``Collection``);
    - any other element is an object of its children (a field named twice, an implicit
      collection, becomes a list); element names are decoded (``__`` is ``_``, ``_-`` ``$``);
    - the attributes by which XStream names a Java type (``class``, ``resolves-to``,
      ``defined-in``) are dropped; others (``reference`` to an object written earlier) are
      kept as ``"@name"`` keys (with the text under ``"#text"``).
    """
    value = _xml_value(element)
    if not root:
        return value if isinstance(value, dict) else {} if value == "" else {"value": value}
    return value if isinstance(value, dict) else {"value": value}


def _xml_value(element: ET.Element) -> Any:
    """One XStream element as JSON (the rule of :func:`xstream_json`)."""
    children = list(element)
    attributes = {
        f"@{_java_name(k)}": v for k, v in element.attrib.items() if k not in _TYPE_ATTRIBUTES
    }
    if not children:
        if element.tag == "null":
            return None
        text = element.text or ""
        return {**attributes, "#text": text} if attributes else text
    if all(child.tag == "entry" and len(child) == 2 for child in children):
        entries = {_key(child[0]): _xml_value(child[1]) for child in children}
        return {**attributes, **entries}
    if all(child.tag in XSTREAM_ITEMS or "." in child.tag for child in children):
        items = [_xml_value(child) for child in children]
        return {**attributes, "items": items} if attributes else items
    grouped: dict[str, list[Any]] = {}
    for child in children:
        grouped.setdefault(_java_name(child.tag), []).append(_xml_value(child))
    fields = {key: values[0] if len(values) == 1 else values for key, values in grouped.items()}
    return {**attributes, **fields}


def _key(element: ET.Element) -> str:
    """A map entry's key element as the object key: its text, else its JSON."""
    value = _xml_value(element)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


LAYOUT = AxonLayout
