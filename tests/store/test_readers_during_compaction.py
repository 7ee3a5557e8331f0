"""Readers pinned to a position keep working, and keep their answer, while another process
appends, seals, compacts and vacuums; a file that moves between its names while a reader
looks for it is found, and only a file that is gone under every name is called missing."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import esanalytics as esa
from esanalytics.catalog import account_balances
from esanalytics.engine import Session
from esanalytics.materialized import MaterializedProjection
from esanalytics.projections import Projection
from esanalytics.store.layout import retired_name, tmp_name

#: Long enough for the DuckDB readers to meet the races several times on a 2-core machine;
#: ESA_STRESS_SECONDS=30 measures failure rates (run with -s to see them).
STRESS_SECONDS = float(os.environ.get("ESA_STRESS_SECONDS", "3"))
#: Readers cheap enough to try several times per round.
FAST = {"read_all", "read_stream", "iter_batches"}
QUERY = (
    "SELECT count(*), sum(global_position), count(DISTINCT stream_id), "
    "sum(CAST(data->>'$.amount' AS BIGINT)) FROM events"
)


def _fill(store: esa.EventStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        store.append(f"account-{i % 5}", [esa.NewEvent("MoneyDeposited", {"amount": i})])
        store.append(f"order-{i % 3}", [esa.NewEvent("OrderPlaced", {"total": i})])
        if i % 25 == 24:
            store.flush()


def _churn(path: str, ready: Any, stop: Any, deadline: float) -> None:
    """Append, seal, compact and vacuum (keeping nothing) as fast as possible."""
    store = esa.open(path)
    ready.set()
    i = 10_000
    while not stop.is_set() and time.monotonic() < deadline:
        for _ in range(5):
            store.append(f"account-{i % 5}", [esa.NewEvent("MoneyDeposited", {"amount": i})])
            store.append(f"order-{i % 3}", [esa.NewEvent("OrderPlaced", {"total": i})])
            i += 1
        store.flush()
        store.compact()
        store.vacuum(older_than=timedelta(0))


def _balances(table: pa.Table) -> dict[str, tuple[int, int]]:
    """The oracle for account_balances: a plain Python fold of (balance, deposits)."""
    state: dict[str, tuple[int, int]] = {}
    for row in table.to_pylist():
        if row["category"] == "account" and row["event_type"] == "MoneyDeposited":
            balance, deposits = state.get(row["stream_id"], (0, 0))
            state[row["stream_id"]] = (balance + json.loads(row["data"])["amount"], deposits + 1)
    return state


def test_pinned_readers_keep_their_answer_while_a_process_compacts(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    store = esa.open(lake, create=True)
    _fill(store, 60)
    _fill(store, 7, start=60)  # an unsealed tail too
    pinned = store.head
    expected = store.read_all(position=pinned).to_arrow()
    expected_stream = store.read_stream("account-1", position=pinned).to_arrow()
    long_lived = Session(store, position=pinned, threads=1)
    expected_sql = long_lived.sql(QUERY).fetchall()
    view = MaterializedProjection(store, account_balances, checkpoint_every=100)
    view.refresh()

    subscriber = esa.open(lake)
    subscription = subscriber.subscribe(0)
    received: list[pa.RecordBatch] = []
    sub_errors: list[BaseException] = []

    def follow() -> None:
        try:
            received.extend(subscription.batches())
        except BaseException as error:  # surfaced below
            sub_errors.append(error)

    attempts: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    first: dict[str, str] = {}

    def check(kind: str, action: Callable[[], bool]) -> None:
        attempts[kind] += 1
        try:
            ok = action()
        except Exception as error:
            ok = False
            first.setdefault(kind, f"{type(error).__name__}: {error}")
        if not ok:
            failures[kind] += 1
            first.setdefault(kind, "a different answer")

    def refreshed() -> bool:
        result = view.refresh()
        current = view.current()
        assert current is not None
        state = pq.read_table(view.folder / current["file"]).to_pylist()
        ours = {r["key"]: (int(r["balance"]), r["deposits"]) for r in state}
        return ours == _balances(store.read_all(position=result.position).to_arrow())

    checks: list[tuple[str, Callable[[], bool]]] = [
        ("read_all", lambda: store.read_all(position=pinned).to_arrow().equals(expected)),
        (
            "read_stream",
            lambda: (
                store.read_stream("account-1", position=pinned).to_arrow().equals(expected_stream)
            ),
        ),
        (
            "iter_batches",
            lambda: pa.Table.from_batches(
                list(store.iter_batches(position=pinned, batch_size=50)), expected.schema
            ).equals(expected),
        ),
        (
            "session",
            lambda: (
                Session(store, position=pinned, threads=1).sql(QUERY).fetchall() == expected_sql
            ),
        ),
        ("long-lived session", lambda: long_lived.sql(QUERY).fetchall() == expected_sql),
        ("materialized refresh", refreshed),
    ]

    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    writer = context.Process(
        target=_churn, args=(str(lake), ready, stop, time.monotonic() + 60), daemon=True
    )
    writer.start()
    follower = threading.Thread(target=follow)
    try:
        assert ready.wait(30), "the writer process did not start"
        follower.start()
        until = time.monotonic() + STRESS_SECONDS
        while time.monotonic() < until:
            for kind, action in checks:
                for _ in range(4 if kind in FAST else 1):
                    check(kind, action)
    finally:
        stop.set()
        writer.join(30)
        subscription.stop()
        follower.join(30)
    assert writer.exitcode == 0
    rates = {k: f"{failures[k]}/{attempts[k]}" for k in attempts}
    assert not failures, f"failures per reader: {rates}; first of each: {first}"
    assert not sub_errors, sub_errors
    # The subscription saw every event once, in order, as the log holds them.
    got = pa.Table.from_batches(received, expected.schema) if received else expected.slice(0, 0)
    n = got.num_rows
    assert got["global_position"].to_pylist() == list(range(1, n + 1))
    assert got.equals(store.read_all(position=n).to_arrow())
    print(f"readers during compaction, failures/attempts: {rates}")


# -- the rename race, step by step ------------------------------------------------------


def _sealed_lake(lake: Path) -> tuple[esa.EventStore, pa.Table]:
    store = esa.open(lake, create=True)
    _fill(store, 50)
    store.flush()
    return store, store.read_all().to_arrow()


def _names(events: Path, relpath: str) -> set[str]:
    return {str(events / n) for n in (relpath, tmp_name(relpath), retired_name(relpath))}


def _between_looks(
    monkeypatch: pytest.MonkeyPatch, names: set[str], moves: list[Callable[[], None]]
) -> list[Callable[[], None]]:
    """Each time a reader has just looked for the file under one of ``names`` and not found
    it, the writer makes its next move: the moment between two of the reader's checks."""
    real = os.stat
    pending = list(moves)

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        try:
            return real(path, *args, **kwargs)
        except FileNotFoundError:
            if pending and os.fspath(path) in names:
                pending.pop(0)()
            raise

    monkeypatch.setattr(os, "stat", stat)
    return pending


