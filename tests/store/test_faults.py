"""Fault injection: a writer SIGKILLed at each named step of every write path loses nothing.

A child process runs one fixed workload (small and large appends, ingest, flush, compaction,
vacuum, materialized refreshes, a checkpoint export) on a copy of a small lake, armed to kill
itself at one kill point (``esanalytics/store/_faults.py``). It journals each operation's
intent before it and its acknowledgement after it. The test then reopens the lake and checks:
every acknowledged event is there exactly once; the operation cut by the kill left all of its
events (killed after its commit line) or none (killed before); positions and versions have no
gaps; the quick and the deep verify are clean; compaction, vacuum and appends still work and
still lose nothing; a materialized projection refreshes to the same state as a fold.

Children are forked from a forkserver that has imported the package once, so each costs a
few milliseconds to start rather than the two seconds of a fresh interpreter.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import esanalytics as esa

#: The workload, in order: each step is (operation, events or None).
SCRIPT: list[tuple[str, int]] = [
    ("append", 3),
    ("append", 2),
    ("ingest", 40),
    ("append", 1_200),  # over the inline limit: written as files, like an ingest
    ("flush", 0),
    ("append", 2),
    ("compact", 0),  # seals first, then one commit per partition, then the writer index
    ("vacuum", 0),
    ("append", 2),
    ("refresh", 0),
    ("append", 1),
    ("refresh", 0),  # incremental: replaces the previous state file
    ("append", 1),
    ("export", 0),  # seals, then signs
    ("append", 1),
]

#: Kill point (with the occurrence to kill at), and whether the cut operation's events must
#: all be in the log afterwards (True), none of them (False), or it had none (None).
POINTS: list[tuple[str, bool | None]] = [
    ("append.before_commit", False),
    ("commitlog.after_write", True),  # the line is complete in the page cache: a SIGKILL keeps it
    ("append.after_commit", True),
    ("ingest.before_commit", False),
    ("ingest.after_commit", True),
    ("ingest.after_publish", True),
    ("ingest.after_commit:2", True),  # the large append
    ("seal.before_commit", None),
    ("seal.after_commit", None),
    ("seal.after_publish", None),
    ("seal.after_commit:2", None),  # compaction's own seal
    ("seal.after_commit:3", None),  # the checkpoint export's seal
    ("typed.before_write", None),  # compaction's first twin (the script's ingests are small)
    ("typed.after_write", None),
    ("compact.before_commit", None),
    ("compact.after_commit", None),
    ("compact.after_retire", None),
    ("compact.after_publish", None),
    ("compact.after_commit:2", None),
    ("writer_index.before_pointer", None),
    ("vacuum.after_delete", None),
    ("refresh.after_state", None),
    ("refresh.after_pointer", None),
    ("refresh.after_pointer:2", None),
    ("export.after_flush", None),
]

KEY = bytes(range(32))


def _event_ids(step: int, count: int) -> list[str]:
    return [str(uuid.uuid5(uuid.NAMESPACE_OID, f"{step}.{k}")) for k in range(count)]


def _deposits(ids: list[str]) -> list[esa.NewEvent]:
    return [
        esa.NewEvent("MoneyDeposited", {"amount": k % 90 + 1}, event_id=e)
        for k, e in enumerate(ids)
    ]


def run_script(lake: str, journal: str, spec: str | None) -> None:
    """The child: arm the kill point, then run SCRIPT, journaling intents and acks."""
    from esanalytics.audit import make_checkpoint
    from esanalytics.catalog import account_balances
    from esanalytics.materialized import MaterializedProjection
    from esanalytics.store import _faults

    _faults.arm(spec)
    store = esa.open(lake)
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    for step, (operation, count) in enumerate(SCRIPT):
        ids = _event_ids(step, count)
        os.write(fd, json.dumps({"step": step, "intent": ids}).encode() + b"\n")
        if operation == "append":
            store.append(f"account-{step % 3}", _deposits(ids))
        elif operation == "ingest":
            store.ingest(
                pa.table(
                    {
                        "stream_id": [f"order-{k % 4}" for k in range(count)],
                        "event_type": ["OrderNoted"] * count,
                        "data": ["{}"] * count,
                        "metadata": ["{}"] * count,
                        "event_id": ids,
                    }
                )
            )
        elif operation == "flush":
            store.flush()
        elif operation == "compact":
            store.compact()
        elif operation == "vacuum":
            store.vacuum(older_than=timedelta(0))
        elif operation == "refresh":
            MaterializedProjection(store, account_balances, checkpoint_every=0).refresh()
        elif operation == "export":
            make_checkpoint(store, KEY)
        os.write(fd, json.dumps({"step": step, "ack": True}).encode() + b"\n")


@pytest.fixture(scope="module")
def base_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small lake of two categories, sealed but not compacted (so compaction has work)."""
    path = tmp_path_factory.mktemp("faults") / "lake"
    store = esa.open(path, create=True)
    for k in range(6):
        store.append(f"account-{k % 3}", [esa.NewEvent("AccountOpened", {"owner": f"o{k}"})])
        store.append(f"order-{k % 2}", [esa.NewEvent("OrderPlaced", {"total": k})])
    store.flush()
    store.append("account-0", [esa.NewEvent("MoneyDeposited", {"amount": 7})])
    store.flush()
    return path


@pytest.fixture(scope="module")
def forkserver() -> Any:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        [
            "esanalytics",
            "esanalytics.audit",
            "esanalytics.materialized",
            "esanalytics.catalog",
            "pyarrow.parquet",
            "pyarrow.dataset",
            "duckdb",
            "tests.store.test_faults",
        ]
    )
    return context


