"""Values that used to be accepted and then broke the lake, or failed with no hint.

Each is refused before anything is written, with a ValidationError that ends in a ``Hint:``,
the same from ``append`` (dict and text payloads, data and metadata), from ``ingest`` (naming
the row) and from the command line (no traceback); and the lake stays whole: its files are
unchanged, a later append and a full read work, and the deep verify is clean.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as event_note
from hypothesis import strategies as st

import esanalytics as esa
from esanalytics.audit import verify
from esanalytics.exceptions import (
    InvalidEventDataError,
    InvalidEventTypeError,
    InvalidStreamIdError,
    InvalidTimestampError,
    ValidationError,
)
from esanalytics.projections import Count, Projection, data, meta
from tests.conftest import log_bytes, run_esa

E = esa.NewEvent


def _deep_dict(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    return root


def _deep_text(depth: int) -> str:
    return '{"a":' + "[" * depth + "]" * depth + "}"


def _swapped(value: uuid.UUID) -> uuid.UUID:
    """The UUID whose two 64-bit halves are ``value``'s, swapped."""
    return uuid.UUID(int=((value.int & (2**64 - 1)) << 64) | (value.int >> 64))


def assert_lake_whole(store: esa.EventStore, lake: Path, before: bytes, head: int) -> None:
    """Nothing was written, and the lake still takes appends, reads and verifies clean."""
    assert log_bytes(lake) == before
    assert list(lake.rglob("*.tmp")) == []
    assert store.head == head
    fresh = esa.open(lake)
    assert fresh.head == head
    fresh.append("account-9", [E("MoneyDeposited", {"amount": 1})])
    fresh.flush()
    events = fresh.read_all().to_list()
    assert len(events) == head + 1
    assert events[-1].data == {"amount": 1}
    result = verify(fresh, deep=True, workers=1)
    assert result.ok, str(result)
    fresh.compact()
    assert verify(fresh, deep=True, workers=1).ok


def refused(error: BaseException, kind: type[Exception]) -> None:
    assert isinstance(error, kind), repr(error)
    assert isinstance(error, ValidationError)
    assert "\nHint: " in str(error)


# ---------------------------------------------------------------------------------------------
# append


UUID_1 = "12345678-1234-4234-8234-123456789abc"

