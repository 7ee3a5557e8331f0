"""Import benchmarks, each beside its plain peer in the same run.

    python3 -m uv run python benchmarks/import_bench.py                  # 10 million events
    python3 -m uv run python benchmarks/import_bench.py --events 1000000

Writes the sample domain's events as one JSON Lines file (nested payload and metadata objects,
ISO times with zones), then measures:

- the floor for "read JSON, write Parquet": DuckDB's own ``read_json`` -> ``COPY ... TO
  parquet`` of the same file, with no ordering, ids, hashing or guarantees;
- ``esa import`` of the file (the Python entry point, as the CLI calls it), events/s and the
  ratio to that floor (issue 13's target: within 3x; and >= 1M events/s);
- bulk ``EventStore.ingest`` of the same events as an Arrow table (the store's own floor);
- re-running the finished import (nothing new): target under 2 s at 10M events.

Wall times depend on what else runs on the machine; the process's CPU seconds are reported
beside them.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import esanalytics as esa
from esanalytics.sample import SampleSpec, generate_chunks

_STEP = 500_000


def write_jsonl(path: Path, events: int) -> None:
    """The sample's events as JSON Lines, in the shape an export from another store has."""
    import duckdb

    total, chunk = generate_chunks(SampleSpec(events=events, seed=1))
    con = duckdb.connect()
    with open(path, "w", encoding="utf-8") as out:
        for start in range(0, total, _STEP):
            con.register("t", chunk(start, min(start + _STEP, total)))
            lines = con.sql(
                """SELECT '{"stream_id":' || to_json(stream_id) || ',"event_type":'
                   || to_json(event_type) || ',"occurred_at":"'
                   || strftime(timezone('UTC', occurred_at), '%Y-%m-%dT%H:%M:%S.%fZ')
                   || '","data":' || data || ',"metadata":' || metadata || '}' AS line
                   FROM t"""
            ).to_arrow_table()["line"]
            con.unregister("t")
            out.write("\n".join(lines.to_pylist()) + "\n")


def timed(action: Any) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = action()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="esa-import-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    source = work / f"events-{args.events}.jsonl"
    if not source.exists():
        print(f"writing {source} ...", flush=True)
        write_jsonl(source, args.events)
    results: dict[str, Any] = {"events": args.events, "file_mb": source.stat().st_size / 1e6}

    # -- the floor: DuckDB reads the JSON and writes Parquet -------------------------------
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2")
    target = work / "duckdb-floor.parquet"
    wall, cpu, _ = timed(
        lambda: con.execute(
            f"COPY (SELECT * FROM read_json('{source}', format='newline_delimited')) "
            f"TO '{target}' (FORMAT parquet)"
        )
    )
    results["duckdb_read_json_copy_s"] = wall
    results["duckdb_events_per_s"] = args.events / wall

    # -- esa import ------------------------------------------------------------------------
    lake = work / "lake"
    shutil.rmtree(lake, ignore_errors=True)
    wall, cpu, summary = timed(lambda: esa.import_events(lake, source, create=True))
    assert summary.events == args.events, summary
    results["import_s"] = wall
    results["import_cpu_s"] = cpu
    results["import_events_per_s"] = args.events / wall
    results["import_vs_duckdb_floor"] = wall / results["duckdb_read_json_copy_s"]
    # bounded memory: the process's peak so far (the import streams the file in 16 MB blocks)
    results["peak_rss_mb_after_import"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # -- re-running the finished import: nothing new --------------------------------------
    wall, cpu, again = timed(lambda: esa.import_events(lake, source))
    assert again.events == 0, again
    results["rerun_nothing_new_s"] = wall

    # -- bulk ingest of the same events as Arrow tables ------------------------------------
    total, chunk = generate_chunks(SampleSpec(events=args.events, seed=1))
    tables = [chunk(s, min(s + 1_000_000, total)) for s in range(0, total, 1_000_000)]
    bulk = work / "bulk-lake"
    shutil.rmtree(bulk, ignore_errors=True)
    store = esa.open(bulk, create=True)

    def ingest_all() -> None:
        for table in tables:
            store.ingest(table)

    wall, cpu, _ = timed(ingest_all)
    results["ingest_s"] = wall
    results["ingest_events_per_s"] = args.events / wall
    results["import_vs_ingest"] = results["import_s"] / wall

    print(
        json.dumps(
            {k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}, indent=2
        )
    )
    print(
        f"\nesa import: {results['import_events_per_s']:,.0f} events/s "
        f"({results['import_vs_duckdb_floor']:.1f}x DuckDB's read_json -> Parquet, target <= 3x; "
        f"target >= 1,000,000 events/s)\n"
        f"bulk ingest: {results['ingest_events_per_s']:,.0f} events/s (target >= 1,000,000)\n"
        f"re-run with nothing new: {results['rerun_nothing_new_s']:.2f} s (target < 2 s)"
    )


if __name__ == "__main__":
    main()
