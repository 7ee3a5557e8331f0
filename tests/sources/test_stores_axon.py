"""Axon Framework's ``domain_event_entry`` imported, against plain SQL reading the same table.

The table is Axon's own (``tests/sources/stores_data.py`` cites the JPA entity and the JDBC
table factory): the JPA naming with ``bytea`` or Hibernate's ``oid`` columns, the JDBC
engine's naming, and SQLite; rows written as Axon's storage engines write them, payloads
by Jackson (JSON) or XStream (XML). XML becomes JSON by the documented rule, checked here
against the values the test serialized, written out by that rule. Then re-runs, growth,
payloads esa cannot read, and bad rows.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import esanalytics as esa
from esanalytics.exceptions import SourceError
from esanalytics.sources.importer import rejects_path
from esanalytics.sources.stores.axon import xstream_json
from tests.conftest import log_bytes
from tests.sources.stores_data import JDBC, JPA, T0, Axon, AxonNames, Db
from tests.sources.test_file_sources import events_of

# (schema naming, serializer, database, payload column type)
VARIANTS = {
    "jpa-jackson": ("jpa", "jackson", "postgresql", "bytea"),
    "jdbc-jackson": ("jdbc", "jackson", "postgresql", "bytea"),
    "jpa-xstream": ("jpa", "xstream", "postgresql", "bytea"),
    "jpa-oid": ("jpa", "jackson", "postgresql", "oid"),
    "sqlite-jackson": ("jpa", "jackson", "sqlite", "blob"),
    "sqlite-xstream": ("jpa", "xstream", "sqlite", "blob"),
}


@pytest.fixture(params=list(VARIANTS))
def axon(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Axon]]:
    """An empty Axon table of each naming, column type, serializer and database, and its URL."""
    naming, serializer, database, lob = VARIANTS[request.param]
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'axon.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    db = Db(url)
    store = Axon(db, schema=naming, serializer=serializer, lob=lob)
    store.create()
    yield url, store
    db.close()


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Db]:
    """A connection to a fresh PostgreSQL database, to write Axon's rows with."""
    db = Db(postgres_url)
    yield db
    db.close()


def payload(i: int) -> dict[str, Any]:
    """The ``i``-th sample payload: text, number, boolean, list, nested object, null."""
    return {
        "cardId": f"gc-{i % 3}",
        "amount": i * 10,
        "note": f"Zoë <{i}> & co",
        "active": i % 2 == 0,
        "tags": ["gift", f"t{i}"],
        "owner": {"name": "Ann", "city": "Gent"},
        "comment": None,
    }


def publish_sample(store: Axon, n: int, *, start: int = 0) -> list[str]:
    """``n`` events over three gift cards, every seventh from no aggregate, some with a
    revision; their identifiers."""
    ids = []
    for i in range(start, start + n):
        kind = ("io.axoniq.giftcard.api.CardIssuedEvent", "io.axoniq.giftcard.api.Card$Redeemed")
        aggregate = None if i % 7 == 6 else f"gc-{i % 3}"
        ids += store.publish(
            aggregate,
            [(kind[i % 2], payload(i))],
            at=T0 + timedelta(milliseconds=1500 * i),
            revision="2" if i % 4 == 3 else None,
        )
    return ids