def _journal(path: Path) -> tuple[list[list[str]], set[int], int | None]:
    intents: list[list[str]] = []
    acked: set[int] = set()
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "intent" in record:
            intents.append(record["intent"])
        else:
            acked.add(record["step"])
    cut = next((step for step in range(len(intents)) if step not in acked), None)
    return intents, acked, cut


def check_log(lake: Path, journal: Path, committed: bool | None) -> esa.EventStore:
    """Everything acknowledged is there once, the cut operation all or nothing as expected,
    positions and versions gapless, and both verifies clean."""
    from esanalytics.audit import verify

    store = esa.open(lake)
    table = store.read_all().to_arrow()
    n = table.num_rows
    assert table["global_position"].to_pylist() == list(range(1, n + 1)), "positions have gaps"
    present = table["event_id"].to_pylist()
    assert len(set(present)) == n, "an event appears twice"
    found = set(present)
    intents, acked, _ = _journal(journal)
    for step, ids in enumerate(intents):
        there = sum(i in found for i in ids)
        if step in acked:
            assert there == len(ids), f"step {step} ({SCRIPT[step][0]}) was acknowledged and lost"
        elif committed is None:
            assert not ids, f"step {step} ({SCRIPT[step][0]}) was cut, but has events"
        else:
            want = len(ids) if committed else 0
            assert there == want, f"step {step} was cut: {there} of its {len(ids)} events are in"
    for stream in pc.unique(table["stream_id"]).to_pylist():
        versions = table.filter(pc.field("stream_id") == stream)["version"].to_pylist()
        assert versions == list(range(1, len(versions) + 1)), f"{stream} has version gaps"
    quick, deep = verify(esa.open(lake)), verify(esa.open(lake), deep=True)
    assert quick.ok, str(quick)
    assert deep.ok, str(deep)
    assert (quick.events, deep.events) == (n, n)
    return store


@pytest.mark.parametrize(("point", "committed"), POINTS, ids=[p for p, _ in POINTS])
def test_kill_at_each_point_loses_nothing(
    point: str, committed: bool | None, base_lake: Path, tmp_path: Path, forkserver: Any
) -> None:
    from esanalytics.catalog import account_balances
    from esanalytics.engine import Session
    from esanalytics.materialized import MaterializedProjection

    lake = tmp_path / "lake"
    shutil.copytree(base_lake, lake)
    journal = tmp_path / "journal.jsonl"
    journal.touch()
    child = forkserver.Process(target=run_script, args=(str(lake), str(journal), point))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL, f"{point} was never reached ({child.exitcode})"
    _, _, cut = _journal(journal)
    assert cut is not None

    check_log(lake, journal, committed)
    # What a user does next: compact (which recovers), vacuum at once, append; nothing lost.
    store = esa.open(lake)
    store.compact()
    store.vacuum(older_than=timedelta(0))
    check_log(lake, journal, committed)
    store = esa.open(lake)
    head = store.head
    assert store.append("account-9", _deposits(_event_ids(99, 2))).first_position == head + 1
    store.compact()
    store.vacuum(older_than=timedelta(0))
    after = check_log(lake, journal, committed)
    assert after.head == head + 2
    assert list(lake.rglob(".*.parquet.tmp")) == [], "debris was left behind"
    # A materialized projection cut mid-refresh refreshes to the state a fold computes.
    view = MaterializedProjection(after, account_balances, checkpoint_every=0)
    view.refresh()
    stored = sorted(view.state().select(["key", "balance", "deposits"]).to_pylist(), key=str)
    folded = account_balances.state(Session(after)).to_arrow_table()
    assert stored == sorted(folded.select(["key", "balance", "deposits"]).to_pylist(), key=str)


def test_the_environment_variable_arms_a_kill_point(base_lake: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    shutil.copytree(base_lake, lake)
    code = (
        "import esanalytics as esa; s = esa.open(__import__('sys').argv[1]); "
        "s.append('account-1', [esa.NewEvent('MoneyDeposited', {'amount': 1})])"
    )
    env = {**os.environ, "ESA_KILL_AT": "append.after_commit"}
    done = subprocess.run([sys.executable, "-c", code, str(lake)], env=env, timeout=60)
    assert done.returncode == -signal.SIGKILL
    store = esa.open(lake)
    assert store.read_stream("account-1").to_arrow()["event_type"][-1].as_py() == "MoneyDeposited"


def test_vacuum_never_deletes_the_last_copy_of_an_event(
    base_lake: Path, tmp_path: Path, forkserver: Any
) -> None:
    """If a compaction's new file is lost (as recovery used to delete it), vacuum keeps the
    files it replaced: they hold the last copies of those events."""
    lake = tmp_path / "lake"
    shutil.copytree(base_lake, lake)
    child = forkserver.Process(target=_compact_child, args=(str(lake), "compact.after_commit"))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL
    (new,) = (lake / "events").rglob(".c*.parquet.tmp")  # (its twin stays: no matter)
    new.unlink()  # what the old recovery did
    store = esa.open(lake)
    assert store.vacuum(older_than=timedelta(0)) == 0
    assert len(list(lake.rglob(".*.parquet.retired"))) >= 1


def _compact_child(lake: str, spec: str) -> None:
    from esanalytics.store import _faults

    _faults.arm(spec)
    esa.open(lake).compact()
