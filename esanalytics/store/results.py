"""What the store hands back: commits, event results, the lake's inventory."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from esanalytics._html import card as _card
from esanalytics._html import counts as _counts
from esanalytics._html import table as _table
from esanalytics.events import RecordedEvent

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "Commit",
    "Events",
    "ExpectedVersion",
    "Inventory",
    "StreamAppend",
]


class ExpectedVersion(enum.Enum):
    """What an append expects of its stream (besides an exact version number)."""

    ANY = "any"  #: append whatever the stream's version
    NO_STREAM = "no_stream"  #: the stream must have no events yet
    STREAM_EXISTS = "stream_exists"  #: the stream must have at least one event

    def __repr__(self) -> str:
        return self.name


ANY = ExpectedVersion.ANY
NO_STREAM = ExpectedVersion.NO_STREAM
STREAM_EXISTS = ExpectedVersion.STREAM_EXISTS


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """The versions one stream received in a commit (inclusive)."""

    stream_id: str
    first_version: int
    last_version: int


@dataclass(frozen=True, slots=True)
class Commit:
    """An acknowledged append: it is durable and visible to every reader.

    ``replayed`` is true when this append was a retry of an earlier one with the same event
    ids: nothing new was written, and the fields describe the original commit.
    """

    commit: int
    first_position: int
    last_position: int
    recorded_at: datetime
    streams: tuple[StreamAppend, ...]
    replayed: bool = False

    @property
    def positions(self) -> range:
        return range(self.first_position, self.last_position + 1)

    @property
    def version(self) -> int:
        """The new version of the (first) stream written, for single-stream appends."""
        return self.streams[0].last_version


@dataclass(frozen=True)
class Events:
    """Events read from the lake, ordered (by version for one stream, by position otherwise).

    Convert with :meth:`to_arrow`, :meth:`to_pandas` or iterate typed
    :class:`~esanalytics.events.RecordedEvent` objects.
    """

    table: pa.Table
    position: int  # the log position the read was pinned to

    def to_arrow(self) -> pa.Table:
        return self.table

    def to_pandas(self) -> pd.DataFrame:
        frame: pd.DataFrame = self.table.to_pandas()
        return frame

    def to_list(self) -> list[RecordedEvent]:
        return RecordedEvent.from_table(self.table)

    def __iter__(self) -> Iterator[RecordedEvent]:
        for batch in self.table.to_batches(max_chunksize=4096):
            yield from RecordedEvent.from_table(pa.Table.from_batches([batch], self.table.schema))

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def __repr__(self) -> str:
        return f"<Events: {len(self)} events as of position {self.position}>"

    def _repr_html_(self) -> str:
        t = self.table
        rows: list[tuple[str, Any]] = [("events", len(self)), ("as of position", self.position)]
        if len(self):
            recorded = t["recorded_at"]
            rows.append(("recorded", f"{pc.min(recorded).as_py()} .. {pc.max(recorded).as_py()}"))
            types = t["event_type"].value_counts().to_pylist()
            rows.append(("event types", _counts({d["values"]: d["counts"] for d in types})))
        columns = ["global_position", "stream_id", "version", "event_type", "recorded_at", "data"]
        head = t.select(columns).slice(0, 10).to_pylist()
        more = f"<i>… {len(self) - 10:,} more</i>" if len(self) > 10 else ""
        return _card(
            "Events", rows, _table(columns, [[r[c] for c in columns] for r in head]) + more
        )


@dataclass(frozen=True)
class Inventory:
    """What is in a lake, at one log position."""

    path: str
    position: int
    events: int
    streams: int
    categories: Mapping[str, int]
    event_types: Mapping[str, int]
    first_recorded_at: datetime | None
    last_recorded_at: datetime | None
    first_occurred_at: datetime | None
    last_occurred_at: datetime | None
    files: int
    bytes: int
    commits: int
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [
            f"lake        {self.path}",
            f"position    {self.position} ({self.commits} commits, {self.files} files, "
            f"{self.bytes / 1e6:.1f} MB)",
            f"events      {self.events:,}",
            f"streams     {self.streams:,}",
            f"recorded    {self.first_recorded_at} .. {self.last_recorded_at}",
            f"occurred    {self.first_occurred_at} .. {self.last_occurred_at}",
            "categories  " + ", ".join(f"{k} ({v:,})" for k, v in self.categories.items()),
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return _card(
            f"Lake {self.path}",
            [
                ("position", f"{self.position:,} ({self.commits:,} commits, {self.files:,} files, "
                 f"{self.bytes / 1e6:.1f} MB)"),
                ("events", self.events),
                ("streams", self.streams),
                ("recorded", f"{self.first_recorded_at} .. {self.last_recorded_at}"),
                ("occurred", f"{self.first_occurred_at} .. {self.last_occurred_at}"),
                ("categories", _counts(self.categories)),
                ("event types", _counts(self.event_types)),
            ],
        )  # fmt: skip
