"""Test data for the event store layouts: each system's tables made from its own published
DDL, and rows written the way that system writes them (its serialized forms, its timestamp
types, NULL where it leaves NULL).

None of these systems runs here (Ruby, .NET and Java are not on the machine), so each writer
below does what the cited upstream code does on append, statement for statement, against a
real PostgreSQL or SQLite database. The DDL is each project's own, rendered for the database
the way its migration tool renders it; the comment above each names the upstream file.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

import psycopg

T0 = datetime(2025, 3, 1, 9, 0, 0, tzinfo=UTC)


class Db:
    """A DB-API connection to write test rows with: PostgreSQL by URL or SQLite by path.
    Statements use ``?`` placeholders for both; each call commits."""

    def __init__(self, target: str) -> None:
        self.kind = "postgresql" if target.startswith("postgres") else "sqlite"
        self.con: Any = (
            psycopg.connect(target, autocommit=True)
            if self.kind == "postgresql"
            else sqlite3.connect(target.removeprefix("sqlite:///"), isolation_level=None)
        )

    def run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; its rows, if it returns any."""
        if self.kind == "postgresql":
            sql = sql.replace("?", "%s")
        cur = self.con.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []

    def script(self, ddl: str) -> None:
        """Run several statements (a DDL script)."""
        if self.kind == "postgresql":
            self.con.execute(ddl)
        else:
            self.con.executescript(ddl)

    def close(self) -> None:
        """Close the connection."""
        self.con.close()


