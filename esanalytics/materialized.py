"""Materialized projections: a projection's state written as Parquet inside the lake, with
the log position it is current to, and checkpoints of its past states.

    lake/projections/<name>/current.json   {"file", "position", "version", "sha256", "checkpoints"}
    lake/projections/<name>/state-v<version>-<position>.parquet
    lake/projections/<name>/checkpoint-v<version>-<position>.parquet   at multiples of a spacing

``refresh()`` is incremental for reducer projections: it folds only the events after the
stored position (reading only the files that can hold them) and merges them into the stored
state. A rebuild (``rebuild=True``, or a new projection version) computes the state from the
whole log. Either way the new file is written beside the old one and ``current.json`` is
swapped atomically (synced, then renamed), so readers see the old state or the new one, never
a mix. One refresh at a time writes a projection's folder (an ``flock`` on the folder); it starts by
deleting what a killed refresh left (temporary files, files no pointer names). A reader whose
file was replaced meanwhile by another process's refresh reads again from the new pointer.

Checkpoints make past states cheap: the state as of a system time or position is the
nearest checkpoint at or before it with the few events after it merged in, the same merge
an incremental refresh does. Recorded times never decrease along the log, so a system-time
cut is a position cut. Checkpoint files are written once (to a temporary name, then
renamed) and never change; a checkpoint is a pure function of the log up to its position.

Checkpoints sit at the multiples of a spacing that grows with the lake: ``checkpoint_every``
events (10,000 by default), doubled as often as it takes to keep at most
``max_checkpoints`` (32) of them. A lake of any size then has between half that many and that
many, evenly spread, and their disk stays bounded (at most 32 states). When the log outgrows
the spacing, a refresh drops every other checkpoint (the pointer stops naming them, then the
files are deleted); the ones kept are already on the wider grid, so nothing is recomputed.
A read answers from whichever of the log and the checkpoints before the cut reads the
fewest rows (the committed files' row counts, known unopened), so it reads no more than the
same question asked of the log.

The state is derived, so it is not covered by the log's hash chains: ``current.json``
records the SHA-256 of the state file and of every checkpoint file, and each read checks the
file it uses against it. An altered file is refused (rebuild it from the log with
``refresh(rebuild=True)``, ``esa materialize ... --rebuild``), and ``esa verify`` reports it.
A state written before digests is rebuilt on first use. The digests catch an edited file,
not someone who also rewrites ``current.json``: rebuild to be sure.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import duckdb
import pyarrow as pa

from esanalytics._typing import TimeLike
from esanalytics.engine import Session, sql_time
from esanalytics.events import to_epoch_us, to_utc, validate_position
from esanalytics.exceptions import CorruptLakeError, ValidationError
from esanalytics.projections import Projection, diff_sql
from esanalytics.store import EventStore, file_digest
from esanalytics.store._atomic import temporary_beside, write_whole
from esanalytics.store._faults import kill_point
from esanalytics.store.layout import fsync_dir, fsync_file, writing

__all__ = ["MaterializedProjection", "Refresh", "stored_state_problems"]

#: The stored files a pointer can name.
_STORED = re.compile(r"(state|checkpoint)-v\d+-\d{12}\.parquet")
#: Times a read follows a pointer that moved on while it read, before it gives up.
_READ_ATTEMPTS = 10
_T = TypeVar("_T")


@dataclass(frozen=True)
class Refresh:
    """What a refresh did: ``mode`` is ``rebuild``, ``incremental`` or ``unchanged``;
    ``checkpoints`` counts the checkpoint files it wrote."""

    mode: Literal["rebuild", "incremental", "unchanged"]
    position: int
    new_events: int
    rows: int
    seconds: float
    checkpoints: int = 0


class MaterializedProjection:
    """A reducer projection kept as Parquet in the lake, with checkpoints of its past states
    for fast answers as of a past time: at the multiples of ``checkpoint_every`` events (0:
    none), a spacing doubled as the log grows so that at most ``max_checkpoints`` are kept
    (None: never thinned).

    >>> import tempfile, esanalytics as esa
    >>> from esanalytics.catalog import account_balances
    >>> store = esa.open(tempfile.mkdtemp() + "/lake", create=True)
    >>> _ = store.append("account-1", [esa.NewEvent("MoneyDeposited", {"amount": 5})])
    >>> view = MaterializedProjection(store, account_balances)
    >>> view.refresh().mode, view.refresh().mode
    ('rebuild', 'unchanged')
    """

    def __init__(
        self,
        store: EventStore,
        projection: Projection,
        *,
        checkpoint_every: int = 10_000,
        max_checkpoints: int | None = 32,
    ) -> None:
        if checkpoint_every < 0:
            raise ValidationError(
                f"checkpoint_every={checkpoint_every} is negative.",
                hint="pass a number of events (0 for no checkpoints).",
                cli_hint="--checkpoint-every takes a number of events (0 for no checkpoints).",
            )
        if max_checkpoints is not None and max_checkpoints < 1:
            raise ValidationError(
                f"max_checkpoints={max_checkpoints} keeps no checkpoint.",
                hint="pass 1 or more (None never thins them; checkpoint_every=0 keeps none).",
                cli_hint="--max-checkpoints takes 1 or more (--checkpoint-every 0 keeps none).",
            )
        self.store = store
        self.projection = projection
        self.checkpoint_every = checkpoint_every
        self.max_checkpoints = max_checkpoints
        self.folder = (
            store.local_folder("Materialized projections") / "projections" / projection.name
        )

    def current(self) -> dict[str, Any] | None:
        """The pointer to the stored state, or None when there is none to use. A state file
        that another process's refresh replaced between two looks is followed to the new one."""
        for _ in range(_READ_ATTEMPTS):
            info = self._pointer()
            if info is None:
                return None
            if "sha256" not in info:  # written before digests: rebuilt on first use
                return None
            if (self.folder / info["file"]).exists():
                return info
            if self._pointer() == info:  # not moved on: the state file is gone
                return None
        return None

    def _pointer(self) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = json.loads((self.folder / "current.json").read_text())
        except (OSError, ValueError):
            return None
        return info

    def _checked(self, path: Path, digest: str | None) -> Path:
        """``path``, after checking its bytes against the digest recorded when it was
        written; an altered state is never served."""
        try:
            actual = file_digest(path)
        except FileNotFoundError:
            actual = None
        if digest is None or actual != digest:
            raise CorruptLakeError(
                f"The materialized projection {self.projection.name!r} has an altered stored "
                f"state: {path} is not the file that was written (its SHA-256 is not the one "
                "recorded in current.json).",
                hint=f"rebuild it from the log: `esa materialize {self.store.path} "
                f"{self.projection.name} --rebuild` (or refresh(rebuild=True)). Nothing was "
                "answered from it.",
                path=str(path),
            )
        return path

    # -- refreshing ------------------------------------------------------------------------

    def refresh(self, *, rebuild: bool = False) -> Refresh:
        """Bring the stored state up to the log's head. On a full disk or a read-only lake it
        raises :class:`~esanalytics.exceptions.StorageError` and the stored state is as
        before."""
        with writing(self.store.path, "the refresh of " + self.projection.name):
            self.folder.mkdir(parents=True, exist_ok=True)
            # One refresher at a time per projection (threads and processes): its temporary
            # files and the files no pointer names are then known to be debris of a kill.
            with self._locked(fcntl.LOCK_EX):
                self._clean()
                return self._refresh(rebuild)

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        """``flock`` on the projection's folder itself (nothing is written to hold it; each
        hold opens its own descriptor, so threads exclude each other as processes do)."""
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _clean(self) -> None:
        """Delete what a killed refresh left (under the refresh lock): temporary files, state
        files the pointer does not name, checkpoint files it does not record. Readers that
        still hold an older pointer find the new one (see :meth:`state`)."""
        current = self._pointer() or {}
        keep = {current.get("file"), *dict(current.get("checkpoints") or {})}
        for path in self.folder.iterdir():
            debris = path.name.startswith(".") and path.name.endswith(".tmp")
            unnamed = _STORED.fullmatch(path.name) is not None and path.name not in keep
            if debris or unnamed:
                path.unlink(missing_ok=True)

    def _refresh(self, rebuild: bool) -> Refresh:
        started = time.perf_counter()
        session = Session(self.store, category_views=False)
        head = session.position
        current = self.current()
        stale = current is None or current["version"] != self.projection.version
        mode: Literal["rebuild", "incremental"]
        recorded: dict[int, str] = {}
        if rebuild or stale or current is None:
            mode, since = "rebuild", 0
        else:
            mode, since = "incremental", int(current["position"])
            recorded = self._recorded(current)
        marks = self.spacing_marks(head)
        kept = {m: recorded[m] for m in marks if m in recorded}  # off the grid: thinned
        todo = [m for m in marks if m not in kept]
        same = current is not None and mode == "incremental" and since == head
        if same and not todo and kept == recorded:
            assert current is not None
            return Refresh("unchanged", head, 0, current["rows"], time.perf_counter() - started)
        base = None
        if current is not None and mode == "incremental":
            base = self._read(self._checked(self.folder / current["file"], current["sha256"]))
        new: list[Path] = []  # this refresh's checkpoint files: deleted if it fails
        try:
            rows, written = self._walk(session, current, since, base, marks, kept, new)
        except BaseException:  # the pointer was not swapped: nothing of this refresh stays
            named = dict((current or {}).get("checkpoints") or {})
            for path in new:  # (a rebuild rewrites the files named with the same bytes)
                if path.name not in named:
                    path.unlink(missing_ok=True)
            raise
        return Refresh(mode, head, head - since, rows, time.perf_counter() - started, written)

    def _walk(
        self,
        session: Session,
        current: dict[str, Any] | None,
        since: int,
        base: str | None,
        marks: list[int],
        kept: dict[int, str],
        new: list[Path],
    ) -> tuple[int, int]:
        """Write the missing checkpoints on the grid ``marks``, then the state at the head,
        and swap the pointer: (rows of the state, checkpoints written)."""
        head = session.position
        # Walk the grid from the newest known state before the first checkpoint to write
        # (the stored state, or a kept checkpoint when the grid gained older marks), each
        # step merging the events of one stretch into the state before it.
        at, state_sql, written = since, base, 0
        todo = [m for m in marks if m not in kept]
        if todo:
            older = [m for m in kept if m < todo[0]]
            if base is None or since >= todo[0] or (older and older[-1] > since):
                at = older[-1] if older else 0
                state_sql = self._read(self._kept(at, kept)) if at else None
            for mark in [m for m in marks if m > at]:
                if mark in kept:  # already written: continue from it
                    at, state_sql = mark, self._read(self._kept(mark, kept))
                    continue
                path = self._checkpoint_path(mark)
                new.append(path)
                self._write(session, self._merged(session, state_sql, at, mark), path)
                kept[mark] = file_digest(path)
                at, state_sql, written = mark, self._read(path), written + 1
            if base is not None and since > at:  # the stored state is newer than the walk
                at, state_sql = since, base
        # No new events: the stored state stands, only the checkpoints change.
        query = (
            None
            if base is not None and since == head
            else self._merged(session, state_sql, at, head)
        )
        digests = {self._checkpoint_path(m).name: kept[m] for m in sorted(kept)}
        rows = self._publish(session, query, previous=current, checkpoints=digests)
        return rows, written

    def spacing(self, head: int) -> int:
        """The checkpoint spacing for a log of ``head`` events: ``checkpoint_every``, doubled
        until at most ``max_checkpoints`` multiples of it fit (0: no checkpoints)."""
        every = self.checkpoint_every
        if every and self.max_checkpoints is not None:
            while head // every > self.max_checkpoints:
                every *= 2
        return every

    def spacing_marks(self, head: int) -> list[int]:
        """The positions a log of ``head`` events keeps checkpoints at, in order."""
        every = self.spacing(head)
        return list(range(every, head + 1, every)) if every else []

    def _recorded(self, current: Mapping[str, Any]) -> dict[int, str]:
        """The checkpoints the pointer records for this version: position to digest."""
        pattern = re.compile(rf"checkpoint-v{self.projection.version}-(\d{{12}})\.parquet")
        found = {}
        for name, digest in dict(current.get("checkpoints") or {}).items():
            match = pattern.fullmatch(name)
            if match:
                found[int(match.group(1))] = str(digest)
        return dict(sorted(found.items()))

    def _kept(self, mark: int, digests: Mapping[int, str]) -> Path:
        return self._checked(self._checkpoint_path(mark), digests.get(mark))

    def _merged(self, session: Session, old: str | None, after: int, upto: int) -> str:
        """The state at ``upto``: ``old`` (the state at ``after``, a query) with the events
        in ``(after, upto]`` merged in."""
        delta = self.projection.delta_sql(session, after, upto)
        return delta if old is None else self.projection.merge_sql(old, delta)

    @staticmethod
    def _read(path: Path) -> str:
        return "SELECT * FROM read_parquet('" + str(path).replace("'", "''") + "')"

    @staticmethod
    def _write(session: Session, query: str, target: Path) -> int:
        """Write ``query``'s rows (sorted by key) to ``target`` durably: DuckDB writes the
        file itself, it is fsynced, then renamed into place."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_beside(target)
        quoted = str(tmp).replace("'", "''")
        try:
            written = session._run(  # through the session: it runs again if compaction moves a file
                f"COPY (SELECT * FROM ({query}) ORDER BY key) TO '{quoted}' (FORMAT parquet)"
            ).fetchall()
            kill_point("refresh.after_copy")
            fsync_file(tmp)
            os.replace(tmp, target)
            fsync_dir(target.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return int(written[0][0])

    def _publish(
        self,
        session: Session,
        query: str | None,
        *,
        previous: dict[str, Any] | None,
        checkpoints: dict[str, str],
    ) -> int:
        """Write the new state file beside the old one, then swap the pointer to it
        (``query`` None: the stored state stands, only the checkpoints changed)."""
        position = session.position
        name = f"state-v{self.projection.version}-{position:012d}.parquet"
        if query is None and previous is not None:
            rows, digest = int(previous["rows"]), str(previous["sha256"])
        else:
            rows = self._write(session, query or "", self.folder / name)
            digest = file_digest(self.folder / name)
        pointer = {
            "file": name,
            "position": position,
            "version": self.projection.version,
            "rows": rows,
            "sha256": digest,
            "checkpoints": checkpoints,
        }
        kill_point("refresh.after_state")
        try:
            write_whole(self.folder / "current.json", json.dumps(pointer))
        except BaseException:  # the old state stays current: drop the new file
            if previous is None or previous["file"] != name:
                (self.folder / name).unlink(missing_ok=True)
            raise
        kill_point("refresh.after_pointer")
        with contextlib.suppress(OSError):  # a leftover file is harmless; the swap stands
            self._clean()  # the previous state, and checkpoints a rebuild did not keep
        return rows

    # -- checkpoints -----------------------------------------------------------------------

    def _checkpoint_path(self, position: int) -> Path:
        return self.folder / f"checkpoint-v{self.projection.version}-{position:012d}.parquet"

    def checkpoints(self) -> list[int]:
        """The positions that have a checkpoint of this projection version, in order: those
        the pointer records (answers use no other file)."""
        current = self._pointer()
        return list(self._recorded(current)) if current else []

    # -- reading ---------------------------------------------------------------------------

    def state(self, *, as_of: TimeLike | None = None, position: int | None = None) -> pa.Table:
        """The state now (the stored state; refreshed first if there is none), or as of a
        system time or log position: from the nearest checkpoint at or before the cut, with
        the events after it merged in, or from the log when that reads fewer rows (see
        :meth:`start`). Hidden merge columns are left out."""
        session = Session(self.store, category_views=False)

        def read() -> pa.Table:
            current = self._ready()
            _, query = self._state_query(session, current, as_of, position)
            if query == self._read(self.folder / current["file"]):  # the stored state as is
                import pyarrow.parquet as pq

                return pq.read_table(self.folder / current["file"])
            return session.sql(f"SELECT * FROM ({query}) ORDER BY key").to_arrow_table()

        return self._visible(self._settled(read))

    def _settled(self, read: Callable[[], _T]) -> _T:
        """``read()``; when a refresh in another process replaced a stored file it was
        reading (the pointer has moved on since), it reads again from the new pointer: a
        transient move is never reported as corruption."""
        for attempt in range(_READ_ATTEMPTS):
            before = self._pointer()
            try:
                return read()
            except (OSError, duckdb.IOException, CorruptLakeError):
                moved = self._pointer() != before or self._waited_for_refresh()
                if attempt == _READ_ATTEMPTS - 1 or not moved:
                    raise
        raise AssertionError("unreachable")

    def _waited_for_refresh(self) -> bool:
        """Whether a refresh was running (a rebuild rewrites checkpoint files before it swaps
        the pointer); if so, wait for it to end. A shared lock needs no write access."""
        try:
            with self._locked(fcntl.LOCK_SH | fcntl.LOCK_NB):
                return False
        except BlockingIOError:
            with self._locked(fcntl.LOCK_SH):
                return True
        except OSError:
            return False

    def diff(self, before: Mapping[str, Any], after: Mapping[str, Any] | None = None) -> pa.Table:
        """Keys added, removed or changed between two system-time cuts (each a dict of
        ``as_of`` and/or ``position``; ``after`` defaults to now), as
        :meth:`Projection.diff <esanalytics.projections.Projection.diff>` gives them, but
        each side answered from its nearest checkpoint (or the log; see :meth:`start`)."""
        session = Session(self.store, category_views=False)
        for cut in (before, after or {}):
            if set(cut) - {"as_of", "position"}:
                raise ValidationError(
                    f"A materialized diff cuts on system time only, not {sorted(set(cut))}.",
                    hint="use as_of or position; for valid time, use Projection.diff.",
                )

        def read() -> pa.Table:
            current = self._ready()
            left, right = (
                self._state_query(session, current, **cut)[1] for cut in (before, after or {})
            )
            query = diff_sql(left, right, self.projection.fields)
            return session.sql(query).to_arrow_table()

        return self._settled(read)

    def start(self, *, as_of: TimeLike | None = None, position: int | None = None) -> int:
        """The log position an answer at this cut starts from: the stored state's, a
        checkpoint's, or 0 when the log itself is the cheaper read. A checkpoint is used
        when its rows plus the rows of the files that hold the events after it are fewer
        than the rows the log's own answer reads (row counts the commit log knows, so
        choosing opens no file)."""
        session = Session(self.store, category_views=False)
        return self._settled(lambda: self._state_query(session, self._ready(), as_of, position))[0]

    def _ready(self) -> dict[str, Any]:
        """The pointer to a stored state of this version, refreshing first if there is none."""
        current = self.current()
        if current is None or current["version"] != self.projection.version:
            self.refresh()
            current = self.current()
        assert current is not None
        return current

    @staticmethod
    def _target(
        session: Session, as_of: TimeLike | None = None, position: int | None = None
    ) -> int:
        target = session.position
        if position is not None:
            target = min(validate_position(position), target)
        if as_of is not None:
            target = min(target, session.position_at(as_of))
        return target

    def _start(self, session: Session, current: Mapping[str, Any], target: int) -> int:
        marks = [m for m in self._recorded(current) if m <= target]
        if not marks:
            return 0
        from_log = self._rows_between(session, 0, target)
        from_mark = int(current["rows"]) + self._rows_between(session, marks[-1], target)
        return marks[-1] if from_mark < from_log else 0

    def _rows_between(self, session: Session, after: int, upto: int) -> int:
        """How many rows of the projection's category an answer reads for the events in
        ``(after, upto]``: every row of each file that can hold one (a file is read whole,
        its rows clustered by stream), and those of the unsealed tail."""
        import pyarrow.compute as pc

        category = self.projection.category
        snapshot = session._snapshot
        rows = sum(
            entry.rows
            for entry in snapshot.entries
            if entry.max_position > after
            and entry.min_position <= upto
            and category in (None, entry.category)
        )
        tail = snapshot.tail["global_position"]
        inside = pc.and_(pc.greater(tail, after), pc.less_equal(tail, upto))
        return rows + int(pc.sum(inside.cast("int64")).as_py() or 0)

    def _bounds(
        self, session: Session, as_of: TimeLike | None, position: int | None
    ) -> tuple[int, int]:
        """Positions at or before and at or after the cut's, known without opening a file:
        the last of the files recorded wholly by ``as_of``, and of those recorded partly by
        then (the unsealed tail, in memory, is looked at exactly)."""
        high = (
            session.position
            if position is None
            else min(validate_position(position), session.position)
        )
        if as_of is None:
            return high, high
        import pyarrow.compute as pc

        cut = to_utc(as_of, what="as_of")
        us = to_epoch_us(cut)
        snapshot = session._snapshot
        tail = snapshot.tail.filter(pc.less_equal(snapshot.tail["recorded_at"], cut))
        last = int(pc.max(tail["global_position"]).as_py() or 0) if tail.num_rows else 0
        wholly = [e.max_position for e in snapshot.entries if e.max_recorded_us <= us]
        partly = [e.max_position for e in snapshot.entries if e.min_recorded_us <= us]
        return min(high, max([*wholly, last])), min(high, max([*partly, last]))

    def _state_query(
        self,
        session: Session,
        current: Mapping[str, Any],
        as_of: TimeLike | None = None,
        position: int | None = None,
    ) -> tuple[int, str]:
        """The position an answer at a cut starts from and its SQL: the stored state (with
        the events since merged in), the nearest checkpoint (likewise), or (0) the
        projection's own query over the log.

        The choice is made on bounds of the cut's position, known without opening a file;
        the exact position is looked up (:meth:`Session.position_at`, which reads the files
        recorded around ``as_of``) only when the bounds leave the choice open. A checkpoint
        known to lie before the cut takes the events after it up to ``as_of`` by their
        recorded time, which is the same cut: recorded times never decrease along the log."""
        stored = int(current["position"])
        low, high = self._bounds(session, as_of, position)
        past = as_of is None or to_utc(as_of, what="as_of") <= datetime.now(UTC)  # no warning
        if high < stored and past:
            mark = self._start(session, current, high)
            if not mark:
                return 0, self.projection.state_sql(session, as_of=as_of, position=position)
            if mark <= low:
                checkpoint = self._read(self._kept(mark, self._recorded(current)))
                events = session.events_after(mark, high)
                if as_of is not None:
                    cut = sql_time(to_utc(as_of, what="as_of"))
                    events = f"(SELECT * FROM {events} WHERE recorded_at <= {cut})"
                delta = self.projection.aggregate_sql(events)
                return mark, self.projection.merge_sql(checkpoint, delta)
        target = self._target(session, as_of, position)
        if target >= stored:
            state = self._read(self._checked(self.folder / current["file"], current["sha256"]))
            return stored, (
                state if target == stored else self._merged(session, state, stored, target)
            )
        mark = self._start(session, current, target)
        if not mark:
            return 0, self.projection.state_sql(session, position=target)
        checkpoint = self._read(self._kept(mark, self._recorded(current)))
        return mark, self._merged(session, checkpoint, mark, target)

    @staticmethod
    def _visible(table: pa.Table) -> pa.Table:
        return table.select([c for c in table.column_names if not c.startswith("__n_")])


def stored_state_problems(lake: EventStore | str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Every materialized projection's stored files (of the store, or of the lake at that
    path) checked against the digests recorded when they were written: ``(path, problem)``
    for each altered or missing one (what ``esa verify`` reports)."""
    problems = []
    folder = lake.path if isinstance(lake, EventStore) else Path(lake)
    if not isinstance(folder, Path):
        return []  # (a lake on object storage keeps no materialized projections)
    root = folder / "projections"
    for pointer in sorted(root.glob("*/current.json")) if root.exists() else []:
        try:
            info = json.loads(pointer.read_text())
            files = {info["file"]: info["sha256"], **info.get("checkpoints", {})}
        except (OSError, ValueError, KeyError, TypeError):
            continue  # written before digests, or no state yet: rebuilt on first use
        for name, digest in files.items():
            path = pointer.parent / name
            try:
                same = file_digest(path) == digest
            except OSError:
                same = False
            if not same:
                problems.append(
                    (
                        str(path),
                        f"the materialized projection {pointer.parent.name!r}'s stored "
                        f"{name} is missing or altered (its SHA-256 is not the one recorded "
                        f"when it was written); rebuild it: `esa materialize {folder} "
                        f"{pointer.parent.name} --rebuild`",
                    )
                )
    return problems
