"""Temporal benchmark: every question issue 15 names, asked of one compacted lake with
esanalytics and, in the same run, with its peers (hand-written DuckDB SQL, plain pandas, the
`eventsourcing` library), each answer checked against its pandas peer's.

    python3 -m uv run python benchmarks/temporal_bench.py --lake LAKE        # an existing lake
    python3 -m uv run python benchmarks/temporal_bench.py --events 1000000   # builds one first
    ... --json                                                               # JSON on stdout

The lake given with --lake is only read: the incremental refresh and the materialized view
run on a copy of it (in --dir, default a temporary folder).

Three parts:

1. The ``account_balances`` rebuild beside (a) the same aggregate written by hand over the
   payload fields as typed Parquet columns (which this script writes with DuckDB first: the
   account events with ``data.amount``, ``data.payout``, ``data.overdraft_limit`` and
   ``data.owner`` as real columns), and one ``sum(amount)`` by stream over them; (b) the same
   aggregate written by hand over the lake's files, parsing the JSON (``->>``, which is
   ``json_extract_string``, per field; and one ``from_json`` per event: the better of the
   two is the "best hand-written SQL"); (c) pandas; and the rebuild again on a
   ``Session(store, typed=False)``, which reads every payload field from the JSON even where
   the lake has typed twins. Target (issue 15): the rebuild within 1.2x of the typed-column
   aggregate. The output says how many of the lake's files have typed twins (as `esa info`).
2. The ad hoc questions (:func:`questions`: one entry per question, with its esanalytics
   call and its pandas code; point an entry at a new API by changing its ``esa``), each
   timed with esanalytics and with plain pandas (reading the Parquet files itself) for the
   same answer; a question whose answers disagree fails the run. Target: about a second
   each at 10M events.
3. An incremental refresh of a materialized ``account_balances`` after 10k new events
   (target < 200 ms), answers from its checkpoints, one entity's history (target < 50 ms),
   and the replay rate beside the ``eventsourcing`` library's (target 500x).

Times are medians of ``--repeat`` runs (pandas: ``--pandas-repeat``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

import esanalytics as esa
from esanalytics import questions as qs
from esanalytics.audit.exceptions import audit_exceptions
from esanalytics.audit.trail import Scope
from esanalytics.catalog import SEGREGATION_RULES, account_balances, order_status
from esanalytics.engine import Session
from esanalytics.materialized import MaterializedProjection

ACCOUNT_STATUS = {
    "AccountOpened": "open",
    "AccountFrozen": "frozen",
    "AccountUnfrozen": "open",
    "AccountClosed": "closed",
}
ORDER_STATUS = {
    "OrderPlaced": "placed",
    "OrderPaid": "paid",
    "OrderShipped": "shipped",
    "OrderDelivered": "delivered",
    "OrderCancelled": "cancelled",
}
STATE_COLUMNS = [
    "owner",
    "status",
    "balance",
    "paid_out",
    "overdraft_limit",
    "deposits",
    "largest_deposit",
    "events",
    "last_position",
]


def say(*parts: Any) -> None:
    """Progress, on stderr (stdout carries the table, or the JSON)."""
    print(*parts, file=sys.stderr, flush=True)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float], Any]:
    """The median of ``repeat`` runs of ``fn``, every run's seconds, and the last answer."""
    times, result = [], None
    for _ in range(max(repeat, 1)):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, result


# -- the lake and the moments the questions ask about ------------------------------------------


