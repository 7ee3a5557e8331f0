"""Materialized projections: a projection's state written as Parquet inside the lake, with
the log position it is current to.

    lake/projections/<name>/current.json                 {"file", "position", "version"}
    lake/projections/<name>/state-v<version>-<position>.parquet

``refresh()`` is incremental for reducer projections: it folds only the events after the
stored position (reading only the files that can hold them) and merges them into the stored
state. A rebuild (``rebuild=True``, or a new projection version) computes the state from the
whole log. Either way the new file is written beside the old one and ``current.json`` is
swapped atomically, so readers see the old state or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from esanalytics.engine import Session
from esanalytics.projections import Projection
from esanalytics.store import EventStore

__all__ = ["MaterializedProjection", "Refresh"]


@dataclass(frozen=True)
class Refresh:
    """What a refresh did: ``mode`` is ``rebuild``, ``incremental`` or ``unchanged``."""

    mode: Literal["rebuild", "incremental", "unchanged"]
    position: int
    new_events: int
    rows: int
    seconds: float


class MaterializedProjection:
    """A reducer projection kept as Parquet in the lake.

    >>> import tempfile, esanalytics as esa
    >>> from esanalytics.catalog import account_balances
    >>> store = esa.open(tempfile.mkdtemp() + "/lake", create=True)
    >>> _ = store.append("account-1", [esa.NewEvent("MoneyDeposited", {"amount": 5})])
    >>> view = MaterializedProjection(store, account_balances)
    >>> view.refresh().mode, view.refresh().mode
    ('rebuild', 'unchanged')
    """

    def __init__(self, store: EventStore, projection: Projection) -> None:
        self.store = store
        self.projection = projection
        self.folder = store.path / "projections" / projection.name

    def current(self) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = json.loads((self.folder / "current.json").read_text())
        except (OSError, ValueError):
            return None
        return info if (self.folder / info["file"]).exists() else None

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
        if rebuild or stale or current is None:
            mode: Literal["rebuild", "incremental"] = "rebuild"
            query = self.projection.aggregate_sql("events_all")
            new_events = session.position
        else:
            mode = "incremental"
            since = current["position"]
            path = str(self.folder / current["file"]).replace("'", "''")
            old = f"SELECT * FROM read_parquet('{path}')"
            delta = self.projection.aggregate_sql(session.events_after(since))
            query = self.projection.merge_sql(old, delta)
            new_events = session.position - since
        rows = self._publish(session, query, previous=current)
        return Refresh(mode, session.position, new_events, rows, time.perf_counter() - started)

    def _publish(self, session: Session, query: str, *, previous: dict[str, Any] | None) -> int:
        """DuckDB writes the new state file itself (in parallel, no copy through Python);
        it is renamed into place, then the pointer swaps to it atomically."""
        position = session.position
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"state-v{self.projection.version}-{position:012d}.parquet"
        tmp = self.folder / f".{name}.tmp"
        target = str(tmp).replace("'", "''")
        written = session.con.execute(
            f"COPY (SELECT * FROM ({query}) ORDER BY key) TO '{target}' (FORMAT parquet)"
        ).fetchall()
        rows = int(written[0][0])
        with open(tmp, "rb") as file:
            os.fsync(file.fileno())
        os.replace(tmp, self.folder / name)
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

    def state(self) -> pa.Table:
        """The stored state (refresh first for the newest), without the hidden columns."""
        import pyarrow.parquet as pq

        current = self.current()
        if current is None:
            self.refresh()
            current = self.current()
        assert current is not None
        table = pq.read_table(self.folder / current["file"])
        return table.select([c for c in table.column_names if not c.startswith("__n_")])
