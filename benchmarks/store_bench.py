"""Store benchmarks, each beside the `eventsourcing` library (SQLite recorder) in the same run.

    python3 -m uv run python benchmarks/store_bench.py                 # 10 million events
    python3 -m uv run python benchmarks/store_bench.py --events 1000000

Measures: batch ingest (events/s), durable single-event appends with an expected-version check
(appends/s, p50 and p99 latency), reading one stream from the compacted lake, and a full scan.
The peer gets the same events (type as topic, JSON data as state, stream id as originator);
where running it on the full log would take too long it runs on the first --peer-events
events and the ratio compares rates. Targets (issue 2, on 2 cores): ingest >= 1M events/s and
>= 40x the peer; appends >= 2,000/s with p99 < 5 ms and >= 5x the peer; one stream from 10M
events < 50 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import esanalytics as esa
from esanalytics.sample import SampleSpec, generate_chunks


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def peer_recorder(path: Path) -> Any:
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

    datastore = SQLiteDatastore(str(path), originator_id_type="text")
    recorder = SQLiteApplicationRecorder(datastore)
    recorder.create_table()
    return recorder


def stored(rows: list[dict[str, Any]], versions: dict[str, int]) -> list[Any]:
    from eventsourcing.persistence import StoredEvent

    out = []
    for row in rows:
        version = versions.get(row["stream_id"], 0) + 1
        versions[row["stream_id"]] = version
        out.append(StoredEvent(row["stream_id"], version, row["event_type"], row["data"].encode()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--peer-events", type=int, default=200_000)
    parser.add_argument("--appends", type=int, default=5_000)
    parser.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="esa-bench-"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    results: dict[str, Any] = {"events": args.events}
    print(f"work folder {work}")

    # -- generate (not part of ingest timing) ----------------------------------------------
    started = time.perf_counter()
    total, chunk = generate_chunks(SampleSpec(events=args.events, seed=1))
    step = 1_000_000
    tables = [chunk(s, min(s + step, total)) for s in range(0, total, step)]
    generate_s = time.perf_counter() - started
    results["generate_events_per_s"] = total / generate_s

    # -- batch ingest ------------------------------------------------------------------------
    store = esa.open(work / "lake", create=True)
    started = time.perf_counter()
    for table in tables:
        store.ingest(table)
    ingest_s = time.perf_counter() - started
    results["ingest_events_per_s"] = total / ingest_s

    peer = peer_recorder(work / "peer.sqlite")
    peer_rows = (
        tables[0].slice(0, args.peer_events).select(["stream_id", "event_type", "data"]).to_pylist()
    )
    peer_versions: dict[str, int] = {}
    batches = [
        stored(peer_rows[i : i + 10_000], peer_versions) for i in range(0, len(peer_rows), 10_000)
    ]
    started = time.perf_counter()
    for batch in batches:
        peer.insert_events(batch)
    peer_ingest_s = time.perf_counter() - started
    results["peer_ingest_events_per_s"] = len(peer_rows) / peer_ingest_s
    del tables

    started = time.perf_counter()
    store.compact()
    results["compact_s"] = time.perf_counter() - started

    # -- one stream from the compacted lake ----------------------------------------------------
    streams = store.streams().select(["stream_id", "version"]).to_pylist()
    rng = random.Random(3)
    picks = rng.sample(streams, 30)
    fresh = esa.open(work / "lake")
    fresh.read_stream(
        picks[0]["stream_id"]
    )  # first read pays pyarrow's import, as any process does
    timings = []
    for pick in picks:
        t = time.perf_counter()
        events = fresh.read_stream(pick["stream_id"])
        timings.append(time.perf_counter() - t)
        assert len(events) == pick["version"]
    results["read_stream_ms_p50"] = statistics.median(timings) * 1e3
    results["read_stream_ms_max"] = max(timings) * 1e3
    peer_streams = rng.sample(sorted(peer_versions), 30)
    peer_timings = []
    for stream_id in peer_streams:
        t = time.perf_counter()
        got = peer.select_events(stream_id)
        peer_timings.append(time.perf_counter() - t)
        assert len(got) == peer_versions[stream_id]
    results["peer_read_stream_ms_p50"] = statistics.median(peer_timings) * 1e3

    # -- full scan -----------------------------------------------------------------------------
    t = time.perf_counter()
    rows = sum(batch.num_rows for batch in fresh.iter_batches())
    scan_s = time.perf_counter() - t
    assert rows == total
    results["scan_events_per_s"] = total / scan_s
    t = time.perf_counter()
    seen, start = 0, 1
    while True:
        page = peer.select_notifications(start, 10_000)
        if not page:
            break
        seen += len(page)
        start = page[-1].id + 1
    results["peer_scan_events_per_s"] = seen / (time.perf_counter() - t)

    # -- durable single-event appends with an expected-version check ------------------------------
    t = time.perf_counter()
    writer = esa.open(work / "lake")
    writer.append("bench-0", [esa.NewEvent("Warmup", {})])  # loads heads and the id index once
    results["writer_first_append_s"] = time.perf_counter() - t
    targets = rng.sample(streams, 200)
    known = {s["stream_id"]: s["version"] for s in targets}
    latencies = []
    started = time.perf_counter()
    for i in range(args.appends):
        stream_id = targets[i % len(targets)]["stream_id"]
        t = time.perf_counter()
        writer.append(
            stream_id,
            [esa.NewEvent("MoneyDeposited", {"amount": i}, metadata={"actor": "bench"})],
            expected_version=known[stream_id],
        )
        latencies.append(time.perf_counter() - t)
        known[stream_id] += 1
    elapsed = time.perf_counter() - started
    results["appends_per_s"] = args.appends / elapsed
    results["append_ms_p50"] = percentile(latencies, 0.50) * 1e3
    results["append_ms_p99"] = percentile(latencies, 0.99) * 1e3

    from eventsourcing.persistence import StoredEvent

    peer_targets = rng.sample(sorted(peer_versions), 200)
    peer_latencies = []
    started = time.perf_counter()
    for i in range(args.appends):
        stream_id = peer_targets[i % len(peer_targets)]
        version = peer_versions[stream_id] + 1
        t = time.perf_counter()
        peer.insert_events(
            [StoredEvent(stream_id, version, "MoneyDeposited", json.dumps({"amount": i}).encode())]
        )
        peer_latencies.append(time.perf_counter() - t)
        peer_versions[stream_id] = version
    results["peer_appends_per_s"] = args.appends / (time.perf_counter() - started)
    results["peer_append_ms_p99"] = percentile(peer_latencies, 0.99) * 1e3

    r = results
    print()
    print(f"{'measure':38} {'esanalytics':>14} {'eventsourcing':>14} {'ratio':>8}")
    rows_out = [
        ("generate (events/s)", r["generate_events_per_s"], None),
        ("batch ingest (events/s)", r["ingest_events_per_s"], r["peer_ingest_events_per_s"]),
        ("single appends (appends/s)", r["appends_per_s"], r["peer_appends_per_s"]),
        ("  append p50 (ms)", r["append_ms_p50"], None),
        ("  append p99 (ms)", r["append_ms_p99"], r["peer_append_ms_p99"]),
        ("read one stream, p50 (ms)", r["read_stream_ms_p50"], r["peer_read_stream_ms_p50"]),
        ("read one stream, max (ms)", r["read_stream_ms_max"], None),
        ("full scan (events/s)", r["scan_events_per_s"], r["peer_scan_events_per_s"]),
        ("compaction (s)", r["compact_s"], None),
        ("writer's first append (s)", r["writer_first_append_s"], None),
    ]
    for name, ours, theirs in rows_out:
        ratio = ""
        if theirs:
            better_is_lower = "(ms)" in name
            ratio = f"{(theirs / ours if better_is_lower else ours / theirs):7.1f}x"
        theirs_text = f"{theirs:14,.1f}" if theirs else f"{'':>14}"
        print(f"{name:38} {ours:14,.1f} {theirs_text} {ratio:>8}")
    print(
        f"\n(peer ingest and reads ran on its first {len(peer_rows):,} events; lake: {total:,} events)"
    )
    (work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
