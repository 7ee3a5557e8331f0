"""An event store's mapping is printed in the store's own terms, and only its fields are kept.

The rows esa makes from an event store's tables use esa's own field names, so a mapping
printed as ``stream_id <- stream_id`` would tell the user nothing: the import prints which of
the store's columns each part comes from (``stream_id <- originator_id``), while the cursor
keeps the plain mapping, so a re-run under the same name compares what it compared before.
"""

from __future__ import annotations

import json
from pathlib import Path

import esanalytics as esa
from esanalytics.store import open_store
from tests.conftest import run_esa
from tests.sources.eventsourcing_app import bank, sqlite_env


def test_the_cli_prints_the_store_columns_and_the_lake_keeps_the_plain_mapping(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bank.sqlite"
    with bank(sqlite_env(path)) as app:
        app.open("owner-1", deposits=2)
    lake = tmp_path / "lake"
    done = run_esa("import", str(lake), f"sqlite:///{path}", "--create")
    assert done.returncode == 0, done.stderr
    shown = dict(
        (part.strip(), where.strip())
        for part, _, where in (
            line.partition("<-") for line in done.stderr.splitlines() if "<-" in line
        )
    )
    assert shown["stream_id"] == "originator_id"
    assert shown["event_type"] == "topic (its class path)"
    assert shown["schema_version"] == "the state's class_version"
    assert "stream_id <- originator_id" in done.stdout  # the summary's one line too
    with open_store(lake) as store:
        cursor = store.cursor("stored_events")
    assert cursor is not None
    kept = cursor["mapping"]
    assert kept["stream_id"] == "stream_id"
    assert "originator_id" not in json.dumps(kept)
    again = esa.import_events(lake, f"sqlite:///{path}")
    assert again.events == 0
    assert ("stream_id", "originator_id") in again.mapping.describe()


def test_an_empty_store_says_which_table_is_empty_and_leaves_no_lake(tmp_path: Path) -> None:
    path = tmp_path / "bank.sqlite"
    with bank(sqlite_env(path)) as app:
        app.open("owner-1", deposits=0)
    import sqlite3

    with sqlite3.connect(path) as con:  # the library's table, emptied
        con.execute("DELETE FROM stored_events")
    lake = tmp_path / "lake"
    done = run_esa("import", str(lake), f"sqlite:///{path}", "--create")
    assert done.returncode == 1
    assert "holds no events" in done.stderr
    assert "stored_events (eventsourcing) has no rows yet" in done.stderr
    assert "blank lines" not in done.stderr
    assert not lake.exists()
