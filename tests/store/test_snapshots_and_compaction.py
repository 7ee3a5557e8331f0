"""Snapshot reads while appends and compaction run; compaction changes no event."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq

import esanalytics as esa


def _fill(store: esa.EventStore, n: int) -> None:
    for i in range(n):
        store.append(f"account-{i % 7}", [esa.NewEvent("MoneyDeposited", {"amount": i})])
        if i % 40 == 39:
            store.flush()


def test_compaction_keeps_every_event_and_hash(store: esa.EventStore, lake: Path) -> None:
    _fill(store, 300)
    before = store.read_all().to_arrow()
    files_before = len(store.files())
    done = store.compact()
    after = store.read_all().to_arrow()
    assert after.equals(before)
    assert done["rows"] == 300
    assert len(store.files()) < files_before
    for entry in store.files():
        table = pq.read_table(lake / "events" / entry.path)
        ids = table["stream_id"].to_pylist()
        assert ids == sorted(ids), "compacted files are clustered by stream"
    assert esa.open(lake).read_all().to_arrow().equals(before)


def test_old_handles_read_through_compaction_and_vacuum(store: esa.EventStore, lake: Path) -> None:
    _fill(store, 120)
    old = esa.open(lake)
    expected = old.read_all().to_arrow()
    store.compact()
    assert old.read_all().to_arrow().equals(expected)  # finds the files where they went
    assert store.vacuum(older_than=timedelta(hours=1)) == 0
    removed = store.vacuum(older_than=timedelta(0))
    assert removed > 0
    assert old.read_all().to_arrow().equals(expected)


def test_a_pinned_reader_sees_one_position_while_writers_and_compaction_run(
    store: esa.EventStore, lake: Path
) -> None:
    _fill(store, 200)
    pinned = store.head
    expected = store.read_all(position=pinned).to_arrow()
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        other = esa.open(lake)
        i = 0
        while not stop.is_set():
            other.append(f"order-{i % 5}", [esa.NewEvent("OrderPlaced", {"i": i})])
            i += 1

    def compactor() -> None:
        other = esa.open(lake)
        while not stop.is_set():
            try:
                other.compact()
            except BaseException as error:  # surfaced below
                errors.append(error)
                return

    threads = [threading.Thread(target=writer), threading.Thread(target=compactor)]
    for t in threads:
        t.start()
    try:
        for _ in range(25):
            assert store.read_all(position=pinned).to_arrow().equals(expected)
            assert len(store.read_stream("account-3", position=pinned)) == len(
                expected.filter(expected["stream_id"].to_numpy(zero_copy_only=False) == "account-3")
            )
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert store.head > pinned


def test_subscription_catches_up_then_follows(store: esa.EventStore) -> None:
    _fill(store, 30)
    subscription = store.subscribe(0, poll_interval=0.01)
    seen: list[int] = []

    def late_writer() -> None:
        for i in range(20):
            store.append("order-1", [esa.NewEvent("OrderPlaced", {"i": i})])

    thread = threading.Thread(target=late_writer)
    started = False
    for event in subscription.events(timeout=2.0):
        seen.append(event.global_position)
        if not started:
            thread.start()
            started = True
        if len(seen) == 50:
            subscription.stop()
    thread.join()
    assert seen == list(range(1, 51))
    assert subscription.position == 50
    resumed = store.subscribe(40)
    assert [e.global_position for e in resumed.events(timeout=0.05)] == list(range(41, 51))
    only_orders = store.subscribe(0, categories=["order"])
    assert {e.stream_id for e in only_orders.events(timeout=0.05)} == {"order-1"}
