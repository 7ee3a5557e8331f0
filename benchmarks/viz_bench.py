"""Chart benchmark: every esanalytics.viz builder on a lake (seconds to build, rows carried,
which must stay under Altair's 5,000), and for the two whole-lake aggregations the same
numbers computed by pandas from the Parquet files, in the same run, as a ratio.

    python3 -m uv run python benchmarks/viz_bench.py --lake LAKE
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import pyarrow.dataset as ds

import esanalytics as esa
from esanalytics import viz
from esanalytics.catalog import account_balances, order_status
from esanalytics.engine import Session


def _timed(make: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = make()
    return time.perf_counter() - started, out


def main() -> None:
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # as the esa CLI does
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lake", required=True)
    args = parser.parse_args()
    store = esa.open(args.lake)
    session = Session(store)
    total = session.sql("SELECT count(*) FROM events").fetchall()[0][0]
    refund = session.sql(
        "SELECT metadata->>'$.correlation_id' FROM events WHERE event_type = 'OrderRefunded' LIMIT 1"
    ).fetchall()[0][0]
    orders = [f"order-{i}" for i in range(1, 26)]
    builders: dict[str, Callable[[], Any]] = {
        "state_evolution, 4 accounts": lambda: viz.state_evolution(
            session, "balance", projection=account_balances,
            keys=["account-1", "account-2", "account-3", "account-42"],
        ),
        "entity_timeline, 1 account": lambda: viz.entity_timeline(
            session, projection=account_balances, key="account-42"
        ),
        "state_intervals, 25 orders": lambda: viz.state_intervals(
            session, projection=order_status, keys=orders
        ),
        "activity_heatmap, whole lake": lambda: viz.activity_heatmap(session),
        "activity_heatmap by week": lambda: viz.activity_heatmap(session, by="week"),
        "bitemporal_scatter, whole lake": lambda: viz.bitemporal_scatter(session),
        "as_of_view, 1 account": lambda: viz.as_of_view(session, key="account-42"),
        "causation_tree, 1 correlation": lambda: viz.causation_tree(session, refund),
        "population, all accounts": lambda: viz.population(
            session, "status", projection=account_balances
        ),
    }  # fmt: skip
    print(f"{total:,} events in the lake")
    print(f"{'chart':34} {'seconds':>8} {'rows':>6}")
    took: dict[str, float] = {}
    for label, make in builders.items():
        seconds, chart = _timed(make)
        rows = sum(len(v) for v in chart.to_dict()["datasets"].values())
        assert rows <= viz.MAX_ROWS, label
        took[label] = seconds
        print(f"{label:34} {seconds:8.2f} {rows:6,}")
    # The same two whole-lake questions in pandas, from the same Parquet files.
    files = ds.dataset(str(store.path / "events"), format="parquet", partitioning="hive")
    seconds, _ = _timed(
        lambda: (
            files.to_table(columns=["recorded_at"])
            .to_pandas()
            .pipe(lambda f: f.groupby([f.recorded_at.dt.hour, f.recorded_at.dt.day_of_week]).size())
        )
    )
    print(
        f"pandas heatmap: {seconds:.2f} s; viz is {seconds / took['activity_heatmap, whole lake']:.1f}x"
    )
    seconds, _ = _timed(
        lambda: (
            files.to_table(columns=["recorded_at", "occurred_at"])
            .to_pandas()
            .pipe(
                lambda f: f.groupby(
                    [f.recorded_at.dt.floor("D"), f.occurred_at.dt.floor("D")]
                ).size()
            )
        )
    )
    print(
        f"pandas bitemporal grid: {seconds:.2f} s; viz is {seconds / took['bitemporal_scatter, whole lake']:.1f}x"
    )


if __name__ == "__main__":
    main()
