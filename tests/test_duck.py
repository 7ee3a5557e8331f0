"""DuckDB's limits: the memory limit and the spill space a user sets reach every connection
the toolkit opens for a lake, and a value DuckDB cannot read is refused with a hint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import duckdb
import pytest

import esanalytics as esa
from esanalytics._duck import connect
from esanalytics.cli import main
from esanalytics.engine import Session
from esanalytics.exceptions import ValidationError
from esanalytics.store import typed
from tests.conftest import run_esa

SETTINGS = (
    "SELECT current_setting('memory_limit'), current_setting('temp_directory'), "
    "current_setting('max_temp_directory_size')"
)
# A sort of about 100 MB of rows: more than a 64 MB limit holds, so DuckDB must spill.
BIG_SORT = (
    "SELECT sum(x) AS total FROM "
    "(SELECT range AS x, md5(range::VARCHAR) AS h FROM range(1500000) ORDER BY h)"
)


@pytest.fixture(autouse=True)
def no_limits_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ESA_MEMORY_LIMIT", "ESA_TEMP_DIR", "ESA_MAX_TEMP_SIZE"):
        monkeypatch.delenv(name, raising=False)


def test_a_session_runs_within_the_limits_given(sample_lake: Path, tmp_path: Path) -> None:
    session = Session(
        esa.open(sample_lake), memory_limit="1GB", temp_dir=tmp_path, max_temp_size="2GB"
    )
    memory, temp, spill = session.con.sql(SETTINGS).fetchall()[0]
    assert (memory, temp, spill) == ("953.6 MiB", str(tmp_path), "1.8 GiB")
    assert session.sql("SELECT count(*) FROM events").fetchall() == [(30_000,)]


def test_by_default_duckdb_spills_into_a_folder_of_its_own_not_the_working_one() -> None:
    first, second = connect(), connect()
    temp = [c.sql(SETTINGS).fetchall()[0][1] for c in (first, second)]
    assert temp[0] != temp[1]
    assert all(
        Path(t).parent == Path(tempfile.gettempdir()) / f"esa-duckdb-{os.getpid()}" for t in temp
    )


def test_the_environment_sets_the_limits_of_every_connection(
    sample_lake: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ESA_MEMORY_LIMIT", "512MB")
    monkeypatch.setenv("ESA_TEMP_DIR", str(tmp_path))
    monkeypatch.setenv("ESA_MAX_TEMP_SIZE", "3GB")
    monkeypatch.setattr(typed, "_database", None)  # compaction's own database, opened anew
    expected = ("488.2 MiB", str(tmp_path), "2.7 GiB")
    session = Session(esa.open(sample_lake))
    assert session.con.sql(SETTINGS).fetchall()[0] == expected
    assert typed._cursor().sql(SETTINGS).fetchall()[0] == expected
    # What is given to the session wins over the environment.
    given = Session(esa.open(sample_lake), memory_limit="1GB").con.sql(SETTINGS).fetchall()[0]
    assert given[0] == "953.6 MiB"


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("memory_limit", "lots", "The memory limit 'lots' is not a size"),
        ("memory_limit", "4000000000", "The memory limit '4000000000' is not a size"),
        ("max_temp_size", "big", "The temporary space limit 'big' is not a size"),
    ],
)
def test_a_size_duckdb_cannot_read_is_refused_with_a_hint(
    sample_lake: Path, option: str, value: str, named: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Session(esa.open(sample_lake), **{option: value})
    assert refused.value.problem.startswith(named)
    assert "4GB" in refused.value.hint
    assert f"{option}=" in refused.value.hint
    assert "ESA_" in refused.value.hint


def test_a_query_larger_than_the_memory_limit_spills_within_the_spill_limit() -> None:
    roomy = connect(memory_limit="64MB", threads=1)
    assert roomy.sql(BIG_SORT).fetchall() == [(sum(range(1_500_000)),)]
    cramped = connect(memory_limit="64MB", max_temp_size="1MB", threads=1)
    with pytest.raises(duckdb.OutOfMemoryException, match="max_temp_directory_size"):
        cramped.sql(BIG_SORT).fetchall()


def test_the_cli_sets_the_limits_for_the_verb(sample_lake: Path) -> None:
    query = "SELECT current_setting('memory_limit') AS m, current_setting('max_temp_directory_size') AS t"
    out = run_esa(
        "--memory-limit", "1GB", "--max-temp-size", "2GB", "sql", str(sample_lake), query,
        "--format", "json", check=True,
    )  # fmt: skip
    assert json.loads(out.stdout.splitlines()[0]) == {"m": "953.6 MiB", "t": "1.8 GiB"}
    # The same through the environment.
    env = {**os.environ, "ESA_MEMORY_LIMIT": "512MB"}
    done = subprocess.run(
        [sys.executable, "-m", "esanalytics.cli", "sql", str(sample_lake), query, "--format", "json"],
        capture_output=True, text=True, env=env, timeout=300, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout.splitlines()[0])["m"] == "488.2 MiB"


def test_the_cli_refuses_a_bad_size_before_any_work_and_hints(sample_lake: Path) -> None:
    done = run_esa("--memory-limit", "lots", "sql", str(sample_lake), "SELECT 1")
    assert done.returncode == 1
    assert "The memory limit 'lots' is not a size" in done.stderr
    assert "Hint: give a size with its unit, such as 4GB" in done.stderr
    assert "--memory-limit" in done.stderr


def test_the_cli_explains_running_out_of_memory(sample_lake: Path) -> None:
    done = run_esa(
        "--memory-limit", "64MB", "--max-temp-size", "1MB", "sql", str(sample_lake), BIG_SORT
    )
    assert done.returncode == 1
    assert "DuckDB ran out of memory" in done.stderr
    assert "Hint: raise the limit with `esa --memory-limit SIZE`" in done.stderr


def _spill_in_a_worker() -> int:
    """In a process pool's worker: open a connection (which makes the process's spill
    folder) and name the process."""
    connect().sql("SELECT 1").fetchall()
    return os.getpid()


def test_a_worker_process_removes_its_spill_folder_when_it_ends() -> None:
    with ProcessPoolExecutor(max_workers=2) as pool:
        pids = {pool.submit(_spill_in_a_worker).result() for _ in range(3)}
    assert os.getpid() not in pids
    left = [p for p in pids if (Path(tempfile.gettempdir()) / f"esa-duckdb-{p}").exists()]
    assert left == [], "a pool worker left its spill folder behind"


def test_the_limits_of_one_cli_verb_do_not_stay_with_the_next(copy: Path) -> None:
    """Compaction's own database (typed._cursor) is opened inside a verb with its limits:
    what runs next in the same process, without them, does not inherit them."""
    typed._database = None
    esa.open(copy).append("account-x", [esa.NewEvent("AccountOpened", {"owner": "Ada"})])
    assert main(["--memory-limit", "512MB", "compact", str(copy)]) == 0
    assert typed._database is not None, "the compaction derived twins"
    assert typed._database[1].sql(SETTINGS).fetchall()[0][0] == "488.2 MiB"
    default = connect().sql(SETTINGS).fetchall()[0][0]
    assert typed._cursor().sql(SETTINGS).fetchall()[0][0] == default


def test_a_spill_folder_that_cannot_be_made_is_named_before_the_query(
    sample_lake: Path, tmp_path: Path
) -> None:
    """DuckDB makes only the last folder of temp_dir, when it first spills: a missing parent
    was reported then as an unreadable lake ("run esa verify ... restore it from a backup")."""
    missing = tmp_path / "no-such-folder" / "spill"
    with pytest.raises(ValidationError, match="DuckDB cannot spill into") as refused:
        Session(esa.open(sample_lake), temp_dir=missing)
    assert "does not exist" in refused.value.problem
    assert "temp_dir=" in refused.value.hint
    done = run_esa(
        "--temp-dir", str(missing), "--memory-limit", "64MB", "sql", str(sample_lake), BIG_SORT
    )
    assert done.returncode == 1
    assert f"DuckDB cannot spill into {missing}" in done.stderr
    assert "esa verify" not in done.stderr
    assert not missing.parent.exists()