def ruby_json(value: Any) -> str:
    """``JSON.dump`` of a Ruby hash: compact, non-ASCII kept as UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def ruby_yaml(value: Mapping[str, Any]) -> str:
    """``YAML.dump`` of a Ruby hash with symbol keys (RES's default serializer), for the flat
    hashes the tests use."""
    lines = ["---"]
    for key, item in value.items():
        text = json.dumps(item, ensure_ascii=False) if isinstance(item, str) else str(item)
        lines.append(f":{key}: {text}")
    return "\n".join(lines) + "\n"


# -- Rails Event Store -----------------------------------------------------------------------

# RailsEventStore/rails_event_store
#   ruby_event_store-active_record/lib/ruby_event_store/active_record/generators/templates/
#   postgres/create_event_store_events_template.erb (data_type json, jsonb or binary),
# as ActiveRecord's PostgreSQL adapter renders the migration.
RES_POSTGRES_DDL = """
CREATE TABLE "event_store_events" ("id" bigserial primary key, "event_id" uuid NOT NULL,
  "event_type" character varying NOT NULL, "metadata" {type}, "data" {type} NOT NULL,
  "created_at" timestamp(6) NOT NULL, "valid_at" timestamp(6));
CREATE UNIQUE INDEX "index_event_store_events_on_event_id" ON "event_store_events" ("event_id");
CREATE INDEX "index_event_store_events_on_event_type" ON "event_store_events" ("event_type");
CREATE INDEX "index_event_store_events_on_created_at" ON "event_store_events" ("created_at");
CREATE INDEX "index_event_store_events_on_valid_at" ON "event_store_events" ("valid_at");
CREATE INDEX "index_event_store_events_on_as_of" ON "event_store_events"
  (COALESCE(valid_at, created_at));
CREATE TABLE "event_store_events_in_streams" ("id" bigserial primary key,
  "stream" character varying NOT NULL, "position" integer, "event_id" uuid NOT NULL,
  "created_at" timestamp(6) NOT NULL,
  CONSTRAINT "fk_rails_c8d52b5857" FOREIGN KEY ("event_id")
    REFERENCES "event_store_events" ("event_id"));
CREATE INDEX "index_event_store_events_in_streams_on_event_id"
  ON "event_store_events_in_streams" ("event_id");
CREATE INDEX "index_event_store_events_in_streams_on_created_at"
  ON "event_store_events_in_streams" ("created_at");
CREATE UNIQUE INDEX "index_event_store_events_in_streams_on_stream_and_position"
  ON "event_store_events_in_streams" ("stream", "position");
CREATE UNIQUE INDEX "index_event_store_events_in_streams_on_stream_and_event_id"
  ON "event_store_events_in_streams" ("stream", "event_id");
CREATE INDEX "index_event_store_events_in_streams_on_stream_and_id"
  ON "event_store_events_in_streams" ("stream", "id");
"""

# RailsEventStore/rails_event_store
#   ruby_event_store-active_record/lib/ruby_event_store/active_record/generators/templates/
#   create_event_store_events_template.erb (SQLite: binary columns only),
# as ActiveRecord's SQLite3 adapter renders the migration.
RES_SQLITE_DDL = """
CREATE TABLE "event_store_events" ("id" integer PRIMARY KEY AUTOINCREMENT NOT NULL,
  "event_id" varchar(36) NOT NULL, "event_type" varchar NOT NULL, "metadata" blob,
  "data" blob NOT NULL, "created_at" datetime(6) NOT NULL, "valid_at" datetime(6));
CREATE UNIQUE INDEX "index_event_store_events_on_event_id" ON "event_store_events" ("event_id");
CREATE INDEX "index_event_store_events_on_event_type" ON "event_store_events" ("event_type");
CREATE INDEX "index_event_store_events_on_created_at" ON "event_store_events" ("created_at");
CREATE INDEX "index_event_store_events_on_valid_at" ON "event_store_events" ("valid_at");
CREATE INDEX "index_event_store_events_on_as_of" ON "event_store_events"
  (COALESCE(valid_at, created_at));
CREATE TABLE "event_store_events_in_streams" ("id" integer PRIMARY KEY AUTOINCREMENT NOT NULL,
  "stream" varchar NOT NULL, "position" integer DEFAULT NULL, "event_id" varchar(36) NOT NULL,
  "created_at" datetime(6) NOT NULL,
  CONSTRAINT "fk_rails_c8d52b5857" FOREIGN KEY ("event_id")
    REFERENCES "event_store_events" ("event_id"));
CREATE INDEX "index_event_store_events_in_streams_on_event_id"
  ON "event_store_events_in_streams" ("event_id");
CREATE UNIQUE INDEX "index_event_store_events_in_streams_on_stream_and_position"
  ON "event_store_events_in_streams" ("stream", "position");
CREATE UNIQUE INDEX "index_event_store_events_in_streams_on_stream_and_event_id"
  ON "event_store_events_in_streams" ("stream", "event_id");
"""


@dataclass
class ResEvent:
    """An event as RES's ``Record`` holds it before the repository serializes it."""

    event_type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    timestamp: datetime
    valid_at: datetime | None = None
    event_id: str = ""

    def __post_init__(self) -> None:
        self.event_id = self.event_id or str(uuid.uuid4())


class RailsEventStore:
    """Writes as ``RubyEventStore::ActiveRecord::EventRepository`` does
    (ruby_event_store-active_record/lib/ruby_event_store/active_record/event_repository.rb):
    ``append_to_stream`` inserts the events then one ``event_store_events_in_streams`` row per
    event in the same transaction (none for the global stream); ``link_to_stream`` adds rows
    for events already stored; ``valid_at`` is NULL when it equals ``created_at``; positions
    are NULL for ``expected_version: :any``. ``serializer`` is ``json`` (``JSONClient`` and
    ``serializer: JSON``) or ``yaml`` (the default ``Client``)."""

    def __init__(
        self, db: Db, *, data_type: str = "jsonb", serializer: str = "json", zoned: bool = False
    ) -> None:
        self.db = db
        self.data_type = data_type
        self.serializer = serializer
        self.zoned = zoned  # Rails 7's datetime_type = :timestamptz

    def create(self) -> None:
        """Create RES's two tables (the migration for this database and data type)."""
        if self.db.kind == "postgresql":
            ddl = RES_POSTGRES_DDL.format(
                type={"binary": "bytea"}.get(self.data_type, self.data_type)
            )
            self.db.script(ddl.replace("timestamp(6)", "timestamptz(6)") if self.zoned else ddl)
        else:
            self.db.script(RES_SQLITE_DDL)

    def _dump(self, value: dict[str, Any]) -> Any:
        text = ruby_json(value) if self.serializer == "json" else ruby_yaml(value)
        if self.data_type == "binary" or self.db.kind == "sqlite":
            return text.encode()
        return text

    def _time(self, moment: datetime) -> Any:
        # ActiveRecord writes UTC wall time into a column without a zone; SQLite gets its text.
        naive = moment.astimezone(UTC).replace(tzinfo=None)
        if self.zoned:
            return moment
        return (
            naive.isoformat(sep=" ", timespec="microseconds") if self.db.kind == "sqlite" else naive
        )

    def _last_position(self, stream: str) -> int:
        rows = self.db.run(
            "SELECT position FROM event_store_events_in_streams WHERE stream = ? "
            "ORDER BY position DESC NULLS LAST, id DESC LIMIT 1"
            if self.db.kind == "postgresql"
            else "SELECT position FROM event_store_events_in_streams WHERE stream = ? "
            "ORDER BY position IS NULL, position DESC, id DESC LIMIT 1",
            (stream,),
        )
        return -1 if not rows or rows[0][0] is None else int(rows[0][0])

    def publish(
        self, events: Iterable[ResEvent], stream: str | None, *, any_version: bool = False
    ) -> list[ResEvent]:
        """``append_to_stream``: the events and, unless ``stream`` is None (the global stream),
        their links, in one transaction."""
        events = list(events)
        self.db.run("BEGIN")
        for event in events:
            valid_at = None if event.valid_at in (None, event.timestamp) else event.valid_at
            self.db.run(
                "INSERT INTO event_store_events (event_id, event_type, metadata, data, "
                "created_at, valid_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    event.event_id,
                    event.event_type,
                    self._dump(event.metadata),
                    self._dump(event.data),
                    self._time(event.timestamp),
                    None if valid_at is None else self._time(valid_at),
                ),
            )
        if stream is not None:
            self._add(stream, [e.event_id for e in events], any_version=any_version)
        self.db.run("COMMIT")
        return events

    def link(self, event_ids: Sequence[str], stream: str, *, any_version: bool = False) -> None:
        """``link_to_stream``: link stored events into ``stream``."""
        self.db.run("BEGIN")
        self._add(stream, event_ids, any_version=any_version)
        self.db.run("COMMIT")

    def _add(self, stream: str, event_ids: Sequence[str], *, any_version: bool) -> None:
        last = self._last_position(stream)
        now = datetime.now(UTC)
        for index, event_id in enumerate(event_ids):
            self.db.run(
                "INSERT INTO event_store_events_in_streams (stream, position, event_id, "
                "created_at) VALUES (?, ?, ?, ?)",
                (stream, None if any_version else last + 1 + index, event_id, self._time(now)),
            )


