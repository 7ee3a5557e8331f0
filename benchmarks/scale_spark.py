"""Spark ``local[2]`` against DuckDB on the same lake and projections, each answer checked
equal to DuckDB's (a difference fails the run).

    python3 -m uv run python benchmarks/scale_spark.py --lake /work/eng/l10m --repeat 3
    ... --json                                                   # the rows as JSON on stdout

``benchmarks/scale_bench.py`` calls :func:`run` for its Spark section. The lake is only read.
Spark's start-up (a JVM, once per process) and pinning a session (listing the files the
commit log names, reading their footers) are rows of their own; each question's time is the
median of ``repeat`` runs after one untimed warm-up run on each engine (Spark compiles its
plans on the first). DuckDB runs twice: as ``esa`` runs it (``Session(store)``: payload fields
from the typed twins where the lake has them) and reading the JSON like Spark
(``typed=False``), so the engines are compared on the same work too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import esanalytics as esa
from esanalytics import spark as esa_spark
from esanalytics.catalog import account_balances, order_status
from esanalytics.engine import Session


def _median(repeat: int, work: Callable[[], Any]) -> tuple[float, Any]:
    """The median time of ``repeat`` runs of ``work`` after one warm-up, and its answer."""
    answer = work()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        answer = work()
        times.append(time.perf_counter() - start)
    return statistics.median(times), answer


def _rows(table: Any) -> list[tuple[Any, ...]]:
    return sorted(tuple(row.values()) for row in table.to_pylist())


def run(lake: Path, *, repeat: int) -> list[dict[str, Any]]:
    """One row per step: Spark's start-up and pin, then each question on DuckDB (twins and
    JSON) and Spark, with the ratio Spark/DuckDB and whether the answers are equal."""
    store = esa.open(lake)
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    spark = esa_spark.spark_session(
        "local[2]", **{"spark.sql.shuffle.partitions": "4", "spark.driver.memory": "4g"}
    )
    spark.sparkContext.setLogLevel("FATAL")
    rows.append({"step": "spark start-up (JVM, once per process)",
                 "spark_s": round(time.perf_counter() - start, 2)})  # fmt: skip
    start = time.perf_counter()
    on_spark = esa_spark.Session(store, spark=spark)
    pinned = time.perf_counter() - start
    rows.append({"step": "pin the first session (JVM warm-up)", "spark_s": round(pinned, 3)})
    start = time.perf_counter()
    on_spark = esa_spark.Session(store, spark=spark)
    pinned = time.perf_counter() - start
    start = time.perf_counter()
    duck = Session(store)
    rows.append({"step": "pin a session", "duckdb_s": round(time.perf_counter() - start, 3),
                 "spark_s": round(pinned, 3)})  # fmt: skip
    duck_json = Session(store, typed=False)
    middle = duck.sql(
        "SELECT min(recorded_at) + (max(recorded_at) - min(recorded_at)) / 2 FROM events"
    ).fetchall()[0][0]
    questions: list[tuple[str, Callable[[Any], Any], Callable[[Any], Any]]] = [
        ("count events by type",
         lambda s: s.sql("SELECT event_type, count(*) AS n FROM events GROUP BY ALL"),
         lambda s: s.sql("SELECT event_type, count(*) AS n FROM events GROUP BY ALL")),
        ("account_balances rebuild",
         lambda s: account_balances.state(s), lambda s: s.state(account_balances)),
        ("account_balances as of the middle",
         lambda s: account_balances.state(s, as_of=middle),
         lambda s: s.state(account_balances, as_of=middle)),
        ("order_status rebuild", lambda s: order_status.state(s), lambda s: s.state(order_status)),
    ]  # fmt: skip
    for name, on_duck, on_spark_ in questions:
        t_duck, answer = _median(repeat, lambda q=on_duck: q(duck).to_arrow_table())
        t_json, answer_json = _median(repeat, lambda q=on_duck: q(duck_json).to_arrow_table())
        t_spark, answer_spark = _median(repeat, lambda q=on_spark_: on_spark.arrow(q(on_spark)))
        expected = _rows(answer)
        equal = _rows(answer_json) == expected and _rows(answer_spark) == expected
        rows.append({
            "step": name, "rows": answer.num_rows, "duckdb_s": round(t_duck, 3),
            "duckdb_json_s": round(t_json, 3), "spark_s": round(t_spark, 3),
            "spark/duckdb": round(t_spark / t_duck, 1), "spark/duckdb_json": round(t_spark / t_json, 1),
            "equal": equal,
        })  # fmt: skip
        if not equal:
            raise AssertionError(f"{name}: Spark's answer differs from DuckDB's on {lake}")
    on_spark.close()
    duck.close()
    duck_json.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True, type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run(args.lake, repeat=args.repeat)
    if args.json:
        json.dump({"lake": str(args.lake), "repeat": args.repeat, "rows": rows}, sys.stdout)
        print()
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"{args.lake}, median of {args.repeat}")
    for line in [columns, *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))


if __name__ == "__main__":
    main()
