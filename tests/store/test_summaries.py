"""streams() and inventory() fold the lake a few files at a time (a 100M-event lake held
every event's stream id in memory: about 10 GB): the answer is the same as a fold of every
event at once, with files and the unsealed tail, at any position."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

import esanalytics as esa
from esanalytics.sample import SampleSpec, generate
from esanalytics.store import eventstore


@pytest.fixture
def lake_with_tail(lake: Path) -> esa.EventStore:
    store = esa.open(lake, create=True)
    events = generate(SampleSpec(events=6_000, seed=9))
    for start in range(0, 6_000, 1_500):
        store.ingest(events.slice(start, 1_500))
    store.append("account-9999", [esa.NewEvent("MoneyDeposited", {"amount": 1})])  # unsealed
    return store


def expected_streams(events: pa.Table) -> list[dict[str, object]]:
    rows: dict[str, dict[str, object]] = {}
    for e in events.to_pylist():
        row = rows.setdefault(e["stream_id"], {
            "stream_id": e["stream_id"], "category": e["category"], "version": 0,
            "first_position": e["global_position"], "first_recorded_at": e["recorded_at"]})  # fmt: skip
        row["version"] = max(int(row["version"]), e["version"])  # type: ignore[call-overload]
        row["last_position"] = e["global_position"]
        row["last_recorded_at"] = e["recorded_at"]
    return [rows[k] for k in sorted(rows)]


@pytest.mark.parametrize("piece_rows", [1, 700, 2_000_000])
def test_streams_and_inventory_fold_piece_by_piece(
    lake_with_tail: esa.EventStore, monkeypatch: pytest.MonkeyPatch, piece_rows: int
) -> None:
    monkeypatch.setattr(eventstore, "_PIECE_ROWS", piece_rows)
    store = lake_with_tail
    assert len(store.files()) > 4
    read: list[int] = []
    scan = eventstore.EventStore._scan

    def counted(self: eventstore.EventStore, *args: object, **kwargs: object) -> pa.Table:
        table = scan(self, *args, **kwargs)  # type: ignore[arg-type]
        read.append(table.num_rows)
        return table

    monkeypatch.setattr(eventstore.EventStore, "_scan", counted)
    for position in (None, 4_000):
        events = store.read_all(position=position).to_arrow()
        read.clear()
        streams = store.streams(position=position)
        columns = ["stream_id", "category", "version", "first_position", "last_position",
                   "first_recorded_at", "last_recorded_at"]  # fmt: skip
        assert streams.column_names == columns
        assert not streams.schema.field("stream_id").nullable
        assert [{c: r[c] for c in columns} for r in streams.to_pylist()] == [
            {c: r[c] for c in columns} for r in expected_streams(events)
        ]
        inventory = store.inventory(position=position)
        assert inventory.events == events.num_rows == (position or 6_001)
        assert inventory.streams == len(set(events["stream_id"].to_pylist()))
        assert inventory.categories == dict(Counter(events["category"].to_pylist()))
        assert inventory.event_types == dict(Counter(events["event_type"].to_pylist()))
        recorded = events["recorded_at"].to_pylist()
        assert (inventory.first_recorded_at, inventory.last_recorded_at) == (
            min(recorded),
            max(recorded),
        )
        largest = max(entry.rows for entry in store.files())
        assert max(read) < piece_rows + largest, "a summary held more than a piece"
        occurred = events["occurred_at"].to_pylist()
        assert (inventory.first_occurred_at, inventory.last_occurred_at) == (
            min(occurred),
            max(occurred),
        )


def test_an_empty_lake_has_no_streams(store: esa.EventStore) -> None:
    assert store.streams().num_rows == 0
    assert store.inventory().events == 0
    assert store.inventory().streams == 0
