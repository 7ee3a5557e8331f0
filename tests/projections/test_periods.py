"""Golden fixtures pin what each period includes at its edges, run through DuckDB."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from esanalytics.engine import sql_time
from esanalytics.exceptions import ValidationError
from esanalytics.temporal import Period

FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "periods.json").read_text())
BASE = datetime(2024, 1, 1, tzinfo=UTC)


def at(minutes: int | None) -> str:
    return "NULL" if minutes is None else sql_time(BASE + timedelta(minutes=minutes))


def make(spec: list) -> Period:  # type: ignore[type-arg]
    kind, *bounds = spec
    if kind == "all":
        return Period.all()
    return getattr(Period, kind)(*(BASE + timedelta(minutes=m) for m in bounds))


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: "-".join(map(str, c["period"])))
def test_period_edges(case: dict) -> None:  # type: ignore[type-arg]
    period = make(case["period"])
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    events = [
        m
        for m in FIXTURE["events"]
        if con.sql(f"SELECT {period.events_sql(at(m))}").fetchall()[0][0]
    ]
    assert events == case["events"]
    states = [
        s for s in FIXTURE["states"]
        if con.sql(f"SELECT {period.states_sql(at(s[0]), at(s[1]))}").fetchall()[0][0]
    ]  # fmt: skip
    assert states == case["states"]


def test_period_needs_order_and_zones() -> None:
    with pytest.raises(ValidationError, match="before it starts"):
        Period.from_to("2024-02-01", "2024-01-01")
    with pytest.raises(ValidationError, match="no time zone"):
        Period.between(datetime(2024, 1, 1), datetime(2024, 2, 1))
