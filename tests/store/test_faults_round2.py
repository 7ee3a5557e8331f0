"""Faults found in round 2 of issue 11: state files a writer trusted without checks, positions
that were not positions, and a writer that could not find events compaction had moved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import esanalytics as esa
from esanalytics.audit import verify
from esanalytics.engine import Session
from esanalytics.store import file_digest
from tests.conftest import Disk, run_esa


def _events(count: int) -> list[esa.NewEvent]:
    return [esa.NewEvent("MoneyDeposited", {"amount": i}) for i in range(count)]


def _indexed(lake: Path) -> tuple[Path, dict[str, object]]:
    """A lake whose writer index holds acct-1 at version 3 and acct-2 at version 2."""
    store = esa.open(lake, create=True)
    store.append("acct-1", _events(3))
    store.append("acct-2", _events(2))
    store.compact()
    folder = lake / "_esa" / "writer-index"
    return folder, json.loads((folder / "current.json").read_text())


def _versions(lake: Path, stream: str) -> list[int]:
    return esa.open(lake).read_stream(stream).table["version"].to_pylist()  # type: ignore[no-any-return]


@pytest.mark.parametrize("forger", ["heads only", "heads and digests"])
def test_a_forged_writer_index_never_lets_a_duplicate_version_in(lake: Path, forger: str) -> None:
    folder, info = _indexed(lake)
    heads = folder / str(info["heads"])
    # acct-1 lowered to version 1; in the second form the forger rewrites the recorded digest
    # too (the count of events the index holds then disagrees with the log's).
    forged = {"acct-1": 1, "acct-2": 2}
    pq.write_table(
        pa.table(
            {"stream_id": list(forged), "version": pa.array(list(forged.values()), pa.int64())}
        ),
        heads,
    )
    if forger != "heads only":
        info = {**info, **({"heads_sha256": file_digest(heads)} if "heads_sha256" in info else {})}
        (folder / "current.json").write_text(json.dumps(info))
    store = esa.open(lake)
    with pytest.raises(esa.ConcurrencyError):
        store.append("acct-1", _events(1), expected_version=1)
    assert store.append("acct-1", _events(1)).streams[0].first_version == 4
    assert _versions(lake, "acct-1") == [1, 2, 3, 4]
    assert esa.open(lake).append("acct-2", _events(1)).streams[0].first_version == 3
    assert _versions(lake, "acct-2") == [1, 2, 3]


def test_a_forged_writer_index_never_lets_a_duplicate_event_id_in(lake: Path) -> None:
    folder, info = _indexed(lake)
    first = esa.open(lake).read_stream("acct-1").table["event_id"][0].as_py()
    ids = folder / str(info["ids"])
    np.save(ids, np.sort(np.load(ids))[1:])  # one key dropped
    with pytest.raises(esa.DuplicateEventError):
        esa.open(lake).append("acct-9", [esa.NewEvent("MoneyDeposited", {}, event_id=first)])


def test_verify_names_a_writer_index_that_does_not_match_the_log(lake: Path) -> None:
    folder, info = _indexed(lake)
    assert verify(lake).ok
    pq.write_table(
        pa.table({"stream_id": ["acct-1"], "version": pa.array([1], pa.int64())}),
        folder / str(info["heads"]),
    )
    result = verify(lake)
    assert not result.ok
    assert any("writer index" in f.detail for f in result.findings), result


def test_a_writer_finds_events_whose_files_were_compacted_and_vacuumed(lake: Path) -> None:
    """The writer index was saved before a large append; the compaction after it was killed
    before it saved a new index; vacuum then deleted the large append's files. The next
    writer must find those events in the compacted files, not fail."""
    store = esa.open(lake, create=True)
    store.append("acct-1", _events(3))
    store.compact()  # saves the writer index
    big = store.append("acct-2", _events(1_200))  # written as files, after the index
    assert big.streams[0].last_version == 1_200
    done = subprocess.run(
        [sys.executable, "-c", f"import esanalytics as esa; esa.open({str(lake)!r}).compact()"],
        env={**os.environ, "ESA_KILL_AT": "writer_index.before_pointer"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr
    assert esa.open(lake).vacuum(older_than=timedelta(0)) >= 1
    writer = esa.open(lake)
    assert writer.append("acct-2", _events(1)).streams[0].first_version == 1_201
    with pytest.raises(esa.ConcurrencyError):
        esa.open(lake).append("acct-2", _events(1), expected_version=1_000)
    assert verify(lake, deep=True).ok


BAD_POSITIONS = [True, False, -1]


@pytest.mark.parametrize("position", BAD_POSITIONS)
def test_reads_refuse_a_bool_or_negative_position_with_a_hint(
    store: esa.EventStore, position: object
) -> None:
    store.append("acct-1", _events(2))
    reads = [
        lambda: store.read_all(position=position),
        lambda: store.read_all(from_position=position),
        lambda: store.read_stream("acct-1", position=position),
        lambda: next(iter(store.iter_batches(position=position))),
        lambda: store.snapshot(position=position),
        lambda: store.streams(position=position),
        lambda: store.inventory(position=position),
        lambda: store.stream_version("acct-1", position=position),
        lambda: store.subscribe(from_position=position),
        lambda: Session(store, position=position),
        lambda: Session(store).events_after(position),
        lambda: Session(store).cut(position=position),
    ]
    for read in reads:
        with pytest.raises(esa.ValidationError) as caught:
            read()
        assert caught.value.hint, read


def test_numpy_ints_are_positions(store: esa.EventStore) -> None:
    store.append("acct-1", _events(2))
    assert store.read_all(position=np.int64(1)).to_arrow().num_rows == 1


def test_the_cli_refuses_a_negative_position_with_a_hint(store: esa.EventStore) -> None:
    store.append("acct-1", _events(2))
    for args in (["read", str(store.path), "acct-1"], ["sql", str(store.path), "SELECT 1"]):
        done = run_esa(*args, "--position=-1")
        assert done.returncode == 1, done.stderr
        assert "not a log position" in done.stderr
        assert "Hint:" in done.stderr
        assert "Traceback" not in done.stderr


OUTPUTS = {
    "report html": ["report", "{lake}", "--entity", "acct-1", "--format", "html"],
    "report pdf": ["report", "{lake}", "--entity", "acct-1", "--format", "pdf"],
    "report csv": ["report", "{lake}", "--entity", "acct-1", "--format", "csv"],
    "chart html": ["chart", "{lake}", "heatmap"],
    "chart svg": ["chart", "{lake}", "heatmap"],
    "sql table": ["sql", "{lake}", "SELECT * FROM events"],
    "sql parquet": ["sql", "{lake}", "SELECT * FROM events", "--format", "parquet"],
}
SUFFIX = {"report html": ".html", "report pdf": ".pdf", "report csv": ".csv",
          "chart html": ".html", "chart svg": ".svg", "sql table": ".txt", "sql parquet": ".parquet"}  # fmt: skip


@pytest.mark.parametrize("command", OUTPUTS)
def test_an_output_on_a_full_disk_leaves_the_earlier_file_whole(
    disk: Disk, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from esanalytics.cli import main

    lake = tmp_path / "lake"
    esa.open(lake, create=True).append("acct-1", _events(3))
    output = disk.path / f"out{SUFFIX[command]}"
    args = [a.format(lake=lake) for a in OUTPUTS[command]] + ["--output", str(output)]
    assert main(args) == 0, capsys.readouterr().err
    written = {p: p.read_bytes() for p in disk.path.iterdir()}
    disk.fill(leave=0)
    assert main(args) == 1
    assert "Hint:" in capsys.readouterr().err
    disk.free()
    assert {p: p.read_bytes() for p in disk.path.iterdir()} == written, "an output was cut"
    for path in written:  # and a new output replaces the old one whole
        path.unlink()
    disk.fill(leave=0)
    assert main(args) == 1
    disk.free()
    assert list(disk.path.iterdir()) == [], "a partial output was left"


def test_write_extract_and_save_are_whole_or_absent_on_a_full_disk(disk: Disk) -> None:
    from esanalytics.report import write_extract

    table = pa.table({"n": list(range(10_000))})
    disk.fill(leave=0)
    for fmt in ("csv", "parquet"):
        with pytest.raises(OSError, match="No space"):
            write_extract(table, disk.path / f"x.{fmt}", fmt=fmt)
    disk.free()
    assert [p.name for p in disk.path.iterdir()] == []


# -- materialized projections under kills and concurrent refreshers ------------------------

_VIEW = """
import sys, time, esanalytics as esa
from esanalytics.catalog import account_balances
from esanalytics.materialized import MaterializedProjection
lake, role, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
view = MaterializedProjection(esa.open(lake), account_balances, checkpoint_every=300)
stop, done = time.monotonic() + seconds, 0
while time.monotonic() < stop or done < 3:
    if role in ("refresh", "rebuild"):
        view.refresh(rebuild=role == "rebuild" or done % 4 == 3)
    elif role == "read":
        view.state()
        view.state(position=250 + done)
    else:
        store = esa.open(lake)
        store.append("account-9", [esa.NewEvent("MoneyDeposited", {"amount": 1})])
    done += 1
