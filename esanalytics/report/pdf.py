"""The audit report as PDF, written by fpdf2 (pure Python: nothing to install beyond pip).

The PDF's built-in fonts cover Latin-1 only: other characters are shown as ``?`` (the HTML
report and the extracts keep every character).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from esanalytics.audit.package import AuditPackage

__all__ = ["render_pdf"]

#: The trail's columns in the PDF and their relative widths (the ids are in the extracts).
TRAIL_COLUMNS = {
    "position": 9, "stream": 16, "version": 9, "event_type": 20, "recorded_at (UTC)": 19,
    "occurred_at (UTC)": 19, "actor": 13, "reason": 15, "approved_by": 12, "payload": 33,
    "changes": 39,
}  # fmt: skip


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    text = str(value).replace("→", "->").replace("∅", "-")  # the trail's changes: not Latin-1
    return text.encode("latin-1", "replace").decode("latin-1")


def render_pdf(
    data: AuditPackage,
    *,
    generated_at: datetime | None = None,
    compress: bool = True,
    limit: int = 2_000,
    progress: Callable[[str], None] | None = None,
) -> bytes:
    """The report (see :mod:`esanalytics.report.html` for the sections) as PDF bytes; the
    trail table holds the first ``limit`` events (the extracts hold all); ``progress``, when
    given, is told each step."""
    from fpdf import FPDF

    moment = (generated_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    pdf = FPDF(orientation="L", format="A4")
    pdf.set_compression(compress)
    pdf.set_creation_date(moment)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.multi_cell(0, 8, _text(data.title), new_x="LMARGIN", new_y="NEXT")

    def section(title: str, body: str) -> None:
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 8, _text(title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 9)
        pdf.multi_cell(0, 5, _text(body), new_x="LMARGIN", new_y="NEXT")

    section("Scope", f"{data.scope}; {data.trail.num_rows:,} events")
    pinned = f"log position {data.position:,}; chain digest {data.digest}"
    if data.checkpoint:
        pinned += f"; checkpoint at {data.checkpoint.get('position')} digest {data.checkpoint.get('digest')}"
    section("Pinned to", pinned)
    section("Completeness: " + ("OK" if data.complete else "FAILED"), data.completeness_text)
    section("Integrity: " + ("OK" if data.integrity_ok else "FAILED"), data.integrity_text)
    section(
        f"Exceptions ({data.exceptions.num_rows:,})", "" if data.exceptions.num_rows else "None."
    )
    pdf.set_font("Helvetica", "", 7)
    if data.exceptions.num_rows:
        _table(pdf, data.exceptions.column_names, data.exceptions.slice(0, limit).to_pylist())
    from esanalytics.report.charts import report_charts
    from esanalytics.viz import to_png

    charts = report_charts(data)
    for number, (title, chart) in enumerate(charts, 1):
        if progress is not None:
            progress(f"report: drawing chart {number} of {len(charts)} ({title})")
        section(title, "")
        # 1.5x: sharp enough on paper, small enough to keep the file light.
        pdf.image(io.BytesIO(to_png(chart, scale=1.5)), w=min(pdf.epw, 250))
    if progress is not None:
        progress("report: writing the trail")
    section("Trail", "" if data.trail.num_rows else "No events.")
    pdf.set_font("Helvetica", "", 7)
    if data.trail.num_rows:
        from esanalytics.report.trail_view import readable_trail

        rows = readable_trail(data, limit=limit)
        names = [n for n in TRAIL_COLUMNS if n in rows[0]]
        for row in rows:  # to the second: the extracts keep the microseconds
            for name in ("recorded_at (UTC)", "occurred_at (UTC)"):
                row[name] = row[name][:19]
        _table(pdf, names, rows, widths=[TRAIL_COLUMNS[n] for n in names])
        if data.trail.num_rows > limit:
            section(
                "", f"{data.trail.num_rows - limit:,} more events are in the CSV/Parquet extract."
            )
    section("Regenerate", data.command)
    section("", f"Generated {moment.isoformat()}.")
    return bytes(pdf.output())


def _table(
    pdf: Any, names: list[str], rows: list[dict[str, Any]], widths: list[int] | None = None
) -> None:
    with pdf.table(text_align="LEFT", line_height=3.2, col_widths=widths) as table:
        header = table.row()
        for name in names:
            header.cell(_text(name.replace("_", " ")))
        for row in rows:
            line = table.row()
            for name in names:
                line.cell(_text(row.get(name))[:120])