BAD_APPENDS: list[tuple[str, str, list[esa.NewEvent], dict[str, Any], type[Exception], str]] = [
    ("schema version 2**31", "account-1", [E("X", schema_version=2**31)], {}, ValidationError, "schema_version"),
    ("schema version -2**31", "account-1", [E("X", schema_version=-(2**31))], {}, ValidationError, "schema_version"),
    ("schema version True", "account-1", [E("X", schema_version=True)], {}, ValidationError, "schema_version"),
    ("category over 255 bytes", "é" * 128 + "-1", [E("X")], {}, InvalidStreamIdError, "255 bytes"),
    ("explicit category over 255 bytes", "account-1", [E("X")], {"category": "日" * 83},
     InvalidStreamIdError, "255 bytes"),
    ("NaN in text", "account-1", [E("X", '{"a": NaN}')], {}, InvalidEventDataError, "NaN"),
    ("Infinity in text", "account-1", [E("X", '{"a": [1, -Infinity]}')], {}, InvalidEventDataError, "Infinity"),
    ("1e400 in text", "account-1", [E("X", '{"a": 1e400}')], {}, InvalidEventDataError, "finite"),
    ("NaN in metadata text", "account-1", [E("X", metadata='{"a": NaN}')], {}, InvalidEventDataError, "NaN"),
    ("duplicate key", "account-1", [E("X", '{"a": 1, "a": 2}')], {}, InvalidEventDataError, "twice"),
    ("nested duplicate key", "account-1", [E("X", '{"b": [{"a": 1, "\\u0061": 2}]}')], {},
     InvalidEventDataError, "twice"),
    ("duplicate key in metadata", "account-1", [E("X", metadata='{"actor": "a", "actor": "b"}')], {},
     InvalidEventDataError, "twice"),
    ("event type with a newline", "account-1", [E("X\n")], {}, InvalidEventTypeError, "not a name"),
    ("C1 control in stream id", "account-1\x85", [E("X")], {}, InvalidStreamIdError, "control"),
    ("C1 control in category", "acc\x9fount-1", [E("X")], {}, InvalidStreamIdError, "control"),
    ("lone surrogate in stream id", "account-\ud800", [E("X")], {}, InvalidStreamIdError, "surrogate"),
    ("lone surrogate in category", "account-1", [E("X")], {"category": "a\udcff"}, InvalidStreamIdError,
     "surrogate"),
    ("100,000-deep text", "account-1", [E("X", _deep_text(100_000))], {}, InvalidEventDataError, "nested"),
    ("100,000-deep dict", "account-1", [E("X", _deep_dict(100_000))], {}, InvalidEventDataError, "nested"),
    ("200-deep text", "account-1", [E("X", _deep_text(200))], {}, InvalidEventDataError, "nested"),
    ("200-deep dict", "account-1", [E("X", _deep_dict(200))], {}, InvalidEventDataError, "nested"),
    ("100,000-deep metadata", "account-1", [E("X", metadata=_deep_text(100_000))], {},
     InvalidEventDataError, "nested"),
    ("lone surrogate in dict", "account-1", [E("X", {"a": "x\ud800"})], {}, InvalidEventDataError, "surrogate"),
    ("lone surrogate key", "account-1", [E("X", {"\udc80": 1})], {}, InvalidEventDataError, "surrogate"),
    ("lone surrogate in text", "account-1", [E("X", '{"a": "\ud800"}')], {}, InvalidEventDataError, "surrogate"),
    ("escaped lone surrogate in text", "account-1", [E("X", '{"a": "\\ud800"}')], {},
     InvalidEventDataError, "surrogate"),
    ("lone surrogate in metadata", "account-1", [E("X", metadata={"actor": "\udfff"})], {},
     InvalidEventDataError, "surrogate"),
    ("event id with a newline", "account-1", [E("X", event_id=UUID_1 + "\n")], {}, InvalidEventDataError,
     "not a UUID"),
    ("date before year 1 in UTC", "account-1", [E("X", occurred_at="0001-01-01T00:00:00+01:00")], {},
     InvalidTimestampError, "range"),
    ("date after 9999 in UTC", "account-1",
     [E("X", occurred_at=datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))))], {},
     InvalidTimestampError, "range"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "stream_id", "events", "options", "error", "words"),
    BAD_APPENDS,
    ids=[b[0] for b in BAD_APPENDS],
)
def test_a_bad_value_is_refused_by_append_and_the_lake_stays_whole(
    store: esa.EventStore,
    lake: Path,
    label: str,
    stream_id: str,
    events: list[esa.NewEvent],
    options: dict[str, Any],
    error: type[Exception],
    words: str,
) -> None:
    store.append("account-1", [E("AccountOpened", {"owner": "Ada"})])
    store.flush()
    before = log_bytes(lake)
    with pytest.raises(ValidationError, match=words) as caught:
        store.append(stream_id, events, **options)
    refused(caught.value, error)
    with pytest.raises(ValidationError, match=words):  # and again, once the writer is warm
        store.append(stream_id, events, **options)
    assert_lake_whole(store, lake, before, 1)


def test_a_large_append_refuses_bad_values_the_same_way(store: esa.EventStore, lake: Path) -> None:
    store.append("account-1", [E("AccountOpened", {})])
    before = log_bytes(lake)
    many = [E("MoneyDeposited", {"amount": i}) for i in range(1_200)]
    for bad in (E("X", '{"a": NaN}'), E("X", schema_version=2**31), E("X\n")):
        with pytest.raises(ValidationError) as caught:
            store.append("account-2", [*many, bad])
        assert "\nHint: " in str(caught.value)
    assert_lake_whole(store, lake, before, 1)


def test_an_out_of_range_as_of_is_a_hinted_error(store: esa.EventStore) -> None:
    store.append("account-1", [E("AccountOpened", {})])
    for bound in ("9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+00:30"):
        with pytest.raises(InvalidTimestampError, match="range") as caught:
            store.read_all(as_of=bound)
        refused(caught.value, InvalidTimestampError)


