"""Reading the lake: pinning a read to one log position (:meth:`ReaderMixin._pin`),
finding where a committed file is now (:meth:`ReaderMixin._resolve`), scans, one-stream reads
through cached footers and row groups, snapshots for query engines, and the inventory."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from esanalytics._typing import TimeLike
from esanalytics.events import (
    EVENT_SCHEMA,
    FILE_SCHEMA,
    TIMESTAMP,
    category_of,
    to_epoch_us,
    validate_position,
    validate_stream_id,
)
from esanalytics.exceptions import (
    CorruptLakeError,
    EsaError,
    LakeChangedError,
    StreamNotFoundError,
)
from esanalytics.store.commitlog import (
    FileEntry,
)
from esanalytics.store.layout import (
    retired_name,
    tmp_name,
)
from esanalytics.store.results import (
    Events,
    Inventory,
)
from esanalytics.store.state import _LOG, StoreState, _month_of, _rows_table

if TYPE_CHECKING:
    from pyarrow.compute import Expression


# pyarrow.dataset and pyarrow.parquet import pandas, which takes a second: they are imported
# where files are read or written, so that `import esanalytics` stays fast.
_PARTITION_SCHEMA = pa.schema([("category", pa.string()), ("month", pa.string())])
_DATASET_SCHEMA = pa.schema(
    [*FILE_SCHEMA, pa.field("category", pa.string()), pa.field("month", pa.string())]
)
#: Decoded row groups kept per handle for one-stream reads (about 0.5 MB each).
_DECODED_CACHE_GROUPS = 128
#: Times a read takes a fresh view of its position when a file of its view was compacted and
#: vacuumed before it could open it, or moved while it opened it, before it gives up.
_READ_ATTEMPTS = 10
#: Rows a summary of the whole lake (streams(), inventory()) reads at a time.
_PIECE_ROWS = 2_000_000


class ReaderMixin(StoreState):
    """The reads of :class:`~esanalytics.store.eventstore.EventStore`."""

    # -- paths ---------------------------------------------------------------------------

    def _resolve(self, relpath: str, *, root: str | None = None) -> str:
        """:meth:`_locate`, as DuckDB and messages name it (``fs.uri``)."""
        return self.fs.uri(self._locate(relpath, root=root))

    def _arrow_path(self, relpath: str) -> str:
        """:meth:`_locate` for an events file, as ``fs.arrow`` names it."""
        return self.fs.arrow_path(self._locate(relpath))

    def _locate(self, relpath: str, *, root: str | None = None) -> str:
        """Where a committed file (below ``root``: ``events/``, or ``typed/`` for a twin) is
        now, as a lake-relative path for ``self.fs``. A file only moves forward (temporary name, final
        name, retired name, then deleted by vacuum), so looking in that order finds it even
        while a writer renames it between two looks. A file under no name was either
        replaced by a compaction and vacuumed after the reader pinned its view
        (LakeChangedError: the reader takes a fresh view) or lost (CorruptLakeError); a
        re-read of the commit log tells which."""
        root = root or self._events
        final = f"{root}/{relpath}"
        if not self.fs.renames_on_publish:
            # On object storage a file is written under its final name before its commit and
            # stays there until vacuum deletes it (compaction moves nothing): no look needed,
            # and a missing one fails the read that opens it.
            return final
        if self.fs.exists(final):  # the common case: one look
            return final
        for candidate in (tmp_name(relpath), relpath, retired_name(relpath)):
            full = f"{root}/{candidate}"
            if self.fs.exists(full):
                return full
        final = self.fs.uri(final)
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
                located = self._locate(entry.path)
            except LakeChangedError:
                continue
            path = self.fs.uri(located)
            try:
                rows = pq.read_metadata(
                    self.fs.arrow_path(located), filesystem=self.fs.arrow
                ).num_rows
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
                paths = [self._arrow_path(entry.path) for entry in entries]
                import pyarrow.dataset as ds

                dataset = ds.dataset(
                    paths,
                    schema=_DATASET_SCHEMA,
                    format="parquet",
                    filesystem=self.fs.arrow,
                    partitioning=ds.partitioning(_PARTITION_SCHEMA, flavor="hive"),
                    partition_base_dir=self.fs.arrow_path(self._events),
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
            handle = pq.ParquetFile(
                self._arrow_path(entry.path), metadata=metadata, filesystem=self.fs.arrow
            )
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

            metadata = pq.read_metadata(self._arrow_path(entry.path), filesystem=self.fs.arrow)
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


@dataclass(frozen=True, slots=True)
class _StreamCut:
    """One stream's rows up to a position (and system time), within a version range."""

    stream_id: str
    position: int
    as_of_us: int | None
    low: int
    high: int

    def read_from(self, entry: FileEntry, store: ReaderMixin) -> pa.Table:
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
