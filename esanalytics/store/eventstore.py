"""The event store over a lake folder: append, read, subscribe, inventory, compact."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from esanalytics._typing import TimeLike
from esanalytics.events import (
    EVENT_SCHEMA,
    FILE_SCHEMA,
    GENESIS_HASH,
    TIMESTAMP,
    NewEvent,
    canonical_row,
    canonical_rows,
    category_of,
    chain_hashes,
    dump_json,
    from_epoch_us,
    hashes_match,
    normalize_event_id,
    row_hash,
    rows_match,
    to_epoch_us,
    uuid_keys,
    validate_category,
    validate_event_type,
    validate_position,
    validate_schema_version,
    validate_stream_id,
)
from esanalytics.exceptions import (
    ConcurrencyError,
    CorruptLakeError,
    DuplicateEventError,
    EmptyAppendError,
    EsaError,
    ImportConflictError,
    InvalidExpectedVersionError,
    LakeChangedError,
    LakeNotFoundError,
    StreamNotFoundError,
    ValidationError,
)
from esanalytics.store import ingest as _ingest
from esanalytics.store import typed as _typed
from esanalytics.store._atomic import temporary_beside
from esanalytics.store._faults import kill_point
from esanalytics.store.commitlog import (
    CommitLine,
    CommitLog,
    FileEntry,
    TypedTwin,
    file_digest,
    replay,
)
from esanalytics.store.layout import (
    CHECKPOINT,
    COMMIT_LOG,
    COMPACT_LOCK,
    EVENTS_DIR,
    LAKE_DIR,
    LAKE_FORMAT,
    LAKE_FORMAT_VERSION,
    MARKER,
    TYPED_DIR,
    WRITER_INDEX,
    WRITER_LOCK,
    FileLock,
    fsync_dir,
    fsync_file,
    make_dirs_durably,
    partition_dir,
    retired_name,
    tmp_name,
    writing,
)
from esanalytics.store.results import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Commit,
    Events,
    ExpectedVersion,
    Inventory,
    StreamAppend,
)

__all__ = ["AppendRequest", "EventStore", "LakeSnapshot", "open_store"]

if TYPE_CHECKING:
    import pandas as pd
    from pyarrow.compute import Expression

# pyarrow.dataset and pyarrow.parquet import pandas, which takes a second: they are imported
# where files are read or written, so that `import esanalytics` stays fast.
_PARTITION_SCHEMA = pa.schema([("category", pa.string()), ("month", pa.string())])
_DATASET_SCHEMA = pa.schema(
    [*FILE_SCHEMA, pa.field("category", pa.string()), pa.field("month", pa.string())]
)
#: Rows whose positions and versions are placed and whose hashes are still to be computed.
_PLACED_SCHEMA = EVENT_SCHEMA.set(11, EVENT_SCHEMA.field(11).with_nullable(True)).set(
    12, EVENT_SCHEMA.field(12).with_nullable(True)
)
_COMPRESSION = "zstd"
#: Columns with few distinct values; ids, hashes and payloads gain nothing from a dictionary.
_DICTIONARY_COLUMNS = ["stream_id", "event_type"]
#: Rows per row group in compacted files: small enough that a one-stream read decodes little
#: beyond its own events, large enough to keep footers small (see benchmarks/store_bench.py).
COMPACT_ROW_GROUP_ROWS = 1024
#: Parts of at least this many rows get a typed twin when sealed or ingested (smaller ones
#: are short-lived: compaction rewrites them, and every compacted file gets one).
TWIN_MIN_ROWS = 10_000
#: Rows per row group in twins: whole scans are what they serve, and DuckDB parallelises a
#: scan by row group.
TWIN_ROW_GROUP_ROWS = 122_880
#: Commits at most this large carry their streams and ids inline, so that other writers can
#: update their caches without opening the files.
_INLINE_LIMIT = 1000
#: The unsealed tail is sealed into Parquet once it holds this many events, or once its oldest
#: event is this old (checked at each append; ``flush()`` seals at once).
SEAL_ROWS = 2000
#: Rows a summary of the whole lake (streams(), inventory()) reads at a time.
_PIECE_ROWS = 2_000_000
#: Decoded row groups kept per handle for one-stream reads (about 0.5 MB each).
_DECODED_CACHE_GROUPS = 128
#: Ingests at least this large (once the index is stale by a quarter), and every compaction,
#: save the writer index.
_INDEX_AFTER_ROWS = 500_000
SEAL_AGE_US = 2_000_000
#: Times a read takes a fresh view of its position when a file of its view was compacted and
#: vacuumed before it could open it, or moved while it opened it, before it gives up.
_READ_ATTEMPTS = 10


_LOG = logging.getLogger("esanalytics.store")


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One stream's part of a multi-stream append."""

    stream_id: str
    events: Sequence[NewEvent]
    expected_version: ExpectedVersion | int = ANY
    category: str | None = None


@dataclass(slots=True)
class _Prepared:
    stream_id: str
    category: str
    expected: ExpectedVersion | int
    event_ids: list[str]
    event_types: list[str]
    schema_versions: list[int]
    occurred_us: list[int | None]
    data: list[str]
    metadata: list[str]


def _check_expected(value: object) -> ExpectedVersion | int:
    if isinstance(value, ExpectedVersion):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise InvalidExpectedVersionError(
        f"expected_version={value!r} is not understood.",
        hint="pass ANY, NO_STREAM, STREAM_EXISTS (from esanalytics) or the stream's current "
        "version as an int (0 for a new stream).",
        cli_hint="--expected-version takes any, no_stream, stream_exists or the stream's "
        "current version (0 for a new stream).",
        expected_version=value,
    )


def _prepare(request: AppendRequest) -> _Prepared:
    stream_id = validate_stream_id(request.stream_id)
    category = validate_category(request.category or category_of(stream_id))
    expected = _check_expected(request.expected_version)
    events = list(request.events) if not isinstance(request.events, NewEvent) else [request.events]
    if not events:
        raise EmptyAppendError(
            f"The append to {stream_id!r} has no events.",
            hint="pass at least one NewEvent; to check a stream's version without writing, "
            "use store.stream_version(stream_id).",
            stream_id=stream_id,
        )
    prepared = _Prepared(stream_id, category, expected, [], [], [], [], [], [])
    for event in events:
        if not isinstance(event, NewEvent):
            raise ValidationError(
                f"The append to {stream_id!r} got a {type(event).__name__}, not a NewEvent.",
                hint="wrap each event as NewEvent('TypeName', {...data...}).",
            )
        prepared.event_types.append(validate_event_type(event.event_type))
        prepared.event_ids.append(
            str(uuid.uuid4()) if event.event_id is None else normalize_event_id(event.event_id)
        )
        prepared.schema_versions.append(
            validate_schema_version(event.schema_version, event_type=event.event_type)
        )
        prepared.occurred_us.append(
            None
            if event.occurred_at is None
            else to_epoch_us(event.occurred_at, what="occurred_at")
        )
        prepared.data.append(dump_json(event.data, what="data"))
        prepared.metadata.append(dump_json(event.metadata, what="metadata"))
    return prepared


class _WriterState:
    """What a writer must know to check and place an append; loaded lazily, kept current."""

    def __init__(self) -> None:
        self.heads: dict[str, int] | None = None
        self.id_runs: list[np.ndarray[Any, np.dtype[np.uint64]]] = []
        self.recent_ids: set[int] = set()
        self.ids_loaded = False

    def knows(
        self, keys: np.ndarray[Any, np.dtype[np.uint64]]
    ) -> np.ndarray[Any, np.dtype[np.bool_]]:
        hit = np.zeros(len(keys), dtype=bool)
        for run in self.id_runs:
            found = np.searchsorted(run, keys)
            found[found >= len(run)] = 0
            hit |= run[found] == keys if len(run) else False
        if self.recent_ids:
            hit |= np.fromiter((int(k) in self.recent_ids for k in keys), bool, len(keys))
        return hit

    def remember(self, keys: np.ndarray[Any, np.dtype[np.uint64]]) -> None:
        if len(keys) > 256:
            self.id_runs.append(np.sort(keys))
            if len(self.id_runs) > 16:
                self.id_runs = [np.sort(np.concatenate(self.id_runs))]
        else:
            self.recent_ids.update(int(k) for k in keys)
            if len(self.recent_ids) > 100_000:
                self.id_runs.append(np.sort(np.fromiter(self.recent_ids, np.uint64)))
                self.recent_ids = set()


