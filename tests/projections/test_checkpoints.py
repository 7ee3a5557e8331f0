"""Checkpoints of materialized projections on a spacing that grows with the lake: the grid
they sit on, thinning and filling in, answers from whichever of a checkpoint and the log
reads less, and the write guarantees (kill points, a full disk, verify)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import esanalytics as esa
from esanalytics.audit import verify
from esanalytics.engine import Session
from esanalytics.exceptions import CorruptLakeError, ValidationError
from esanalytics.materialized import MaterializedProjection, stored_state_problems
from tests.conftest import Disk, log_bytes, run_esa
from tests.projections.test_reference_fold import FIELDS, PROJECTION


def grid(head: int, every: int, most: int | None) -> list[int]:
    """The positions checkpoints belong at, said another way: the finest spacing
    ``every * 2**k`` that fits at most ``most`` multiples into the log."""
    if not every:
        return []
    spacing = min(every * 2**k for k in range(64) if most is None or head // (every * 2**k) <= most)
    return [m for m in range(1, head + 1) if m % spacing == 0]


def rows(table: pa.Table) -> list[dict[str, Any]]:
    return [
        {k: r[k] for k in ("key", *FIELDS, "events", "last_position")} for r in table.to_pylist()
    ]


def append(store: esa.EventStore, events: list[tuple[int, str, int]], tag: str) -> None:
    for n, (stream, kind, amount) in enumerate(events):
        payload = {"name": f"{tag}-{n}"} if kind == "Renamed" else {"amount": amount}
        store.append(f"acct-{stream}", [esa.NewEvent(kind, payload)])


def on_disk(view: MaterializedProjection) -> dict[str, str]:
    """The checkpoint files the pointer records, checked to be exactly those on disk."""
    current = view.current()
    assert current is not None
    recorded = dict(current["checkpoints"])
    assert sorted(recorded) == sorted(p.name for p in view.folder.glob("checkpoint-*")), (
        "a checkpoint file on disk that the pointer does not name, or the reverse"
    )
    return recorded


batch = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.sampled_from(["Renamed", "Deposited", "Withdrawn", "Noted"]),
        st.integers(1, 900),
    ),
    min_size=1,
    max_size=15,
)
setting = st.tuples(st.integers(0, 6), st.sampled_from([None, 1, 2, 3, 5]))


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.tuples(batch, setting, st.sampled_from(["", "flush", "compact"])), max_size=5, min_size=1
    ),
    cuts=st.lists(st.floats(0, 1), min_size=1, max_size=3),
)
def test_checkpoints_follow_the_grid_and_every_answer_equals_the_log(
    tmp_path: Path,
    steps: list[tuple[list[tuple[int, str, int]], tuple[int, int | None], str]],
    cuts: list[float],
) -> None:
    """Refreshed with a spacing and a bound that change from one refresh to the next (so
    checkpoints are thinned, and filled in on a finer grid), a view keeps exactly the grid's
    checkpoints, writes each once, and answers as of any position or system time, and any
    diff of two cuts, exactly as the projection computed from the log (itself checked
    against a plain Python fold)."""
    lake = tmp_path / f"lake{len(list(tmp_path.iterdir()))}"
    store = esa.open(lake, create=True)
    view = MaterializedProjection(store, PROJECTION)
    for i, (events, (every, most), seal) in enumerate(steps):
        append(store, events, str(i))
        if seal == "flush":
            store.flush()
        elif seal == "compact":
            store.compact()
        before = view.current()
        kept = dict(before["checkpoints"]) if before else {}
        view = MaterializedProjection(
            store, PROJECTION, checkpoint_every=every, max_checkpoints=most
        )
        done = view.refresh()
        expected = grid(store.head, every, most)
        assert view.checkpoints() == expected
        recorded = on_disk(view)
        fresh = [name for name in recorded if name not in kept]
        assert done.checkpoints == len(fresh)
        assert all(recorded[name] == kept[name] for name in recorded if name in kept), (
            "a kept checkpoint was rewritten"
        )
        assert stored_state_problems(store) == []
    assert view.refresh().mode == "unchanged"
    head = store.head
    session = Session(store, threads=1)
    times = store.read_all().table["recorded_at"].to_pylist()
    for fraction in cuts:
        position = round(fraction * head)
        expected_rows = rows(PROJECTION.state(session, position=position).to_arrow_table())
        assert rows(view.state(position=position)) == expected_rows
        moment = times[max(position - 1, 0)]
        expected_rows = rows(PROJECTION.state(session, as_of=moment).to_arrow_table())
        assert rows(view.state(as_of=moment)) == expected_rows
    for cut in ("position", "as_of"):
        a, b = (round(cuts[0] * head), round(cuts[-1] * head))
        before_cut, after_cut = (
            ({"position": a}, {"position": b})
            if cut == "position"
            else ({"as_of": times[max(a - 1, 0)]}, {"as_of": times[max(b - 1, 0)]})
        )
        assert view.diff(before_cut, after_cut).to_pylist() == (
            PROJECTION.diff(session, before_cut, after_cut).to_arrow_table().to_pylist()
        )


def sealed_lake(
    lake: Path, *, batches: int = 12, size: int = 20, streams: int = 3
) -> esa.EventStore:
    """A lake of ``batches`` sealed files of ``size`` events over ``streams`` accounts (few
    keys, many events: what checkpoints are for)."""
    store = esa.open(lake, create=True)
    for b in range(batches):
        append(store, [(n % streams, "Deposited", b * size + n) for n in range(size)], str(b))
        store.flush()
    return store


def test_an_answer_starts_from_a_checkpoint_only_when_it_reads_fewer_rows(lake: Path) -> None:
    store = sealed_lake(lake)
    view = MaterializedProjection(store, PROJECTION, checkpoint_every=20)
    view.refresh()
    assert view.checkpoints() == list(range(20, 241, 20))
    session = Session(store, threads=1)
    times = store.read_all().table["recorded_at"].to_pylist()
    assert view.start(position=230) == 220  # 3 rows and one file of 20, not 230 events
    assert view.start(as_of=times[229]) == 220
    assert view.start(position=15) == 0  # no checkpoint before it: the log
    assert view.start(position=25) == 20  # 3 + 20 rows from the checkpoint, 40 from the log
    assert view.start(position=240) == 240  # the stored state itself
    for position in (15, 25, 230):
        expected = rows(PROJECTION.state(session, position=position).to_arrow_table())
        assert rows(view.state(position=position)) == expected
        # As of the time position was recorded: from the checkpoint before it, the events
        # after it cut by recorded time (no lookup of the cut's position needed).
        expected = rows(PROJECTION.state(session, as_of=times[position - 1]).to_arrow_table())
        assert rows(view.state(as_of=times[position - 1])) == expected
    cuts = ({"as_of": times[24]}, {"as_of": times[229]})
    assert (
        view.diff(*cuts).to_pylist() == PROJECTION.diff(session, *cuts).to_arrow_table().to_pylist()
    )
    # Every event a new key: a checkpoint holds as many rows as the log, so it never helps.
    wide = esa.open(lake.parent / "wide", create=True)
    for b in range(6):
        for n in range(20):
            wide.append(f"acct-{b}-{n}", [esa.NewEvent("Deposited", {"amount": n})])
        wide.flush()
    spread = MaterializedProjection(wide, PROJECTION, checkpoint_every=20)
    spread.refresh()
    assert spread.checkpoints() == list(range(20, 121, 20))
    assert [spread.start(position=p) for p in (45, 90, 119)] == [0, 0, 0]
    expected = rows(PROJECTION.state(Session(wide), position=90).to_arrow_table())
    assert rows(spread.state(position=90)) == expected


def test_a_growing_log_thins_checkpoints_without_recomputing_the_ones_kept(lake: Path) -> None:
    store = sealed_lake(lake, batches=2)
    view = MaterializedProjection(store, PROJECTION, checkpoint_every=10, max_checkpoints=4)
    assert view.refresh().checkpoints == 4
    assert view.checkpoints() == [10, 20, 30, 40]
    first = on_disk(view)
    append(store, [(1, "Deposited", n) for n in range(45)], "more")  # head 85: spacing 20
    done = view.refresh()
    assert (done.mode, done.new_events, done.checkpoints) == ("incremental", 45, 2)
    assert view.checkpoints() == [20, 40, 60, 80] == grid(85, 10, 4)
    after = on_disk(view)
    for name in ("checkpoint-v1-000000000020.parquet", "checkpoint-v1-000000000040.parquet"):
        assert after[name] == first[name]
    session = Session(store)
    for position in (15, 45, 70, 85):
        expected = rows(PROJECTION.state(session, position=position).to_arrow_table())
        assert rows(view.state(position=position)) == expected


def test_a_finer_grid_is_filled_in_without_rewriting_the_state(lake: Path) -> None:
    """A view materialized with the old default (one checkpoint every million events: none
    here) gets the grid's checkpoints on its next refresh, with no new events."""
    store = sealed_lake(lake, batches=3)
    MaterializedProjection(store, PROJECTION, checkpoint_every=1_000_000).refresh()
    view = MaterializedProjection(store, PROJECTION, checkpoint_every=15)
    state = view.current()
    assert state is not None
    assert view.checkpoints() == []
    done = view.refresh()
    assert (done.mode, done.new_events, done.checkpoints) == ("incremental", 0, 4)
    assert view.checkpoints() == [15, 30, 45, 60]
    current = view.current()
    assert current is not None
    assert (current["file"], current["sha256"]) == (state["file"], state["sha256"])
    assert view.refresh().mode == "unchanged"
    session = Session(store)
    for position in (20, 50):
        expected = rows(PROJECTION.state(session, position=position).to_arrow_table())
        assert rows(view.state(position=position)) == expected
    with pytest.raises(ValidationError, match="keeps no checkpoint"):
        MaterializedProjection(store, PROJECTION, max_checkpoints=0)


