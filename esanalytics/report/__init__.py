"""Audit reports and extracts (no queries of their own: they format what audit returns)."""

from esanalytics.report.extracts import checksum, safe_for_spreadsheets, write_extract

__all__ = ["checksum", "safe_for_spreadsheets", "write_extract"]
