"""``esa import LAKE sqlite:///...`` and ``postgresql://...`` as a user runs them: the real
``esa`` program in a real process, against stores the ``eventsourcing`` library wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import esanalytics as esa
from tests.conftest import log_bytes
from tests.sources.eventsourcing_app import bank, postgres_env, sqlite_env
from tests.sources.test_import_cli import esa_run, failed


def _bank(env: dict[str, str], accounts: int) -> int:
    with bank(env) as app:
        for n in range(accounts):
            app.open(f"owner-{n}", deposits=2)
        return len(app.recorder.select_notifications(start=1, limit=10_000))


def test_import_a_sqlite_store_then_again(tmp_path: Path) -> None:
    path, lake = tmp_path / "bank.sqlite", tmp_path / "lake"
    count = _bank(sqlite_env(path), 4)
    done = esa_run("import", lake, f"sqlite:///{path}", "--create")
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert f"{count} events written" in out
    assert "import 'stored_events'" in out
    assert "stream_id <- stream_id" in out
    before = log_bytes(lake)
    again = esa_run("import", lake, f"sqlite:///{path}", "--format", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["events"] == 0
    assert log_bytes(lake) == before
    info = esa_run("info", lake)
    assert "stored_events" in info.stdout


def test_import_a_postgres_store_with_and_without_schema(tmp_path: Path, postgres_url: str) -> None:
    count = _bank(postgres_env(postgres_url), 3)
    done = esa_run("import", tmp_path / "a", postgres_url, "--create")
    assert done.returncode == 0, done.stderr
    assert f"{count} events written" in done.stdout + done.stderr
    done = esa_run(
        "import", tmp_path / "b", postgres_url, "--create", "--schema", "eventsourcing",
        "--name", "bank",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = esa.open(tmp_path / "b").read_all().to_arrow().to_pylist()
    assert len(events) == count
    assert {e["event_type"] for e in events} == {"Account.Opened", "Account.Deposited"}


def test_cli_errors_name_the_problem_with_a_hint(
    tmp_path: Path, postgres: Any, postgres_url: str
) -> None:
    lake = tmp_path / "lake"
    failed(
        esa_run("import", lake, f"sqlite:///{tmp_path}/absent.sqlite", "--create"),
        "no SQLite database file",
    )
    failed(
        esa_run(
            "import", lake, postgres.url("postgres", user="secret", password="nope"), "--create"
        ),
        "refused the login of secret",
    )
    failed(
        esa_run("import", lake, postgres.url("absent_db"), "--create"), "no database 'absent_db'"
    )
    _bank(postgres_env(postgres_url), 1)
    failed(
        esa_run("import", lake, postgres_url, "--create", "--schema", "marten"),
        "does not hold marten tables",
    )
    failed(esa_run("import", lake, postgres_url, "--create", "--schema", "nosuch"), "nosuch")
    assert not lake.exists()
