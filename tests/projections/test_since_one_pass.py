"""For random logs (twins, an unsealed tail, another category, back-dated events) and random
positions and session cuts, a reducer projection's one-pass ``since`` gives exactly the
answer of the two-state computation (``_Base.since``: the state at the position and now,
joined on the touched keys), read from the twins or from the JSON: the same columns, types,
rows, order, 'added' and 'changed'."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import esanalytics as esa
from esanalytics.engine import Session
from esanalytics.projections import Projection, _Base
from tests.projections import test_reference_fold as ledger
from tests.projections.test_typed_reads import BASE, PROJECTION, build, logs, minutes
from tests.projections.test_typed_reads import reference as fold

#: The same reducers over every category: the JSON path, and keys of two categories.
EVERY_CATEGORY = Projection("every_category", PROJECTION.reducers)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=logs(), compacted=st.integers(0, 4), sys_cut=minutes, valid_cut=minutes,
       position=st.integers(0, 50))  # fmt: skip
def test_one_pass_since_equals_the_two_state_since(
    tmp_path: Path,
    batches: list[list[dict[str, Any]]],
    compacted: int,
    sys_cut: int | None,
    valid_cut: int | None,
    position: int,
) -> None:
    lake = tmp_path / f"lake{len(list(tmp_path.iterdir()))}"
    events = build(lake, batches, compacted)
    store = esa.open(lake)
    cut: dict[str, Any] = {}
    if sys_cut is not None:
        cut["as_of"] = BASE + timedelta(minutes=sys_cut)
    if valid_cut is not None:
        cut["valid_at"] = BASE + timedelta(minutes=valid_cut)
    for typed in (True, False):
        session = Session(store, threads=1, typed=typed, **cut)
        for projection in (PROJECTION, EVERY_CATEGORY):
            got = projection.since(session, position).to_arrow_table()
            expected = _Base.since(projection, session, position).to_arrow_table()
            assert got.schema == expected.schema
            assert got.to_pylist() == expected.to_pylist()
    # And the plain fold: touched keys of the projection, their state then and now.
    session = Session(store, threads=1, **cut)
    then, now = fold(events, position=position, **cut), fold(events, **cut)
    got_rows = PROJECTION.since(session, position).to_arrow_table().to_pylist()
    fields = tuple(PROJECTION.reducers)
    assert [r["key"] for r in got_rows] == sorted(
        k for k in now if any(e["position"] > position for e in _kept(events, k, **cut))
    )
    for r in got_rows:
        assert r["change"] == ("changed" if r["key"] in then else "added")
        assert tuple(r[f"{f}_after"] for f in fields) == now[r["key"]][: len(fields)]
        if r["key"] in then:
            assert tuple(r[f"{f}_before"] for f in fields) == then[r["key"]][: len(fields)]
        new = [e["position"] for e in _kept(events, r["key"], **cut) if e["position"] > position]
        assert (r["new_events"], r["last_position"]) == (len(new), max(new))


def _kept(events: list[dict[str, Any]], key: str, **cut: Any) -> list[dict[str, Any]]:
    """The events of stream ``key`` inside the session's cut."""
    return [
        e
        for e in events
        if e["stream"] == key
        and ("as_of" not in cut or e["recorded_at"] <= cut["as_of"])
        and ("valid_at" not in cut or e["occurred_at"] <= cut["valid_at"])
    ]


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.lists(ledger.event, min_size=1, max_size=30), sys_cut=ledger.cut_minutes,
       valid_cut=ledger.cut_minutes, position=st.integers(0, 32))  # fmt: skip
# The later-recorded rename occurred first: on the valid axis it is not the last name.
@example(raw=[(0, "Renamed", 1, 10, 0), (0, "Renamed", 1, 10, 1500), (0, "Renamed", 1, 10, 0)],
         sys_cut=None, valid_cut=100, position=1)  # fmt: skip
def test_one_pass_since_folds_back_dated_events_in_valid_time_order(
    tmp_path: Path,
    raw: list[tuple[int, str, int, int, int]],
    sys_cut: int | None,
    valid_cut: int | None,
    position: int,
) -> None:
    """Streams of often back-dated events (so the valid-time order differs from the log's):
    with a session's ``valid_at`` each Last and First folds in ``(occurred_at, version)``."""
    lake = tmp_path / f"lake{len(list(tmp_path.iterdir()))}"
    ledger.build(lake, raw)
    cut: dict[str, Any] = {}
    if sys_cut is not None:
        cut["as_of"] = ledger.BASE + timedelta(minutes=sys_cut)
    if valid_cut is not None:
        cut["valid_at"] = ledger.BASE + timedelta(minutes=valid_cut)
    session = Session(esa.open(lake), threads=1, **cut)
    got = ledger.PROJECTION.since(session, position).to_arrow_table()
    expected = _Base.since(ledger.PROJECTION, session, position).to_arrow_table()
    assert got.schema == expected.schema
    assert got.to_pylist() == expected.to_pylist()


def test_an_event_whose_value_is_null_sets_no_last_or_first_in_a_merge(tmp_path: Path) -> None:
    """arg_max/arg_min pass over null values, so the state after an event of the right type
    with the field missing keeps the value before it (Last) or takes the next one (First):
    since() and an incremental refresh, which merge two states, must agree with one fold."""
    from esanalytics.materialized import MaterializedProjection
    from esanalytics.projections import First, Last, data

    store = esa.open(tmp_path / "lake", create=True)
    flags = Projection(
        "flags",
        {
            "first": First(data("flag", "BOOLEAN"), on=["A"]),
            "last": Last(data("flag", "BOOLEAN"), on=["A"]),
        },
        "acct",
    )
    store.append("acct-0", [esa.NewEvent("A", {"flag": True})])
    view = MaterializedProjection(store, flags, checkpoint_every=0)
    view.refresh()
    store.append("acct-0", [esa.NewEvent("A", {})])  # the field missing: sets nothing
    store.append("acct-1", [esa.NewEvent("A", {})])
    view.refresh()
    store.append("acct-1", [esa.NewEvent("A", {"flag": False})])
    session = Session(store)
    whole = {r[0]: r[1:3] for r in flags.state(session).fetchall()}
    assert whole == {"acct-0": (True, True), "acct-1": (False, False)}
    view.refresh()  # incremental: merges the new events into the stored state
    stored = {row["key"]: (row["first"], row["last"]) for row in view.state().to_pylist()}
    assert stored == whole
    since = flags.since(session, 1).df().set_index("key")
    assert since.loc["acct-1", "first_after"] == False  # noqa: E712 (numpy bool)
    assert since.loc["acct-0", "last_after"] == True  # noqa: E712
