"""Audit reports and extracts (no queries of their own: they format what audit returns)."""

from esanalytics.report.extracts import checksum, safe_for_spreadsheets, write_extract
from esanalytics.report.html import HtmlReport, render_html
from esanalytics.report.pdf import render_pdf

__all__ = [
    "HtmlReport",
    "checksum",
    "render_html",
    "render_pdf",
    "safe_for_spreadsheets",
    "write_extract",
]
