"""A self-contained HTML audit report: no script, no external resource, every value escaped.

Sections, in order: scope on both time axes; the log position and chain digest it is pinned
to (and the checkpoint, when given); completeness; integrity; exceptions; charts (state
evolution, time in each state, the timeline, as inline SVG); the event-by-event trail; the
command that regenerates it. Regenerating gives the same bytes except the
generation time.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from esanalytics.audit.package import AuditPackage

__all__ = ["render_html"]

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1d2330}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ccd}
table{border-collapse:collapse;font-size:12px;width:100%}
th,td{border:1px solid #dde;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f4f8}.ok{color:#17733a;font-weight:600}.bad{color:#b3261e;font-weight:600}
code,pre{background:#f3f4f8;padding:2px 4px;white-space:pre-wrap;word-break:break-all}
"""


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.astimezone(UTC).isoformat()
    return html.escape(str(value), quote=True)


def _status(ok: bool) -> str:
    return '<span class="ok">OK</span>' if ok else '<span class="bad">FAILED</span>'


def _table(table: pa.Table, limit: int = 10_000) -> str:
    if table.num_rows == 0:
        return "<p>None.</p>"
    head = "".join(f"<th>{_cell(name)}</th>" for name in table.column_names)
    rows = []
    for row in table.slice(0, limit).to_pylist():
        rows.append("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row.values()) + "</tr>")
    more = (
        f"<p>{table.num_rows - limit:,} more rows are in the CSV/Parquet extract.</p>"
        if table.num_rows > limit
        else ""
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


def _charts(data: AuditPackage, progress: Callable[[str], None] | None = None) -> str:
    """The report's charts as inline SVG: drawn here, so the page runs no script."""
    from esanalytics.report.charts import report_charts
    from esanalytics.viz import to_svg

    charts = report_charts(data)
    parts = []
    for number, (title, chart) in enumerate(charts, 1):
        if progress is not None:
            progress(f"report: drawing chart {number} of {len(charts)} ({title})")
        parts.append(f"<figure><figcaption>{_cell(title)}</figcaption>{to_svg(chart)}</figure>")
    return "<h2>Charts</h2>" + "".join(parts) if parts else ""


def render_html(
    data: AuditPackage,
    *,
    generated_at: datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> str:
    """The report as one HTML document; ``progress``, when given, is told each step."""
    moment = (generated_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    trail = data.trail
    recorded = trail["recorded_at"].to_pylist() if trail.num_rows else []
    occurred = trail["occurred_at"].to_pylist() if trail.num_rows else []
    span = (
        f"system time {_cell(min(recorded))} .. {_cell(max(recorded))}; "
        f"valid time {_cell(min(occurred))} .. {_cell(max(occurred))}"
        if recorded
        else "no events"
    )
    checkpoint = ""
    if data.checkpoint is not None:
        checkpoint = (
            f"<li>checkpoint: position {_cell(data.checkpoint.get('position'))}, digest "
            f"<code>{_cell(data.checkpoint.get('digest'))}</code>, signed {_cell(data.checkpoint.get('created_at'))}</li>"
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{_cell(data.title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{_cell(data.title)}</h1>
<h2>Scope</h2>
<ul><li>{_cell(data.scope)}</li><li>{span}</li><li>{trail.num_rows:,} events</li></ul>
<h2>Pinned to</h2>
<ul><li>log position {data.position:,}</li><li>chain digest <code>{_cell(data.digest)}</code></li>{checkpoint}</ul>
<h2>Completeness {_status(data.complete)}</h2>
<p>{_cell(data.completeness_text)}</p>
<h2>Integrity {_status(data.integrity_ok)}</h2>
<pre>{_cell(data.integrity_text)}</pre>
<h2>Exceptions ({data.exceptions.num_rows:,})</h2>
{_table(data.exceptions)}
{_charts(data, progress)}
<h2>Trail</h2>
{_table(trail)}
<h2>Regenerate</h2>
<pre>{_cell(data.command)}</pre>
<p>Generated {_cell(moment)}.</p>
</body></html>
"""
