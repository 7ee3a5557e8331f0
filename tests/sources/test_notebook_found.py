"""What the bring-your-own-log notebook (notebooks/06) found in the import's surfaces."""

from __future__ import annotations

import json
from pathlib import Path

from IPython.lib.pretty import pretty

import esanalytics as esa


def test_a_notebook_shows_an_import_as_its_mapping_and_summary(tmp_path: Path) -> None:
    """`esa.import_events(...)` as a cell's last line showed the dataclass repr (a page of
    `ImportSummary(name=..., mapping=ImportMapping(fields={...}), _streams={...})`); it shows
    what `esa import` prints: the mapping used, then the summary."""
    export = tmp_path / "orders.jsonl"
    rows = [
        {"order_id": "A-1", "kind": "placed", "at": "2025-03-01T10:00:00+01:00", "total": 5},
        {"order_id": "A-1", "kind": "paid", "at": "2025-03-01T10:05:00+01:00", "amount": 5},
    ]
    export.write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = esa.import_events(
        tmp_path / "lake", export, mapping={"stream_id": "order-{order_id}",
        "event_type": "kind"}, occurred_at="at", create=True,
    )  # fmt: skip
    shown = pretty(summary)
    assert "ImportSummary(" not in shown
    lines = shown.splitlines()
    assert lines[0].startswith("mapping")
    assert "  stream_id              <- order-{order_id}" in lines
    assert "  occurred_at            <- at" in lines
    assert shown.endswith(str(summary))
    assert "2 events written" in shown
    assert ", 1 commit\n" in shown  # not "1 commits"
