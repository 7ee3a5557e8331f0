"""Recovery: finishing what a crashed writer left, under the writer lock. Files of a commit
whose line is durable are published (renamed from their temporary names) and the files a
compaction replaced are retired; temporary files no commit names are swept; the unsealed rows
are rehashed before a writer links to them; a log rolled back under committed files is
refused."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from esanalytics.events import (
    rows_match,
)
from esanalytics.exceptions import (
    CorruptLakeError,
)
from esanalytics.store._faults import kill_point
from esanalytics.store.layout import (
    retired_name,
    tmp_name,
)
from esanalytics.store.objectlog import LostRace
from esanalytics.store.state import _LOG
from esanalytics.store.writer_index import WriterIndexMixin

if TYPE_CHECKING:
    pass


class RecoveryMixin(WriterIndexMixin):
    """The recovery steps of :class:`~esanalytics.store.eventstore.EventStore`."""

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
        if not self.fs.renames_on_publish:
            # Files are written under their final names before their commit there: one that
            # no commit names is a lost attempt's (vacuum removes it), not a rolled-back log.
            self._unnamed_checked = True
            return
        events, typed = f"{self._events}/", f"{self._typed}/"
        unnamed = [
            path
            for path in self.fs.list_files(self._events)  # any depth, as verify looks
            if path.endswith(".parquet") and path.removeprefix(events) not in self._files
        ]
        unnamed += [  # twins too: a writer would reuse their names
            path
            for path in self.fs.list_files(self._typed)
            if path.endswith(".parquet")
            and (
                (entry := self._files.get(path.removeprefix(typed))) is None or entry.typed is None
            )
        ]
        if unnamed:
            raise CorruptLakeError(
                f"{self.path} holds {len(unnamed)} event or typed file(s) that no commit of "
                f"{self._log.path} names (e.g. {unnamed[0]}): the "
                "commit log was rolled back or cut, or files were put there by hand.",
                hint="restore _esa/commits.log (and _esa/checkpoint.json) from the backup that "
                f"names them; `esa verify {self.path}` lists them. Stray files that are not "
                "the lake's must be moved out of it. Nothing was written.",
                path=self.fs.uri(unnamed[0]),
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
            inside = f"{root}/"
            strays = [
                tmp
                for tmp in self.fs.glob(root, f"category=*/month=*/{pattern}")
                if tmp.removeprefix(inside) not in live
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
                path = named.get(tmp.removeprefix(inside))
                if path is None:
                    self.fs.remove(tmp)
                elif not self.fs.exists(f"{root}/{retired_name(path)}"):
                    self.fs.rename(tmp, f"{root}/{retired_name(path)}")

    def _discard(self, stem: str) -> None:
        """Delete the temporary files (and twins) of a write that failed before its commit."""
        written = f".{stem}*.parquet.tmp" if self.fs.renames_on_publish else f"{stem}*.parquet"
        for root in (self._events, self._typed):
            for tmp in self.fs.glob(root, f"category=*/month=*/{written}"):
                with contextlib.suppress(OSError):
                    self.fs.remove(tmp)

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
        except (OSError, pa.ArrowException, LostRace) as error:
            # (LostRace: another writer committed first; a seal is then theirs or the next's)
            _LOG.warning("%s in %s deferred: %s", what, self.path, error)

    def _finish(self, record: dict[str, Any]) -> None:
        """Retire the files (and twins) a commit replaced and publish those it added: each
        step is a rename that a later run repeats harmlessly, so recovery calls this again.
        On object storage nothing moves: files are written under their final names, and the
        files a compaction replaced stay where they are (for readers of older positions)
        until vacuum deletes them."""
        if not self.fs.renames_on_publish:
            return
        for path in record.get("remove", ()):
            for root in (self._events, self._typed):
                final = f"{root}/{path}"
                if self.fs.exists(final):
                    self.fs.rename(final, f"{root}/{retired_name(path)}")
        if "remove" in record:
            kill_point(f"{record['kind']}.after_retire")
        for raw in record.get("add", ()):
            path = raw["path"]
            roots = (self._events, self._typed) if raw.get("typed") else (self._events,)
            for root in roots:
                tmp, final = f"{root}/{tmp_name(path)}", f"{root}/{path}"
                if self.fs.exists(tmp) and not self.fs.exists(final):
                    self.fs.rename(tmp, final)
