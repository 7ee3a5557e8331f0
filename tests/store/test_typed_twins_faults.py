"""Typed twins under faults: a writer SIGKILLed before or after it writes a twin, or at any
step of the commit that names one, and a disk that fills while a twin is written.

After each kill the lake reads the same events as before the cut operation (or with all of
its events, killed after its commit line), both verifies are clean, a re-run (compact,
vacuum) completes, and then every file has the twin ``derive()`` makes of it and no
temporary or retired file is left. Children are forked from a forkserver, as in
``test_faults.py``.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import signal
import traceback
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import esanalytics as esa
from tests.conftest import Disk, log_bytes
from tests.store.test_typed_twins import _orders, assert_twins_derived

#: Kill point, and whether the cut operation's events are in the log afterwards (True),
#: none of them (False), or it had none (None). The script: ingest 10,000 events (one file
#: and its twin), compact (one twin per partition, replacing a file with a twin), vacuum.
POINTS: list[tuple[str, bool | None]] = [
    ("typed.before_write", False),  # the events file is synced, its twin derived, not written
    ("typed.after_write", False),  # the twin is synced, not yet named by a commit
    ("ingest.before_commit", False),
    ("ingest.after_commit", True),  # the line names the twin, still a temporary file
    ("ingest.after_publish", True),
    ("typed.before_write:2", None),  # compaction's first partition
    ("typed.after_write:3", None),  # compaction's second partition (replaces two twins)
    ("compact.before_commit:2", None),
    ("compact.after_commit:2", None),
    ("compact.after_retire:2", None),
    ("compact.after_publish:2", None),
    ("vacuum.after_delete", None),
]


def _ids(count: int) -> list[str]:
    return [str(uuid.uuid5(uuid.NAMESPACE_OID, f"twin.{k}")) for k in range(count)]


def _batch() -> pa.Table:
    table = _orders(10_000, start=20_000)
    return table.append_column("event_id", pa.array(_ids(table.num_rows)))


def run_script(lake: str, spec: str) -> None:
    """The child: arm the kill point, then ingest, compact and vacuum."""
    from esanalytics.store import _faults

    _faults.arm(spec)
    store = esa.open(lake)
    store.ingest(_batch())
    store.compact()
    store.vacuum(older_than=timedelta(0))


@pytest.fixture(scope="module")
def base_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake with one twinned file of orders and a few sealed (twinless) account events."""
    path = tmp_path_factory.mktemp("twin-faults") / "lake"
    store = esa.open(path, create=True)
    store.ingest(_orders(10_000))
    for k in range(5):
        store.append(f"account-{k % 2}", [esa.NewEvent("AccountOpened", {"owner": f"o{k}"})])
    store.flush()
    return path


@pytest.fixture(scope="module")
def forkserver() -> Any:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        ["esanalytics", "pyarrow.parquet", "duckdb", "tests.store.test_typed_twins_faults"]
    )
    return context


def _check(lake: Path, before: list[str], committed: bool | None) -> None:
    """The events are the lake's before the cut operation, plus all of the ingest's (if it
    committed), in gapless positions; both verifies are clean; the twins there are right."""
    from esanalytics.audit import verify

    store = esa.open(lake)
    table = store.read_all().to_arrow()
    ids = table["event_id"].to_pylist()
    assert table["global_position"].to_pylist() == list(range(1, len(ids) + 1))
    assert ids == before + (_ids(10_000) if committed in (True, None) else [])
    quick, deep = verify(esa.open(lake)), verify(esa.open(lake), deep=True)
    assert quick.ok, str(quick)
    assert deep.ok, str(deep)
    assert_twins_derived(store, every=False)


@pytest.mark.parametrize(("point", "committed"), POINTS, ids=[p for p, _ in POINTS])
def test_a_kill_around_a_twin_loses_nothing_and_leaves_nothing(
    point: str, committed: bool | None, base_lake: Path, tmp_path: Path, forkserver: Any
) -> None:
    lake = tmp_path / "lake"
    shutil.copytree(base_lake, lake)
    before = esa.open(lake).read_all().to_arrow()["event_id"].to_pylist()
    child = forkserver.Process(target=run_script, args=(str(lake), point))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL, f"{point} was never reached ({child.exitcode})"
    _check(lake, before, committed)
    # The re-run: what was cut completes, and the lake ends as an uncut run leaves it.
    store = esa.open(lake)
    if committed is False:
        store.ingest(_batch())
    store.compact()
    store.vacuum(older_than=timedelta(0))
    _check(lake, before, True)
    assert assert_twins_derived(esa.open(lake)) == len(store.files()) == 2
    left = [p for p in lake.rglob(".*") if p.name.endswith((".tmp", ".retired"))]
    assert left == [], "debris was left behind"
    named = {Path("typed") / e.path for e in store.files()} | {
        Path("events") / e.path for e in store.files()
    }
    found = {p.relative_to(lake) for p in lake.rglob("*.parquet") if "_esa" not in p.parts}
    assert found == named


def test_a_disk_that_fills_while_a_twin_is_written_leaves_nothing(disk: Disk) -> None:
    """The events file fits, its twin does not: the ingest raises the hinted error, having
    written nothing; freed, the same ingest succeeds with its twin."""
    batch = _batch()
    scratch = esa.open(disk.path / "scratch", create=True)
    scratch.ingest(batch)
    (entry,) = scratch.files()
    assert entry.typed is not None
    shutil.rmtree(disk.path / "scratch")

    lake = disk.path / "lake"
    store = esa.open(lake, create=True)
    store.append("account-1", [esa.NewEvent("AccountOpened", {"owner": "Ada"})])
    before = log_bytes(lake)
    disk.fill(leave=entry.bytes + entry.typed.bytes // 2)
    with pytest.raises(esa.StorageError) as caught:
        store.ingest(batch)
    assert "full" in caught.value.problem
    assert caught.value.hint
    frames = traceback.extract_tb(caught.value.__cause__.__traceback__)  # type: ignore[union-attr]
    assert "_write_twin" in [frame.name for frame in frames], "the twin was not what hit it"
    assert log_bytes(lake) == before, "the refused ingest left something behind"
    assert [p for p in lake.rglob(".*") if p.is_file()] == []
    disk.free()
    store.ingest(batch)
    assert esa.open(lake).head == 10_001
    assert assert_twins_derived(esa.open(lake), every=False) == 1


def test_an_import_into_a_new_lake_that_fills_the_disk_at_a_twin_leaves_no_lake(
    disk: Disk, tmp_path: Path
) -> None:
    """The import made the lake, its events file fitted, its twin did not: no lake is left
    (not even the twins' folder), so a later run without create finds none."""
    source = tmp_path / "orders.jsonl"
    source.write_text(
        "".join(
            json.dumps({"stream_id": f"order-{i % 50}", "event_type": "OrderPlaced",
                        "data": {"n": i, "note": uuid.uuid4().hex}}) + "\n"
            for i in range(12_000)
        )
    )  # fmt: skip
    esa.import_events(disk.path / "scratch", source, create=True)
    (entry,) = esa.open(disk.path / "scratch").files()
    assert entry.typed is not None
    shutil.rmtree(disk.path / "scratch")
    lake = disk.path / "lake"
    disk.fill(leave=entry.bytes + entry.typed.bytes // 2)
    with pytest.raises(esa.StorageError) as caught:
        esa.import_events(lake, source, create=True)
    frames = traceback.extract_tb(caught.value.__cause__.__traceback__)  # type: ignore[union-attr]
    assert "_write_twin" in [frame.name for frame in frames], "the twin was not what hit it"
    assert not lake.exists()
