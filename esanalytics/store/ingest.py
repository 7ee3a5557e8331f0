"""Vectorized checks and placement for bulk ingest (the sample generator, future importers).

Everything here works on whole Arrow columns: a 10-million-row table is validated without a
Python loop per row. A bad row is reported by its index, and nothing is written.
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from esanalytics.events import (
    _CONTROL_PATTERN,
    _EVENT_TYPE_PATTERN,
    EVENT_SCHEMA,
    MAX_EPOCH_US,
    MAX_JSON_DEPTH,
    MAX_SCHEMA_VERSION,
    MAX_STREAM_ID_LENGTH,
    MIN_EPOCH_US,
    TIMESTAMP,
    dump_json,
    too_deep,
    uuid4_array,
    valid_uuid_mask,
    validate_category,
)
from esanalytics.exceptions import (
    InvalidEventDataError,
    InvalidEventTypeError,
    InvalidStreamIdError,
    InvalidTimestampError,
    ValidationError,
)

__all__ = ["as_table", "place", "validate"]

REQUIRED = ("stream_id", "event_type", "data", "metadata")


def _first(mask: pa.Array | pa.ChunkedArray) -> int:
    """Index of the first true value of a boolean mask."""
    return int(np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))[0])


def _string(table: pa.Table, name: str) -> pa.Array:
    column = table[name].combine_chunks()
    if pa.types.is_large_string(column.type) or pa.types.is_string_view(column.type):
        column = column.cast(pa.string())
    if not pa.types.is_string(column.type):
        raise ValidationError(
            f"The ingest column {name!r} is {column.type}, not text.",
            hint=f"cast it to string first, e.g. table.set_column(..., pc.cast(table[{name!r}], pa.string())).",
            column=name,
        )
    if column.null_count:
        raise ValidationError(
            f"The ingest column {name!r} is null at row {_first(column.is_null())}.",
            hint=f"every row needs a {name}.",
            column=name,
        )
    try:
        column.validate(full=True)
    except pa.ArrowInvalid as error:
        raise ValidationError(
            f"The ingest column {name!r} is not valid UTF-8 text: {error}.",
            hint="decode the source with its real encoding before building the table.",
            column=name,
        ) from None
    return column


def _check_json(column: pa.Array, name: str) -> None:
    """Every value parses as one JSON object: one C++ parse of the whole column, framed as
    newline-delimited JSON. A bad row is then located by the slower per-row path."""
    n = len(column)
    if n == 0:
        return
    framed = pc.binary_join_element_wise(column, "\n", "")
    offsets = np.frombuffer(
        framed.buffers()[1], dtype=np.int32, count=n + 1, offset=framed.offset * 4
    )
    text = framed.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]
    if text.count(b"\n") == n and b"\r" not in text:
        try:
            import pyarrow.json as pj

            objects_only = pj.ParseOptions(
                explicit_schema=pa.schema([]), unexpected_field_behavior="ignore"
            )
            parsed = pj.read_json(io.BytesIO(text), parse_options=objects_only)
        except pa.ArrowInvalid:
            parsed = None
        if parsed is not None and parsed.num_rows == n:
            return
    _locate_bad_json(column, name)


_ROWS_PER_PARSE = 65_536


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1 and len({key for key, _ in pairs}) != len(pairs):
        raise ValueError("a key twice in one object")


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_CHECKING_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_repeated_keys, parse_constant=_refuse_constant
)


def _check_json_agrees(*columns: Any) -> None:
    """:func:`_check_json_agree` for each (column, name) pair given, one after the other."""
    for column, name in zip(columns[::2], columns[1::2], strict=True):
        _check_json_agree(column, name)


def _check_json_agree(column: pa.Array, name: str) -> None:
    """What Arrow's parser lets through and readers would disagree on or fail at: NaN and
    infinity, a key twice in one object (Python reads the last, DuckDB the first), nesting
    deeper than MAX_JSON_DEPTH. Python's own parser over many rows at once (each row is one
    object, which :func:`_check_json` proves), with numpy counting brackets to find the few
    rows that may nest too deep. Numbers too large for a double and lone surrogates are
    refused by Arrow's parser. A bad row is then located by the per-row path."""
    for start in range(0, len(column), _ROWS_PER_PARSE):
        chunk = column.slice(start, _ROWS_PER_PARSE)
        n = len(chunk)
        framed = pc.binary_join_element_wise(chunk, ",", "")
        offsets = np.frombuffer(
            framed.buffers()[1], dtype=np.int32, count=n + 1, offset=framed.offset * 4
        )
        raw = np.frombuffer(framed.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        opens = np.append((raw == ord("[")) | (raw == ord("{")), False)
        counts = np.add.reduceat(opens, offsets[:-1] - offsets[0], dtype=np.int64)
        try:
            for row in np.flatnonzero(counts > MAX_JSON_DEPTH):
                if too_deep(chunk[int(row)].as_py()):
                    raise ValueError("nested too deep")
            values = _CHECKING_DECODER.decode("[" + raw[:-1].tobytes().decode() + "]")
            if len(values) != n:
                raise ValueError("rows are not one object each")
        except (ValueError, RecursionError):
            _locate_bad_json(column, name)
            return


def _locate_bad_json(column: pa.Array, name: str) -> None:
    """Find the first value that is not exactly one JSON object, and say which (the same
    check a single append makes, with the row named)."""
    for row, text in enumerate(column.to_pylist()):
        try:
            dump_json(text, what=name)
        except InvalidEventDataError as error:
            raise InvalidEventDataError(
                f"The ingest column {name!r} at row {row}: {error.problem}",
                hint=error.hint,
                row=row,
                column=name,
            ) from None


def _schema_versions(column: pa.Array) -> pa.Array:
    if not pa.types.is_integer(column.type):
        raise ValidationError(
            f"The ingest column 'schema_version' is {column.type}, not integers.",
            hint="cast it to int32, e.g. pc.cast(table['schema_version'], pa.int32()) "
            "(schema versions are ints from 1; bools and fractions are not versions).",
            column="schema_version",
        )
    bad = pc.fill_null(pc.or_(pc.less(column, 1), pc.greater(column, MAX_SCHEMA_VERSION)), True)
    if pc.any(bad).as_py():
        row = _first(bad)
        raise ValidationError(
            f"The schema_version {column[row].as_py()!r} at row {row} is null or outside 1 to "
            f"{MAX_SCHEMA_VERSION:,}.",
            hint=f"schema versions are ints from 1 to {MAX_SCHEMA_VERSION:,} (an int32 column).",
            row=row,
            column="schema_version",
        )
    return column.cast(pa.int32())


def _timestamps(table: pa.Table, name: str) -> pa.Array | None:
    if name not in table.column_names:
        return None
    column = table[name].combine_chunks()
    if not pa.types.is_timestamp(column.type):
        raise InvalidTimestampError(
            f"The ingest column {name!r} is {column.type}, not a timestamp.",
            hint="pass a timestamp column with a time zone, e.g. pa.array(..., pa.timestamp('us', tz='UTC')).",
            column=name,
        )
    if column.type.tz is None:
        raise InvalidTimestampError(
            f"The ingest column {name!r} has no time zone.",
            hint=f"say which zone its values are in: pc.assume_timezone(table[{name!r}], 'UTC') "
            "(or the zone the source used).",
            column=name,
        )
    try:
        column = column.cast(TIMESTAMP)
    except pa.ArrowInvalid as error:
        raise InvalidTimestampError(
            f"The ingest column {name!r} does not fit whole microseconds in the range of years "
            f"1 to 9999: {error}.",
            hint="times are kept to the microsecond: round finer ones first, e.g. "
            f"pc.floor_temporal(table[{name!r}], unit='microsecond'), and check the values "
            "out of range.",
            column=name,
        ) from None
    us = column.cast(pa.int64())
    bad = pc.fill_null(pc.or_(pc.less(us, MIN_EPOCH_US), pc.greater(us, MAX_EPOCH_US)), False)
    if pc.any(bad).as_py():
        row = _first(bad)
        raise InvalidTimestampError(
            f"The {name} at row {row} ({us[row].as_py()} µs from 1970) is out of range.",
            hint="times are kept in UTC between the years 1 and 9999 (what Python's datetime "
            "holds); check the source's unit and zone.",
            row=row,
            column=name,
        )
    return column


def as_table(table: Any) -> pa.Table:
    """An ingest source as an Arrow table: a ``pyarrow.Table`` as it is, a pandas DataFrame
    (its index dropped; dict payloads in ``data``/``metadata`` written as JSON text), or any
    object with the Arrow C stream interface (Polars, DuckDB results)."""
    if isinstance(table, pa.Table):
        return table
    if type(table).__module__.startswith("pandas") and hasattr(table, "columns"):
        frame = table.copy(deep=False)
        for name in ("data", "metadata"):
            if name in frame.columns and frame[name].dtype == object:
                frame[name] = [
                    value
                    if isinstance(value, str) or value is None
                    else dump_json(value, what=name)
                    for value in frame[name]
                ]
        return pa.Table.from_pandas(frame, preserve_index=False)
    if hasattr(table, "__arrow_c_stream__"):
        return pa.table(table)
    raise ValidationError(
        f"ingest got a {type(table).__name__}, not a table.",
        hint="pass a pyarrow.Table or a pandas DataFrame with the columns "
        f"{', '.join(REQUIRED)} (data and metadata as JSON text or dicts).",
    )


def validate(table: pa.Table, *, validate_json: bool = True) -> pa.Table:
    """Check and normalize an ingest table; returns columns stream_id, category, event_id,
    event_type, schema_version, occurred_at, recorded_at (both may hold nulls), data,
    metadata."""
    table = as_table(table)
    missing = [name for name in REQUIRED if name not in table.column_names]
    if missing:
        raise ValidationError(
            f"The ingest table has no column {missing[0]!r}.",
            hint=f"an ingest table needs the columns {', '.join(REQUIRED)}.",
            column=missing[0],
        )
    n = table.num_rows
    stream_id = _string(table, "stream_id")
    length = pc.utf8_length(stream_id)
    bad = pc.or_(
        pc.or_(pc.equal(length, 0), pc.greater(length, MAX_STREAM_ID_LENGTH)),
        pc.match_substring_regex(stream_id, _CONTROL_PATTERN),
    )
    if pc.any(bad).as_py():
        row = _first(bad)
        raise InvalidStreamIdError(
            f"The stream id {stream_id[row].as_py()!r} at row {row} is empty, longer than "
            f"{MAX_STREAM_ID_LENGTH} characters, or has a control character.",
            hint="stream ids are non-empty text without control characters, like 'account-42'.",
            row=row,
        )
    if "category" in table.column_names:
        category = _string(table, "category")
    else:
        category = pc.list_element(pc.split_pattern(stream_id, "-", max_splits=1), 0)
    for value in pc.unique(category).to_pylist():  # in order of first appearance
        try:
            validate_category(value)
        except InvalidStreamIdError as error:
            error.row = _first(pc.equal(category, value))  # type: ignore[attr-defined]
            raise
    event_type = _string(table, "event_type")
    bad = pc.invert(pc.match_substring_regex(event_type, _EVENT_TYPE_PATTERN))
    if pc.any(bad).as_py():
        row = _first(bad)
        raise InvalidEventTypeError(
            f"The event type {event_type[row].as_py()!r} at row {row} is not a name.",
            hint="use past-tense names such as 'MoneyDeposited'.",
            row=row,
        )
    if "event_id" in table.column_names:
        event_id = pc.utf8_lower(_string(table, "event_id"))
        bad = pc.invert(valid_uuid_mask(event_id))
        if pc.any(bad).as_py():
            row = _first(bad)
            raise InvalidEventDataError(
                f"The event id {event_id[row].as_py()!r} at row {row} is not a UUID.",
                hint="use canonical UUID strings, or leave the event_id column out to get fresh ones.",
                row=row,
            )
    else:
        event_id = uuid4_array(os.urandom(16 * n))
    data = _string(table, "data")
    metadata = _string(table, "metadata")
    if validate_json:
        # Arrow's JSON parser releases the GIL: check both columns at once, while Python
        # checks what Arrow's parser lets through.
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="esa-json") as pool:
            for done in [
                pool.submit(_check_json, data, "data"),
                pool.submit(_check_json, metadata, "metadata"),
                pool.submit(_check_json_agrees, data, "data", metadata, "metadata"),
            ]:
                done.result()
    if "schema_version" in table.column_names:
        schema_version = _schema_versions(table["schema_version"].combine_chunks())
    else:
        schema_version = pa.array(np.ones(n, dtype=np.int32))
    occurred = _timestamps(table, "occurred_at")
    recorded = _timestamps(table, "recorded_at")
    if recorded is not None and recorded.null_count:
        raise InvalidTimestampError(
            f"The ingest column 'recorded_at' is null at row {_first(recorded.is_null())}.",
            hint="give every row its source commit time, or leave the column out.",
        )
    nulls = pa.nulls(n, TIMESTAMP)
    return pa.table(
        {
            "stream_id": stream_id,
            "category": category,
            "event_id": event_id,
            "event_type": event_type,
            "schema_version": schema_version,
            "occurred_at": nulls if occurred is None else occurred,
            "recorded_at": nulls if recorded is None else recorded,
            "data": data,
            "metadata": metadata,
        }
    )


