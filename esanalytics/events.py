"""The event record (DESIGN.md §1): schema, validation, time parsing and the hash chain.

The canonical encoding that the hash chain covers is fixed here and documented once:

    canonical(row) = UTF-8 of the fields below, as text, joined by the unit separator U+001F:
        global_position, stream_id, category, version, event_id, event_type, schema_version,
        occurred_at, recorded_at, data, metadata
    integers are written in decimal; the two timestamps as integer microseconds since the Unix
    epoch (UTC); data and metadata are the stored JSON text, byte for byte.

    hash(row) = hex SHA-256 of ( bytes.fromhex(prev_hash) + canonical(row) )
    prev_hash = the hash of the row at global_position - 1, or 64 zeros for position 1.

None of the text fields can hold U+001F: stream ids and event types refuse control
characters, event ids are UUIDs, and JSON text escapes control characters inside strings.

Every value is checked against the column it lands in before anything is written: ints fit
their Arrow type, times fit a Python ``datetime`` (years 1 to 9999 in UTC), text is Unicode
without lone surrogates, a category fits a folder name, and JSON is what Python and DuckDB read
alike (no NaN or infinity, no key twice in one object, at most ``MAX_JSON_DEPTH`` levels).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from esanalytics._typing import JSONObject, TimeLike
from esanalytics.exceptions import (
    InvalidEventDataError,
    InvalidEventTypeError,
    InvalidStreamIdError,
    InvalidTimestampError,
    ValidationError,
)

__all__ = [
    "EVENT_SCHEMA",
    "FILE_SCHEMA",
    "GENESIS_HASH",
    "NewEvent",
    "RecordedEvent",
    "canonical_row",
    "category_of",
    "chain_hashes",
    "hashes_match",
    "row_hash",
    "rows_match",
    "to_utc",
    "uuid4_array",
]

TIMESTAMP: Final = pa.timestamp("us", tz="UTC")

#: The event record as users see it (DESIGN.md §1), in this order.
EVENT_SCHEMA: Final = pa.schema(
    [
        pa.field("global_position", pa.int64(), nullable=False),
        pa.field("stream_id", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("occurred_at", TIMESTAMP, nullable=False),
        pa.field("recorded_at", TIMESTAMP, nullable=False),
        pa.field("data", pa.string(), nullable=False),
        pa.field("metadata", pa.string(), nullable=False),
        pa.field("prev_hash", pa.string(), nullable=False),
        pa.field("hash", pa.string(), nullable=False),
    ]
)

#: What a Parquet file of the lake holds: the record less ``category``, which lives in the
#: hive path (``category=...``) so that plain Parquet readers get it from there.
FILE_SCHEMA: Final = pa.schema([f for f in EVENT_SCHEMA if f.name != "category"])

GENESIS_HASH: Final = "0" * 64
MAX_STREAM_ID_LENGTH: Final = 256
#: schema_version is an int32 column.
MAX_SCHEMA_VERSION: Final = 2**31 - 1
#: JSON nesting allowed in data and metadata (serde_json's default; Python's own parser gives
#: up near 1,000 levels, fewer when called deep in a stack).
MAX_JSON_DEPTH: Final = 128
#: A file name's limit on common file systems (ext4, XFS, APFS, NTFS), in bytes.
MAX_NAME_BYTES: Final = 255
_UNIT_SEPARATOR: Final = "\x1f"
# Python patterns are used with fullmatch (``$`` would also match before a final newline);
# the ``*_PATTERN`` twins are for Arrow's RE2, where ``$`` is the end of the text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1
_CONTROL_PATTERN: Final = r"[\x{00}-\x{1f}\x{7f}-\x{9f}]"
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_EVENT_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:]{0,127}")
_EVENT_TYPE_PATTERN: Final = f"^{_EVENT_TYPE.pattern}$"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_UUID_PATTERN: Final = f"^{_UUID.pattern}$"


# ---------------------------------------------------------------------------------------------
# Time


def to_utc(value: TimeLike, *, what: str = "timestamp") -> datetime:
    """Return ``value`` as an aware UTC ``datetime`` with microsecond precision.

    Accepts an aware ``datetime``, a ``date`` (midnight UTC) or an ISO 8601 string with an
    offset or ``Z`` (a bare date string also means midnight UTC). A time without a zone is
    refused, because guessing it silently shifts answers by hours.

    >>> to_utc("2024-03-01T10:00:00+01:00")
    datetime.datetime(2024, 3, 1, 9, 0, tzinfo=datetime.timezone.utc)
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise InvalidTimestampError(
                f"The {what} {value.isoformat()} has no time zone.",
                hint="pass an aware datetime, e.g. datetime(2024, 3, 1, tzinfo=timezone.utc), "
                "or a string with an offset such as '2024-03-01T09:30:00Z'.",
                cli_hint=f"add a zone: {value.strftime('%Y-%m-%dT%H:%M')}Z for UTC, or an offset "
                f"such as {value.strftime('%Y-%m-%dT%H:%M')}+01:00 (a bare date means midnight UTC).",
                value=value,
            )
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise InvalidTimestampError(
                f"The {what} {value.isoformat()} is out of range: in UTC it falls before the "
                "year 1 or after 9999.",
                hint="times are kept in UTC between 0001-01-01 and 9999-12-31; check the value "
                "and its offset.",
                value=value,
            ) from None
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                return datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidTimestampError(
                f"The {what} {value!r} is not an ISO 8601 time.",
                hint="write it like '2024-03-01', '2024-03-01T09:30:00Z' or "
                "'2024-03-01T09:30:00+01:00'.",
                value=value,
            ) from None
        return to_utc(parsed, what=what)
    raise InvalidTimestampError(
        f"The {what} {value!r} is a {type(value).__name__}, not a time.",
        hint="pass a datetime with a time zone, a date, or an ISO 8601 string.",
        value=value,
    )