class EventStore:
    """An event store whose log is hive-partitioned Parquet in a lake folder.

    Open one with :func:`esanalytics.open`. Appends are atomic and durable, checked against
    expected versions, and serialized between threads and processes; reads are pinned to one
    committed log position, so they never see part of an append.

    >>> import tempfile, esanalytics as esa
    >>> store = esa.open(tempfile.mkdtemp() + "/lake", create=True)
    >>> store.append("account-1", [esa.NewEvent("AccountOpened", {"owner": "Ada"})]).version
    1
    """

    def _repr_html_(self) -> str:
        """The lake at a glance in a notebook: counts, time range, categories."""
        return self.inventory()._repr_html_()

    def __init__(self, root: Path) -> None:
        self.path = root
        self._meta = root / LAKE_DIR
        self._events = root / EVENTS_DIR
        self._typed = root / TYPED_DIR
        self._log = CommitLog(self._meta / COMMIT_LOG)
        self._writer_lock = FileLock(self._meta / WRITER_LOCK)
        self._state_lock = threading.RLock()
        self._files: dict[str, FileEntry] = {}
        self._offset = 0
        self._commit_number = 0
        self._head = 0
        self._last_hash = GENESIS_HASH
        self._last_recorded_us = 0
        self._writer = _WriterState()
        self._saved_ids = 0  # ids in the writer index this handle saved last
        self._unsaved_ids = 0  # ids this handle ingested since
        self._recovered = False
        self._finished = 0  # commit-log offset up to which _finish has run
        self._wrote = False  # this handle has committed an append (close() then seals)
        self._tail_checked = 0  # unsealed rows up to this position were rehashed by a writer
        self._unnamed_checked = False  # a writer found no event file that no commit names
        # Rows of small appends that are durable in the commit log but not yet sealed into
        # Parquet, in position order (tuples in EVENT_SCHEMA order, times as epoch µs).
        self._tail: list[tuple[Any, ...]] = []
        self._footers: dict[str, tuple[Any, list[tuple[str, str]]]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._decoded: OrderedDict[tuple[str, int], pa.Table] = OrderedDict()
        # Import cursors by source name, read from the whole log when first asked for and
        # kept current by _apply (None: not read yet).
        self._cursors: dict[str, dict[str, Any]] | None = None
        self._load_checkpoint()
        self.refresh()
        self._check_unlogged()

    def _load_checkpoint(self) -> None:
        """Take the saved state, after checking it against the commit log: the log must
        still hold the line it was taken at (with the digest it recorded), the head, the
        commit number and the unsealed rows are read from the log's last lines, and the
        saved files must hold every other event. A log cut short, emptied or replaced, or a
        saved state that disagrees with it, is refused: readers never serve either."""
        path = self._meta / CHECKPOINT
        if not path.exists():
            return
        try:
            state = json.loads(path.read_text())
            files = {raw["path"]: FileEntry.from_json(raw) for raw in state["files"]}
            offset = int(state["offset"])
            saved = (state["n"], state["head"], state["last_hash"], state["recorded_at"])
            saved_tail = [list(row) for row in state["tail"]]
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            raise self._disagrees("cannot be read") from None
        lines = self._log.lines_before(offset)
        if lines and state.get("log_digest", lines[-1].digest) != lines[-1].digest:  # old: none
            raise self._log_replaced(offset)
        log = replay([line.record for line in lines])
        if (log.n, log.head, log.last_hash, log.recorded_at) != saved:
            raise self._disagrees(f"says commit {saved[0]} at position {saved[1]}, the log "
                                  f"commit {log.n} at position {log.head}")  # fmt: skip
        if log.tail != saved_tail:
            raise self._disagrees("holds unsealed events that differ from the commit log's")
        if sum(entry.rows for entry in files.values()) + len(log.tail) != log.head:
            raise self._disagrees(f"lists files that do not hold the log's {log.head:,} events")
        self._files = files
        self._offset = self._finished = offset
        self._commit_number = log.n
        self._head = log.head
        self._last_hash = log.last_hash
        self._last_recorded_us = log.recorded_at
        self._tail = [tuple(row) for row in log.tail]

    def _disagrees(self, what: str) -> CorruptLakeError:
        path = self._meta / CHECKPOINT
        return CorruptLakeError(
            f"The lake's saved state {path} {what}: it disagrees with the commit log.",
            hint=f"run `esa verify {self.path}` to see what differs. If the commit log is "
            f"intact, delete {path}: it is only a cache, rebuilt from the log on the next "
            "write. Nothing was read or written.",
            path=str(path),
            finding="saved_state",
        )

    def _log_replaced(self, offset: int) -> CorruptLakeError:
        return CorruptLakeError(
            f"The commit log {self._log.path} was rewritten before byte {offset:,}: its line "
            "there is not the one the lake's saved state (_esa/checkpoint.json) was taken at.",
            hint="the commit log was edited, cut short or replaced (by hand, by a restore, or "
            "by a query that wrote to it). Restore _esa/commits.log from a backup; "
            "`esa verify` names what is affected. Nothing was written.",
            path=str(self._log.path),
        )

    def _check_unlogged(self) -> None:
        """A log with no commits beside committed-looking files: the log was emptied or
        replaced, and a writer must not start a new log over the old events."""
        if self._head or self._files or self._tail:
            return
        found = next(self._events.rglob("*.parquet"), None)
        if found is not None:
            raise CorruptLakeError(
                f"The commit log {self._log.path} holds no commits, but {self._events} holds "
                f"event files ({found.name} and maybe more): the log was emptied or replaced.",
                hint="restore _esa/commits.log from a backup (`esa verify` names what is "
                "affected). A new lake needs a new folder. Nothing was written.",
                path=str(self._log.path),
            )

    def _write_checkpoint(self) -> None:
        """Save the state as of the last commit, so that opening the lake reads only the
        commit log after it. Under the writer lock, after _recover. Not while a commit's
        files wait to be published: the next handle would not publish them."""
        if self._finished != self._offset:
            return
        state = {
            "n": self._commit_number,
            "offset": self._offset,
            "head": self._head,
            "last_hash": self._last_hash,
            "recorded_at": self._last_recorded_us,
            "files": [entry.to_json() for entry in self._files.values()],
            "tail": self._tail,
            "log_digest": self._log.digest_at(self._offset),
        }
        tmp = self._meta / f".{CHECKPOINT}.tmp"
        try:
            tmp.write_text(json.dumps(state, separators=(",", ":")))
            fsync_file(tmp)
            os.replace(tmp, self._meta / CHECKPOINT)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def __repr__(self) -> str:
        return f"<EventStore {self.path} at position {self._head}>"

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Seal the unsealed tail if this handle appended (so plain Parquet readers see
        everything) and stop the read threads. A seal that fails here (a full disk, a
        read-only lake) is left for a later writer: the events are already durable. The
        handle can still be used afterwards; ``with esa.open(...)`` calls this on exit."""
        if self._tail and self._wrote:
            self._deferred("sealing on close", self.flush)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- state ---------------------------------------------------------------------------

    def refresh(self) -> int:
        """Take in commits made since the last look (by any process); return the head."""
        with self._state_lock:
            size = self._log.size()
            if size < self._offset:
                raise self._log_replaced(self._offset)
            if size != self._offset:
                records, self._offset, _ = self._log.read_from(self._offset)
                for record in records:
                    self._apply(record, foreign=True)
            return self._head

    def _apply(self, record: dict[str, Any], *, foreign: bool) -> None:
        for path in record.get("remove", ()):
            self._files.pop(path, None)
        added = [FileEntry.from_json(raw) for raw in record.get("add", ())]
        for entry in added:
            self._files[entry.path] = entry
        self._commit_number = record["n"]
        if self._cursors is not None and "cursor" in record:
            self._cursors[record["cursor"]["name"]] = record["cursor"]
        if record["kind"] == "seal":
            upto = record["upto"]
            self._tail = [row for row in self._tail if row[0] > upto]
        if "rows" in record:
            self._tail.extend(tuple(row) for row in record["rows"])
        if record["kind"] == "append":
            self._head = record["last"]
            self._last_hash = record["last_hash"]
            self._last_recorded_us = record["recorded_at"]
            if foreign:
                self._absorb(record, added)

    def _absorb(self, record: dict[str, Any], added: list[FileEntry]) -> None:
        """Keep a writer's caches current with a commit another handle or process made."""
        writer = self._writer
        if writer.heads is None and not writer.ids_loaded:
            return
        if "rows" in record:
            if writer.heads is not None:
                for row in record["rows"]:
                    writer.heads[row[1]] = row[3]
            if writer.ids_loaded:
                writer.remember(
                    uuid_keys(pa.array([row[4] for row in record["rows"]], pa.string()))
                )
            return
        try:
            table = self._scan(added, None, columns=["stream_id", "version", "event_id"])
        except LakeChangedError:  # compacted and vacuumed since: reload the caches when needed
            self._writer = _WriterState()
            return
        if writer.heads is not None:
            grouped = table.group_by("stream_id").aggregate([("version", "max")])
            writer.heads.update(
                zip(
                    grouped["stream_id"].to_pylist(),
                    grouped["version_max"].to_pylist(),
                    strict=True,
                )
            )
        if writer.ids_loaded:
            writer.remember(uuid_keys(table["event_id"]))

    @property
    def head(self) -> int:
        """The global position of the last committed event (0 for an empty lake)."""
        return self.refresh()

    def files(self) -> list[FileEntry]:
        """The committed files, as of now."""
        with self._state_lock:
            self.refresh()
            return list(self._files.values())

    def commit_lines(self) -> list[CommitLine]:
        """Every complete line of the commit log, with the digest of its body and the link
        it carries (what ``verify`` and signed checkpoints build on)."""
        lines, _, _ = self._log.lines(0)
        return lines

    # -- paths ---------------------------------------------------------------------------

    def _resolve(self, relpath: str, *, root: Path | None = None) -> str:
        """Where a committed file (below ``root``: ``events/``, or ``typed/`` for a twin) is
        now. A file only moves forward (temporary name, final
        name, retired name, then deleted by vacuum), so looking in that order finds it even
        while a writer renames it between two looks. A file under no name was either
        replaced by a compaction and vacuumed after the reader pinned its view
        (LakeChangedError: the reader takes a fresh view) or lost (CorruptLakeError); a
        re-read of the commit log tells which."""
        root = root or self._events
        final = root / relpath
        if final.exists():  # the common case: one look
            return str(final)
        for candidate in (tmp_name(relpath), relpath, retired_name(relpath)):
            full = root / candidate
            if full.exists():
                return str(full)
        if any(relpath in record.get("remove", ()) for record in self._all_records()):
            raise LakeChangedError(
                f"The file {final} was compacted and then deleted by vacuum while a read that "
                "needed it was in progress.",
                hint="read again; to keep files for long readers, vacuum with a longer "
                "older_than (the default keeps them an hour).",
                path=str(final),
            )
        raise CorruptLakeError(
            f"The committed file {final} is missing.",
            hint="a file of the log was deleted or moved; restore it from a backup "
            "(`esa verify` lists what is affected).",
            path=str(final),
        )

    def twin_path(self, entry: FileEntry) -> str | None:
        """Where the typed twin of a committed file is now (an absolute path), or None when
        the file has none (see :mod:`esanalytics.store.typed`). Like the file itself, a twin
        that compaction replaced is found under its retired name until ``vacuum``; one
        vacuumed since the caller's view raises LakeChangedError (take a new snapshot)."""
        if entry.typed is None:
            return None
        return self._resolve(entry.typed.path, root=self._typed)

    def _twin_or_none(self, entry: FileEntry) -> str | None:
        """:meth:`twin_path`, or None for a twin that is lost (``verify`` names it): its
        events file still holds the events, so reads go on from the JSON."""
        try:
            return self.twin_path(entry)
        except CorruptLakeError:
            _LOG.warning("the typed twin of %s in %s is missing", entry.path, self.path)
            return None

    def _diagnose(self, entries: Iterable[FileEntry]) -> CorruptLakeError | None:
        """The damaged file among ``entries`` after a read failed, or None when each is whole
        (the read met a file that a writer was moving: read again)."""
        import pyarrow.parquet as pq

        for entry in entries:
            try:
                path = self._resolve(entry.path)
            except LakeChangedError:
                continue
            try:
                rows = pq.ParquetFile(path).metadata.num_rows
            except FileNotFoundError:
                continue  # moved on since we looked
            except Exception as problem:
                return CorruptLakeError(
                    f"The Parquet file {path} is unreadable: {problem}.",
                    hint="the file is truncated or corrupted; restore it from a backup. "
                    "No rows were read from it.",
                    path=path,
                )
            if rows != entry.rows:
                return CorruptLakeError(
                    f"The Parquet file {path} holds {rows} rows; the commit log says {entry.rows}.",
                    hint="the file was replaced or altered; restore it from a backup.",
                    path=path,
                )
        return None

    def _unreadable(self, error: Exception) -> CorruptLakeError:
        return CorruptLakeError(
            f"Reading the lake failed: {error}.",
            hint="run `esa verify` to locate the damage.",
            path=str(self.path),
        )

    # -- reading -------------------------------------------------------------------------

    def _scan(
        self,
        entries: Sequence[FileEntry],
        predicate: Expression | None,
        *,
        columns: list[str] | None = None,
        tail: Sequence[tuple[Any, ...]] = (),
    ) -> pa.Table:
        """Rows of these files, and of these unsealed tail rows, that match ``predicate``, as
        an EVENT_SCHEMA table (or the given columns). Files moved by a concurrent compaction
        are found where they went."""
        names = columns or EVENT_SCHEMA.names
        parts = []
        if tail:
            rows = _rows_table(tail)
            if predicate is not None:
                rows = rows.filter(predicate)
            parts.append(rows.select(names))
        if entries:
            parts.append(self._scan_files(entries, predicate, names))
        if not parts:
            return pa.schema([EVENT_SCHEMA.field(c) for c in names]).empty_table()
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    def _scan_files(
        self, entries: Sequence[FileEntry], predicate: Expression | None, names: list[str]
    ) -> pa.Table:
        """Rows of these files. A file a writer moved while it was opened is looked up again;
        one that was compacted and vacuumed raises LakeChangedError (take a fresh view)."""
        for attempt in range(_READ_ATTEMPTS):
            try:
                paths = [self._resolve(entry.path) for entry in entries]
                import pyarrow.dataset as ds

                dataset = ds.dataset(
                    paths,
                    schema=_DATASET_SCHEMA,
                    format="parquet",
                    partitioning=ds.partitioning(_PARTITION_SCHEMA, flavor="hive"),
                    partition_base_dir=str(self._events),
                )
                table = dataset.to_table(filter=predicate, columns=names, use_threads=True)
                return table.cast(pa.schema([EVENT_SCHEMA.field(c) for c in names]))
            except EsaError:
                raise
            except (pa.ArrowException, OSError) as error:
                damaged = self._diagnose(entries)
                if damaged is not None:
                    raise damaged from error
                if attempt == _READ_ATTEMPTS - 1:
                    raise self._unreadable(error) from error
        raise AssertionError("unreachable")

    def _pin(
        self,
        position: int | None,
        as_of: TimeLike | None,
        *,
        from_position: int = 0,
        categories: Iterable[str] | None = None,
        stream_id: str | None = None,
    ) -> _View:
        """The files and tail rows that can hold events of a read, taken together (so that a
        concurrent seal or compaction cannot make a row appear twice or not at all)."""
        position = None if position is None else validate_position(position)
        from_position = validate_position(from_position, what="from_position")
        as_of_us = None if as_of is None else to_epoch_us(as_of, what="as_of")
        wanted = None if categories is None else set(categories)
        with self._state_lock:
            head = self.refresh()
            pinned = head if position is None else min(position, head)
            entries = [
                entry
                for entry in self._files.values()
                if entry.min_position <= pinned
                and entry.max_position > from_position
                and (as_of_us is None or entry.min_recorded_us <= as_of_us)
                and (wanted is None or entry.category in wanted)
                and (stream_id is None or entry.min_stream <= stream_id <= entry.max_stream)
            ]
            tail = [
                row
                for row in self._tail
                if from_position < row[0] <= pinned
                and (stream_id is None or row[1] == stream_id)
                and (wanted is None or row[2] in wanted)
            ]
        predicate = pc.field("global_position") <= pinned
        if from_position:
            predicate &= pc.field("global_position") > from_position
        if as_of_us is not None:
            predicate &= pc.field("recorded_at") <= pa.scalar(as_of_us, TIMESTAMP)

        def again() -> _View:  # the same position, from the files the log names now
            return self._pin(
                pinned, as_of, from_position=from_position, categories=wanted, stream_id=stream_id
            )

        return _View(pinned, entries, tail, predicate, again)

    def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        to_version: int | None = None,
        position: int | None = None,
        as_of: TimeLike | None = None,
        category: str | None = None,
    ) -> Events:
        """The events of one stream, by version, as the log held them at ``position`` or at
        system time ``as_of`` (default: now). ``from_version``/``to_version`` are inclusive.

        An unknown stream gives an empty result; use :meth:`stream_version` to tell.
        """
        validate_stream_id(stream_id)
        view = self._pin(
            position, as_of, categories=[category or category_of(stream_id)], stream_id=stream_id
        )
        as_of_us = None if as_of is None else to_epoch_us(as_of, what="as_of")
        low, high = from_version or 1, to_version if to_version is not None else 2**62
        cut = _StreamCut(stream_id, view.position, as_of_us, low, high)
        for attempt in range(_READ_ATTEMPTS):
            tail = [
                row
                for row in view.tail
                if low <= row[3] <= high and (as_of_us is None or row[8] <= as_of_us)
            ]
            parts = [_rows_table(tail)] if tail else []
            try:
                if len(view.entries) > 2:  # decoding releases the GIL: use every core
                    parts += list(
                        self._readers().map(cut.read_from, view.entries, [self] * len(view.entries))
                    )
                else:
                    parts += [cut.read_from(entry, self) for entry in view.entries]
                break
            except LakeChangedError:
                if attempt == _READ_ATTEMPTS - 1:
                    raise
            except EsaError:
                raise
            except (pa.ArrowException, OSError) as error:  # a file moved while it was opened?
                damaged = self._diagnose(view.entries)
                if damaged is not None:
                    raise damaged from error
                if attempt == _READ_ATTEMPTS - 1:
                    raise self._unreadable(error) from error
            view = view.again()
        table = pa.concat_tables(parts) if parts else EVENT_SCHEMA.empty_table()
        return Events(table.sort_by("version") if len(parts) > 1 else table, view.position)

    def _readers(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="esa-read")
        return self._pool

    def _row_groups(self, entry: FileEntry, metadata: Any, groups: list[int]) -> pa.Table:
        """Decoded row groups of a file, through a small LRU cache: committed files never
        change, and hot streams (a command handler's aggregates) are read again and again."""
        import pyarrow.parquet as pq

        tables = []
        missing = [g for g in groups if (entry.path, g) not in self._decoded]
        if missing:
            handle = pq.ParquetFile(self._resolve(entry.path), metadata=metadata)
            fresh = handle.read_row_groups(missing, columns=FILE_SCHEMA.names)
            offset = 0
            with self._state_lock:
                for g in missing:
                    rows = metadata.row_group(g).num_rows
                    self._decoded[(entry.path, g)] = fresh.slice(offset, rows)
                    offset += rows
        with self._state_lock:
            for g in groups:
                part = self._decoded.get((entry.path, g))
                if part is None:  # evicted by another thread meanwhile: read it again
                    return self._row_groups(entry, metadata, groups)
                self._decoded.move_to_end((entry.path, g))
                tables.append(part)
            while len(self._decoded) > _DECODED_CACHE_GROUPS:
                self._decoded.popitem(last=False)
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def _footer(self, entry: FileEntry) -> tuple[Any, list[tuple[str, str]]]:
        """A file's parsed footer and its row groups' stream-id bounds, parsed once per
        handle (files never change once committed)."""
        cached = self._footers.get(entry.path)
        if cached is None:
            import pyarrow.parquet as pq

            metadata = pq.read_metadata(self._resolve(entry.path))
            column = FILE_SCHEMA.get_field_index("stream_id")
            bounds = []
            for index in range(metadata.num_row_groups):
                stats = metadata.row_group(index).column(column).statistics
                has = stats is not None and stats.has_min_max
                bounds.append((stats.min if has else "", stats.max if has else "\U0010ffff"))
            cached = self._footers[entry.path] = (metadata, bounds)
        return cached

    def read_all(
        self,
        *,
        from_position: int = 0,
        position: int | None = None,
        as_of: TimeLike | None = None,
        categories: Iterable[str] | None = None,
        event_types: Iterable[str] | None = None,
    ) -> Events:
        """Every event after ``from_position`` up to ``position`` (or system time ``as_of``),
        optionally only some categories and event types, by global position. For large logs,
        :meth:`iter_batches` keeps memory bounded."""
        head = self.refresh()
        pinned = head if position is None else min(position, head)
        table = pa.concat_tables(
            [
                pa.Table.from_batches([b], EVENT_SCHEMA)
                for b in self.iter_batches(
                    from_position=from_position,
                    position=pinned,
                    as_of=as_of,
                    categories=categories,
                    event_types=event_types,
                )
            ]
            or [EVENT_SCHEMA.empty_table()]
        )
        return Events(table, pinned)

    def iter_batches(
        self,
        *,
        from_position: int = 0,
        position: int | None = None,
        as_of: TimeLike | None = None,
        categories: Iterable[str] | None = None,
        event_types: Iterable[str] | None = None,
        batch_size: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        """The log in global-position order as Arrow record batches, reading one time partition
        at a time, so memory stays bounded by the largest month, not the log."""
        view = self._pin(position, as_of, from_position=from_position, categories=categories)
        predicate = view.predicate
        if event_types is not None:
            predicate &= pc.field("event_type").isin(list(event_types))
        done = ""  # the months up to this one have been yielded
        attempt = 0
        while True:
            files: dict[str, list[FileEntry]] = {}
            for entry in view.entries:
                files.setdefault(entry.month, []).append(entry)
            tail: dict[str, list[tuple[Any, ...]]] = {}
            for row in view.tail:
                tail.setdefault(_month_of(row[8]), []).append(row)
            try:
                for month in sorted(m for m in files.keys() | tail.keys() if m > done):
                    table = self._scan(files.get(month, []), predicate, tail=tail.get(month, ()))
                    done, attempt = month, 0
                    yield from table.sort_by("global_position").to_batches(max_chunksize=batch_size)
                return
            except LakeChangedError:
                attempt += 1
                if attempt == _READ_ATTEMPTS:
                    raise
                view = view.again()  # the same position; the months already read stay read

    def snapshot(self, *, position: int | None = None) -> LakeSnapshot:
        """The files (absolute paths) and unsealed rows that hold the log up to ``position``
        (default: now), taken together: what a query engine needs to read one consistent
        log position. Rows beyond ``position`` must still be filtered out by the reader.
        The paths are where the files are now: a compaction renames a replaced file (to
        ``.<name>.retired``, which ``vacuum`` deletes), so a reader that finds one gone takes
        a new snapshot of the same position (the compacted files hold the same events).
        ``twins`` are the files' typed twins (see :meth:`twin_path`), found the same way
        (None for a file without one, or whose twin is lost)."""
        view = self._pin(position, None)
        for attempt in range(_READ_ATTEMPTS):
            try:
                paths = [self._resolve(entry.path) for entry in view.entries]
                twins = [self._twin_or_none(entry) for entry in view.entries]
                break
            except LakeChangedError:
                if attempt == _READ_ATTEMPTS - 1:
                    raise
                view = view.again()
        tail = _rows_table(view.tail) if view.tail else EVENT_SCHEMA.empty_table()
        return LakeSnapshot(view.position, paths, tail, list(view.entries), twins)

    def unsealed(self) -> pa.Table:
        """The committed events that live only in the commit log so far (not yet sealed into
        Parquet), as an EVENT_SCHEMA table."""
        view = self._pin(None, None)
        return _rows_table(view.tail) if view.tail else EVENT_SCHEMA.empty_table()

    def known_version(self, stream_id: str) -> int | None:
        """The stream's current version if this handle knows it without reading files (a
        handle that has appended keeps every stream's version current), else None."""
        with self._state_lock:
            self.refresh()
            heads = self._writer.heads
            return None if heads is None else heads.get(stream_id, 0)

    def stream_version(self, stream_id: str, *, position: int | None = None) -> int:
        """The stream's current version (0 when it has no events)."""
        events = self.read_stream(stream_id, position=position)
        return int(events.table["version"][-1].as_py()) if len(events) else 0

    def load(self, stream_id: str, **bounds: Any) -> list[Any]:
        """Typed events of one stream (see :meth:`read_stream` for the bounds); raises
        :class:`StreamNotFoundError` when there are none."""
        events = self.read_stream(stream_id, **bounds).to_list()
        if not events:
            raise StreamNotFoundError(
                f"The stream {stream_id!r} has no events at that bound.",
                hint="check the id (store.streams() lists them) or the as_of/position bound.",
                cli_hint='check the id (`esa sql LAKE "SELECT DISTINCT stream_id FROM events"` '
                "lists them) or the --as-of/--position bound.",
                stream_id=stream_id,
            )
        return events

    def subscribe(
        self,
        from_position: int = 0,
        *,
        categories: Iterable[str] | None = None,
        event_types: Iterable[str] | None = None,
        poll_interval: float = 0.05,
    ) -> Subscription:
        """A catch-up subscription: every committed event after ``from_position`` in order,
        then new ones as they commit. Store ``subscription.position`` as your checkpoint."""
        from_position = validate_position(from_position, what="from_position")
        return Subscription(self, from_position, categories, event_types, poll_interval)

    # -- inventory -----------------------------------------------------------------------

    def _scan_pieces(self, view: _View, columns: list[str]) -> Iterator[pa.Table]:
        """The rows of a pinned view, a few files (about :data:`_PIECE_ROWS` rows) at a time:
        what a summary of the whole lake folds, holding one piece in memory, never the lake."""
        rows = _PIECE_ROWS
        if view.tail:
            yield self._scan((), view.predicate, columns=columns, tail=view.tail)
        piece: list[FileEntry] = []
        for entry in sorted(view.entries, key=lambda e: e.min_position):
            piece.append(entry)
            if sum(e.rows for e in piece) >= rows:
                yield self._scan(piece, view.predicate, columns=columns)
                piece = []
        if piece:
            yield self._scan(piece, view.predicate, columns=columns)

    def streams(self, *, position: int | None = None) -> pa.Table:
        """One row per stream: id, category, version (= event count), first and last position,
        first and last recorded_at. (Folded a few files at a time: its memory grows with the
        streams, not the events.)"""
        view = self._pin(position, None)
        names = ["stream_id", "category", "version", "first_position", "last_position",
                 "first_recorded_at", "last_recorded_at"]  # fmt: skip
        aggregates = [("version", "max"), ("first_position", "min"), ("last_position", "max"),
                      ("first_recorded_at", "min"), ("last_recorded_at", "max")]  # fmt: skip
        columns = ["stream_id", "category", "version", "global_position", "recorded_at"]

        def rows(piece: pa.Table) -> pa.Table:  # each event as a stream of one event
            picked = ["stream_id", "category", "version", "global_position", "global_position",
                      "recorded_at", "recorded_at"]  # fmt: skip
            return pa.table([piece[c] for c in picked], names=names)

        folded = rows(self._scan((), None, columns=columns))
        for piece in self._scan_pieces(view, columns):
            both = pa.concat_tables([folded, rows(piece)])
            folded = both.group_by(names[:2]).aggregate(aggregates).rename_columns(names)
        keys = [f.with_nullable(f.name not in names[:2]) for f in folded.schema]
        return folded.sort_by("stream_id").cast(pa.schema(keys))

    def inventory(self, *, position: int | None = None) -> Inventory:
        """Counts, categories, event types and time ranges of the lake at ``position``
        (folded a few files at a time: its memory grows with the streams, not the events)."""
        view = self._pin(position, None)
        commits = self._commit_number
        columns = ["stream_id", "category", "event_type", "occurred_at", "recorded_at"]
        events = 0
        tallies: dict[str, dict[str, int]] = {"category": {}, "event_type": {}}
        bounds: dict[str, list[Any]] = {"recorded_at": [], "occurred_at": []}
        streams: pa.Array | None = None
        for table in self._scan_pieces(view, columns):
            if table.num_rows == 0:
                continue
            events += table.num_rows
            for column, tally in tallies.items():
                vc = pc.value_counts(table[column])
                for value, count in zip(
                    vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True
                ):
                    tally[value] = tally.get(value, 0) + count
            for column, seen in bounds.items():
                low_high = pc.min_max(table[column])
                seen.extend([low_high["min"].as_py(), low_high["max"].as_py()])
            unique = pc.unique(table["stream_id"])
            if streams is not None:
                unique = pc.unique(pa.concat_arrays([streams, unique]))
            streams = unique

        def counts(column: str) -> dict[str, int]:
            return dict(sorted(tallies[column].items(), key=lambda kv: (-kv[1], kv[0])))

        def span(column: str) -> tuple[datetime | None, datetime | None]:
            seen = bounds[column]
            return (min(seen), max(seen)) if seen else (None, None)

        first_rec, last_rec = span("recorded_at")
        first_occ, last_occ = span("occurred_at")
        return Inventory(
            path=str(self.path),
            position=view.position,
            events=events,
            streams=0 if streams is None else len(streams),
            categories=counts("category"),
            event_types=counts("event_type"),
            first_recorded_at=first_rec,
            last_recorded_at=last_rec,
            first_occurred_at=first_occ,
            last_occurred_at=last_occ,
            files=len(view.entries),
            bytes=sum(e.bytes for e in view.entries),
            commits=commits,
        )

    # -- writing -------------------------------------------------------------------------

    def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent] | NewEvent,
        *,
        expected_version: ExpectedVersion | int = ANY,
        category: str | None = None,
    ) -> Commit:
        """Append events to one stream, atomically and durably.

        ``expected_version`` is ``ANY``, ``NO_STREAM``, ``STREAM_EXISTS`` or the version the
        caller last saw (0 for none); a mismatch raises :class:`ConcurrencyError` and writes
        nothing. Appending again with the same event ids returns the original commit.
        """
        events_seq: Sequence[NewEvent] = [events] if isinstance(events, NewEvent) else events
        return self.append_many([AppendRequest(stream_id, events_seq, expected_version, category)])

    def append_many(self, requests: Sequence[AppendRequest]) -> Commit:
        """Append to several streams in one atomic commit, each with its own expected version.

        >>> import tempfile, esanalytics as esa
        >>> store = esa.open(tempfile.mkdtemp() + "/lake", create=True)
        >>> commit = store.append_many([
        ...     esa.AppendRequest("account-1", [esa.NewEvent("MoneyWithdrawn", {"amount": 5})]),
        ...     esa.AppendRequest("account-2", [esa.NewEvent("MoneyDeposited", {"amount": 5})]),
        ... ])
        >>> [s.stream_id for s in commit.streams]
        ['account-1', 'account-2']
        """
        if not requests:
            raise EmptyAppendError(
                "append_many got no requests.", hint="pass at least one AppendRequest."
            )
        prepared = [
            _prepare(r if isinstance(r, AppendRequest) else AppendRequest(*r)) for r in requests
        ]
        seen: set[str] = set()
        for p in prepared:
            if p.stream_id in seen:
                raise ValidationError(
                    f"The stream {p.stream_id!r} appears twice in one append_many.",
                    hint="merge its events into one AppendRequest.",
                    stream_id=p.stream_id,
                )
            seen.add(p.stream_id)
        all_ids = [i for p in prepared for i in p.event_ids]
        if len(set(all_ids)) != len(all_ids):
            raise DuplicateEventError(
                "The same event id is used twice in one append.",
                hint="give each event its own id (or leave event_id out).",
                event_id=_first_repeated(all_ids),
            )
        if len(all_ids) > _INLINE_LIMIT:
            return self._ingest(
                _prepared_table(prepared),
                expected_versions={p.stream_id: p.expected for p in prepared},
                retry_of=prepared,
            )
        with writing(self.path, "the append"), self._writer_lock.hold(), self._state_lock:
            self._recover()
            heads = self._load_heads()
            keys = uuid_keys(pa.array(all_ids, pa.string()))
            known = self._load_ids().knows(keys)
            if known.any():  # a retry, a duplicate, or only ids whose 64-bit keys collide
                replayed = self._replay(prepared)
                if replayed is not None:
                    return replayed
            for p in prepared:
                self._check_version(p.stream_id, p.expected, heads.get(p.stream_id, 0))
            rows, stream_map = self._build(prepared, heads)
            commit = self._commit_rows(rows, stream_map)
            self._writer.remember(keys)
            if len(self._tail) >= SEAL_ROWS or self._tail[0][8] < _now_us() - SEAL_AGE_US:
                self._deferred("sealing", self._seal)  # the append stands whatever happens
            return commit

    def _check_version(self, stream_id: str, expected: ExpectedVersion | int, actual: int) -> None:
        ok = (
            expected is ANY
            or (expected is NO_STREAM and actual == 0)
            or (expected is STREAM_EXISTS and actual > 0)
            or (not isinstance(expected, ExpectedVersion) and expected == actual)
        )
        if not ok:
            raise ConcurrencyError(
                f"The stream {stream_id!r} is at version {actual}, but the append expected "
                f"{expected!r}.",
                hint="another writer appended first: reload the stream, decide again on its "
                "current state, and retry with expected_version set to its version.",
                cli_hint=f"another writer appended first: read the stream again (`esa read LAKE "
                f"{stream_id}`), then retry with --expected-version {actual}.",
                stream_id=stream_id,
                expected=expected,
                actual=actual,
            )

    def _build(
        self, prepared: list[_Prepared], heads: dict[str, int]
    ) -> tuple[list[tuple[Any, ...]], dict[str, list[int]]]:
        """The rows of a small append, placed and hashed, as plain tuples (for a handful of
        rows this beats any columnar route)."""
        now = max(_now_us(), self._last_recorded_us)
        rows: list[tuple[Any, ...]] = []
        stream_map: dict[str, list[int]] = {}
        position = self._head
        prev = self._last_hash
        for p in prepared:
            start = heads.get(p.stream_id, 0)
            stream_map[p.stream_id] = [start + 1, start + len(p.event_ids)]
            for k, event_id in enumerate(p.event_ids):
                position += 1
                given = p.occurred_us[k]
                fields = (
                    position,
                    p.stream_id,
                    p.category,
                    start + k + 1,
                    event_id,
                    p.event_types[k],
                    p.schema_versions[k],
                    now if given is None else given,
                    now,
                    p.data[k],
                    p.metadata[k],
                )
                digest = row_hash(prev, canonical_row(*fields))
                rows.append((*fields, prev, digest))
                prev = digest
        return rows, stream_map

    def _find_ids(
        self, wanted: pa.Array | pa.ChunkedArray | list[str], columns: list[str] | None = None
    ) -> pa.Table:
        """The logged events (in the files and the unsealed tail) with these event ids."""
        wanted_set = set(wanted if isinstance(wanted, list) else wanted.to_pylist())
        with self._state_lock:
            entries = list(self._files.values())
            tail = [row for row in self._tail if row[4] in wanted_set]
        return self._scan(entries, pc.field("event_id").isin(wanted), columns=columns, tail=tail)

    def _replay(self, prepared: list[_Prepared]) -> Commit | None:
        """An append some of whose id keys are known: the original commit if it is a retry
        of the same append, None if none of its ids is in the log after all (their keys
        only collide with others), else an error."""
        wanted = [i for p in prepared for i in p.event_ids]
        found = self._find_ids(wanted)
        by_id = {row["event_id"]: row for row in found.sort_by("global_position").to_pylist()}
        if not by_id:
            return None
        rows = [by_id[i] for i in wanted if i in by_id]
        flat = [(p.stream_id, t) for p in prepared for t in p.event_types]
        positions = [row["global_position"] for row in rows]
        same = (
            len(rows) == len(wanted)
            and [(row["stream_id"], row["event_type"]) for row in rows] == flat
            and positions == list(range(positions[0], positions[0] + len(positions)))
        )
        if not same:
            clash = next(i for i in wanted if i in by_id)
            where = by_id[clash]
            place = f" (at position {where['global_position']} in {where['stream_id']!r})"
            raise DuplicateEventError(
                f"The event id {clash} is already in the log{place}, and this append is not a "
                "retry of the one that wrote it.",
                hint="use a fresh event id for a new event; to retry an append, send exactly the "
                "same events with the same ids.",
                event_id=clash,
            )
        streams: dict[str, list[int]] = {}
        for row in rows:
            streams.setdefault(row["stream_id"], []).append(row["version"])
        return Commit(
            commit=0,
            first_position=positions[0],
            last_position=positions[-1],
            recorded_at=rows[0]["recorded_at"],
            streams=tuple(StreamAppend(s, min(v), max(v)) for s, v in streams.items()),
            replayed=True,
        )

    def ingest(
        self,
        table: pa.Table | pd.DataFrame,
        *,
        chunk_rows: int = 250_000,
        progress: Callable[[int], None] | None = None,
        expected_versions: Mapping[str, ExpectedVersion | int] | None = None,
    ) -> Commit:
        """Append a large batch of events from an Arrow table in one atomic commit.

        Columns: ``stream_id``, ``event_type``, ``data`` and ``metadata`` (JSON text) are
        required; ``event_id``, ``occurred_at``, ``recorded_at`` (a source's own commit times,
        never decreasing and not in the future), ``schema_version`` and ``category`` are
        optional; a pandas DataFrame is taken as well (its index dropped, dict payloads
        written as JSON). Versions continue each stream's current version in table order. Validation
        is vectorized; a bad row is named by its index and nothing is written.
        ``progress`` is called with the number of rows of each chunk written.
        ``expected_versions`` maps stream ids to the version each must be at (or ``NO_STREAM``
        and the like), checked under the writer lock as a single append would.
        """
        return self._ingest(
            table, chunk_rows=chunk_rows, progress=progress, expected_versions=expected_versions
        )

    def _ingest(
        self,
        table: pa.Table,
        *,
        chunk_rows: int = 250_000,
        progress: Callable[[int], None] | None = None,
        expected_versions: Mapping[str, ExpectedVersion | int] | None = None,
        retry_of: list[_Prepared] | None = None,
    ) -> Commit:
        """:meth:`ingest`; with ``retry_of`` (the append this table was made from, whose
        values are checked already), a retry of that append returns its original commit."""
        expected = {s: _check_expected(v) for s, v in (expected_versions or {}).items()}
        batch = _ingest.validate(table, validate_json=retry_of is None)
        if batch.num_rows == 0:
            raise EmptyAppendError("ingest got an empty table.", hint="pass at least one row.")
        with writing(self.path, "the ingest"), self._writer_lock.hold(), self._state_lock:
            self._recover()
            heads = self._load_heads()
            keys = uuid_keys(batch["event_id"])
            known = self._load_ids().knows(keys)
            if retry_of is not None and known.any():
                replayed = self._replay(retry_of)
                if replayed is not None:
                    return replayed
            for stream_id, version in expected.items():
                self._check_version(stream_id, version, heads.get(stream_id, 0))
            ordered = np.sort(keys)
            if (ordered[1:] == ordered[:-1]).any() or known.any():
                self._refuse_known_ids(batch["event_id"], known, keys)
            placed = _ingest.place(batch, heads, self._head, self._last_recorded_us, _now_us())
            return self._write_placed(placed, ordered, chunk_rows=chunk_rows, progress=progress)

    def _write_placed(
        self,
        placed: pa.Table,
        ordered_keys: np.ndarray[Any, np.dtype[np.uint64]],
        *,
        chunk_rows: int,
        progress: Callable[[int], None] | None,
        extra: dict[str, Any] | None = None,
    ) -> Commit:
        """Hash, write and commit a placed batch (under the writer lock), then remember its
        id keys (``ordered_keys``, sorted) and, after a large one, save the writer index."""
        commit = self._commit_files(
            self._hashed_chunks(placed, chunk_rows),
            stream_map=_stream_map(placed),
            progress=progress,
            extra=extra,
        )
        self._writer.remember(ordered_keys)
        # A save writes every id of the log: after a quarter as many new ids as it last
        # wrote, at most, so a bulk load writes a multiple of its ids, not their square
        # (100M events in 1M batches saved 5 billion ids; now about 400M).
        self._unsaved_ids += placed.num_rows
        if placed.num_rows >= _INDEX_AFTER_ROWS and self._unsaved_ids >= self._saved_ids // 4:
            self._deferred("saving the writer index", self._save_writer_index)
        return commit

    def cursor(self, name: str) -> dict[str, Any] | None:
        """The newest cursor committed by the import called ``name``: a dict with ``name``,
        ``at`` (the source's own coordinates of its last imported event) and ``mapping``,
        or None if that import never committed."""
        self.refresh()
        with self._state_lock:
            return self._cursor_of(name)

    def cursors(self) -> dict[str, dict[str, Any]]:
        """Every import's newest cursor, by name."""
        self.refresh()
        with self._state_lock:
            return dict(self._cursor_map())

    def _cursor_map(self) -> dict[str, dict[str, Any]]:
        if self._cursors is None:  # once per handle; _apply keeps it current after that
            self._cursors = {
                record["cursor"]["name"]: record["cursor"]
                for record in self._all_records()
                if "cursor" in record
            }
        return self._cursors

    def _cursor_of(self, name: str) -> dict[str, Any] | None:
        return self._cursor_map().get(name)

    def import_batch(
        self,
        table: pa.Table,
        *,
        cursor: dict[str, Any],
        previous: dict[str, Any] | None,
        chunk_rows: int = 250_000,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[Commit | None, int]:
        """Commit one batch of an import with its cursor, in one commit line.

        ``table`` is an ingest table (see :meth:`ingest`) whose ``event_id`` column is
        deterministic (the source's id, or one derived from its coordinates). ``cursor`` is
        ``{"name", "at", "mapping"}``; ``previous`` the cursor the batch was read after, which
        must still be the newest of that name (else :class:`ImportConflictError`, nothing
        written). Events whose id is already in the log, or repeated in the batch, are
        skipped; a source's commit times that go back are clamped to the newest before them
        (the original kept in metadata as ``source_recorded_at``). Returns the commit (None if
        no event was new: then only the cursor is committed, in a line of its own) and how
        many events were skipped as already there."""
        batch = _ingest.validate(table) if table.num_rows else table
        name = cursor["name"]
        with writing(self.path, "the import"), self._writer_lock.hold(), self._state_lock:
            self._recover()
            stored = self._cursor_of(name)
            if stored != previous:
                raise ImportConflictError(
                    f"Another run of the import {name!r} committed while this one was reading "
                    "its batch: this batch was not written.",
                    hint="run one import per source name at a time; running it again "
                    "continues from the stored cursor.",
                    stream_id="",
                    expected=previous,
                    actual=0,
                )
            keys = uuid_keys(batch["event_id"])
            fresh = self._new_rows(batch, keys)
            skipped = batch.num_rows - len(fresh)
            if len(fresh) == 0:
                if cursor != stored:  # rows read, none to write: the cursor moves on alone
                    self._commit_cursor(cursor)
                return None, skipped
            if len(fresh) < batch.num_rows:
                batch = batch.take(pa.array(fresh))
            heads = self._load_heads()
            placed = _ingest.place(
                batch, heads, self._head, self._last_recorded_us, _now_us(), clamp=True
            )
            commit = self._write_placed(
                placed,
                np.sort(keys[fresh]),
                chunk_rows=chunk_rows,
                progress=progress,
                extra={"cursor": cursor},
            )
            return commit, skipped

    def _commit_cursor(self, cursor: dict[str, Any]) -> None:
        """Commit a line that moves an import's cursor and adds no event (under the writer
        lock, after _recover)."""
        record = {"n": self._commit_number + 1, "kind": "cursor", "cursor": cursor}
        kill_point("cursor.before_commit")
        self._offset = self._log.append(record, valid_end=self._offset)
        self._finished = self._offset
        self._apply(record, foreign=False)

    def _new_rows(
        self, batch: pa.Table, keys: np.ndarray[Any, np.dtype[np.uint64]]
    ) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Indexes of the rows of ``batch`` whose event id is neither already in the log nor
        repeated earlier in the batch (ids compared whole; 64-bit keys only find candidates).
        A row whose id is known but whose stream, type or payload differ is not the same
        event: :class:`DuplicateEventError` names its row (nothing is written)."""
        n = batch.num_rows
        if n == 0:  # (a batch whose rows were all refused: nothing to look up)
            return np.zeros(0, dtype=np.int64)
        ids = batch["event_id"].combine_chunks()
        codes = pc.dictionary_encode(ids).indices.to_numpy()
        rows = np.arange(n, dtype=np.int64)
        first = np.full(int(codes.max()) + 1, n, dtype=np.int64)
        np.minimum.at(first, codes, rows)
        first_row = first[codes]
        keep = first_row == rows
        repeats = np.flatnonzero(~keep)
        if len(repeats):
            self._refuse_other_content(
                batch, repeats, batch.take(pa.array(first_row[repeats])), "earlier in the batch"
            )
        known = self._load_ids().knows(keys) & keep
        if known.any():
            candidates = np.flatnonzero(known)
            wanted = pc.take(ids, pa.array(candidates))
            found = self._find_ids(
                wanted, ["event_id", "global_position", "stream_id", "event_type", "data"]
            )
            where = pc.index_in(wanted, value_set=found["event_id"].combine_chunks())
            there = where.is_valid().to_numpy(zero_copy_only=False)
            if there.any():
                stored = found.take(pc.drop_null(where))
                self._refuse_other_content(batch, candidates[there], stored, "in the log")
            keep[candidates[there]] = False
        return np.flatnonzero(keep)

    def _refuse_other_content(
        self,
        batch: pa.Table,
        rows: np.ndarray[Any, np.dtype[np.int64]],
        other: pa.Table,
        place: str,
    ) -> None:
        """Raise if any of ``rows`` of ``batch`` differs from the row of ``other`` with its
        id (in the same order) in stream, type or payload."""
        mine = batch.take(pa.array(rows))
        same = np.ones(len(rows), dtype=bool)
        for column in ("stream_id", "event_type", "data"):
            same &= pc.fill_null(
                pc.equal(mine[column].combine_chunks(), other[column].combine_chunks()), False
            ).to_numpy(zero_copy_only=False)
        if same.all():
            return
        index = int(np.flatnonzero(~same)[0])
        row, event_id = int(rows[index]), mine["event_id"][index].as_py()
        at = (
            f" at position {other['global_position'][index].as_py()}"
            if "global_position" in other.column_names
            else ""
        )
        raise DuplicateEventError(
            f"The event id {event_id} is already {place}{at} as another event (its stream, "
            "type or payload differ).",
            hint="two different events carry one id in the source; give one of them its own "
            "id, or map another field as the event id (--map event_id=FIELD).",
            event_id=event_id,
            row=row,
        )

    def _refuse_known_ids(
        self,
        event_ids: pa.Array,
        known: np.ndarray[Any, np.dtype[np.bool_]],
        keys: np.ndarray[Any, np.dtype[np.uint64]],
    ) -> None:
        """Raise for the first row of an ingest whose event id is repeated in it or already
        in the log, if there is one: 64-bit keys only point at candidates, whose ids are
        compared whole (an id whose two halves are another's swapped shares its key)."""
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        twins = np.flatnonzero(ordered[1:] == ordered[:-1])
        candidates = np.union1d(order[twins], order[twins + 1])
        first_seen: dict[str, int] = {}
        repeated: tuple[int, str, str] | None = None
        for row in candidates.tolist():
            event_id = event_ids[row].as_py()
            if event_id in first_seen:
                repeated = (row, event_id, f"repeated (first at row {first_seen[event_id]})")
                break
            first_seen[event_id] = row
        stored = np.flatnonzero(known)
        if len(stored):
            wanted = pc.take(event_ids, pa.array(stored))
            found = self._find_ids(wanted, ["event_id", "global_position", "stream_id"])
            where = dict(
                zip(
                    found["event_id"].to_pylist(),
                    zip(
                        found["global_position"].to_pylist(),
                        found["stream_id"].to_pylist(),
                        strict=True,
                    ),
                    strict=True,
                )
            )
            for row, event_id in zip(stored.tolist(), wanted.to_pylist(), strict=True):
                if event_id in where and (repeated is None or row < repeated[0]):
                    position, stream_id = where[event_id]
                    repeated = (
                        row,
                        event_id,
                        f"already in the log at position {position} in {stream_id!r}",
                    )
                    break
        if repeated is not None:
            row, event_id, place = repeated
            raise DuplicateEventError(
                f"The event id {event_id} at row {row} of the ingest is {place}.",
                hint="give each event a fresh id (leave the event_id column out to get them); "
                "to retry an append, send exactly the same events with the same ids.",
                event_id=event_id,
                row=row,
            )

    def _commit_rows(self, rows: list[tuple[Any, ...]], stream_map: dict[str, list[int]]) -> Commit:
        """Commit a small append: its rows go durably into the commit line itself, one
        fdatasync, and are sealed into Parquet later with others (see :meth:`flush`)."""
        record: dict[str, Any] = {
            "n": self._commit_number + 1,
            "kind": "append",
            "first": rows[0][0],
            "last": rows[-1][0],
            "last_hash": rows[-1][12],
            "recorded_at": rows[-1][8],
            "rows": rows,
        }
        return self._commit(record, stream_map)

    def _commit_files(
        self,
        chunks: Iterable[pa.Table],
        *,
        stream_map: dict[str, list[int]],
        progress: Callable[[int], None] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Commit:
        """Commit a large append: hashed chunks are written as hidden synced files, named
        in one durable commit line (with ``extra``'s keys, such as an import's cursor), then
        published."""
        number = self._commit_number + 1
        record: dict[str, Any] = {"n": number, "kind": "append"}
        start = self._offset
        try:
            # Hashing is sequential Python; encoding and syncing Parquet release the GIL, so
            # the files of one chunk are written on the other core while the next is hashed.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="esa-write") as pool:
                pending = []
                for index, chunk in enumerate(chunks):
                    record.setdefault("first", chunk["global_position"][0].as_py())
                    record["last"] = chunk["global_position"][-1].as_py()
                    record["last_hash"] = chunk["hash"][-1].as_py()
                    record["recorded_at"] = chunk["recorded_at"][-1].value
                    stem = f"a{number:012d}-{index:04d}"
                    pending.append(pool.submit(self._write_files, chunk, stem))
                    if progress is not None:
                        progress(chunk.num_rows)
                written = [entry for future in pending for entry in future.result()]
            record["add"] = [entry.to_json() for entry in written]
            record.update(extra or {})
            commit = self._commit(record, stream_map)
        except BaseException:
            if self._offset == start:  # not committed: leave nothing behind
                self._discard(f"a{number:012d}-")
            raise
        kill_point("ingest.after_publish")
        self._deferred("saving the store checkpoint", self._write_checkpoint)
        return commit

    def _commit(self, record: dict[str, Any], stream_map: dict[str, list[int]]) -> Commit:
        kind = "ingest" if "add" in record else "append"
        kill_point(f"{kind}.before_commit")
        start = self._offset
        self._offset = self._log.append(record, valid_end=self._offset)
        # Committed: from here on nothing may raise, or a caller would retry a done append.
        kill_point(f"{kind}.after_commit")
        self._publish(record, start)
        self._apply(record, foreign=False)
        self._wrote = True
        heads = self._writer.heads
        if heads is not None:
            for s, (_, hi) in stream_map.items():
                heads[s] = hi
        return Commit(
            commit=record["n"],
            first_position=record["first"],
            last_position=record["last"],
            recorded_at=from_epoch_us(record["recorded_at"]),
            streams=tuple(StreamAppend(s, lo, hi) for s, (lo, hi) in stream_map.items()),
        )

    def flush(self) -> int:
        """Seal the events of small appends that are still only in the commit log into
        Parquet now, so that plain Parquet readers see every committed event. Returns how
        many events were sealed. (Appends seal by themselves every SEAL_ROWS events or when
        the oldest unsealed event is SEAL_AGE_US old; the store's readers never need this.)"""
        with writing(self.path, "the seal"), self._writer_lock.hold(), self._state_lock:
            self._recover()
            return self._seal()

    def _seal(self) -> int:
        """Write the unsealed tail as Parquet and commit that (under the writer lock)."""
        if not self._tail:
            return 0
        rows = self._tail
        number = self._commit_number + 1
        start = self._offset
        try:
            written = self._write_files(_rows_table(rows), f"a{number:012d}-seal")
            record = {
                "n": number,
                "kind": "seal",
                "upto": rows[-1][0],
                "add": [entry.to_json() for entry in written],
            }
            kill_point("seal.before_commit")
            self._offset = self._log.append(record, valid_end=self._offset)
        except BaseException:
            if self._offset == start:  # not committed: leave nothing behind
                self._discard(f"a{number:012d}-seal")
            raise
        kill_point("seal.after_commit")
        self._publish(record, start)
        self._apply(record, foreign=False)
        kill_point("seal.after_publish")
        self._deferred("saving the store checkpoint", self._write_checkpoint)
        return len(rows)

    def _hashed_chunks(self, table: pa.Table, chunk_rows: int) -> Iterator[pa.Table]:
        """Chunks of ``table`` with the hash chain filled in; the canonical encodings of the
        next chunk are computed (by Arrow, off the GIL) while this one is hashed."""
        prev = self._last_hash
        starts = range(0, table.num_rows, chunk_rows)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="esa-encode") as pool:
            ahead = pool.submit(canonical_rows, table.slice(0, chunk_rows))
            for start in starts:
                canonical = ahead.result()
                if start + chunk_rows < table.num_rows:
                    ahead = pool.submit(canonical_rows, table.slice(start + chunk_rows, chunk_rows))
                prev_col, hash_col = chain_hashes(canonical, prev)
                chunk = table.slice(start, chunk_rows)
                yield chunk.set_column(11, EVENT_SCHEMA.field(11), prev_col).set_column(
                    12, EVENT_SCHEMA.field(12), hash_col
                )
                prev = hash_col[-1].as_py()

    def _write_files(
        self,
        table: pa.Table,
        stem: str,
        *,
        row_group_rows: int | None = None,
        twin_rows: int = TWIN_MIN_ROWS,
    ) -> list[FileEntry]:
        """Write ``table`` as one hidden, synced temporary file per (category, month), and
        beside each part of at least ``twin_rows`` rows its typed twin, in ``typed/``."""
        first_month = _month_of(table["recorded_at"][0].value)
        last_month = _month_of(table["recorded_at"][-1].value)
        categories = pc.unique(table["category"])
        if first_month == last_month and len(categories) == 1:
            parts = [(categories[0].as_py(), first_month, table)]
        else:
            parts = _split_partitions(table)
        entries = []
        folders = set()
        twin_folders: set[str] = set()
        with contextlib.ExitStack() as stack:
            # Each twin is derived on another thread while its events file is written (DuckDB,
            # Arrow and fsync release the GIL), then written after it: a full disk meets the
            # files in one order. Leaving the stack waits for the thread.
            twins = None
            if any(part.num_rows >= twin_rows for _, _, part in parts):
                twins = stack.enter_context(
                    ThreadPoolExecutor(max_workers=1, thread_name_prefix="esa-twin")
                )
            for index, (category, month, part) in enumerate(parts):
                folder = partition_dir(category, month)
                relpath = f"{folder}/{stem}-{index:03d}.parquet"
                if folder not in folders:
                    make_dirs_durably(self._events, folder)
                    folders.add(folder)
                target = self._events / tmp_name(relpath)
                body = part.select(FILE_SCHEMA.names).cast(FILE_SCHEMA)
                derived = None
                if twins is not None and body.num_rows >= twin_rows:
                    derived = twins.submit(_typed.derive, body)
                small = body.num_rows < 10_000
                import pyarrow.parquet as pq

                pq.write_table(
                    body,
                    target,
                    # Small files are short-lived (compaction rewrites them): write them fast.
                    compression="snappy" if small else _COMPRESSION,
                    compression_level=None if small else 1,
                    use_dictionary=False if small else _DICTIONARY_COLUMNS,
                    row_group_size=row_group_rows or max(body.num_rows, 1),
                    write_page_index=False,
                )
                fsync_file(target)
                entry = _describe(
                    relpath, category, month, body, target.stat().st_size, file_digest(target)
                )
                if derived is not None:
                    kill_point("typed.before_write")
                    if folder not in twin_folders:
                        make_dirs_durably(self._typed, folder)
                        twin_folders.add(folder)
                    entry = replace(entry, typed=self._write_twin(derived.result(), relpath))
                    kill_point("typed.after_write")
                entries.append(entry)
        for folder in folders:
            fsync_dir(self._events / folder)
        for folder in twin_folders:
            fsync_dir(self._typed / folder)
        return entries

    def _write_twin(
        self, derived: tuple[pa.Table, dict[str, str], bool], relpath: str
    ) -> TypedTwin:
        """Write the typed twin of an events file (what :func:`typed.derive` made of its
        rows) as a hidden, synced temporary file."""
        import pyarrow.parquet as pq

        twin, fields, more = derived
        target = self._typed / tmp_name(relpath)
        text = [_typed.field_column(name) for name, kind in fields.items() if kind == "VARCHAR"]
        pq.write_table(
            twin,
            target,
            compression=_COMPRESSION,
            compression_level=1,
            use_dictionary=[*_DICTIONARY_COLUMNS, *text],
            row_group_size=TWIN_ROW_GROUP_ROWS,
            write_page_index=False,
        )
        fsync_file(target)
        return TypedTwin(relpath, file_digest(target), target.stat().st_size, fields, more)

    # -- writer caches -------------------------------------------------------------------

    def _load_heads(self) -> dict[str, int]:
        heads = self._load_writer().heads
        assert heads is not None
        return heads

    def _load_ids(self) -> _WriterState:
        return self._load_writer()

    def _load_writer(self) -> _WriterState:
        """Stream versions and event-id keys, which a writer checks appends against. They come
        from the writer index that compaction and large ingests save, plus the commits after
        it; without an index, from a scan of the whole log. Under the writer lock."""
        writer = self._writer
        if writer.heads is not None:
            return writer
        loaded = self._read_writer_index()
        if loaded is not None:
            writer.heads, keys, offset = loaded
            writer.id_runs = [keys] if len(keys) else []
            records, _, _ = self._log.read_from(offset)
            appends = [
                r for r in records if r["kind"] == "append" and r["n"] <= self._commit_number
            ]
            # The log confirms the index's count of events: the head then is the head now
            # less what the appends after it added. A mismatch: an index not to trust.
            added = sum(r["last"] - r["first"] + 1 for r in appends)
            if sum(writer.heads.values()) != len(keys) or len(keys) != self._head - added:
                _LOG.warning("the writer index of %s disagrees with the log: scanning", self.path)
                loaded = None
            else:
                for record in appends:
                    table = self._appended(record)
                    _merge_heads(writer.heads, table)
                    writer.remember(uuid_keys(table["event_id"]))
        if loaded is None:
            table = self._scan(
                list(self._files.values()),
                None,
                columns=["stream_id", "version", "event_id"],
                tail=self._tail,
            )
            writer.heads = {}
            _merge_heads(writer.heads, table)
            writer.id_runs = [np.sort(uuid_keys(table["event_id"]))] if table.num_rows else []
            writer.recent_ids = set()
        writer.ids_loaded = True
        return writer

    def _appended(self, record: dict[str, Any]) -> pa.Table:
        """Stream ids, versions and event ids of an append commit, from its line or from the
        files that hold its events now (a compaction may have replaced, and a vacuum deleted,
        the files it named)."""
        columns = ["stream_id", "version", "event_id"]
        if "rows" in record:
            return _rows_table(record["rows"]).select(columns)
        entries = [FileEntry.from_json(raw) for raw in record["add"]]
        if all(entry.path in self._files for entry in entries):
            return self._scan(entries, None, columns=columns)
        first, last = record["first"], record["last"]
        holding = [
            entry
            for entry in self._files.values()
            if entry.min_position <= last and entry.max_position >= first
        ]
        span = (pc.field("global_position") >= first) & (pc.field("global_position") <= last)
        return self._scan(holding, span, columns=columns)

    def _read_writer_index(self) -> tuple[dict[str, int], Any, int] | None:
        """The saved writer index, if its files are the ones it recorded (by SHA-256) and it
        was saved at a line the commit log still holds; else None (the writer scans)."""
        folder = self._meta / WRITER_INDEX
        try:
            info = json.loads((folder / "current.json").read_text())
            offset = info["offset"]
            if not isinstance(offset, int) or offset > self._offset:
                return None
            if info.get("log_digest") != self._log.digest_at(offset):
                return None  # also an index written before digests: not trusted, rebuilt
            for name, digest in ((info["heads"], info["heads_sha256"]),
                                 (info["ids"], info["ids_sha256"])):  # fmt: skip
                if "/" in name or file_digest(folder / name) != digest:
                    _LOG.warning("the writer index of %s was altered: scanning", self.path)
                    return None
            import pyarrow.parquet as pq

            heads_table = pq.read_table(folder / info["heads"])
            heads = dict(
                zip(
                    heads_table["stream_id"].to_pylist(),
                    heads_table["version"].to_pylist(),
                    strict=True,
                )
            )
            keys = np.load(folder / info["ids"])
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
            return None  # no index, or a damaged one: scan instead
        return heads, keys, offset

    def _save_writer_index(self) -> None:
        """Save the writer caches as of the last commit (under the writer lock), so the next
        process's first append does not scan the whole log."""
        writer = self._load_writer()
        assert writer.heads is not None
        folder = self._meta / WRITER_INDEX
        folder.mkdir(exist_ok=True)
        runs = [*writer.id_runs]
        if writer.recent_ids:
            runs.append(np.fromiter(writer.recent_ids, np.uint64))
        keys = np.sort(np.concatenate(runs)) if runs else np.empty(0, np.uint64)
        writer.id_runs, writer.recent_ids = ([keys] if len(keys) else []), set()
        stem = f"{self._commit_number:012d}"
        import pyarrow.parquet as pq

        heads = pa.table(
            {
                "stream_id": list(writer.heads),
                "version": pa.array(list(writer.heads.values()), pa.int64()),
            }
        )
        pq.write_table(heads, folder / f"heads-{stem}.parquet")
        np.save(folder / f"ids-{stem}.npy", keys)
        for name in (f"heads-{stem}.parquet", f"ids-{stem}.npy"):
            fsync_file(folder / name)
        pointer = {
            "offset": self._offset,
            "log_digest": self._log.digest_at(self._offset),
            "heads": f"heads-{stem}.parquet",
            "heads_sha256": file_digest(folder / f"heads-{stem}.parquet"),
            "ids": f"ids-{stem}.npy",
            "ids_sha256": file_digest(folder / f"ids-{stem}.npy"),
        }
        kill_point("writer_index.before_pointer")
        tmp = folder / ".current.json.tmp"
        try:
            tmp.write_text(json.dumps(pointer))
            fsync_file(tmp)
            os.replace(tmp, folder / "current.json")
            fsync_dir(folder)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        for old in folder.glob("*-*.*"):
            if stem not in old.name:
                old.unlink()
        self._saved_ids, self._unsaved_ids = len(keys), 0

    # -- recovery ------------------------------------------------------------------------

    def _recover(self) -> None:
        """Finish what a crashed writer left (under the writer lock): publish files of commits
        that were not yet renamed, retire files that compaction replaced, and, once per handle,
        delete temporary files that no commit names. Also takes in new commits."""
        with self._state_lock:
            if self._recovered and self._finished == self._offset == self._log.size():
                self._check_tail()
                return  # nothing new since our own last commit: the common case
            records, end, _torn = self._log.read_from(self._finished)
            for record in records:
                self._finish(record)
                if record["n"] > self._commit_number:
                    self._apply(record, foreign=True)
            self._finished = end
            self._offset = max(self._offset, end)
            if not self._recovered:
                # Appends and seals write their files under the writer lock: any not named
                # by a commit is debris of a crash.
                self._sweep(".a*.parquet.tmp")
                self._recovered = True
            self._check_tail()
            self._check_unnamed()

    def _check_unnamed(self) -> None:
        """Once per writer handle: event files in events/ that no commit names mean the log
        was rolled back or cut (a writer would reuse their names and build on a log that
        has lost them). Under the writer lock, after every commit was taken in."""
        if self._unnamed_checked:
            return
        unnamed = [
            path
            for path in self._events.rglob("*.parquet")  # any depth, as verify looks
            if str(path.relative_to(self._events)) not in self._files
        ]
        unnamed += [  # twins too: a writer would reuse their names
            path
            for path in self._typed.rglob("*.parquet")
            if (entry := self._files.get(str(path.relative_to(self._typed)))) is None
            or entry.typed is None
        ]
        if unnamed:
            raise CorruptLakeError(
                f"{self.path} holds {len(unnamed)} event or typed file(s) that no commit of "
                f"{self._log.path} names (e.g. {unnamed[0].relative_to(self.path)}): the "
                "commit log was rolled back or cut, or files were put there by hand.",
                hint="restore _esa/commits.log (and _esa/checkpoint.json) from the backup that "
                f"names them; `esa verify {self.path}` lists them. Stray files that are not "
                "the lake's must be moved out of it. Nothing was written.",
                path=str(unnamed[0]),
            )
        self._unnamed_checked = True

    def _check_tail(self) -> None:
        """Rehash the unsealed rows a writer has not checked yet (each once per handle)
        before it links a new commit line to them or seals them: a row altered in the commit
        log is refused, never vouched for by a later link, a seal or a signed checkpoint."""
        tail = self._tail
        if not tail or tail[-1][0] <= self._tail_checked:
            return
        start = next(i for i, row in enumerate(tail) if row[0] > self._tail_checked)
        fresh = tail[start:]
        bad = [i for i, ok in enumerate(rows_match(fresh)) if not ok]
        bad += [  # (rows are consecutive unless a large append's files came between them)
            i - start
            for i in range(max(start, 1), len(tail))
            if tail[i][0] == tail[i - 1][0] + 1 and tail[i][11] != tail[i - 1][12]
        ]
        if fresh[-1][0] == self._head and fresh[-1][12] != self._last_hash:
            bad.append(len(fresh) - 1)
        if bad:
            raise CorruptLakeError(
                f"The event at position {fresh[min(bad)][0]}, held in the commit log, does not "
                "match its hash or the chain: the commit log was altered there.",
                hint=f"run `esa verify {self.path}` to see what was altered; restore "
                "_esa/commits.log from a backup. Nothing was written, so no new commit vouches "
                "for the altered event.",
                path=str(self._log.path),
            )
        self._tail_checked = fresh[-1][0]

    def _sweep(self, pattern: str) -> None:
        """Delete temporary files (matching ``pattern``) that no commit names: debris of a
        write that crashed before committing. A temporary file that a commit names is never
        deleted: it is published if live, else kept as a retired file. Under the writer lock,
        after _recover. Twins in ``typed/`` are swept the same way."""
        records: list[dict[str, Any]] | None = None
        for root in (self._events, self._typed):
            twins = root == self._typed
            live = {tmp_name(p) for p, e in self._files.items() if e.typed or not twins}
            strays = [
                tmp
                for tmp in root.glob(f"category=*/month=*/{pattern}")
                if str(tmp.relative_to(root)) not in live
            ]
            if not strays:
                continue
            records = self._all_records() if records is None else records
            named = {
                tmp_name(raw["path"]): raw["path"]
                for record in records
                for raw in record.get("add", ())
                if raw.get("typed") or not twins
            }
            for tmp in strays:
                path = named.get(str(tmp.relative_to(root)))
                if path is None:
                    tmp.unlink(missing_ok=True)
                elif not (root / retired_name(path)).exists():
                    os.replace(tmp, root / retired_name(path))

    def _discard(self, stem: str) -> None:
        """Delete the temporary files (and twins) of a write that failed before its commit."""
        for root in (self._events, self._typed):
            for tmp in root.glob(f"category=*/month=*/.{stem}*.parquet.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def _publish(self, record: dict[str, Any], start: int) -> None:
        """Rename a commit's files into place once its line is durable. A failure is logged,
        not raised (the commit stands; readers find the files under their temporary names)
        and the next writer's recovery publishes them."""
        try:
            self._finish(record)
        except OSError as error:
            _LOG.warning("publishing commit %s of %s deferred: %s", record["n"], self.path, error)
            return
        if self._finished == start:
            self._finished = self._offset

    def _deferred(self, what: str, action: Callable[[], object]) -> None:
        """Housekeeping after a commit (sealing, saving checkpoints and indexes): a failure
        is logged and left for a later writer, never raised, since the commit stands."""
        try:
            action()
        except (OSError, pa.ArrowException) as error:
            _LOG.warning("%s in %s deferred: %s", what, self.path, error)

    def _all_records(self) -> list[dict[str, Any]]:
        records, _, _ = self._log.read_from(0)
        return records

    def _finish(self, record: dict[str, Any]) -> None:
        """Retire the files (and twins) a commit replaced and publish those it added: each
        step is a rename that a later run repeats harmlessly, so recovery calls this again."""
        for path in record.get("remove", ()):
            for root in (self._events, self._typed):
                final = root / path
                if final.exists():
                    os.replace(final, root / retired_name(path))
        if "remove" in record:
            kill_point(f"{record['kind']}.after_retire")
        for raw in record.get("add", ()):
            path = raw["path"]
            roots = (self._events, self._typed) if raw.get("typed") else (self._events,)
            for root in roots:
                tmp = root / tmp_name(path)
                if tmp.exists() and not (root / path).exists():
                    os.replace(tmp, root / path)

    # -- compaction ----------------------------------------------------------------------

    def compact(
        self,
        *,
        min_files: int = 1,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, int]:
        """Seal the unsealed tail, then rewrite each time partition that has at least
        ``min_files`` files (or one file not yet clustered) into one file clustered by stream
        (sorted by stream id and version, small row groups), with every event and hash
        unchanged. Safe while readers and writers run: replaced files stay for readers of
        older snapshots until :meth:`vacuum`. Returns counts of partitions, files and rows."""
        lock = FileLock(self._meta / COMPACT_LOCK)
        done = {"partitions": 0, "files_in": 0, "files_out": 0, "rows": 0}
        with writing(self.path, "the compaction"), lock.hold():
            self.flush()
            with self._writer_lock.hold(), self._state_lock:
                # A compaction that crashed may have left its new files, committed (and
                # published by _recover in flush) or not (debris): only the latter go.
                self._recover()
                self._sweep(".c*.parquet.tmp")
            with self._state_lock:
                groups: dict[tuple[str, str], list[FileEntry]] = {}
                for entry in self._files.values():
                    groups.setdefault((entry.category, entry.month), []).append(entry)
            chosen = []
            for _partition, entries in sorted(groups.items()):
                # A clustered file without a twin (lakes written before twins) is rewritten
                # to gain one.
                clustered = (
                    len(entries) == 1
                    and entries[0].path.rpartition("/")[2].startswith("c")
                    and entries[0].typed is not None
                )
                if not (clustered or len(entries) < min_files):
                    chosen.append(entries)
            # Every input file is checked against its digest before anything is rewritten
            # (files of lakes written before digests: event by event, as each is read).
            self._check_digests([e for entries in chosen for e in entries])
            for entries in chosen:
                table = self._scan(entries, None)
                if any(e.sha256 is None for e in entries):
                    self._check_hashes(table)
                table = table.sort_by([("stream_id", "ascending"), ("version", "ascending")])
                stem = f"c{uuid.uuid4().hex[:12]}"
                try:
                    new = self._write_files(
                        table, stem, row_group_rows=COMPACT_ROW_GROUP_ROWS, twin_rows=0
                    )
                except BaseException:
                    self._discard(stem)
                    raise
                kill_point("compact.before_commit")
                with self._writer_lock.hold(), self._state_lock:
                    try:
                        self._recover()
                        if any(e.path not in self._files for e in entries):
                            self._discard(stem)  # someone else compacted: leave the log be
                            continue
                        record = {
                            "n": self._commit_number + 1,
                            "kind": "compact",
                            "add": [e.to_json() for e in new],
                            "remove": [e.path for e in entries],
                            "at": _now_us(),
                        }
                        start = self._offset
                        self._offset = self._log.append(record, valid_end=self._offset)
                    except BaseException:
                        self._discard(stem)  # not committed: leave nothing behind
                        raise
                    kill_point("compact.after_commit")
                    self._publish(record, start)
                    self._apply(record, foreign=False)
                    kill_point("compact.after_publish")
                    self._deferred("saving the store checkpoint", self._write_checkpoint)
                done["partitions"] += 1
                done["files_in"] += len(entries)
                done["files_out"] += len(new)
                done["rows"] += table.num_rows
                if progress is not None:
                    progress(table.num_rows)
            if done["partitions"]:
                with self._writer_lock.hold(), self._state_lock:
                    self._deferred("recovering", self._recover)
                    self._deferred("saving the writer index", self._save_writer_index)
        return done

    # Compaction seals what it writes with new digests, so it must never take in a file that
    # no longer holds what was committed: files with a digest are checked by it (on every
    # core), files of lakes written before digests event by event as they are read.

    def _check_digests(self, entries: list[FileEntry]) -> None:
        with_digest = [e for e in entries if e.sha256 is not None]
        digests = self._readers().map(lambda e: file_digest(self._resolve(e.path)), with_digest)
        for entry, digest in zip(with_digest, digests, strict=True):
            if digest != entry.sha256:
                self._refuse_altered(entry.path, str(self._events / entry.path))

    def _check_hashes(self, table: pa.Table) -> None:
        bad = np.flatnonzero(~hashes_match(table))
        if len(bad):
            position = table["global_position"][int(bad[0])].as_py()
            self._refuse_altered(f"the file holding position {position}", str(self.path))

    def _refuse_altered(self, what: str, path: str) -> NoReturn:
        raise CorruptLakeError(
            f"Compaction stopped: {what} no longer holds what was committed, and compaction "
            "would seal the altered events under a new digest.",
            hint=f"run `esa verify {self.path}` to see what was altered and where; restore "
            "the file from a backup, then compact again. Nothing was rewritten from it.",
            path=path,
        )

    def vacuum(self, *, older_than: timedelta = timedelta(hours=1)) -> int:
        """Delete files that compaction replaced more than ``older_than`` ago (readers pinned
        to older positions may still read them until then), and their typed twins. Returns
        how many events files were deleted."""
        cutoff = _now_us() - int(older_than.total_seconds() * 1_000_000)
        removed = 0
        with writing(self.path, "the vacuum"), self._writer_lock.hold(), self._state_lock:
            self._recover()
            for record in self._all_records():
                if record["kind"] == "compact" and record["at"] <= cutoff:
                    if not all(self._holds(raw["path"]) for raw in record["add"]):
                        continue  # the files it replaced still hold the last copies
                    for path in record["remove"]:
                        if path in self._files:
                            continue
                        (self._typed / retired_name(path)).unlink(missing_ok=True)
                        retired = self._events / retired_name(path)
                        if retired.exists():
                            retired.unlink()
                            removed += 1
                            kill_point("vacuum.after_delete")
        return removed

    def _holds(self, path: str) -> bool:
        """Whether a file a commit added is still there (or was replaced in turn)."""
        if path not in self._files:
            return True
        return any((self._events / name).exists() for name in (path, tmp_name(path)))


class Subscription:
    """A catch-up subscription (see :meth:`EventStore.subscribe`). Iterate it for
    :class:`~esanalytics.events.RecordedEvent` objects, or call :meth:`batches` for Arrow
    record batches; ``position`` is the checkpoint to store; :meth:`stop` ends iteration."""

    def __init__(
        self,
        store: EventStore,
        from_position: int,
        categories: Iterable[str] | None,
        event_types: Iterable[str] | None,
        poll_interval: float,
    ) -> None:
        self.store = store
        self.position = from_position
        self._categories = None if categories is None else list(categories)
        self._event_types = None if event_types is None else list(event_types)
        self._poll = poll_interval
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def batches(self, *, timeout: float | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches of new events; with ``timeout``, stops after that many seconds
        without a new commit."""
        idle_since = time.monotonic()
        while not self._stopped.is_set():
            head = self.store.refresh()
            if head > self.position:
                for batch in self.store.iter_batches(
                    from_position=self.position,
                    position=head,
                    categories=self._categories,
                    event_types=self._event_types,
                ):
                    yield batch
                    if batch.num_rows:
                        self.position = int(batch["global_position"][-1].as_py())
                    if self._stopped.is_set():
                        return
                self.position = head
                idle_since = time.monotonic()
                continue
            if timeout is not None and time.monotonic() - idle_since >= timeout:
                return
            self._stopped.wait(self._poll)

    def events(self, *, timeout: float | None = None) -> Iterator[Any]:
        from esanalytics.events import RecordedEvent

        for batch in self.batches(timeout=timeout):
            for row in batch.to_pylist():
                self.position = row["global_position"]
                yield RecordedEvent.from_row(row)

    def __iter__(self) -> Iterator[Any]:
        return self.events()


@dataclass(frozen=True)
class LakeSnapshot:
    """See :meth:`EventStore.snapshot`."""

    position: int
    files: list[str]
    tail: pa.Table
    entries: list[FileEntry]  # the same files, with their position and time ranges
    #: Where each file's typed twin is now (None for a file without one), taken with them.
    twins: list[str | None] = dataclasses.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _View:
    position: int
    entries: list[FileEntry]
    tail: list[tuple[Any, ...]]
    predicate: Expression
    #: A fresh view of the same read: what a read takes when compaction replaced its files.
    again: Callable[[], _View]


def _first_repeated(values: Sequence[str]) -> str:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    raise AssertionError("no value is repeated")


def _rows_table(rows: Sequence[tuple[Any, ...]]) -> pa.Table:
    """An EVENT_SCHEMA table of row tuples (times as epoch µs)."""
    columns = list(zip(*rows, strict=True))
    arrays = []
    for field, values in zip(EVENT_SCHEMA, columns, strict=True):
        if pa.types.is_timestamp(field.type):
            arrays.append(pa.array(values, pa.int64()).view(TIMESTAMP))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


def _prepared_table(prepared: Sequence[_Prepared]) -> pa.Table:
    """An ingest table of prepared appends (for appends too large to inline)."""
    occurred = [o for p in prepared for o in p.occurred_us]
    return pa.table(
        {
            "stream_id": [p.stream_id for p in prepared for _ in p.event_ids],
            "category": [p.category for p in prepared for _ in p.event_ids],
            "event_id": [i for p in prepared for i in p.event_ids],
            "event_type": [t for p in prepared for t in p.event_types],
            "schema_version": pa.array(
                [v for p in prepared for v in p.schema_versions], pa.int32()
            ),
            "occurred_at": pa.array(occurred, pa.int64()).view(TIMESTAMP),
            "data": [d for p in prepared for d in p.data],
            "metadata": [m for p in prepared for m in p.metadata],
        }
    )


@dataclass(frozen=True, slots=True)
class _StreamCut:
    """One stream's rows up to a position (and system time), within a version range."""

    stream_id: str
    position: int
    as_of_us: int | None
    low: int
    high: int

    def read_from(self, entry: FileEntry, store: EventStore) -> pa.Table:
        """Decode only the row groups whose stream-id statistics can hold the stream
        (compacted files are sorted by stream, in small row groups), then keep its rows."""

        metadata, bounds = store._footer(entry)
        groups = [i for i, (low, high) in enumerate(bounds) if low <= self.stream_id <= high]
        if not groups:
            return EVENT_SCHEMA.empty_table()
        table = store._row_groups(entry, metadata, groups)
        mask = pc.and_(
            pc.equal(table["stream_id"], self.stream_id),
            pc.less_equal(table["global_position"], self.position),
        )
        if self.low > 1 or self.high < 2**62:
            version = table["version"]
            mask = pc.and_(
                mask,
                pc.and_(pc.greater_equal(version, self.low), pc.less_equal(version, self.high)),
            )
        if self.as_of_us is not None:
            mask = pc.and_(
                mask, pc.less_equal(table["recorded_at"].cast(pa.int64()), self.as_of_us)
            )
        table = table.filter(mask)
        columns = table.columns
        columns.insert(2, pa.array([entry.category] * table.num_rows, pa.string()))
        return pa.Table.from_arrays(columns, schema=EVENT_SCHEMA)


def _stream_map(placed: pa.Table) -> dict[str, list[int]]:
    """Each stream of a placed batch, with the first and last version it gives it."""
    streams = placed.group_by("stream_id").aggregate([("version", "min"), ("version", "max")])
    return {
        s: [lo, hi]
        for s, lo, hi in zip(
            streams["stream_id"].to_pylist(),
            streams["version_min"].to_pylist(),
            streams["version_max"].to_pylist(),
            strict=True,
        )
    }


def _merge_heads(heads: dict[str, int], table: pa.Table) -> None:
    if table.num_rows:
        grouped = table.group_by("stream_id").aggregate([("version", "max")])
        for stream_id, version in zip(
            grouped["stream_id"].to_pylist(), grouped["version_max"].to_pylist(), strict=True
        ):
            heads[stream_id] = max(version, heads.get(stream_id, 0))


def _month_of(us: int) -> str:
    return str(np.datetime64(us, "us").astype("datetime64[M]"))


def _split_partitions(table: pa.Table) -> list[tuple[str, str, pa.Table]]:
    """Rows grouped by (category, month), each group contiguous and in its original order."""
    month_codes = table["recorded_at"].cast(pa.int64()).to_numpy().astype("datetime64[us]")
    months = month_codes.astype("datetime64[M]").astype(np.int64)
    encoded = pc.dictionary_encode(table["category"]).combine_chunks()
    cats = encoded.indices.to_numpy().astype(np.int64)
    key = (months - months.min()) * (len(encoded.dictionary) + 1) + cats
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    bounds = np.r_[0, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1, len(order)]
    sorted_table = table.take(pa.array(order))
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        first = int(order[lo])
        month = str(month_codes[first].astype("datetime64[M]"))
        category = encoded.dictionary[int(cats[first])].as_py()
        parts.append((category, month, sorted_table.slice(lo, hi - lo)))
    return parts


def _describe(
    relpath: str, category: str, month: str, body: pa.Table, size: int, sha256: str
) -> FileEntry:
    pos = pc.min_max(body["global_position"])
    rec = pc.min_max(body["recorded_at"].cast(pa.int64()))
    streams = pc.min_max(body["stream_id"])
    return FileEntry(
        path=relpath,
        category=category,
        month=month,
        rows=body.num_rows,
        min_position=pos["min"].as_py(),
        max_position=pos["max"].as_py(),
        min_recorded_us=rec["min"].as_py(),
        max_recorded_us=rec["max"].as_py(),
        min_stream=streams["min"].as_py(),
        max_stream=streams["max"].as_py(),
        bytes=size,
        sha256=sha256,
    )


def open_store(path: str | os.PathLike[str], *, create: bool = False) -> EventStore:
    """Open the lake at ``path``; with ``create=True`` make it if it does not exist.

    >>> import tempfile, esanalytics as esa
    >>> esa.open(tempfile.mkdtemp() + "/lake", create=True).head
    0
    """
    root = Path(path)
    marker = root / LAKE_DIR / MARKER
    if not marker.exists():
        if not create:
            raise LakeNotFoundError(
                f"There is no lake at {root}.",
                hint="pass create=True to make a new one, or run `esa demo` to build the sample "
                "lake under data/.",
                cli_hint=f"check the path; `esa init {root}` makes a new, empty lake there, and "
                "`esa demo` builds the sample lake under data/.",
                path=str(root),
            )
        # (a creation cut short leaves only its own two folders: a retry finishes it)
        if root.exists() and any(p.name not in (LAKE_DIR, EVENTS_DIR) for p in root.iterdir()):
            raise ValidationError(
                f"{root} exists and holds other files; a lake needs a folder of its own.",
                hint="pick a new or empty folder for the lake.",
                path=str(root),
            )
        with writing(root, "the new lake"):  # a retry with create=True finishes it
            meta = make_dirs_durably(root, LAKE_DIR)
            make_dirs_durably(root, EVENTS_DIR)
            log = meta / COMMIT_LOG
            log.touch()
            fsync_file(log)
            kill_point("create.before_marker")
            # (a name of its own: two processes may make one lake at once; either marker does)
            tmp = temporary_beside(marker)
            tmp.write_text(
                json.dumps(
                    {
                        "format": LAKE_FORMAT,
                        "version": LAKE_FORMAT_VERSION,
                        "created_at": datetime.now(UTC).isoformat(),
                    }
                )
            )
            fsync_file(tmp)
            os.replace(tmp, marker)
            fsync_dir(meta)
    else:
        try:
            info = json.loads(marker.read_text())
            damaged = not isinstance(info, dict) or not isinstance(info.get("version", 0), int)
        except OSError as error:
            raise CorruptLakeError(
                f"The lake's marker {marker} is unreadable: {error}.",
                hint="restore _esa/lake.json from a backup; it names the lake's format.",
                path=str(marker),
            ) from None
        except ValueError:  # (UnicodeDecodeError is one)
            damaged = True
        if damaged:
            raise CorruptLakeError(
                f"The lake marker {marker} is damaged: it is not the JSON object that marks "
                "a folder as a lake.",
                hint="restore it from a backup, or write it again: "
                f'{{"format": "{LAKE_FORMAT}", "version": {LAKE_FORMAT_VERSION}}}. It holds '
                "no events; `esa verify` then checks the rest. Nothing was read or written.",
                path=str(marker),
            )
        if info.get("format") != LAKE_FORMAT or info.get("version", 0) > LAKE_FORMAT_VERSION:
            raise CorruptLakeError(
                f"{root} is a lake of format {info.get('format')} v{info.get('version')}, which "
                "this esanalytics cannot read.",
                hint="upgrade esanalytics (pip install -U esanalytics).",
                path=str(root),
            )
    return EventStore(root)