print(done)
"""


def _view_lake(lake: Path) -> None:
    from esanalytics.sample import SampleSpec, generate

    esa.open(lake, create=True).ingest(generate(SampleSpec(events=1_000, seed=3)))


def _debris(folder: Path, current: dict[str, object]) -> list[str]:
    named = {"current.json", current["file"], *dict(current["checkpoints"])}  # type: ignore[call-overload]
    return sorted(p.name for p in folder.iterdir() if p.name not in named)


@pytest.mark.parametrize(
    "point", ["refresh.after_copy", "refresh.after_state", "refresh.after_copy:2:rebuild"]
)
def test_a_refresh_killed_midway_leaves_nothing_the_next_one_does_not_clean(
    lake: Path, point: str
) -> None:
    from esanalytics.catalog import account_balances
    from esanalytics.materialized import MaterializedProjection

    _view_lake(lake)
    view = MaterializedProjection(esa.open(lake), account_balances, checkpoint_every=300)
    view.refresh()
    esa.open(lake).append("account-9", [esa.NewEvent("MoneyDeposited", {"amount": 1})])
    point, rebuild, _ = point.partition(":rebuild")
    done = subprocess.run(
        [sys.executable, "-c", _VIEW, str(lake), "rebuild" if rebuild else "refresh", "0"],
        env={**os.environ, "ESA_KILL_AT": point},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr
    assert view.state().num_rows  # the state before the kill still answers
    assert view.state(position=350).num_rows  # and its checkpoints
    esa.open(lake).append("account-9", [esa.NewEvent("MoneyDeposited", {"amount": 1})])
    view.refresh()  # at a new position: what the killed refresh wrote is debris now
    current = view.current()
    assert current is not None
    assert _debris(view.folder, current) == []
    assert verify(lake).ok


def test_concurrent_refreshers_and_readers_never_fail(lake: Path) -> None:
    from esanalytics.catalog import account_balances
    from esanalytics.materialized import MaterializedProjection

    _view_lake(lake)
    roles = ["refresh", "refresh", "read", "read", "append"]
    running = [
        subprocess.Popen(
            [sys.executable, "-c", _VIEW, str(lake), role, "4"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in roles
    ]
    for role, process in zip(roles, running, strict=True):
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"a {role} process failed:\n{err}"
    view = MaterializedProjection(esa.open(lake), account_balances, checkpoint_every=300)
    view.refresh()
    expected = account_balances.state(Session(esa.open(lake))).to_arrow_table().sort_by("key")
    assert view.state().sort_by("key").equals(expected.select(view.state().column_names))
    current = view.current()
    assert current is not None
    assert _debris(view.folder, current) == []
    assert verify(lake).ok


def test_a_key_written_on_a_full_disk_is_whole_or_absent(disk: Disk) -> None:
    from esanalytics.audit import make_key, read_key

    target = disk.path / "audit.key"
    disk.fill(leave=0)
    with pytest.raises(OSError, match="No space"):
        make_key(target)
    disk.free()
    assert list(disk.path.iterdir()) == [], "a partial key was left (and keygen never overwrites)"
    assert len(read_key(make_key(target))) == 32
    with pytest.raises(FileExistsError):
        make_key(target)


def test_a_lake_whose_creation_was_killed_is_finished_by_the_next_create(lake: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import esanalytics as esa; esa.open({str(lake)!r}, create=True)"],
        env={**os.environ, "ESA_KILL_AT": "create.before_marker"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr
    with pytest.raises(esa.LakeNotFoundError):
        esa.open(lake)
    store = esa.open(lake, create=True)
    assert store.append("acct-1", _events(1)).streams[0].first_version == 1


@pytest.mark.parametrize("marker", ["", "{not json", "[1, 2]", '"esanalytics-lake"'])
def test_a_damaged_lake_marker_is_refused_with_a_hint(lake: Path, marker: str) -> None:
    esa.open(lake, create=True).append("acct-1", _events(1))
    (lake / "_esa" / "lake.json").write_text(marker)
    with pytest.raises(esa.CorruptLakeError) as caught:
        esa.open(lake)
    assert "lake.json" in str(caught.value)
    assert caught.value.hint
    done = run_esa("read", str(lake), "acct-1")
    assert done.returncode == 1
    assert "Hint:" in done.stderr
    assert "Traceback" not in done.stderr


def test_snapshots_saved_by_threads_at_once_are_each_whole(
    lake: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    from esanalytics.domain.handler import SnapshotStore

    snapshots = SnapshotStore(lake, "accounts")
    record = {"version": 1, "state": {"memo": "m" * 50_000}}

    def save() -> None:
        for _ in range(40):
            snapshots.put("account-1", record)

    threads = [threading.Thread(target=save) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [r for r in caplog.records if "not saved" in r.getMessage()]
    assert snapshots.get("account-1") == {**record, "stream_id": "account-1"}
    assert [p.name for p in snapshots.folder.iterdir() if p.name.endswith(".tmp")] == []
