"""Rows that add no event (all rejected, or all already in the lake) still move the import's
cursor, in a commit line of its own, so a re-run does not read them again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import esanalytics as esa
from esanalytics.audit.verify import verify
from esanalytics.sources.importer import rejects_path


def _esa(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "esanalytics.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def _kinds(lake: Path) -> list[str]:
    log = (lake / "_esa" / "commits.log").read_bytes()
    return [json.loads(line.split(b"\t")[0])["kind"] for line in log.splitlines()]


def test_a_cursor_line_killed_before_its_commit_is_written_once_on_the_rerun(
    tmp_path: Path,
) -> None:
    lake, source = tmp_path / "lake", tmp_path / "orders.jsonl"
    good = [{"stream": f"order-{i}", "type": "Placed", "i": i} for i in range(5)]
    source.write_text("".join(json.dumps(row) + "\n" for row in good))
    assert _esa("import", str(lake), str(source), "--create").returncode == 0
    # then only rows that cannot be used: the batch adds no event
    with open(source, "a", encoding="utf-8") as handle:
        handle.write('{"stream": "order-9", "type": "not a name"}\n{"type": "Placed"}\n')
    killed = _esa(
        "import", str(lake), str(source), "--on-error", "skip",
        env={"ESA_KILL_AT": "cursor.before_commit"},
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    assert _kinds(lake) == ["append"]  # the cursor did not move
    rejects = rejects_path(lake, "orders")
    assert len(rejects.read_text().splitlines()) == 2  # written before the cut
    again = _esa("import", str(lake), str(source), "--on-error", "skip", "--format", "json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["events"], summary["rejected"]) == (0, 2)
    assert _kinds(lake) == ["append", "cursor"]
    assert len(rejects.read_text().splitlines()) == 2  # not written twice
    cursor = esa.open(lake).cursor("orders")
    assert cursor is not None
    assert cursor["at"]["line"] == 7
    third = _esa("import", str(lake), str(source), "--on-error", "skip", "--format", "json")
    assert json.loads(third.stdout)["rejected"] == 0  # nothing read again
    assert _kinds(lake) == ["append", "cursor"]  # and nothing written
    store = esa.open(lake)
    assert store.head == 5
    assert verify(store, deep=True).ok
    # a later event goes on from there, and the lake still verifies and compacts
    with open(source, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"stream": "order-1", "type": "Paid"}) + "\n")
    assert esa.import_events(lake, source).events == 1
    store = esa.open(lake)
    store.compact()
    assert verify(esa.open(lake), deep=True).ok
    assert [e.event_type for e in esa.open(lake).read_stream("order-1")] == ["Placed", "Paid"]


def test_a_rerun_over_rows_already_in_the_lake_moves_the_cursor_once(tmp_path: Path) -> None:
    lake, first, second = tmp_path / "lake", tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    rows = [{"event_id": f"00000000-0000-4000-8000-{i:012d}", "stream": "s-1", "type": "T"}
            for i in range(4)]  # fmt: skip
    first.write_text("".join(json.dumps(row) + "\n" for row in rows))
    second.write_text(first.read_text())  # the same events, exported again
    assert esa.import_events(lake, first, create=True).events == 4
    again = esa.import_events(lake, second)
    assert (again.events, again.already) == (0, 4)
    assert _kinds(lake) == ["append", "cursor"]
    assert esa.import_events(lake, second).already == 0  # not read a second time


def test_an_id_already_in_the_lake_on_another_event_is_refused_not_skipped(
    tmp_path: Path,
) -> None:
    """Skipping is for the same event read again; one id on two different events is a
    conflict an auditor must see, named by its place in the source."""
    lake, first, second = tmp_path / "lake", tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    shared = "00000000-0000-4000-8000-000000000001"
    first.write_text(json.dumps({"event_id": shared, "stream": "s-1", "type": "T", "v": 1}) + "\n")
    second.write_text(
        json.dumps({"event_id": "00000000-0000-4000-8000-000000000002", "stream": "s-2",
                    "type": "T", "v": 9}) + "\n"
        + json.dumps({"event_id": shared, "stream": "s-1", "type": "T", "v": 2}) + "\n"
    )  # fmt: skip
    assert esa.import_events(lake, first, create=True).events == 1
    before = (lake / "_esa" / "commits.log").read_bytes()
    with pytest.raises(esa.SourceError) as caught:  # not skipped silently
        esa.import_events(lake, second)
    assert caught.value.where == "b.jsonl:2"
    assert "already in the log at position 1 as another event" in caught.value.problem
    assert caught.value.hint is not None
    assert (lake / "_esa" / "commits.log").read_bytes() == before  # nothing written
    skipped = esa.import_events(lake, second, on_error="skip")
    assert (skipped.events, skipped.rejected) == (1, 1)
    rejected = json.loads(rejects_path(lake, "b").read_text())
    assert rejected["where"] == "b.jsonl:2"
    # the same content again is the same event: skipped, not refused
    third = tmp_path / "c.jsonl"
    third.write_text(first.read_text() * 2)
    again = esa.import_events(lake, third)
    assert (again.events, again.already, again.rejected) == (0, 2, 0)