def _before_first_look(
    monkeypatch: pytest.MonkeyPatch, names: set[str], action: Callable[[], None]
) -> list[int]:
    """The first time a reader looks for the file (after it pinned its view), ``action``
    runs first: another handle changing the lake under the reader."""
    real = os.stat
    ran: list[int] = []

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if not ran and os.fspath(path) in names:
            ran.append(1)
            monkeypatch.setattr(os, "stat", real)  # the action's own looks are not hooked
            action()
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    return ran


@pytest.mark.parametrize("moves", [1, 2], ids=["published", "published-then-retired"])
def test_a_file_moved_between_the_readers_checks_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moves: int
) -> None:
    """A writer renames a committed file from its temporary name to its final one (and then
    a compaction retires it) while a reader checks the names one by one: the reader finds it
    and does not call the lake corrupt."""
    lake = tmp_path / "lake"
    _, expected = _sealed_lake(lake)
    events = lake / "events"
    entry = esa.open(lake).files()[0]
    final, tmp = events / entry.path, events / tmp_name(entry.path)
    retired = events / retired_name(entry.path)
    os.replace(final, tmp)  # as it is between the commit line and the rename
    reader = esa.open(lake)
    steps = [lambda: os.replace(tmp, final), lambda: os.replace(final, retired)][:moves]
    pending = _between_looks(monkeypatch, _names(events, entry.path), steps)
    assert reader.read_all().to_arrow().equals(expected)
    assert not pending, "the race was not exercised"