@dataclass
class Lake:
    """One lake under test: its store and session, and the cuts every question uses."""

    path: Path
    store: esa.EventStore
    session: Session
    first: datetime
    last: datetime
    position: int

    @property
    def middle(self) -> datetime:
        return self.first + (self.last - self.first) / 2

    @property
    def quarter(self) -> datetime:
        return self.first + (self.last - self.first) / 4

    @property
    def valid(self) -> datetime:
        """The valid time of the bitemporal question: a month before the middle."""
        return self.middle - timedelta(days=30)

    @property
    def since(self) -> int:
        """The position of "changes since": the last 1% of the log."""
        return self.position - max(self.position // 100, 1)

    def read(self, columns: list[str], category: str | None = None, **filters: Any) -> pd.DataFrame:
        """What a pandas user writes: the needed columns of the lake's Parquet files."""
        where: list[tuple[str, str, Any]] = []
        if category is not None:
            where.append(("category", "=", category))
        for column, value in filters.items():
            where.append((column, "in" if isinstance(value, list) else "=", value))
        return pd.read_parquet(self.path / "events", columns=columns, filters=where or None)


def as_floats(frame: pd.DataFrame) -> pd.DataFrame:
    """DuckDB DECIMAL columns (Python Decimals) as floats, to compare with pandas."""
    for column in frame.columns:
        if frame[column].dtype == object:
            sample = frame[column].dropna()
            if len(sample) and type(sample.iloc[0]).__name__ == "Decimal":
                frame[column] = frame[column].astype(float)
    return frame


def esa_frame(table: pa.Table | pd.DataFrame) -> pd.DataFrame:
    frame = table if isinstance(table, pd.DataFrame) else table.to_pandas()
    return as_floats(frame.copy())


# -- pandas: the account state, folded by hand ----------------------------------------------------


def _number(data: pd.Series, field: str) -> pd.Series:
    return data.str.extract(rf'"{field}":(-?[0-9.]+)', expand=False).astype(float)


def _text(data: pd.Series, field: str) -> pd.Series:
    return data.str.extract(rf'"{field}":"([^"]*)"', expand=False)


def pandas_account_state(events: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """``account_balances`` in pandas: events sorted by ``order`` (the log order, or the
    valid-time order), each payload field parsed (a regular expression) only from the events
    that use it, then one group-by per field."""
    events = events.sort_values(order, kind="stable")
    kind, key = events["event_type"], events["stream_id"]
    opened, deposit = kind == "AccountOpened", kind == "MoneyDeposited"
    money = deposit | (kind == "MoneyWithdrawn")
    closed = kind == "AccountClosed"
    limits = opened | (kind == "OverdraftLimitChanged")
    statuses = kind.isin(list(ACCOUNT_STATUS))
    amount = _number(events.loc[money, "data"], "amount")
    payout = _number(events.loc[closed, "data"], "payout")
    signed = pd.concat([amount.where(deposit[money], -amount), -payout])
    state = pd.DataFrame(
        {
            "events": key.groupby(key).size(),
            "last_position": events["global_position"].groupby(key).max(),
        }
    )
    state["owner"] = _text(events.loc[opened, "data"], "owner").groupby(key[opened]).last()
    state["status"] = kind[statuses].map(ACCOUNT_STATUS).groupby(key[statuses]).last()
    state["balance"] = signed.groupby(key[signed.index]).sum()
    state["paid_out"] = payout.groupby(key[closed]).sum()
    state["overdraft_limit"] = (
        _number(events.loc[limits, "data"], "overdraft_limit").groupby(key[limits]).last()
    )
    state["deposits"] = key[deposit].groupby(key[deposit]).size()
    state["largest_deposit"] = amount[deposit[money]].groupby(key[deposit]).max()
    state[["balance", "paid_out"]] = state[["balance", "paid_out"]].fillna(0.0)
    state["deposits"] = state["deposits"].fillna(0).astype("int64")
    return state.rename_axis("key")[STATE_COLUMNS]


def pandas_state(
    lake: Lake,
    *,
    as_of: datetime | None = None,
    valid_at: datetime | None = None,
    position: int | None = None,
) -> pd.DataFrame:
    events = lake.read(
        [
            "global_position",
            "stream_id",
            "version",
            "event_type",
            "occurred_at",
            "recorded_at",
            "data",
        ],
        category="account",
    )
    if as_of is not None:
        events = events[events["recorded_at"] <= as_of]
    if valid_at is not None:
        events = events[events["occurred_at"] <= valid_at]
    if position is not None:
        events = events[events["global_position"] <= position]
    order = ["global_position"] if valid_at is None else ["occurred_at", "version"]
    return pandas_account_state(events, order)


def same_state(ours: pa.Table | pd.DataFrame, theirs: pd.DataFrame) -> None:
    """Every key, and every field of every key, equal (money to the cent)."""
    frame = esa_frame(ours).set_index("key")[STATE_COLUMNS].sort_index()
    theirs = theirs.sort_index()
    assert list(frame.index) == list(theirs.index), (
        f"keys differ: {len(frame)} by esanalytics, {len(theirs)} by pandas"
    )
    for column in STATE_COLUMNS:
        a, b = frame[column], theirs[column]
        if pd.api.types.is_numeric_dtype(b):
            bad = ~(((a.astype(float) - b.astype(float)).abs() < 0.005) | (a.isna() & b.isna()))
        else:
            bad = ~((a.astype(object) == b.astype(object)) | (a.isna() & b.isna()))
        assert not bad.any(), f"{column} differs for {bad.sum()} keys, e.g. {bad.idxmax()}"


# -- the ad hoc questions ------------------------------------------------------------------------


def pandas_diff(lake: Lake) -> pd.DataFrame:
    before = pandas_state(lake, as_of=lake.quarter)
    after = pandas_state(lake, as_of=lake.middle)
    fields = STATE_COLUMNS[:7]
    both = before[fields].join(after[fields], how="outer", suffixes=("_before", "_after"))
    added = both.index.isin(after.index) & ~both.index.isin(before.index)
    removed = both.index.isin(before.index) & ~both.index.isin(after.index)
    changed = pd.Series(False, index=both.index)
    for f in fields:
        a, b = both[f + "_before"], both[f + "_after"]
        changed |= ~((a == b) | (a.isna() & b.isna()))
    both["change"] = "changed"
    both.loc[added, "change"] = "added"
    both.loc[removed, "change"] = "removed"
    return both[added | removed | changed.to_numpy()]


def same_diff(ours: pa.Table, theirs: pd.DataFrame) -> None:
    frame = esa_frame(ours).set_index("key").sort_index()
    theirs = theirs.sort_index()
    assert list(frame.index) == list(theirs.index), "the changed keys differ"
    assert (frame["change"] == theirs["change"]).all(), "the kinds of change differ"
    gap = (frame["balance_after"].fillna(0) - theirs["balance_after"].fillna(0)).abs()
    assert (gap < 0.005).all(), "balance_after differs"


def pandas_since(lake: Lake) -> pd.DataFrame:
    """Keys touched after the position, with their events since and balance then and now:
    only the touched accounts' events are folded."""
    events = lake.read(
        ["global_position", "stream_id", "version", "event_type", "data"], category="account"
    )
    new = events[events["global_position"] > lake.since]
    touched = new.groupby("stream_id").agg(
        new_events=("global_position", "size"), last_position=("global_position", "max")
    )
    mine = events[events["stream_id"].isin(touched.index)]
    before = pandas_account_state(mine[mine["global_position"] <= lake.since], ["global_position"])
    after = pandas_account_state(mine, ["global_position"])
    out = touched.join(after[["balance"]].rename(columns={"balance": "balance_after"}))
    out = out.join(before[["balance"]].rename(columns={"balance": "balance_before"}))
    out["change"] = ["changed" if k in before.index else "added" for k in out.index]
    return out.rename_axis("key")


def same_since(ours: pa.Table, theirs: pd.DataFrame) -> None:
    frame = esa_frame(ours).set_index("key").sort_index()
    theirs = theirs.sort_index()
    assert list(frame.index) == list(theirs.index), "the touched keys differ"
    assert (frame["new_events"] == theirs["new_events"]).all(), "new_events differs"
    assert (frame["change"] == theirs["change"]).all(), "the kinds of change differ"
    gap = (frame["balance_after"] - theirs["balance_after"]).abs()
    assert (gap < 0.005).all(), "balance_after differs"


def esa_time_in_state(lake: Lake) -> pd.DataFrame:
    """Time spent in each order status: ``questions.state_intervals`` (each stay, a stay
    still open lasting until the lake's last recorded time), summed by status in SQL."""
    stays = qs.state_intervals(lake.session, order_status, "status", until=lake.last)
    return stays.query(
        "bench_stays",
        """
        SELECT state AS status, count(*) AS stays,
               sum(epoch("end") - epoch(start)) / 86400 AS total_days,
               avg(epoch("end") - epoch(start)) / 86400 AS mean_days
        FROM bench_stays GROUP BY state ORDER BY state
        """,
    ).df()


def _pandas_status_rows(lake: Lake) -> pd.DataFrame:
    """An order's status rows as ``history()`` gives them: one per status event, lasting
    until the next one, those that last no time left out."""
    events = lake.read(
        ["global_position", "stream_id", "event_type", "recorded_at"],
        category="order",
        event_type=list(ORDER_STATUS),
    )
    events = events.sort_values(["stream_id", "global_position"])
    events["status"] = events["event_type"].map(ORDER_STATUS)
    events["valid_to"] = events.groupby("stream_id")["recorded_at"].shift(-1)
    events = events[~(events["valid_to"] == events["recorded_at"])]
    return events.rename(columns={"recorded_at": "valid_from", "stream_id": "key"})


def _pandas_stays(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.sort_values(["key", "valid_from"])
    new_key = rows["key"] != rows["key"].shift()
    changed = new_key | (rows["status"] != rows["status"].shift())
    rows = rows.assign(stay=changed.cumsum())
    return rows.groupby("stay").agg(
        key=("key", "first"),
        status=("status", "first"),
        start=("valid_from", "first"),
        ended=("valid_to", "last"),
    )


def pandas_time_in_state(lake: Lake) -> pd.DataFrame:
    stays = _pandas_stays(_pandas_status_rows(lake))
    ended = stays["ended"].fillna(pd.Timestamp(lake.last))
    stays["days"] = (ended - stays["start"]).dt.total_seconds() / 86_400
    out = stays.groupby("status")["days"].agg(stays="size", total_days="sum", mean_days="mean")
    return out.reset_index()


def same_time_in_state(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    a, b = ours.set_index("status").sort_index(), theirs.set_index("status").sort_index()
    assert list(a.index) == list(b.index), "the states differ"
    assert (a["stays"] == b["stays"]).all(), "the number of stays differs"
    assert ((a["total_days"] - b["total_days"]).abs() < 1e-3).all(), "total days differ"


def esa_population(lake: Lake) -> pd.DataFrame:
    """Orders per status at the end of each day: ``questions.population``."""
    return qs.population(lake.session, order_status, "status", every="day").df()


def pandas_population(lake: Lake) -> pd.DataFrame:
    """The same count in pandas: +1 on the day an order enters a status, -1 on the day it
    leaves it, summed over every day from the first move to the last."""
    stays = _pandas_stays(_pandas_status_rows(lake)).sort_values(["key", "start"])
    stays["left_at"] = stays.groupby("key")["start"].shift(-1)
    moves = pd.concat(
        [
            pd.DataFrame(
                {"bucket": stays["start"].dt.floor("D"), "state": stays["status"], "delta": 1}
            ),
            pd.DataFrame(
                {
                    "bucket": stays["left_at"].dropna().dt.floor("D"),
                    "state": stays.loc[stays["left_at"].notna(), "status"],
                    "delta": -1,
                }
            ),
        ]
    )
    per = moves.groupby(["bucket", "state"])["delta"].sum()
    days = pd.date_range(moves["bucket"].min(), moves["bucket"].max(), freq="D")
    grid = pd.MultiIndex.from_product(
        [days, sorted(moves["state"].unique())],
        names=["bucket", "state"],
    )
    per = per.reindex(grid, fill_value=0)
    entities = per.groupby(level="state").cumsum()
    return entities.rename("entities").reset_index()


def same_population(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    a = ours.assign(bucket=pd.to_datetime(ours["bucket"], utc=True))
    a = a.set_index(["bucket", "state"])["entities"].sort_index()
    b = theirs.set_index(["bucket", "state"])["entities"].sort_index()
    assert len(a) == len(b), f"{len(a)} rows by esanalytics, {len(b)} by pandas"
    assert (a.to_numpy() == b.to_numpy()).all(), "the counts differ"
    assert list(a.index) == list(b.index), "the days or states differ"


def esa_activity(lake: Lake) -> tuple[pd.DataFrame, list[str]]:
    """Events by weekday and hour (``questions.activity``) and the spike days
    (``questions.spike_days``: at least three times the median day's events)."""
    hours = qs.activity(lake.session).df()
    spikes = qs.spike_days(lake.session, factor=3.0).fetchall()
    return hours, sorted(str(row[0]) for row in spikes)


def pandas_activity(lake: Lake) -> tuple[pd.DataFrame, list[str]]:
    recorded = lake.read(["recorded_at"])["recorded_at"]
    hours = recorded.groupby(
        [recorded.dt.hour.rename("hour"), (recorded.dt.day_of_week + 1).rename("weekday")]
    ).size()
    days = recorded.groupby(recorded.dt.floor("D")).size()
    spikes = days[days >= 3.0 * days.median()]
    return hours.rename("events").reset_index(), sorted(str(d)[:10] for d in spikes.index)


def same_activity(
    ours: tuple[pd.DataFrame, list[str]], theirs: tuple[pd.DataFrame, list[str]]
) -> None:
    a = ours[0][ours[0]["events"] > 0].set_index(["hour", "weekday"])["events"].sort_index()
    b = theirs[0].set_index(["hour", "weekday"])["events"].sort_index()
    assert list(a.index) == list(b.index), "the weekday-hour cells differ"
    assert (a.to_numpy() == b.to_numpy()).all(), "the weekday-hour counts differ"
    assert ours[1] == theirs[1], f"spike days differ: {ours[1]} and {theirs[1]}"


def esa_variants(lake: Lake) -> pa.Table:
    """Process variants of orders: ``questions.variants``."""
    return qs.variants(lake.session, category="order").to_arrow_table()


def pandas_variants(lake: Lake) -> pd.Series:
    events = lake.read(["stream_id", "version", "event_type"], category="order")
    events = events.sort_values(["stream_id", "version"])
    return events.groupby("stream_id")["event_type"].agg(" > ".join).value_counts()


def same_variants(ours: pa.Table, theirs: pd.Series) -> None:
    paths = [" > ".join(v) for v in ours["variant"].to_pylist()]
    a = dict(zip(paths, ours["entities"].to_pylist(), strict=True))
    assert a == {k: int(v) for k, v in theirs.items()}, "the variants differ"


def _whole_log(lake: Lake) -> Scope:
    return Scope("period", start=lake.first, end=lake.last + timedelta(seconds=1))


def esa_backdated(lake: Lake) -> pa.Table:
    """Back-dated events: audit_exceptions asked for that kind only."""
    return audit_exceptions(lake.session, _whole_log(lake), rules=(), kinds=["back_dated"])


def pandas_backdated(lake: Lake) -> pd.DataFrame:
    events = lake.read(["global_position", "stream_id", "occurred_at", "recorded_at"])
    return events[events["recorded_at"] - events["occurred_at"] > pd.Timedelta(days=1)]


def same_positions(ours: pa.Table, theirs: pd.DataFrame) -> None:
    a = sorted(ours["global_position"].to_pylist())
    assert a == sorted(theirs["global_position"].tolist()), "the events found differ"


def esa_segregation(lake: Lake) -> pa.Table:
    """The same actor on two steps of one entity: audit_exceptions with the domains' rules,
    asked for that kind only."""
    return audit_exceptions(
        lake.session, _whole_log(lake), rules=SEGREGATION_RULES, kinds=["segregation"]
    )


def pandas_segregation(lake: Lake) -> pd.DataFrame:
    steps = sorted({t for rule in SEGREGATION_RULES for t in (rule.first, rule.second)})
    events = lake.read(["global_position", "stream_id", "event_type", "metadata"], event_type=steps)
    events["actor"] = _text(events["metadata"], "actor")
    found = []
    for rule in SEGREGATION_RULES:
        first = events[events["event_type"] == rule.first]
        second = events[events["event_type"] == rule.second]
        pairs = second.merge(first, on=["stream_id", "actor"], suffixes=("", "_first"))
        pairs = pairs[pairs["global_position"] != pairs["global_position_first"]]
        found.append(pairs.groupby("global_position")["global_position_first"].min())
    return pd.concat(found).rename("first").reset_index()


def same_segregation(ours: pa.Table, theirs: pd.DataFrame) -> None:
    a = sorted(
        (p, int(d.rsplit(" ", 1)[1]))
        for p, d in zip(
            ours["global_position"].to_pylist(), ours["detail"].to_pylist(), strict=True
        )
    )
    b = sorted(zip(theirs["global_position"].tolist(), theirs["first"].tolist(), strict=True))
    assert a == b, f"{len(a)} breaches by esanalytics, {len(b)} by pandas"


def esa_history(lake: Lake, key: str) -> pa.Table:
    return account_balances.history(lake.session, key=key).to_arrow_table()


def pandas_history(lake: Lake, key: str) -> pd.DataFrame:
    """One account's running balance: the rows of its stream (pyarrow skips the row groups
    that cannot hold it), summed in log order."""
    events = lake.read(
        ["global_position", "stream_id", "event_type", "recorded_at", "data"],
        category="account",
        stream_id=key,
    ).sort_values("global_position")
    kind = events["event_type"]
    amount = _number(events["data"], "amount").fillna(0) * kind.map(
        {"MoneyDeposited": 1, "MoneyWithdrawn": -1}
    ).fillna(0) - _number(events["data"], "payout").fillna(0)
    return events.assign(balance=amount.cumsum())


def same_history(ours: pa.Table, theirs: pd.DataFrame) -> None:
    a = float(ours["balance"][-1].as_py())
    assert abs(a - float(theirs["balance"].iloc[-1])) < 0.005, "the final balances differ"


@dataclass(frozen=True)
class Question:
    """One ad hoc question: how esanalytics answers it (``esa``, naming the function in
    ``via``), how plain pandas does (``pandas``), and the check that both answers agree."""

    name: str
    via: str
    esa: Callable[[Lake], Any]
    pandas: Callable[[Lake], Any]
    agree: Callable[[Any, Any], None]


def questions(key: str) -> list[Question]:
    """The questions of issue 15, in its order; ``key`` is the account of the history."""
    b = account_balances
    return [
        Question(
            "every entity as of a system time",
            "account_balances.state(as_of=)",
            lambda lk: b.state(lk.session, as_of=lk.middle).to_arrow_table(),
            lambda lk: pandas_state(lk, as_of=lk.middle),
            same_state,
        ),
        Question(
            "every entity at a valid time",
            "account_balances.state(valid_at=)",
            lambda lk: b.state(lk.session, valid_at=lk.middle).to_arrow_table(),
            lambda lk: pandas_state(lk, valid_at=lk.middle),
            same_state,
        ),
        Question(
            "bitemporal: as of and valid at",
            "account_balances.state(as_of=, valid_at=)",
            lambda lk: b.state(lk.session, as_of=lk.middle, valid_at=lk.valid).to_arrow_table(),
            lambda lk: pandas_state(lk, as_of=lk.middle, valid_at=lk.valid),
            same_state,
        ),
        Question(
            "diff of two system times",
            "account_balances.diff()",
            lambda lk: b.diff(
                lk.session, {"as_of": lk.quarter}, {"as_of": lk.middle}
            ).to_arrow_table(),
            pandas_diff,
            same_diff,
        ),
        Question(
            "changes since a position (last 1%)",
            "account_balances.since()",
            lambda lk: b.since(lk.session, lk.since).to_arrow_table(),
            pandas_since,
            same_since,
        ),
        Question(
            "time in each order status",
            "questions.state_intervals() + SQL",
            esa_time_in_state,
            pandas_time_in_state,
            same_time_in_state,
        ),
        Question(
            "orders per status per day",
            "questions.population(every='day')",
            esa_population,
            pandas_population,
            same_population,
        ),
        Question(
            "activity by weekday, hour; spike days",
            "questions.activity(), spike_days()",
            esa_activity,
            pandas_activity,
            same_activity,
        ),
        Question(
            "process variants of orders",
            "questions.variants()",
            esa_variants,
            pandas_variants,
            same_variants,
        ),
        Question(
            "back-dated events (> 1 day)",
            "audit_exceptions(kinds=[back_dated])",
            esa_backdated,
            pandas_backdated,
            same_positions,
        ),
        Question(
            "same actor on two steps (SoD)",
            "audit_exceptions(kinds=[segregation])",
            esa_segregation,
            pandas_segregation,
            same_segregation,
        ),
        Question(
            "one entity's history",
            "account_balances.history(key=)",
            lambda lk: esa_history(lk, key),
            lambda lk: pandas_history(lk, key),
            same_history,
        ),
    ]


# -- part 1: the rebuild beside hand-written SQL --------------------------------------------------


def aggregate_sql(source: str) -> str:
    """``account_balances`` written by hand over ``source``: a relation with the columns
    ``amount``, ``payout``, ``overdraft_limit`` and ``owner`` beside the event's own."""
    statuses = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in ACCOUNT_STATUS.items())
    status_types = ", ".join(f"'{k}'" for k in ACCOUNT_STATUS)
    return f"""
        SELECT stream_id AS key,
          arg_max(owner, global_position) FILTER (WHERE event_type = 'AccountOpened') AS owner,
          arg_max(CASE event_type {statuses} END, global_position)
              FILTER (WHERE event_type IN ({status_types})) AS status,
          coalesce(sum(CASE event_type WHEN 'MoneyDeposited' THEN amount
                                       WHEN 'MoneyWithdrawn' THEN -amount
                                       WHEN 'AccountClosed' THEN -payout END), 0) AS balance,
          coalesce(sum(CASE WHEN event_type = 'AccountClosed' THEN payout END), 0) AS paid_out,
          arg_max(overdraft_limit, global_position)
              FILTER (WHERE event_type IN ('AccountOpened', 'OverdraftLimitChanged'))
              AS overdraft_limit,
          count(*) FILTER (WHERE event_type = 'MoneyDeposited') AS deposits,
          max(amount) FILTER (WHERE event_type = 'MoneyDeposited') AS largest_deposit,
          count(*) AS events, max(global_position) AS last_position
        FROM {source} GROUP BY stream_id
    """


BASE = "global_position, stream_id, version, event_type, occurred_at, recorded_at"
FIELDS = {
    "amount": "DECIMAL(18,2)",
    "payout": "DECIMAL(18,2)",
    "overdraft_limit": "DECIMAL(18,2)",
    "owner": "VARCHAR",
}


def rebuild_part(lake: Lake, work: Path, repeat: int, pandas_repeat: int) -> dict[str, Any]:
    """The rebuild, the typed-column aggregate, the best JSON SQL and pandas, all checked
    against one another."""
    out: dict[str, Any] = {}
    say("rebuild: account_balances.state()")
    out["rebuild_s"], out["rebuild_runs"], state = timed(
        lambda: account_balances.state(lake.session).to_arrow_table(), repeat
    )
    say("rebuild: account_balances.state() reading the JSON only (typed=False)")
    json_only = Session(lake.store, typed=False)
    try:
        out["json_only_s"], out["json_only_runs"], by_json_only = timed(
            lambda: account_balances.state(json_only).to_arrow_table(), repeat
        )
    finally:
        json_only.close()
    assert by_json_only.equals(state), "the rebuild differs with typed=False"
    files = [
        f for f in lake.store.snapshot().files if "/category=account/" in f.replace(os.sep, "/")
    ]
    listed = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
    lake_files = f"read_parquet({listed}, hive_partitioning = true)"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    typed = work / "typed-account.parquet"
    casts = ", ".join(f"TRY_CAST(data->>'$.{f}' AS {t}) AS \"data.{f}\"" for f, t in FIELDS.items())
    say("rebuild: writing the typed columns")
    started = time.perf_counter()
    con.execute(f"COPY (SELECT {BASE}, {casts} FROM {lake_files}) TO '{typed}' (FORMAT parquet)")
    out["typed_write_s"] = time.perf_counter() - started
    typed_source = (
        f"(SELECT {BASE}, "
        + ", ".join(f'"data.{f}" AS {f}' for f in FIELDS)
        + f" FROM read_parquet('{typed}'))"
    )
    say("rebuild: the typed-column aggregate")
    out["typed_s"], out["typed_runs"], by_typed = timed(
        lambda: con.sql(aggregate_sql(typed_source)).to_arrow_table(), repeat
    )
    out["typed_sum_s"], out["typed_sum_runs"], _ = timed(
        lambda: con.sql(
            f"SELECT stream_id, sum(\"data.amount\") FROM read_parquet('{typed}') GROUP BY 1"
        ).to_arrow_table(),
        repeat,
    )
    arrow_fields = ", ".join(f"TRY_CAST(data->>'$.{f}' AS {t}) AS {f}" for f, t in FIELDS.items())
    spec = "{" + ", ".join(f'"{f}": "VARCHAR"' for f in FIELDS) + "}"
    struct_fields = ", ".join(f"TRY_CAST(d.{f} AS {t}) AS {f}" for f, t in FIELDS.items())
    variants = {
        "->> per field": f"(SELECT {BASE}, {arrow_fields} FROM {lake_files})",
        "from_json once": f"(SELECT {BASE}, {struct_fields} FROM "
        f"(SELECT *, from_json(data, '{spec}') AS d FROM {lake_files}))",
    }
    out["json_sql"] = {}
    for label, source in variants.items():
        say(f"rebuild: hand-written SQL over the JSON ({label})")
        seconds, runs, by_json = timed(
            lambda source=source: con.sql(aggregate_sql(source)).to_arrow_table(), repeat
        )
        out["json_sql"][label] = {"s": seconds, "runs": runs}
        same_state(by_json, esa_frame(state).set_index("key")[STATE_COLUMNS])
    out["json_best"] = min(out["json_sql"], key=lambda k: out["json_sql"][k]["s"])
    out["json_best_s"] = out["json_sql"][out["json_best"]]["s"]
    say("rebuild: pandas")
    out["pandas_s"], out["pandas_runs"], by_pandas = timed(
        lambda: pandas_state(lake), pandas_repeat
    )
    same_state(state, by_pandas)
    same_state(by_typed, by_pandas)
    out["keys"] = state.num_rows
    out["ratio_to_typed"] = out["rebuild_s"] / out["typed_s"]
    con.close()
    return out


# -- part 3: materialized refresh, history, replay rate ------------------------------------------


def copy_lake(source: Path, target: Path) -> esa.EventStore:
    """A private copy of the lake to write to (retired files, which no reader opens, left
    behind)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.retired"))
    return esa.open(target)


def refresh_part(lake: Lake, work: Path, repeat: int) -> dict[str, Any]:
    """A materialized account_balances on a copy of the lake: the full build, then
    ``repeat`` rounds of 10k new deposits and an incremental refresh, and the past answers
    from its checkpoints checked against the log's."""
    out: dict[str, Any] = {}
    say("refresh: copying the lake")
    store = copy_lake(lake.path, work / "copy")
    view = MaterializedProjection(store, account_balances)
    started = time.perf_counter()
    view.refresh(rebuild=True)
    out["materialize_s"] = time.perf_counter() - started
    accounts = [f"account-{i}" for i in range(1, 2_001)]
    known = set(account_balances.state(Session(store)).to_arrow_table()["key"].to_pylist())
    accounts = [a for a in accounts if a in known] or sorted(known)[:2_000]
    runs = []
    for _ in range(max(repeat, 1)):
        store.ingest(
            pa.table(
                {
                    "stream_id": [accounts[i % len(accounts)] for i in range(10_000)],
                    "event_type": ["MoneyDeposited"] * 10_000,
                    "data": ['{"amount":1.00,"currency":"EUR"}'] * 10_000,
                    "metadata": ['{"actor":"bench"}'] * 10_000,
                }
            )
        )
        started = time.perf_counter()
        refreshed = view.refresh()
        runs.append(time.perf_counter() - started)
        assert refreshed.mode == "incremental", refreshed
        assert refreshed.new_events == 10_000, refreshed
    out["incremental_ms"] = 1e3 * statistics.median(runs)
    out["incremental_runs_ms"] = [1e3 * r for r in runs]
    session = Session(store)
    fresh = account_balances.state(session).to_arrow_table()
    assert view.state().select(fresh.column_names).equals(fresh), "incremental != rebuild"
    then = account_balances.state(session, as_of=lake.middle).to_arrow_table()
    out["view_as_of_s"], _, view_then = timed(lambda: view.state(as_of=lake.middle), repeat)
    assert view_then.select(then.column_names).equals(then), "as-of from checkpoints differs"
    diff = account_balances.diff(
        session, {"as_of": lake.quarter}, {"as_of": lake.middle}
    ).to_arrow_table()
    out["view_diff_s"], _, view_diff = timed(
        lambda: view.diff({"as_of": lake.quarter}, {"as_of": lake.middle}), repeat
    )
    assert view_diff.equals(diff), "diff from checkpoints differs"
    out["checkpoints"] = len(view.checkpoints())
    session.close()
    return out


def eventsourcing_replay_rate(lake: Lake, events: int, work: Path) -> float:
    """Events per second for the peer: load ``events`` account events into its SQLite
    recorder, then replay every aggregate (select_events and a Python fold of the balance)."""
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

    recorder = SQLiteApplicationRecorder(
        SQLiteDatastore(str(work / "peer.sqlite"), originator_id_type="text")
    )
    recorder.create_table()
    batch = next(lake.store.iter_batches(categories=["account"], batch_size=events))
    rows = batch.select(["stream_id", "version", "event_type", "data"]).to_pylist()
    for i in range(0, len(rows), 10_000):
        recorder.insert_events(
            [
                StoredEvent(r["stream_id"], r["version"], r["event_type"], r["data"].encode())
                for r in rows[i : i + 10_000]
            ]
        )
    streams = sorted({r["stream_id"] for r in rows})
    started = time.perf_counter()
    replayed = 0
    for stream_id in streams:
        balance = 0.0
        for stored in recorder.select_events(stream_id):
            payload = json.loads(stored.state)
            if stored.topic == "MoneyDeposited":
                balance += payload["amount"]
            elif stored.topic == "MoneyWithdrawn":
                balance -= payload["amount"]
            replayed += 1
    return replayed / (time.perf_counter() - started)


# -- the run ---------------------------------------------------------------------------------------


def run(
    lake_path: Path,
    *,
    repeat: int = 3,
    pandas_repeat: int = 3,
    peer_events: int = 200_000,
    work: Path | None = None,
    only: set[str] | None = None,
) -> dict[str, Any]:
    """Every part on the lake at ``lake_path`` (only read); returns the figures as a dict.
    ``only`` limits the run to some of ``rebuild``, ``questions``, ``refresh``, ``peer``."""
    parts = only or {"rebuild", "questions", "refresh", "peer"}
    work = Path(tempfile.mkdtemp(prefix="esa-temporal-", dir=work))
    store = esa.open(lake_path)
    session = Session(store)
    snapshot = store.snapshot()
    if snapshot.tail.num_rows:
        raise SystemExit(
            f"{lake_path} has {snapshot.tail.num_rows:,} events not yet in files, which the "
            "pandas peer (reading the files) would miss. Hint: run `esa compact` on it first."
        )
    inventory = store.inventory()
    entries = store.files()
    assert inventory.first_recorded_at is not None
    assert inventory.last_recorded_at is not None
    lake = Lake(
        lake_path,
        store,
        session,
        inventory.first_recorded_at,
        inventory.last_recorded_at,
        session.position,
    )
    say(f"lake {lake_path}: {inventory.events:,} events, {inventory.streams:,} streams")
    result: dict[str, Any] = {
        "lake": str(lake_path),
        "events": inventory.events,
        "streams": inventory.streams,
        "files": len(entries),
        "typed_twins": sum(e.typed is not None for e in entries),
        "duckdb_threads": session.con.sql("SELECT current_setting('threads')").fetchall()[0][0],
        "repeat": repeat,
        "pandas_repeat": pandas_repeat,
    }
    try:
        if "rebuild" in parts:
            result["rebuild"] = rebuild_part(lake, work, repeat, pandas_repeat)
        if "questions" in parts:
            key = session.sql(
                "SELECT stream_id FROM events WHERE category = 'account' "
                "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
            ).fetchall()[0][0]
            rows = []
            for question in questions(key):
                say(f"question: {question.name}")
                esa_s, esa_runs, ours = timed(lambda q=question: q.esa(lake), repeat)
                pandas_s, pandas_runs, theirs = timed(
                    lambda q=question: q.pandas(lake), pandas_repeat
                )
                try:
                    question.agree(ours, theirs)
                    agree: bool | str = True
                except AssertionError as error:
                    agree = f"DISAGREE: {error}"
                rows.append(
                    {
                        "question": question.name,
                        "via": question.via,
                        "esa_s": esa_s,
                        "pandas_s": pandas_s,
                        "pandas_over_esa": pandas_s / esa_s,
                        "esa_runs": esa_runs,
                        "pandas_runs": pandas_runs,
                        "agree": agree,
                    }
                )
            result["questions"] = rows
            result["trail_ms"] = (
                1e3
                * timed(
                    lambda: account_balances.trail(session, key).to_arrow_table(), max(repeat, 5)
                )[0]
            )
        if "refresh" in parts:
            result["refresh"] = refresh_part(lake, work, repeat)
        if "peer" in parts:
            say("peer: eventsourcing replay")
            rebuild_s = (
                result.get("rebuild", {}).get("rebuild_s")
                or timed(lambda: account_balances.state(session).to_arrow_table(), repeat)[0]
            )
            ours = inventory.categories.get("account", 0) / rebuild_s
            theirs = eventsourcing_replay_rate(lake, peer_events, work)
            result["replay"] = {
                "esa_events_per_s": ours,
                "peer_events_per_s": theirs,
                "peer_events": peer_events,
                "ratio": ours / theirs,
            }
    finally:
        session.close()
        shutil.rmtree(work, ignore_errors=True)
    return result


def report(r: dict[str, Any]) -> str:
    """The figures as the tables the README quotes."""
    lines = [
        f"lake {r['lake']}: {r['events']:,} events, {r['streams']:,} streams, "
        f"DuckDB threads {r['duckdb_threads']}, medians of {r['repeat']} "
        f"(pandas {r['pandas_repeat']})",
        f"typed twins {r['typed_twins']:,} of {r['files']:,} files"
        + (" (the questions read payload fields from typed columns)" if r["typed_twins"] else ""),
        "",
    ]
    if "rebuild" in r:
        b = r["rebuild"]
        rows = [
            ("account_balances.state() (the rebuild)", b["rebuild_s"], ""),
            ("the same, Session(typed=False): JSON only", b["json_only_s"], ""),
            ("the same aggregate by hand, typed columns", b["typed_s"], "target: rebuild <= 1.2x"),
            ("one sum(amount) by stream, typed columns", b["typed_sum_s"], ""),
            *[
                (
                    f"the same aggregate by hand, JSON, {k}",
                    v["s"],
                    "best" if k == b["json_best"] else "",
                )
                for k, v in b["json_sql"].items()
            ],
            ("pandas (regex per field, group-bys)", b["pandas_s"], ""),
        ]
        lines.append(
            f"{'rebuild of account_balances (' + format(b['keys'], ',') + ' keys)':48} "
            f"{'s':>8}  note"
        )
        lines += [f"{label:48} {s:8.3f}  {note}" for label, s, note in rows]
        lines.append(
            f"rebuild / typed-column aggregate: {b['ratio_to_typed']:.2f}x (target <= 1.2x); "
            f"rebuild / best JSON SQL: {b['rebuild_s'] / b['json_best_s']:.2f}x; "
            f"pandas / rebuild: {b['pandas_s'] / b['rebuild_s']:.1f}x "
            f"(typed columns written in {b['typed_write_s']:.1f} s, not counted)"
        )
        lines.append("")
    if "questions" in r:
        lines.append(
            f"{'question':40} {'esa s':>8} {'pandas s':>9} {'ratio':>7}  "
            f"{'agree':5}  esanalytics call"
        )
        for q in r["questions"]:
            agree = "yes" if q["agree"] is True else "NO"
            lines.append(
                f"{q['question']:40} {q['esa_s']:8.3f} {q['pandas_s']:9.3f} "
                f"{q['pandas_over_esa']:6.1f}x  {agree:5}  {q['via']}"
            )
        lines.append(
            "(ratio: pandas / esanalytics; target about 1 s each at 10M events; "
            "one entity's history < 50 ms)"
        )
        lines.append(f"one entity's trail with before/after: {r['trail_ms']:.1f} ms")
        for q in r["questions"]:
            if q["agree"] is not True:
                lines.append(f"  {q['question']}: {q['agree']}")
        lines.append("")
    if "refresh" in r:
        f = r["refresh"]
        lines += [
            f"materialized account_balances (on a copy): built in {f['materialize_s']:.2f} s; "
            f"incremental refresh after 10k new events {f['incremental_ms']:.0f} ms "
            f"(runs {', '.join(f'{x:.0f}' for x in f['incremental_runs_ms'])}; target < 200 ms)",
            f"from its {f['checkpoints']} checkpoints: as of a system time "
            f"{f['view_as_of_s']:.3f} s, diff of two times {f['view_diff_s']:.3f} s",
        ]
    if "replay" in r:
        p = r["replay"]
        lines.append(
            f"replay rate: {p['esa_events_per_s']:,.0f} events/s vs eventsourcing "
            f"{p['peer_events_per_s']:,.0f} events/s (on its first {p['peer_events']:,}): "
            f"{p['ratio']:,.0f}x (target 500x)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lake", help="an existing compacted lake (only read)")
    parser.add_argument(
        "--events",
        type=int,
        default=10_000_000,
        help="size of the lake to build when --lake is not given",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per esanalytics timing")
    parser.add_argument("--pandas-repeat", type=int, default=3, help="runs per pandas timing")
    parser.add_argument("--peer-events", type=int, default=200_000)
    parser.add_argument("--only", help="a comma-separated subset of rebuild,questions,refresh,peer")
    parser.add_argument("--dir", help="where to write the copies and temporary files")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    unknown = (only or set()) - {"rebuild", "questions", "refresh", "peer"}
    if unknown:
        parser.error(
            f"unknown part(s) {','.join(sorted(unknown))}: use rebuild, questions, refresh, peer"
        )
    if args.lake:
        lake = Path(args.lake)
    else:
        from esanalytics.cli import build_sample

        lake = Path(tempfile.mkdtemp(prefix="esa-temporal-", dir=args.dir)) / "lake"
        build_sample(lake, events=args.events, seed=1, fast=True)
    result = run(
        lake,
        repeat=args.repeat,
        pandas_repeat=args.pandas_repeat,
        peer_events=args.peer_events,
        work=Path(args.dir) if args.dir else None,
        only=only,
    )
    print(json.dumps(result, indent=1, default=str) if args.json else report(result))
    if any(q["agree"] is not True for q in result.get("questions", [])):
        sys.exit(1)


if __name__ == "__main__":
    main()
