"""Tables a person can read in a terminal: the ``esa`` verbs' ``--format table`` output.

A result is fitted to the terminal's width (``shutil.get_terminal_size``): each field's
``X_before``/``X_after`` pair becomes one ``changes`` cell listing only what changed; columns an
analyst rarely reads first (ids, raw payloads) give way before the ones that say what happened;
long cells end in ``…``; and a long result shows its first rows, then a count and how to see
the rest. No line is ever wider than the terminal; CSV and JSON keep every row and column.

>>> import pyarrow as pa
>>> t = pa.table({"key": ["a"], "balance_before": [1], "balance_after": [2]})
>>> print("\\n".join(render(t, width=40, limit=10)))
key  changes
---  -----------------
a    balance 2 (was 1)
1 row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from rich.cells import cell_len, set_cell_size

__all__ = ["default_limit", "render"]

#: Columns that give way first when a table is too wide, in this order.
_DROP_FIRST = (
    "correlation_id", "causation_id", "event_id", "metadata", "data", "occurred_at", "reason",
    "global_position", "last_position", "new_events", "valid_to",
)  # fmt: skip
#: Columns that say what a row is about: dropped only when nothing else is left.
_KEEP = ("key", "stream_id", "change", "changes", "event_type", "version")
_GAP = "  "
_NARROWEST = 16  # a text cell is cut to no fewer characters than this (or its header)


def default_limit(lines: int) -> int:
    """The rows a table shows by default: as many as fit on the screen, 10 to 50."""
    return max(10, min(50, lines - 8))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        moment: datetime = value.astimezone(UTC) if value.tzinfo is not None else value
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


def _changes(table: pa.Table) -> tuple[list[str], list[list[str]], list[bool]]:
    """Column names, text cells and right-alignment, with before/after pairs as ``changes``."""
    names = table.column_names
    pairs = [n[: -len("_before")] for n in names if n.endswith("_before")]
    pairs = [p for p in pairs if f"{p}_after" in names]
    rows = table.to_pylist()
    columns: list[str] = []
    cells: list[list[str]] = []
    right: list[bool] = []
    for name in names:
        if pairs and name == f"{pairs[0]}_before":
            columns.append("changes")
            cells.append([_changed(row, pairs) for row in rows])
            right.append(False)
        elif not any(name in (f"{p}_before", f"{p}_after") for p in pairs):
            columns.append(name)
            cells.append([_text(row[name]) for row in rows])
            kind = table.schema.field(name).type
            right.append(pa.types.is_integer(kind) or pa.types.is_floating(kind)
                         or pa.types.is_decimal(kind))  # fmt: skip
    return columns, cells, right


def _changed(row: dict[str, Any], fields: Sequence[str]) -> str:
    parts = []
    for field in fields:
        before, after = row[f"{field}_before"], row[f"{field}_after"]
        if before != after:
            # the new value first: a cell cut to the width keeps what the field became
            parts.append(f"{field} {_text(after) or '∅'} (was {_text(before) or '∅'})")
    return "; ".join(parts)


def render(table: pa.Table, *, width: int, limit: int) -> list[str]:
    """The lines that show ``table`` in ``width`` columns: its first ``limit`` rows (all when
    ``limit`` is 0), then notes on what was left out and how to see it."""
    total = table.num_rows
    shown = table.slice(0, limit) if limit else table
    names, cells, right = _changes(shown)
    natural = [max([cell_len(n), *(cell_len(c) for c in col)]) for n, col in zip(names, cells, strict=True)]  # fmt: skip
    # A column empty in every row shown says nothing, and the changes say what the payload
    # did in fewer characters: leave those out (and say so).
    hidden = [n for n, col in zip(names, cells, strict=True)
              if (shown.num_rows and not any(col)) or (n == "data" and "changes" in names)]  # fmt: skip
    order = [i for i, n in enumerate(names) if n not in hidden]

    def narrowest(i: int) -> int:
        timestamps = all(len(c) == 19 and c[4:5] == "-" for c in cells[i] if c)
        if right[i] or (any(cells[i]) and timestamps):
            return natural[i]  # numbers and times are never cut
        return min(natural[i], max(cell_len(names[i]), _NARROWEST))

    def needed(columns: list[int]) -> int:
        return sum(narrowest(i) for i in columns) + len(_GAP) * (len(columns) - 1)

    drop = [names.index(n) for n in _DROP_FIRST if n in names]
    drop += [i for i in reversed(order) if names[i] not in _KEEP and i not in drop]
    drop += [i for i in reversed(order) if i not in drop]
    dropped: list[int] = []
    while len(order) > 1 and needed(order) > width:
        victim = next(i for i in drop if i in order)
        order.remove(victim)
        dropped.append(victim)
    for i in reversed(dropped):  # one that gave way early may fit once later ones have gone
        if needed(sorted([*order, i])) <= width:
            order = sorted([*order, i])
    hidden += [names[i] for i in dropped if i not in order]
    # Share what is left over, last column first (it is often the long one).
    widths = {i: narrowest(i) for i in order}
    spare = width - needed(order)
    for i in reversed(order):
        extra = min(spare, natural[i] - widths[i])
        widths[i] += extra
        spare -= extra
    if len(order) == 1:
        widths[order[0]] = min(natural[order[0]], width)

    def line(values: list[str]) -> str:
        parts = []
        for i, value in zip(order, values, strict=True):
            w = widths[i]
            if cell_len(value) > w:
                value = set_cell_size(value, w - 1) + "…"
            pad = " " * (w - cell_len(value))
            parts.append(pad + value if right[i] else value + pad)
        return _GAP.join(parts).rstrip()

    out = [line([names[i] for i in order]), line(["-" * widths[i] for i in order])]
    for r in range(shown.num_rows):
        out.append(line([cells[i][r] for i in order]))
    notes = []
    if shown.num_rows < total:
        notes.append(
            f"{shown.num_rows:,} of {total:,} rows shown; --limit N shows more, --limit 0 all, "
            "--format csv every row and column."
        )
    elif total == 0:
        notes.append("0 rows.")
    else:
        notes.append(f"{total:,} row{'s' if total != 1 else ''}.")
    if hidden:
        notes.append(
            f"Not shown (too wide or empty): {', '.join(hidden)}; --format csv or json has them."
        )
    out.extend(_wrap(note, width) for note in notes)
    return out


def _wrap(text: str, width: int) -> str:
    """``text`` broken at spaces into lines of at most ``width`` cells."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if cell_len(candidate) <= width or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
    lines.append(current)
    return "\n".join(set_cell_size(x, min(cell_len(x), width)) for x in lines)
