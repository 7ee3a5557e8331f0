"""Appends, expected versions, idempotency, reads at a bound, inventory."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

import esanalytics as esa
from esanalytics.events import GENESIS_HASH, canonical_row, row_hash
from tests.conftest import log_bytes


def deposit(amount: float, **extra: object) -> esa.NewEvent:
    return esa.NewEvent("MoneyDeposited", {"amount": amount}, **extra)  # type: ignore[arg-type]


def test_append_assigns_versions_positions_and_commit(store: esa.EventStore) -> None:
    first = store.append("account-1", [deposit(1), deposit(2)], expected_version=esa.NO_STREAM)
    second = store.append("account-2", [deposit(3)])
    third = store.append("account-1", [deposit(4)], expected_version=2)
    assert (first.first_position, first.last_position, first.version) == (1, 2, 2)
    assert (second.first_position, second.version) == (3, 1)
    assert (third.first_position, third.version) == (4, 3)
    events = store.read_stream("account-1").to_list()
    assert [e.version for e in events] == [1, 2, 3]
    assert [e.global_position for e in events] == [1, 2, 4]
    assert [e.data["amount"] for e in events] == [1, 2, 4]
    assert {e.category for e in events} == {"account"}
    assert store.head == 4
    assert first.recorded_at <= second.recorded_at <= third.recorded_at


@pytest.mark.parametrize(
    ("expected", "current", "ok"),
    [
        (esa.ANY, 0, True),
        (esa.ANY, 2, True),
        (esa.NO_STREAM, 0, True),
        (esa.NO_STREAM, 2, False),
        (esa.STREAM_EXISTS, 0, False),
        (esa.STREAM_EXISTS, 2, True),
        (0, 0, True),
        (2, 2, True),
        (1, 2, False),
        (3, 2, False),
    ],
)
def test_expected_version_rules(
    store: esa.EventStore, expected: esa.ExpectedVersion | int, current: int, ok: bool, lake: Path
) -> None:
    if current:
        store.append("account-9", [deposit(i) for i in range(current)])
    before = log_bytes(lake)
    if ok:
        assert (
            store.append("account-9", [deposit(99)], expected_version=expected).version
            == current + 1
        )
    else:
        with pytest.raises(esa.ConcurrencyError) as caught:
            store.append("account-9", [deposit(99)], expected_version=expected)
        assert caught.value.stream_id == "account-9"
        assert caught.value.expected == expected
        assert caught.value.actual == current
        assert "Hint:" in str(caught.value)
        assert log_bytes(lake) == before


def test_concurrency_error_is_a_runtime_error(store: esa.EventStore) -> None:
    store.append("account-1", [deposit(1)])
    with pytest.raises(RuntimeError):
        store.append("account-1", [deposit(1)], expected_version=0)


def test_retry_with_same_ids_returns_original_commit(store: esa.EventStore, lake: Path) -> None:
    events = [
        deposit(1, event_id="00000000-0000-4000-8000-000000000001"),
        deposit(2, event_id="00000000-0000-4000-8000-000000000002"),
    ]
    original = store.append("account-1", events, expected_version=esa.NO_STREAM)
    store.append("account-2", [deposit(5)])
    before = log_bytes(lake)
    retry = store.append("account-1", events, expected_version=esa.NO_STREAM)
    assert retry.replayed
    assert (retry.first_position, retry.last_position) == (
        original.first_position,
        original.last_position,
    )
    assert retry.streams == original.streams
    assert log_bytes(lake) == before
    assert store.stream_version("account-1") == 2
    # A fresh handle (another process) knows the ids too, after the tail is sealed.
    store.flush()
    other = esa.open(lake)
    assert other.append("account-1", events, expected_version=esa.NO_STREAM).replayed


def test_known_id_in_a_different_append_is_an_error(store: esa.EventStore, lake: Path) -> None:
    known = "00000000-0000-4000-8000-0000000000aa"
    store.append("account-1", [deposit(1, event_id=known)])
    before = log_bytes(lake)
    with pytest.raises(esa.DuplicateEventError) as caught:
        store.append("account-2", [deposit(1, event_id=known)])
    assert caught.value.event_id == known
    assert "account-1" in str(caught.value)
    with pytest.raises(esa.DuplicateEventError):  # same stream, but with a new event beside it
        store.append("account-1", [deposit(1, event_id=known), deposit(2)])
    assert log_bytes(lake) == before


def test_multi_stream_append_is_atomic(store: esa.EventStore, lake: Path) -> None:
    store.append("account-2", [deposit(1)])
    before = log_bytes(lake)
    with pytest.raises(esa.ConcurrencyError):
        store.append_many(
            [
                esa.AppendRequest("account-1", [deposit(5)], esa.NO_STREAM),
                esa.AppendRequest("account-2", [deposit(5)], esa.NO_STREAM),  # exists: fails
            ]
        )
    assert log_bytes(lake) == before
    commit = store.append_many(
        [
            esa.AppendRequest("account-1", [deposit(5)], esa.NO_STREAM),
            esa.AppendRequest("account-2", [deposit(6), deposit(7)], 1),
        ]
    )
    assert [(s.stream_id, s.first_version, s.last_version) for s in commit.streams] == [
        ("account-1", 1, 1),
        ("account-2", 2, 3),
    ]
    assert commit.positions == range(2, 5)
    log = [e.global_position for e in store.read_all()]
    assert log == [1, 2, 3, 4]


def test_large_append_goes_through_files_with_same_guarantees(store: esa.EventStore) -> None:
    events = [deposit(i) for i in range(2_500)]
    commit = store.append("account-1", events, expected_version=esa.NO_STREAM)
    assert commit.version == 2_500
    with pytest.raises(esa.ConcurrencyError):
        store.append(
            "account-1", events[:1] * 0 + [deposit(1)] * 1_500, expected_version=esa.NO_STREAM
        )
    table = store.read_stream("account-1").to_arrow()
    assert table["version"].to_pylist() == list(range(1, 2_501))


def test_hash_chain_is_the_documented_encoding(store: esa.EventStore) -> None:
    store.append("account-1", [deposit(1), deposit(2, occurred_at="2024-01-02T03:04:05Z")])
    store.ingest(
        pa.table(
            {
                "stream_id": ["order-1", "account-1"],
                "event_type": ["OrderPlaced", "MoneyWithdrawn"],
                "data": ['{"total": 3}', '{"amount": 1}'],
                "metadata": ["{}", '{"actor": "ada"}'],
            }
        )
    )
    store.append("account-1", [deposit(3)])
    prev = GENESIS_HASH
    rows = store.read_all().to_arrow().to_pylist()
    assert len(rows) == 5
    for row in rows:  # an independent fold over the raw rows, by the documented encoding
        assert row["prev_hash"] == prev
        canonical = "\x1f".join(
            str(v)
            for v in (
                row["global_position"], row["stream_id"], row["category"], row["version"],
                row["event_id"], row["event_type"], row["schema_version"],
                _us(row["occurred_at"]), _us(row["recorded_at"]), row["data"], row["metadata"],
            )
        ).encode()  # fmt: skip
        assert row["hash"] == hashlib.sha256(bytes.fromhex(prev) + canonical).hexdigest()
        assert canonical == canonical_row(
            *(row[k] for k in ("global_position", "stream_id", "category", "version", "event_id",
                               "event_type", "schema_version")),
            _us(row["occurred_at"]), _us(row["recorded_at"]), row["data"], row["metadata"],
        )  # fmt: skip
        assert row_hash(prev, canonical) == row["hash"]
        prev = row["hash"]


def _us(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def test_reads_at_a_position_or_time(store: esa.EventStore) -> None:
    commits = [store.append("account-1", [deposit(i)]) for i in range(5)]
    middle = commits[2]
    assert [e.version for e in store.read_stream("account-1", position=middle.last_position)] == [
        1,
        2,
        3,
    ]
    by_time = store.read_stream("account-1", as_of=middle.recorded_at)
    assert [e.version for e in by_time] == [1, 2, 3]
    assert (
        len(store.read_stream("account-1", as_of=commits[0].recorded_at - timedelta(seconds=1)))
        == 0
    )
    window = store.read_stream("account-1", from_version=2, to_version=4)
    assert [e.version for e in window] == [2, 3, 4]
    assert store.read_stream("account-1", position=3).position == 3


def test_as_of_needs_a_time_zone(store: esa.EventStore) -> None:
    store.append("account-1", [deposit(1)])
    with pytest.raises(esa.ValidationError, match="no time zone") as caught:
        store.read_stream("account-1", as_of=datetime(2024, 1, 1))
    assert caught.value.hint
    assert "timezone.utc" in caught.value.hint
    with pytest.raises(esa.ValidationError, match="no time zone"):
        store.read_stream("account-1", as_of="2024-01-01T10:00:00")
    assert len(store.read_stream("account-1", as_of="2999-01-01T00:00:00+02:00")) == 1


def test_read_all_filters_and_batches(store: esa.EventStore) -> None:
    for i in range(30):
        store.append(f"account-{i % 3}", [deposit(i)])
        store.append(f"order-{i % 2}", [esa.NewEvent("OrderPlaced", {"n": i})])
    store.flush()
    store.append("order-9", [esa.NewEvent("OrderPaid", {})])  # unsealed, in the tail
    orders = store.read_all(categories=["order"])
    assert {e.category for e in orders} == {"order"}
    assert len(orders) == 31
    paid = store.read_all(event_types=["OrderPaid"])
    assert [e.stream_id for e in paid] == ["order-9"]
    later = store.read_all(from_position=50)
    assert [e.global_position for e in later] == list(range(51, 62))
    batches = list(store.iter_batches(batch_size=7))
    assert max(b.num_rows for b in batches) <= 7
    positions = [p for b in batches for p in b["global_position"].to_pylist()]
    assert positions == list(range(1, 62))


def test_unknown_stream_reads_empty_and_load_raises(store: esa.EventStore) -> None:
    assert len(store.read_stream("account-404")) == 0
    assert store.stream_version("account-404") == 0
    with pytest.raises(esa.StreamNotFoundError) as caught:
        store.load("account-404")
    assert isinstance(caught.value, KeyError)


def test_inventory_and_streams_match_a_plain_count(sample_lake: Path) -> None:
    store = esa.open(sample_lake)
    frame = store.read_all().to_pandas()
    inventory = store.inventory()
    assert inventory.events == len(frame) == store.head
    assert inventory.streams == frame["stream_id"].nunique()
    assert dict(inventory.categories) == frame["category"].value_counts().to_dict()
    assert dict(inventory.event_types) == frame["event_type"].value_counts().to_dict()
    assert inventory.first_recorded_at == frame["recorded_at"].min()
    assert inventory.last_occurred_at == frame["occurred_at"].max()
    streams = store.streams().to_pandas().set_index("stream_id")
    expected = frame.groupby("stream_id")["version"].agg(["max", "count"])
    assert (streams["version"] == expected["max"]).all()
    assert (expected["max"] == expected["count"]).all()  # versions are gapless


def test_tail_and_files_read_the_same(store: esa.EventStore, lake: Path) -> None:
    for i in range(20):
        store.append(f"account-{i % 4}", [deposit(i)])
    unsealed = store.read_all().to_arrow()
    assert store.flush() == 20
    sealed = store.read_all().to_arrow()
    assert unsealed.equals(sealed)
    assert esa.open(lake).read_all().to_arrow().equals(sealed)


def test_reopening_gives_the_same_state(store: esa.EventStore, lake: Path) -> None:
    for i in range(50):
        store.append(f"account-{i % 5}", [deposit(i)])
        if i == 30:
            store.flush()
    reopened = esa.open(lake)
    assert reopened.head == store.head == 50
    assert reopened.read_all().to_arrow().equals(store.read_all().to_arrow())
    assert reopened.append("account-1", [deposit(1)], expected_version=10).version == 11


def test_open_refuses_missing_and_foreign_folders(tmp_path: Path) -> None:
    with pytest.raises(esa.LakeNotFoundError) as caught:
        esa.open(tmp_path / "nope")
    assert isinstance(caught.value, FileNotFoundError)
    assert "create=True" in str(caught.value)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(esa.ValidationError, match="holds other files"):
        esa.open(tmp_path / "other", create=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_recorded_at_never_decreases(store: esa.EventStore) -> None:
    for i in range(40):
        store.append("account-1", [deposit(i)])
    times = store.read_all().to_arrow()["recorded_at"].to_pylist()
    assert times == sorted(times)
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in times)
    assert times[-1] <= datetime.now(UTC)


def test_context_manager_seals_the_tail(lake: Path) -> None:
    with esa.open(lake, create=True) as store:
        store.append("account-1", [deposit(1)])
        assert not list((lake / "events").rglob("*.parquet"))
    assert len(list((lake / "events").rglob("*.parquet"))) == 1
    assert "position 1" in repr(store)


@pytest.mark.parametrize("damage", [False, True])
def test_writer_index_and_later_commits_know_every_version_and_id(
    store: esa.EventStore, lake: Path, damage: bool
) -> None:
    early, late, bulk = (f"00000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))
    store.append("account-1", [deposit(1, event_id=early), deposit(2)])
    store.compact()  # saves the writer index
    assert (lake / "_esa" / "writer-index" / "current.json").exists()
    store.append("account-1", [deposit(3, event_id=late)])  # inline, after the index
    store.ingest(pa.table({"stream_id": ["account-2"] * 2, "event_type": ["MoneyDeposited"] * 2,
                           "data": ["{}"] * 2, "metadata": ["{}"] * 2,
                           "event_id": [bulk, "00000000-0000-4000-8000-000000000004"]}))  # fmt: skip
    if damage:
        for keys in (lake / "_esa" / "writer-index").glob("ids-*.npy"):
            keys.write_bytes(b"garbage")
    other = esa.open(lake)
    with pytest.raises(esa.ConcurrencyError) as caught:
        other.append("account-1", [deposit(4)], expected_version=2)
    assert caught.value.actual == 3
    assert other.append("account-2", [deposit(4)], expected_version=2).version == 3
    for known in (early, late, bulk):
        with pytest.raises(esa.DuplicateEventError):
            other.append("account-9", [deposit(0, event_id=known)])


def test_a_bulk_load_saves_the_writer_index_geometrically_and_a_new_writer_knows_it_all(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each save writes every id of the log: saving after every large ingest made a bulk load
    of N events write O(N^2) of index (100M events: 5 billion ids). Now a large ingest saves
    only once a quarter as many ids as the last save wrote have come in since; what the index
    lacks, a new writer reads from the log after it."""
    from esanalytics.sample import SampleSpec, generate
    from esanalytics.store import eventstore

    monkeypatch.setattr(eventstore, "_INDEX_AFTER_ROWS", 100)
    saves: list[int] = []
    real = eventstore.EventStore._save_writer_index

    def counted(self: eventstore.EventStore) -> None:
        saves.append(self.head)
        real(self)

    monkeypatch.setattr(eventstore.EventStore, "_save_writer_index", counted)
    events = generate(SampleSpec(events=2_600, seed=5))
    store = esa.open(lake, create=True)
    for start in range(0, 2_600, 200):
        store.ingest(events.slice(start, 200))
    # Saved at 200 ids, then each time the ids since reach a quarter of the last save's.
    assert saves == [200, 400, 600, 800, 1000, 1400, 1800, 2400]
    other = esa.open(lake)  # the index holds 2,400 ids; the last 200 are read from the log
    last = events.slice(2_400, 200).to_pylist()
    with pytest.raises(esa.DuplicateEventError):
        other.ingest(events.slice(2_599, 1))
    stream = last[-1]["stream_id"]
    version = len(store.read_stream(stream))
    with pytest.raises(esa.ConcurrencyError):
        other.append(stream, [deposit(1)], expected_version=version - 1)
    assert other.append(stream, [deposit(1)], expected_version=version).version == version + 1
