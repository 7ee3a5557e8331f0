"""The event record: time parsing, names, JSON, and the hash chain's two implementations."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esanalytics.events import (
    EVENT_SCHEMA,
    GENESIS_HASH,
    canonical_row,
    canonical_rows,
    category_of,
    chain_hashes,
    row_hash,
    to_epoch_us,
    to_utc,
    uuid4_array,
    uuid_keys,
)
from esanalytics.exceptions import InvalidTimestampError


def test_to_utc_accepts_aware_values_and_refuses_naive_ones() -> None:
    plus_one = timezone(timedelta(hours=1))
    assert to_utc(datetime(2024, 3, 1, 10, tzinfo=plus_one)) == datetime(2024, 3, 1, 9, tzinfo=UTC)
    assert to_utc("2024-03-01T10:00:00+01:00") == datetime(2024, 3, 1, 9, tzinfo=UTC)
    assert to_utc("2024-03-01T09:00:00Z") == datetime(2024, 3, 1, 9, tzinfo=UTC)
    assert to_utc(date(2024, 3, 1)) == to_utc("2024-03-01") == datetime(2024, 3, 1, tzinfo=UTC)
    for naive in (datetime(2024, 3, 1), "2024-03-01T09:00:00", "2024-03-01 09:00"):
        with pytest.raises(InvalidTimestampError, match="no time zone"):
            to_utc(naive)
    with pytest.raises(InvalidTimestampError, match="not a time"):
        to_utc(1709283600)  # type: ignore[arg-type]


@given(
    st.datetimes(
        timezones=st.just(UTC), min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)
    )
)
def test_epoch_microseconds_round_trip(moment: datetime) -> None:
    us = to_epoch_us(moment)
    assert pa.scalar(us, pa.int64()).cast(pa.timestamp("us", tz="UTC")).as_py() == moment


def test_category_is_the_part_before_the_first_dash() -> None:
    assert category_of("account-42") == "account"
    assert category_of("order-2024-07-1") == "order"
    assert category_of("plain") == "plain"


text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
rows = st.lists(
    st.tuples(
        text.filter(bool),
        st.integers(1, 10**6),
        st.sampled_from(["MoneyDeposited", "AccountOpened"]),
        st.integers(1, 5),
        st.integers(0, 4 * 10**15),
        st.integers(0, 4 * 10**15),
        st.dictionaries(text, st.integers() | text, max_size=3),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(rows, st.binary(min_size=32, max_size=32).map(bytes.hex))
def test_vectorized_chain_equals_the_row_by_row_chain(sample: list[tuple], prev: str) -> None:  # type: ignore[type-arg]
    import json

    records = []
    for i, (stream, version, kind, schema, occurred, recorded, data) in enumerate(sample):
        records.append(
            {
                "global_position": i + 1, "stream_id": stream, "category": category_of(stream),
                "version": version, "event_id": str(uuid.UUID(int=i)), "event_type": kind,
                "schema_version": schema, "occurred_at": occurred, "recorded_at": recorded,
                "data": json.dumps(data), "metadata": "{}", "prev_hash": None, "hash": None,
            }
        )  # fmt: skip
    table = pa.Table.from_pylist(
        records,
        schema=pa.schema(
            [
                f.with_type(pa.int64()) if pa.types.is_timestamp(f.type) else f.with_nullable(True)
                for f in EVENT_SCHEMA
            ]
        ),
    )
    table = table.set_column(
        7, "occurred_at", table["occurred_at"].cast(pa.timestamp("us", tz="UTC"))
    )
    table = table.set_column(
        8, "recorded_at", table["recorded_at"].cast(pa.timestamp("us", tz="UTC"))
    )
    prev_col, hash_col = chain_hashes(canonical_rows(table), prev)
    expected_prev, expected = [], []
    current = prev
    for r in records:
        canonical = canonical_row(*(r[k] for k in list(r)[:11]))
        expected_prev.append(current)
        current = row_hash(current, canonical)
        expected.append(current)
    assert prev_col.to_pylist() == expected_prev
    assert hash_col.to_pylist() == expected


def test_chain_of_nothing_and_genesis() -> None:
    empty = pa.array([], pa.large_binary())
    assert chain_hashes(empty, GENESIS_HASH)[1].to_pylist() == []
    assert len(GENESIS_HASH) == 64
    assert set(GENESIS_HASH) == {"0"}


def test_uuid_helpers_agree_with_the_uuid_module() -> None:
    ids = uuid4_array(bytes(range(256)) * 4)
    for text_id in ids.to_pylist():
        parsed = uuid.UUID(text_id)
        assert parsed.version == 4
        assert str(parsed) == text_id
    keys = uuid_keys(ids)
    for text_id, key in zip(ids.to_pylist(), keys.tolist(), strict=True):
        value = uuid.UUID(text_id).int
        assert key == (value >> 64) ^ (value & (2**64 - 1))


def test_hashes_are_checked_slice_by_slice_as_a_whole(
    sample_lake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large file is hashed in slices (its canonical text would pass Arrow's 2 GB): slices
    of any size find exactly the rows a whole-table check finds, across slice edges."""
    import numpy as np

    import esanalytics as esa
    from esanalytics import events

    table = esa.open(sample_lake).read_all().to_arrow().slice(0, 5_000)
    altered = [0, 999, 1_000, 4_999]
    data = table["data"].to_pylist()
    for row in altered:
        data[row] = data[row].replace("}", ', "forged": true}', 1)
    table = table.set_column(table.schema.get_field_index("data"), "data", pa.array(data))
    whole = events.hashes_match(table)
    assert np.flatnonzero(~whole).tolist() == altered
    for rows in (1, 7, 1_000, 4_999):
        monkeypatch.setattr(events, "HASH_SLICE_ROWS", rows)
        assert events.hashes_match(table).tolist() == whole.tolist()