def _cumcount(codes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """For each row, how many earlier rows share its code (0, 1, 2, ... in row order)."""
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    starts = np.r_[0, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes)) - run_start
    return rank


def _noted(
    metadata: pa.Array, rows: np.ndarray[Any, Any], source_us: np.ndarray[Any, Any]
) -> pa.Array:
    """``metadata`` with ``source_recorded_at`` (ISO 8601, UTC) added to the given rows."""
    from esanalytics.events import from_epoch_us

    values = metadata.to_pylist()
    for row in rows.tolist():
        text = values[row].rstrip()
        if '"source_recorded_at"' in text:  # re-imported: the first source's time stands
            continue
        stamp = from_epoch_us(int(source_us[row])).isoformat().replace("+00:00", "Z")
        inner = text[:-1].rstrip()
        comma = "" if inner.endswith("{") else ","
        values[row] = f'{inner}{comma}"source_recorded_at":"{stamp}"}}'
    return pa.array(values, pa.string())


def place(
    batch: pa.Table,
    heads: dict[str, int],
    head: int,
    last_recorded_us: int,
    now_us: int,
    *,
    clamp: bool = False,
) -> pa.Table:
    """Positions, versions and commit times for a validated batch: an EVENT_SCHEMA table
    whose ``prev_hash`` and ``hash`` are still to be filled.

    Recorded times must never decrease along the log. An ingest refuses a batch whose times
    go back; an import (``clamp``) keeps the source's order and raises each time that goes
    back to the newest before it (and one in the future to now), noting the source's own
    time in the event's metadata as ``source_recorded_at``."""
    n = batch.num_rows
    encoded = pc.dictionary_encode(batch["stream_id"]).combine_chunks()
    codes = encoded.indices.to_numpy()
    base = np.array([heads.get(s, 0) for s in encoded.dictionary.to_pylist()], dtype=np.int64)
    versions = base[codes] + _cumcount(codes) + 1
    recorded = batch["recorded_at"]
    if recorded.null_count == n:
        recorded_us = np.full(n, max(now_us, last_recorded_us), dtype=np.int64)
    elif clamp:
        source_us = recorded.cast(pa.int64()).to_numpy()
        ceiling = max(now_us, last_recorded_us)
        recorded_us = np.minimum(
            np.maximum.accumulate(np.maximum(source_us, last_recorded_us)), ceiling
        )
        moved = np.flatnonzero(recorded_us != source_us)
        if len(moved):
            batch = batch.set_column(
                batch.column_names.index("metadata"),
                "metadata",
                _noted(batch["metadata"].combine_chunks(), moved, source_us),
            )
    else:
        recorded_us = recorded.cast(pa.int64()).to_numpy()
        if n > 1 and (np.diff(recorded_us) < 0).any():
            row = int(np.flatnonzero(np.diff(recorded_us) < 0)[0]) + 1
            raise InvalidTimestampError(
                f"recorded_at decreases at row {row}.",
                hint="sort the ingest table by the source's commit order (recorded times never decrease along the log).",
                row=row,
            )
        if recorded_us[0] < last_recorded_us:
            raise InvalidTimestampError(
                "recorded_at of the first row is earlier than the log's last commit.",
                hint="import older history into a new lake, or leave recorded_at out to stamp rows now.",
            )
        if recorded_us[-1] > now_us + 1_000_000:
            raise InvalidTimestampError(
                "recorded_at lies in the future.",
                hint="recorded_at is when the source committed the event; check the source's clock or zone.",
            )
    recorded_col = pa.array(recorded_us, pa.int64()).cast(TIMESTAMP)
    occurred = batch["occurred_at"].combine_chunks()
    occurred_col = (
        pc.if_else(occurred.is_null(), recorded_col, occurred) if occurred.null_count else occurred
    )
    strings = pa.nulls(n, pa.string())
    return pa.table(
        [
            pa.array(np.arange(head + 1, head + n + 1, dtype=np.int64)),
            batch["stream_id"],
            batch["category"],
            pa.array(versions),
            batch["event_id"],
            batch["event_type"],
            batch["schema_version"],
            occurred_col,
            recorded_col,
            batch["data"],
            batch["metadata"],
            strings,
            strings,
        ],
        names=EVENT_SCHEMA.names,
    )
