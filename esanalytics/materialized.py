"""Materialized projections: a projection's state written as Parquet inside the lake, with
the log position it is current to, and checkpoints of its past states.

    lake/projections/<name>/current.json                      {"file", "position", "version"}
    lake/projections/<name>/state-v<version>-<position>.parquet
    lake/projections/<name>/checkpoint-v<version>-<position>.parquet   every N events

``refresh()`` is incremental for reducer projections: it folds only the events after the
stored position (reading only the files that can hold them) and merges them into the stored
state. A rebuild (``rebuild=True``, or a new projection version) computes the state from the
whole log. Either way the new file is written beside the old one and ``current.json`` is
swapped atomically, so readers see the old state or the new one, never a mix.

Checkpoints make past states cheap: the state as of a system time or position is the
nearest checkpoint at or before it with the few events after it merged in, the same merge
an incremental refresh does. Recorded times never decrease along the log, so a system-time
cut is a position cut. Checkpoint files are written once (to a temporary name, then
renamed) and never change; a checkpoint is a pure function of the log up to its position.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from esanalytics._typing import TimeLike
from esanalytics.engine import Session
from esanalytics.exceptions import ValidationError
from esanalytics.projections import Projection, diff_sql
from esanalytics.store import EventStore

__all__ = ["MaterializedProjection", "Refresh"]


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
        try:
            info: dict[str, Any] = json.loads((self.folder / "current.json").read_text())
        except (OSError, ValueError):
            return None
        return info if (self.folder / info["file"]).exists() else None

    # -- refreshing ------------------------------------------------------------------------

    def refresh(self, *, rebuild: bool = False) -> Refresh:
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
            self._drop_checkpoints()
        else:
            mode, since = "incremental", int(current["position"])
            base = self._read(self.folder / current["file"])
            start = since
        # Walk checkpoint by checkpoint up to the session's position: each step merges the
        # events of one stretch into the state before it.
        written = 0
        state_sql = base
        position = start
        for mark in self._marks(position, session.position):
            state_sql = self._merged(session, state_sql, position, mark)
            self._write(session, state_sql, self._checkpoint_path(mark))
            state_sql = self._read(self._checkpoint_path(mark))
            position, written = mark, written + 1
        query = self._merged(session, state_sql, position, session.position)
        rows = self._publish(session, query, previous=current)
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
        delta = self.projection.aggregate_sql(session.events_after(after, upto))
        return delta if old is None else self.projection.merge_sql(old, delta)

    @staticmethod
    def _read(path: Path) -> str:
        return "SELECT * FROM read_parquet('" + str(path).replace("'", "''") + "')"

    @staticmethod
    def _write(session: Session, query: str, target: Path) -> int:
        """Write ``query``'s rows (sorted by key) to ``target`` durably: DuckDB writes the
        file itself, it is fsynced, then renamed into place."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        quoted = str(tmp).replace("'", "''")
        written = session.con.execute(
            f"COPY (SELECT * FROM ({query}) ORDER BY key) TO '{quoted}' (FORMAT parquet)"
        ).fetchall()
        with open(tmp, "rb") as file:
            os.fsync(file.fileno())
        os.replace(tmp, target)
        return int(written[0][0])

    def _publish(self, session: Session, query: str, *, previous: dict[str, Any] | None) -> int:
        """Write the new state file beside the old one, then swap the pointer to it."""
        position = session.position
        name = f"state-v{self.projection.version}-{position:012d}.parquet"
        rows = self._write(session, query, self.folder / name)
        pointer = {
            "file": name,
            "position": position,
            "version": self.projection.version,
            "rows": rows,
        }
        tmp_pointer = self.folder / ".current.json.tmp"
        tmp_pointer.write_text(json.dumps(pointer))
        os.replace(tmp_pointer, self.folder / "current.json")
        if previous is not None and previous["file"] != name:
            (self.folder / previous["file"]).unlink(missing_ok=True)
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

    def _latest_checkpoint(self, position: int) -> int:
        earlier = [p for p in self.checkpoints() if p <= position]
        return earlier[-1] if earlier else 0

    def _drop_checkpoints(self) -> None:
        if self.folder.exists():
            for path in self.folder.glob("checkpoint-v*.parquet"):
                path.unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------------------------

    def state(self, *, as_of: TimeLike | None = None, position: int | None = None) -> pa.Table:
        """The state now (the stored state; refreshed first if there is none), or as of a
        system time or log position: from the nearest checkpoint at or before the cut, with
        the events after it merged in. Hidden merge columns are left out."""
        return self._visible(self._state_table(Session(self.store), as_of, position))

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
        left = self._visible(self._state_table(session, **before))
        right = self._visible(self._state_table(session, **(after or {})))
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
        target = session.position if position is None else min(int(position), session.position)
        if as_of is not None:
            target = min(target, session.position_at(as_of))
        stored = int(current["position"])
        if target == stored:
            import pyarrow.parquet as pq

            return pq.read_table(self.folder / current["file"])
        if target > stored:  # newer than the stored state: merge the events since
            query = self._merged(session, self._read(self.folder / current["file"]), stored, target)
        else:
            mark = self._latest_checkpoint(target)
            base = self._read(self._checkpoint_path(mark)) if mark else None
            query = self._merged(session, base, mark, target)
        return session.sql(f"SELECT * FROM ({query}) ORDER BY key").to_arrow_table()

    @staticmethod
    def _visible(table: pa.Table) -> pa.Table:
        return table.select([c for c in table.column_names if not c.startswith("__n_")])
