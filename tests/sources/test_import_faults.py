"""An import killed at any moment resumes to exactly-once, with its cursor on its events.

A child process imports a JSON Lines file in small batches (a few hundred bytes to a few kB a
batch, so a file of a few thousand lines makes dozens of commits) and is SIGKILLed: at each
named kill point an import reaches (``esanalytics/store/_faults.py``; random moments are
``test_import_sigkill.py``'s, which uses the helpers here). CSV and Parquet imports too, and a
full disk (a small tmpfs, root only).
After every kill the lake is checked against an independent reading of the file (``json`` and
``datetime``, line by line): positions 1..N with no gap, versions with no gap per stream, no
event twice, and the import's cursor on its events (the events in the lake are exactly the
valid lines up to the cursor's line). The import is then run again to the end: every valid
line is in the lake exactly once, ``verify`` (what ``esa verify`` runs) is clean, the rejects
file (``on_error="skip"``) holds each bad line exactly once, and a further run writes nothing.

Children are forked from a forkserver that has imported the package once, as in
``tests/store/test_faults.py``, so a child costs milliseconds, not an interpreter's start.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import esanalytics as esa
from esanalytics.sources import JsonLinesSource
from esanalytics.sources.importer import rejects_path
from tests.conftest import Disk, log_bytes

NAME = "orders"
STREAMS = 37


def line_text(n: int, bad: bool = False) -> str:
    """Source line ``n``: a deposit whose payload carries ``n``; a bad one is either not JSON
    or has a time that is not a time (alternately)."""
    if bad and n % 2:
        return f'{{"stream_id": "account-{n % STREAMS}", "event_type": "Deposited", oops {n}'
    when = "yesterday" if bad else f"2025-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}Z"
    row = {
        "stream_id": f"account-{n % STREAMS}",
        "event_type": "Deposited",
        "occurred_at": when,
        "data": {"n": n, "memo": "m" * (n % 23)},
    }
    return json.dumps(row)


def write_source(path: Path, lines: range, bad: set[int] | frozenset[int] = frozenset()) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        for n in lines:
            handle.write(line_text(n, n in bad) + "\n")


def good_lines(path: Path, upto: int | None = None) -> dict[int, str]:
    """An independent reading of the source: the stream of each line that is a JSON object
    with a stream, a type and a readable ISO time, by line number (up to ``upto``)."""
    good: dict[int, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if upto is not None and number > upto:
                break
            if not text.strip():
                continue
            try:
                row = json.loads(text)
                datetime.fromisoformat(row["occurred_at"].replace("Z", "+00:00"))
            except (ValueError, KeyError):
                continue
            good[number] = row["stream_id"]
    return good


def bad_lines(path: Path, upto: int | None = None) -> set[int]:
    with open(path, encoding="utf-8") as handle:
        numbers = {n for n, text in enumerate(handle, start=1) if text.strip()}
    if upto is not None:
        numbers = {n for n in numbers if n <= upto}
    return numbers - set(good_lines(path, upto))


def lake_events(lake: Path) -> tuple[pd.DataFrame, list[int]]:
    """The lake's events, checked: positions 1..N, versions 1..n in each stream, no event id
    twice, no source row twice; with the source row number (``data.n``) of each."""
    events = esa.open(lake).read_all().to_arrow().to_pandas()
    n = len(events)
    assert events["global_position"].tolist() == list(range(1, n + 1)), "positions have gaps"
    assert events["event_id"].is_unique, "an event id appears twice"
    versions = events.groupby("stream_id")["version"]
    assert (events["version"] == versions.cumcount() + 1).all(), "a stream's versions have gaps"
    numbers = [int(json.loads(data)["n"]) for data in events["data"]]
    assert len(set(numbers)) == n, "a source row was imported twice"
    return events, numbers


def check_lake(
    lake: Path, source: Path, *, name: str = NAME, good: dict[int, str] | None = None
) -> tuple[pd.DataFrame, int]:
    """The lake's invariants after any crash: positions and versions gapless, each event
    once, and the events exactly the valid source lines up to the cursor's line (each on
    the stream its line names; ``good``: :func:`good_lines` of the source, if known).
    Returns the events and the cursor's line (0: no cursor)."""
    if not (lake / "_esa" / "lake.json").exists():
        return pd.DataFrame(), 0  # a lake whose creation was cut: nothing committed
    events, numbers = lake_events(lake)
    cursor = esa.open(lake).cursor(name)
    line = int(cursor["at"]["line"]) if cursor else 0
    expected = (
        good_lines(source, line)
        if good is None
        else {n: stream for n, stream in good.items() if n <= line}
    )
    assert sorted(numbers) == sorted(expected), (
        f"the cursor is at line {line} but the lake holds other lines "
        f"(missing {sorted(set(expected) - set(numbers))[:5]}, "
        f"beyond {sorted(set(numbers) - set(expected))[:5]})"
    )
    assert events["stream_id"].tolist() == [expected[k] for k in numbers]
    if cursor is not None:
        assert cursor["source"] == str(source.resolve())
        assert cursor["at"]["offset"] <= source.stat().st_size
    return events, line