GOOD_EDGES: list[tuple[str, str, esa.NewEvent, dict[str, Any]]] = [
    ("schema version 2**31-1", "account-1", E("X", schema_version=2**31 - 1), {}),
    ("category of 246 bytes", "é" * 123 + "-1", E("X"), {}),
    ("NaN inside a string", "account-1", E("X", '{"a": "NaN Infinity"}'), {}),
    ("surrogate pair escaped", "account-1", E("X", '{"a": "\\ud83d\\ude00"}'), {}),
    ("128-deep", "account-1", E("X", _deep_text(127)), {}),
    ("same key in two objects", "account-1", E("X", '{"a": {"k": 1}, "b": {"k": 2}}'), {}),
    ("big integer", "account-1", E("X", {"a": 10**30}), {}),
    ("NUL in a value", "account-1", E("X", {"a": "\x00", "\x00": "b"}), {}),
    ("year 1 and 9999", "account-1", E("X", occurred_at=datetime(9999, 12, 31, 23, 59, 59, 999_999, UTC)), {}),
    ("year 1", "account-1", E("X", occurred_at=date(1, 1, 1)), {}),
    ("non-ASCII stream id", "account-ünï€😀", E("X"), {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "stream_id", "event", "options"), GOOD_EDGES, ids=[g[0] for g in GOOD_EDGES]
)
def test_values_at_the_edges_are_kept_and_read_back(
    store: esa.EventStore, label: str, stream_id: str, event: esa.NewEvent, options: dict[str, Any]
) -> None:
    store.append(stream_id, [event], **options)
    store.flush()
    (read,) = store.read_stream(stream_id, category=options.get("category")).to_list()
    assert read.schema_version == event.schema_version
    data = json.loads(event.data) if isinstance(event.data, str) else event.data
    assert read.data == data
    assert verify(store, deep=True, workers=1).ok
    store.compact()
    assert store.read_stream(stream_id).to_list() == [read]


# ---------------------------------------------------------------------------------------------
# ingest

ROWS = {
    "stream_id": ["account-1", "account-2"],
    "event_type": ["AccountOpened", "AccountOpened"],
    "data": ["{}", '{"a": 1}'],
    "metadata": ["{}", "{}"],
}
FAR = pa.array([0, 10**17 * 6], pa.int64()).view(pa.timestamp("us", "UTC"))  # year ~21,000

BAD_INGESTS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("schema version 2**31", {"schema_version": pa.array([1, 2**31], pa.int64())}, ValidationError, "row 1"),
    ("schema version bools", {"schema_version": pa.array([True, True])}, ValidationError, "bool"),
    ("schema version floats", {"schema_version": pa.array([1.0, 1.5])}, ValidationError, "double"),
    ("schema version null", {"schema_version": pa.array([1, None], pa.int32())}, ValidationError, "row 1"),
    ("category over 255 bytes", {"stream_id": ["account-1", "é" * 128 + "-1"]}, InvalidStreamIdError, "255 bytes"),
    ("C1 control in stream id", {"stream_id": ["account-1", "account-\x9b2"]}, InvalidStreamIdError, "row 1"),
    ("C1 control in category", {"category": ["account", "acc\x80"]}, InvalidStreamIdError, "control"),
    ("event type with a newline", {"event_type": ["X", "X\n"]}, InvalidEventTypeError, "row 1"),
    ("NaN in data", {"data": ["{}", '{"a": NaN}']}, InvalidEventDataError, "row 1"),
    ("Infinity in metadata", {"metadata": ["{}", '{"a": -Infinity}']}, InvalidEventDataError, "row 1"),
    ("1e400 in data", {"data": ["{}", '{"a": 1e400}']}, InvalidEventDataError, "row 1"),
    ("duplicate key", {"data": ["{}", '{"a": 1, "a": 2}']}, InvalidEventDataError, "row 1"),
    ("nested duplicate key", {"metadata": ["{}", '{"x": {"a": 1, "a": 2}}']}, InvalidEventDataError, "row 1"),
    ("100,000-deep", {"data": ["{}", _deep_text(100_000)]}, InvalidEventDataError, "row 1"),
    ("integer of 5,000 digits", {"data": ["{}", '{"a": 1' + "0" * 5_000 + "}"]}, InvalidEventDataError, "row 1"),
    ("200-deep", {"data": ["{}", _deep_text(200)]}, InvalidEventDataError, "row 1"),
    ("escaped lone surrogate", {"data": ["{}", '{"a": "\\udc00"}']}, InvalidEventDataError, "row 1"),
    ("event id with a newline", {"event_id": [UUID_1, str(uuid.uuid4()) + "\n"]}, InvalidEventDataError, "row 1"),
    ("occurred_at past year 9999", {"occurred_at": FAR}, InvalidTimestampError, "row 1"),
    ("occurred_at in ns, not whole µs", {"occurred_at": pa.array([1, 1_000_000_001], pa.timestamp("ns", "UTC"))},
     InvalidTimestampError, "microsecond"),
    ("occurred_at in s, past int64 µs", {"occurred_at": pa.array([0, 2**62], pa.timestamp("s", "UTC"))},
     InvalidTimestampError, "range"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "change", "error", "words"), BAD_INGESTS, ids=[b[0] for b in BAD_INGESTS]
)
def test_a_bad_value_is_refused_by_ingest_naming_the_row(
    store: esa.EventStore,
    lake: Path,
    label: str,
    change: dict[str, Any],
    error: type[Exception],
    words: str,
) -> None:
    store.append("account-0", [E("AccountOpened", {})])
    store.flush()
    before = log_bytes(lake)
    table = pa.table({**ROWS, **change})
    with pytest.raises(ValidationError, match=words) as caught:
        store.ingest(table)
    refused(caught.value, error)
    assert_lake_whole(store, lake, before, 1)


