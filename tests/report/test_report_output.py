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
from tests.browser import needs_chromium, open_offline
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


def _first_deposit(sample_lake: Path, entity: str) -> tuple[str, str]:
    """The first deposit's amount, and its change to the balance as ``before→after``."""
    import json

    from esanalytics.catalog import account_balances
    from esanalytics.engine import Session

    session = Session(esa.open(sample_lake))
    trail = account_balances.trail(session, entity).to_arrow_table().to_pylist()
    first = next(e for e in trail if e["event_type"] == "MoneyDeposited")
    amount = json.loads(first["data"])["amount"]
    return f"amount {amount}", f"balance {first['balance_before']}→{first['balance_after']}"


def test_the_pdf_trail_shows_amounts_and_before_after_values(
    sample_lake: Path, entity: str
) -> None:
    from esanalytics.audit import Scope, collect
    from esanalytics.report import render_pdf

    package = collect(esa.open(sample_lake), Scope("entity", entity))
    pdf = render_pdf(package, compress=False).decode("latin-1")
    amount, change = _first_deposit(sample_lake, entity)
    assert f"({amount}, " in pdf or f"({amount})" in pdf, amount
    assert change.replace("→", "->") in pdf, change
    for header in ("payload", "changes", "approved by"):
        assert f"({header})" in pdf, header


def test_the_html_trail_shows_the_same_and_keeps_ids_on_one_line(
    sample_lake: Path, entity: str
) -> None:
    from esanalytics.audit import Scope, collect
    from esanalytics.report import render_html

    page = render_html(collect(esa.open(sample_lake), Scope("entity", entity)))
    trail = page.split("<h2>Trail</h2>")[1]
    assert trail.startswith('\n<div class="scroll"><table class="trail">')
    amount, change = _first_deposit(sample_lake, entity)
    assert amount in trail
    assert change in trail
    assert '<td class="id">' in trail
    assert ".trail td.id{white-space:nowrap" in page
    assert ".scroll{overflow-x:auto" in page


@needs_chromium
def test_the_html_trail_fits_the_window_in_a_browser(
    sample_lake: Path, entity: str, tmp_path: Path
) -> None:
    """Drawn by Chromium at its default 800 px: the page is no wider than the window (the
    trail scrolls in its own box), and no id or time breaks over lines."""
    from esanalytics.audit import Scope, collect
    from esanalytics.report import render_html

    html = render_html(collect(esa.open(sample_lake), Scope("entity", entity)))
    # The report forbids scripts (its CSP); this copy drops that to measure the layout.
    html = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
    probe = (
        "<script>window.addEventListener('load', () => { const b = document.body;"
        " const lines = (td) => { const r = document.createRange(); r.selectNodeContents(td);"
        "   return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size; };"
        " const most = (sel) => Math.max(...[...document.querySelectorAll(sel)].map(lines));"
        " b.dataset.page = document.documentElement.scrollWidth - window.innerWidth;"
        " b.dataset.idlines = most('.trail td.id');"
        " b.dataset.timelines = most('.trail td.nowrap');"
        " b.dataset.box = document.querySelector('.scroll').scrollWidth; });</script>"
    )
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", probe + "</body>"))
    dom, requested = open_offline(page, tmp_path, wait_ms=2_000)
    assert requested == set()
    found = dict(re.findall(r'data-(page|idlines|timelines|box)="([0-9.-]+)"', dom))
    assert float(found["page"]) <= 0, found  # the page does not scroll sideways
    assert float(found["box"]) > 0
    assert found["idlines"] == "2", found  # correlation above causation, neither broken
    assert found["timelines"] == "2", found  # recorded above occurred, neither broken