def as_xstream_wrote(value: Any) -> Any:
    """The documented XML rule, stated over the values the test serialized: scalars become
    their text, a null field is absent."""
    if isinstance(value, dict):
        return {k: as_xstream_wrote(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [as_xstream_wrote(v) for v in value]
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def plain_reading(url: str, names: AxonNames, serializer: str) -> list[dict[str, Any]]:
    """The events the table holds, by plain SQL, with the layout's rules written out again."""
    n = names
    db = Db(url)
    lob = "lo_get({})" if db.kind == "postgresql" and _is_oid(db, n) else "{}"
    try:
        rows = db.run(
            f"SELECT {n.global_index}, {n.aggregate_identifier}, {n.sequence_number}, {n.type}, "
            f"{n.event_identifier}, {lob.format(n.meta_data)}, {lob.format(n.payload)}, "
            f"{n.payload_revision}, {n.payload_type}, {n.time_stamp} FROM {n.table} "
            f"ORDER BY {n.global_index}"
        )
    finally:
        db.close()
    out = []
    for index, aggregate, seq, type_, event_id, meta_raw, payload_raw, rev, ptype, stamp in rows:
        if serializer == "jackson":
            data = json.loads(bytes(payload_raw))
            meta = json.loads(bytes(meta_raw)) if meta_raw is not None else {}
        else:
            root = ET.fromstring(bytes(payload_raw))
            data = {child.tag: _plain_xml(child) for child in root}
            entries = ET.fromstring(bytes(meta_raw))
            meta = {e[0].text: e[1].text for e in entries}
        meta["correlation_id"] = meta["traceId"]
        meta["causation_id"] = meta["correlationId"]
        if type_ is not None:
            meta["aggregate_type"] = type_
        meta["payload_type"] = ptype
        if rev is not None:
            meta["payload_revision"] = rev
        meta.update(source_version=seq, source_position=index)
        moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        out.append(
            {
                "event_id": event_id,
                "stream_id": aggregate,
                "event_type": ptype.replace("$", "."),
                "occurred_at": moment,
                "recorded_at": moment,
                "category": type_ or "axon",
                "data": data,
                "metadata": meta,
            }
        )
    return out


def _plain_xml(element: ET.Element) -> Any:
    """The sample's XML shapes read with ElementTree alone: text, a list of ``<string>``, an
    object."""
    # the sample's shapes only: text, a list of <string>, a nested object
    if len(element) == 0:
        return element.text or ""
    if {c.tag for c in element} == {"string"}:
        return [c.text for c in element]
    return {c.tag: _plain_xml(c) for c in element}


def _is_oid(db: Db, n: AxonNames) -> bool:
    """Whether the table's payload column is an ``oid`` (Hibernate's large objects)."""
    rows = db.run(
        "SELECT data_type FROM information_schema.columns WHERE table_name = ? AND column_name = ?",
        (n.table, n.payload),
    )
    return bool(rows) and rows[0][0] == "oid"


def lake_reading(lake: Path) -> list[dict[str, Any]]:
    """The lake's events with the fields the plain reading gives, in log order."""
    keys = ("event_id", "stream_id", "event_type", "occurred_at", "recorded_at", "category",
            "data", "metadata")  # fmt: skip
    return [{k: e[k] for k in keys} for e in events_of(lake)]


def test_round_trip_equals_plain_sql(axon: tuple[str, Axon], tmp_path: Path) -> None:
    url, store = axon
    publish_sample(store, 24)
    if store.schema == "jpa" and store.db.kind == "postgresql":  # a snapshot is no event
        value = "lo_from_bytea(0, ?)" if store.lob == "oid" else "?"
        store.db.run(
            "INSERT INTO snapshot_event_entry (aggregate_identifier, sequence_number, type, "
            "event_identifier, meta_data, payload, payload_type, time_stamp) "
            f"VALUES ('gc-0', 7, 'GiftCard', 'snap-1', NULL, {value}, 'io.axoniq.GiftCard', "
            "'2025-03-01T09:00:10.500Z')",
            (b'{"remaining": 70}',),
        )
    lake = tmp_path / "lake"
    assert esa.import_events(lake, url, create=True).events == 24
    got = lake_reading(lake)
    assert got == plain_reading(url, store.names, store.serializer)
    expected = [payload(i) for i in range(24)]
    if store.serializer == "xstream":
        expected = [as_xstream_wrote(p) for p in expected]
    assert [e["data"] for e in got] == expected
    assert got[1]["event_type"] == "io.axoniq.giftcard.api.Card.Redeemed"
    assert got[1]["metadata"]["payload_type"] == "io.axoniq.giftcard.api.Card$Redeemed"
    lone = got[6]
    assert (lone["category"], lone["stream_id"]) == ("axon", lone["event_id"])
    assert [e["metadata"]["source_version"] for e in got if e["stream_id"] == "gc-0"] == list(
        range(sum(e["stream_id"] == "gc-0" for e in got))
    )


def test_a_second_run_writes_nothing_and_a_third_only_what_is_new(
    pg: Db, postgres_url: str, tmp_path: Path
) -> None:
    store = Axon(pg)
    store.create()
    publish_sample(store, 10)
    lake = tmp_path / "lake"
    esa.import_events(lake, postgres_url, create=True)
    before = log_bytes(lake)
    again = esa.import_events(lake, postgres_url)
    assert (again.events, again.batches) == (0, 0)
    assert log_bytes(lake) == before
    publish_sample(store, 60, start=10)  # past Hibernate's first block of 50 ids
    assert esa.import_events(lake, postgres_url).events == 60
    assert lake_reading(lake) == plain_reading(postgres_url, JPA, "jackson")


def test_xstream_xml_becomes_json_by_the_documented_rule() -> None:
    xml = (
        "<io.axoniq.giftcard.api.Card_-Redeemed>"
        "<card__id>gc-1</card__id><amount>10</amount><active>true</active>"
        '<lines class="java.util.ArrayList"><io.axoniq.Line><sku>A</sku></io.axoniq.Line>'
        "<io.axoniq.Line><sku>B</sku></io.axoniq.Line></lines>"
        "<codes><string>x</string><null/><string>z</string></codes>"
        "<one><long>7</long></one><phone><number>0470</number></phone>"
        "<prices><entry><string>EUR</string><big-decimal>9.50</big-decimal></entry>"
        "<entry><string>USD</string><big-decimal>10.25</big-decimal></entry></prices>"
        "<alias>p</alias><alias>q</alias>"
        '<empty></empty><copy reference="../lines/io.axoniq.Line"/>'
        "</io.axoniq.giftcard.api.Card_-Redeemed>"
    )
    assert xstream_json(ET.fromstring(xml)) == {
        "card_id": "gc-1",
        "amount": "10",
        "active": "true",
        "lines": [{"sku": "A"}, {"sku": "B"}],
        "codes": ["x", None, "z"],
        "one": ["7"],
        "phone": {"number": "0470"},
        "prices": {"EUR": "9.50", "USD": "10.25"},
        "alias": ["p", "q"],
        "empty": "",
        "copy": {"@reference": "../lines/io.axoniq.Line", "#text": ""},
    }
    assert xstream_json(ET.fromstring("<string>hello</string>")) == {"value": "hello"}
    assert xstream_json(ET.fromstring("<meta-data/>"), root=False) == {}


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        (b"\xac\xed\x00\x05sr\x00\x1fio.axoniq.giftcard.api.Issued", "Java object serialization"),
        (b"\x8f\x12\xfe\x00\x9a\x10\x7f\x80", "bytes that are not text"),
    ],
)
def test_payloads_esa_cannot_read_are_refused_naming_the_row(
    pg: Db, postgres_url: str, tmp_path: Path, raw: bytes, what: str
) -> None:
    store = Axon(pg)
    store.create()
    publish_sample(store, 2)
    lake = tmp_path / "lake"
    esa.import_events(lake, postgres_url, create=True, name="cards")
    store.publish("gc-9", [("io.axoniq.giftcard.api.CardIssuedEvent", {})], raw_payload=raw)
    publish_sample(store, 1, start=2)
    before = log_bytes(lake)
    with pytest.raises(SourceError) as caught:
        esa.import_events(lake, postgres_url, name="cards")
    message = str(caught.value)
    assert message.startswith(f"domain_event_entry#3: the payload is {what}"), message
    assert "JacksonSerializer" in message
    assert "Hint:" in message
    assert log_bytes(lake) == before


