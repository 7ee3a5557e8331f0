"""The HTML report in a real headless Chromium with no network: it renders, and the page
asks for nothing (Debian's chromium, installed by .ci/run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from esanalytics.audit import Scope, collect
from esanalytics.report import render_html
from tests.report.test_html_report import PAYLOAD, hostile_lake

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium's own background checks (updates, time); the page itself must request nothing.
BROWSER_OWN = ("google.com/", "googleapis.com/", "gstatic.com/")

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Chromium is not installed here (.ci/run installs it; apt-get install chromium)",
)


@needs_chromium
def test_report_renders_offline_and_requests_nothing(lake: Path, tmp_path: Path) -> None:
    assert CHROMIUM, "CI must have Chromium: .ci/run installs it"
    page = tmp_path / "report.html"
    page.write_text(render_html(collect(hostile_lake(lake), Scope("entity", f"account-{PAYLOAD}"))))
    net_log = tmp_path / "net.json"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", f"--log-net-log={net_log}", "--dump-dom", page.as_uri(),
    ]  # fmt: skip
    unshare = shutil.which("unshare")
    if unshare and os.geteuid() == 0:
        command = [unshare, "--net", *command]  # no network at all: nothing can leave
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "Audit report: entity" in dom
    assert "Integrity" in dom
    assert "<script>" not in dom  # the payload stayed text
    assert "&lt;script&gt;" in dom
    requested = set()
    for event in json.loads(net_log.read_text()).get("events", []):
        url = (event.get("params") or {}).get("url")
        if url:
            requested.add(url)
    from_page = {
        u
        for u in requested
        if not u.startswith("file:") and not any(host in u for host in BROWSER_OWN)
    }
    assert from_page == set()
