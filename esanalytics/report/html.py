"""A self-contained HTML audit report: no script, no external resource, every value escaped.

Sections, in order: scope on both time axes; the log position and chain digest it is pinned
to (and the checkpoint, when given); completeness; integrity; exceptions; charts (state
evolution, time in each state, the timeline, as inline SVG); the event-by-event trail; the
command that regenerates it. Regenerating gives the same bytes except the
generation time.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from esanalytics.audit.package import AuditPackage

__all__ = ["HtmlReport", "render_html"]

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1d2330}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ccd}
table{border-collapse:collapse;font-size:12px;width:100%}
th,td{border:1px solid #dde;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f4f8}.ok{color:#17733a;font-weight:600}.bad{color:#b3261e;font-weight:600}
code,pre{background:#f3f4f8;padding:2px 4px;white-space:pre-wrap;word-break:break-all}
.scroll{overflow-x:auto;max-width:100%}figure{margin:1rem 0}figure svg{max-width:100%;height:auto}.trail{width:auto}
.trail td.nowrap{white-space:nowrap}.trail td.id{white-space:nowrap;font:10px ui-monospace,monospace}
.trail td.text{max-width:24em;overflow-wrap:break-word}.trail td.long{min-width:14em}
"""
#: Trail cells kept on one line: times, numbers and ids (an id broken over lines is unreadable).
_NOWRAP = ("position", "stream", "version", "event_type", "recorded_at / occurred_at (UTC)",
           "actor", "approved_by")  # fmt: skip
_IDS = ("correlation_id / causation_id",)
_LONG = ("payload", "changes")
#: Pairs shown in one cell, one above the other, so the trail fits a page's width.
_STACKED = {
    "recorded_at / occurred_at (UTC)": ("recorded_at (UTC)", "occurred_at (UTC)"),
    "correlation_id / causation_id": ("correlation_id", "causation_id"),
}


_SVG = re.compile(r"<svg\b.*?</svg>", re.DOTALL)


@dataclass(frozen=True)
class HtmlReport:
    """An HTML report shown in a notebook cell, in a frame of its own (so its styles stay
    inside), through IPython's ``_repr_html_``; ``str()`` gives the page.

    >>> "<iframe srcdoc=" in HtmlReport("<p>report</p>")._repr_html_()
    True

    In a notebook that JupyterLab does not trust, which strips frames and scripts, the body
    shows instead, unstyled.
    """

    page: str
    height: int = 500

    def __str__(self) -> str:
        return self.page

    def _repr_html_(self) -> str:
        frame = (
            f'<iframe srcdoc="{html.escape(self.page, quote=True)}" title="audit report" '
            f'style="width:100%;height:{self.height}px;border:1px solid #ccc"></iframe>'
        )
        # A notebook JupyterLab does not trust shows HTML sanitized: no frame, no script. The
        # report's body follows as a plain copy, which the script removes where scripts run.
        body = self.page.split("<body>", 1)[-1].rsplit("</body>", 1)[0]
        # Inline SVG is stripped to its bare text; an image of it survives.
        body = _SVG.sub(
            lambda m: (
                '<img alt="chart" style="max-width:100%" src="data:image/svg+xml;base64,'
                + base64.b64encode(m.group(0).encode()).decode("ascii")
                + '">'
            ),
            body,
        )
        copy = "esa-report-" + hashlib.sha256(self.page.encode()).hexdigest()[:16]
        return (
            f'{frame}<div id="{copy}" class="esa-report-copy">{body}</div>'
            f"<script>document.getElementById('{copy}')?.remove();</script>"
        )


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


def _trail(data: AuditPackage, limit: int = 10_000) -> str:
    """The trail as a reader needs it: the payload in words, what each event changed, times
    and ids on one line; the table scrolls inside the page, never the page itself."""
    from esanalytics.report.trail_view import readable_trail

    if data.trail.num_rows == 0:
        return "<p>None.</p>"
    rows = readable_trail(data, limit=limit)
    stacked = {part: name for name, parts in _STACKED.items() for part in parts}
    names = list(dict.fromkeys(stacked.get(n, n) for n in rows[0]))

    def kind(name: str) -> str:
        if name in _IDS:
            return "id"
        return "nowrap" if name in _NOWRAP else "text long" if name in _LONG else "text"

    def cell(row: dict[str, str], name: str) -> str:
        return "<br>".join(_cell(row[part]) for part in _STACKED.get(name, (name,)))

    head = "".join(f"<th>{_cell(name)}</th>" for name in names)
    body = "".join(
        "<tr>" + "".join(f'<td class="{kind(n)}">{cell(row, n)}</td>' for n in names) + "</tr>"
        for row in rows
    )
    more = (
        f"<p>{data.trail.num_rows - limit:,} more rows are in the CSV/Parquet extract.</p>"
        if data.trail.num_rows > limit
        else ""
    )
    return (
        f'<div class="scroll"><table class="trail"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>{more}"
    )


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
{_trail(data)}
<h2>Regenerate</h2>
<pre>{_cell(data.command)}</pre>
<p>Generated {_cell(moment)}.</p>
</body></html>
"""
