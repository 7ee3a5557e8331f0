"""Writing: append, append_many, ingest and import_batch, and the commit protocol they share.
Under the writer lock, after recovery: check expected versions and event ids, place and hash
the rows, write new files (hidden, synced; each large part with its typed twin), append one
durable commit line naming them, then publish them (:meth:`WriterMixin._commit`). Small
appends carry their rows in the commit line itself and are sealed into Parquet later."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from esanalytics.events import (
    EVENT_SCHEMA,
    FILE_SCHEMA,
    TIMESTAMP,
    NewEvent,
    canonical_row,
    canonical_rows,
    category_of,
    chain_hashes,
    dump_json,
    from_epoch_us,
    normalize_event_id,
    row_hash,
    to_epoch_us,
    uuid_keys,
    validate_category,
    validate_event_type,
    validate_schema_version,
    validate_stream_id,
)
from esanalytics.exceptions import (
    ConcurrencyError,
    DuplicateEventError,
    EmptyAppendError,
    ImportConflictError,
    InvalidExpectedVersionError,
    ValidationError,
)
from esanalytics.store import ingest as _ingest
from esanalytics.store import typed as _typed
from esanalytics.store._faults import kill_point
from esanalytics.store.commitlog import (
    FileEntry,
    TypedTwin,
)
from esanalytics.store.layout import (
    WRITER_LOCK,
    partition_dir,
    tmp_name,
    writing,
)
from esanalytics.store.objectlog import retried
from esanalytics.store.recovery import RecoveryMixin
from esanalytics.store.results import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Commit,
    ExpectedVersion,
    StreamAppend,
)
from esanalytics.store.state import _month_of, _now_us

if TYPE_CHECKING:
    import pandas as pd


#: Rows whose positions and versions are placed and whose hashes are still to be computed.
_PLACED_SCHEMA = EVENT_SCHEMA.set(11, EVENT_SCHEMA.field(11).with_nullable(True)).set(
    12, EVENT_SCHEMA.field(12).with_nullable(True)
)
_COMPRESSION = "zstd"
#: Columns with few distinct values; ids, hashes and payloads gain nothing from a dictionary.
_DICTIONARY_COLUMNS = ["stream_id", "event_type"]
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
#: Ingests at least this large (once the index is stale by a quarter), and every compaction,
#: save the writer index.
_INDEX_AFTER_ROWS = 500_000
SEAL_AGE_US = 2_000_000


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


class WriterMixin(RecoveryMixin):
    """The writes of :class:`~esanalytics.store.eventstore.EventStore`."""

    if TYPE_CHECKING:  # defined by the layer above (maintenance.py)

        def _seal(self) -> int: ...

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

    @retried
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
        with writing(self.path, "the append"), self.fs.lock(WRITER_LOCK), self._state_lock:
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

    @retried
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
        with writing(self.path, "the ingest"), self.fs.lock(WRITER_LOCK), self._state_lock:
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

    @retried
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
        with writing(self.path, "the import"), self.fs.lock(WRITER_LOCK), self._state_lock:
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
                    stem = f"a{number:012d}{self._token}-{index:04d}"
                    pending.append(pool.submit(self._write_files, chunk, stem))
                    if progress is not None:
                        progress(chunk.num_rows)
                written = [entry for future in pending for entry in future.result()]
            record["add"] = [entry.to_json() for entry in written]
            record.update(extra or {})
            commit = self._commit(record, stream_map)
        except BaseException:
            if self._offset == start:  # not committed: leave nothing behind
                self._discard(f"a{number:012d}{self._token}-")
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
                    self.fs.make_dirs(f"{self._events}/{folder}")
                    folders.add(folder)
                target = f"{self._events}/{self._written_name(relpath)}"
                body = part.select(FILE_SCHEMA.names).cast(FILE_SCHEMA)
                derived = None
                if twins is not None and body.num_rows >= twin_rows:
                    derived = twins.submit(_typed.derive, body)
                small = body.num_rows < 10_000
                import pyarrow.parquet as pq

                with self.fs.open_output(target) as sink:
                    pq.write_table(
                        body,
                        sink,
                        # Small files are short-lived (compaction rewrites them): write them fast.
                        compression="snappy" if small else _COMPRESSION,
                        compression_level=None if small else 1,
                        use_dictionary=False if small else _DICTIONARY_COLUMNS,
                        row_group_size=row_group_rows or max(body.num_rows, 1),
                        write_page_index=False,
                    )
                self.fs.sync(target)
                entry = _describe(
                    relpath, category, month, body, self.fs.size(target), self.fs.digest(target)
                )
                if derived is not None:
                    kill_point("typed.before_write")
                    if folder not in twin_folders:
                        self.fs.make_dirs(f"{self._typed}/{folder}")
                        twin_folders.add(folder)
                    entry = replace(entry, typed=self._write_twin(derived.result(), relpath))
                    kill_point("typed.after_write")
                entries.append(entry)
        for folder in folders:
            self.fs.sync_dir(f"{self._events}/{folder}")
        for folder in twin_folders:
            self.fs.sync_dir(f"{self._typed}/{folder}")
        return entries

    def _write_twin(
        self, derived: tuple[pa.Table, dict[str, str], bool], relpath: str
    ) -> TypedTwin:
        """Write the typed twin of an events file (what :func:`typed.derive` made of its
        rows) as a hidden, synced temporary file."""
        import pyarrow.parquet as pq

        twin, fields, more = derived
        target = f"{self._typed}/{self._written_name(relpath)}"
        text = [_typed.field_column(name) for name, kind in fields.items() if kind == "VARCHAR"]
        with self.fs.open_output(target) as sink:
            pq.write_table(
                twin,
                sink,
                compression=_COMPRESSION,
                compression_level=1,
                use_dictionary=[*_DICTIONARY_COLUMNS, *text],
                row_group_size=TWIN_ROW_GROUP_ROWS,
                write_page_index=False,
            )
        self.fs.sync(target)
        return TypedTwin(relpath, self.fs.digest(target), self.fs.size(target), fields, more)

    def _written_name(self, relpath: str) -> str:
        """The name a new file is written under before its commit: hidden (``.<name>.tmp``,
        renamed by :meth:`_finish` once the commit line is durable) where the seam renames
        on publish, else its final name (which no reader opens before a commit names it)."""
        return tmp_name(relpath) if self.fs.renames_on_publish else relpath


def _first_repeated(values: Sequence[str]) -> str:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    raise AssertionError("no value is repeated")


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
