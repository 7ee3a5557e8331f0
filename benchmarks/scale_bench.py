"""Scale benchmark: the same four steps on lakes of 1M, 10M and 100M events with DuckDB held to
a memory limit (4 GB unless told), and how each step's time grows per 10x of events; beside
it, in the same run, a lake on S3 (moto) against local disk and Spark ``local[2]`` against
DuckDB, when those benchmarks are present.

    python3 -m uv run python benchmarks/scale_bench.py --build              # builds missing lakes first
    python3 -m uv run python benchmarks/scale_bench.py --lakes A,B,C --memory-limit 4GB --repeat 3
    ... --only curve,s3,spark     (default: all three)      ... --json      (JSON on stdout)
    ... --steps rebuild,verify    (default: all four steps of the curve; verify_deep on request)

The lakes (``--lakes``, default ``data/scale/l1m,l10m,l100m``) are only read. ``--build``
makes a missing one with ``esa generate PATH --events N --fast``, N from ``--events`` (default
1M, 10M, 100M, in the order of ``--lakes``): about 5 minutes for 10M, an hour for 100M, and
1.3 GB of disk per 10M events (plus about 1 GB of spill per 10M while a large one is drawn).

The steps, each in a process of its own (so its peak memory is its own: ``getrusage`` of that
child), with ``ESA_MEMORY_LIMIT`` set and DuckDB spilling into a fresh folder whose size is
sampled every 50 ms (the temp peak):

* ``rebuild``: ``account_balances.state(session)``, every account folded from its events;
* ``as_of``: ``account_balances.state(session, as_of=<the middle of the log>)``, every
  entity as of a system time;
* ``history``: ``account_balances.history(session, key=<the account with most events>)``;
* ``verify``: ``esa verify``'s check of the whole log (the quick pass: the commit-line chain
  and each file's SHA-256; its floor is reading and hashing every byte);
* ``verify_deep`` (only when named): ``esa verify --deep``, every event rehashed, its chain
  link, position and version checked, each file read a run of row groups at a time.

Each time is the median of ``--repeat`` runs of the step inside its process (the session is
opened before the clock starts; ``open`` is reported beside). ``events/s`` is the lake's
events over the step's time; ``CPU s`` its CPU time (every thread, and verify's worker
processes), which other work on a shared machine moves far less than the wall time. The
growth ratio is each step's time (and CPU time) over the same step's at the previous lake:
linear is the ratio of the events (10x). The floor line takes the step slowest on the largest
lake and the lake's bytes over the rate this machine hashes them (SHA-256 per CPU second, on
every core) and over the rate its disk reads them (``dd iflag=direct``: what bounds a lake
larger than the page cache).

The ``s3`` and ``spark`` sections call ``run(lake, repeat=)`` of ``benchmarks/scale_s3.py`` and
``benchmarks/scale_spark.py`` (imported only when asked; a section whose module is missing is
skipped, saying so) on ``--peer-lake`` (default: the 10M lake of ``--lakes``); each returns
rows (dicts) printed as a table.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_LAKES = ",".join(str(ROOT / "data" / "scale" / n) for n in ("l1m", "l10m", "l100m"))
DEFAULT_EVENTS = "1000000,10000000,100000000"
STEPS = ("rebuild", "as_of", "history", "verify")
#: Steps run only when named in ``--steps``.
EXTRA_STEPS = ("verify_deep",)


def say(*parts: Any) -> None:
    """Progress, on stderr (stdout carries the table, or the JSON)."""
    print(*parts, file=sys.stderr, flush=True)


# -- one step, in its own process -----------------------------------------------------------


def run_step(step: str, lake: str, repeat: int) -> dict[str, Any]:
    """Run ``step`` on ``lake`` ``repeat`` times in this process: its times and its answer's
    size (the child's side of :func:`measure`)."""
    import esanalytics as esa
    from esanalytics.catalog import account_balances
    from esanalytics.engine import Session

    store = esa.open(lake)
    events = store.head
    opened = time.perf_counter()
    session = Session(store) if not step.startswith("verify") else None
    open_s = time.perf_counter() - opened
    if step == "rebuild":
        assert session is not None

        def work() -> int:
            return account_balances.state(session).to_arrow_table().num_rows

    elif step == "as_of":
        assert session is not None
        first, last = session.sql(
            "SELECT min(recorded_at), max(recorded_at) FROM events"
        ).fetchall()[0]
        middle = first + (last - first) / 2

        def work() -> int:
            return account_balances.state(session, as_of=middle).to_arrow_table().num_rows

    elif step == "history":
        assert session is not None
        key = longest_account(session)

        def work() -> int:
            return account_balances.history(session, key=key).to_arrow_table().num_rows

    elif step in ("verify", "verify_deep"):
        from esanalytics.audit.verify import verify

        def work() -> int:
            result = verify(store, deep=step == "verify_deep")
            if not result.ok:
                raise SystemExit(f"verify found problems in {lake}: {result}")
            return events

    else:
        raise SystemExit(f"no step {step!r}")
    times, cpu, rows = [], [], 0
    for _ in range(max(repeat, 1)):
        started, used = time.perf_counter(), _cpu()
        rows = work()
        times.append(time.perf_counter() - started)
        cpu.append(_cpu() - used)
    return {"times": times, "cpu": cpu, "rows": rows, "events": events, "open_s": open_s}


def _cpu() -> float:
    """CPU seconds of this process (every thread) and of its finished children (verify's
    workers): what a step costs whatever else the machine runs."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def longest_account(session: Any) -> str:
    """The account with the most events (ties: the first by name), counted by DuckDB within
    its memory limit (``store.streams()`` would hold every event's stream id in memory)."""
    return str(
        session.sql(
            "SELECT stream_id FROM events_base WHERE category = 'account' "
            "GROUP BY stream_id ORDER BY count(*) DESC, stream_id LIMIT 1"
        ).fetchall()[0][0]
    )


def folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # removed while counted
                total += os.path.getsize(os.path.join(dirpath, name))
    return total


def measure(step: str, lake: Path, memory_limit: str, repeat: int) -> dict[str, Any]:
    """Run one step in a child process under the memory limit: its result, peak RSS (from
    ``wait4``), major page faults and the peak size of its spill folder."""
    with tempfile.TemporaryDirectory(prefix="scale-spill-") as spill:
        env = {**os.environ, "ESA_MEMORY_LIMIT": memory_limit, "ESA_TEMP_DIR": spill}
        command = [
            sys.executable,
            __file__,
            "--step",
            step,
            "--lake",
            str(lake),
            "--repeat",
            str(repeat),
        ]
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], folder_bytes(Path(spill)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        assert child.stdout is not None
        out = child.stdout.read()
        _pid, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"step {step} on {lake} failed (exit {child.returncode})")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    seconds = statistics.median(result["times"])
    return {
        "lake": str(lake),
        "step": step,
        "events": result["events"],
        "seconds": seconds,
        "times": result["times"],
        "cpu_s": statistics.median(result["cpu"]),
        "open_s": result["open_s"],
        "rows": result["rows"],
        "events_per_s": result["events"] / seconds if seconds else None,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "major_faults": usage.ru_majflt,
        "temp_peak_mb": peak[0] / 1e6,
    }


# -- the curve ------------------------------------------------------------------------------


def build_missing(lakes: list[Path], events: list[int]) -> None:
    for lake, count in zip(lakes, events, strict=False):
        if (lake / "_esa" / "lake.json").exists():
            continue
        say(f"building {lake} with {count:,} events (esa generate --fast) ...")
        lake.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "esanalytics.cli", "generate", str(lake), "--events", str(count), "--fast"],
            check=True,
        )  # fmt: skip


