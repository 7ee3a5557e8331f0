"""Reports a person can read: progress while `esa report` works, the PDF trail with amounts
and before/after values, and an HTML trail that fits the page."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

import esanalytics as esa
from tests.conftest import run_esa


def _in_a_terminal(*args: str) -> str:
    """Everything ``esa ARGS`` writes to a terminal (a pseudo-terminal: stdout and stderr are
    both a tty, as in a shell), escape sequences included."""
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "40"}
    done = subprocess.Popen(
        [sys.executable, "-m", "esanalytics.cli", *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        close_fds=True,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the other side closed: the process has ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert done.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def entity(sample_lake: Path) -> str:
    streams = esa.open(sample_lake).streams().sort_by([("version", "descending")])
    return str(streams["stream_id"][0])


@pytest.mark.parametrize("fmt", ["pdf", "html"])
def test_report_shows_its_progress_in_a_terminal_and_nothing_in_a_pipe(
    sample_lake: Path, entity: str, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"r.{fmt}"
    screen = _in_a_terminal(
        "report", str(sample_lake), "--entity", entity, "--format", fmt, "--output", str(out)
    )
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert "report: reading and checking the events in scope" in plain
    assert re.search(r"report: drawing chart 1 of \d", plain), plain
    assert out.stat().st_size > 0
    piped = run_esa(
        "report", str(sample_lake), "--entity", entity, "--format", fmt, "--output", str(out)
    )
    assert piped.returncode == 0, piped.stderr
    assert "report:" not in piped.stderr  # a log file gets no spinner frames
