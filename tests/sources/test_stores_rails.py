"""Rails Event Store tables imported, against plain SQL reading the same tables.

The tables come from RES's own migration (``tests/sources/stores_data.py`` cites the file)
on PostgreSQL (``jsonb``, ``json``, ``bytea`` columns) and SQLite (``blob``), written as RES's
ActiveRecord repository writes them. The lake's events are compared with what an
independent reading of the tables (psycopg / sqlite3, the stream rule applied in plain
Python) says they must be; then re-runs, growth, links, and rows RES can hold that esa
cannot read.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import esanalytics as esa
from esanalytics.exceptions import SourceError
from esanalytics.sources.importer import rejects_path
from tests.conftest import log_bytes
from tests.sources.stores_data import T0, Db, RailsEventStore, ResEvent, res_events
from tests.sources.test_file_sources import events_of

VARIANTS = ["jsonb", "json", "bytea", "sqlite"]


@pytest.fixture(params=VARIANTS)
def res(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, RailsEventStore]]:
    """An empty RES store and its URL: PostgreSQL with each data type, or SQLite."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.sqlite3'}"
        store = RailsEventStore(Db(url), data_type="binary")
    else:
        url = request.getfixturevalue("postgres_url")
        store = RailsEventStore(
            Db(url), data_type="binary" if request.param == "bytea" else request.param
        )
    store.create()
    yield url, store
    store.db.close()


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Db]:
    """A connection to a fresh PostgreSQL database, to write a store's rows with."""
    db = Db(postgres_url)
    yield db
    db.close()


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Db]:
    """A new SQLite database file, to write a store's rows with."""
    db = Db(f"sqlite:///{tmp_path / 'app.sqlite3'}")
    yield db
    db.close()


def plain_reading(url: str) -> list[dict[str, Any]]:
    """The events the tables hold, read with plain SQL and RES's stream rule written out
    again here: first link by id, ``all`` left out, no link -> ``all``."""
    db = Db(url)
    try:
        events = db.run(
            "SELECT id, event_id, event_type, data, metadata, created_at, valid_at "
            "FROM event_store_events ORDER BY id"
        )
        links = db.run(
            "SELECT event_id, stream, position FROM event_store_events_in_streams ORDER BY id"
        )
    finally:
        db.close()
    by_event: dict[str, list[tuple[str, int | None]]] = {}
    for event_id, stream, position in links:
        by_event.setdefault(str(event_id), []).append((stream, position))

    def load(value: Any) -> Any:
        if isinstance(value, bytes | memoryview):
            return json.loads(bytes(value).decode())
        return value if isinstance(value, dict) else json.loads(value)

    def utc(value: Any) -> datetime:
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    out = []
    for id_, event_id, event_type, data, metadata, created_at, valid_at in events:
        mine = by_event.get(str(event_id), [])
        named = [link for link in mine if link[0] != "all"]
        stream, version = named[0] if named else ("all", None)
        meta = load(metadata) if metadata is not None else {}
        meta["links"] = [{"stream": s, "position": p} for s, p in mine]
        if version is not None:
            meta["source_version"] = version
        meta["source_position"] = id_
        out.append(
            {
                "event_id": str(event_id),
                "stream_id": stream,
                "event_type": event_type,
                "occurred_at": utc(valid_at or created_at),
                "recorded_at": utc(created_at),
                "data": load(data),
                "metadata": meta,
            }
        )
    return out


def lake_reading(lake: Path) -> list[dict[str, Any]]:
    """The lake's events with the fields the plain reading gives, in log order."""
    keys = ("event_id", "stream_id", "event_type", "occurred_at", "recorded_at", "data", "metadata")
    return [{k: e[k] for k in keys} for e in events_of(lake)]


def publish_sample(store: RailsEventStore, n: int, *, start: int = 0) -> list[ResEvent]:
    """``n`` events over five order streams, every third linked to a customer stream too,
    every tenth published to the global stream only."""
    written = []
    for i, event in enumerate(res_events(n, start=start), start=start):
        stream = None if i % 10 == 9 else f"Ordering::Order${i % 5}"
        store.publish([event], stream)
        if i % 3 == 0 and stream is not None:
            store.link([event.event_id], f"Customer${i % 2}")
        written.append(event)
    return written


