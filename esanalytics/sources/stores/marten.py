"""Marten (.NET, PostgreSQL): ``mt_events``, with ``mt_streams`` for each stream's type.

The tables are those Marten's schema code makes (JasperFx/marten,
src/Marten/Events/Schema/EventsTable.cs and StreamsTable.cs), in any PostgreSQL schema
(``--schema marten:SCHEMA.mt_events`` picks one when several hold them); stream ids may be
GUIDs (``uuid``, Marten's default) or strings (``StreamIdentity.AsString``, ``varchar``).

How a row becomes an event:

- position and cursor: ``seq_id`` (``mt_events_sequence``, the order Marten's async daemon
  reads); the row is ``mt_events#SEQ_ID``.
- event id: ``id`` (Marten's UUID); event type: ``type`` (Marten's alias, ``order_placed``),
  the .NET type in ``metadata.dotnet_type``.
- stream: ``stream_id`` for the default tenant (``*DEFAULT*``); ``TENANT/STREAM_ID`` for any
  other, since under conjoined tenancy two tenants may hold streams of the same id, which
  the lake must not fold into one. ``metadata.tenant_id`` always says the tenant.
- times: ``timestamp`` (when Marten appended the event) is both ``occurred_at`` and
  ``recorded_at``.
- data: ``data`` (jsonb). An event Marten stored with a binary serializer (``bdata`` set,
  ``data`` the ``{}`` placeholder) is refused naming the row.
- metadata: ``tenant_id``, ``correlation_id``, ``causation_id``, ``headers`` and
  ``user_name`` when those columns exist and hold a value, ``dotnet_type``,
  ``archived: true`` for an archived event, ``source_version`` (the stream ``version``) and
  ``source_position`` (``seq_id``).
- category: the stream's aggregate type (``mt_streams.type``, ``.`` for namespaces), else
  ``marten``.
- archived streams: imported like any other (archiving in Marten is a storage choice, the
  events stay facts), marked ``archived``. A stream archived after the import read its events
  is not marked: archiving updates rows in place and does not move ``seq_id``, so the cursor
  does not see it. Events moved to an archive partition keep their ``seq_id`` and are read.
- refused: tenant-partitioned event tables (``UseTenantPartitionedEvents``), where every
  tenant has its own sequence and ``seq_id`` is no global order (an error says so; archive
  partitioning is read).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import pyarrow as pa

from esanalytics.exceptions import SourceError
from esanalytics.sources.stores.serialized import (
    choose_table,
    event_line,
    safe_category,
    schema_of,
    unreadable,
)

__all__ = ["LAYOUT", "MartenLayout"]

EVENTS = "mt_events"
STREAMS = "mt_streams"
DEFAULT_TENANT = "*DEFAULT*"
_EVENT_COLUMNS = {"seq_id", "id", "stream_id", "version", "data", "type", "timestamp"}
_OPTIONAL = ("tenant_id", "mt_dotnet_type", "correlation_id", "causation_id", "headers",
             "user_name", "is_archived", "bdata")  # fmt: skip


class MartenLayout:
    """The layout of Marten's event store tables (see the module)."""

    name: ClassVar[str] = "marten"
    # where each part of the event comes from, as `esa import` prints the mapping
    origins: ClassVar[dict[str, str]] = {
        "stream_id": "stream_id (TENANT/ID outside the default tenant)",
        "event_type": "type",
        "event_id": "id",
        "occurred_at": "timestamp",
        "recorded_at": "timestamp",
        "data": "data",
        "metadata": "correlation_id, causation_id, headers, tenant_id, mt_dotnet_type, version",
        "category": "mt_streams.type",
    }

    def __init__(self, columns: Mapping[str, set[str]], table: str | None) -> None:
        """The one ``mt_events`` table of the database (``table`` picks one of several)."""
        tables = [t for t in columns if self._is_events(t, columns)]
        self.table = choose_table("marten", "Marten events table", tables, table)
        self.position = "seq_id"
        self.streams = schema_of(self.table) + STREAMS
        self.optional = [c for c in _OPTIONAL if c in columns[self.table]]
        self.stream_types = "type" in columns.get(self.streams, set())
        self._checked = False

    def _refuse_tenant_partitions(self, db: Any) -> None:
        """Refuse ``mt_events`` partitioned by tenant (``UseTenantPartitionedEvents``): every
        tenant draws its ``seq_id`` from a sequence of its own, so there is no global order
        to follow, and reading by ``seq_id`` would miss events."""
        schema, _, name = (part.replace("'", "''") for part in self.table.rpartition("."))
        where = f"'{schema}'" if schema else "current_schema()"
        key = db.query(
            "SELECT pg_get_partkeydef(c.oid) AS k FROM pg_class c JOIN pg_namespace n "
            f"ON n.oid = c.relnamespace WHERE c.relname = '{name}' AND n.nspname = {where}"
        )["k"].to_pylist()
        if key and key[0] and "tenant_id" in key[0]:
            raise SourceError(
                f"{self.table} is partitioned by tenant (Marten's UseTenantPartitionedEvents): "
                "each tenant numbers its events with a sequence of its own, so seq_id is no "
                "order esa can import by.",
                hint="esa reads Marten event tables with one sequence (the default, conjoined "
                "tenancy without per-tenant partitions, or archive partitioning); export these "
                "events through Marten (FetchStreamAsync or a subscription writing JSON lines) "
                "and import the file.",
                source=None,
                where=None,
            )

    @staticmethod
    def _is_events(table: str, columns: Mapping[str, set[str]]) -> bool:
        """Whether ``table`` is a Marten ``mt_events``."""
        return table.rsplit(".", 1)[-1] == EVENTS and columns[table] >= _EVENT_COLUMNS

    @classmethod
    def found(cls, columns: Mapping[str, set[str]]) -> bool:
        """Whether some schema holds Marten's ``mt_events``."""
        return any(cls._is_events(t, columns) for t in columns)

    def select(self, db: Any, where: str, limit: int) -> str:
        """The events after the cursor, with their stream's type and the optional columns."""
        if db.kind != "postgresql":
            raise SourceError(
                "Marten keeps its events in PostgreSQL only; this is a SQLite database.",
                hint="give the PostgreSQL database Marten writes to: postgresql://USER@HOST/DB.",
                source=None,
                where=None,
            )
        if not self._checked:
            self._refuse_tenant_partitions(db)
            self._checked = True
        e, s = db.quote(self.table), db.quote(self.streams)
        extra = "".join(
            f", {e}.bdata IS NOT NULL AS bdata" if c == "bdata" else f", {e}.{c}::text AS {c}"
            for c in self.optional
        )
        tenant = f" AND s.tenant_id = {e}.tenant_id" if "tenant_id" in self.optional else ""
        stream_type = (
            f"(SELECT s.type FROM {s} s WHERE s.id = {e}.stream_id{tenant} LIMIT 1)"
            if self.stream_types
            else "NULL"
        )
        return (
            f"SELECT {e}.seq_id AS position, {e}.id::text AS event_id, "
            f"{e}.stream_id::text AS stream_id, {e}.version AS version, {e}.data::text AS data, "
            f"{e}.type AS type, to_char({e}.timestamp AT TIME ZONE 'UTC', "
            '\'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"\') AS at, '
            f"{stream_type} AS stream_type{extra} "
            f"FROM {e} WHERE {where} ORDER BY {e}.seq_id LIMIT {int(limit)}"
        )

    def rows(self, con: Any, batch: pa.Table) -> pa.Array:
        """Each row as an event line (see the module)."""
        lines = []
        for row in batch.to_pylist():
            if row.get("bdata"):
                raise unreadable(
                    f"{self.table}#{row['position']}",
                    "payload",
                    "binary",
                    hint="Marten stored this event with a binary serializer (its bytes in "
                    "mt_events.bdata, data the {} placeholder), which esa cannot decode: read "
                    "such events through Marten and import an export of them, or store the "
                    "event type as JSON.",
                )
            tenant = row.get("tenant_id") or DEFAULT_TENANT
            stream = row["stream_id"]
            if stream is not None and tenant != DEFAULT_TENANT:
                stream = f"{tenant}/{stream}"
            headers = row.get("headers")
            metadata: dict[str, Any] = {
                "tenant_id": tenant,
                "correlation_id": row.get("correlation_id"),
                "causation_id": row.get("causation_id"),
                "headers": json.loads(headers) if headers else None,
                "user_name": row.get("user_name"),
                "dotnet_type": row.get("mt_dotnet_type"),
            }
            lines.append(
                event_line(
                    event_id=row["event_id"],
                    stream_id=stream,
                    event_type=row["type"],
                    occurred_at=row["at"],
                    recorded_at=row["at"],
                    category=safe_category(row["stream_type"], "marten"),
                    data=row["data"],
                    metadata={k: v for k, v in metadata.items() if v is not None},
                    extras={
                        "archived": True if row.get("is_archived") == "true" else None,
                        "source_version": row["version"],
                        "source_position": row["position"],
                    },
                )
            )
        return pa.array(lines, pa.string())


LAYOUT = MartenLayout
