"""`esa import` as a user runs it: the real `esa` program from the project's environment, in
a real process. Success prints the mapping and a summary; every failure prints `error:` and
`Hint:` and exits 1, never a traceback; `--format json` parses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

import esanalytics as esa
from tests.conftest import log_bytes

ESA = Path(sys.executable).parent / "esa"


def esa_run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ESA), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": str(ESA.parent) + ":/usr/bin:/bin", "TZ": "UTC", "COLUMNS": "120"},
    )


def failed(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """The error output of a run that must have failed cleanly."""
    text = done.stdout + done.stderr
    assert done.returncode == 1, text
    assert "Traceback" not in text
    assert "error:" in done.stderr
    assert "Hint:" in done.stderr
    for word in words:
        assert word in done.stderr, done.stderr
    return done.stderr


def write_export(path: Path, n: int, start: int = 0) -> Path:
    with open(path, "a") as handle:
        for i in range(start, start + n):
            handle.write(json.dumps({"account_id": i % 4, "kind": "Deposited",
                                     "at": f"2025-02-01T10:{i % 60:02d}:00+01:00",
                                     "amount": i}) + "\n")  # fmt: skip
    return path


def test_import_create_prints_mapping_and_summary_then_rerun_and_growth(tmp_path: Path) -> None:
    source = write_export(tmp_path / "ledger.jsonl", 30)
    lake = tmp_path / "lake"
    done = esa_run(
        "import", lake, source, "--create", "--map", "stream_id=account-{account_id}",
        "--map", "event_type=kind", "--occurred-at", "at",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "Traceback" not in out
    assert "stream_id" in out
    assert "account-{account_id}" in out
    assert "event_type" in out
    assert "kind" in out
    assert "30 events written" in done.stdout
    assert "streams      4" in done.stdout
    assert "2025-02-01T09:00:00Z" in done.stdout  # the span, in UTC
    assert "position 30" in done.stdout
    events = esa.open(lake).read_all().to_pandas()
    expected = pd.read_json(source, lines=True, dtype=False)
    assert events["stream_id"].tolist() == [f"account-{a}" for a in expected["account_id"]]
    assert [json.loads(d)["amount"] for d in events["data"]] == expected["amount"].tolist()

    before = log_bytes(lake)
    again = esa_run("import", lake, source)  # no options: the stored mapping
    assert again.returncode == 0, again.stderr
    assert "nothing new" in again.stdout
    assert log_bytes(lake) == before

    write_export(source, 5, start=30)
    grown = esa_run("import", lake, source, "--format", "json")
    assert grown.returncode == 0, grown.stderr
    summary = json.loads(grown.stdout)
    assert summary["events"] == 5
    assert summary["head"] == 35
    assert summary["rejected"] == 0
    assert summary["mapping"]["stream_id"] == "account-{account_id}"
    assert summary["name"] == "ledger"


def test_missing_lake_without_create_hints_create(tmp_path: Path) -> None:
    source = write_export(tmp_path / "x.jsonl", 2)
    stderr = failed(esa_run("import", tmp_path / "nolake", source), "--create")
    assert "nolake" in stderr
    assert not (tmp_path / "nolake").exists()


def test_errors_are_clean_and_leave_the_lake_unchanged(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    esa_run("import", lake, write_export(tmp_path / "first.jsonl", 3), "--create",
            "--map", "stream_id=account-{account_id}", "--map", "event_type=kind",
            "--occurred-at", "at")  # fmt: skip
    before = log_bytes(lake)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"stream": "a-1", "type": "T"}\n{"stream": "a-1", "type": \n')
    failed(esa_run("import", lake, bad), "bad.jsonl:2", "not valid JSON", "--on-error skip")
    ambiguous = tmp_path / "amb.jsonl"
    ambiguous.write_text('{"stream": "a-1", "type": "T", "event": "U"}\n')
    failed(esa_run("import", lake, ambiguous), "type", "event", "--map event_type=")
    naive = tmp_path / "naive.jsonl"
    naive.write_text('{"stream": "a-1", "type": "T", "time": "2025-01-01 10:00"}\n')
    failed(esa_run("import", lake, naive), "naive.jsonl:1", "no time zone", "--timezone")
    failed(
        esa_run("import", lake, naive, "--timezone", "Mars/Olympus"),
        "'Mars/Olympus' is not a time zone",
    )
    failed(esa_run("import", lake, tmp_path / "missing.jsonl"), "missing.jsonl")
    failed(esa_run("import", lake, bad, "--map", "nonsense=x"), "nonsense")
    failed(esa_run("import", lake, tmp_path / "first.jsonl", "--map", "stream_id=kind"),
           "without mapping options")  # fmt: skip
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    failed(esa_run("import", lake, empty), "empty")
    assert log_bytes(lake) == before


def test_on_error_skip_reports_rejects(tmp_path: Path) -> None:
    source = tmp_path / "mixed.jsonl"
    source.write_text(
        '{"stream": "a-1", "type": "T"}\n[1, 2]\n{"stream": "a-1", "type": "bad type"}\n'
        '{"stream": "a-2", "type": "T"}\n'
    )
    lake = tmp_path / "lake"
    done = esa_run("import", lake, source, "--create", "--on-error", "skip", "--format", "json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["events"] == 2
    assert summary["rejected"] == 2
    rejects = Path(summary["rejects_file"])
    assert rejects == tmp_path / "lake.rejects" / "mixed.jsonl"
    lines = [json.loads(t) for t in rejects.read_text().splitlines()]
    assert [r["where"] for r in lines] == ["mixed.jsonl:2", "mixed.jsonl:3"]
    assert [r["row"] for r in lines] == ["[1, 2]", '{"stream": "a-1", "type": "bad type"}']
    text = esa_run("import", lake, source, "--on-error", "skip")
    assert text.returncode == 0, text.stderr
    assert "nothing new" in text.stdout
    assert rejects.read_text().count("\n") == 2

    table = esa_run("import", tmp_path / "lake2", source, "--create", "--on-error", "skip")
    assert table.returncode == 0, table.stderr
    assert "rejected     2" in table.stdout
    assert "lake2.rejects" in table.stdout