def test_ingest_finds_a_bad_row_among_many(store: esa.EventStore) -> None:
    n = 30_000
    data = [f'{{"amount": {i}, "note": "NaN"}}' for i in range(n)]
    data[n - 7] = '{"amount": 1, "amount": 2}'
    table = pa.table(
        {
            "stream_id": [f"account-{i % 50}" for i in range(n)],
            "event_type": ["MoneyDeposited"] * n,
            "data": data,
            "metadata": ['{"actor": "alice"}'] * n,
        }
    )
    with pytest.raises(InvalidEventDataError, match=f"row {n - 7}"):
        store.ingest(table)
    store.ingest(table.set_column(2, "data", pa.array(['{"amount": 1}'] * n)))
    assert store.head == n


# ---------------------------------------------------------------------------------------------
# the command line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--data", '{"a": NaN}'], "NaN"),
        (["--data", '{"a": 1, "a": 2}'], "twice"),
        (["--data", _deep_text(50_000)], "nested"),
        (["--data", os.fsdecode(b'{"a": "\xff"}')], "surrogate"),
        (["--metadata", '{"a": Infinity}'], "Infinity"),
        (["--occurred-at", "0001-01-01T00:00:00+01:00"], "range"),
    ],
    ids=["nan", "duplicate", "deep", "not utf-8", "metadata infinity", "date"],
)
def test_the_cli_refuses_bad_values_with_a_hint_and_no_traceback(
    store: esa.EventStore, lake: Path, args: list[str], words: str
) -> None:
    store.append("account-1", [E("AccountOpened", {})])
    store.flush()
    before = log_bytes(lake)
    done = run_esa("append", str(lake), "account-1", "MoneyDeposited", *args)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert words in done.stderr
    assert "Hint:" in done.stderr
    assert_lake_whole(store, lake, before, 1)


def test_the_cli_refuses_a_bad_stream_id_and_type(store: esa.EventStore, lake: Path) -> None:
    store.append("account-1", [E("AccountOpened", {})])
    store.flush()
    before = log_bytes(lake)
    for stream, kind in (("account-\x85", "X"), ("é" * 128 + "-1", "X"), ("account-1", "X\n")):
        done = run_esa("append", str(lake), stream, kind)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert "Hint:" in done.stderr
    assert_lake_whole(store, lake, before, 1)


# ---------------------------------------------------------------------------------------------
# event ids


def test_a_retried_append_of_over_1000_events_is_replayed(
    store: esa.EventStore, lake: Path
) -> None:
    store.append("account-1", [E("AccountOpened", {})])
    events = [E("MoneyDeposited", {"amount": i}, event_id=uuid.uuid4()) for i in range(1_500)]
    first = store.append("account-2", events, expected_version=esa.NO_STREAM)
    assert not first.replayed
    before = log_bytes(lake)
    again = store.append("account-2", events, expected_version=esa.NO_STREAM)
    assert again.replayed
    assert (again.first_position, again.last_position) == (
        first.first_position,
        first.last_position,
    )
    assert again.streams == first.streams
    assert log_bytes(lake) == before
    # from another handle too (its writer caches come from the log, not from this append)
    other = esa.open(lake).append("account-2", events, expected_version=esa.NO_STREAM)
    assert other.replayed
    assert other.last_position == first.last_position
    # a multi-stream append over 1,000 events, retried
    split = [
        esa.AppendRequest("account-3", [E("X", {}, event_id=uuid.uuid4()) for _ in range(700)]),
        esa.AppendRequest("account-4", [E("Y", {}, event_id=uuid.uuid4()) for _ in range(700)]),
    ]
    made = store.append_many(split)
    retried = store.append_many(split)
    assert retried.replayed
    assert (retried.first_position, retried.last_position) == (
        made.first_position,
        made.last_position,
    )
    # not a retry: the same ids in another stream, one id more, or in another order
    with pytest.raises(esa.DuplicateEventError):
        store.append("account-5", events)
    with pytest.raises(esa.DuplicateEventError):
        store.append("account-2", [*events, E("MoneyDeposited", {})])
    with pytest.raises(esa.DuplicateEventError):
        store.append("account-2", events[::-1])
    assert store.head == 1 + 1_500 + 1_400
    assert verify(store, deep=True, workers=1).ok


