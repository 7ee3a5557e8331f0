"""Temporal SQL benchmark: projections and point-in-time questions on a compacted lake, beside
a pandas implementation of the same question and the `eventsourcing` library replaying
aggregates, in the same run.

    python3 -m uv run python benchmarks/temporal_bench.py --lake LAKE        # an existing lake
    python3 -m uv run python benchmarks/temporal_bench.py --events 10000000  # builds one first

Targets (issue 4, 10M events, 100k streams, 2 cores): full rebuild of a reducer projection
< 1 s; every entity's state as of a time < 1 s; one entity's history < 50 ms; a diff between
two times < 2 s; and at least 500x the eventsourcing replay.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

import esanalytics as esa
from esanalytics.catalog import account_balances
from esanalytics.engine import Session


def timed(fn: Any, repeat: int = 3) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def pandas_balances(lake: Path, as_of: pd.Timestamp | None) -> pd.DataFrame:
    """The same question in pandas: read the needed columns, filter, parse amounts, sum."""
    frame = pd.read_parquet(
        lake / "events",
        columns=["stream_id", "event_type", "data", "recorded_at"],
        filters=[("category", "=", "account")],
    )
    if as_of is not None:
        frame = frame[frame["recorded_at"] <= as_of]
    money = frame[frame["event_type"].isin(["MoneyDeposited", "MoneyWithdrawn"])]
    amount = money["data"].str.extract(r'"amount":([0-9.]+)')[0].astype(float)
    signed = amount.where(money["event_type"] == "MoneyDeposited", -amount)
    return signed.groupby(money["stream_id"]).sum()


def eventsourcing_replay_rate(store: esa.EventStore, events: int) -> float:
    """Events per second for the peer: load `events` events into its SQLite recorder, then
    replay every aggregate (select_events + a Python fold of the balance)."""
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

    folder = Path(tempfile.mkdtemp(prefix="esa-peer-"))
    recorder = SQLiteApplicationRecorder(
        SQLiteDatastore(str(folder / "peer.sqlite"), originator_id_type="text")
    )
    recorder.create_table()
    batch = next(store.iter_batches(categories=["account"], batch_size=events))
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lake", help="an existing (compacted) lake")
    parser.add_argument(
        "--events",
        type=int,
        default=10_000_000,
        help="size of the lake to build when --lake is not given",
    )
    parser.add_argument("--peer-events", type=int, default=200_000)
    args = parser.parse_args()
    if args.lake:
        lake = Path(args.lake)
    else:
        from esanalytics.cli import build_sample

        lake = Path(tempfile.mkdtemp(prefix="esa-temporal-")) / "lake"
        build_sample(lake, events=args.events, seed=1, fast=True)
    store = esa.open(lake)
    store.flush()  # so that pandas, a plain Parquet reader, sees every event too
    inventory = store.inventory()
    print(f"lake {lake}: {inventory.events:,} events, {inventory.streams:,} streams")
    first, last = inventory.first_recorded_at, inventory.last_recorded_at
    assert first is not None
    assert last is not None
    middle = first + (last - first) / 2
    quarter = first + (last - first) / 4
    session = Session(store)
    results: dict[str, float] = {}

    results["rebuild_s"], now_state = timed(
        lambda: account_balances.state(session).to_arrow_table()
    )
    results["as_of_s"], _then_state = timed(
        lambda: account_balances.state(session, as_of=middle).to_arrow_table()
    )
    results["valid_at_s"], _ = timed(
        lambda: account_balances.state(session, valid_at=middle).to_arrow_table()
    )
    results["diff_s"], diff = timed(
        lambda: account_balances.diff(
            session, {"as_of": quarter}, {"as_of": middle}
        ).to_arrow_table()
    )
    key = now_state["key"][len(now_state) // 2].as_py()
    results["history_ms"] = (
        1e3
        * timed(lambda: account_balances.history(session, key=key).to_arrow_table(), repeat=5)[0]
    )
    results["trail_ms"] = (
        1e3 * timed(lambda: account_balances.trail(session, key).to_arrow_table(), repeat=5)[0]
    )

    results["pandas_rebuild_s"], by_pandas = timed(lambda: pandas_balances(lake, None), repeat=1)
    results["pandas_as_of_s"], _ = timed(
        lambda: pandas_balances(lake, pd.Timestamp(middle)), repeat=1
    )
    ours = {r["key"]: float(r["balance"]) for r in now_state.select(["key", "balance"]).to_pylist()}
    assert all(abs(ours[k] - v) < 0.01 for k, v in by_pandas.items()), "pandas and DuckDB disagree"

    from esanalytics.materialized import MaterializedProjection

    view = MaterializedProjection(store, account_balances)
    results["materialize_s"], _ = timed(lambda: view.refresh(rebuild=True), repeat=1)
    accounts = [k for k in now_state["key"].to_pylist()[:2_000]]
    new_events = pa.table(
        {
            "stream_id": [accounts[i % len(accounts)] for i in range(10_000)],
            "event_type": ["MoneyDeposited"] * 10_000,
            "data": ['{"amount":1.00,"currency":"EUR"}'] * 10_000,
            "metadata": ['{"actor":"bench"}'] * 10_000,
        }
    )
    store.ingest(new_events)
    results["incremental_ms"], refreshed = timed(lambda: view.refresh(), repeat=1)
    results["incremental_ms"] *= 1e3
    assert refreshed.mode == "incremental"
    assert refreshed.new_events == 10_000
    fresh = account_balances.state(Session(store)).to_arrow_table()
    assert view.state().select(fresh.column_names).equals(fresh), (
        "incremental state differs from a rebuild"
    )

    # The same past questions answered by the materialized projection from its checkpoints
    # (one every million events), checked against the answers from the log above.
    results["view_as_of_s"], view_then = timed(lambda: view.state(as_of=middle))
    assert view_then.select(_then_state.column_names).equals(_then_state), "as-of differs"
    results["view_diff_s"], view_diff = timed(
        lambda: view.diff({"as_of": quarter}, {"as_of": middle})
    )
    assert view_diff.equals(diff), "materialized diff differs"
    results["checkpoints"] = len(view.checkpoints())

    account_events = inventory.categories.get("account", 0)
    results["our_replay_events_per_s"] = account_events / results["rebuild_s"]
    results["peer_replay_events_per_s"] = eventsourcing_replay_rate(store, args.peer_events)

    r = results
    print(f"\n{'measure':44} {'esanalytics':>12} {'pandas':>10} {'target':>10}")
    print(
        f"{'full rebuild, account_balances (s)':44} {r['rebuild_s']:12.3f} {r['pandas_rebuild_s']:10.3f} {'< 1':>10}"
    )
    print(
        f"{'every entity as of a system time (s)':44} {r['as_of_s']:12.3f} {r['pandas_as_of_s']:10.3f} {'< 1':>10}"
    )
    print(f"{'every entity at a valid time (s)':44} {r['valid_at_s']:12.3f} {'':>10} {'':>10}")
    print(
        f"{'diff between two times (s)':44} {r['diff_s']:12.3f} {'':>10} {'< 2':>10}  ({diff.num_rows:,} keys)"
    )
    print(f"{'one entity history (ms)':44} {r['history_ms']:12.1f} {'':>10} {'< 50':>10}")
    print(f"{'one entity trail with before/after (ms)':44} {r['trail_ms']:12.1f} {'':>10} {'':>10}")
    print(f"{'materialize account_balances (s)':44} {r['materialize_s']:12.3f} {'':>10} {'':>10}")
    print(
        f"{'incremental refresh, 10k new events (ms)':44} {r['incremental_ms']:12.1f} {'':>10} {'< 200':>10}"
    )
    print(
        f"{'as of a system time, from checkpoints (s)':44} {r['view_as_of_s']:12.3f} {'':>10} {'< 1':>10}"
        f"  ({r['checkpoints']:.0f} checkpoints)"
    )
    print(
        f"{'diff of two times, from checkpoints (s)':44} {r['view_diff_s']:12.3f} {'':>10} {'< 2':>10}"
    )
    ratio = r["our_replay_events_per_s"] / r["peer_replay_events_per_s"]
    print(
        f"\nreplay rate: {r['our_replay_events_per_s']:,.0f} events/s vs eventsourcing "
        f"{r['peer_replay_events_per_s']:,.0f} events/s (on its first {args.peer_events:,}): {ratio:,.0f}x (target 500x)"
    )
    print(f"pandas vs DuckDB, full rebuild: {r['pandas_rebuild_s'] / r['rebuild_s']:.1f}x")


if __name__ == "__main__":
    main()
