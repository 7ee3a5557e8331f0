"""A full disk and a read-only lake: every write path succeeds or raises a hinted
``StorageError`` having written nothing, and the lake stays verifiable and usable.

The disk is a small tmpfs the test mounts (root only; skipped with the reason otherwise) and
fills with ``posix_fallocate`` to leave an exact number of bytes free.
"""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

import esanalytics as esa
from tests.conftest import Disk, log_bytes, run_esa

KEY = bytes(range(32))


def _events(count: int, size: int = 40) -> list[esa.NewEvent]:
    return [
        esa.NewEvent("MoneyDeposited", {"amount": k % 90 + 1, "memo": "m" * size})
        for k in range(count)
    ]


def _ids(lake: Path) -> list[str]:
    ids: list[str] = esa.open(lake).read_all().to_arrow()["event_id"].to_pylist()
    return ids


def _assert_sound(lake: Path, acknowledged: set[str]) -> None:
    """Every acknowledged event once, and both verifies clean."""
    from esanalytics.audit import verify

    ids = _ids(lake)
    assert len(ids) == len(set(ids)), "an event appears twice"
    assert acknowledged <= set(ids), "an acknowledged event is lost"
    quick, deep = verify(esa.open(lake)), verify(esa.open(lake), deep=True)
    assert quick.ok, str(quick)
    assert deep.ok, str(deep)


def _assert_hinted(error: esa.StorageError, lake: Path, problem: str, hint: str) -> None:
    assert problem in error.problem, error.problem
    assert str(lake) in error.problem, error.problem
    assert error.hint
    assert hint in error.hint


def _strays(lake: Path) -> list[Path]:
    return [p for p in lake.rglob(".*.tmp")]


def test_a_short_write_of_a_commit_line_is_never_acknowledged(disk: Disk) -> None:
    lake = disk.path / "lake"
    store = esa.open(lake, create=True)
    store.append("account-1", _events(1))
    before = log_bytes(lake)
    disk.fill(leave=64 * 1024)
    big = _events(1000, size=300)  # about 500 kB inline: more than is left
    with pytest.raises(esa.StorageError) as caught:
        store.append("account-1", big)
    assert "full" in caught.value.problem
    assert str(lake) in caught.value.problem
    assert caught.value.hint
    assert "free" in caught.value.hint
    assert isinstance(caught.value, OSError)
    assert log_bytes(lake) == before, "a refused append left something behind"
    disk.free()
    assert store.append("account-1", _events(2)).first_position == 2
    assert esa.open(lake).head == 3
    _assert_sound(lake, set(_ids(lake)))


def test_an_append_whose_seal_hits_a_full_disk_still_succeeds(disk: Disk) -> None:
    lake = disk.path / "lake"
    store = esa.open(lake, create=True)
    store.append("account-1", _events(1000, size=10))
    store.append("account-2", _events(999, size=10))  # the tail is one short of a seal
    disk.fill(leave=16 * 1024)
    event_id = str(uuid.uuid4())
    event = esa.NewEvent("MoneyDeposited", {"amount": 1}, event_id=event_id)
    commit = store.append("account-3", [event])  # commits, then the seal cannot be written
    assert commit.first_position == 2000
    assert esa.open(lake).read_stream("account-3").to_arrow()["event_id"].to_pylist() == [event_id]
    store.append("account-3", _events(1))  # and the next one too
    assert _strays(lake) == []
    disk.free()
    store.flush()
    assert esa.open(lake).unsealed().num_rows == 0
    assert esa.open(lake).head == 2001
    _assert_sound(lake, set(_ids(lake)))


def _ingest_table(count: int) -> pa.Table:
    return pa.table(
        {
            "stream_id": [f"order-{k % 7}" for k in range(count)],
            "event_type": ["OrderNoted"] * count,
            "data": ['{"note": "' + "n" * 200 + '"}'] * count,
            "metadata": ["{}"] * count,
        }
    )