def test_round_trip_equals_plain_sql(res: tuple[str, RailsEventStore], tmp_path: Path) -> None:
    url, store = res
    publish_sample(store, 40)
    lake = tmp_path / "lake"
    summary = esa.import_events(lake, url, create=True)
    assert summary.events == 40
    got, want = lake_reading(lake), plain_reading(url)
    assert got == want
    # the checks above compare with the rule; these pin the rule itself
    first = got[0]
    assert first["stream_id"] == "Ordering::Order$0"
    assert [link["stream"] for link in first["metadata"]["links"]] == [
        "Ordering::Order$0",
        "Customer$0",
    ]
    assert got[9]["stream_id"] == "all"
    assert got[9]["metadata"]["links"] == []
    assert got[1]["occurred_at"] == got[1]["recorded_at"] - timedelta(days=1)  # valid_at
    stored = events_of(lake)
    assert {e["category"] for e in stored} == {"Ordering.Order", "all"}
    assert sum(e["stream_id"] == "Ordering::Order$1" for e in stored) == 8
    assert [e["version"] for e in stored if e["stream_id"] == "Ordering::Order$1"] == list(
        range(1, 9)
    )


@pytest.mark.parametrize("zoned", [False, True])
def test_times_are_utc_whatever_the_server_time_zone(
    pg: Db, postgres_url: str, tmp_path: Path, zoned: bool
) -> None:
    """``timestamp`` columns hold UTC wall time, ``timestamptz`` ones (Rails 7's
    datetime_type = :timestamptz) instants: both read right on a server whose sessions
    show times in Asia/Kolkata."""
    pg.run(f"ALTER DATABASE {postgres_url.rsplit('/', 1)[1]} SET timezone = 'Asia/Kolkata'")
    store = RailsEventStore(Db(postgres_url), zoned=zoned)
    try:
        store.create()
        publish_sample(store, 6)
    finally:
        store.db.close()
    lake = tmp_path / "lake"
    esa.import_events(lake, postgres_url, create=True)
    got = lake_reading(lake)
    assert got == plain_reading(postgres_url)
    assert got[0]["recorded_at"] == T0 + timedelta(microseconds=123456)
    assert got[1]["occurred_at"] == T0 + timedelta(minutes=1, microseconds=123456, days=-1)


def test_a_second_run_writes_nothing_and_a_third_only_what_is_new(
    res: tuple[str, RailsEventStore], tmp_path: Path
) -> None:
    url, store = res
    events = publish_sample(store, 20)
    lake = tmp_path / "lake"
    esa.import_events(lake, url, create=True)
    before = log_bytes(lake)
    again = esa.import_events(lake, url)
    assert (again.events, again.batches) == (0, 0)
    assert log_bytes(lake) == before
    # more events, and a link to an event the lake already holds
    publish_sample(store, 15, start=20)
    store.link([events[1].event_id], "Audit$1")
    third = esa.import_events(lake, url)
    assert third.events == 15
    assert lake_reading(lake)[20:] == plain_reading(url)[20:]
    old = lake_reading(lake)[1]
    assert "Audit$1" not in [link["stream"] for link in old["metadata"]["links"]], (
        "a link made after the import read its event is not imported (the lake never "
        "rewrites an event)"
    )


def test_an_event_in_several_streams_is_imported_once_with_its_links(
    pg: Db, postgres_url: str, tmp_path: Path
) -> None:
    store = RailsEventStore(pg)
    store.create()
    placed, paid = res_events(2)
    store.publish([placed], "Ordering::Order$7")
    store.publish([paid], "Ordering::Order$7")
    store.link([placed.event_id, paid.event_id], "Customer$3")
    store.link([placed.event_id], "all")  # as RES before 2.0 wrote the global stream
    store.link([placed.event_id], "Report$2025-03", any_version=True)
    lake = tmp_path / "lake"
    assert esa.import_events(lake, postgres_url, create=True).events == 2
    first, second = lake_reading(lake)
    assert first["event_id"] == placed.event_id
    assert second["event_id"] == paid.event_id
    assert first["stream_id"] == second["stream_id"] == "Ordering::Order$7"
    assert first["metadata"]["links"] == [
        {"stream": "Ordering::Order$7", "position": 0},
        {"stream": "Customer$3", "position": 0},
        {"stream": "all", "position": 0},
        {"stream": "Report$2025-03", "position": None},
    ]
    assert (first["metadata"]["source_version"], second["metadata"]["source_version"]) == (0, 1)
    # an event linked only to the old global stream and then to a named one
    lone = res_events(1, start=5)[0]
    store.publish([lone], "all")
    store.link([lone.event_id], "Customer$3")
    esa.import_events(lake, postgres_url)
    assert lake_reading(lake)[-1]["stream_id"] == "Customer$3"


