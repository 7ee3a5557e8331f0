"""For random logs with back-dated and out-of-order events and random cuts on both axes,
every answer of every projection kind equals a plain Python fold."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import esanalytics as esa
from esanalytics.engine import Session
from esanalytics.projections import (
    Count,
    First,
    FoldProjection,
    Last,
    Max,
    Min,
    Projection,
    SqlProjection,
    Sum,
    data,
)

BASE = datetime(2024, 1, 1, tzinfo=UTC)
FIELDS = ("name", "first_name", "balance", "deposits", "largest", "smallest")

PROJECTION = Projection(
    "ledger",
    {
        "name": Last(data("name"), on=["Renamed"]),
        "first_name": First(data("name"), on=["Renamed"]),
        "balance": Sum(data("amount", "BIGINT"), on={"Deposited": 1, "Withdrawn": -1}),
        "deposits": Count(on=["Deposited"]),
        "largest": Max(data("amount", "BIGINT"), on=["Deposited"]),
        "smallest": Min(data("amount", "BIGINT"), on=["Deposited"]),
    },
    category="acct",
)
SQL = SqlProjection(
    "ledger_sql",
    "SELECT stream_id AS key, sum(CASE event_type WHEN 'Deposited' THEN (data->>'$.amount')::BIGINT "
    "WHEN 'Withdrawn' THEN -(data->>'$.amount')::BIGINT ELSE 0 END) AS balance "
    "FROM events WHERE category = 'acct' GROUP BY ALL",
    columns=["balance"],
)


def _step(state: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    return fold_one(state, row["event_type"], row["data"])


FOLD = FoldProjection(
    "ledger_fold",
    initial=lambda: {
        "name": None,
        "first_name": None,
        "balance": 0,
        "deposits": 0,
        "largest": None,
        "smallest": None,
    },
    step=_step,
    to_row=lambda s: {f: s[f] for f in FIELDS},
    columns=FIELDS,
    category="acct",
)


def fold_one(state: dict[str, Any], kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    state = dict(state)
    if kind == "Renamed":
        state["name"] = payload["name"]
        state["first_name"] = state["first_name"] or payload["name"]
    elif kind == "Deposited":
        state["balance"] += payload["amount"]
        state["deposits"] += 1
        state["largest"] = max(payload["amount"], state["largest"] or payload["amount"])
        state["smallest"] = min(payload["amount"], state["smallest"] or payload["amount"])
    elif kind == "Withdrawn":
        state["balance"] -= payload["amount"]
    return state


def reference(events: list[dict[str, Any]], *, as_of: datetime | None = None,
              valid_at: datetime | None = None, position: int | None = None) -> dict[str, tuple[Any, ...]]:  # fmt: skip
    """The plain fold: keep the events inside the cut, order each stream (by position, or by
    (occurred_at, version) on the valid axis), fold."""
    kept = [
        e for e in events
        if (as_of is None or e["recorded_at"] <= as_of)
        and (valid_at is None or e["occurred_at"] <= valid_at)
        and (position is None or e["position"] <= position)
    ]  # fmt: skip
    order = (
        (lambda e: (e["occurred_at"], e["version"]))
        if valid_at is not None
        else (lambda e: e["position"])
    )
    states: dict[str, dict[str, Any]] = {}
    for e in sorted(kept, key=order):
        start = states.get(e["stream"], FOLD.initial())
        states[e["stream"]] = fold_one(start, e["type"], e["data"])
    return {k: tuple(s[f] for f in FIELDS) for k, s in states.items()}


event = st.tuples(
    st.integers(0, 3),  # stream
    st.sampled_from(["Renamed", "Deposited", "Withdrawn", "Noted"]),
    st.integers(1, 1000),  # amount
    st.integers(1, 600),  # minutes after the previous recording
    st.integers(0, 2000),  # minutes back-dated (0: occurred when recorded)
)


def build(lake: Path, raw: list[tuple[int, str, int, int, int]]) -> list[dict[str, Any]]:
    recorded = BASE
    events, versions = [], {}
    for i, (stream, kind, amount, gap, back) in enumerate(raw):
        recorded += timedelta(minutes=gap)
        name = f"acct-{stream}"
        versions[name] = versions.get(name, 0) + 1
        payload = {"name": f"n{i}"} if kind == "Renamed" else {"amount": amount}
        events.append({"stream": name, "type": kind, "data": payload, "recorded_at": recorded,
                       "occurred_at": recorded - timedelta(minutes=back if back % 3 == 0 else 0),
                       "version": versions[name], "position": i + 1})  # fmt: skip
    store = esa.open(lake, create=True)
    store.ingest(
        pa.table(
            {
                "stream_id": [e["stream"] for e in events],
                "event_type": [e["type"] for e in events],
                "data": [json.dumps(e["data"]) for e in events],
                "metadata": ["{}"] * len(events),
                "recorded_at": pa.array(
                    [e["recorded_at"] for e in events], pa.timestamp("us", "UTC")
                ),
                "occurred_at": pa.array(
                    [e["occurred_at"] for e in events], pa.timestamp("us", "UTC")
                ),
            }
        )
    )
    return events


def rows(relation: Any, fields: tuple[str, ...] = FIELDS) -> dict[str, tuple[Any, ...]]:
    out = {}
    for row in relation.to_arrow_table().to_pylist():
        out[row["key"]] = tuple(row[f] for f in fields)
    return out


cut_minutes = st.one_of(st.none(), st.integers(0, 30 * 600))


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.lists(event, min_size=1, max_size=40), sys_cut=cut_minutes, valid_cut=cut_minutes,
       pos_cut=st.one_of(st.none(), st.integers(0, 45)))  # fmt: skip
def test_state_at_any_cut_equals_the_plain_fold(tmp_path: Path, raw: list, sys_cut: int | None,  # type: ignore[type-arg]
                                                valid_cut: int | None, pos_cut: int | None) -> None:  # fmt: skip
    lake = tmp_path / f"lake{len(list(tmp_path.iterdir()))}"
    events = build(lake, raw)
    session = Session(esa.open(lake), threads=1)
    cut: dict[str, Any] = {}
    if sys_cut is not None:
        cut["as_of"] = BASE + timedelta(minutes=sys_cut)
    if valid_cut is not None:
        cut["valid_at"] = BASE + timedelta(minutes=valid_cut)
    if pos_cut is not None:
        cut["position"] = pos_cut
    expected = reference(events, **cut)
    assert rows(PROJECTION.state(session, **cut)) == expected
    assert rows(FOLD.state(session, **cut)) == expected
    assert rows(SQL.state(session, **cut), ("balance",)) == {
        k: (v[2],) for k, v in expected.items()
    }
    # The same cut made by the session itself, and by SQL macros for SQL-only users.
    if "position" not in cut:
        pinned = Session(esa.open(lake), threads=1, **cut)
        assert rows(PROJECTION.state(pinned)) == expected
    if sys_cut is not None and valid_cut is None and pos_cut is None:
        PROJECTION.register(session)
        by_macro = session.sql(f"SELECT * FROM ledger_as_of('{cut['as_of'].isoformat()}')")
        assert rows(by_macro) == expected


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.lists(event, min_size=1, max_size=30), probe=st.integers(0, 25 * 600),
       axis=st.sampled_from(["system", "valid"]))  # fmt: skip
def test_history_row_in_force_equals_the_fold_at_that_time(
    tmp_path: Path, raw: list, probe: int, axis: str
) -> None:  # type: ignore[type-arg]
    lake = tmp_path / f"lake{len(list(tmp_path.iterdir()))}"
    events = build(lake, raw)
    session = Session(esa.open(lake), threads=1)
    moment = BASE + timedelta(minutes=probe)
    history = PROJECTION.history(session, axis=axis).to_arrow_table().to_pylist()  # type: ignore[arg-type]
    in_force = {
        h["key"]: tuple(h[f] for f in FIELDS)
        for h in history
        if h["valid_from"] <= moment and (h["valid_to"] is None or moment < h["valid_to"])
    }
    expected = reference(
        events, **({"as_of": moment} if axis == "system" else {"valid_at": moment})
    )
    assert in_force == expected
    for key in sorted({h["key"] for h in history})[:2]:  # the one-entity path agrees
        alone = PROJECTION.history(session, axis=axis, key=key).to_arrow_table().to_pylist()  # type: ignore[arg-type]
        assert alone == [h for h in history if h["key"] == key]
    for key in {h["key"] for h in history}:  # intervals of one key tile time without overlap
        spans = [(h["valid_from"], h["valid_to"]) for h in history if h["key"] == key]
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        assert spans[-1][1] is None


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.lists(event, min_size=1, max_size=30), t1=st.integers(0, 20 * 600), t2=st.integers(0, 20 * 600),
       since=st.integers(0, 30))  # fmt: skip
def test_diff_and_since_equal_the_fold(
    tmp_path: Path, raw: list, t1: int, t2: int, since: int
) -> None:  # type: ignore[type-arg]
    lake = tmp_path / f"lake{len(list(tmp_path.iterdir()))}"
    events = build(lake, raw)
    session = Session(esa.open(lake), threads=1)
    a_time, b_time = BASE + timedelta(minutes=t1), BASE + timedelta(minutes=t2)
    before, after = reference(events, as_of=a_time), reference(events, as_of=b_time)
    expected = {}
    for key in before.keys() | after.keys():
        if key not in before:
            expected[key] = ("added", None, after[key][2])
        elif key not in after:
            expected[key] = ("removed", before[key][2], None)
        elif before[key] != after[key]:
            expected[key] = ("changed", before[key][2], after[key][2])
    got = (
        PROJECTION.diff(session, {"as_of": a_time}, {"as_of": b_time}).to_arrow_table().to_pylist()
    )
    assert {
        r["key"]: (r["change"], r["balance_before"], r["balance_after"]) for r in got
    } == expected
    touched = {e["stream"] for e in events if e["position"] > since}
    then, now = reference(events, position=since), reference(events)
    got_since = PROJECTION.since(session, since).to_arrow_table().to_pylist()
    assert {r["key"] for r in got_since} == touched
    for r in got_since:
        assert r["balance_after"] == now[r["key"]][2]
        assert r["balance_before"] == (then[r["key"]][2] if r["key"] in then else None)
        assert r["new_events"] == sum(
            1 for e in events if e["stream"] == r["key"] and e["position"] > since
        )
