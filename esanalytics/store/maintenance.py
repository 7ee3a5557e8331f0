"""Maintenance: sealing the unsealed tail into Parquet (``flush``), compaction (rewriting a
partition's files into one file clustered by stream, with its typed twin) and vacuum
(deleting the files compaction replaced, once no reader can need them)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, NoReturn

import numpy as np
import pyarrow as pa

from esanalytics.events import (
    hashes_match,
)
from esanalytics.exceptions import (
    CorruptLakeError,
)
from esanalytics.store._faults import kill_point
from esanalytics.store.commitlog import (
    FileEntry,
)
from esanalytics.store.layout import (
    COMPACT_LOCK,
    WRITER_LOCK,
    retired_name,
    tmp_name,
    writing,
)
from esanalytics.store.objectlog import retried
from esanalytics.store.state import _now_us, _rows_table
from esanalytics.store.writer import WriterMixin

if TYPE_CHECKING:
    pass


#: Rows per row group in compacted files: small enough that a one-stream read decodes little
#: beyond its own events, large enough to keep footers small (see benchmarks/store_bench.py).
COMPACT_ROW_GROUP_ROWS = 1024


class MaintenanceMixin(WriterMixin):
    """Sealing, compaction and vacuum of :class:`~esanalytics.store.eventstore.EventStore`."""

    @retried
    def flush(self) -> int:
        """Seal the events of small appends that are still only in the commit log into
        Parquet now, so that plain Parquet readers see every committed event. Returns how
        many events were sealed. (Appends seal by themselves every SEAL_ROWS events or when
        the oldest unsealed event is SEAL_AGE_US old; the store's readers never need this.)"""
        with writing(self.path, "the seal"), self.fs.lock(WRITER_LOCK), self._state_lock:
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
            written = self._write_files(_rows_table(rows), f"a{number:012d}{self._token}-seal")
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
                self._discard(f"a{number:012d}{self._token}-seal")
            raise
        kill_point("seal.after_commit")
        self._publish(record, start)
        self._apply(record, foreign=False)
        kill_point("seal.after_publish")
        self._deferred("saving the store checkpoint", self._write_checkpoint)
        return len(rows)

    # -- compaction ----------------------------------------------------------------------

    @retried
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
        done = {"partitions": 0, "files_in": 0, "files_out": 0, "rows": 0}
        with writing(self.path, "the compaction"), self.fs.lock(COMPACT_LOCK):
            self.flush()
            with self.fs.lock(WRITER_LOCK), self._state_lock:
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
                with self.fs.lock(WRITER_LOCK), self._state_lock:
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
                with self.fs.lock(WRITER_LOCK), self._state_lock:
                    self._deferred("recovering", self._recover)
                    self._deferred("saving the writer index", self._save_writer_index)
        return done

    # Compaction seals what it writes with new digests, so it must never take in a file that
    # no longer holds what was committed: files with a digest are checked by it (on every
    # core), files of lakes written before digests event by event as they are read.

    def _check_digests(self, entries: list[FileEntry]) -> None:
        with_digest = [e for e in entries if e.sha256 is not None]
        digests = self._readers().map(lambda e: self.fs.digest(self._locate(e.path)), with_digest)
        for entry, digest in zip(with_digest, digests, strict=True):
            if digest != entry.sha256:
                self._refuse_altered(entry.path, self.fs.uri(f"{self._events}/{entry.path}"))

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
        how many events files were deleted.

        On object storage a replaced file stays under its own name until then, and files that
        no commit names (written by a writer that lost its race, or died before its commit)
        are deleted too, once they are ``older_than`` old (a writer still about to commit
        them is younger)."""
        cutoff = _now_us() - int(older_than.total_seconds() * 1_000_000)
        removed = 0
        with writing(self.path, "the vacuum"), self.fs.lock(WRITER_LOCK), self._state_lock:
            self._recover()
            for record in self._all_records():
                if record["kind"] == "compact" and record["at"] <= cutoff:
                    if not all(self._holds(raw["path"]) for raw in record["add"]):
                        continue  # the files it replaced still hold the last copies
                    for path in record["remove"]:
                        if path in self._files:
                            continue
                        name = retired_name(path) if self.fs.renames_on_publish else path
                        self.fs.remove(f"{self._typed}/{name}")
                        retired = f"{self._events}/{name}"
                        if self.fs.exists(retired):
                            self.fs.remove(retired)
                            removed += 1
                            kill_point("vacuum.after_delete")
            if not self.fs.renames_on_publish:
                removed += self._vacuum_strays(cutoff)
        return removed

    def _vacuum_strays(self, cutoff: int) -> int:
        """On object storage: delete the files no commit names that are older than ``cutoff``
        (epoch µs); how many events files went."""
        named = {
            f"{root}/{raw['path']}"
            for record in self._all_records()
            for raw in record.get("add", ())
            for root in (self._events, self._typed)
        }
        removed = 0
        for root in (self._events, self._typed):
            for path in self.fs.list_files(root):
                if path in named or not path.endswith(".parquet"):
                    continue
                if self.fs.modified(path) * 1_000_000 <= cutoff:
                    self.fs.remove(path)
                    removed += root == self._events
        return removed

    def _holds(self, path: str) -> bool:
        """Whether a file a commit added is still there (or was replaced in turn)."""
        if path not in self._files:
            return True
        return any(self.fs.exists(f"{self._events}/{name}") for name in (path, tmp_name(path)))