def test_a_yaml_store_is_refused_naming_the_row_and_writing_nothing(
    pg: Db, postgres_url: str, tmp_path: Path
) -> None:
    store = RailsEventStore(pg, data_type="binary", serializer="yaml")
    store.create()
    store.publish(res_events(2), "Ordering::Order$1")
    lake = tmp_path / "lake"
    esa.open(lake, create=True)
    before = log_bytes(lake)
    with pytest.raises(SourceError) as caught:
        esa.import_events(lake, postgres_url)
    message = str(caught.value)
    assert message.startswith("event_store_events#1: the data is YAML"), message
    assert "JSONClient" in message
    assert "Hint:" in message
    assert caught.value.where == "event_store_events#1"
    assert log_bytes(lake) == before
    # not a bad row but the store's serializer: skipping would drop every event it wrote
    with pytest.raises(SourceError, match="event_store_events#1: the data is YAML"):
        esa.import_events(lake, postgres_url, on_error="skip")
    assert log_bytes(lake) == before


def test_encrypted_events_and_marshal_data_are_refused(
    pg: Db, postgres_url: str, tmp_path: Path
) -> None:
    store = RailsEventStore(pg, data_type="binary")
    store.create()
    secret = ResEvent(
        "Users::Registered",
        {"email": "k8Jf0q9w==", "id": 1},
        {"encryption": {"email": {"cipher": "aes-256-gcm", "iv": "x", "identifier": 1}}},
        T0,
    )
    store.publish([secret], "User$1")
    lake = tmp_path / "lake"
    with pytest.raises(SourceError, match=r"event_store_events#1: the data is encrypted"):
        esa.import_events(lake, postgres_url, create=True)
    assert not lake.exists()
    store.db.run(
        "UPDATE event_store_events SET metadata = NULL, data = ?", (b"\x04\x08{\x06:\x06a",)
    )
    with pytest.raises(SourceError, match=r"event_store_events#1: the data is Ruby Marshal data"):
        esa.import_events(lake, postgres_url, create=True)


def test_bad_rows_are_named_and_skipped_with_reasons(lite: Db, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.sqlite3'}"
    store = RailsEventStore(lite, data_type="binary")
    store.create()
    publish_sample(store, 6)
    # rows RES's columns can hold that are no event: data that is not JSON, no event type
    store.db.run("UPDATE event_store_events SET data = ? WHERE id = 3", (b'{"order_id": "o-2",',))
    store.db.run("UPDATE event_store_events SET event_type = '' WHERE id = 5")
    lake = tmp_path / "lake"
    esa.open(lake, create=True)
    before = log_bytes(lake)
    with pytest.raises(SourceError) as caught:
        esa.import_events(lake, url)
    assert str(caught.value).startswith("event_store_events#3: not valid JSON.")
    assert log_bytes(lake) == before
    summary = esa.import_events(lake, url, on_error="skip")
    assert (summary.events, summary.rejected) == (4, 2)
    rejected = [
        json.loads(line) for line in rejects_path(lake, summary.name).read_text().splitlines()
    ]
    assert [(r["where"], r["reason"]) for r in rejected] == [
        ("event_store_events#3", "not valid JSON"),
        ("event_store_events#5", 'the event type "" is not a name (letters, digits, _ . : -)'),
    ]
    assert [e["metadata"]["source_position"] for e in lake_reading(lake)] == [1, 2, 4, 6]


def test_event_ids_that_are_not_uuids_are_kept_as_source_event_id(lite: Db, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.sqlite3'}"
    store = RailsEventStore(lite, data_type="binary")
    store.create()
    event = ResEvent("Orders::OrderPlaced", {"n": 1}, {}, T0, event_id="order-1-placed")
    store.publish([event], "Ordering::Order$1")
    lake = tmp_path / "lake"
    esa.import_events(lake, url, create=True)
    (got,) = lake_reading(lake)
    assert uuid.UUID(got["event_id"])
    assert got["metadata"]["source_event_id"] == "order-1-placed"


def test_json_written_twice_into_jsonb_is_read_as_res_reads_it(
    pg: Db, postgres_url: str, tmp_path: Path
) -> None:
    """Older RES with ``serializer: JSON`` let ActiveRecord encode the JSON text again: the
    jsonb holds a string. RES's rescue_from_double_json_serialization! reads the inner JSON;
    so does the import."""
    store = RailsEventStore(pg)
    store.create()
    store.publish(res_events(2), "Ordering::Order$1")
    pg.run(
        "UPDATE event_store_events SET data = to_jsonb(data::text), "
        "metadata = to_jsonb(metadata::text) WHERE id = 2"
    )
    lake = tmp_path / "lake"
    esa.import_events(lake, postgres_url, create=True)
    _, second = lake_reading(lake)
    assert second["data"] == {"order_id": "o-1", "amount": 2.5, "note": "Zoë 1", "lines": [1, 2]}
    assert second["metadata"]["request_id"] == "req-1"
    assert second["metadata"]["links"] == [{"stream": "Ordering::Order$1", "position": 1}]
