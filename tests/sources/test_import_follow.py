"""``esa import --follow`` on a growing file, stopped by Ctrl-C; and two runs of one import.

The follower is a real ``esa import ... --follow`` process; the test is its producer, appending
lines (one written in two halves, its newline only in the second) and then sending SIGINT. The
lake is then checked as after a crash (``test_import_faults.check_lake``: every complete line
once, nothing beyond the cursor, positions and versions gapless) and verified; the same command
without ``--follow`` imports what was left. Two processes importing one source under one name
at once end, after a re-run, with every line once: the one that loses a race stops with
:class:`ImportConflictError` having written nothing of its batch.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import esanalytics as esa
from esanalytics.exceptions import ImportConflictError
from esanalytics.sources import JsonLinesSource
from esanalytics.sources.importer import rejects_path
from tests.sources.test_import_faults import (
    NAME,
    check_finished,
    check_lake,
    forkserver_context,
    good_lines,
    line_text,
    write_source,
)

POLL = "0.2"


def _wait_for(what: str, ready: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the follower exited ({process.returncode}) before {what}: {err}{out}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _cursor_line(lake: Path, name: str = NAME) -> int:
    if not (lake / "_esa" / "lake.json").exists():
        return 0
    cursor = esa.open(lake).cursor(name)
    return int(cursor["at"]["line"]) if cursor else 0


def _follow(lake: Path, source: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "esanalytics.cli", "import", str(lake), str(source),
         "--name", NAME, "--follow", "--poll", POLL, "--create", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _append(source: Path, text: str) -> None:
    with open(source, "a", encoding="utf-8") as handle:
        handle.write(text)


def test_follow_imports_whole_lines_as_they_come_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path,
) -> None:
    lake, source = tmp_path / "lake", tmp_path / "src.jsonl"
    write_source(source, range(1, 101))
    follower = _follow(lake, source)
    _wait_for("the first 100 lines", lambda: _cursor_line(lake) == 100, follower)
    for start in range(101, 151, 10):  # a producer writing a few lines at a time
        write_source(source, range(start, start + 10))
        time.sleep(0.05)
    _wait_for("line 150", lambda: _cursor_line(lake) == 150, follower)
    # Line 151 is written in two halves: the first, without its newline, is left alone.
    text = line_text(151)
    _append(source, text[:40])
    time.sleep(1.0)  # five polls
    assert follower.poll() is None
    assert _cursor_line(lake) == 150
    assert len(esa.open(lake).read_all()) == 150, "half a line was imported"
    _append(source, text[40:] + "\n")
    _wait_for("line 151", lambda: _cursor_line(lake) == 151, follower)
    # Ctrl-C while line 152 is half written.
    complete = source.stat().st_size
    text = line_text(152)
    _append(source, text[:25])
    time.sleep(0.5)
    follower.send_signal(signal.SIGINT)
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert "Traceback" not in err, err
    assert "151 events written" in out, out
    assert "stopped by Ctrl-C" in out, out
    assert "position 151" in out, out
    events, line = check_lake(lake, source)
    assert (len(events), line) == (151, 151)
    cursor = esa.open(lake).cursor(NAME)
    assert cursor is not None
    assert cursor["at"]["offset"] == complete, "the cursor is not on the last committed batch"
    from esanalytics.audit import verify

    assert verify(esa.open(lake), deep=True).ok
    # The same command without --follow imports what was left (the rest of line 152, more).
    _append(source, text[25:] + "\n")
    write_source(source, range(153, 161))
    done = subprocess.run(
        [sys.executable, "-m", "esanalytics.cli", "import", str(lake), str(source), "--name", NAME],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "9 events written" in done.stdout, done.stdout
    check_finished(lake, source)
    assert len(esa.open(lake).read_all()) == 160


def test_a_source_truncated_while_followed_stops_the_import_with_its_own_error(
    tmp_path: Path,
) -> None:
    lake, source = tmp_path / "lake", tmp_path / "src.jsonl"
    write_source(source, range(1, 201))
    follower = _follow(lake, source)
    _wait_for("the first 200 lines", lambda: _cursor_line(lake) == 200, follower)
    kept = source.read_text(encoding="utf-8").splitlines(keepends=True)[:50]
    source.write_text("".join(kept), encoding="utf-8")  # truncated, as a log rotation might
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 1, (out, err)
    assert "Traceback" not in err, err
    assert "changed under the import's cursor" in err, err
    assert "truncated" in err, err
    assert "Hint:" in err, err
    from esanalytics.audit import verify

    store = esa.open(lake)
    assert len(store.read_all()) == 200
    assert verify(store).ok


def test_follow_counts_a_rejected_row_once_however_many_polls_read_past_it(
    tmp_path: Path,
) -> None:
    """A batch that commits nothing (every row rejected) moves the follower on: it is not read
    again at every poll, and its rows are counted once."""
    lake, source = tmp_path / "lake", tmp_path / "src.jsonl"
    write_source(source, range(1, 21))
    follower = _follow(lake, source, "--on-error", "skip", "--format", "json")
    _wait_for("the first 20 lines", lambda: _cursor_line(lake) == 20, follower)
    _append(source, "not json\n")
    path = rejects_path(lake, NAME)
    _wait_for("the rejected row", path.exists, follower)
    time.sleep(1.2)  # six polls
    follower.send_signal(signal.SIGINT)
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    summary = json.loads(out[out.index("{") :])
    assert (summary["events"], summary["rejected"]) == (20, 1), summary
    assert err.count("committed:") <= 2, err  # once a batch, not once a poll
    assert [json.loads(line)["where"] for line in path.read_text().splitlines()] == ["src.jsonl:21"]


def import_racing(lake: str, source: str, block: int, on_error: str, go: Any, out: str) -> None:
    """A child: wait for the start signal, import, and say how it ended."""
    go.wait()
    result: dict[str, Any]
    try:
        summary = esa.import_events(
            lake, JsonLinesSource(source, block_bytes=block), name=NAME, on_error=on_error
        )
        result = {"ok": True, "events": summary.events}
    except ImportConflictError as error:
        result = {"ok": False, "problem": error.problem, "hint": error.hint}
    Path(out).write_text(json.dumps(result))


def test_two_runs_of_one_import_at_once_end_exactly_once(tmp_path: Path) -> None:
    context = forkserver_context()
    conflicts = 0
    rounds = [(2_048, "raise"), (2_048, "skip"), (16_384, "skip")]
    for round_, (block, on_error) in enumerate(rounds):
        lake, source = tmp_path / f"lake{round_}", tmp_path / f"src{round_}.jsonl"
        bad = set(range(3, 1_500, 10)) if on_error == "skip" else set()
        write_source(source, range(1, 1_501), bad)
        esa.open(lake, create=True)
        go = context.Event()
        outs = [tmp_path / f"out{round_}-{k}.json" for k in range(2)]
        children = [
            context.Process(
                target=import_racing, args=(str(lake), str(source), block, on_error, go, str(out))
            )
            for out in outs
        ]
        for child in children:
            child.start()
        time.sleep(0.2)
        go.set()
        for child in children:
            child.join(timeout=120)
            assert child.exitcode == 0
        results = [json.loads(out.read_text()) for out in outs]
        for result in results:
            if not result["ok"]:
                conflicts += 1
                assert "Another run of the import" in result["problem"]
                assert "one import per source name at a time" in result["hint"]
        assert any(result["ok"] for result in results), results  # one always finishes
        check_lake(lake, source)
        again = esa.import_events(
            lake, JsonLinesSource(source, block_bytes=block), name=NAME, on_error=on_error
        )
        assert again.already == 0
        check_finished(lake, source, on_error=on_error)
        assert len(esa.open(lake).read_all()) == len(good_lines(source)) == 1_500 - len(bad)
    assert conflicts >= 1, "the two runs never met"


def test_a_run_that_loses_the_race_writes_no_rejected_row_twice(tmp_path: Path) -> None:
    """Run A starts; after its first batch, run B of the same import goes to the end; A's
    next batch then meets B's cursor (ImportConflictError): the rows A rejected in that batch,
    which B already wrote to the rejects file, are not written again."""
    lake, source = tmp_path / "lake", tmp_path / "src.jsonl"
    write_source(source, range(1, 301), set(range(5, 300, 20)))

    def run(on_batch: Callable[[esa.ImportSummary], None] | None = None) -> esa.ImportSummary:
        return esa.import_events(
            lake, JsonLinesSource(source, block_bytes=2_048), name=NAME, on_error="skip",
            create=True, on_batch=on_batch,
        )  # fmt: skip

    others: list[esa.ImportSummary] = []

    def second_run(summary: esa.ImportSummary) -> None:
        if not others:
            others.append(run())

    with pytest.raises(ImportConflictError):
        run(second_run)
    assert others[0].events > 0
    check_finished(lake, source, on_error="skip")
