"""The esa command, run as a user runs it (a real process, real lake)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import esanalytics as esa


def esa_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "esanalytics.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def demo_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli") / "sample"


def test_demo_builds_the_lake_once_and_answers_a_point_in_time_question(demo_lake: Path) -> None:
    first = esa_cli("demo", "--lake", str(demo_lake), "--events", "5000", "--stream", "account-3")
    assert "events      5,000" in first.stdout
    assert "point in time: account-3" in first.stdout
    assert "built" in first.stderr
    store = esa.open(demo_lake)
    assert store.head == 5000
    # The answer printed is the fold of the stream read at that time.
    line = next(x for x in first.stdout.splitlines() if x.startswith("as recorded at"))
    cut = line.split()[3].rstrip(":")
    assert f"version {len(store.read_stream('account-3', as_of=cut))}," in line
    again = esa_cli("demo", "--lake", str(demo_lake), "--events", "5000", "--stream", "account-3")
    assert "built" not in again.stderr


def test_info_and_read(demo_lake: Path) -> None:
    if not demo_lake.exists():
        esa_cli("generate", str(demo_lake), "--events", "5000")
    info = json.loads(esa_cli("info", str(demo_lake), "--format", "json").stdout)
    assert info["events"] == esa.open(demo_lake).head
    rows = [
        json.loads(x)
        for x in esa_cli(
            "read", str(demo_lake), "account-3", "--format", "json"
        ).stdout.splitlines()
    ]
    assert [r["version"] for r in rows] == list(range(1, len(rows) + 1))
    csv = esa_cli(
        "read", str(demo_lake), "account-3", "--format", "csv", "--columns", "version,event_type"
    ).stdout
    assert csv.splitlines()[0] == '"version","event_type"'


def test_append_and_errors(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    missing = esa_cli("append", lake, "account-1", "AccountOpened", check=False)
    assert missing.returncode == 1
    assert "There is no lake" in missing.stderr
    assert "Hint:" in missing.stderr
    made = json.loads(
        esa_cli(
            "append", lake, "account-1", "AccountOpened", "--create", "--data", '{"owner": "Ada"}'
        ).stdout
    )
    assert (made["position"], made["version"]) == (1, 1)
    conflict = esa_cli(
        "append",
        lake,
        "account-1",
        "MoneyDeposited",
        "--expected-version",
        "no_stream",
        check=False,
    )
    assert conflict.returncode == 1
    assert "is at version 1" in conflict.stderr
    bad_json = esa_cli(
        "append", lake, "account-1", "MoneyDeposited", "--data", "{oops", check=False
    )
    assert "not valid JSON" in bad_json.stderr
    naive = esa_cli("read", lake, "account-1", "--as-of", "2024-01-01T10:00", check=False)
    assert naive.returncode == 1
    assert "no time zone" in naive.stderr
    assert esa.open(lake).head == 1
    generate_over = esa_cli("generate", lake, check=False)
    assert generate_over.returncode == 1
    assert "not empty" in generate_over.stderr
