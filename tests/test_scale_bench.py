"""benchmarks/scale_bench.py builds its missing lakes, runs the steps of the curve on each
under the memory limit and reports growth from lake to lake; every step answers; a peer
section whose module is missing is skipped, saying so; an unknown section is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import esanalytics as esa

BENCH = Path(__file__).parents[1] / "benchmarks" / "scale_bench.py"


def _bench() -> Any:
    sys.path.insert(0, str(BENCH.parent))
    try:
        import scale_bench
    finally:
        sys.path.remove(str(BENCH.parent))
    return scale_bench


def test_the_curve_builds_its_lakes_and_reports_growth(tmp_path: Path, sample_lake: Path) -> None:
    built = tmp_path / "small"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--lakes", f"{built},{sample_lake}", "--events", "3000",
         "--build", "--memory-limit", "512MB", "--only", "curve", "--steps", "rebuild,history",
         "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["memory_limit"] == "512MB"
    assert esa.open(built).head == 3000
    rows = report["curve"]
    assert [(r["events"], r["step"]) for r in rows] == [
        (3000, "rebuild"), (3000, "history"), (30_000, "rebuild"), (30_000, "history")
    ]  # fmt: skip
    streams = esa.open(sample_lake).read_all().to_arrow()["stream_id"].to_pylist()
    assert rows[2]["rows"] == len({s for s in streams if s.startswith("account-")})
    for row in rows:
        assert row["seconds"] > 0
        assert row["peak_rss_mb"] > 10
        assert row["temp_peak_mb"] >= 0
    assert [r.get("events_growth") for r in rows] == [None, None, 10, 10]
    assert report["floor"]["lake"] == str(sample_lake)
    assert report["floor"]["step"] in {"rebuild", "history"}


def test_every_step_answers(sample_lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESA_MEMORY_LIMIT", "512MB")
    scale_bench = _bench()
    streams = esa.open(sample_lake).streams().to_pylist()
    accounts = [s for s in streams if s["stream_id"].startswith("account-")]
    longest = max(s["version"] for s in accounts)
    for step in ("as_of", "history", "verify"):
        result = scale_bench.run_step(step, str(sample_lake), 2)
        assert len(result["times"]) == 2
        assert result["events"] == 30_000
        if step == "as_of":
            assert 0 < result["rows"] < len(accounts)  # the accounts opened before the middle
        if step == "history":
            assert 1 < result["rows"] <= longest  # one row per state of the longest account
        if step == "verify":
            assert result["rows"] == 30_000


def test_a_missing_peer_is_skipped_saying_so() -> None:
    rows, skipped = _bench().peer("nothing", Path("/nowhere"), repeat=1)
    assert rows == []
    assert skipped == "benchmarks/scale_nothing.py is not here: section skipped"


def test_an_unknown_section_or_step_is_refused() -> None:
    for option in (["--only", "curve,redshift"], ["--steps", "rebuild,vacuum"]):
        done = subprocess.run(
            [sys.executable, str(BENCH), *option], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2
        assert option[1].split(",")[1] in done.stderr
