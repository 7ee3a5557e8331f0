"""The HTML report in a real headless Chromium with no network: it renders, and the page
asks for nothing (Debian's chromium, installed by .ci/run)."""

from __future__ import annotations

from pathlib import Path

from esanalytics.audit import Scope, collect
from esanalytics.report import render_html
from tests.browser import needs_chromium, open_offline
from tests.report.test_html_report import PAYLOAD, hostile_lake


@needs_chromium
def test_report_renders_offline_and_requests_nothing(lake: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(collect(hostile_lake(lake), Scope("entity", f"account-{PAYLOAD}"))))
    dom, from_page = open_offline(page, tmp_path)
    assert "Audit report: entity" in dom
    assert "Integrity" in dom
    assert "<script>" not in dom  # the payload stayed text
    assert "&lt;script&gt;" in dom
    assert from_page == set()