@pytest.mark.parametrize("read", ["read_all", "read_stream", "subscription", "snapshot"])
def test_a_file_compacted_and_vacuumed_under_a_pinned_reader_is_read_from_its_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    """A reader whose view names a file that compaction replaced and vacuum deleted reads the
    same events from the compacted file; it does not report the file as missing."""
    lake = tmp_path / "lake"
    store, _ = _sealed_lake(lake)
    reader = esa.open(lake)
    pinned = reader.head
    expected = {
        "read_all": lambda: reader.read_all(position=pinned).to_arrow(),
        "read_stream": lambda: reader.read_stream("account-2", position=pinned).to_arrow(),
        "subscription": lambda: pa.Table.from_batches(
            list(reader.subscribe(0).batches(timeout=0))
        ).slice(0, pinned),
        "snapshot": lambda: Session(reader, position=pinned, threads=1).sql(QUERY).fetchall(),
    }[read]
    before = expected()
    reader._footers.clear()  # so that the read looks for its files again
    reader._decoded.clear()

    def compact_and_vacuum() -> None:
        _fill(store, 10, start=50)
        store.compact()
        assert store.vacuum(older_than=timedelta(0)) > 0

    names = set().union(*(_names(lake / "events", e.path) for e in reader.files()))
    ran = _before_first_look(monkeypatch, names, compact_and_vacuum)
    after = expected()
    assert ran, "the race was not exercised"
    assert after == before if read == "snapshot" else after.equals(before)


def test_a_file_missing_under_every_name_is_still_corruption(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    _sealed_lake(lake)
    entry = esa.open(lake).files()[0]
    (lake / "events" / entry.path).unlink()
    with pytest.raises(esa.CorruptLakeError, match="missing") as caught:
        esa.open(lake).read_all()
    assert entry.path in str(caught.value)


# -- DuckDB sessions and materialized refreshes across a compaction ---------------------


def test_a_session_keeps_its_position_and_answer_across_a_compaction(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    store, _ = _sealed_lake(lake)
    session = Session(esa.open(lake), threads=1)
    before = session.sql(QUERY).fetchall()
    after_sql = f"SELECT count(*) FROM {session.events_after(10)}"
    after = session.sql(after_sql).fetchall()
    _fill(store, 30, start=50)
    store.compact()
    store.vacuum(older_than=timedelta(0))
    assert session.sql(QUERY).fetchall() == before  # still at the session's position
    assert session.sql(after_sql).fetchall() == after


def test_a_materialized_refresh_survives_a_compaction_in_the_middle(tmp_path: Path) -> None:
    """A projection whose SQL is built while another process compacts (here: during the
    refresh, between pinning the session and writing the state)."""
    lake = tmp_path / "lake"
    store, _ = _sealed_lake(lake)
    other = esa.open(lake)

    class CompactingWhileBuilt(Projection):
        def aggregate_sql(self, relation: str) -> str:
            _fill(other, 10, start=500)
            other.compact()
            other.vacuum(older_than=timedelta(0))
            return super().aggregate_sql(relation)

    projection = CompactingWhileBuilt(
        account_balances.name, dict(account_balances.reducers), category="account"
    )
    view = MaterializedProjection(store, projection, checkpoint_every=0)
    result = view.refresh()
    current = view.current()
    assert current is not None
    state = pq.read_table(view.folder / current["file"]).to_pylist()
    ours = {r["key"]: (int(r["balance"]), r["deposits"]) for r in state}
    assert ours == _balances(store.read_all(position=result.position).to_arrow())


def test_charts_of_a_long_lived_session_survive_a_compaction(tmp_path: Path) -> None:
    """A notebook's session draws charts after another process compacted and vacuumed."""
    from esanalytics import viz

    lake = tmp_path / "lake"
    store, _ = _sealed_lake(lake)
    session = Session(esa.open(lake), threads=1)
    before = [viz.activity_heatmap(session).to_dict(), viz.bitemporal_scatter(session).to_dict()]
    _fill(store, 30, start=50)
    store.compact()
    store.vacuum(older_than=timedelta(0))
    after = [viz.activity_heatmap(session).to_dict(), viz.bitemporal_scatter(session).to_dict()]
    assert after == before
