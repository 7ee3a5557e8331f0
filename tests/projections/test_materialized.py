"""Materialized projections: incremental refresh equals a full rebuild, swaps are atomic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import esanalytics as esa
from esanalytics.engine import Session
from esanalytics.exceptions import ValidationError
from esanalytics.materialized import MaterializedProjection
from esanalytics.projections import Projection
from tests.projections.test_reference_fold import FIELDS, PROJECTION


def full_state(lake: Path) -> list[dict[str, Any]]:
    rows = PROJECTION.state(Session(esa.open(lake), threads=1)).to_arrow_table().to_pylist()
    return [{k: r[k] for k in ("key", *FIELDS, "events", "last_position")} for r in rows]


def stored(view: MaterializedProjection) -> list[dict[str, Any]]:
    return [
        {k: r[k] for k in ("key", *FIELDS, "events", "last_position")}
        for r in view.state().to_pylist()
    ]


batch = st.lists(
    st.tuples(
        st.integers(0, 4),
        st.sampled_from(["Renamed", "Deposited", "Withdrawn", "Noted"]),
        st.integers(1, 900),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(batch, min_size=1, max_size=5), seal=st.booleans())
def test_incremental_refresh_equals_a_rebuild(tmp_path: Path, batches: list, seal: bool) -> None:  # type: ignore[type-arg]
    lake = tmp_path / f"lake{len(list(tmp_path.iterdir()))}"
    store = esa.open(lake, create=True)
    view = MaterializedProjection(store, PROJECTION)
    modes = []
    for i, events in enumerate(batches):
        for n, (stream, kind, amount) in enumerate(events):
            payload = {"name": f"n{i}-{n}"} if kind == "Renamed" else {"amount": amount}
            store.append(f"acct-{stream}", [esa.NewEvent(kind, payload)])
        if seal and i % 2:
            store.flush()
        if i == 2:
            store.compact()
        result = view.refresh()
        modes.append(result.mode)
        assert result.position == store.head
        assert stored(view) == full_state(lake)
    assert modes[0] == "rebuild"
    assert set(modes[1:]) <= {"incremental"}
    assert view.refresh().mode == "unchanged"
    assert len(list(view.folder.glob("state-*.parquet"))) == 1


def test_new_projection_version_rebuilds_and_swaps(lake: Path) -> None:
    store = esa.open(lake, create=True)
    store.ingest(pa.table({"stream_id": ["acct-1", "acct-2"], "event_type": ["Deposited"] * 2,
                           "data": ['{"amount": 5}', '{"amount": 7}'], "metadata": ["{}"] * 2}))  # fmt: skip
    MaterializedProjection(store, PROJECTION).refresh()
    newer = Projection(PROJECTION.name, PROJECTION.reducers, category="acct", version=2)
    view = MaterializedProjection(store, newer)
    assert view.refresh().mode == "rebuild"
    pointer = json.loads((view.folder / "current.json").read_text())
    assert pointer["version"] == 2
    assert [p.name for p in view.folder.glob("state-*.parquet")] == [pointer["file"]]


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return [
        {k: r[k] for k in ("key", *FIELDS, "events", "last_position")} for r in table.to_pylist()
    ]


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(batch, min_size=1, max_size=5),
    every=st.integers(1, 9),
    cuts=st.lists(st.floats(0, 1), min_size=1, max_size=4),
)
def test_past_states_from_checkpoints_equal_the_projection(
    tmp_path: Path,
    batches: list,  # type: ignore[type-arg]
    every: int,
    cuts: list[float],
) -> None:
    """As of any position or system time, and for any diff of two such cuts, a materialized
    projection answering from its checkpoints equals the projection computed from the log
    (itself checked against a plain Python fold)."""
    lake = tmp_path / f"lake{len(list(tmp_path.iterdir()))}"
    store = esa.open(lake, create=True)
    view = MaterializedProjection(store, PROJECTION, checkpoint_every=every)
    for i, events in enumerate(batches):
        for n, (stream, kind, amount) in enumerate(events):
            payload = {"name": f"n{i}-{n}"} if kind == "Renamed" else {"amount": amount}
            store.append(f"acct-{stream}", [esa.NewEvent(kind, payload)])
        if i == 1:
            store.compact()
        before = set(view.checkpoints())
        written = view.refresh().checkpoints
        # Each refresh writes exactly the marks its grid gained (a thinning refresh drops
        # others, which earlier refreshes wrote: a sum over refreshes may exceed the kept).
        assert written == len(set(view.checkpoints()) - before)
    head = store.head
    spacing = min(every * 2**k for k in range(64) if head // (every * 2**k) <= 32)  # 32 kept
    assert view.checkpoints() == list(range(spacing, head + 1, spacing))
    session = Session(store, threads=1)
    times = store.read_all().table["recorded_at"].to_pylist()
    for fraction in cuts:
        position = round(fraction * head)
        expected = _rows(PROJECTION.state(session, position=position).to_arrow_table())
        assert _rows(view.state(position=position)) == expected
        moment = times[max(position - 1, 0)]
        expected = _rows(PROJECTION.state(session, as_of=moment).to_arrow_table())
        assert _rows(view.state(as_of=moment)) == expected
    before, after = {"position": round(cuts[0] * head)}, {"position": round(cuts[-1] * head)}
    assert view.diff(before, after).to_pylist() == (
        PROJECTION.diff(session, before, after).to_arrow_table().to_pylist()
    )


def test_a_state_newer_than_the_stored_one_merges_the_events_since(lake: Path) -> None:
    store = esa.open(lake, create=True)
    view = MaterializedProjection(store, PROJECTION, checkpoint_every=0)
    store.append("acct-1", [esa.NewEvent("Deposited", {"amount": 5})])
    view.refresh()
    store.append("acct-1", [esa.NewEvent("Deposited", {"amount": 7})])
    assert _rows(view.state()) == full_state(lake)  # not yet refreshed, still current
    assert view.checkpoints() == []
    with pytest.raises(ValidationError, match="system time only"):
        view.diff({"valid_at": "2024-01-01T00:00:00Z"})
    with pytest.raises(ValidationError, match="negative"):
        MaterializedProjection(store, PROJECTION, checkpoint_every=-1)
