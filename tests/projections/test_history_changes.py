"""``history(changes_of=...)``: one row per change of the chosen fields, equal to a plain
Python fold over random logs (back-dated, out of order, streams that begin with an event that
changes none of the fields), on both axes, for every key or one, within a period."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import esanalytics as esa
from esanalytics.engine import Session
from esanalytics.exceptions import ValidationError
from esanalytics.temporal import Period
from tests.projections.test_reference_fold import BASE, FOLD, PROJECTION, build, event, fold_one

#: The event types that can change each field of PROJECTION.
CHANGED_BY = {
    "name": {"Renamed"},
    "first_name": {"Renamed"},
    "balance": {"Deposited", "Withdrawn"},
    "deposits": {"Deposited"},
    "largest": {"Deposited"},
    "smallest": {"Deposited"},
}
CHOICES = [["name"], ["balance"], ["deposits", "largest"], ["smallest", "first_name"],
           list(CHANGED_BY)]  # fmt: skip


def changes(
    events: list[dict[str, Any]], fields: list[str], axis: str, period: Period | None
) -> list[tuple[Any, ...]]:
    """The plain fold: each stream's states after each event (in axis order), those that
    lasted no time dropped, then runs equal on ``fields`` merged into one row."""
    time = "recorded_at" if axis == "system" else "occurred_at"
    order = (
        (lambda e: e["position"])
        if axis == "system"
        else (lambda e: (e["occurred_at"], e["version"]))
    )
    types = set().union(*(CHANGED_BY[f] for f in fields))
    out: list[tuple[Any, ...]] = []
    for stream in sorted({e["stream"] for e in events}):
        own = sorted((e for e in events if e["stream"] == stream), key=order)
        state, rows = FOLD.initial(), []
        for i, e in enumerate(own):
            state = fold_one(state, e["type"], e["data"])
            until = own[i + 1][time] if i + 1 < len(own) else None
            if until is None or until > e[time]:
                rows.append([e[time], until, tuple(state[f] for f in fields)])
        merged: list[list[Any]] = []
        for start, until, values in rows:
            if merged and merged[-1][2] == values:
                merged[-1][1] = until
            else:
                merged.append([start, until, values])
        for start, until, values in merged:
            # The row's event: the last at its start that can change the fields (or the
            # stream's first, where the state begins).
            begins = [e for e in own if e[time] == start and (e["type"] in types or e is own[0])]
            if period is not None and not (
                start < period.end and (until is None or until > period.start)  # type: ignore[operator]
            ):
                continue
            out.append((stream, start, until, *values, begins[-1]["position"]))
    return out


def got(relation: Any, fields: list[str]) -> list[tuple[Any, ...]]:
    return [
        (r["key"], r["valid_from"], r["valid_to"], *(r[f] for f in fields), r["global_position"])
        for r in relation.to_arrow_table().to_pylist()
    ]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.lists(event, min_size=1, max_size=30), fields=st.sampled_from(CHOICES),
       axis=st.sampled_from(["system", "valid"]),
       window=st.one_of(st.none(), st.tuples(st.integers(0, 9000), st.integers(0, 9000))),
       valid_cut=st.one_of(st.none(), st.integers(0, 9000)))  # fmt: skip
# The cut leaves out version 1 (it happened later than the back-dated version 2): the
# stream's state begins at version 2.
@example(raw=[(0, "Noted", 1, 600, 0), (0, "Noted", 1, 1, 1500)], fields=["name"], axis="system",
         window=None, valid_cut=300)  # fmt: skip
def test_one_row_per_change_equals_the_plain_fold(
    tmp_path: Path, raw: list, fields: list[str], axis: str, window: tuple[int, int] | None,  # type: ignore[type-arg]
    valid_cut: int | None,
) -> None:  # fmt: skip
    lake = tmp_path / f"lake{len(list(tmp_path.iterdir()))}"
    events = build(lake, raw)
    # A session cut at a valid time: a stream's first event in log order may be cut away.
    valid_at = None if valid_cut is None else BASE + timedelta(minutes=valid_cut)
    session = Session(esa.open(lake), threads=1, valid_at=valid_at)
    if valid_at is not None:
        events = [e for e in events if e["occurred_at"] <= valid_at]
    period = None
    if window is not None:
        a, b = sorted(window)
        period = Period.from_to(BASE + timedelta(minutes=a), BASE + timedelta(minutes=b))
    expected = changes(events, fields, axis, period)
    history = PROJECTION.history(session, axis=axis, changes_of=fields, period=period)  # type: ignore[arg-type]
    assert got(history, fields) == expected
    for key in sorted({e["stream"] for e in events})[:2]:  # the one-entity path agrees
        alone = PROJECTION.history(session, axis=axis, key=key, changes_of=fields, period=period)  # type: ignore[arg-type]
        assert got(alone, fields) == [r for r in expected if r[0] == key]


def test_changes_of_names_fields_of_the_projection(tmp_path: Path) -> None:
    build(tmp_path / "lake", [(0, "Deposited", 5, 1, 0)])
    session = Session(esa.open(tmp_path / "lake"), threads=1)
    for bad in (["nope"], []):
        with pytest.raises(ValidationError, match="changes_of") as caught:
            PROJECTION.history(session, changes_of=bad)
        assert "Hint: choose among name, first_name" in str(caught.value)
