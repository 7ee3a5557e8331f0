"""Marten's ``mt_events`` imported, against plain SQL reading the same tables.

The tables are Marten's own (``tests/sources/stores_data.py`` cites the schema code), in a
real PostgreSQL, written as Marten's append path writes them. Then re-runs, growth, tenants
(conjoined tenancy: one stream id in two tenants), archived streams, binary events, a row
with no stream id, and two Marten schemas in one database.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import esanalytics as esa
from esanalytics.exceptions import SourceError
from esanalytics.sources.importer import rejects_path
from tests.conftest import log_bytes, run_esa
from tests.sources.stores_data import MARTEN_TENANT_PARTITIONED_DDL, T0, Db, Marten
from tests.sources.test_file_sources import events_of

KINDS = ["order_placed", "order_paid", "order_shipped"]


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Db]:
    """A connection to a fresh PostgreSQL database, to write Marten's rows with."""
    db = Db(postgres_url)
    yield db
    db.close()


def plain_reading(url: str, schema: str = "public") -> list[dict[str, Any]]:
    """The events the tables hold, by plain SQL, with the layout's rules written out again."""
    db = Db(url)
    try:
        rows = db.run(
            "SELECT e.seq_id, e.id, e.stream_id, e.version, e.data, e.type, e.timestamp, "
            "e.tenant_id, e.mt_dotnet_type, e.correlation_id, e.causation_id, e.headers, "
            f"e.is_archived, s.type FROM {schema}.mt_events e LEFT JOIN {schema}.mt_streams s "
            "ON s.id = e.stream_id AND s.tenant_id = e.tenant_id ORDER BY e.seq_id"
        )
    finally:
        db.close()
    out = []
    for (
        seq,
        id_,
        stream,
        version,
        data,
        type_,
        at,
        tenant,
        dotnet,
        corr,
        caus,
        headers,
        archived,
        stream_type,
    ) in rows:
        meta: dict[str, Any] = {"tenant_id": tenant}
        for key, value in (("correlation_id", corr), ("causation_id", caus), ("headers", headers)):
            if value is not None:
                meta[key] = value
        meta["dotnet_type"] = dotnet
        if archived:
            meta["archived"] = True
        meta.update(source_version=version, source_position=seq)
        out.append(
            {
                "event_id": str(id_),
                "stream_id": str(stream) if tenant == "*DEFAULT*" else f"{tenant}/{stream}",
                "event_type": type_,
                "occurred_at": at,
                "recorded_at": at,
                "category": stream_type or "marten",
                "data": data,
                "metadata": meta,
            }
        )
    return out


def lake_reading(lake: Path) -> list[dict[str, Any]]:
    """The lake's events with the fields the plain reading gives, in log order."""
    keys = ("event_id", "stream_id", "event_type", "occurred_at", "recorded_at", "category",
            "data", "metadata")  # fmt: skip
    return [{k: e[k] for k in keys} for e in events_of(lake)]


def append_sample(store: Marten, n: int, *, start: int = 0, streams: int = 4) -> list[str]:
    """``n`` one-event appends over ``streams`` streams (a typed stream or not, with or without
    correlation, causation and headers); the stream ids."""
    ids = [str(uuid.UUID(int=k + 1)) for k in range(streams)]
    for i in range(start, start + n):
        store.append(
            ids[i % streams] if not store.string_ids else f"order-{i % streams}",
            [(KINDS[i % 3], {"orderId": i, "total": i * 1.25, "customer": {"name": f"Zoë {i}"}})],
            stream_type="order" if i % streams else None,
            at=T0 + timedelta(seconds=i),
            correlation_id=f"corr-{i // 2}" if i % 2 else None,
            causation_id=f"cmd-{i}" if i % 2 else None,
            headers={"user": "ann", "attempt": i % 3} if i % 3 == 0 else None,
        )
    return ids


@pytest.mark.parametrize("string_ids", [False, True])
def test_round_trip_equals_plain_sql(
    pg: Db, postgres_url: str, tmp_path: Path, string_ids: bool
) -> None:
    # (a server that shows times in another zone: timestamptz is read as the instant it is)
    pg.run(f"ALTER DATABASE {postgres_url.rsplit('/', 1)[1]} SET timezone = 'America/Lima'")
    store = Marten(pg, string_ids=string_ids)
    store.create()
    append_sample(store, 30)
    lake = tmp_path / "lake"
    assert esa.import_events(lake, postgres_url, create=True).events == 30
    got = lake_reading(lake)
    assert got == plain_reading(postgres_url)
    assert {e["category"] for e in got} == {"order", "marten"}
    assert got[3]["metadata"]["headers"] == {"user": "ann", "attempt": 0}
    assert got[1]["metadata"]["correlation_id"] == "corr-0"
    assert got[2]["occurred_at"] == T0 + timedelta(seconds=2)


def test_a_second_run_writes_nothing_and_a_third_only_what_is_new(
    pg: Db, postgres_url: str, tmp_path: Path
) -> None:
    store = Marten(pg)
    store.create()
    append_sample(store, 12)
    lake = tmp_path / "lake"
    esa.import_events(lake, postgres_url, create=True)
    before = log_bytes(lake)
    again = esa.import_events(lake, postgres_url)
    assert (again.events, again.batches) == (0, 0)
    assert log_bytes(lake) == before
    append_sample(store, 9, start=12)
    assert esa.import_events(lake, postgres_url).events == 9
    assert lake_reading(lake) == plain_reading(postgres_url)