def test_an_altered_checkpoint_an_answer_needs_is_refused_and_verify_names_it(lake: Path) -> None:
    store = sealed_lake(lake)
    view = MaterializedProjection(store, PROJECTION, checkpoint_every=20)
    view.refresh()
    assert view.start(position=230) == 220
    path = view.folder / "checkpoint-v1-000000000220.parquet"
    pq.write_table(pq.read_table(path).slice(1), path)
    with pytest.raises(CorruptLakeError, match="rebuild"):
        view.state(position=230)
    with pytest.raises(CorruptLakeError, match="rebuild"):
        view.diff({"position": 10}, {"position": 230})
    assert [p for p, _ in stored_state_problems(store)] == [str(path)]
    view.refresh(rebuild=True)
    assert stored_state_problems(store) == []
    expected = rows(PROJECTION.state(Session(store), position=230).to_arrow_table())
    assert rows(view.state(position=230)) == expected


# -- the write guarantees ---------------------------------------------------------------------

_REFRESH = """
import sys, esanalytics as esa
from tests.projections.test_reference_fold import PROJECTION
from esanalytics.materialized import MaterializedProjection
MaterializedProjection(esa.open(sys.argv[1]), PROJECTION, checkpoint_every=10, max_checkpoints=4).refresh()
"""


