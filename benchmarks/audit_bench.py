"""Integrity benchmark: `verify` over a lake (target, issue 6: 10 million events in < 5 s on
2 cores) both ways, by whole-file digests against the linked commit log (the default) and by
recomputing every event's hash (`deep=True`), beside a plain Python loop that recomputes the
same chain row by row; then the time to build an entity report and a period report (HTML with
charts).

    python3 -m uv run python benchmarks/audit_bench.py --lake LAKE
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from datetime import timedelta

import esanalytics as esa
from esanalytics.audit import Scope, collect, verify
from esanalytics.events import canonical_row
from esanalytics.report import render_html


def main() -> None:
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # as the esa CLI does
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lake", required=True)
    parser.add_argument("--peer-events", type=int, default=200_000)
    parser.add_argument("--entity", default="account-42")
    parser.add_argument(
        "--period-days",
        type=int,
        default=4,
        help="the period report's length (4: ~100k events of 10M)",
    )
    parser.add_argument("--skip-deep", action="store_true", help="skip the deep verify")
    args = parser.parse_args()
    store = esa.open(args.lake)
    runs = [verify(store)]
    if not args.skip_deep:
        runs.append(verify(store, deep=True))
    for result in runs:
        print(f"verify ({result.method}): {result.events:,} events in {result.seconds:.2f} s "
              f"({result.events / result.seconds:,.0f} events/s), ok={result.ok}")  # fmt: skip
    result = runs[0]
    if result.method != "files":
        print("  (the lake has no file digests: written before them, or altered)")
    rows = next(store.iter_batches(batch_size=args.peer_events)).to_pylist()
    started = time.perf_counter()
    for row in rows:  # the obvious loop: canonical encoding and hash, one row at a time
        canonical = canonical_row(
            row["global_position"], row["stream_id"], row["category"], row["version"], row["event_id"],
            row["event_type"], row["schema_version"], int(row["occurred_at"].timestamp() * 1e6),
            int(row["recorded_at"].timestamp() * 1e6), row["data"], row["metadata"],
        )  # fmt: skip
        hashlib.sha256(bytes.fromhex(row["prev_hash"]) + canonical).hexdigest()
    loop_rate = len(rows) / (time.perf_counter() - started)
    ratios = ", ".join(f"{r.method} {r.events / r.seconds / loop_rate:.1f}x" for r in runs)
    print(f"plain Python loop: {loop_rate:,.0f} events/s; verify is {ratios}")
    reports(store, args.entity, args.period_days)


def reports(store: esa.EventStore, entity: str, days: int) -> None:
    """Report timings (targets, issue 6: one entity < 3 s; a period of ~100k events < 15 s),
    each from collecting the facts to the finished HTML with its charts."""
    inventory = store.inventory()
    first, last = inventory.first_recorded_at, inventory.last_recorded_at
    assert first is not None
    assert last is not None
    start = first + (last - first) / 2  # a period in the middle of the log
    end = start + timedelta(days=days)
    second = "order-42" if entity != "order-42" else "account-43"
    for label, scope in (
        (f"entity {entity} (first: loads Altair and Vega)", Scope("entity", entity)),
        (f"entity {second}", Scope("entity", second)),
        (f"period of {days} days", Scope("period", start=start, end=end)),
    ):
        started = time.perf_counter()
        package = collect(store, scope)
        page = render_html(package)
        took = time.perf_counter() - started
        print(f"report, {label}: {package.trail.num_rows:,} events, {len(page) / 1e6:.1f} MB "
              f"HTML with {page.count('<figure>')} charts in {took:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
