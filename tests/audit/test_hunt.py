"""Issue 11, round 2: alterations that leave every event's hash and every committed digest
intact but make readers see something else (skip a file or a row group by edited statistics,
read a file from the wrong partition, count a file no commit names). ``verify`` and
``verify --deep`` must find each one."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import esanalytics as esa
from esanalytics.audit import verify
from esanalytics.store.commitlog import encode_line
from esanalytics.store.layout import retired_name

verifier = sys.modules[verify.__module__]  # (the module, not the function)


@pytest.fixture(autouse=True, params=["whole files", "runs of row groups"])
def read_rows(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each hunt twice: files read whole, and read a row group at a time (as verify reads
    files larger than READ_ROWS), so that what spans row groups is found either way."""
    if request.param == "runs of row groups":
        monkeypatch.setattr(verifier, "READ_ROWS", 1_000)


def compacted_lake(path: Path) -> Path:
    """A lake whose newest commit line is a compaction adding one file of several streams
    in several row groups (the line nothing links to yet)."""
    from esanalytics.sample import SampleSpec, generate

    store = esa.open(path, create=True)
    store.ingest(generate(SampleSpec(events=3_000, seed=3)))
    store.compact()
    store.close()
    return path


def records(lake: Path) -> list[dict[str, Any]]:
    log = lake / "_esa" / "commits.log"
    return [json.loads(line.rpartition("\t")[0]) for line in log.read_text().splitlines()]


def forge(lake: Path, changed: list[dict[str, Any]]) -> None:
    """Write commit lines as a careful forger would (every CRC recomputed) and drop the saved
    state, which readers then rebuild from the forged log."""
    (lake / "_esa" / "commits.log").write_bytes(b"".join(encode_line(r) for r in changed))
    (lake / "_esa" / "checkpoint.json").unlink()


def newest_entry(lake: Path) -> dict[str, Any]:
    added: dict[str, Any] = records(lake)[-1]["add"][0]
    return added


def seen(lake: Path, stream: str) -> tuple[int, int, int, int]:
    """What readers see: one stream, everything, a position cut and a time cut, each
    counted, and DuckDB's count of the stream through a plain hive scan."""
    store = esa.open(lake)
    entry = newest_entry(lake)
    as_of = entry["rec"][0] + 1
    cut = entry["pos"][0]
    counts = (
        len(store.read_stream(stream)),
        len(store.read_all(position=cut)),
        len(store.read_all(as_of=_time(as_of))),
        duckdb.sql(
            f"SELECT count(*) FROM read_parquet('{lake}/events/**/*.parquet', "
            f"hive_partitioning = true) WHERE stream_id = '{stream}'"
        ).fetchall()[0][0],
    )
    store.close()
    return counts


def _time(us: int) -> str:
    import datetime as dt

    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)).isoformat()


def assert_found(lake: Path, kind: str) -> None:
    for deep in (False, True):
        result = verify(lake, deep=deep, workers=1)
        assert not result.ok, f"deep={deep}: {result}"
        assert kind in {f.kind for f in result.findings}, f"deep={deep}: {result}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("streams", lambda e: ["zz-none", "zz-none"]),  # a stream read skips the file
        ("pos", lambda e: [e["pos"][0] + 1, e["pos"][1]]),  # a position cut skips it
        ("rec", lambda e: [e["rec"][1], e["rec"][1]]),  # an as_of cut skips it
    ],
)
def test_edited_pruning_facts_in_the_newest_commit_line_are_found(
    lake: Path, field: str, value: Any
) -> None:
    compacted_lake(lake)
    stream = newest_entry(lake)["streams"][0]
    before = seen(lake, stream)
    changed = records(lake)
    changed[-1]["add"][0][field] = value(changed[-1]["add"][0])
    forge(lake, changed)
    assert seen(lake, stream) != before  # readers now miss events...
    assert_found(lake, "statistics")  # ...so verify must not say OK


def test_a_file_moved_to_another_category_with_its_entry_is_found(lake: Path) -> None:
    compacted_lake(lake)
    changed = records(lake)
    entry = changed[-1]["add"][0]
    other = "order" if entry["category"] == "account" else "account"
    name = entry["path"].rpartition("/")[2]
    moved = f"category={other}/month={entry['month']}/{name}"
    (lake / "events" / moved).parent.mkdir(parents=True, exist_ok=True)
    (lake / "events" / entry["path"]).rename(lake / "events" / moved)
    entry["path"] = moved
    forge(lake, changed)
    table = esa.open(lake).read_all().table
    moved_rows = table.filter(pc.equal(table["global_position"], entry["pos"][0]))
    assert moved_rows["category"].to_pylist() == [other]  # readers take the folder's word
    assert_found(lake, "misplaced")


