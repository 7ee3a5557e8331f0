"""A backlog read from several partitions keeps its record times: the merge across batches.

A consumer hands over a backlog partition by partition (librdkafka fetches ahead), so cutting
batches by count would put one partition's late records before another's early ones, and
the lake (whose recorded times never go back) would raise the early ones' recorded times to
the late ones': "as of" answers would then miss records Kafka held at the time. The import
takes each batch only up to the watermark (the earliest of the partitions' latest times), so
the lake's order is the documented global merge and no time is raised.
"""

from __future__ import annotations

from pathlib import Path

import esanalytics as esa
from esanalytics.sources.kafka import open_kafka_source
from tests.kafka_broker import Broker, Record, consume_all
from tests.sources.test_file_sources import events_of
from tests.sources.test_kafka import BASE_MS, expected_order, new_topic, place_of, url


def test_a_backlog_over_partitions_is_merged_by_time_across_batches(
    kafka_mock: Broker, tmp_path: Path
) -> None:
    partitions, each = 4, 600
    topic = new_topic(kafka_mock, partitions)
    records = [
        Record(
            key=f"order-{p}-{j % 5}",
            value={"type": "OrderNoted", "n": j, "partition": p},
            partition=p,
            timestamp=BASE_MS + (j * partitions + p) * 10,  # the partitions interleave in time
        )
        for p in range(partitions)
        for j in range(each)
    ]
    for turn in range(0, each, 50):  # written over time: small record batches, as producers make
        kafka_mock.produce(topic, [r for r in records if turn <= r.value["n"] < turn + 50])
    lake = tmp_path / "lake"
    # (small turns of fetching, as 256 KB turns are for a backlog of 100,000s of records)
    fetch = "?max.partition.fetch.bytes=4096"
    source = open_kafka_source(url(kafka_mock, topic, fetch), batch_records=500)
    summary = esa.import_events(lake, source, create=True)
    assert summary.events == partitions * each
    assert summary.batches >= 3  # (several batches: the merge crossed their boundaries)
    plain = consume_all(kafka_mock.bootstrap, [topic])
    events = events_of(lake)
    assert [place_of(e) for e in events] == expected_order(plain)
    raised = [e for e in events if "source_recorded_at" in e["metadata"]]
    assert raised == [], f"{len(raised)} recorded times raised"
    by_place = {(r["topic"], r["partition"], r["offset"]): r["timestamp"] for r in plain}
    for event in events:
        millis = int(event["recorded_at"].timestamp() * 1000)
        assert millis == by_place[place_of(event)]