def test_an_id_with_swapped_halves_is_a_different_id(store: esa.EventStore, lake: Path) -> None:
    original = uuid.UUID("00000000-0000-4001-8000-000000000002")
    twin = _swapped(original)
    assert twin != original
    store.append("account-1", [E("AccountOpened", {}, event_id=original)])
    store.append("account-1", [E("MoneyDeposited", {}, event_id=twin)])  # small append
    ids = [uuid.uuid4() for _ in range(20)]
    store.append("account-2", [E("X", {}, event_id=_swapped(ids[0])), E("Y", {})])
    table = pa.table(
        {
            "stream_id": ["account-3"] * 20,
            "event_type": ["X"] * 20,
            "data": ["{}"] * 20,
            "metadata": ["{}"] * 20,
            "event_id": [str(u) for u in ids[:10]]
            + [str(_swapped(u)) for u in ids[1:10]]
            + [str(uuid.uuid4())],
        }
    )
    store.ingest(table)  # ids and their twins in one batch, and the twin of a stored id
    assert store.head == 2 + 2 + 20
    fresh = esa.open(lake)  # the writer's keys from the log, or from its saved index
    fresh.append("account-4", [E("X", {}, event_id=_swapped(ids[15]))])
    fresh.compact()  # saves the writer index
    again = esa.open(lake)
    again.append("account-4", [E("X", {}, event_id=ids[15])])
    with pytest.raises(esa.DuplicateEventError):
        again.append("account-5", [E("X", {}, event_id=ids[15])])
    assert verify(again, deep=True, workers=1).ok


def test_a_repeated_id_of_an_ingest_names_its_row(store: esa.EventStore) -> None:
    known = str(uuid.uuid4())
    store.append("account-1", [E("AccountOpened", {}, event_id=known)])
    ids = [str(uuid.uuid4()) for _ in range(40)]
    ids[31] = known
    table = pa.table(
        {
            "stream_id": ["account-2"] * 40,
            "event_type": ["X"] * 40,
            "data": ["{}"] * 40,
            "metadata": ["{}"] * 40,
            "event_id": ids,
        }
    )
    with pytest.raises(esa.DuplicateEventError, match="row 31") as caught:
        store.ingest(table)
    assert caught.value.event_id == known  # type: ignore[attr-defined]
    ids[31] = ids[5]
    with pytest.raises(esa.DuplicateEventError, match="row 31") as caught:
        store.ingest(table.set_column(4, "event_id", pa.array(ids)))
    assert caught.value.event_id == ids[5]  # type: ignore[attr-defined]


def test_a_repeated_id_among_20000_is_found_quickly(store: esa.EventStore) -> None:
    events = [E("X", {}, event_id=uuid.uuid4()) for _ in range(20_000)]
    events[-1] = E("X", {}, event_id=events[-2].event_id)
    started = time.perf_counter()
    with pytest.raises(esa.DuplicateEventError) as caught:
        store.append("account-1", events)
    assert time.perf_counter() - started < 4.0
    assert caught.value.event_id == str(events[-2].event_id)  # type: ignore[attr-defined]
    assert store.head == 0


# ---------------------------------------------------------------------------------------------
# whatever append accepts, it gives back


