"""Importing Kafka topics, against real brokers on 127.0.0.1 (``tests/kafka_broker.py``).

Each test makes topics of its own on a session's broker: librdkafka's mock cluster and tansu
(``kafka`` runs a test on both; ``kafka_mock`` where only the mock can do it: deleting
records, adding partitions). The lake is checked against an independent plain consumer's
reading of the same topics (:func:`consume_all`): every record once, its key the stream id,
its value the payload, its headers the metadata, its timestamp the recorded time, each
partition's records in offset order, and the order across partitions the documented one.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import esanalytics as esa
from esanalytics.exceptions import SourceChangedError, SourceError
from esanalytics.sources.importer import rejects_path
from esanalytics.sources.kafka import HOLD_BATCHES, TOMBSTONE, open_kafka_source
from tests.conftest import log_bytes, run_esa
from tests.kafka_broker import Broker, Record, consume_all, free_port
from tests.sources.test_file_sources import events_of

BASE_MS = 1_750_000_000_000


def new_topic(broker: Broker, partitions: int = 1, prefix: str = "t") -> str:
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    broker.create_topic(name, partitions)
    return name


def orders(n: int, partitions: int, *, start: int = 0, seed: int = 3) -> list[Record]:
    """``n`` order events over 7 keys, each key on one partition; timestamps that go back now
    and then within a partition (clock skew), and headers (a repeated one, one not UTF-8)."""
    rng = np.random.default_rng(seed + start)
    out = []
    for i in range(start, start + n):
        key = f"order-{i % 7}"
        headers: list[tuple[str, str | bytes]] = [("correlation_id", f"c-{i % 3}")]
        if i % 5 == 0:
            headers += [("trace", "a"), ("trace", "b"), ("raw", b"\xff\xfe")]
        out.append(
            Record(
                key=key,
                value={"type": "OrderNoted", "n": i, "amount": round(i * 1.5, 2)},
                headers=headers,
                partition=(i % 7) % partitions,
                timestamp=BASE_MS + i * 1000 - int(rng.integers(0, 3)) * 1500,
            )
        )
    return out


def expected_order(records: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """The documented order, computed independently: per partition the running maximum of
    the timestamps, then topic, partition, offset."""
    keyed = []
    running: dict[tuple[str, int], int] = {}
    for r in sorted(records, key=lambda r: (r["topic"], r["partition"], r["offset"])):
        place = (r["topic"], r["partition"])
        running[place] = max(running.get(place, r["timestamp"]), r["timestamp"])
        keyed.append((running[place], r["topic"], r["partition"], r["offset"]))
    return [(t, p, o) for _, t, p, o in sorted(keyed)]


def place_of(event: dict[str, Any]) -> tuple[str, int, int]:
    text = event["metadata"]["source_event_id"]
    topic, _, rest = text.rpartition("/")
    partition, _, offset = rest.partition("@")
    return topic, int(partition), int(offset)


def check_against_plain_reading(
    lake: Path, broker: Broker, topics: list[str], *, one_batch: bool = True
) -> None:
    """The lake holds every record of ``topics`` once, as a plain consumer reads them (and,
    when the import read them in ``one_batch``, in the documented order)."""
    records = consume_all(broker.bootstrap, topics)
    events = events_of(lake)
    assert len(events) == len(records)
    by_place = {(r["topic"], r["partition"], r["offset"]): r for r in records}
    places = [place_of(e) for e in events]
    assert sorted(places) == sorted(by_place), "not every record once"
    for event, place in zip(events, places, strict=True):
        record = by_place[place]
        assert event["stream_id"] == record["key"].decode()
        value = json.loads(record["value"]) if record["value"] is not None else None
        if value is None:
            assert (event["event_type"], event["data"]) == (TOMBSTONE, {})
        else:
            assert event["event_type"] == value["type"]
            assert event["data"] == value
        recorded = event["metadata"].get("source_recorded_at") or event["recorded_at"]
        stamp = recorded if isinstance(recorded, str) else recorded.isoformat()
        assert _ms(stamp) == record["timestamp"]
        headers: dict[str, Any] = {}
        for name, raw in record["headers"] or []:
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                continue
            headers[name] = (
                [*np.atleast_1d(headers[name]).tolist(), text] if name in headers else text
            )
        for name, text in headers.items():
            assert event["metadata"][name] == text
        if "correlation_id" in headers:
            assert event["metadata"]["correlation_id"] == headers["correlation_id"]
    # each partition's records in offset order, and across partitions the documented order
    if one_batch:
        assert places == expected_order(records)
    for topic, partition in {(t, p) for t, p, _ in places}:
        offsets = [o for t, p, o in places if (t, p) == (topic, partition)]
        assert offsets == sorted(offsets), "a partition's records were reordered"


def _ms(stamp: str) -> int:
    import pandas as pd

    return int(pd.Timestamp(stamp).tz_convert("UTC").value // 1_000_000)


def url(broker: Broker, spec: str, query: str = "") -> str:
    return f"kafka://{broker.bootstrap}/{spec}{query}"


def test_topics_of_several_partitions_round_trip_then_nothing_then_only_what_is_new(
    kafka: Broker, tmp_path: Path
) -> None:
    topic = new_topic(kafka, 3)
    kafka.produce(topic, orders(300, 3))
    lake = tmp_path / "lake"
    summary = esa.import_events(lake, url(kafka, topic), create=True)
    assert summary.events == 300
    shown = dict(summary.mapping.describe())
    assert shown["stream_id"] == "key"
    assert shown["metadata"] == "headers"
    assert shown["recorded_at"] == "timestamp"
    check_against_plain_reading(lake, kafka, [topic])
    before = log_bytes(lake)
    again = esa.import_events(lake, url(kafka, topic))
    assert (again.events, again.batches) == (0, 0)
    assert log_bytes(lake) == before, "a re-run wrote something"
    kafka.produce(topic, orders(40, 3, start=300))
    more = esa.import_events(lake, url(kafka, topic))
    assert more.events == 40
    events = events_of(lake)
    assert len(events) == 340
    assert sorted(place_of(e) for e in events) == sorted(
        (r["topic"], r["partition"], r["offset"]) for r in consume_all(kafka.bootstrap, [topic])
    )
    cursor = esa.open(lake).cursor(topic)
    assert cursor is not None
    assert sum(cursor["at"]["offsets"][topic].values()) == 340
    from esanalytics.audit import verify

    assert verify(esa.open(lake), deep=True).ok


def test_small_batches_keep_each_partition_in_order_and_commit_their_cursors(
    kafka_mock: Broker, tmp_path: Path
) -> None:
    topic = new_topic(kafka_mock, 3)
    kafka_mock.produce(topic, orders(500, 3))
    lake = tmp_path / "lake"
    source = open_kafka_source(url(kafka_mock, topic), batch_records=37)
    summary = esa.import_events(lake, source, create=True)
    assert summary.events == 500
    # (a batch may wait for other partitions' records, up to HOLD_BATCHES batches' worth)
    assert summary.batches >= 500 // (37 * HOLD_BATCHES)
    events = events_of(lake)
    places = [place_of(e) for e in events]
    assert len(set(places)) == 500
    for partition in range(3):
        offsets = [o for _, p, o in places if p == partition]
        assert offsets == sorted(offsets), "a partition's records were reordered"


def test_a_regex_reads_the_topics_it_matches_and_later_ones_from_their_start(
    kafka: Broker, tmp_path: Path
) -> None:
    prefix = f"r{uuid.uuid4().hex[:6]}-"
    first, second = new_topic(kafka, 2, prefix), new_topic(kafka, 1, prefix)
    other = new_topic(kafka, 1)
    for topic in (first, second, other):
        kafka.produce(topic, orders(30, 2 if topic == first else 1))
    lake = tmp_path / "lake"
    summary = esa.import_events(lake, url(kafka, f"^{prefix}.*"), name="orders", create=True)
    assert summary.events == 60
    check_against_plain_reading(lake, kafka, [first, second])
    third = new_topic(kafka, 2, prefix)
    kafka.produce(third, orders(20, 2, start=100))
    kafka.produce(first, orders(5, 2, start=200))
    assert esa.import_events(lake, url(kafka, f"^{prefix}.*"), name="orders").events == 25
    places = [place_of(e) for e in events_of(lake)]
    assert len(set(places)) == 85
    assert {t for t, _, _ in places} == {first, second, third}


def test_partitions_added_between_runs_are_read_from_their_start(
    kafka_mock: Broker, tmp_path: Path
) -> None:
    topic = new_topic(kafka_mock, 2)
    kafka_mock.produce(topic, orders(40, 2))
    lake = tmp_path / "lake"
    assert esa.import_events(lake, url(kafka_mock, topic), create=True).events == 40
    kafka_mock.add_partitions(topic, 4)
    kafka_mock.produce(topic, orders(60, 4, start=40))
    summary = esa.import_events(lake, url(kafka_mock, topic))
    assert summary.events == 60
    check_against_plain_reading(lake, kafka_mock, [topic], one_batch=False)
    cursor = esa.open(lake).cursor(topic)
    assert cursor is not None
    assert set(cursor["at"]["offsets"][topic]) == {"0", "1", "2", "3"}


def test_records_deleted_before_they_were_read_stop_the_import_with_their_offsets(
    kafka_mock: Broker, tmp_path: Path
) -> None:
    topic = new_topic(kafka_mock, 2)
    kafka_mock.produce(topic, orders(20, 2))
    kafka_mock.delete_records(topic, 0, 4)  # (before the first run: it starts at the low mark)
    lake = tmp_path / "lake"
    records = consume_all(kafka_mock.bootstrap, [topic])
    assert esa.import_events(lake, url(kafka_mock, topic), create=True).events == len(records)
    kafka_mock.produce(topic, orders(20, 2, start=20))
    low = consume_all(kafka_mock.bootstrap, [topic])[-1]["offset"]  # partition 1's last
    cursor = esa.open(lake).cursor(topic)
    assert cursor is not None
    stored = cursor["at"]["offsets"][topic]["1"]
    kafka_mock.delete_records(topic, 1, stored + 3)
    before = log_bytes(lake)
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        esa.import_events(lake, url(kafka_mock, topic))
    assert time.monotonic() - started < 10
    error = caught.value
    assert f"{topic}/1: the records at offsets {stored} to {stored + 2} were deleted" in str(error)
    assert error.where == f"{topic}/1@{stored}"
    assert "--name" in (error.hint or "")
    assert log_bytes(lake) == before
    assert low > stored


def test_tombstones_become_events_and_offset_gaps_of_transactions_end_the_read(
    kafka: Broker, tmp_path: Path
) -> None:
    topic = new_topic(kafka, 2)
    kafka.produce(topic, orders(10, 2))
    kafka.produce(topic, [Record(key="order-1", value=None, partition=1)])  # a tombstone
    kafka.produce(topic, orders(6, 2, start=10), transactional=True)  # (markers: offset gaps)
    kafka.produce(topic, orders(4, 2, start=16), transactional=True)
    lake = tmp_path / "lake"
    started = time.monotonic()
    summary = esa.import_events(lake, url(kafka, topic), create=True)
    assert time.monotonic() - started < 15
    assert summary.events == 21
    check_against_plain_reading(lake, kafka, [topic])
    tombstones = [e for e in events_of(lake) if e["event_type"] == TOMBSTONE]
    assert [(e["stream_id"], e["data"]) for e in tombstones] == [("order-1", {})]
    before = log_bytes(lake)
    assert esa.import_events(lake, url(kafka, topic)).events == 0
    assert log_bytes(lake) == before


def bad_records() -> list[Record]:
    good = {"type": "OrderNoted", "order_id": "A"}
    return [
        Record(key="A", value=good, partition=0),
        Record(key="A", value=b"not json at all", partition=0),  # 0@1
        Record(key="A", value=b'1,"key":"evil"', partition=0),  # 0@2: cannot add fields
        Record(key=None, value=good, partition=0),  # 0@3: no key
        Record(key="B", value=b"\x00\xff binary", partition=0),  # 0@4
        Record(key="B", value={"type": "OrderNoted", "order_id": None}, partition=0),  # 0@5
        Record(key="C", value=good, partition=0),
    ]


def test_bad_rows_are_named_by_their_place_and_nothing_is_written(
    kafka: Broker, tmp_path: Path
) -> None:
    topic = new_topic(kafka)
    kafka.produce(topic, bad_records())
    lake = tmp_path / "lake"
    esa.open(lake, create=True)
    before = log_bytes(lake)
    with pytest.raises(SourceError) as caught:
        esa.import_events(lake, url(kafka, topic))
    assert str(caught.value).startswith(f'{topic}/0@1: the value is not JSON: "not json at all"')
    assert "Hint:" in str(caught.value)
    assert log_bytes(lake) == before
    with pytest.raises(SourceError) as caught:  # the stream id from a value's field
        esa.import_events(lake, url(kafka, topic), mapping={"stream_id": "value.order_id"})
    assert caught.value.where == f"{topic}/0@1"


def test_bad_rows_go_to_the_rejects_with_reasons_under_skip(kafka: Broker, tmp_path: Path) -> None:
    topic = new_topic(kafka)
    kafka.produce(topic, bad_records())
    lake = tmp_path / "lake"
    summary = esa.import_events(
        lake, url(kafka, topic), mapping={"stream_id": "value.order_id"}, on_error="skip",
        create=True,
    )  # fmt: skip
    assert summary.events == 3  # 0@0, the keyless 0@3 (its value has the id) and 0@6
    rejects = [json.loads(x) for x in rejects_path(lake, topic).read_text().splitlines()]
    reasons = {r["where"]: r["reason"] for r in rejects}
    assert set(reasons) == {f"{topic}/0@{n}" for n in (1, 2, 4, 5)}
    assert reasons[f"{topic}/0@1"].startswith("the value is not JSON")
    assert reasons[f"{topic}/0@2"] == 'the value is not JSON: "1,\\"key\\":\\"evil\\""'
    assert reasons[f"{topic}/0@4"].startswith("the value is not UTF-8 text (9 bytes of")
    assert reasons[f"{topic}/0@5"] == "no stream id (value.order_id)"
    rows = {r["where"]: json.loads(r["row"]) for r in rejects}
    assert rows[f"{topic}/0@1"]["value_text"] == "not json at all"
    assert base64.b64decode(rows[f"{topic}/0@4"]["value_base64"]) == b"\x00\xff binary"
    assert rows[f"{topic}/0@2"]["key"] == "A"  # (the value did not replace the key)
    assert rows[f"{topic}/0@1"]["timestamp_type"] == "create"
    # with the key as the stream id (the default), the record without one is the bad row
    other = tmp_path / "other"
    summary = esa.import_events(other, url(kafka, topic), on_error="skip", create=True)
    reasons = {
        json.loads(x)["where"]: json.loads(x)["reason"]
        for x in rejects_path(other, topic).read_text().splitlines()
    }
    assert reasons[f"{topic}/0@3"] == "no stream id (key)"
    assert summary.events == 3


def test_envelopes_headers_and_the_users_mapping(kafka_mock: Broker, tmp_path: Path) -> None:
    topic = new_topic(kafka_mock)
    envelope = {
        "event_type": "OrderPlaced",
        "occurred_at": "2025-03-01T09:30:00+01:00",
        "data": {"total": 12.5},
    }
    kafka_mock.produce(
        topic,
        [
            Record(key="A", value=envelope, headers={"tenant": "t1", "causation_id": "x"}),
            Record(key="B", value=envelope, headers={"tenant": "t2", "causation_id": "y"}),
        ],
    )
    lake = tmp_path / "lake"
    summary = esa.import_events(lake, url(kafka_mock, topic), create=True)
    shown = dict(summary.mapping.describe())
    assert shown["data"] == "value.data"
    assert shown["occurred_at"] == "value.occurred_at"
    first = events_of(lake)[0]
    assert (first["event_type"], first["data"]) == ("OrderPlaced", {"total": 12.5})
    assert first["occurred_at"].isoformat() == "2025-03-01T08:30:00+00:00"
    assert first["metadata"]["causation_id"] == "x"
    assert first["metadata"]["tenant"] == "t1"
    mine = tmp_path / "mine"
    esa.import_events(
        mine, url(kafka_mock, topic), mapping={"stream_id": "headers.tenant"}, create=True
    )
    assert [e["stream_id"] for e in events_of(mine)] == ["t1", "t2"]


def test_an_unreachable_broker_and_an_unknown_topic_fail_within_seconds(
    kafka: Broker, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        esa.import_events(lake, f"kafka://127.0.0.1:{free_port()}/orders", create=True)
    assert time.monotonic() - started < 12
    assert "Could not reach the Kafka cluster at 127.0.0.1:" in str(caught.value)
    assert "bootstrap address" in (caught.value.hint or "")
    assert not lake.exists()
    topic = new_topic(kafka)
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        esa.import_events(lake, url(kafka, "no-such-topic"), create=True)
    assert time.monotonic() - started < 12
    assert "has no topic no-such-topic" in str(caught.value)
    assert topic in str(caught.value)  # (the topics it has are listed)
    with pytest.raises(SourceError, match="has no topic matching"):
        esa.import_events(lake, url(kafka, "^nothing-like-this.*"), create=True)
    with pytest.raises(SourceError, match="holds no events") as caught:  # (an empty topic)
        esa.import_events(lake, url(kafka, topic), create=True)
    assert "--follow" in (caught.value.hint or "")


def test_another_cluster_under_the_same_import_name_is_refused(
    kafka_mock: Broker, kafka_tansu: Broker, tmp_path: Path
) -> None:
    topic = new_topic(kafka_mock)
    kafka_mock.produce(topic, orders(5, 1))
    kafka_tansu.create_topic(topic, 1)
    kafka_tansu.produce(topic, orders(5, 1))
    lake = tmp_path / "lake"
    esa.import_events(lake, url(kafka_mock, topic), name="orders", create=True)
    with pytest.raises(SourceError, match="reads kafka://"):
        esa.import_events(lake, url(kafka_tansu, topic), name="orders")


def test_a_url_with_a_login_keeps_its_password_out_of_messages(kafka_mock: Broker) -> None:
    source = open_kafka_source(
        f"kafka://alice:s3cret@{kafka_mock.bootstrap}/orders?client.id=esa-test"
    )
    assert source.settings["sasl.username"] == "alice"
    assert source.settings["security.protocol"] == "SASL_SSL"
    assert source.settings["client.id"] == "esa-test"
    assert "s3cret" not in source.label
    with pytest.raises(SourceError) as caught:
        open_kafka_source("kafka://127.0.0.1:9092/")
    assert "names no topic" in str(caught.value)
    with pytest.raises(SourceChangedError.__mro__[1]):  # (a SourceError)
        open_kafka_source("kafka://127.0.0.1:9092/^orders(")


def test_esa_import_from_kafka_through_the_cli(kafka: Broker, tmp_path: Path) -> None:
    topic = new_topic(kafka, 2)
    kafka.produce(topic, orders(25, 2))
    lake = tmp_path / "lake"
    done = run_esa("import", str(lake), url(kafka, topic), "--create", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events"] == 25
    assert "stream_id              <- key" in done.stderr
    started = time.monotonic()
    failed = run_esa("import", str(lake), f"kafka://127.0.0.1:{free_port()}/{topic}")
    assert time.monotonic() - started < 20
    assert failed.returncode == 1
    assert failed.stderr.lstrip().startswith("error: Could not reach the Kafka cluster")
    assert "Hint: check the bootstrap address" in failed.stderr
    assert "Traceback" not in failed.stderr
    help_text = run_esa("import", "--help").stdout
    assert "kafka://HOST:PORT" in help_text


def test_a_refused_login_says_so_within_seconds(tmp_path: Path) -> None:
    from tests.kafka_broker import start_broker

    with start_broker("tansu", authentication=True) as broker:
        lake = tmp_path / "lake"
        started = time.monotonic()
        with pytest.raises(SourceError) as caught:
            esa.import_events(
                lake,
                f"kafka://alice:wrong@{broker.bootstrap}/orders"
                "?security.protocol=SASL_PLAINTEXT&sasl.mechanism=SCRAM-SHA-256",
                create=True,
            )
        assert time.monotonic() - started < 10
    message = str(caught.value)
    assert message.startswith(
        f"The Kafka cluster at {broker.bootstrap} refused the login of 'alice'"
    )
    assert "wrong" not in message
    assert "sasl.mechanism" in (caught.value.hint or "")
    assert not lake.exists()


def test_types_from_headers_and_cloudevents_ids(kafka_mock: Broker, tmp_path: Path) -> None:
    binary = new_topic(kafka_mock)  # CloudEvents' binary mode: the type in a ce_type header
    kafka_mock.produce(
        binary,
        [Record(key="A", value={"total": n}, headers={"ce_type": "OrderPlaced"}) for n in range(3)],
    )
    lake = tmp_path / "lake"
    summary = esa.import_events(lake, url(kafka_mock, binary), create=True)
    assert dict(summary.mapping.describe())["event_type"] == "headers.ce_type"
    assert [e["event_type"] for e in events_of(lake)] == ["OrderPlaced"] * 3
    structured = new_topic(kafka_mock)  # its structured mode: id, type, time, data in the value
    ids = [str(uuid.uuid4()) for _ in range(2)]
    kafka_mock.produce(
        structured,
        [
            Record(key="B", value={"specversion": "1.0", "id": i, "type": "OrderPaid",
                                   "time": "2025-03-01T10:00:00Z", "data": {"paid": True}})
            for i in ids
        ],
    )  # fmt: skip
    other = tmp_path / "other"
    summary = esa.import_events(other, url(kafka_mock, structured), create=True)
    shown = dict(summary.mapping.describe())
    assert (shown["event_id"], shown["data"], shown["occurred_at"]) == (
        "value.id",
        "value.data",
        "value.time",
    )
    events = events_of(other)
    assert [e["event_id"] for e in events] == ids
    assert events[0]["data"] == {"paid": True}


def test_a_key_that_is_not_text_is_kept_as_base64_and_is_no_stream_id(
    kafka_mock: Broker, tmp_path: Path
) -> None:
    topic = new_topic(kafka_mock)
    good = {"type": "OrderNoted"}
    kafka_mock.produce(topic, [Record(key="A", value=good), Record(key=b"\xff\x00k", value=good)])
    lake = tmp_path / "lake"
    summary = esa.import_events(lake, url(kafka_mock, topic), on_error="skip", create=True)
    assert summary.events == 1
    (reject,) = [json.loads(x) for x in rejects_path(lake, topic).read_text().splitlines()]
    assert (reject["where"], reject["reason"]) == (f"{topic}/0@1", "no stream id (key)")
    row = json.loads(reject["row"])
    assert row["key"] is None
    assert base64.b64decode(row["key_base64"]) == b"\xff\x00k"