def check_rejects(lake: Path, source: Path, *, upto: int | None, final: bool) -> None:
    """The rejects file: whole lines only, each bad source line at most once (exactly once,
    and nothing else, when ``final``); bad lines up to ``upto`` (the cursor) all there."""
    path = rejects_path(lake, NAME)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    assert not text or text.endswith("\n"), "the rejects file ends in a torn line"
    records = [json.loads(line) for line in text.splitlines()]
    where = [r["where"] for r in records]
    assert len(where) == len(set(where)), "a rejected row was written twice"
    bad = {f"{source.name}:{n}" for n in bad_lines(source)}
    assert set(where) <= bad, f"rows that are not bad were rejected: {set(where) - bad}"
    if upto is not None:
        assert {f"{source.name}:{n}" for n in bad_lines(source, upto)} <= set(where)
    if final:
        assert set(where) == bad
        rows = {r["where"]: r["row"] for r in records}
        with open(source, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                key = f"{source.name}:{number}"
                if key in rows:
                    assert rows[key] == line.rstrip("\r\n"), (
                        f"the rejects file changed the row of {key}"
                    )


def check_finished(lake: Path, source: Path, *, on_error: str = "raise") -> None:
    """The import ran to the end: every valid line once, verify clean, and a re-run writes
    nothing (the lake byte-for-byte unchanged)."""
    from esanalytics.audit import verify

    events, _ = check_lake(lake, source)
    assert len(events) == len(good_lines(source))  # so every valid line is before the cursor
    quick, deep = verify(esa.open(lake)), verify(esa.open(lake), deep=True)
    assert quick.ok, str(quick)
    assert deep.ok, str(deep)
    if on_error == "skip":
        check_rejects(lake, source, upto=None, final=True)
    before = log_bytes(lake)
    again = esa.import_events(
        lake, JsonLinesSource(source, block_bytes=4096), name=NAME, on_error=on_error
    )
    assert (again.events, again.batches) == (0, 0)
    assert log_bytes(lake) == before, "a re-run of a finished import wrote something"


def run_import(lake: str, source: str, block: int, on_error: str, spec: str | None) -> None:
    """The child: arm the kill point, then import (creating the lake if needed)."""
    from esanalytics.store import _faults

    _faults.arm(spec)
    esa.import_events(
        lake,
        JsonLinesSource(source, block_bytes=block),
        name=NAME,
        on_error=on_error,
        create=True,
    )


def forkserver_context() -> Any:
    """A forkserver that has imported the package and this module (children start fast)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        [
            "esanalytics",
            "esanalytics.sources",
            "esanalytics.audit",
            "pyarrow.parquet",
            "pyarrow.dataset",
            "duckdb",
            "tests.sources.test_import_faults",
        ]
    )
    return context


def finished_or_killed(context: Any, target: Any, args: tuple[Any, ...], timeout: float) -> bool:
    """Run ``target(*args)`` in a child of ``context``: True if it finished within ``timeout``
    seconds (with exit code 0, asserted), False if it was SIGKILLed then."""
    child = context.Process(target=target, args=args)
    child.start()
    child.join(timeout=timeout)
    if child.exitcode is not None:
        assert child.exitcode == 0, f"the import failed ({child.exitcode})"
        return True
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    return False


@pytest.fixture(scope="module")
def forkserver() -> Any:
    return forkserver_context()


def _commits_with_cursor(lake: Path) -> int:
    log = lake / "_esa" / "commits.log"
    if not log.exists():
        return 0
    count = 0
    for line in log.read_bytes().splitlines():
        try:
            record = json.loads(line.rpartition(b"\t")[0])
        except ValueError:
            continue  # a torn last line: not committed
        count += "cursor" in record
    return count


LINES = 1_500
BLOCK = 8_192  # about 60 lines a batch: some 25 commits
BAD = frozenset(range(7, LINES, 97)) | {LINES}

#: Kill point (with the occurrence), the import's on_error, and whether the batch being
#: committed is in the lake afterwards (None: no batch was being committed).
POINTS: list[tuple[str, str, bool | None]] = [
    ("ingest.before_commit", "raise", False),  # the first batch
    ("ingest.before_commit:5", "raise", False),
    ("commitlog.after_write:5", "raise", True),  # written, not synced: a SIGKILL keeps it
    ("ingest.after_commit", "raise", True),
    ("ingest.after_commit:5", "raise", True),  # committed, its files not yet renamed
    ("ingest.after_publish:5", "raise", True),  # published, the checkpoint not saved
    ("create.before_marker", "raise", None),  # the lake being created by the import
    ("import.after_rejects:3", "skip", False),  # rejects synced, the batch not committed
    ("ingest.after_commit:5", "skip", True),
]


@pytest.mark.parametrize(
    ("point", "on_error", "committed"), POINTS, ids=[f"{p}-{e}" for p, e, _ in POINTS]
)
def test_an_import_killed_at_each_point_resumes_exactly_once(
    point: str, on_error: str, committed: bool | None, tmp_path: Path, forkserver: Any
) -> None:
    lake, source = tmp_path / "lake", tmp_path / "src.jsonl"
    write_source(source, range(1, LINES + 1), BAD if on_error == "skip" else frozenset())
    child = forkserver.Process(
        target=run_import, args=(str(lake), str(source), BLOCK, on_error, point)
    )
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL, f"{point} was never reached ({child.exitcode})"
    _, line = check_lake(lake, source)
    occurrence = int(point.partition(":")[2] or 1)
    if point.startswith("import.after_rejects"):  # the cut batch's bad rows are written
        rejected = [
            json.loads(t)["where"] for t in rejects_path(lake, NAME).read_text().splitlines()
        ]
        assert max(int(w.rpartition(":")[2]) for w in rejected) > line
    elif committed is not None:
        assert _commits_with_cursor(lake) == (occurrence if committed else occurrence - 1)
        assert (line > 0) == (committed or occurrence > 1)
    else:
        assert line == 0
    if on_error == "skip":
        check_rejects(lake, source, upto=line, final=False)
    # Run it again, as a user would: it goes on from the cursor to the end.
    summary = esa.import_events(
        lake, JsonLinesSource(source, block_bytes=BLOCK), name=NAME, on_error=on_error,
        create=True,
    )  # fmt: skip
    assert summary.resumed == (line > 0)
    assert summary.already == 0, "a committed batch was read again"
    check_finished(lake, source, on_error=on_error)


def import_csv_or_parquet(lake: str, kind: str, source: str, spec: str | None) -> None:
    """The child for CSV and Parquet: small batches, killed at ``spec``."""
    from esanalytics.sources import CsvSource, ParquetSource
    from esanalytics.store import _faults

    _faults.arm(spec)
    src = (
        CsvSource(source, block_bytes=4_096)
        if kind == "csv"
        else ParquetSource(source, batch_rows=100)
    )
    esa.import_events(lake, src, name=NAME, create=True)


@pytest.mark.parametrize("point", ["ingest.before_commit:3", "ingest.after_commit:7"])
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_csv_or_parquet_import_killed_resumes_exactly_once(
    kind: str, point: str, tmp_path: Path, forkserver: Any
) -> None:
    """The CSV cursor (a row number) and the Parquet one (a file of a folder, a row in it)
    resume at the row after the last committed batch: rows 1..cursor in the lake, then all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line_text(n)) for n in range(1, 2_001)]
    for row in rows:  # flat rows: the payload is the row minus the mapped columns
        row.update(row.pop("data"))
    if kind == "csv":
        source = tmp_path / "src.csv"
        pd.DataFrame(rows).to_csv(source, index=False)
    else:
        source = tmp_path / "exports"
        source.mkdir()
        for k in range(4):  # four files of 500 rows
            pq.write_table(
                pa.Table.from_pylist(rows[k * 500 : (k + 1) * 500]), source / f"part{k}.parquet"
            )
    lake = tmp_path / "lake"
    child = forkserver.Process(
        target=import_csv_or_parquet, args=(str(lake), kind, str(source), point)
    )
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL, f"{point} was never reached ({child.exitcode})"
    _, numbers = lake_events(lake)
    cursor = esa.open(lake).cursor(NAME)
    assert cursor is not None
    at = cursor["at"]
    upto = at["row"] if kind == "csv" else 500 * at["index"] + at["row"]
    assert sorted(numbers) == list(range(1, upto + 1))
    occurrence = int(point.rpartition(":")[2])
    committed = occurrence if "after_commit" in point else occurrence - 1
    assert _commits_with_cursor(lake) == committed
    import_csv_or_parquet(str(lake), kind, str(source), None)
    events, numbers = lake_events(lake)
    assert sorted(numbers) == list(range(1, 2_001))
    assert events["stream_id"].tolist() == [f"account-{n % STREAMS}" for n in numbers]