def res_events(n: int, *, start: int = 0, kind: str = "Orders::OrderPlaced") -> list[ResEvent]:
    """``n`` events as a JSONClient app writes them: data with string keys, metadata with
    the request's ids and PreserveTypes' ``types``; some with a ``valid_at`` of their own."""
    out = []
    for i in range(start, start + n):
        stamp = T0 + timedelta(minutes=i, microseconds=123456)
        out.append(
            ResEvent(
                event_type=kind,
                data={
                    "order_id": f"o-{i}",
                    "amount": i * 2.5,
                    "note": f"Zoë {i}",
                    "lines": [i, i + 1],
                },
                metadata={
                    "correlation_id": str(uuid.UUID(int=i + 1)),
                    "request_id": f"req-{i}",
                    "remote_ip": "127.0.0.1",
                    "types": {
                        "data": {"order_id": ["Symbol", "String"], "amount": ["Symbol", "Float"]},
                        "metadata": {"correlation_id": ["Symbol", "String"]},
                    },
                },
                timestamp=stamp,
                valid_at=stamp - timedelta(days=1) if i % 4 == 1 else None,
            )
        )
    return out


# -- Marten ----------------------------------------------------------------------------------

# JasperFx/marten src/Marten/Events/Schema/StreamsTable.cs and EventsTable.cs (with the columns
# of SequenceColumn.cs, StreamIdColumn.cs, VersionColumn.cs, EventJsonDataColumn.cs,
# EventBdataColumn.cs, EventTypeColumn.cs, Storage/Metadata/TenantIdColumn.cs,
# DotNetTypeColumn.cs, CorrelationIdColumn.cs, CausationIdColumn.cs, HeadersColumn.cs and
# Events/Archiving/IsArchivedColumn.cs), as Weasel renders them for the default single-tenant
# store with the optional metadata columns enabled (Events.MetadataConfig.EnableAll()).
MARTEN_DDL = """
CREATE SEQUENCE {schema}.mt_events_sequence;
CREATE TABLE {schema}.mt_streams (
    id                  {id_type}                   NOT NULL,
    type                varchar                     NULL,
    version             bigint                      NULL,
    timestamp           timestamptz                 NOT NULL DEFAULT (now()),
    created             timestamptz                 NOT NULL DEFAULT (now()),
    tenant_id           varchar                     NULL DEFAULT '*DEFAULT*',
    is_archived         bool                        NULL DEFAULT FALSE,
CONSTRAINT pkey_mt_streams_id PRIMARY KEY (id)
);
CREATE TABLE {schema}.mt_events (
    seq_id              bigint                      NOT NULL,
    id                  uuid                        NOT NULL,
    stream_id           {id_type}                   NULL,
    version             bigint                      NOT NULL,
    data                jsonb                       NOT NULL,
    bdata               bytea                       NULL,
    type                varchar(500)                NOT NULL,
    timestamp           timestamptz                 NOT NULL DEFAULT (now()),
    tenant_id           varchar                     NULL DEFAULT '*DEFAULT*',
    mt_dotnet_type      varchar                     NULL,
    correlation_id      varchar                     NULL,
    causation_id        varchar                     NULL,
    headers             jsonb                       NULL,
    is_archived         bool                        NULL DEFAULT FALSE,
CONSTRAINT pkey_mt_events_seq_id PRIMARY KEY (seq_id),
CONSTRAINT fkey_mt_events_stream_id FOREIGN KEY(stream_id)
    REFERENCES {schema}.mt_streams(id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX pk_mt_events_stream_and_version ON {schema}.mt_events
    USING btree (stream_id, version);
"""

