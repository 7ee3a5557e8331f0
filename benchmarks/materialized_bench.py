"""Past states from a materialized projection against the same answers from the log.

For a lake (build one with ``esa generate LAKE --events N --fast``; the view is written
inside it, under ``projections/``), it materializes ``account_balances`` and times, at cuts
early, middle and late in the lake's recorded time, ``view.state(as_of=T)`` beside
``projection.state(Session(store), as_of=T)`` and ``view.diff`` beside ``projection.diff``
(each the best of ``--repeat`` runs, a new Session each time as the view makes one), and
checks every answer against the log's.

    python3 -m uv run python benchmarks/materialized_bench.py LAKE [--checkpoint-every N]
        [--max-checkpoints N] [--rebuild] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import esanalytics as esa
from esanalytics.catalog import account_balances
from esanalytics.engine import Session
from esanalytics.materialized import MaterializedProjection


def best(run: Callable[[], Any], repeat: int) -> tuple[tuple[float, float], Any]:
    """The least wall-clock and CPU seconds (all threads; steadier on a shared machine) of
    ``repeat`` runs, and the result."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        result = run()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return (min(walls), min(cpus)), result


def row(label: str, view: tuple[float, float], log: tuple[float, float]) -> str:
    return (
        f"{label:26} {view[0]:9.3f} {log[0]:9.3f} {view[0] / log[0]:6.2f}"
        f"  {view[1]:9.3f} {log[1]:9.3f} {view[1] / log[1]:6.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lake")
    parser.add_argument("--checkpoint-every", type=int, default=None, metavar="EVENTS")
    parser.add_argument("--max-checkpoints", type=int, default=None, metavar="N")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the view first")
    args = parser.parse_args()
    store = esa.open(args.lake)
    options: dict[str, Any] = {}
    if args.checkpoint_every is not None:
        options["checkpoint_every"] = args.checkpoint_every
    if args.max_checkpoints is not None:
        options["max_checkpoints"] = args.max_checkpoints
    view = MaterializedProjection(store, account_balances, **options)
    Session(store).close()  # the imports and first connection, outside the timings
    (refreshed, _), done = best(lambda: view.refresh(rebuild=args.rebuild), 1)
    print(
        f"{args.lake}: {store.head:,} events; refresh ({done.mode}) {refreshed:.2f} s, "
        f"{len(view.checkpoints())} checkpoints at {view.checkpoints()}"
    )
    times = Session(store).sql("SELECT min(recorded_at), max(recorded_at) FROM events").fetchall()
    first, last = times[0]
    cuts = {f: first + (last - first) * f for f in (0.1, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9)}
    print(f"{'':26} {'wall-clock seconds':>26}  {'CPU seconds (all threads)':>26}")
    print(
        f"{'question':26} {'view':>9} {'log':>9} {'ratio':>6}  {'view':>9} {'log':>9} {'ratio':>6}"
    )
    for fraction in (0.1, 0.3, 0.5, 0.7, 0.9):
        moment = cuts[fraction]
        t_view, ours = best(lambda m=moment: view.state(as_of=m), args.repeat)
        t_log, theirs = best(
            lambda m=moment: account_balances.state(Session(store), as_of=m).to_arrow_table(),
            args.repeat,
        )
        assert ours.select(theirs.column_names).equals(theirs), f"as of {moment} differs"
        print(row(f"as of {fraction:.0%} ({moment:%Y-%m-%d})", t_view, t_log))
    for a, b in ((0.1, 0.3), (0.4, 0.6), (0.7, 0.9), (0.1, 0.9)):
        before, after = {"as_of": cuts[a]}, {"as_of": cuts[b]}
        t_view, ours = best(lambda x=before, y=after: view.diff(x, y), args.repeat)
        t_log, theirs = best(
            lambda x=before, y=after: account_balances.diff(Session(store), x, y).to_arrow_table(),
            args.repeat,
        )
        assert ours.equals(theirs), f"diff {a}..{b} differs"
        print(row(f"diff {a:.0%} .. {b:.0%}", t_view, t_log))


if __name__ == "__main__":
    main()
