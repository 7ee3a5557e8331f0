"""benchmarks/import_bench.py runs each of its parts (the file, a Kafka topic in the mock
cluster, the eventsourcing library's SQLite and PostgreSQL recorders) at a small size and
reports each beside its plain peer, so changes to the sources cannot break it unseen; an
unknown part is refused."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "benchmarks" / "import_bench.py"


def test_every_part_runs_and_reports_its_ratios(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--only", "file,kafka,eventsourcing", "--events", "3000",
         "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"^esa import: [\d,]+ events/s \([\d.]+x DuckDB", out, re.M)
    assert re.search(r"^kafka: esa import [\d,]+ records/s, bare consume loop [\d,]+", out, re.M)
    for kind in ("sqlite", "postgresql"):
        assert re.search(
            rf"^eventsourcing {kind}: esa import [\d,]+ events/s; [\d.]+x the recorder's "
            rf"select_notifications .*; [\d.]+x a plain SELECT into Arrow",
            out,
            re.M,
        ), out[-2000:]


def test_an_unknown_part_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--only", "kafka,redis"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "unknown part(s) redis: use file, kafka, eventsourcing" in done.stderr