# The same two tables under conjoined tenancy (Events.TenancyStyle = Conjoined): tenant_id
# first in mt_streams' key, and mt_events keyed to its stream by (tenant_id, stream_id), as
# the TenancyStyle.Conjoined branches of StreamsTable.cs and EventsTable.cs make them.
MARTEN_CONJOINED_DDL = """
CREATE SEQUENCE {schema}.mt_events_sequence;
CREATE TABLE {schema}.mt_streams (
    tenant_id           varchar                     NOT NULL DEFAULT '*DEFAULT*',
    id                  {id_type}                   NOT NULL,
    type                varchar                     NULL,
    version             bigint                      NULL,
    timestamp           timestamptz                 NOT NULL DEFAULT (now()),
    created             timestamptz                 NOT NULL DEFAULT (now()),
    is_archived         bool                        NULL DEFAULT FALSE,
CONSTRAINT pkey_mt_streams_tenant_id_id PRIMARY KEY (tenant_id, id)
);
CREATE TABLE {schema}.mt_events (
    seq_id              bigint                      NOT NULL,
    id                  uuid                        NOT NULL,
    stream_id           {id_type}                   NULL,
    version             bigint                      NOT NULL,
    data                jsonb                       NOT NULL,
    bdata               bytea                       NULL,
    type                varchar(500)                NOT NULL,
    timestamp           timestamptz                 NOT NULL DEFAULT (now()),
    tenant_id           varchar                     NULL DEFAULT '*DEFAULT*',
    mt_dotnet_type      varchar                     NULL,
    correlation_id      varchar                     NULL,
    causation_id        varchar                     NULL,
    headers             jsonb                       NULL,
    is_archived         bool                        NULL DEFAULT FALSE,
CONSTRAINT pkey_mt_events_seq_id PRIMARY KEY (seq_id),
CONSTRAINT fkey_mt_events_stream_id_tenant_id FOREIGN KEY(tenant_id, stream_id)
    REFERENCES {schema}.mt_streams(tenant_id, id)
);
CREATE UNIQUE INDEX pk_mt_events_stream_and_version ON {schema}.mt_events
    USING btree (tenant_id, stream_id, version);
"""


