"""A second reading of the Kafka import: the faults a demanding user and an auditor found,
each against a real broker on 127.0.0.1 (``tests/kafka_broker.py``), checked against a plain
consumer's reading or the lake's own cursor."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

import esanalytics as esa
from esanalytics.exceptions import SourceChangedError, SourceError
from esanalytics.sources.kafka import BATCH_BYTES, open_kafka_source
from tests.conftest import log_bytes, run_esa
from tests.kafka_broker import Broker, Record, consume_all, start_broker
from tests.sources.test_file_sources import events_of
from tests.sources.test_kafka import new_topic, url

# librdkafka settings (query parameters of the URL) that make the reader fetch a few records
# at a time, so that it still needs the broker after the first batches are committed
SMALL_FETCHES = (
    "?message.max.bytes=2000&fetch.max.bytes=2000&max.partition.fetch.bytes=2000"
    "&queued.max.messages.kbytes=1&fetch.wait.max.ms=10"
)


def test_a_broker_gone_mid_import_is_an_error_within_seconds_keeping_the_batches(
    tmp_path: Path,
) -> None:
    with start_broker("mock") as broker:
        topic = f"t{uuid.uuid4().hex[:10]}"
        broker.create_topic(topic, 2)
        broker.produce(
            topic, [Record(key=f"k{i % 5}", value={"type": "X", "i": i}) for i in range(3000)]
        )
        source = open_kafka_source(
            f"kafka://{broker.bootstrap}/{topic}{SMALL_FETCHES}", batch_records=100
        )
        lake = tmp_path / "lake"
        batches = []

        def on_batch(summary: esa.ImportSummary) -> None:
            batches.append(summary.events)
            if len(batches) == 2:
                broker.stop()

        started = time.monotonic()
        try:
            esa.import_events(lake, source, create=True, on_batch=on_batch)
        except SourceError as error:
            caught = error
        else:
            raise AssertionError("the import ended without its broker")
    assert time.monotonic() - started < 25, "a broker gone hangs the import"
    assert "sent no record of" in str(caught)
    assert broker.bootstrap in str(caught)  # names the cluster that went away
    # librdkafka's own words ("Connection refused") are quoted when it logged them in time,
    # which a loaded machine does not promise within the 10 s a broker may stay silent.
    kept = events_of(lake)
    cursor = esa.open(lake).cursor(topic)
    assert cursor is not None
    assert len(kept) == sum(cursor["at"]["offsets"][topic].values())
    assert len(kept) >= batches[1] > 0  # every event of the batches committed is kept


def test_a_value_with_a_data_field_beside_fields_of_its_own_is_no_envelope(
    kafka: Broker, tmp_path: Path
) -> None:
    topic = new_topic(kafka)
    values = [
        {"type": "OrderPlaced", "data": {"sku": "A-1"}, "amount": 5, "currency": "EUR"},
        {"type": "OrderPlaced", "data": {"sku": "B-2"}, "amount": 7, "currency": "EUR"},
    ]
    kafka.produce(topic, [Record(key="order-1", value=v) for v in values])
    lake = tmp_path / "lake"
    summary = esa.import_events(lake, url(kafka, topic), create=True)
    assert dict(summary.mapping.describe())["data"] == "value"
    assert [e["data"] for e in events_of(lake)] == values, "fields of the value were dropped"
    # a CloudEvents value (its attributes beside data) is still an envelope
    cloud = new_topic(kafka)
    kafka.produce(
        cloud,
        [
            Record(key="order-2", value={"specversion": "1.0", "id": str(uuid.uuid4()),
                                         "source": "/shop", "type": "OrderPaid",
                                         "datacontenttype": "application/json",
                                         "data": {"paid": n}})
            for n in range(2)
        ],
    )  # fmt: skip
    other = tmp_path / "other"
    esa.import_events(other, url(kafka, cloud), create=True)
    assert [e["data"] for e in events_of(other)] == [{"paid": 0}, {"paid": 1}]


def test_a_password_in_a_url_esa_cannot_read_is_never_shown() -> None:
    # a '/' not percent-encoded ends the URL's host part inside the password
    for given in (
        "kafka://alice:pa/ss3cret@127.0.0.1:9092/orders",
        "kafka://127.0.0.1:9092/?sasl.password=s3cret",
        "kafka://127.0.0.1:9092/?ssl.key.password=s3cret&sasl.oauthbearer.client.secret=s3cret",
    ):
        with pytest.raises(SourceError) as caught:
            open_kafka_source(given)
        assert "s3cret" not in str(caught.value), str(caught.value)
    given = "kafka://127.0.0.1:9092/orders?sasl.username=alice@example.com&sasl.password=s3cret"
    assert open_kafka_source(given).settings["sasl.username"] == "alice@example.com"
    done = run_esa("import", "lake-not-made", "kafka://alice:pa/ss3cret@127.0.0.1:9092/orders")
    assert done.returncode == 1
    assert "ss3cret" not in done.stderr + done.stdout
    assert "percent-encode" in done.stderr


def test_a_topic_deleted_and_made_again_with_more_records_is_refused(
    kafka_tansu: Broker, tmp_path: Path
) -> None:
    from confluent_kafka.admin import AdminClient

    topic = new_topic(kafka_tansu)
    kafka_tansu.produce(topic, [Record(key="a", value={"type": "Old", "i": i}) for i in range(3)])
    lake = tmp_path / "lake"
    assert esa.import_events(lake, url(kafka_tansu, topic), create=True).events == 3
    admin = AdminClient({"bootstrap.servers": kafka_tansu.bootstrap, "log_level": 0})
    admin.delete_topics([topic], request_timeout=10)[topic].result(timeout=15)
    deadline = time.monotonic() + 15
    while topic in admin.list_topics(timeout=5).topics:
        assert time.monotonic() < deadline, "the topic was not deleted"
        time.sleep(0.05)
    kafka_tansu.create_topic(topic, 1)
    kafka_tansu.produce(topic, [Record(key="a", value={"type": "New", "i": i}) for i in range(5)])
    before = log_bytes(lake)
    with pytest.raises(SourceChangedError) as caught:  # (not the last 2 records of 5, silently)
        esa.import_events(lake, url(kafka_tansu, topic))
    assert f"the topic {topic} was deleted and made again" in str(caught.value)
    assert log_bytes(lake) == before


def test_a_record_of_the_old_format_without_a_timestamp_is_not_dated_1970(
    kafka_mock: Broker, tmp_path: Path
) -> None:
    topic = new_topic(kafka_mock)
    old_client = {"api.version.request": False, "broker.version.fallback": "0.9.0"}
    kafka_mock.produce(topic, [Record(key="a", value={"type": "A"})], settings=old_client)
    (plain,) = consume_all(kafka_mock.bootstrap, [topic])
    assert plain["timestamp_type"] == 0  # (TIMESTAMP_NOT_AVAILABLE: its value means nothing)
    lake = tmp_path / "lake"
    with pytest.raises(SourceError) as caught:
        esa.import_events(lake, url(kafka_mock, topic), create=True)
    assert caught.value.where == f"{topic}/0@0"
    assert "no timestamp" in str(caught.value)
    assert not lake.exists()


def test_big_values_are_committed_in_batches_bounded_by_bytes(
    kafka_mock: Broker, tmp_path: Path
) -> None:
    # (200 values of 900 kB were one batch of 3.4 GB resident before: 19 times the data)
    topic = new_topic(kafka_mock, 20)  # (the mock keeps about 5 MB a partition)
    blob = "x" * 900_000
    kafka_mock.produce(
        topic,
        [Record(key=f"k{i}", value={"type": "Big", "i": i, "blob": blob}, partition=i % 20)
         for i in range(80)],
        settings={"message.max.bytes": 1_000_000},
    )  # fmt: skip
    lake = tmp_path / "lake"
    summary = esa.import_events(lake, url(kafka_mock, topic), create=True)
    assert summary.events == len(consume_all(kafka_mock.bootstrap, [topic])) == 80
    assert summary.batches >= 72_000_000 // BATCH_BYTES


def test_esa_info_says_where_a_kafka_import_stands_in_offsets(
    kafka_mock: Broker, tmp_path: Path
) -> None:
    topics = [new_topic(kafka_mock, 2), new_topic(kafka_mock, 20)]
    for topic in topics:
        kafka_mock.produce(topic, [Record(key="a", value={"type": "A"}, partition=1)] * 3)
    lake = tmp_path / "lake"
    esa.import_events(lake, url(kafka_mock, ",".join(topics)), name="orders", create=True)
    info = run_esa("info", str(lake))
    assert info.returncode == 0, info.stderr
    line = " ".join(info.stdout.partition("import 'orders'")[2].split())  # (lines wrapped)
    assert f"{topics[0]} next offsets 0:0, 1:3" in line
    assert (
        f"{topics[1]} next offsets 0:0, 1:3, 2:0, 3:0, 4:0, 5:0, 6:0, 7:0 ... (20 partitions)"
        in line
    )
    assert f"up to {min(topics)} next offsets" in line  # (topics in order)
    assert '"cluster"' not in line


def test_a_number_named_like_a_time_that_is_no_time_is_not_the_occurred_time(
    kafka_mock: Broker, tmp_path: Path
) -> None:
    topic = new_topic(kafka_mock)
    laps = [{"type": "LapCompleted", "time": 83.2}, {"type": "LapCompleted", "time": 79.9}]
    kafka_mock.produce(
        topic, [Record(key="car-7", value=v, timestamp=1_750_000_000_000 + i) for i, v in
                enumerate(laps)],
    )  # fmt: skip
    lake = tmp_path / "lake"
    summary = esa.import_events(lake, url(kafka_mock, topic), create=True)
    assert dict(summary.mapping.describe())["occurred_at"] == "timestamp"  # (not 1970 + 83 s)
    assert [e["occurred_at"].year for e in events_of(lake)] == [2025, 2025]
    # a value's epoch time is still taken
    other = new_topic(kafka_mock)
    kafka_mock.produce(other, [Record(key="car-7", value={"type": "LapCompleted",
                                                          "time": 1_700_000_000})])  # fmt: skip
    summary = esa.import_events(tmp_path / "other", url(kafka_mock, other), create=True)
    assert dict(summary.mapping.describe())["occurred_at"] == "value.time:epoch_s"
