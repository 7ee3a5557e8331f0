"""Time in each status shows the final state too: a current state lasts until the cut (now,
the session's as-of time, or a report's pinned position), checked against pandas."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import esanalytics as esa
from esanalytics import viz
from esanalytics.audit import Scope, collect
from esanalytics.catalog import account_balances, order_status
from esanalytics.engine import Session
from esanalytics.report.charts import report_charts

ORDER = {
    "OrderPlaced": "placed", "OrderPaid": "paid", "OrderShipped": "shipped",
    "OrderDelivered": "delivered", "OrderCancelled": "cancelled",
}  # fmt: skip
ACCOUNT = {
    "AccountOpened": "open", "AccountFrozen": "frozen", "AccountUnfrozen": "open",
    "AccountClosed": "closed",
}  # fmt: skip
CUT = pd.Timestamp("2024-10-01T00:00:00Z")


@pytest.fixture(scope="module")
def events(sample_lake: Path) -> pd.DataFrame:
    return esa.open(sample_lake).read_all().to_pandas()


def oracle(
    events: pd.DataFrame, keys: list[str], mapping: dict[str, str], cut: pd.Timestamp
) -> list[dict[str, Any]]:
    """Each stay in one status, from the raw events: it ends where the next one starts, and
    the last one at the cut."""
    rows = []
    seen = events[events["recorded_at"] <= cut]
    for key in keys:
        own = seen[seen["stream_id"] == key].sort_values("global_position")
        status = own["event_type"].map(mapping).ffill()
        stays: list[list[Any]] = []
        for moment, state in zip(own["recorded_at"], status, strict=True):
            if not stays or stays[-1][1] != state:
                stays.append([moment, state])
        ends = [start for start, _ in stays[1:]] + [cut]
        rows += [
            {"key": key, "state": state, "start": start, "end": end}
            for (start, state), end in zip(stays, ends, strict=True)
        ]
    return rows


def chart_rows(chart: Any) -> list[dict[str, Any]]:
    rows = [row for data in chart.to_dict()["datasets"].values() for row in data]
    return [
        {
            "key": r["key"],
            "state": r["state"],
            "start": pd.Timestamp(r["start"]),
            "end": pd.Timestamp(r["end"]),
        }
        for r in sorted(rows, key=lambda r: (r["key"], r["start"]))
    ]


def spanning(events: pd.DataFrame, prefix: str, count: int) -> tuple[list[str], pd.Timestamp]:
    """Streams with events on both sides of a cut (so it truncates their last stay), and the
    cut: CUT, or for short-lived orders the middle of the longest-lived one."""
    by = events.groupby("stream_id")["recorded_at"].agg(["min", "max"])
    by = by[by.index.str.startswith(prefix)]
    cut = CUT
    if prefix == "order-":
        longest = (by["max"] - by["min"]).idxmax()
        cut = by.loc[longest, "min"] + (by.loc[longest, "max"] - by.loc[longest, "min"]) / 2
    chosen = by[(by["min"] < cut) & (by["max"] > cut)]
    assert len(chosen) >= count
    return sorted(chosen.index)[:count], cut


def test_the_final_stay_lasts_until_now(sample_lake: Path, events: pd.DataFrame) -> None:
    keys = sorted(events.loc[events["stream_id"].str.startswith("order-"), "stream_id"].unique())
    keys = keys[:6]
    before = pd.Timestamp.now("UTC")
    chart = viz.state_intervals(Session(esa.open(sample_lake)), projection=order_status, keys=keys)
    after = pd.Timestamp.now("UTC")
    got = chart_rows(chart)
    finals = [
        r for r in got if not any(o["key"] == r["key"] and o["start"] > r["start"] for o in got)
    ]
    assert len(finals) == len(keys)
    assert all(before.floor("ms") <= r["end"] <= after.ceil("ms") for r in finals)
    expected = oracle(events, keys, ORDER, before)
    assert [(r["key"], r["state"], r["start"]) for r in got] == [
        (r["key"], r["state"], r["start"]) for r in expected
    ]


@pytest.mark.parametrize(
    ("prefix", "projection", "mapping"),
    [("order-", order_status, ORDER), ("account-", account_balances, ACCOUNT)],
)
def test_at_an_as_of_cut_the_final_stay_ends_at_the_cut(
    sample_lake: Path, events: pd.DataFrame, prefix: str, projection: Any, mapping: dict[str, str]
) -> None:
    keys, cut = spanning(events, prefix, 1 if prefix == "order-" else 5)
    session = Session(esa.open(sample_lake), as_of=cut.to_pydatetime())
    got = chart_rows(viz.state_intervals(session, projection=projection, keys=keys))
    assert got == oracle(events, keys, mapping, cut)
    # The same from a history frame with an explicit cut.
    frame = pd.concat([projection.history(session, key=k).df() for k in keys])
    assert chart_rows(viz.state_intervals(frame, until=cut.isoformat())) == got


def test_a_reports_chart_ends_at_its_pinned_position(
    sample_lake: Path, events: pd.DataFrame
) -> None:
    store = esa.open(sample_lake)
    (key,), cut = spanning(events, "order-", 1)
    position = int(events.loc[events["recorded_at"] <= cut, "global_position"].max())
    package = collect(store, Scope("entity", key), position=position)
    pinned = events.loc[events["global_position"] == position, "recorded_at"].item()
    assert package.as_of == pinned.to_pydatetime()
    (chart,) = [c for title, c in report_charts(package) if title == "Time in each status"]
    assert chart_rows(chart) == oracle(events, [key], ORDER, pinned)
    assert chart_rows(chart)[-1]["end"] > chart_rows(chart)[-1]["start"]


def test_a_final_stay_never_ends_before_it_starts() -> None:
    frame = pd.DataFrame(
        {
            "key": ["order-1", "order-1"],
            "valid_from": pd.to_datetime(["2024-01-01", "2024-02-01"], utc=True),
            "valid_to": pd.to_datetime(["2024-02-01", None], utc=True),
            "status": ["placed", "paid"],
        }
    )
    rows = chart_rows(viz.state_intervals(frame, until=datetime(2024, 1, 15, tzinfo=UTC)))
    assert rows[-1]["end"] == rows[-1]["start"] == pd.Timestamp("2024-02-01", tz="UTC")
