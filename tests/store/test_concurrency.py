"""Concurrent writers in processes lose nothing and never duplicate a version."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pyarrow.compute as pc
import pytest

import esanalytics as esa

WRITERS = 4
ROUNDS = 40


def _worker(path: str, worker: int, conflicts: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = esa.open(path)
    seen = 0
    for i in range(ROUNDS):
        shared = f"account-{i % 3}"
        while True:  # optimistic concurrency: read, decide, append, retry on conflict
            version = store.stream_version(shared)
            try:
                store.append(
                    shared,
                    [esa.NewEvent("MoneyDeposited", {"worker": worker, "i": i})],
                    expected_version=version,
                )
                break
            except esa.ConcurrencyError as error:
                assert error.stream_id == shared  # noqa: PT017 - a retry loop in a worker process
                assert error.actual > version  # noqa: PT017 - a retry loop in a worker process
                seen += 1
        store.append(f"order-{worker}", [esa.NewEvent("OrderPlaced", {"i": i})])
    conflicts.put(seen)


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_processes_append_to_shared_and_own_streams(lake: Path, start: str) -> None:
    esa.open(lake, create=True)
    context = multiprocessing.get_context(start)
    queue = context.Queue()
    workers = [context.Process(target=_worker, args=(str(lake), w, queue)) for w in range(WRITERS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    store = esa.open(lake)
    table = store.read_all().to_arrow()
    assert table.num_rows == WRITERS * ROUNDS * 2
    assert table["global_position"].to_pylist() == list(range(1, table.num_rows + 1))
    for stream in pc.unique(table["stream_id"]).to_pylist():
        versions = table.filter(pc.field("stream_id") == stream)["version"].to_pylist()
        assert versions == list(range(1, len(versions) + 1))
    for w in range(WRITERS):
        assert store.stream_version(f"order-{w}") == ROUNDS
    assert sum(store.stream_version(f"account-{k}") for k in range(3)) == WRITERS * ROUNDS
    assert sum(queue.get() for _ in range(WRITERS)) >= 0
    from esanalytics.audit import verify

    store.flush()  # every event into a file, so the quick proof covers every one
    result = verify(esa.open(lake))
    assert (result.ok, result.method, result.events) == (True, "files", table.num_rows)


def test_conflict_between_two_handles_carries_the_facts(lake: Path) -> None:
    a = esa.open(lake, create=True)
    b = esa.open(lake)
    a.append("account-1", [esa.NewEvent("AccountOpened", {})])
    seen_by_b = b.stream_version("account-1")
    a.append("account-1", [esa.NewEvent("MoneyDeposited", {"amount": 1})])
    with pytest.raises(esa.ConcurrencyError) as caught:
        b.append(
            "account-1", [esa.NewEvent("MoneyWithdrawn", {"amount": 1})], expected_version=seen_by_b
        )
    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == (
        "account-1",
        1,
        2,
    )


def test_threads_share_one_handle(store: esa.EventStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def work(t: int) -> None:
        for i in range(50):
            store.append(f"account-{t}", [esa.NewEvent("MoneyDeposited", {"i": i})])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    assert store.head == 200
    assert [store.stream_version(f"account-{t}") for t in range(4)] == [50] * 4
