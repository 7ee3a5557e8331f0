"""Small HTML cards for notebook reprs (``_repr_html_``): every value escaped, no script,
no style sheet or font from anywhere, so they render the same offline."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_STYLE = "font-family:sans-serif;font-size:13px;border-collapse:collapse"
_CELL = "padding:2px 10px 2px 0;text-align:left;vertical-align:top"


def _text(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return html.escape("" if value is None else str(value))


def counts(mapping: Mapping[str, int], limit: int = 8) -> str:
    """``a (3), b (2), …`` for the largest entries."""
    items = sorted(mapping.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{k} ({v:,})" for k, v in items[:limit])
    return shown + (f", … {len(items) - limit} more" if len(items) > limit else "")


def card(title: str, rows: Iterable[tuple[str, Any]], table: str = "") -> str:
    """A titled two-column card, optionally followed by a table's HTML."""
    body = "".join(
        f'<tr><th style="{_CELL}">{_text(k)}</th><td style="{_CELL}">{_text(v)}</td></tr>'
        for k, v in rows
    )
    return (
        f'<div><b style="font-family:sans-serif">{_text(title)}</b>'
        f'<table style="{_STYLE}">{body}</table>{table}</div>'
    )


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain HTML table of ``rows``."""
    head = "".join(f'<th style="{_CELL}">{_text(c)}</th>' for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{_text(v)}</td>' for v in row) + "</tr>"
        for row in rows
    )
    return f'<table style="{_STYLE}"><tr>{head}</tr>{body}</table>'
