"""The analyst's questions as data (esanalytics.questions), each equal to a plain Python or
pandas computation over the raw events: time in each state and entities per state for every
entity, with no limit on days (the chart draws coarser buckets and says so), process
variants, activity by weekday and hour, and spike days."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import pyarrow as pa
import pytest

import esanalytics as esa
from esanalytics import questions, viz
from esanalytics.catalog import account_balances, order_status
from esanalytics.engine import Session
from esanalytics.exceptions import ValidationError
from tests.test_viz_intervals import ACCOUNT, CUT, ORDER, oracle

CASES = [(order_status, ORDER, "order-"), (account_balances, ACCOUNT, "account-")]


@pytest.fixture(scope="module")
def events(sample_lake: Path) -> pd.DataFrame:
    return esa.open(sample_lake).read_all().to_pandas()


def _rows(chart: alt.TopLevelMixin) -> pd.DataFrame:
    spec = chart.to_dict()  # raises MaxRowsError past 5,000 rows
    return pd.DataFrame([row for rows in spec["datasets"].values() for row in rows])


def _bucket(moment: pd.Timestamp, every: str) -> pd.Timestamp:
    day = moment.floor("D")
    if every == "day":
        return day
    if every == "week":
        return day - pd.Timedelta(days=day.weekday())
    return day.replace(day=1)


def population_at(
    events: pd.DataFrame, mapping: dict[str, str], every: str, time: str = "recorded_at"
) -> tuple[pd.Timestamp, Callable[[pd.Timestamp], dict[str, int]]]:
    """The plain fold: at the end of a bucket, each entity is in the state its last status
    event (in axis order) of that bucket or before put it in; counted per state. Returns the
    first bucket with any entity, and the counts at the end of a bucket."""
    order = ["global_position"] if time == "recorded_at" else ["occurred_at", "version"]
    moves = events[events["event_type"].isin(mapping)].sort_values(order)
    per_stream: dict[str, tuple[list[pd.Timestamp], list[str]]] = {}
    for stream, moment, kind in zip(
        moves["stream_id"], moves[time], moves["event_type"], strict=True
    ):
        buckets, states = per_stream.setdefault(stream, ([], []))
        buckets.append(_bucket(moment, every))
        states.append(mapping[kind])

    def at(bucket: pd.Timestamp) -> dict[str, int]:
        tally: dict[str, int] = {}
        for buckets, states in per_stream.values():
            # The last status event of the bucket or before, in axis order.
            seen = [i for i, b in enumerate(buckets) if b <= bucket]
            if seen:
                tally[states[seen[-1]]] = tally.get(states[seen[-1]], 0) + 1
        return tally

    return min(b[0] for b, _ in per_stream.values()), at


def _as_counts(frame: pd.DataFrame) -> dict[pd.Timestamp, dict[str, int]]:
    out: dict[pd.Timestamp, dict[str, int]] = {}
    for bucket, state, entities in zip(
        frame["bucket"], frame["state"], frame["entities"], strict=True
    ):
        if entities:
            out.setdefault(pd.Timestamp(bucket), {})[state] = int(entities)
        else:
            out.setdefault(pd.Timestamp(bucket), {})
    return out


@pytest.mark.parametrize(("projection", "mapping", "prefix"), CASES)
@pytest.mark.parametrize(
    ("every", "axis"), [("day", "system"), ("week", "valid"), ("month", "system")]
)
def test_population_equals_the_plain_fold_at_every_bucket(
    sample_lake: Path, events: pd.DataFrame, projection: Any, mapping: dict[str, str],
    prefix: str, every: str, axis: str,
) -> None:  # fmt: skip
    session = Session(esa.open(sample_lake))
    got = questions.population(session, projection, "status", every=every, axis=axis).df()  # type: ignore[arg-type]
    time = "recorded_at" if axis == "system" else "occurred_at"
    first, expected = population_at(events, mapping, every, time)
    buckets = sorted(pd.Timestamp(b) for b in got["bucket"].unique())
    assert buckets[0] == first
    step = {"day": pd.DateOffset(days=1), "week": pd.DateOffset(weeks=1), "month": pd.DateOffset(months=1)}[every]  # fmt: skip
    assert buckets == [first + i * step for i in range(len(buckets))]  # every bucket, no gap
    by_bucket = _as_counts(got)
    for bucket in buckets:
        assert by_bucket[bucket] == expected(bucket), bucket
    # The last bucket holds the counts now: each entity's current status.
    now = projection.state(session).df()
    assert by_bucket[buckets[-1]] == now["status"].value_counts().to_dict()
    if every == "week" and axis == "valid":
        # The chart draws the same numbers.
        chart = _rows(viz.population(session, "status", projection=projection, every="week", axis="valid"))  # fmt: skip
        assert (
            _as_counts(chart.assign(bucket=pd.to_datetime(chart["bucket"], utc=True))) == by_bucket
        )


@pytest.mark.parametrize(("projection", "mapping", "prefix"), CASES)
def test_time_in_each_state_of_every_entity_equals_pandas(
    sample_lake: Path, events: pd.DataFrame, projection: Any, mapping: dict[str, str], prefix: str
) -> None:
    session = Session(esa.open(sample_lake), as_of=CUT.to_pydatetime())
    got = questions.state_intervals(session, projection, "status").df()
    keys = sorted(events.loc[(events["stream_id"].str.startswith(prefix)) & (events["recorded_at"] <= CUT), "stream_id"].unique())  # fmt: skip
    expected = oracle(events, keys, mapping, CUT)
    assert [
        {"key": k, "state": s, "start": pd.Timestamp(a), "end": pd.Timestamp(b)}
        for k, s, a, b in zip(got["key"], got["state"], got["start"], got["end"], strict=True)
    ] == expected
    assert got.groupby("key")["open"].sum().eq(1).all()  # the last stay of each is open
    assert got["open"].tolist() == [not got["key"].iloc[i + 1 : i + 2].eq(k).any() for i, k in enumerate(got["key"])]  # fmt: skip
    days = ((got["end"] - got["start"]).dt.total_seconds() / 86_400).round(1)
    assert got["days"].tolist() == days.tolist()
    some = keys[:3]
    alone = questions.state_intervals(session, projection, "status", keys=some).df()
    assert alone.to_dict("records") == got[got["key"].isin(some)].to_dict("records")
    assert questions.state_intervals(session, projection, "status", keys=[]).fetchall() == []


def _long_lake(path: Path) -> tuple[Session, list[dict[str, Any]]]:
    """Six orders over 1,200 days, each through every status: a day grid of 6,000 rows."""
    start = datetime(2020, 1, 1, tzinfo=UTC)
    steps = ["OrderPlaced", "OrderPaid", "OrderShipped", "OrderDelivered"]
    rows = []
    for day in range(0, 1_200, 7):
        order = f"order-{day % 6}"
        kind = "OrderCancelled" if day % 5 == 0 else steps[(day // 6) % 4]
        rows.append({"stream_id": order, "event_type": kind, "recorded_at": start + timedelta(days=day, hours=day % 24)})  # fmt: skip
    rows.sort(key=lambda r: r["recorded_at"])
    store = esa.open(path, create=True)
    store.ingest(
        pa.table(
            {
                "stream_id": [r["stream_id"] for r in rows],
                "event_type": [r["event_type"] for r in rows],
                "data": [json.dumps({"amount": 1})] * len(rows),
                "metadata": ["{}"] * len(rows),
                "recorded_at": pa.array(
                    [r["recorded_at"] for r in rows], pa.timestamp("us", "UTC")
                ),
            }
        )
    )
    return Session(store), rows


def test_population_has_no_limit_on_days_and_the_chart_says_when_it_draws_weeks(
    tmp_path: Path,
) -> None:
    session, rows = _long_lake(tmp_path / "lake")
    got = questions.population(session, order_status, "status", every="day").df()
    assert len(got) > viz.MAX_ROWS  # 1,197 days x 5 statuses: more than a chart holds
    frame = pd.DataFrame(rows).assign(global_position=range(1, len(rows) + 1))
    first, expected = population_at(frame, ORDER, "day")
    by_bucket = _as_counts(got)
    assert len(by_bucket) == (max(r["recorded_at"] for r in rows) - first).days + 1
    for bucket in list(by_bucket)[::37]:
        assert by_bucket[bucket] == expected(bucket)
    chart = viz.population(session, "status", projection=order_status, every="day")
    assert "by week (by day would pass the 5,000 rows a chart holds)" in chart.to_dict()["title"]
    weekly = _rows(chart)
    assert 0 < len(weekly) <= viz.MAX_ROWS
    by_week = questions.population(session, order_status, "status", every="week").df()
    assert len(weekly) == len(by_week)
    assert weekly["entities"].tolist() == by_week["entities"].tolist()
    monthly = viz.population(session, "status", projection=order_status, every="month")
    assert "would pass" not in monthly.to_dict()["title"]  # drawn as asked


def test_variants_equal_pandas(session_all: Session, events: pd.DataFrame) -> None:
    paths = (
        events.sort_values(["stream_id", "version"]).groupby("stream_id")["event_type"].agg(tuple)
    )
    counted = paths.value_counts()
    got = questions.variants(session_all).df()
    assert {
        tuple(v): n for v, n in zip(got["variant"], got["entities"], strict=True)
    } == counted.to_dict()
    assert got["entities"].is_monotonic_decreasing
    assert got["share"].sum() == pytest.approx(1.0)
    assert all(len(v) == n for v, n in zip(got["variant"], got["events"], strict=True))
    firsts = paths.reset_index().groupby("event_type")["stream_id"].min()
    assert {
        tuple(v): e for v, e in zip(got["variant"], got["example"], strict=True)
    } == firsts.to_dict()
    orders = questions.variants(session_all, category="order").df()
    assert orders["entities"].sum() == paths.index.str.startswith("order-").sum()


@pytest.fixture(scope="module")
def session_all(sample_lake: Path) -> Session:
    return Session(esa.open(sample_lake))


@pytest.mark.parametrize("axis", ["system", "valid"])
def test_activity_and_spike_days_equal_pandas(
    session_all: Session, events: pd.DataFrame, axis: str
) -> None:
    time = events["recorded_at" if axis == "system" else "occurred_at"]
    got = questions.activity(session_all, axis=axis).df()  # type: ignore[arg-type]
    assert len(got) == 24 * 7
    expected = time.groupby([time.dt.hour, time.dt.day_of_week + 1]).size()
    cells = got[got["events"] > 0].set_index(["hour", "weekday"])["events"]
    assert cells.to_dict() == expected.to_dict()
    weekly = questions.activity(session_all, by="week", axis=axis).df()  # type: ignore[arg-type]
    assert weekly["events"].sum() == len(events)
    assert (
        len(weekly)
        == 7 * time.dt.floor("D").sub(pd.to_timedelta(time.dt.day_of_week, unit="D")).nunique()
    )
    late = ((time.dt.hour < 8) | (time.dt.hour >= 19)).groupby([time.dt.hour, time.dt.day_of_week + 1]).mean()  # fmt: skip
    assert got.set_index(["hour", "weekday"]).loc[late.index, "after_hours_pct"].tolist() == (100 * late).round(1).tolist()  # fmt: skip
    daily = time.dt.floor("D").value_counts()
    spikes = questions.spike_days(session_all, factor=1.5, axis=axis).df()  # type: ignore[arg-type]
    over = daily[daily >= 1.5 * daily.median()]
    assert {pd.Timestamp(d, tz="UTC"): n for d, n in zip(spikes["day"], spikes["events"], strict=True)} == over.to_dict()  # fmt: skip
    with pytest.raises(ValidationError, match="factor"):
        questions.spike_days(session_all, factor=0)


def test_questions_name_what_is_wrong(session_all: Session) -> None:
    with pytest.raises(ValidationError, match="no field 'nope'") as caught:
        questions.population(session_all, order_status, "nope")
    assert "Hint: choose one of customer, status" in str(caught.value)
    with pytest.raises(ValidationError, match="Unknown bucket"):
        questions.population(session_all, order_status, every="year")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="Unknown heatmap grouping"):
        questions.activity(session_all, by="minute")  # type: ignore[arg-type]


def test_the_population_chart_of_a_history_frame_of_any_length_names_missing_columns(
    session_all: Session,
) -> None:
    history = account_balances.history(session_all).df()  # one row per event: many
    assert len(history) > viz.MAX_ROWS
    rows = _rows(viz.population(history, "status", every="month"))
    by_session = _rows(viz.population(session_all, "status", projection=account_balances, every="month"))  # fmt: skip
    assert rows.equals(by_session)
    with pytest.raises(ValidationError, match="needs the column") as caught:
        viz.population(history.drop(columns=["valid_to"]), "status")
    assert "valid_to" in str(caught.value)