def _run(path: str, store: esa.EventStore) -> set[str]:
    """One write on ``path``; the ids it wrote (as acknowledged)."""
    from esanalytics.audit import make_checkpoint
    from esanalytics.catalog import account_balances
    from esanalytics.materialized import MaterializedProjection

    if path == "append_small":
        return set(_written(store, 3, size=2000))
    if path == "append_large":
        return set(_written(store, 1500, size=120))
    if path == "ingest":
        head = store.head
        store.ingest(_ingest_table(3000))
        return set(store.read_all(from_position=head).to_arrow()["event_id"].to_pylist())
    if path == "flush":
        store.flush()
    elif path == "compact":
        store.compact()
    elif path == "export":
        make_checkpoint(store, KEY)
    elif path == "refresh":
        MaterializedProjection(store, account_balances, checkpoint_every=0).refresh()
    return set()


def _written(store: esa.EventStore, count: int, *, size: int = 40) -> list[str]:
    events = [
        esa.NewEvent(e.event_type, e.data, event_id=str(uuid.uuid4())) for e in _events(count, size)
    ]
    store.append("account-1", events)
    return [e.event_id for e in events if e.event_id is not None]


PATHS = ["append_small", "append_large", "ingest", "flush", "compact", "export", "refresh"]
LEAVE = [0, 8 * 1024, 48 * 1024, 400 * 1024]


@pytest.mark.parametrize("path", PATHS)
def test_every_write_path_on_a_full_disk_succeeds_or_writes_nothing(disk: Disk, path: str) -> None:
    lake = disk.path / "lake"
    store = esa.open(lake, create=True)
    store.ingest(_ingest_table(500))
    store.append("account-1", _events(300))
    acknowledged = set(_ids(lake))
    outcomes = []
    for leave in LEAVE:
        if path in {"flush", "export", "compact"}:
            disk.free()
            for k in range(3):  # an unsealed tail and small files for these to work on
                store.append(f"account-{k}", _events(200))
                acknowledged |= set(_ids(lake))
            if path == "compact":
                store.flush()
        events_before = _ids(lake)
        before = log_bytes(lake)
        disk.fill(leave)
        try:
            acknowledged |= _run(path, store)
        except esa.StorageError as error:
            outcomes.append("refused")
            _assert_hinted(error, lake, "full", "free")
            if path == "compact":  # partitions compacted before the disk filled stay so
                assert sorted(_ids(lake)) == sorted(events_before)
            else:
                assert log_bytes(lake) == before, f"{path} refused but wrote"
        else:
            outcomes.append("done")
        assert _strays(lake) == [], f"{path} left temporary files"
        disk.free()
        _assert_sound(lake, acknowledged)
    assert "refused" in outcomes, f"{path} never met the full disk: {outcomes}"
    # Space is back: the lake takes every kind of write.
    store = esa.open(lake)
    acknowledged |= set(_written(store, 5))
    store.flush()
    store.compact()
    _assert_sound(lake, acknowledged)