def to_epoch_us(value: TimeLike, *, what: str = "timestamp") -> int:
    """Microseconds since the Unix epoch of ``value`` (see :func:`to_utc`)."""
    moment = to_utc(value, what=what)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: The times a Python ``datetime`` can hold, as epoch microseconds (what readers convert to).
MIN_EPOCH_US: Final = to_epoch_us(datetime.min.replace(tzinfo=UTC))
MAX_EPOCH_US: Final = to_epoch_us(datetime.max.replace(tzinfo=UTC))


def from_epoch_us(us: int) -> datetime:
    """The aware UTC datetime of ``us`` microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=us)


# ---------------------------------------------------------------------------------------------
# Names


def validate_stream_id(stream_id: object) -> str:
    """Return ``stream_id`` if it is a valid stream id, else raise :class:`InvalidStreamIdError`."""
    if not isinstance(stream_id, str) or not stream_id:
        raise InvalidStreamIdError(
            f"The stream id {stream_id!r} is empty or not a string.",
            hint="use a non-empty string such as 'account-42'.",
            stream_id=stream_id,
        )
    if len(stream_id) > MAX_STREAM_ID_LENGTH:
        raise InvalidStreamIdError(
            f"The stream id {stream_id[:40]!r}... has {len(stream_id)} characters; at most "
            f"{MAX_STREAM_ID_LENGTH} are allowed.",
            hint="use a shorter id, e.g. a UUID or a business key.",
            stream_id=stream_id,
        )
    if _CONTROL.search(stream_id):
        raise InvalidStreamIdError(
            f"The stream id {stream_id!r} contains a control character.",
            hint="remove tabs, newlines and other control characters from the id.",
            stream_id=stream_id,
        )
    if _SURROGATE.search(stream_id):
        raise InvalidStreamIdError(
            f"The stream id {stream_id!r} contains a lone surrogate, which is not Unicode text.",
            hint=_SURROGATE_HINT,
            stream_id=stream_id,
        )
    return stream_id


_SURROGATE_HINT: Final = (
    "the text was likely decoded from bytes with errors='surrogateescape' (file names, "
    "command-line arguments) or holds half of a UTF-16 pair; decode it with its real encoding "
    "or remove the character."
)


def category_of(stream_id: str) -> str:
    """The stream's category: the part before the first ``-`` (EventStoreDB's convention).

    >>> category_of("account-42")
    'account'
    """
    return stream_id.split("-", 1)[0]


def validate_category(category: str) -> str:
    """A category names a folder (``category=...``): it must be a plain, safe name."""
    why = None
    if not isinstance(category, str) or not category or len(category) > 128:
        why = "it is empty or longer than 128 characters"
    elif _CONTROL.search(category):
        why = "it has a control character"
    elif _SURROGATE.search(category):
        why = "it has a lone surrogate, which is not Unicode text"
    elif len(f"category={category}".encode()) > MAX_NAME_BYTES:
        why = f"the folder name 'category=...' would be over {MAX_NAME_BYTES} bytes in UTF-8"
    elif (
        any(ch in category for ch in '/\\=:*?"<>|%')
        or category in {".", ".."}
        or category.startswith(".")
    ):
        why = "it has a character that is not safe in a folder name"
    if why is not None:
        raise InvalidStreamIdError(
            f"The category {category!r} cannot name a partition folder: {why}.",
            hint="categories are the part of the stream id before the first '-'; start stream "
            "ids with a plain word such as 'account-', or pass category='...' explicitly "
            "(letters, digits, '_' and '-' are safe).",
            cli_hint="the category is the part of the stream id before the first '-': start "
            "the id with a plain word, e.g. account-42 (letters, digits, '_' and '-' are safe).",
            category=category,
        )
    return category


def validate_schema_version(schema_version: object, *, event_type: object = None) -> int:
    """Return ``schema_version`` if it is an int from 1 that fits its int32 column."""
    if (
        not isinstance(schema_version, int)
        or isinstance(schema_version, bool)
        or not 1 <= schema_version <= MAX_SCHEMA_VERSION
    ):
        raise ValidationError(
            f"schema_version={schema_version!r} of a {event_type} is invalid.",
            hint=f"schema versions are ints from 1 to {MAX_SCHEMA_VERSION:,} (not bools).",
            schema_version=schema_version,
        )
    return schema_version


def validate_position(position: object, *, what: str = "position") -> int:
    """Return ``position`` as an int if it is a log position (an int from 0, not a bool)."""
    if isinstance(position, bool) or not isinstance(position, numbers.Integral) or position < 0:
        raise ValidationError(
            f"{what}={position!r} is not a log position.",
            hint="positions are ints from 0 (nothing) up to store.head (not bools).",
            cli_hint="a position is a number from 0 (nothing) up to the lake's head "
            "(`esa info LAKE` shows its events).",
        )
    return int(position)


def validate_event_type(event_type: object) -> str:
    if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
        raise InvalidEventTypeError(
            f"The event type {event_type!r} is not a name.",
            hint="use a past-tense name such as 'MoneyDeposited' (letters, digits, '_', '.', ':').",
            event_type=event_type,
        )
    return event_type


def normalize_event_id(event_id: object) -> str:
    """A canonical lower-case UUID string."""
    if isinstance(event_id, uuid.UUID):
        return str(event_id)
    if isinstance(event_id, str):
        text = event_id.lower()
        if _UUID.fullmatch(text):
            return text
        try:
            return str(uuid.UUID(event_id))
        except ValueError:
            pass
    raise InvalidEventDataError(
        f"The event id {event_id!r} is not a UUID.",
        hint="leave event_id out to get a fresh one, or pass a uuid.UUID or its string.",
        event_id=event_id,
    )


# ---------------------------------------------------------------------------------------------
# JSON


_ENCODER: Final = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def dump_json(value: JSONObject | str, *, what: str) -> str:
    """The JSON text of a payload: compact, keys sorted, as it will be stored and hashed.

    A string is taken as JSON text already; it must parse to an object and is stored as given.
    Either way it must read the same in Python and DuckDB: no NaN or infinity, no key twice in
    one object, no lone surrogate, at most :data:`MAX_JSON_DEPTH` levels deep.
    """
    if isinstance(value, str):
        try:
            parsed = _DECODER.decode(value)
        except _JSONRefused as refused:
            raise InvalidEventDataError(
                f"The event {what} {refused.problem}.", hint=refused.hint
            ) from None
        except RecursionError:
            raise _too_deep(what) from None
        except ValueError as error:
            raise InvalidEventDataError(
                f"The event {what} is not valid JSON: {error}.",
                hint=f"pass the {what} as a dict, or as JSON text of an object.",
                cli_hint=f"--{what} takes JSON text of an object, in single quotes for the "
                "shell, e.g. '{\"amount\": 5}'.",
            ) from None
        if not isinstance(parsed, dict):
            raise InvalidEventDataError(
                f"The event {what} is JSON, but a {type(parsed).__name__}, not an object.",
                hint="wrap the value in an object, e.g. {'value': ...}.",
                cli_hint=f"wrap the value in an object, e.g. --{what} '{{\"value\": ...}}'.",
            )
        if _has_surrogate(value) or (
            "\\u" in value
            and _ESCAPED_SURROGATE.search(value)
            and _has_surrogate(_ENCODER.encode(parsed))
        ):
            raise _lone_surrogate(what)
        if too_deep(value):
            raise _too_deep(what)
        return value
    if not isinstance(value, Mapping):
        raise InvalidEventDataError(
            f"The event {what} is a {type(value).__name__}, not a mapping.",
            hint=f"pass the {what} as a dict of JSON-serializable values.",
        )
    try:
        text = _ENCODER.encode(value)
    except RecursionError:
        raise _too_deep(what) from None
    except (TypeError, ValueError) as error:
        raise InvalidEventDataError(
            f"The event {what} cannot be written as JSON: {error}.",
            hint="convert values to str, int, float, bool, None, lists or dicts first "
            "(dates as ISO strings, Decimals as strings); NaN and infinity are not JSON.",
        ) from None
    if _has_surrogate(text):
        raise _lone_surrogate(what)
    if too_deep(text):
        raise _too_deep(what)
    return text


class _JSONRefused(ValueError):
    """Raised from inside the JSON parser's hooks: valid JSON that readers would disagree on."""

    def __init__(self, problem: str, hint: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                break
            seen.add(key)
        raise _JSONRefused(
            f"has the key {key!r} twice in one object",
            "Python reads the last value and DuckDB the first: keep one of them.",
        )
    return result


def _not_a_number(name: str) -> Any:
    raise _JSONRefused(
        f"holds {name}, which is not JSON",
        "JSON has no NaN or infinity (Python would read a float, DuckDB the text): store null, "
        'or the value as a string such as "NaN".',
    )


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _JSONRefused(
            f"holds the number {text[:40]}, which is not finite as a double",
            "store it as a string, or scale it into the range of a double (about 1.8e308).",
        )
    return number


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_no_duplicate_keys, parse_constant=_not_a_number, parse_float=_finite_float
)
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def too_deep(text: str) -> bool:
    """Does ``text`` (valid JSON) nest arrays and objects more than MAX_JSON_DEPTH deep?"""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        mark = token.group()
        if mark in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif mark in "]}":
            depth -= 1
    return False


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def _too_deep(what: str) -> InvalidEventDataError:
    return InvalidEventDataError(
        f"The event {what} is nested more than {MAX_JSON_DEPTH} levels deep.",
        hint="flatten it (events are facts, not documents), or store the deep part as a JSON "
        "string inside a field.",
    )


