"""What the bring-your-own-log notebook (notebooks/06) found in the import's surfaces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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


def test_a_changed_source_s_hint_does_not_promise_ids_it_does_not_have(tmp_path: Path) -> None:
    """The hint for a rewritten source said a new --name writes nothing twice "(events already
    imported are recognised by their ids)". Rows without an id of their own take their ids
    from the import's name and place, so under a new name they are written again: the hint
    says so."""
    export = tmp_path / "orders.jsonl"
    rows = [
        {"order_id": f"A-{n}", "kind": "placed", "at": "2025-03-01T10:00:00Z"} for n in range(3)
    ]
    export.write_text("".join(json.dumps(row) + "\n" for row in rows))
    mapping = {"stream_id": "order-{order_id}", "event_type": "kind"}
    esa.import_events(tmp_path / "lake", export, mapping=mapping, occurred_at="at", create=True)
    export.write_text("".join(json.dumps(row) + "\n" for row in rows[:2]))  # rewritten shorter
    with pytest.raises(esa.SourceChangedError) as changed:
        esa.import_events(tmp_path / "lake", export)
    again = esa.import_events(
        tmp_path / "lake", export, name="orders-2", mapping=mapping, occurred_at="at"
    )
    assert (again.events, again.head) == (2, 5)  # the same two rows, written a second time
    assert "rows without an id of their own are written again" in changed.value.hint
    assert "leave those out of the new file" in changed.value.hint
