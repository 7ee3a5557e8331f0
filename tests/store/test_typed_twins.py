"""Typed twins in the write path: every ingest of a large part, and every compaction, writes
beside each events file the twin that ``typed.derive`` makes of it, committed with its digest."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import esanalytics as esa
from esanalytics.store import typed
from esanalytics.store.commitlog import file_digest


def _orders(count: int, start: int = 0) -> pa.Table:
    """``count`` events of one category (so one part per month), with numbers, decimals,
    booleans, text and a field that is a number in some events and text in others."""
    data = [
        f'{{"n": {i}, "amount": {i % 1000}.{i % 7}5, "paid": {str(i % 3 == 0).lower()}, '
        f'"currency": "{["EUR", "USD"][i % 2]}", "ref": {i if i % 5 else json.dumps(f"r{i}")}}}'
        for i in range(start, start + count)
    ]
    return pa.table(
        {
            "stream_id": [f"order-{i % 97}" for i in range(start, start + count)],
            "event_type": ["OrderPlaced"] * count,
            "data": data,
            "metadata": ["{}"] * count,
        }
    )


def assert_twins_derived(store: esa.EventStore, *, every: bool = True) -> int:
    """Each committed file's twin holds exactly ``derive()`` of the events file (read back
    with pyarrow) and has the digest, size and fields its commit line says; with ``every``,
    each file has one. Returns how many twins there are."""
    twins = 0
    snapshot = store.snapshot()
    for entry, events_path in zip(snapshot.entries, snapshot.files, strict=True):
        path = store.twin_path(entry)
        if entry.typed is None:
            assert not every, f"{entry.path} has no twin"
            assert path is None
            continue
        assert path is not None
        twins += 1
        body = pq.read_table(events_path)
        expected, fields, more = typed.derive(body)
        twin = pq.read_table(path)
        assert twin.equals(expected), entry.path
        assert (entry.typed.fields, entry.typed.more) == (fields, more)
        assert entry.typed.path == entry.path
        assert file_digest(path) == entry.typed.sha256
        assert Path(path).stat().st_size == entry.typed.bytes
        if events_path == str(Path(store.path) / "events" / entry.path):  # published
            assert path == str(Path(store.path) / "typed" / entry.path)
    return twins


def test_a_large_ingest_and_every_compaction_write_twins(lake: Path) -> None:
    store = esa.open(lake, create=True)
    store.ingest(_orders(12_000))
    (entry,) = store.files()
    assert entry.typed is not None
    assert entry.typed.fields == {
        "amount": "DECIMAL(18,2)",
        "currency": "VARCHAR",
        "n": "BIGINT",
        "paid": "BOOLEAN",
        "ref": "VARCHAR",
    }
    assert assert_twins_derived(store) == 1
    twin = pq.ParquetFile(store.twin_path(entry))
    assert twin.metadata.row_group(0).column(0).compression == "ZSTD"
    # A small append, sealed: short-lived, no twin; compaction gives the merged file one.
    store.ingest(_orders(300, start=12_000))
    store.flush()
    assert assert_twins_derived(store, every=False) == 1  # the ingested file's, not the seal's
    assert len(store.files()) == 2
    store.compact()
    assert assert_twins_derived(store) == 1
    # The committed state names the twin: a new handle (from the checkpoint) and a replay of
    # the log (without it) both find it.
    assert assert_twins_derived(esa.open(lake)) == 1
    (lake / "_esa" / "checkpoint.json").unlink()
    assert assert_twins_derived(esa.open(lake)) == 1


def test_twins_follow_compaction_and_vacuum(lake: Path) -> None:
    store = esa.open(lake, create=True)
    store.ingest(_orders(10_000))
    store.ingest(_orders(10_000, start=10_000))
    old = esa.open(lake)
    before = old.files()
    assert len(before) == 2
    assert all(e.typed is not None for e in before)
    store.compact()
    assert assert_twins_derived(store) == 1
    assert old.snapshot().twins == [old.twin_path(e) for e in old.files()]
    # The replaced twins are retired, not deleted: a reader of the old view still finds them.
    retired = [old.twin_path(e) for e in before]
    assert all(p is not None and Path(p).name.endswith(".parquet.retired") for p in retired)
    assert store.vacuum(older_than=timedelta(0)) == 2
    assert not any(Path(p).exists() for p in retired if p is not None)
    live = sorted(p.relative_to(lake) for p in (lake / "typed").rglob("*") if p.is_file())
    assert live == [Path("typed") / e.path for e in store.files()]


def test_a_lake_written_before_twins_gains_them_on_compaction(lake: Path) -> None:
    store = esa.open(lake, create=True)
    store.ingest(_orders(15_000))
    store.compact()
    # Make it a lake of before twins: no typed/ folder, no twin in any commit line.
    shutil.rmtree(lake / "typed")
    (lake / "_esa" / "checkpoint.json").unlink()
    log = lake / "_esa" / "commits.log"
    from esanalytics.store.commitlog import encode_line

    lines = []
    for line in log.read_bytes().splitlines():
        record = json.loads(line.partition(b"\t")[0])
        for raw in record.get("add", ()):
            raw.pop("typed", None)
        lines.append(encode_line(record))
    log.write_bytes(b"".join(lines))
    old = esa.open(lake)
    assert [e.typed for e in old.files()] == [None]
    events = old.read_all().to_arrow()
    done = old.compact()
    assert done["partitions"] == 1
    assert assert_twins_derived(old) == 1
    assert old.read_all().to_arrow().equals(events)
    assert old.compact()["partitions"] == 0  # clustered with a twin: nothing left to do


def test_esa_info_counts_the_files_with_twins(lake: Path) -> None:
    from tests.conftest import run_esa

    store = esa.open(lake, create=True)
    store.ingest(_orders(10_000))
    store.ingest(_orders(50, start=10_000))
    shown = run_esa("info", str(lake), check=True).stdout
    assert "typed twins 1 of 2 files (`esa compact` adds the rest)" in shown
    store.compact()
    info = json.loads(run_esa("info", str(lake), "--format", "json", check=True).stdout)
    assert info["twins"] == {"files": 1, "with_typed_twin": 1}


def test_a_lost_twin_costs_reads_nothing(lake: Path) -> None:
    """A snapshot of a file whose twin was deleted has no twin for it (readers go on from
    the events file's JSON); twin_path says it is missing."""
    store = esa.open(lake, create=True)
    store.ingest(_orders(10_000))
    (entry,) = store.files()
    path = store.twin_path(entry)
    assert path is not None
    Path(path).unlink()
    snapshot = store.snapshot()
    assert snapshot.twins == [None]
    assert snapshot.files == [str(lake / "events" / entry.path)]
    with pytest.raises(esa.CorruptLakeError, match="missing"):
        store.twin_path(entry)
