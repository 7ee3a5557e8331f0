"""How long esanalytics takes to start: the import, the charts module, and each esa verb on a
small lake (so that start-up, not work, is what is timed). A benchmark, not a test: it prints
the figures (best and median of --repeat fresh processes) and, with --importtime, the modules
that cost the most for one command.

    python3 -m uv run python benchmarks/startup_bench.py
    python3 -m uv run python benchmarks/startup_bench.py --importtime "from esanalytics import viz"
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ESA = [sys.executable, "-m", "esanalytics.cli"]


def timed(command: list[str], repeat: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        runs.append(time.perf_counter() - started)
    return min(runs), statistics.median(runs)


def commands(lake: Path) -> list[tuple[str, list[str]]]:
    def py(code: str) -> list[str]:
        return [sys.executable, "-c", code]

    return [
        ("python (the interpreter alone)", py("pass")),
        ("import esanalytics", py("import esanalytics")),
        ("import esanalytics; open a lake", py(f"import esanalytics; esanalytics.open({str(lake)!r})")),
        ("from esanalytics import viz", py("from esanalytics import viz")),
        ("esa --help", [*ESA, "--help"]),
        ("esa info LAKE", [*ESA, "info", str(lake)]),
        ("esa read LAKE account-1", [*ESA, "read", str(lake), "account-1"]),
        ("esa sql LAKE 'SELECT 1'", [*ESA, "sql", str(lake), "SELECT 1"]),
        ("esa state LAKE account_balances", [*ESA, "state", str(lake), "account_balances", "--key", "account-1"]),
    ]  # fmt: skip


def importtime(code: str, top: int) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    rows = []
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip())) // 2
            rows.append((int(parts[1]), int(parts[0]), depth, name.strip()))
    print(f"\nslowest imports of: {code}   (cumulative ms, self ms, module)")
    for cumulative, own, depth, name in sorted(rows, reverse=True)[:top]:
        print(f"  {cumulative / 1000:8.0f} {own / 1000:8.0f}   {'  ' * depth}{name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per command")
    parser.add_argument("--importtime", metavar="CODE", help="show what importing CODE costs")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if args.importtime:
        importtime(args.importtime, args.top)
        return
    import esanalytics as esa
    from esanalytics.sample import SampleSpec, generate

    with tempfile.TemporaryDirectory() as folder:
        lake = Path(folder) / "lake"
        esa.open(lake, create=True).ingest(generate(SampleSpec(events=2_000, seed=1)))
        print(
            f"start-up on {sys.platform}, Python {sys.version.split()[0]}, {args.repeat} runs each"
        )
        print(f"{'command':40} {'best s':>8} {'median s':>9}")
        for label, command in commands(lake):
            best, median = timed(command, args.repeat)
            print(f"{label:40} {best:8.2f} {median:9.2f}")


if __name__ == "__main__":
    main()