def test_the_cli_killed_after_its_commit_resumes_with_nothing_new(tmp_path: Path) -> None:
    """``ESA_KILL_AT`` arms the CLI too: ``esa import`` killed after its (one) commit line,
    before its files are renamed into place; the next ``esa import`` finishes the commit,
    imports nothing again and says so."""
    lake, source = tmp_path / "lake", tmp_path / "src.jsonl"
    write_source(source, range(1, 501))
    command = [sys.executable, "-m", "esanalytics.cli", "import", str(lake), str(source)]
    env = {**os.environ, "ESA_KILL_AT": "ingest.after_commit"}
    done = subprocess.run(
        [*command, "--create"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert list((lake / "events").rglob("*.parquet")) == [], "the files were already published"
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "nothing new" in done.stdout, done.stdout
    assert "position 500" in done.stdout, done.stdout
    events, line = check_lake(lake, source, name="src")
    assert (len(events), line) == (500, 500)


def test_a_torn_last_line_of_the_rejects_file_is_replaced_not_kept(tmp_path: Path) -> None:
    """A crash (or a full disk) can cut the rejects file inside a line: the next run drops
    the torn piece and writes that row again whole."""
    lake, source = tmp_path / "lake", tmp_path / "src.jsonl"
    bad = {5, 6, 40}
    write_source(source, range(1, 61), bad)
    path = rejects_path(lake, NAME)
    path.parent.mkdir(parents=True)
    whole = json.dumps({"where": "src.jsonl:5", "reason": "not valid JSON", "row": "x"})
    torn = json.dumps({"where": "src.jsonl:6", "reason": "occurred_at 'yes"})[:30]
    path.write_text(whole + "\n" + torn, encoding="utf-8")
    summary = esa.import_events(
        lake, JsonLinesSource(source, block_bytes=1024), name=NAME, on_error="skip", create=True
    )
    assert summary.events == 57
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["where"] for line in lines] == [
        "src.jsonl:5",
        "src.jsonl:6",
        "src.jsonl:40",
    ]


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_an_import_on_a_full_disk_commits_whole_batches_or_nothing(
    disk: Disk, tmp_path: Path, on_error: str
) -> None:
    """The disk fills during an import: it raises a hinted StorageError having committed
    whole batches with their cursors only; with space back, the re-run completes."""
    source = tmp_path / "src.jsonl"  # the source is not on the small disk
    bad = set(range(11, 6_000, 211)) if on_error == "skip" else set()
    write_source(source, range(1, 6_001), bad)
    refusals: list[esa.StorageError] = []
    for leave in (0, 64 << 10, 600 << 10):
        lake = disk.path / f"lake{leave}"
        esa.open(lake, create=True)
        disk.fill(leave)
        try:
            esa.import_events(
                lake, JsonLinesSource(source, block_bytes=16_384), name=NAME, on_error=on_error
            )
        except esa.StorageError as error:
            refusals.append(error)
            problem, hint = error.problem, error.hint or ""
            assert "full" in problem
            assert str(lake) in problem
            assert "free" in hint
        assert list(lake.rglob(".*.tmp")) == [], "temporary files were left behind"
        _, line = check_lake(lake, source)
        if on_error == "skip":
            check_rejects(lake, source, upto=line, final=False)
        disk.free()
        summary = esa.import_events(
            lake, JsonLinesSource(source, block_bytes=16_384), name=NAME, on_error=on_error
        )
        assert summary.already == 0
        check_finished(lake, source, on_error=on_error)
        shutil.rmtree(lake)
        shutil.rmtree(rejects_path(lake, NAME).parent, ignore_errors=True)
    assert len(refusals) >= 2, "the import did not meet the full disk"
    if on_error == "skip":  # the first batch's bad row meets the full disk first
        assert "the rejected rows" in refusals[0].problem, refusals[0].problem