def test_bad_rows_are_named_and_skipped_with_reasons(
    pg: Db, postgres_url: str, tmp_path: Path
) -> None:
    store = Axon(pg)
    store.create()
    publish_sample(store, 3)
    store.publish("gc-8", [("io.axoniq.X", {})], raw_payload=b'{"cardId": "gc-8", ')
    store.publish("gc-8", [("io.axoniq.Y", {})], meta={"traceId": "t"}, raw_payload=b"[1, 2]")
    publish_sample(store, 2, start=3)
    lake = tmp_path / "lake"
    with pytest.raises(SourceError) as caught:
        esa.import_events(lake, postgres_url, create=True)
    assert str(caught.value).startswith("domain_event_entry#4: not valid JSON.")
    assert not lake.exists()
    summary = esa.import_events(lake, postgres_url, create=True, on_error="skip")
    assert (summary.events, summary.rejected) == (5, 2)
    rejected = [json.loads(x) for x in rejects_path(lake, summary.name).read_text().splitlines()]
    assert [(r["where"], r["reason"]) for r in rejected] == [
        ("domain_event_entry#4", "not valid JSON"),
        ("domain_event_entry#5", "the payload data is not a JSON object"),
    ]


def test_two_axon_tables_are_told_apart_by_schema(
    pg: Db, postgres_url: str, tmp_path: Path
) -> None:
    """A database holding the JPA and the JDBC engine's tables (an application moved from
    one to the other): the import asks which, ``--schema axon:TABLE`` names it."""
    jpa, jdbc = Axon(pg), Axon(pg, schema="jdbc")
    jpa.create()
    jdbc.create()
    publish_sample(jpa, 2)
    publish_sample(jdbc, 3)
    lake = tmp_path / "lake"
    with pytest.raises(SourceError) as caught:
        esa.import_events(lake, postgres_url, create=True)
    assert "several Axon domain event tables: domain_event_entry, domainevententry" in str(
        caught.value
    )
    assert "--schema axon:domain_event_entry" in str(caught.value)
    summary = esa.import_events(lake, postgres_url, schema="axon:domainevententry", create=True)
    assert (summary.name, summary.events) == ("domainevententry", 3)
    assert lake_reading(lake) == plain_reading(postgres_url, JDBC, "jackson")