def test_tenants_keep_their_streams_apart(pg: Db, postgres_url: str, tmp_path: Path) -> None:
    """Conjoined tenancy: ``order-1`` of two tenants are two lake streams, ``TENANT/ID``;
    the default tenant's streams keep their id."""
    store = Marten(pg, string_ids=True, conjoined=True)
    store.create()
    store.append("order-1", [("order_placed", {"n": 1})], tenant="acme")
    store.append("order-1", [("order_placed", {"n": 2})], tenant="globex")
    store.append("order-1", [("order_paid", {"n": 3})], tenant="acme")
    store.append("order-1", [("order_placed", {"n": 4})])
    lake = tmp_path / "lake"
    esa.import_events(lake, postgres_url, create=True)
    got = lake_reading(lake)
    assert got == plain_reading(postgres_url)
    assert [(e["stream_id"], e["metadata"]["source_version"]) for e in got] == [
        ("acme/order-1", 1),
        ("globex/order-1", 1),
        ("acme/order-1", 2),
        ("order-1", 1),
    ]
    assert [e["metadata"]["tenant_id"] for e in got] == ["acme", "globex", "acme", "*DEFAULT*"]


def test_archived_streams_are_imported_and_marked(
    pg: Db, postgres_url: str, tmp_path: Path
) -> None:
    store = Marten(pg)
    store.create()
    ids = append_sample(store, 8)
    store.archive(ids[1])
    lake = tmp_path / "lake"
    esa.import_events(lake, postgres_url, create=True)
    got = lake_reading(lake)
    assert got == plain_reading(postgres_url)
    assert [e["metadata"].get("archived", False) for e in got] == [i % 4 == 1 for i in range(8)]
    # archiving after the import changes rows in place: the cursor does not see it
    store.archive(ids[2])
    before = log_bytes(lake)
    assert esa.import_events(lake, postgres_url).events == 0
    assert log_bytes(lake) == before


def test_a_row_with_no_stream_id_is_named_and_skipped(
    pg: Db, postgres_url: str, tmp_path: Path
) -> None:
    store = Marten(pg)
    store.create()
    append_sample(store, 5)
    # mt_events.stream_id is NULL-able in Marten's DDL; a hand-made row can leave it out
    pg.run(
        "INSERT INTO mt_events (seq_id, id, stream_id, version, data, type) VALUES "
        "(nextval('mt_events_sequence'), ?, NULL, 1, '{}', 'orphan_found')",
        (uuid.uuid4(),),
    )
    append_sample(store, 2, start=5)
    lake = tmp_path / "lake"
    with pytest.raises(SourceError) as caught:
        esa.import_events(lake, postgres_url, create=True)
    assert str(caught.value).startswith("mt_events#6: no stream id (stream_id).")
    assert not lake.exists()
    summary = esa.import_events(lake, postgres_url, create=True, on_error="skip")
    assert (summary.events, summary.rejected) == (7, 1)
    (rejected,) = [json.loads(x) for x in rejects_path(lake, summary.name).read_text().splitlines()]
    assert (rejected["where"], rejected["reason"]) == ("mt_events#6", "no stream id (stream_id)")


def test_a_binary_event_is_refused_naming_the_row(
    pg: Db, postgres_url: str, tmp_path: Path
) -> None:
    store = Marten(pg)
    store.create()
    append_sample(store, 3)
    # [BinaryEvent]: bytes in bdata, data the {} placeholder (docs/events/binary-serialization.md)
    pg.run("UPDATE mt_events SET data = '{}', bdata = ? WHERE seq_id = 2", (b"\x92\xa3abc\x01",))
    lake = tmp_path / "lake"
    with pytest.raises(SourceError) as caught:
        esa.import_events(lake, postgres_url, create=True)
    assert str(caught.value).startswith("mt_events#2: the payload is bytes that are not text")
    assert "binary serializer" in str(caught.value)
    assert not lake.exists()


def test_two_marten_schemas_are_told_apart_by_schema(
    pg: Db, postgres_url: str, tmp_path: Path
) -> None:
    Marten(pg).create()
    other = Marten(pg, schema="billing")
    other.create()
    append_sample(other, 4)
    lake = tmp_path / "lake"
    done = run_esa("import", str(lake), postgres_url, "--create")
    assert done.returncode == 1
    assert "several Marten events tables: billing.mt_events, mt_events" in done.stderr
    assert "Hint: choose one with --schema marten:billing.mt_events" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_esa(
        "import", str(lake), postgres_url, "--schema", "marten:billing.mt_events", "--create"
    )
    assert done.returncode == 0, done.stderr
    assert lake_reading(lake) == plain_reading(postgres_url, "billing")


def test_events_partitioned_by_tenant_are_refused(
    pg: Db, postgres_url: str, tmp_path: Path
) -> None:
    """Under UseTenantPartitionedEvents every tenant has its own seq_id sequence: there is no
    one order to read by, so the import refuses, saying why."""
    pg.script(MARTEN_TENANT_PARTITIONED_DDL.format(schema="public"))
    for tenant in ("acme", "globex"):
        pg.script(
            f"CREATE TABLE mt_events_{tenant} PARTITION OF mt_events FOR VALUES IN ('{tenant}');"
            f"INSERT INTO mt_events (seq_id, id, stream_id, version, data, type, tenant_id) "
            f"VALUES (1, gen_random_uuid(), gen_random_uuid(), 1, '{{}}', 'order_placed', "
            f"'{tenant}')"
        )
    lake = tmp_path / "lake"
    with pytest.raises(SourceError, match="partitioned by tenant") as caught:
        esa.import_events(lake, postgres_url, create=True)
    assert "Hint:" in str(caught.value)
    assert not lake.exists()
