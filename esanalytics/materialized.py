"""Materialized projections: a projection's state written as Parquet inside the lake, with
the log position it is current to, and checkpoints of its past states.

    lake/projections/<name>/current.json   {"file", "position", "version", "sha256", "checkpoints"}
    lake/projections/<name>/state-v<version>-<position>.parquet
    lake/projections/<name>/checkpoint-v<version>-<position>.parquet   every N events

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
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa

from esanalytics._typing import TimeLike
from esanalytics.engine import Session
from esanalytics.events import validate_position
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
    """A reducer projection kept as Parquet in the lake, with a checkpoint of its state every
    ``checkpoint_every`` events (0: none) for fast answers as of a past time.

    >>> import tempfile, esanalytics as esa
    >>> from esanalytics.catalog import account_balances
    >>> store = esa.open(tempfile.mkdtemp() + "/lake", create=True)
    >>> _ = store.append("account-1", [esa.NewEvent("MoneyDeposited", {"amount": 5})])
    >>> view = MaterializedProjection(store, account_balances)
    >>> view.refresh().mode, view.refresh().mode
    ('rebuild', 'unchanged')
    """

    def __init__(
        self, store: EventStore, projection: Projection, *, checkpoint_every: int = 1_000_000
    ) -> None:
        if checkpoint_every < 0:
            raise ValidationError(
                f"checkpoint_every={checkpoint_every} is negative.",
                hint="pass a number of events (0 for no checkpoints).",
                cli_hint="--checkpoint-every takes a number of events (0 for no checkpoints).",
            )
        self.store = store
        self.projection = projection
        self.checkpoint_every = checkpoint_every
        self.folder = store.path / "projections" / projection.name

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
        session = Session(self.store)
        current = self.current()
        stale = current is None or current["version"] != self.projection.version
        if (
            not rebuild
            and not stale
            and current is not None
            and current["position"] == session.position
        ):
            return Refresh(
                "unchanged", session.position, 0, current["rows"], time.perf_counter() - started
            )
        mode: Literal["rebuild", "incremental"]
        if rebuild or stale or current is None:
            mode, since, base, start = "rebuild", 0, None, 0
        else:
            mode, since = "incremental", int(current["position"])
            base = self._read(self._checked(self.folder / current["file"], current["sha256"]))
            start = since
        digests: dict[str, str] = {} if current is None or mode == "rebuild" else dict(
            current.get("checkpoints", {})
        )  # fmt: skip
        # Walk checkpoint by checkpoint up to the session's position: each step merges the
        # events of one stretch into the state before it.
        written = 0
        state_sql = base
        position = start
        for mark in self._marks(position, session.position):
            state_sql = self._merged(session, state_sql, position, mark)
            self._write(session, state_sql, self._checkpoint_path(mark))
            digests[self._checkpoint_path(mark).name] = file_digest(self._checkpoint_path(mark))
            state_sql = self._read(self._checkpoint_path(mark))
            position, written = mark, written + 1
        query = self._merged(session, state_sql, position, session.position)
        rows = self._publish(session, query, previous=current, checkpoints=digests)
        return Refresh(
            mode,
            session.position,
            session.position - since,
            rows,
            time.perf_counter() - started,
            written,
        )

    def _marks(self, after: int, upto: int) -> list[int]:
        every = self.checkpoint_every
        if not every:
            return []
        return list(range((after // every + 1) * every, upto + 1, every))

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
        query: str,
        *,
        previous: dict[str, Any] | None,
        checkpoints: dict[str, str],
    ) -> int:
        """Write the new state file beside the old one, then swap the pointer to it."""
        position = session.position
        name = f"state-v{self.projection.version}-{position:012d}.parquet"
        rows = self._write(session, query, self.folder / name)
        pointer = {
            "file": name,
            "position": position,
            "version": self.projection.version,
            "rows": rows,
            "sha256": file_digest(self.folder / name),
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
        """The positions that have a checkpoint of this projection version, in order."""
        pattern = re.compile(rf"checkpoint-v{self.projection.version}-(\d{{12}})\.parquet")
        if not self.folder.exists():
            return []
        found = (pattern.fullmatch(p.name) for p in self.folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def _latest_checkpoint(self, position: int, recorded: dict[str, str]) -> int:
        """The newest checkpoint at or before ``position`` that current.json records (a
        checkpoint file it does not name was not written by this view, and is not used)."""
        earlier = [
            p for p in self.checkpoints() if p <= position and self._checkpoint_path(p).name in recorded
        ]  # fmt: skip
        return earlier[-1] if earlier else 0

    # -- reading ---------------------------------------------------------------------------

    def state(self, *, as_of: TimeLike | None = None, position: int | None = None) -> pa.Table:
        """The state now (the stored state; refreshed first if there is none), or as of a
        system time or log position: from the nearest checkpoint at or before the cut, with
        the events after it merged in. Hidden merge columns are left out."""
        session = Session(self.store)
        return self._visible(self._settled(lambda: self._state_table(session, as_of, position)))

    def _settled(self, read: Callable[[], pa.Table]) -> pa.Table:
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
        each side answered from a checkpoint."""
        session = Session(self.store)
        for cut in (before, after or {}):
            if set(cut) - {"as_of", "position"}:
                raise ValidationError(
                    f"A materialized diff cuts on system time only, not {sorted(set(cut))}.",
                    hint="use as_of or position; for valid time, use Projection.diff.",
                )
        left = self._visible(self._settled(lambda: self._state_table(session, **before)))
        right = self._visible(self._settled(lambda: self._state_table(session, **(after or {}))))
        session.con.register("_esa_left", left)
        session.con.register("_esa_right", right)
        try:
            query = diff_sql(
                "SELECT * FROM _esa_left", "SELECT * FROM _esa_right", self.projection.fields
            )
            return session.sql(query).to_arrow_table()
        finally:
            session.con.unregister("_esa_left")
            session.con.unregister("_esa_right")

    def _state_table(
        self, session: Session, as_of: TimeLike | None = None, position: int | None = None
    ) -> pa.Table:
        current = self.current()
        if current is None or current["version"] != self.projection.version:
            self.refresh()
            current = self.current()
        assert current is not None
        target = session.position
        if position is not None:
            target = min(validate_position(position), target)
        if as_of is not None:
            target = min(target, session.position_at(as_of))
        stored = int(current["position"])
        if target >= stored:
            state = self._checked(self.folder / current["file"], current["sha256"])
        if target == stored:
            import pyarrow.parquet as pq

            return pq.read_table(state)
        if target > stored:  # newer than the stored state: merge the events since
            query = self._merged(session, self._read(state), stored, target)
        else:
            recorded = current.get("checkpoints", {})
            mark = self._latest_checkpoint(target, recorded)
            path = self._checkpoint_path(mark)
            base = self._read(self._checked(path, recorded.get(path.name))) if mark else None
            query = self._merged(session, base, mark, target)
        return session.sql(f"SELECT * FROM ({query}) ORDER BY key").to_arrow_table()

    @staticmethod
    def _visible(table: pa.Table) -> pa.Table:
        return table.select([c for c in table.column_names if not c.startswith("__n_")])


def stored_state_problems(lake: EventStore | str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Every materialized projection's stored files (of the store, or of the lake at that
    path) checked against the digests recorded when they were written: ``(path, problem)``
    for each altered or missing one (what ``esa verify`` reports)."""
    problems = []
    folder = lake.path if isinstance(lake, EventStore) else Path(lake)
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