_keys = st.text(max_size=8)
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)
_printable = st.characters(exclude_categories=("Cc", "Cs"))
_names = st.text(
    st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="-"), min_size=1, max_size=8
)
_stream_ids = st.builds("{}-{}".format, _names, st.text(_printable, max_size=30))
_event_types = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.:]{0,12}", fullmatch=True)
_times = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream_id=st.one_of(*[_stream_ids] * 4, st.text(max_size=12)),
    event_type=st.one_of(*[_event_types] * 4, st.text(max_size=4)),
    data=st.dictionaries(_keys, _json_values, max_size=5),
    metadata=st.dictionaries(_keys, _json_values, max_size=3),
    as_text=st.booleans(),
    schema_version=st.one_of(
        *[st.integers(min_value=1, max_value=2**31 - 1)] * 4,
        st.sampled_from([0, -1, 2**31, 2**63, True, False]),
    ),
    occurred_at=st.none() | _times,
)
def test_whatever_append_accepts_reads_back_identically_and_verifies(
    stream_id: str,
    event_type: str,
    data: dict[str, Any],
    metadata: dict[str, Any],
    as_text: bool,
    schema_version: int,
    occurred_at: datetime | None,
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        lake = Path(folder) / "lake"
        store = esa.open(lake, create=True)
        payload: Any = json.dumps(data, ensure_ascii=False) if as_text else data
        event = E(
            event_type,
            payload,
            metadata=metadata,
            schema_version=schema_version,
            occurred_at=occurred_at,
        )
        before = log_bytes(lake)
        try:
            store.append(stream_id, [event])
        except ValidationError as error:
            refusal: ValidationError | None = error
        else:
            refusal = None
        if refusal is not None:
            event_note(f"refused: {type(refusal).__name__}")
            assert "\nHint: " in str(refusal)
            assert log_bytes(lake) == before
            return
        event_note("accepted")
        for _ in range(2):  # from the commit line, then from Parquet after the seal
            (read,) = store.read_all().to_list()
            assert (read.stream_id, read.event_type) == (stream_id, event_type)
            assert read.schema_version == schema_version
            assert not isinstance(read.schema_version, bool)
            assert _same(read.data, data)
            assert _same(read.metadata, metadata)
            if occurred_at is not None:
                assert read.occurred_at == occurred_at
            store.flush()
        assert verify(esa.open(lake), deep=True, workers=1).ok


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values (floats by value, -0.0 and 0.0 apart)."""
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, float | int)
            and isinstance(b, float | int)
            and a == b
            and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# ---------------------------------------------------------------------------------------------
# names checked by a regex: a final newline is not allowed by `$`


@pytest.mark.parametrize(
    "make",
    [
        lambda: Projection("balances\n", {"n": Count(on=["X"])}),
        lambda: Projection("balances", {"n\n": Count(on=["X"])}),
        lambda: data("amount\n"),
        lambda: data("amount", "DOUBLE\n"),
        lambda: meta("actor\n"),
    ],
    ids=["projection name", "field name", "data path", "sql type", "metadata path"],
)
def test_a_projection_name_or_path_with_a_final_newline_is_refused(make: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        make()
    assert "\nHint: " in str(caught.value)


# ---------------------------------------------------------------------------------------------
# ingest judges JSON exactly as append does


def _object_text(draw: Any, depth: int = 0) -> str:
    """JSON object text with keys that may repeat, spaces anywhere, escapes sometimes."""
    keys = st.sampled_from(["a", "b", "k" * 20, "k" * 9 + "x" + "k" * 10, "é", "\\u0061", 'q\\"'])
    space = st.sampled_from(["", " ", "\n", "\t "])
    members = []
    for _ in range(draw(st.integers(0, 4))):
        key = draw(keys)
        if depth < 2 and draw(st.booleans()):
            value = _object_text(draw, depth + 1)
        else:
            value = draw(
                st.sampled_from(["1", "-0.5", '"x:y"', '"NaN"', "NaN", "[]", "null", '":"'])
            )
        members.append(f'{draw(space)}"{key}"{draw(space)}:{draw(space)}{value}')
    return "{" + ",".join(members) + draw(space) + "}"


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_ingest_refuses_exactly_the_json_append_refuses(data: st.DataObject) -> None:
    from esanalytics.store import ingest

    texts = [_object_text(data.draw) for _ in range(data.draw(st.integers(1, 12)))]
    bad_rows = []
    for row, text in enumerate(texts):
        try:
            esa.events.dump_json(text, what="data")
        except InvalidEventDataError:
            bad_rows.append(row)
    table = pa.table(
        {
            "stream_id": ["account-1"] * len(texts),
            "event_type": ["X"] * len(texts),
            "data": texts,
            "metadata": ["{}"] * len(texts),
        }
    )
    event_note("some row refused" if bad_rows else "every row accepted")
    if bad_rows:
        with pytest.raises(InvalidEventDataError, match=f"at row {bad_rows[0]}:"):
            ingest.validate(table)
    else:
        ingest.validate(table)