# mt_events under UseTenantPartitionedEvents (EventsTable.cs: tenant_id joins seq_id in the key
# and the table is LIST-partitioned by tenant_id; one partition per tenant, made as tenants
# join; QuickAppendEventFunction.cs draws seq_id from mt_events_sequence_{tenant}).
MARTEN_TENANT_PARTITIONED_DDL = """
CREATE TABLE {schema}.mt_streams (
    tenant_id varchar NOT NULL DEFAULT '*DEFAULT*', id uuid NOT NULL, type varchar NULL,
    version bigint NULL, timestamp timestamptz NOT NULL DEFAULT (now()),
    created timestamptz NOT NULL DEFAULT (now()), is_archived bool NULL DEFAULT FALSE,
CONSTRAINT pkey_mt_streams_tenant_id_id PRIMARY KEY (tenant_id, id)
) PARTITION BY LIST (tenant_id);
CREATE TABLE {schema}.mt_events (
    seq_id bigint NOT NULL, id uuid NOT NULL, stream_id uuid NULL, version bigint NOT NULL,
    data jsonb NOT NULL, bdata bytea NULL, type varchar(500) NOT NULL,
    timestamp timestamptz NOT NULL DEFAULT (now()),
    tenant_id varchar NOT NULL DEFAULT '*DEFAULT*', mt_dotnet_type varchar NULL,
    is_archived bool NULL DEFAULT FALSE,
CONSTRAINT pkey_mt_events_seq_id_tenant_id PRIMARY KEY (seq_id, tenant_id)
) PARTITION BY LIST (tenant_id);
"""


