"""The slow question shapes on an existing lake: time in each state and entities per state per
day (every entity), one row per change of a field, process variants, activity by weekday and
hour, spike days and the audit exceptions, each the best of three runs, in seconds.

    python3 -m uv run esa generate /tmp/l1m --events 1000000 --fast
    python3 -m uv run python benchmarks/questions_bench.py /tmp/l1m

Each answer is checked against pandas or a plain fold in tests/test_questions.py; this only
times them (speed lives here, never in the tests).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import esanalytics as esa
from esanalytics import questions, viz
from esanalytics.audit import Scope, audit_exceptions
from esanalytics.catalog import account_balances, order_status
from esanalytics.engine import Session


def best(fn: Callable[[], Any], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("lake")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    session = Session(esa.open(args.lake), threads=args.threads)
    print(f"{session.position:,} events")
    everything = Scope("period", start="2000-01-01", end="2100-01-01")
    cases: dict[str, Callable[[], Any]] = {
        "time in each status, every account": lambda: questions.state_intervals(
            session, account_balances
        ).to_arrow_table(),
        "time in each status, every order": lambda: questions.state_intervals(
            session, order_status
        ).to_arrow_table(),
        "accounts per status per day": lambda: questions.population(
            session, account_balances
        ).to_arrow_table(),
        "orders per status per day": lambda: questions.population(
            session, order_status
        ).to_arrow_table(),
        "  the chart of it (viz.population)": lambda: viz.population(
            session, projection=order_status, every="day"
        ),
        "history, one row per status change (accounts)": lambda: account_balances.history(
            session, changes_of=["status"]
        ).to_arrow_table(),
        "process variants, every stream": lambda: questions.variants(session).to_arrow_table(),
        "process variants, orders": lambda: questions.variants(
            session, category="order"
        ).to_arrow_table(),
        "activity by weekday and hour": lambda: questions.activity(session).to_arrow_table(),
        "  the chart of it (viz.activity_heatmap)": lambda: viz.activity_heatmap(session),
        "activity by week and weekday": lambda: questions.activity(
            session, by="week"
        ).to_arrow_table(),
        "spike days": lambda: questions.spike_days(session).to_arrow_table(),
        "audit exceptions, whole log": lambda: audit_exceptions(session, everything),
        "  back-dated events only": lambda: audit_exceptions(
            session, everything, kinds=["back_dated"]
        ),
        "  the same actor on two steps of one entity only": lambda: audit_exceptions(
            session, everything, kinds=["segregation"]
        ),
    }
    for name, fn in cases.items():
        print(f"{name:50} {best(fn):7.3f} s", flush=True)


if __name__ == "__main__":
    main()