@pytest.mark.parametrize(
    "point", ["refresh.after_copy:2", "refresh.after_state", "refresh.after_pointer"]
)
def test_a_thinning_refresh_killed_midway_loses_no_answer(lake: Path, point: str) -> None:
    """Killed while it writes new checkpoints and drops every other old one: before the
    pointer is swapped, the old checkpoints all stand; after it, the new ones do; either way
    every answer equals the log's, verify is clean, and the next refresh leaves no debris."""
    store = sealed_lake(lake, batches=2)
    view = MaterializedProjection(store, PROJECTION, checkpoint_every=10, max_checkpoints=4)
    view.refresh()
    old = on_disk(view)
    append(store, [(2, "Deposited", n) for n in range(45)], "more")
    done = subprocess.run(
        [sys.executable, "-c", _REFRESH, str(lake)],
        env={**os.environ, "ESA_KILL_AT": point},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == -9, done.stderr
    current = view.current()
    assert current is not None
    swapped = point == "refresh.after_pointer"
    assert view.checkpoints() == ([20, 40, 60, 80] if swapped else [10, 20, 30, 40])
    if not swapped:
        assert dict(current["checkpoints"]) == old
    assert stored_state_problems(store) == []
    session = Session(esa.open(lake))
    for position in (15, 35, 70, 85):
        expected = rows(PROJECTION.state(session, position=position).to_arrow_table())
        assert rows(view.state(position=position)) == expected
    view.refresh()
    assert view.checkpoints() == [20, 40, 60, 80]
    on_disk(view)  # no debris
    assert not [p for p in view.folder.iterdir() if p.name.endswith(".tmp")]
    assert verify(lake).ok


def test_a_refresh_with_checkpoints_on_a_full_disk_writes_nothing_or_succeeds(disk: Disk) -> None:
    lake = disk.path / "lake"
    store = sealed_lake(lake, batches=2)
    view = MaterializedProjection(store, PROJECTION, checkpoint_every=10, max_checkpoints=4)
    view.refresh()
    outcomes = []
    for leave in (0, 8 * 1024, 48 * 1024, 400 * 1024):
        append(store, [(n % 3, "Deposited", n) for n in range(25)], f"l{leave}")
        store.flush()
        before = log_bytes(lake)
        disk.fill(leave)
        try:
            view.refresh()
        except esa.StorageError as error:
            outcomes.append(str(error))
            disk.free()
            assert log_bytes(lake) == before, "a refused refresh wrote"
        else:
            outcomes.append("done")
            disk.free()
            assert view.checkpoints() == grid(store.head, 10, 4)
        on_disk(view)
        assert stored_state_problems(store) == []
        session = Session(store)
        for position in (15, store.head - 3):
            expected = rows(PROJECTION.state(session, position=position).to_arrow_table())
            assert rows(view.state(position=position)) == expected
    refused = [o for o in outcomes if o != "done"]
    assert refused, outcomes
    assert all("Hint:" in o for o in refused), refused
    view.refresh()
    assert view.checkpoints() == grid(store.head, 10, 4)


def test_the_materialize_command_bounds_the_checkpoints(lake: Path) -> None:
    import json

    store = esa.open(lake, create=True)
    for n in range(40):
        store.append(f"account-{n % 4}", [esa.NewEvent("MoneyDeposited", {"amount": n})])
    done = run_esa(
        "materialize", str(lake), "account_balances", "--checkpoint-every", "5",
        "--max-checkpoints", "3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["checkpoints_kept"] == len(grid(40, 5, 3)) == 2
    refused = run_esa("materialize", str(lake), "account_balances", "--max-checkpoints", "0")
    assert refused.returncode == 1
    assert "--max-checkpoints" in refused.stderr
    assert "Hint:" in refused.stderr
    assert "Traceback" not in refused.stderr