class Marten:
    """Writes as Marten's append path does (QuickAppendEventFunction.cs /
    Events/Operations): the stream row is inserted or its version raised, then each event
    takes ``nextval('mt_events_sequence')`` as ``seq_id``, the next stream ``version``, its
    type alias (``order_placed``), ``mt_dotnet_type`` (``Namespace.Type, Assembly``), and
    ``now()`` unless a timestamp is given. ``ArchiveStream`` sets ``is_archived`` on the
    stream and on its events."""

    def __init__(
        self, db: Db, *, schema: str = "public", string_ids: bool = False, conjoined: bool = False
    ) -> None:
        self.db = db
        self.schema = schema
        self.string_ids = string_ids
        self.conjoined = conjoined

    def create(self) -> None:
        if self.schema != "public":
            self.db.script(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        ddl = MARTEN_CONJOINED_DDL if self.conjoined else MARTEN_DDL
        self.db.script(
            ddl.format(schema=self.schema, id_type="varchar" if self.string_ids else "uuid")
        )

    def append(
        self,
        stream: str,
        events: Sequence[tuple[str, dict[str, Any]]],
        *,
        stream_type: str | None = "order",
        tenant: str = "*DEFAULT*",
        at: datetime | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        headers: dict[str, Any] | None = None,
    ) -> list[int]:
        """Append ``events`` (type alias, data) to ``stream`` of ``tenant``, starting it if new;
        their seq_ids."""
        s = self.schema
        self.db.run("BEGIN")
        rows = self.db.run(
            f"SELECT version FROM {s}.mt_streams WHERE id = ? AND tenant_id = ?", (stream, tenant)
        )
        version = int(rows[0][0]) if rows else 0
        if rows:
            self.db.run(
                f"UPDATE {s}.mt_streams SET version = ?, timestamp = now() "
                "WHERE id = ? AND tenant_id = ?",
                (version + len(events), stream, tenant),
            )
        else:
            self.db.run(
                f"INSERT INTO {s}.mt_streams (id, type, version, tenant_id) VALUES (?, ?, ?, ?)",
                (stream, stream_type, len(events), tenant),
            )
        seqs = []
        for offset, (alias, data) in enumerate(events):
            dotnet = "Shop.Orders." + "".join(p.title() for p in alias.split("_")) + ", Shop"
            seqs.append(
                self.db.run(
                    f"INSERT INTO {s}.mt_events (seq_id, id, stream_id, version, data, type, "
                    "timestamp, tenant_id, mt_dotnet_type, correlation_id, causation_id, headers)"
                    f" VALUES (nextval('{s}.mt_events_sequence'), ?, ?, ?, ?, ?, "
                    "COALESCE(?, now()), ?, ?, ?, ?, ?) RETURNING seq_id",
                    (
                        uuid.uuid4(),
                        stream,
                        version + offset + 1,
                        json.dumps(data),
                        alias,
                        at,
                        tenant,
                        dotnet,
                        correlation_id,
                        causation_id,
                        None if headers is None else json.dumps(headers),
                    ),
                )[0][0]
            )
        self.db.run("COMMIT")
        return seqs

    def archive(self, stream: str) -> None:
        """``session.Events.ArchiveStream(id)`` (Marten's mt_archive_stream function)."""
        s = self.schema
        self.db.run(f"UPDATE {s}.mt_streams SET is_archived = TRUE WHERE id = ?", (stream,))
        self.db.run(f"UPDATE {s}.mt_events SET is_archived = TRUE WHERE stream_id = ?", (stream,))


# -- Axon Framework --------------------------------------------------------------------------

# AxonFramework/AxonFramework (branch axon-4.11.x)
#   eventsourcing/src/main/java/org/axonframework/eventsourcing/eventstore/jdbc/
#   AbstractEventTableFactory.java createDomainEventTable with PostgresEventTableFactory.java
#   (BIGSERIAL, bytea) and EventSchema.java's default names (unquoted, so PostgreSQL folds them
#   to lower case: domainevententry, globalindex ...).
AXON_JDBC_DDL = """
CREATE TABLE IF NOT EXISTS DomainEventEntry (
globalIndex BIGSERIAL NOT NULL,
aggregateIdentifier VARCHAR(255) NOT NULL,
sequenceNumber BIGINT NOT NULL,
type VARCHAR(255),
eventIdentifier VARCHAR(255) NOT NULL,
metaData bytea,
payload bytea NOT NULL,
payloadRevision VARCHAR(255),
payloadType VARCHAR(255) NOT NULL,
timeStamp  VARCHAR(255) NOT NULL  ,
PRIMARY KEY (globalIndex),
UNIQUE (aggregateIdentifier, sequenceNumber),
UNIQUE (eventIdentifier)
)
"""

# AxonFramework/AxonFramework (branch axon-4.11.x) the JPA entity
#   eventsourcing/src/main/java/org/axonframework/eventsourcing/eventstore/jpa/DomainEventEntry.java
#   (with messaging/.../eventhandling/AbstractEventEntry.java, AbstractDomainEventEntry.java and
#   AbstractSequencedDomainEventEntry.java), with its sibling jpa/SnapshotEventEntry.java
#   (snapshots, which have no global index and are no events), as Hibernate 6 generates them
#   for PostgreSQL under
#   Spring Boot's snake_case naming, with the @Lob columns mapped to bytea as Axon's reference
#   guide advises for PostgreSQL (Hibernate's own default there is oid; see {lob}).
AXON_JPA_DDL = """
create sequence domain_event_entry_seq start with 1 increment by 50;
create table domain_event_entry (
    global_index bigint not null,
    aggregate_identifier varchar(255) not null,
    event_identifier varchar(255) not null unique,
    meta_data {lob},
    payload {lob} not null,
    payload_revision varchar(255),
    payload_type varchar(255) not null,
    sequence_number bigint not null,
    time_stamp varchar(255) not null,
    type varchar(255),
    primary key (global_index),
    constraint uk8s1f994p4la2ipb13me2xqm1w unique (aggregate_identifier, sequence_number)
);
create table snapshot_event_entry (
    aggregate_identifier varchar(255) not null,
    sequence_number bigint not null,
    type varchar(255) not null,
    event_identifier varchar(255) not null unique,
    meta_data {lob},
    payload {lob} not null,
    payload_revision varchar(255),
    payload_type varchar(255) not null,
    time_stamp varchar(255) not null,
    primary key (aggregate_identifier, sequence_number, type)
);
"""

# The same JPA entity on SQLite (Hibernate's community SQLite dialect): no sequences, an
# integer key, blobs.
AXON_SQLITE_DDL = """
create table domain_event_entry (
    global_index integer primary key autoincrement,
    aggregate_identifier varchar(255) not null,
    event_identifier varchar(255) not null unique,
    meta_data blob,
    payload blob not null,
    payload_revision varchar(255),
    payload_type varchar(255) not null,
    sequence_number bigint not null,
    time_stamp varchar(255) not null,
    type varchar(255),
    unique (aggregate_identifier, sequence_number)
);
"""


def axon_instant(moment: datetime) -> str:
    """``DateTimeUtils.formatInstant``: ISO instant in UTC with exactly three fraction digits
    (messaging/src/main/java/org/axonframework/common/DateTimeUtils.java)."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text[:-3] + "Z"


def xstream_value(name: str, value: Any) -> str:
    """One field as XStream marshals it: scalars as text, nested objects as elements, lists
    as elements named after their items' types, a null field left out."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return f"<{name}>{str(value).lower()}</{name}>"
    if isinstance(value, dict):
        inner = "".join(xstream_value(k, v) for k, v in value.items())
        return f"<{name}>{inner}</{name}>"
    if isinstance(value, list):
        items = "".join(
            xstream_value(
                "string" if isinstance(v, str) else "long" if isinstance(v, int) else "double", v
            )
            for v in value
        )
        return f"<{name}>{items}</{name}>"
    return f"<{name}>{escape(str(value))}</{name}>"


def xstream(payload_type: str, data: Mapping[str, Any]) -> str:
    """A payload as ``XStreamSerializer`` writes it: the root element is the class name (an
    inner class's ``$`` written ``_-``), each field an element."""
    root = payload_type.replace("$", "_-")
    return f"<{root}>" + "".join(xstream_value(k, v) for k, v in data.items()) + f"</{root}>"


def xstream_metadata(meta: Mapping[str, str]) -> str:
    """``MetaData`` through AbstractXStreamSerializer's MetaDataConverter (a MapConverter
    under the alias ``meta-data``), empty metadata as an empty element."""
    if not meta:
        return "<meta-data/>"
    entries = "".join(
        f"<entry><string>{escape(k)}</string><string>{escape(v)}</string></entry>"
        for k, v in meta.items()
    )
    return f"<meta-data>{entries}</meta-data>"


@dataclass(frozen=True)
class AxonNames:
    """Column names of one of Axon's two schemas."""

    table: str
    global_index: str
    aggregate_identifier: str
    sequence_number: str
    type: str
    event_identifier: str
    meta_data: str
    payload: str
    payload_revision: str
    payload_type: str
    time_stamp: str


JPA = AxonNames(
    "domain_event_entry", "global_index", "aggregate_identifier", "sequence_number", "type",
    "event_identifier", "meta_data", "payload", "payload_revision", "payload_type", "time_stamp",
)  # fmt: skip
JDBC = AxonNames(
    "domainevententry", "globalindex", "aggregateidentifier", "sequencenumber", "type",
    "eventidentifier", "metadata", "payload", "payloadrevision", "payloadtype", "timestamp",
)  # fmt: skip


class Axon:
    """Writes as ``JdbcEventStorageEngine.appendEvents`` / the JPA engine do: one row per
    event with its aggregate's identifier, type and sequence number, the event identifier
    (a random UUID), ``formatInstant`` time text, the payload class name and revision, and
    payload and metadata serialized by Jackson (JSON bytes) or XStream (XML bytes). Events
    that no aggregate applied get the event identifier as aggregate identifier, sequence 0
    and no type, as Axon stores them. ``schema`` is ``jpa`` or ``jdbc``."""

    def __init__(
        self, db: Db, *, schema: str = "jpa", serializer: str = "jackson", lob: str = "bytea"
    ) -> None:
        self.db = db
        self.names = JPA if schema == "jpa" else JDBC
        self.schema = schema
        self.serializer = serializer
        self.lob = lob  # "oid": Hibernate's own mapping of @Lob on PostgreSQL (large objects)
        self._block: list[int] = []

    def create(self) -> None:
        if self.db.kind == "sqlite":
            self.db.script(AXON_SQLITE_DDL)
        elif self.schema == "jpa":
            self.db.script(AXON_JPA_DDL.format(lob=self.lob))
        else:
            self.db.script(AXON_JDBC_DDL)

    def _next_index(self) -> int | None:
        if self.db.kind == "sqlite" or self.schema == "jdbc":
            return None
        # Hibernate's pooled optimizer: one nextval hands out a block of 50 ids.
        if not self._block:
            top = int(self.db.run("SELECT nextval('domain_event_entry_seq')")[0][0])
            self._block = list(range(top, top + 50))
        return self._block.pop(0)

    def serialize(self, payload_type: str, data: Mapping[str, Any]) -> bytes:
        """A payload as the configured serializer writes it."""
        if self.serializer == "jackson":
            return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        return xstream(payload_type, data).encode()

    def serialize_meta(self, meta: Mapping[str, str]) -> bytes:
        """MetaData as the configured serializer writes it."""
        if self.serializer == "jackson":
            return json.dumps(meta, separators=(",", ":")).encode()
        return xstream_metadata(meta).encode()

    def publish(
        self,
        aggregate: str | None,
        events: Sequence[tuple[str, dict[str, Any]]],
        *,
        aggregate_type: str | None = "GiftCard",
        at: datetime | None = None,
        meta: Mapping[str, str] | None = None,
        revision: str | None = None,
        raw_payload: bytes | None = None,
    ) -> list[str]:
        """``appendEvents`` of ``events`` (payload type, data) by ``aggregate`` (None: no
        aggregate); their identifiers. ``raw_payload`` writes those bytes as every payload."""
        n = self.names
        self.db.run("BEGIN")
        start = 0
        if aggregate is not None:
            rows = self.db.run(
                f"SELECT MAX({n.sequence_number}) FROM {n.table} WHERE {n.aggregate_identifier} = ?",
                (aggregate,),
            )
            start = 0 if rows[0][0] is None else int(rows[0][0]) + 1
        ids = []
        for offset, (payload_type, data) in enumerate(events):
            event_id = str(uuid.uuid4())
            moment = at or datetime.now(UTC)
            values: list[Any] = [
                aggregate or event_id,
                start + offset if aggregate is not None else 0,
                aggregate_type if aggregate is not None else None,
                event_id,
                self.serialize_meta(
                    meta if meta is not None else {"traceId": event_id, "correlationId": event_id}
                ),
                raw_payload if raw_payload is not None else self.serialize(payload_type, data),
                revision,
                payload_type,
                axon_instant(moment),
            ]
            columns = [
                n.aggregate_identifier, n.sequence_number, n.type, n.event_identifier,
                n.meta_data, n.payload, n.payload_revision, n.payload_type, n.time_stamp,
            ]  # fmt: skip
            index = self._next_index()
            if index is not None:
                columns.insert(0, n.global_index)
                values.insert(0, index)
            marks = ", ".join(
                "lo_from_bytea(0, ?)"
                if self.lob == "oid" and c in (n.meta_data, n.payload)
                else "?"
                for c in columns
            )
            self.db.run(f"INSERT INTO {n.table} ({', '.join(columns)}) VALUES ({marks})", values)
            ids.append(event_id)
        self.db.run("COMMIT")
        return ids
