"""What one store handle knows of the log: the files and unsealed rows as of its last look
at the commit log, the saved checkpoint that lets it skip reading the whole log, and the
refresh that takes in commits made by others. The lowest layer of
:class:`~esanalytics.store.eventstore.EventStore`: the reader, the writer index, recovery,
the writer and maintenance build on :class:`StoreState` in that order. Every file it touches
goes through ``self.fs`` (:mod:`esanalytics.store.fs`)."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from esanalytics.events import (
    EVENT_SCHEMA,
    GENESIS_HASH,
    TIMESTAMP,
)
from esanalytics.exceptions import (
    CorruptLakeError,
    ValidationError,
)
from esanalytics.store.commitlog import (
    CommitLine,
    FileEntry,
    replay,
)
from esanalytics.store.fs import LakeFS, LocalFS
from esanalytics.store.layout import (
    CHECKPOINT,
    EVENTS_DIR,
    LAKE_DIR,
    TYPED_DIR,
)

if TYPE_CHECKING:
    pass


_LOG = logging.getLogger("esanalytics.store")


def _now_us() -> int:
    return time.time_ns() // 1000


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


class StoreState:
    """The state of a store handle and its upkeep (see the module docstring)."""

    def __init__(self, root: Path | str, fs: LakeFS | None = None) -> None:
        #: The lake folder (for a lake on local disk; other modules name files by it), or
        #: its URL (``s3://bucket/prefix``) for a lake on object storage.
        self.path: Path | str = root
        #: Every file of the lake is reached through this seam (see esanalytics.store.fs).
        self.fs: LakeFS = fs if fs is not None else LocalFS(Path(root))
        # On object storage new files are written under their final names before the commit
        # that names them, by writers that do not hold a common lock: each handle's names
        # carry a token of their own (local names are made unique by the writer lock).
        self._token = "" if self.fs.renames_on_publish else f"-{uuid.uuid4().hex[:10]}"
        # Lake-relative folders, as the seam names them.
        self._meta = LAKE_DIR
        self._events = EVENTS_DIR
        self._typed = TYPED_DIR
        self._log = self.fs.commit_log()
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
        path = f"{self._meta}/{CHECKPOINT}"
        if not self.fs.exists(path):
            return
        try:
            state = json.loads(self.fs.read_bytes(path).decode())
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
        path = self.fs.uri(f"{self._meta}/{CHECKPOINT}")
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
        if not self.fs.renames_on_publish:
            # Files written under their final names before a first commit that never came
            # (its writer died or lost): strays for vacuum. An emptied log is caught by the
            # saved state's offset.
            return
        found = next((p for p in self.fs.list_files(self._events) if p.endswith(".parquet")), None)
        if found is not None:
            raise CorruptLakeError(
                f"The commit log {self._log.path} holds no commits, but "
                f"{self.fs.uri(self._events)} holds event files ({found.rpartition('/')[2]} "
                "and maybe more): the log was emptied or replaced.",
                hint="restore _esa/commits.log from a backup (`esa verify` names what is "
                "affected). A new lake needs a new folder. Nothing was written.",
                path=str(self._log.path),
            )

    def local_folder(self, what: str) -> Path:
        """The lake's folder, for ``what`` keeps files of its own in or beside it
        (materialized projections, handler snapshots, an import's rejected rows); on object
        storage, where those are not kept yet, a ValidationError that says so."""
        if isinstance(self.path, Path):
            return self.path
        raise ValidationError(
            f"{what} are kept only for lakes on local disk, and {self.path} is on object storage.",
            hint="read the lake on object storage directly (esa.open(url), Session, "
            "projection.state(session)), or copy it to a local folder for this.",
            path=str(self.path),
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
        data = json.dumps(state, separators=(",", ":")).encode()
        self.fs.write_atomic(f"{self._meta}/{CHECKPOINT}", data)

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

    @property
    def head(self) -> int:
        """The global position of the last committed event (0 for an empty lake)."""
        return self.refresh()

    def files(self) -> list[FileEntry]:
        """The committed files, as of now."""
        with self._state_lock:
            self.refresh()
            return list(self._files.values())

    def _all_records(self) -> list[dict[str, Any]]:
        records, _, _ = self._log.read_from(0)
        return records

    if TYPE_CHECKING:  # defined by the layers above (writer_index.py)

        def _absorb(self, record: dict[str, Any], added: list[FileEntry]) -> None: ...

    def commit_lines(self) -> list[CommitLine]:
        """Every complete line of the commit log, with the digest of its body and the link
        it carries (what ``verify`` and signed checkpoints build on)."""
        lines, _, _ = self._log.lines(0)
        return lines


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


def _month_of(us: int) -> str:
    return str(np.datetime64(us, "us").astype("datetime64[M]"))