def lake_bytes(lake: Path) -> int:
    """The bytes verify reads: every events file and typed twin the lake holds."""
    return folder_bytes(lake / "events") + folder_bytes(lake / "typed")


def curve(
    lakes: list[Path], memory_limit: str, repeat: int, steps: tuple[str, ...] = STEPS
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for lake in lakes:
        if not (lake / "_esa" / "lake.json").exists():
            say(f"skipping {lake}: no lake there (--build makes it)")
            continue
        for step in steps:
            say(f"{lake.name}: {step} ...")
            row = measure(step, lake, memory_limit, repeat)
            row["lake_mb"] = lake_bytes(lake) / 1e6
            say(
                f"  {row['seconds']:.2f} s, peak RSS {row['peak_rss_mb']:.0f} MB, temp {row['temp_peak_mb']:.0f} MB"
            )
            rows.append(row)
    previous: dict[str, dict[str, Any]] = {}
    for row in rows:
        before = previous.get(row["step"])
        if before is not None:
            row["growth"] = row["seconds"] / before["seconds"]
            row["cpu_growth"] = row["cpu_s"] / before["cpu_s"]
            row["events_growth"] = row["events"] / before["events"]
        previous[row["step"]] = row
    return rows


def scan_rates(lake: Path) -> dict[str, float]:
    """This machine's rates for the floor: SHA-256 per CPU second on one core (CPU time, so
    other work on the machine does not lower it), and reading the lake's largest events file
    from the disk itself (``dd iflag=direct``, past the page cache)."""
    block = os.urandom(64 << 20)
    used = time.process_time()
    for _ in range(4):
        hashlib.sha256(block).digest()
    sha_rate = 4 * len(block) / (time.process_time() - used)
    files = sorted((lake / "events").rglob("*.parquet"), key=lambda p: p.stat().st_size)
    done = subprocess.run(
        ["dd", f"if={files[-1]}", "of=/dev/null", "bs=8M", "iflag=direct"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    copied = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", done.stderr)
    disk_rate = int(copied[1]) / float(copied[2]) if copied else float("nan")
    return {"sha256_bytes_per_cpu_s": sha_rate, "disk_bytes_per_s": disk_rate}


def floor(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The slowest step on the largest lake, and what bounds it: the lake's bytes over the
    rate this machine hashes them on every core, and over the rate its disk reads them (which
    bounds a lake larger than the page cache)."""
    if not rows:
        return None
    largest = max(r["events"] for r in rows)
    slowest = max((r for r in rows if r["events"] == largest), key=lambda r: r["seconds"])
    lake = Path(slowest["lake"])
    rates = scan_rates(lake)
    size = lake_bytes(lake)
    cores = os.cpu_count() or 1
    with open("/proc/meminfo") as meminfo:
        total = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal"))
    return {
        "step": slowest["step"],
        "lake": str(lake),
        "seconds": slowest["seconds"],
        "cpu_s": slowest["cpu_s"],
        "lake_bytes": size,
        "memory_bytes": total,
        "cores": cores,
        **rates,
        "hash_floor_s": size / (rates["sha256_bytes_per_cpu_s"] * cores),
        "hash_cpu_s": size / rates["sha256_bytes_per_cpu_s"],
        "disk_floor_s": size / rates["disk_bytes_per_s"],
    }


# -- the peers: S3 and Spark ----------------------------------------------------------------


def peer(name: str, lake: Path | None, repeat: int) -> tuple[list[dict[str, Any]], str | None]:
    """``run(lake, repeat=)`` of ``benchmarks/scale_<name>.py``: its rows, or why none."""
    if lake is None:
        return [], "no 10M lake given (--peer-lake)"
    if not (HERE / f"scale_{name}.py").exists():
        return [], f"benchmarks/scale_{name}.py is not here: section skipped"
    sys.path.insert(0, str(HERE))
    try:
        module = importlib.import_module(f"scale_{name}")
    except ImportError as error:
        return [], f"benchmarks/scale_{name}.py cannot be imported ({error}): section skipped"
    finally:
        sys.path.remove(str(HERE))
    rows = module.run(lake, repeat=repeat)
    return list(rows), None


# -- output -----------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.3g}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def curve_table(rows: list[dict[str, Any]]) -> str:
    shown = []
    for r in rows:
        growth = r.get("growth")
        shown.append(
            {
                "events": r["events"],
                "step": r["step"],
                "seconds": r["seconds"],
                "CPU s": r["cpu_s"],
                "open s": r["open_s"],
                "events/s": r["events_per_s"],
                "peak RSS MB": r["peak_rss_mb"],
                "temp peak MB": r["temp_peak_mb"],
                "major faults": r["major_faults"],
                "growth": None
                if growth is None
                else f"{growth:.1f}x per {r['events_growth']:.0f}x",
                "CPU growth": None if growth is None else f"{r['cpu_growth']:.1f}x",
            }
        )
    return table(shown)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lakes", default=DEFAULT_LAKES, help="comma-separated lake folders, smallest first"
    )
    parser.add_argument(
        "--events", default=DEFAULT_EVENTS, help="with --build: events of each lake"
    )
    parser.add_argument(
        "--memory-limit", default="4GB", help="DuckDB's memory limit (ESA_MEMORY_LIMIT)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each step (median)")
    parser.add_argument("--only", default="curve,s3,spark", help="sections: curve,s3,spark")
    parser.add_argument(
        "--steps", default=",".join(STEPS), help="steps of the curve (default: all)"
    )
    parser.add_argument(
        "--peer-lake", help="the lake of the s3 and spark sections (default: the 10M lake)"
    )
    parser.add_argument(
        "--build", action="store_true", help="build missing lakes with esa generate --fast"
    )
    parser.add_argument("--json", action="store_true", help="JSON on stdout instead of tables")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # the child's side of a step
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(run_step(args.step, args.lake, args.repeat)))
        return 0
    lakes = [Path(p) for p in args.lakes.split(",") if p]
    events = [int(n) for n in args.events.split(",") if n]
    sections = set(args.only.split(","))
    if unknown := sections - {"curve", "s3", "spark"}:
        parser.error(f"--only knows curve, s3 and spark, not {', '.join(sorted(unknown))}")
    steps = tuple(args.steps.split(","))
    if unknown := set(steps) - set(STEPS + EXTRA_STEPS):
        known = ", ".join(STEPS + EXTRA_STEPS)
        parser.error(f"--steps knows {known}, not {', '.join(sorted(unknown))}")
    if args.build:
        build_missing(lakes, events)
    report: dict[str, Any] = {"memory_limit": args.memory_limit, "repeat": args.repeat}
    if "curve" in sections:
        rows = curve(lakes, args.memory_limit, args.repeat, steps)
        report["curve"] = rows
        report["floor"] = floor(rows)
    peer_lake = Path(args.peer_lake) if args.peer_lake else ten_million(lakes)
    for name in ("s3", "spark"):
        if name in sections:
            say(f"{name} section on {peer_lake} ...")
            rows, skipped = peer(name, peer_lake, args.repeat)
            report[name] = {"rows": rows, "skipped": skipped}
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    if "curve" in report:
        print(f"## The curve (DuckDB memory limit {args.memory_limit}; median of {args.repeat})\n")
        print(curve_table(report["curve"]))
        if report["floor"]:
            f = report["floor"]
            print(
                f"\nfloor: {f['step']} on {f['lake']} took {f['seconds']:.1f} s ({f['cpu_s']:.1f} "
                f"CPU s) for {f['lake_bytes'] / 1e9:.1f} GB: hashing every byte takes "
                f"{f['hash_cpu_s']:.1f} CPU s at {f['sha256_bytes_per_cpu_s'] / 1e9:.2f} GB/s a "
                f"core, {f['hash_floor_s']:.1f} s on {f['cores']} cores; reading it from the disk "
                f"at {f['disk_bytes_per_s'] / 1e9:.2f} GB/s takes {f['disk_floor_s']:.1f} s (what "
                f"bounds a lake larger than the {f['memory_bytes'] / 1e9:.0f} GB of memory)"
            )
    for name in ("s3", "spark"):
        if name in report:
            print(f"\n## {name}\n")
            section = report[name]
            print(
                section["skipped"] or (table(section["rows"]) if section["rows"] else "(no rows)")
            )
    return 0


def ten_million(lakes: list[Path]) -> Path | None:
    """The lake of --lakes with 10M events (else the second given), for the peers."""
    for lake in lakes:
        if "10m" in lake.name.lower():
            return lake
    return lakes[1] if len(lakes) > 1 else (lakes[0] if lakes else None)


if __name__ == "__main__":
    sys.exit(main())