def _assert_cli_hint(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 1, done.stdout
    assert "Hint:" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_the_cli_prints_the_hint_when_the_disk_is_full(disk: Disk, tmp_path: Path) -> None:
    lake = disk.path / "lake"
    store = esa.open(lake, create=True)
    store.append("account-1", _events(1))
    from esanalytics.audit import make_key

    key = make_key(tmp_path / "key")
    disk.fill(leave=0)
    big = json.dumps({"memo": "m" * 20_000})
    _assert_cli_hint(run_esa("append", str(lake), "account-1", "MoneyDeposited", "--data", big))
    assert esa.open(lake).head == 1
    # A small one fits in the log's last page: it commits, and the seal the disk has no room
    # for is left for later, not reported as a failure of a committed append.
    done = run_esa("append", str(lake), "account-1", "MoneyDeposited", "--data", "{}")
    assert done.returncode == 0, done.stderr
    assert esa.open(lake).head == 2
    output = disk.path / "checkpoint.json"  # exporting seals first: no room
    _assert_cli_hint(run_esa("checkpoint", str(lake), "--key", str(key), "--output", str(output)))
    assert not output.exists()
    disk.free()
    fill = disk.path / "checkpoint-nearly.json"
    esa.open(lake).flush()
    disk.fill(leave=0)  # now only the output file cannot be written
    _assert_cli_hint(run_esa("checkpoint", str(lake), "--key", str(key), "--output", str(fill)))
    assert list(disk.path.glob("*checkpoint*")) == [], "a partial checkpoint file was left"
    disk.free()
    _assert_sound(lake, set(_ids(lake)))


def test_a_read_only_lake_reads_and_refuses_writes_with_a_hint(disk: Disk, tmp_path: Path) -> None:
    lake = disk.path / "lake"
    store = esa.open(lake, create=True)
    store.ingest(_ingest_table(50))
    store.append("account-1", _events(3))  # an unsealed tail
    del store
    subprocess.run(["mount", "-o", "remount,ro", str(disk.path)], check=True)
    with esa.open(lake) as reader:  # closing a handle that only read must not raise
        assert len(reader.read_all()) == 53
    with esa.open(lake) as writer:
        for write in (
            lambda: writer.append("account-1", _events(1)),
            lambda: writer.ingest(_ingest_table(5)),
            writer.flush,
            writer.compact,
        ):
            with pytest.raises(esa.StorageError) as caught:
                write()
            assert "read-only" in caught.value.problem
            assert str(lake) in caught.value.problem
            assert caught.value.hint
            assert "read" in caught.value.hint
    for args in (
        ("append", str(lake), "account-1", "MoneyDeposited", "--data", "{}"),
        ("compact", str(lake)),
        ("sql", str(lake), "SELECT count(*) FROM events"),
    ):
        done = run_esa(*args)
        assert "Traceback" not in done.stderr, done.stderr
        if args[0] == "sql":
            assert done.returncode == 0
            assert "53" in done.stdout
        else:
            _assert_cli_hint(done)
    with pytest.raises(esa.StorageError) as caught:
        esa.open(disk.path / "another", create=True)
    _assert_hinted(caught.value, disk.path / "another", "read-only", "permissions")
    with contextlib.suppress(Exception):
        subprocess.run(["mount", "-o", "remount,rw", str(disk.path)], check=True)


def test_a_command_whose_snapshot_hits_a_full_disk_still_succeeds(disk: Disk) -> None:
    from esanalytics.domain import CommandHandler, accounts

    lake = disk.path / "lake"
    bank = CommandHandler(esa.open(lake, create=True), accounts.decider, snapshot_every=1)
    bank.handle("account-1", accounts.OpenAccount(owner="Ada", overdraft_limit=0.0))
    disk.fill(leave=0)  # the next commit line fits in the log's last page; no snapshot does
    result = bank.handle("account-1", accounts.DepositMoney(amount=5.0))
    assert result.version == 2
    assert esa.open(lake).stream_version("account-1") == 2
    assert _strays(lake) == []
    disk.free()
    assert bank.state("account-1").balance == 5.0


@pytest.mark.parametrize(
    ("error", "problem", "hint"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), "read-only", "permissions"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "full", "quota"),
        (
            OSError('IO Error: {"exception_message":"No space left on device","errno":"28"}'),
            "full",
            "free",
        ),
    ],
)
def test_permission_and_quota_errors_map_to_the_hinted_error(
    error: OSError, problem: str, hint: str, tmp_path: Path
) -> None:
    """What the tmpfs cannot show as root: permission denied, a quota, DuckDB's own report."""
    from esanalytics.store.layout import storage_error

    mapped = storage_error(error, tmp_path, "the append")
    assert isinstance(mapped, esa.StorageError)
    assert isinstance(mapped, OSError)
    _assert_hinted(mapped, tmp_path, problem, hint)
    assert mapped.errno in {errno.EACCES, errno.EDQUOT, errno.ENOSPC}
    assert storage_error(FileNotFoundError(errno.ENOENT, "gone"), tmp_path, "x") is None
