"""A Kafka import followed while a producer writes, and one SIGKILLed mid-import, end with
every record exactly once (checked against a plain consumer's reading of the topic).

The follower is a real ``esa import ... --follow`` process stopped by SIGINT once its cursor
has reached the end the producer wrote; the killed imports are children forked from a
forkserver (as in ``test_import_faults.py``), reading in batches of 25 records so a run makes
some 120 commits, SIGKILLed after a random (seeded) moment and started again (until 8 kills
have landed: a round that finishes first is followed by one on a fresh lake). After every kill
the lake holds exactly the records before its cursor's offsets, once each; at the end of a
round, every record once, ``verify`` clean, and a re-run writes nothing.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import esanalytics as esa
from esanalytics.audit import verify
from tests.conftest import log_bytes
from tests.kafka_broker import Broker, consume_all
from tests.sources.test_file_sources import events_of
from tests.sources.test_import_faults import finished_or_killed, forkserver_context
from tests.sources.test_kafka import new_topic, orders, place_of, url

KILLS = 8
RECORDS = 3000


def check_cursor(
    lake: Path, broker: Broker, topic: str, name: str | None = None, *, records: Any = None
) -> dict[int, int]:
    """The lake holds exactly the records before its cursor's offsets (``records``: the
    topic's, read by :func:`consume_all` if not given), each once, with positions and
    versions gapless; returns the cursor's offsets."""
    if not (lake / "_esa" / "lake.json").exists():
        return {}
    events = events_of(lake)
    assert [e["global_position"] for e in events] == list(range(1, len(events) + 1))
    places = [place_of(e) for e in events]
    assert len(set(places)) == len(places), "a record was imported twice"
    versions: dict[str, int] = {}
    for event in events:
        versions[event["stream_id"]] = versions.get(event["stream_id"], 0) + 1
        assert event["version"] == versions[event["stream_id"]]
    cursor = esa.open(lake).cursor(name or topic)
    upto = {int(p): o for p, o in cursor["at"]["offsets"][topic].items()} if cursor else {}
    expected = {
        (r["topic"], r["partition"], r["offset"])
        for r in (records if records is not None else consume_all(broker.bootstrap, [topic]))
        if r["offset"] < upto.get(r["partition"], 0)
    }
    assert set(places) == expected, "the lake and its cursor disagree"
    return upto


def _wait(what: str, ready: Any, process: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the follower exited ({process.returncode}) before {what}: {err}{out}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_follow_while_a_producer_writes_imports_every_record_once(
    kafka: Broker, tmp_path: Path
) -> None:
    topic = new_topic(kafka, 3)
    lake = tmp_path / "lake"
    follower = subprocess.Popen(
        [sys.executable, "-m", "esanalytics.cli", "import", str(lake), url(kafka, topic),
         "--follow", "--poll", "0.2", "--create"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    chunks, size = 12, 50
    try:

        def write() -> None:
            for chunk in range(chunks):
                kafka.produce(topic, orders(size, 3, start=chunk * size))
                time.sleep(0.1)  # (a producer's pace, not a synchronisation)

        producer = threading.Thread(target=write)
        producer.start()
        producer.join(timeout=120)
        total = chunks * size

        def caught_up() -> bool:  # (the cursor alone: the follower commits meanwhile)
            if not (lake / "_esa" / "lake.json").exists():
                return False
            cursor = esa.open(lake).cursor(topic)
            return cursor is not None and sum(cursor["at"]["offsets"][topic].values()) == total

        _wait("the cursor reached the end", caught_up, follower)
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert follower.returncode == 0, err
    assert "stopped by Ctrl-C" in out
    assert sum(check_cursor(lake, kafka, topic).values()) == total
    assert verify(esa.open(lake), deep=True).ok
    before = log_bytes(lake)
    assert esa.import_events(lake, url(kafka, topic)).events == 0
    assert log_bytes(lake) == before


def run_import(lake: str, source_url: str) -> None:
    """The child: import in batches of 25 records."""
    from esanalytics.sources.kafka import open_kafka_source

    esa.import_events(
        lake, open_kafka_source(source_url, batch_records=25), name="orders", create=True
    )


@pytest.fixture(scope="module")
def forkserver() -> Any:
    return forkserver_context()


def test_an_import_killed_mid_way_resumes_to_exactly_once(
    kafka_mock: Broker, tmp_path: Path, forkserver: Any
) -> None:
    rng = random.Random(17)
    topic = new_topic(kafka_mock, 3)
    kafka_mock.produce(topic, orders(RECORDS, 3))
    records = consume_all(kafka_mock.bootstrap, [topic])
    kills, rounds, progressed = 0, 0, 0
    # A kill that lands before the import made progress (a loaded machine starts the child
    # slowly) widens the next kill's window, so kills keep landing mid-way, not only at start.
    window = [0.2, 0.8]
    while kills < KILLS:  # (a round the import finishes before enough kills: another lake)
        rounds += 1
        assert rounds <= 6, f"only {kills} kills in {rounds - 1} rounds"
        lake, before = tmp_path / f"lake{rounds}", 0
        while True:
            timeout = rng.uniform(*window) if kills < KILLS else 120
            args = (str(lake), url(kafka_mock, topic))
            if finished_or_killed(forkserver, run_import, args, timeout):
                break
            kills += 1
            done = sum(check_cursor(lake, kafka_mock, topic, "orders", records=records).values())
            assert done >= before, "the cursor went back"
            progressed += done > before
            if done == before:
                window = [min(bound * 1.5, 20.0) for bound in window]
            before = done
        check_cursor(lake, kafka_mock, topic, "orders", records=records)
        assert len(events_of(lake)) == RECORDS
        assert verify(esa.open(lake), deep=True).ok
        unchanged = log_bytes(lake)
        assert esa.import_events(lake, url(kafka_mock, topic), name="orders").events == 0
        assert log_bytes(lake) == unchanged
    assert progressed >= 2, "too few kills landed after some progress"


def test_an_import_without_follow_ends_while_a_producer_goes_on(
    kafka_mock: Broker, tmp_path: Path
) -> None:
    topic = new_topic(kafka_mock, 2)
    kafka_mock.produce(topic, orders(200, 2))
    stop = threading.Event()

    def write() -> None:
        start = 200
        while not stop.is_set():
            kafka_mock.produce(topic, orders(20, 2, start=start))
            start += 20

    producer = threading.Thread(target=write)
    producer.start()
    lake = tmp_path / "lake"
    try:
        started = time.monotonic()
        first = esa.import_events(lake, url(kafka_mock, topic), create=True)
        assert time.monotonic() - started < 30
        deadline = time.monotonic() + 30
        while len(consume_all(kafka_mock.bootstrap, [topic])) <= first.events:
            assert time.monotonic() < deadline, "the producer wrote nothing more"
            time.sleep(0.05)
        second = esa.import_events(lake, url(kafka_mock, topic))
    finally:
        stop.set()
        producer.join(timeout=60)
    assert first.events >= 200
    assert second.events > 0  # (what was written meanwhile, and only that)
    done = sum(check_cursor(lake, kafka_mock, topic).values())
    assert done == first.events + second.events
