"""A notebook executed headless elsewhere, opened in a real JupyterLab without trusting it,
shows its charts: Lab draws the Vega 5 output with its own bundled Vega (a renderer marked
safe), with nothing fetched off this machine. Before, the output's HTML frame won, Lab's
sanitizer stripped it, and the chart was blank until the notebook was trusted. The audit
report (a frame of its own) shows its body unstyled instead; trusted, the frame alone."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.browser import needs_chromium, open_served

CHART = """from esanalytics import viz
from esanalytics.engine import Session
import esanalytics as esa
viz.enable()
viz.activity_heatmap(Session(esa.open({lake!r})))"""
REPORT = """from esanalytics.audit import Scope, collect
from esanalytics.report import HtmlReport, render_html
HtmlReport(render_html(collect(esa.open({lake!r}), Scope("entity", "account-1"))))"""


def _jupyter_env(tmp_path: Path) -> dict[str, str]:
    """Lab's settings and the trusted-notebook database in the test's folder."""
    dirs = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data"}
    return {**os.environ, **{name: str(tmp_path / d) for name, d in dirs.items()}}


def _outputs(dom: str) -> list[str]:
    """Each output area's HTML, in order, with the renderer Lab chose in its class."""
    starts = [m.start() for m in re.finditer(r'<div class="[^"]*jp-OutputArea-output', dom)]
    return [dom[a:b] for a, b in zip(starts, [*starts[1:], len(dom)], strict=True)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A JupyterLab server on 127.0.0.1 serving ``tmp_path/books`` (no token): its URL and
    folder. Stopped (with any kernel it started) when the test ends."""
    books = tmp_path / "books"
    books.mkdir()
    port = _free_port()
    command = [
        sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser",
        "--ip=127.0.0.1", f"--port={port}", "--ServerApp.token=", "--ServerApp.password=",
        f"--ServerApp.root_dir={books}", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_jupyter_env(tmp_path),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/lab", timeout=1).close()
                break
            except OSError:
                time.sleep(0.25)
        else:
            raise AssertionError("JupyterLab did not start in 30 s")
        yield url, books
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@needs_chromium
def test_an_untrusted_executed_notebook_shows_its_chart_in_lab(
    lab: tuple[str, Path], sample_lake: Path, tmp_path: Path
) -> None:
    url, books = lab
    book = nbformat.v4.new_notebook()
    book.cells = [
        nbformat.v4.new_code_cell(cell.format(lake=str(sample_lake))) for cell in (CHART, REPORT)
    ]
    NotebookClient(book, timeout=120, kernel_name="python3").execute()
    saved = books / "executed.ipynb"
    nbformat.write(book, saved)  # no signature: Lab does not trust it
    (tmp_path / "untrusted").mkdir()
    dom, away = open_served(
        f"{url}/lab/tree/executed.ipynb", tmp_path / "untrusted", wait_ms=20_000
    )
    assert away == set()  # Vega came from Lab itself, the data from the notebook
    chart, report = _outputs(dom)
    assert "jp-RenderedVega5" in chart[:300], chart[:300]  # before: jp-RenderedHTML, blank
    assert re.search(r'class="mark-rect role-mark', chart), "no cells of the heatmap drawn"
    assert "<iframe" not in report  # the sanitizer took the frame ...
    assert "events in scope match their hashes" in report  # ... and the body shows instead

    trust = [sys.executable, "-m", "jupyter", "trust", str(saved)]
    subprocess.run(trust, check=True, capture_output=True, env=_jupyter_env(tmp_path))
    (tmp_path / "trusted").mkdir()
    dom, away = open_served(f"{url}/lab/tree/executed.ipynb", tmp_path / "trusted", wait_ms=20_000)
    assert away == set()
    chart, report = _outputs(dom)
    assert "jp-RenderedVega5" in chart[:300]
    assert re.search(r'class="mark-rect role-mark', chart)
    assert "<iframe srcdoc=" in report  # the styled report in its frame ...
    assert "esa-report-copy" not in report  # ... and no second, plain copy