@pytest.mark.parametrize("folder", ["month=1999-01", "month={month}/deeper"])
def test_a_file_moved_to_another_month_or_a_subfolder_with_its_entry_is_found(
    lake: Path, folder: str
) -> None:
    compacted_lake(lake)
    changed = records(lake)
    entry = changed[-1]["add"][0]
    name = entry["path"].rpartition("/")[2]
    moved = f"category={entry['category']}/{folder.format(month=entry['month'])}/{name}"
    (lake / "events" / moved).parent.mkdir(parents=True, exist_ok=True)
    (lake / "events" / entry["path"]).rename(lake / "events" / moved)
    entry["path"] = moved
    forge(lake, changed)
    assert_found(lake, "misplaced")


def test_row_group_statistics_edited_in_the_newest_file_are_found(lake: Path) -> None:
    """The footer's stream-id statistics edited (same length, so the file still parses) and
    the file's digest updated in the unlinked newest line: every event still matches its
    hash, but our stream reads and DuckDB skip the row group."""
    compacted_lake(lake)
    changed = records(lake)
    entry = changed[-1]["add"][0]
    stream = entry["streams"][0]
    assert len(stream) > 2
    before = len(esa.open(lake).read_stream(stream))
    path = lake / "events" / entry["path"]
    data = bytearray(path.read_bytes())
    size = struct.unpack("<I", data[-8:-4])[0]
    footer = bytes(data[-8 - size : -8])
    assert stream.encode() in footer
    forged = stream[:-1] + ("0" if stream[-1] != "0" else "1")
    data[-8 - size : -8] = footer.replace(stream.encode(), forged.encode())
    path.write_bytes(bytes(data))
    assert pq.ParquetFile(path).metadata.num_rows == entry["rows"]
    entry["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    forge(lake, changed)
    assert len(esa.open(lake).read_stream(stream)) < before
    assert_found(lake, "statistics")


@pytest.mark.parametrize("where", ["month={month}/deeper/extra.parquet", "extra/x.parquet"])
def test_a_parquet_file_in_a_subfolder_of_events_is_found(lake: Path, where: str) -> None:
    """Plain readers' `events/**/*.parquet` counts a file at any depth (or fails on it)."""
    compacted_lake(lake)
    entry = newest_entry(lake)
    target = lake / "events" / f"category={entry['category']}" / where.format(month=entry["month"])
    target.parent.mkdir(parents=True)
    shutil.copy(lake / "events" / entry["path"], target)
    result = verify(lake, workers=1)
    assert not result.ok, str(result)
    assert [f.kind for f in result.findings] == ["unnamed_file"], str(result)
    with pytest.raises(esa.CorruptLakeError, match="no commit"):  # and writers stop there too
        esa.open(lake).append("account-1", [esa.NewEvent("MoneyDeposited", {"amount": 1})])


def test_a_newest_line_renumbered_as_the_signed_commit_is_not_vouched_for(
    lake: Path, tmp_path: Path
) -> None:
    """A checkpoint signs one commit line; a later line that takes its number (and adds an
    altered file under a recomputed digest) must not pass as signed."""
    import pyarrow as pa

    from esanalytics.audit import make_checkpoint, make_key, read_key

    key = read_key(make_key(tmp_path / "key"))
    store = esa.open(lake, create=True)
    store.append("account-1", [esa.NewEvent("MoneyDeposited", {"amount": 1})])
    checkpoint = make_checkpoint(store, key)
    store.append("account-2", [esa.NewEvent("MoneyDeposited", {"amount": i}) for i in range(1_500)])
    store.close()
    changed = records(lake)
    entry = changed[-1]["add"][0]
    path = lake / "events" / entry["path"]
    table = pq.read_table(path)
    data = table["data"].to_pylist()
    data[0] = '{"amount":999999}'
    index = table.schema.get_field_index("data")
    table = table.set_column(index, table.schema.field(index), pa.array(data, pa.string()))
    pq.write_table(table, path, row_group_size=table.num_rows, write_page_index=False)
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    entry["bytes"] = path.stat().st_size
    changed[-1]["n"] = checkpoint["commit"]
    forge(lake, changed)
    assert esa.open(lake).read_stream("account-2").to_arrow()["data"][0].as_py() == data[0]
    result = verify(lake, against=checkpoint, key=key, workers=1)
    assert not result.ok, str(result)
    assert {"modified", "commit_log"} <= {f.kind for f in result.findings}, str(result)


def _busy_writer(lake: str, stop: Any) -> None:  # pragma: no cover - runs in a child process
    from datetime import timedelta

    store = esa.open(lake)
    round_ = 0
    while not stop.is_set():
        round_ += 1
        deposits = [esa.NewEvent("MoneyDeposited", {"amount": j}) for j in range(1_100)]
        store.append(f"account-w{round_ % 5}", deposits)  # a file of its own
        for k in range(10):  # inline rows, sealed later
            store.append(f"account-s{k}", [esa.NewEvent("MoneyDeposited", {"amount": k})])
        store.compact()
        store.vacuum(older_than=timedelta(seconds=1))  # far less than the default hour
    store.close()


def test_verify_during_appends_compaction_and_vacuum_finds_nothing(lake: Path) -> None:
    """verify is a reader: legitimate concurrent work (large and small appends, seals,
    compaction, vacuum with a short grace time) must never make it report a fault or crash."""
    import multiprocessing
    import time

    store = esa.open(lake, create=True)
    store.append("account-0", [esa.NewEvent("MoneyDeposited", {"amount": 1})])
    store.close()
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    child = context.Process(target=_busy_writer, args=(str(lake), stop))
    child.start()
    try:
        time.sleep(1.0)
        started, runs = time.monotonic(), 0
        while time.monotonic() - started < 5 and child.is_alive():
            for deep in (False, True):
                result = verify(lake, deep=deep, workers=2)
                assert result.ok, f"deep={deep}: {result}"
                runs += 1
    finally:
        stop.set()
        child.join(timeout=60)
    assert child.exitcode == 0
    assert runs > 4
    assert verify(lake, deep=True).ok


def test_a_committed_file_hidden_under_its_retired_name_is_found(lake: Path) -> None:
    """Our readers look for a file under its retired name too (a compaction may retire it
    while they read); plain Parquet readers do not see it there."""
    compacted_lake(lake)
    entry = records(lake)[1]["add"][0]  # a file no later commit removes
    assert any(e["path"] == entry["path"] for e in json.loads(
        (lake / "_esa" / "checkpoint.json").read_text())["files"])  # fmt: skip
    path = lake / "events" / entry["path"]
    path.rename(path.with_name(f".{path.name}.retired"))
    assert len(esa.open(lake).read_all()) == 3_000
    plain = duckdb.sql(f"SELECT count(*) FROM read_parquet('{lake}/events/**/*.parquet')")
    assert plain.fetchall()[0][0] == 3_000 - entry["rows"]
    assert_found(lake, "misplaced")


def test_a_newest_compaction_that_removes_another_file_of_as_many_rows_is_found(
    lake: Path,
) -> None:
    """The newest compaction line edited to remove a file of another partition with as many
    rows instead of one it replaced: the counts still add up, every digest and every event's
    own hash holds, but readers see one file's events twice and another's not at all."""
    store = esa.open(lake, create=True)
    batch = [esa.NewEvent("MoneyDeposited", {"amount": j}) for j in range(1_100)]
    store.append("order-1", batch)
    store.compact()
    store.append("account-1", batch)
    store.append("account-2", batch)
    store.compact()
    store.close()
    changed = records(lake)
    other = next(r for r in changed if r["kind"] == "compact")["add"][0]["path"]
    replaced = changed[-1]["remove"][0]
    changed[-1]["remove"][0] = other
    (lake / "events" / retired_name(replaced)).rename(lake / "events" / replaced)
    forge(lake, changed)
    shutil.rmtree(lake / "_esa" / "writer-index")  # (saved at the old length of the log)
    assert len(esa.open(lake).read_stream("order-1")) == 0
    for deep in (False, True):  # the event by event pass names the repeated positions
        result = verify(lake, deep=deep, workers=1)
        assert "inserted" in {f.kind for f in result.findings}, f"deep={deep}: {result}"
