"""Bad input gets a specific error with a Hint, and nothing is written."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import esanalytics as esa
from esanalytics.exceptions import (
    EmptyAppendError,
    InvalidEventDataError,
    InvalidEventTypeError,
    InvalidExpectedVersionError,
    InvalidStreamIdError,
    InvalidTimestampError,
)
from tests.conftest import log_bytes

BAD_APPENDS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("empty stream id", {"stream_id": ""}, InvalidStreamIdError, "empty"),
    ("too long", {"stream_id": "account-" + "x" * 300}, InvalidStreamIdError, "at most 256"),
    ("control char", {"stream_id": "account-1\n"}, InvalidStreamIdError, "control character"),
    ("traversal", {"stream_id": "../../etc-1"}, InvalidStreamIdError, "partition folder"),
    ("slash category", {"stream_id": "a/b-1"}, InvalidStreamIdError, "partition folder"),
    ("dot category", {"stream_id": "..-1"}, InvalidStreamIdError, "partition folder"),
    ("explicit bad category", {"category": "x/../y"}, InvalidStreamIdError, "partition folder"),
    ("no events", {"events": []}, EmptyAppendError, "no events"),
    ("naive time", {"events": [esa.NewEvent("X", occurred_at=datetime(2024, 1, 1))]},
     InvalidTimestampError, "no time zone"),
    ("naive string", {"events": [esa.NewEvent("X", occurred_at="2024-01-01 10:00")]},
     InvalidTimestampError, "no time zone"),
    ("garbage time", {"events": [esa.NewEvent("X", occurred_at="yesterday")]},
     InvalidTimestampError, "ISO 8601"),
    ("decimal", {"events": [esa.NewEvent("X", {"amount": Decimal("1.5")})]},
     InvalidEventDataError, "cannot be written as JSON"),
    ("nan", {"events": [esa.NewEvent("X", {"amount": math.nan})]},
     InvalidEventDataError, "cannot be written as JSON"),
    ("malformed json text", {"events": [esa.NewEvent("X", '{"amount": 1')]},
     InvalidEventDataError, "not valid JSON"),
    ("json array", {"events": [esa.NewEvent("X", "[1, 2]")]}, InvalidEventDataError, "not an object"),
    ("metadata not mapping", {"events": [esa.NewEvent("X", metadata=[1])]},  # type: ignore[arg-type]
     InvalidEventDataError, "not a mapping"),
    ("bad type name", {"events": [esa.NewEvent("money deposited")]}, InvalidEventTypeError, "not a name"),
    ("bad id", {"events": [esa.NewEvent("X", event_id="42")]}, InvalidEventDataError, "not a UUID"),
    ("bad expected", {"expected_version": -1}, InvalidExpectedVersionError, "not understood"),
    ("bool expected", {"expected_version": True}, InvalidExpectedVersionError, "not understood"),
    ("string expected", {"expected_version": "any"}, InvalidExpectedVersionError, "not understood"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "change", "error", "words"), BAD_APPENDS, ids=[b[0] for b in BAD_APPENDS]
)
def test_bad_append_is_refused_and_writes_nothing(
    store: esa.EventStore,
    lake: Path,
    label: str,
    change: dict[str, Any],
    error: type[Exception],
    words: str,
) -> None:
    store.append("account-1", [esa.NewEvent("AccountOpened", {})])
    before = log_bytes(lake)
    call: dict[str, Any] = {"stream_id": "account-1", "events": [esa.NewEvent("X", {})], **change}
    with pytest.raises(error, match=words) as caught:
        store.append(call.pop("stream_id"), call.pop("events"), **call)
    assert isinstance(caught.value, ValueError)
    assert "\nHint: " in str(caught.value)
    assert log_bytes(lake) == before
    assert list(lake.rglob("*.tmp")) == []
    assert store.head == 1


def test_no_path_outside_the_lake_is_ever_built(
    store: esa.EventStore, lake: Path, tmp_path: Path
) -> None:
    store.append("weird id with spaces & ünïcode/../../x", [esa.NewEvent("X", {})], category="safe")
    store.flush()
    outside = {p for p in tmp_path.rglob("*") if lake not in p.parents and p != lake}
    assert outside == set()
    assert [e.stream_id for e in store.read_all()] == ["weird id with spaces & ünïcode/../../x"]


INGEST = {
    "stream_id": ["account-1", "account-2"],
    "event_type": ["AccountOpened", "AccountOpened"],
    "data": ["{}", '{"a": 1}'],
    "metadata": ["{}", "{}"],
}

BAD_INGESTS: list[tuple[str, dict[str, Any], str]] = [
    ("missing column", {"metadata": None}, "no column 'metadata'"),
    ("bad json row 1", {"data": ["{}", '{"a": ']}, "row 1"),
    ("array json", {"metadata": ["{}", "[]"]}, "row 1"),
    ("two objects in one", {"data": ['{}{"b":2}', "{}"]}, "row 0"),
    ("empty json", {"data": ["", "{}"]}, "row 0"),
    ("control in stream", {"stream_id": ["account-1", "account\t2"]}, "row 1"),
    ("bad type", {"event_type": ["AccountOpened", "opened!"]}, "row 1"),
    ("bad uuid", {"event_id": ["00000000-0000-4000-8000-000000000001", "zz"]}, "row 1"),
    ("dup uuid", {"event_id": ["00000000-0000-4000-8000-000000000001"] * 2}, "repeated"),
    ("naive occurred", {"occurred_at": pa.array([datetime(2024, 1, 1)] * 2)}, "no time zone"),
    ("decreasing recorded", {"recorded_at": pa.array([datetime(2024, 1, 2), datetime(2024, 1, 1)], pa.timestamp("us", "UTC"))}, "decreases at row 1"),
    ("future recorded", {"recorded_at": pa.array([datetime(2999, 1, 1)] * 2, pa.timestamp("us", "UTC"))}, "future"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "change", "words"), BAD_INGESTS, ids=[b[0] for b in BAD_INGESTS])
def test_bad_ingest_names_the_row_and_writes_nothing(
    store: esa.EventStore, lake: Path, label: str, change: dict[str, Any], words: str
) -> None:
    store.append("account-0", [esa.NewEvent("AccountOpened", {})])
    before = log_bytes(lake)
    columns = {**INGEST, **change}
    table = pa.table({k: v for k, v in columns.items() if v is not None})
    with pytest.raises(esa.EsaError, match=words) as caught:
        store.ingest(table)
    assert "Hint:" in str(caught.value)
    assert log_bytes(lake) == before


def test_ingest_continues_versions_and_recorded_times(store: esa.EventStore) -> None:
    store.append("account-1", [esa.NewEvent("AccountOpened", {})])
    store.ingest(pa.table({**INGEST, "stream_id": ["account-1", "account-1"]}))
    assert [e.version for e in store.read_stream("account-1")] == [1, 2, 3]
    with pytest.raises(InvalidTimestampError, match="earlier than the log"):
        store.ingest(
            pa.table(
                {
                    **INGEST,
                    "recorded_at": pa.array([datetime(2020, 1, 1)] * 2, pa.timestamp("us", "UTC")),
                }
            )
        )