def _lone_surrogate(what: str) -> InvalidEventDataError:
    return InvalidEventDataError(
        f"The event {what} holds a lone surrogate (a half of a UTF-16 pair), which is not "
        "Unicode text and cannot be stored as UTF-8.",
        hint=_SURROGATE_HINT,
    )


# ---------------------------------------------------------------------------------------------
# Events as objects


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append.

    ``data`` and ``metadata`` are dicts (or JSON text of an object). ``occurred_at`` is the
    valid time and defaults to the commit time. ``event_id`` defaults to a fresh UUID; pass
    your own to make retries idempotent.

    >>> NewEvent("MoneyDeposited", {"amount": 10}, metadata={"actor": "alice"}).event_type
    'MoneyDeposited'
    """

    event_type: str
    data: JSONObject | str = field(default_factory=dict)
    metadata: JSONObject | str = field(default_factory=dict)
    event_id: str | uuid.UUID | None = None
    occurred_at: TimeLike | None = None
    schema_version: int = 1


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as the log holds it (DESIGN.md §1), with ``data`` and ``metadata`` parsed."""

    global_position: int
    stream_id: str
    category: str
    version: int
    event_id: str
    event_type: str
    schema_version: int
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any]
    metadata: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def from_table(cls, table: pa.Table) -> list[RecordedEvent]:
        """Typed events of an :data:`EVENT_SCHEMA` table, converted column by column."""
        columns = []
        for field_ in EVENT_SCHEMA:
            column = table.column(field_.name)
            if pa.types.is_timestamp(field_.type):
                columns.append(
                    [
                        _EPOCH + timedelta(microseconds=us)
                        for us in column.cast(pa.int64()).to_pylist()
                    ]
                )
            elif field_.name in ("data", "metadata"):
                columns.append([json.loads(text) for text in column.to_pylist()])
            else:
                columns.append(column.to_pylist())
        return [cls(*values) for values in zip(*columns, strict=True)]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RecordedEvent:
        return cls(
            global_position=row["global_position"],
            stream_id=row["stream_id"],
            category=row["category"],
            version=row["version"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            schema_version=row["schema_version"],
            occurred_at=row["occurred_at"],
            recorded_at=row["recorded_at"],
            data=json.loads(row["data"]),
            metadata=json.loads(row["metadata"]),
            prev_hash=row["prev_hash"],
            hash=row["hash"],
        )


# ---------------------------------------------------------------------------------------------
# The hash chain


def canonical_row(
    global_position: int,
    stream_id: str,
    category: str,
    version: int,
    event_id: str,
    event_type: str,
    schema_version: int,
    occurred_at_us: int,
    recorded_at_us: int,
    data: str,
    metadata: str,
) -> bytes:
    """The canonical encoding of one row (see the module docstring)."""
    return _UNIT_SEPARATOR.join(
        (
            str(global_position),
            stream_id,
            category,
            str(version),
            event_id,
            event_type,
            str(schema_version),
            str(occurred_at_us),
            str(recorded_at_us),
            data,
            metadata,
        )
    ).encode()


def row_hash(prev_hash: str, canonical: bytes) -> str:
    """``hash`` of a row from its predecessor's hash and its canonical encoding."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()


def rows_match(rows: Iterable[Sequence[Any]]) -> list[bool]:
    """For each row (a tuple in :data:`EVENT_SCHEMA` order, times as epoch µs, as the commit
    log holds them): does its ``hash`` match its ``prev_hash`` and content? Row by row in
    Python: for the few rows of a commit line this beats building Arrow columns."""
    matches = []
    for row in rows:
        try:
            matches.append(row_hash(row[11], canonical_row(*row[:11])) == row[12])
        except (TypeError, ValueError, IndexError):  # not even the shape of an event
            matches.append(False)
    return matches


def canonical_rows(table: pa.Table) -> pa.Array:
    """The canonical encodings of every row of ``table`` (an :data:`EVENT_SCHEMA` table),
    computed column-wise by Arrow, as one binary array."""
    as_text = []
    for name in (
        "global_position",
        "stream_id",
        "category",
        "version",
        "event_id",
        "event_type",
        "schema_version",
        "occurred_at",
        "recorded_at",
        "data",
        "metadata",
    ):
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        if not pa.types.is_string(column.type):
            column = column.cast(pa.string())
        as_text.append(column)
    joined = pc.binary_join_element_wise(*as_text, _UNIT_SEPARATOR)
    if isinstance(joined, pa.ChunkedArray):
        joined = joined.combine_chunks()
    return joined.cast(pa.large_binary())


def chain_hashes(canonical: pa.Array, prev_hash: str) -> tuple[pa.Array, pa.Array]:
    """``(prev_hash, hash)`` columns for rows with these canonical encodings, continuing the
    chain from ``prev_hash``. The chain is sequential by nature; this is one tight loop over
    one buffer, with the hex encoding done by numpy."""
    n = len(canonical)
    if n == 0:
        empty = pa.array([], pa.string())
        return empty, empty
    buffers = canonical.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64, count=n + 1, offset=canonical.offset * 8)
    data = memoryview(buffers[2])
    bounds = offsets.tolist()
    sha = hashlib.sha256
    current = bytes.fromhex(prev_hash)
    digests: list[bytes] = []
    append = digests.append
    start = bounds[0]
    for end in bounds[1:]:
        current = sha(current + data[start:end]).digest()
        append(current)
        start = end
    text = (prev_hash + b"".join(digests).hex()).encode()
    width_offsets = np.arange(0, (n + 2) * 64, 64, dtype=np.int32)
    all_hashes = pa.Array.from_buffers(
        pa.string(), n + 1, [None, pa.py_buffer(width_offsets), pa.py_buffer(text)]
    )
    return all_hashes.slice(0, n), all_hashes.slice(1, n)


def hashes_match(
    table: pa.Table, prev_raw: Any = None, hash_raw: Any = None
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """For each row of ``table`` (an :data:`EVENT_SCHEMA` table): does its ``hash`` equal
    SHA-256 of its own ``prev_hash`` and canonical encoding? One tight loop of SHA-256 calls;
    decoding and comparing are done by numpy. ``prev_raw``/``hash_raw`` are the two columns
    already decoded by :func:`hex_digests`, when the caller has them. A table of more than
    :data:`HASH_SLICE_ROWS` rows is hashed slice by slice: the canonical encodings of a whole
    large file (2M events of 1 KB) would not fit one Arrow array's 2 GB."""
    if table.num_rows > HASH_SLICE_ROWS:
        prev_raw = hex_digests(table["prev_hash"]) if prev_raw is None else prev_raw
        hash_raw = hex_digests(table["hash"]) if hash_raw is None else hash_raw
        step = HASH_SLICE_ROWS
        return np.concatenate(
            [
                hashes_match(
                    table.slice(lo, step), prev_raw[lo : lo + step], hash_raw[lo : lo + step]
                )
                for lo in range(0, table.num_rows, step)
            ]
        )
    canonical = canonical_rows(table)
    n = len(canonical)
    if n == 0:
        return np.zeros(0, dtype=bool)
    buffers = canonical.buffers()
    bounds = np.frombuffer(
        buffers[1], dtype=np.int64, count=n + 1, offset=canonical.offset * 8
    ).tolist()
    data = memoryview(buffers[2])
    prev = (hex_digests(table["prev_hash"]) if prev_raw is None else prev_raw).tobytes()
    sha = hashlib.sha256
    digests: list[bytes] = []
    append = digests.append
    start = bounds[0]
    for i, end in enumerate(bounds[1:]):
        append(sha(prev[32 * i : 32 * i + 32] + data[start:end]).digest())
        start = end
    computed = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(n, 32)
    stored = hex_digests(table["hash"]) if hash_raw is None else hash_raw
    matches: np.ndarray[Any, np.dtype[np.bool_]] = np.all(computed == stored, axis=1)
    return matches


#: The most rows :func:`hashes_match` encodes at once (about 0.5 GB of canonical text).
HASH_SLICE_ROWS = 500_000

_HEX_VALUE: Final = np.zeros(256, dtype=np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)
_HEX_VALUE[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_HEX_LOWER: Final = np.zeros(256, dtype=bool)
_HEX_LOWER[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = True
_UUID_HEX_COLUMNS: Final = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def hex_digests(column: pa.Array | pa.ChunkedArray) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Hex SHA-256 strings as an ``(n, 32)`` byte array (by numpy); a value that is not 64 hex
    digits decodes to zeros, so it can never match a real digest."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if n == 0:
        return np.zeros((0, 32), dtype=np.uint8)
    lengths = pc.utf8_length(column).to_numpy(zero_copy_only=False)
    valid = (lengths == 64) & ~np.asarray(
        column.is_null().to_numpy(zero_copy_only=False), dtype=bool
    )
    text = column if valid.all() else pc.if_else(pa.array(valid), column, pa.scalar("0" * 64))
    buffers = text.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32, count=n + 1, offset=text.offset * 4)
    flat = memoryview(buffers[2])[offsets[0] : offsets[-1]]
    try:  # the common case, all valid hex: one C call
        return np.frombuffer(bytes.fromhex(bytes(flat).decode("ascii")), dtype=np.uint8).reshape(
            n, 32
        )
    except ValueError:
        pass
    chars = np.frombuffer(flat, dtype=np.uint8).reshape(n, 64)
    ok = np.all(_HEX_LOWER[chars], axis=1)
    nibbles = _HEX_VALUE[chars]
    raw = ((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).astype(np.uint8)
    raw[~ok] = 0
    return raw


def uuid_keys(event_ids: pa.Array) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """64-bit keys of canonical UUID strings (the XOR of their halves), computed by numpy.

    Used to find a known event id among millions without holding millions of strings.
    """
    n = len(event_ids)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    if n <= 16:  # a few ids: Python is quicker than setting up the vectorized path
        values = [uuid.UUID(text).int for text in event_ids.to_pylist()]
        return np.array([(v >> 64) ^ (v & 0xFFFF_FFFF_FFFF_FFFF) for v in values], dtype=np.uint64)
    if isinstance(event_ids, pa.ChunkedArray):
        event_ids = event_ids.combine_chunks()
    if event_ids.type != pa.string():
        event_ids = event_ids.cast(pa.string())
    buffers = event_ids.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32, count=n + 1, offset=event_ids.offset * 4)
    chars = np.frombuffer(buffers[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    nibbles = _HEX_VALUE[chars.reshape(n, 36)[:, _UUID_HEX_COLUMNS]]
    octets = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    halves = np.ascontiguousarray(octets).view(">u8").astype(np.uint64)
    return np.asarray(halves[:, 0] ^ halves[:, 1], dtype=np.uint64)


def valid_uuid_mask(event_ids: pa.Array) -> pa.Array:
    """True where the id is a canonical lower-case UUID string."""
    return pc.match_substring_regex(event_ids, _UUID_PATTERN)


def uuid4_array(random_bytes: bytes) -> pa.Array:
    """Canonical UUID4 strings made from 16 random bytes each (by numpy, not a loop)."""
    n = len(random_bytes) // 16
    raw = np.frombuffer(random_bytes, dtype=np.uint8)[: n * 16].reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hexed = np.frombuffer(raw.tobytes().hex().encode(), dtype=np.uint8).reshape(n, 32)
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    for source, target in ((0, 0), (8, 9), (12, 14), (16, 19), (20, 24)):
        width = {0: 8, 8: 4, 12: 4, 16: 4, 20: 12}[source]
        text[:, target : target + width] = hexed[:, source : source + width]
    offsets = np.arange(0, (n + 1) * 36, 36, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text.tobytes())]
    )
