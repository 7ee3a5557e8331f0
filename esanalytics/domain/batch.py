"""Batch mode for the write side: many commands decided in memory, written in one ingest.

Importing history, replaying a script of commands or building the sample lake sends tens of
thousands of commands at once. Handling them one by one costs a load and a durable append
each; :func:`handle_batch` keeps every touched stream's state in memory instead, asks the
same deciders to decide each command in order, and writes all the decided events of a chunk
with one atomic :meth:`~esanalytics.store.EventStore.ingest` that checks every stream is
still at the version its state was loaded at. Metadata is built exactly as
:meth:`CommandHandler.handle <esanalytics.domain.CommandHandler.handle>` builds it.

>>> import tempfile, esanalytics as esa
>>> from esanalytics.domain import accounts
>>> store = esa.open(tempfile.mkdtemp() + "/lake", create=True)
>>> report = handle_batch(store, {"account": accounts.decider}, [
...     BatchCommand("account-1", accounts.OpenAccount(owner="Ada")),
...     BatchCommand("account-1", accounts.DepositMoney(amount=30.0)),
...     BatchCommand("account-1", accounts.WithdrawMoney(amount=50.0)),
... ], on_reject="collect")
>>> report.events, [r.rule for r in report.rejected]
(2, ['insufficient-funds'])
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from esanalytics._typing import TimeLike
from esanalytics.domain.decider import CommandRejected, Decider
from esanalytics.domain.handler import CommandContext, CommandHandler, command_metadata
from esanalytics.events import TIMESTAMP, dump_json, to_epoch_us
from esanalytics.exceptions import ValidationError
from esanalytics.store import EventStore

__all__ = ["BatchCommand", "BatchReport", "Rejection", "handle_batch"]


@dataclass(frozen=True)
class BatchCommand:
    """One command of a batch. ``occurred_at`` is the valid time of the events it decides
    (a back-dated correction); ``recorded_at`` is a source's own commit time, for importing
    or replaying history (never decreasing, not in the future; left out, the store stamps
    the time of the write). ``command_id`` and ``event_ids`` pin ids for reproducible
    batches; left out, fresh ones are drawn."""

    stream_id: str
    command: Any
    context: CommandContext = field(default_factory=CommandContext)
    occurred_at: TimeLike | None = None
    recorded_at: TimeLike | None = None
    command_id: str | None = None
    event_ids: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Rejection:
    """A command the aggregate refused: its index in the batch, stream, command and rule."""

    index: int
    stream_id: str
    command: Any
    rule: str
    problem: str


@dataclass
class BatchReport:
    """What a batch did: commands decided, events written, commits made, rejections."""

    commands: int = 0
    events: int = 0
    commits: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    last_position: int | None = None


class _Columns:
    def __init__(self) -> None:
        self.names = (
            "stream_id", "event_id", "event_type", "schema_version",
            "occurred_at", "recorded_at", "data", "metadata", "category",
        )  # fmt: skip
        self.values: dict[str, list[Any]] = {name: [] for name in self.names}

    def __len__(self) -> int:
        return len(self.values["stream_id"])

    def table(self) -> pa.Table:
        v = self.values
        recorded = v["recorded_at"]
        columns: dict[str, pa.Array] = {
            "stream_id": pa.array(v["stream_id"], pa.string()),
            "event_id": pa.array(v["event_id"], pa.string()),
            "event_type": pa.array(v["event_type"], pa.string()),
            "schema_version": pa.array(v["schema_version"], pa.int32()),
            "occurred_at": pa.array(v["occurred_at"], pa.int64()).cast(TIMESTAMP),
            "data": pa.array(v["data"], pa.string()),
            "metadata": pa.array(v["metadata"], pa.string()),
            "category": pa.array(v["category"], pa.string()),
        }
        if any(t is not None for t in recorded):
            if any(t is None for t in recorded):
                raise ValidationError(
                    "Some commands of a batch carry recorded_at and some do not.",
                    hint="give every command of an imported history its recorded_at, or none.",
                )
            columns["recorded_at"] = pa.array(recorded, pa.int64()).cast(TIMESTAMP)
        return pa.table(columns)


def handle_batch(
    store: EventStore,
    deciders: Mapping[str, Decider[Any]],
    commands: Iterable[BatchCommand],
    *,
    on_reject: Literal["raise", "collect"] = "raise",
    chunk_events: int = 250_000,
    progress: Callable[[int], None] | None = None,
) -> BatchReport:
    """Decide ``commands`` in order, each on its stream's state after the commands before
    it, and write what they decide. ``deciders`` maps a stream category (the id before its
    first ``-``) to its decider.

    Events are written in atomic chunks of about ``chunk_events``; each chunk's streams must
    still be at the versions the batch expects, or it raises
    :class:`~esanalytics.exceptions.ConcurrencyError` and writes nothing of that chunk.
    A rejected command raises :class:`CommandRejected` before anything of its chunk is
    written (``on_reject="raise"``), or is skipped and reported (``"collect"``).
    ``progress`` is called with the number of commands decided since the last call."""
    states: dict[str, tuple[Decider[Any], Any, int]] = {}  # stream -> decider, state, version
    expected: dict[str, int] = {}  # the version each stream of this chunk was loaded at
    pending = [_Columns()]
    report = BatchReport()
    since_progress = 0

    def flush() -> None:
        rows = pending[0]
        if not len(rows):
            return
        commit = store.ingest(rows.table(), expected_versions=expected)
        report.commits += 1
        report.events += len(rows)
        report.last_position = commit.last_position
        pending[0] = _Columns()
        expected.clear()

    for index, item in enumerate(commands):
        report.commands += 1
        since_progress += 1
        stream_id = item.stream_id
        if stream_id not in states:
            decider = _decider_for(deciders, stream_id)
            loaded = CommandHandler(store, decider, cache_size=0).load(stream_id)
            states[stream_id] = (decider, loaded.state, loaded.version)
        decider, state, version = states[stream_id]
        expected.setdefault(stream_id, version)
        try:
            decided = list(decider.decide(item.command, state))
        except CommandRejected as rejected:
            if on_reject == "raise":
                raise
            report.rejected.append(
                Rejection(index, stream_id, item.command, rejected.rule, rejected.problem)
            )
            continue
        if item.event_ids is not None and len(item.event_ids) != len(decided):
            raise ValidationError(
                f"Command {index} ({type(item.command).__name__} on {stream_id!r}) decided "
                f"{len(decided)} events but pins {len(item.event_ids)} event ids.",
                hint="pin one id per decided event, or leave event_ids out.",
            )
        command_id = item.command_id or str(uuid.uuid4())
        metadata = dump_json(
            command_metadata(item.context, command_id, item.command), what="metadata"
        )
        occurred = None if item.occurred_at is None else to_epoch_us(item.occurred_at)
        recorded = None if item.recorded_at is None else to_epoch_us(item.recorded_at)
        ids = item.event_ids or tuple(str(uuid.uuid4()) for _ in decided)
        rows = pending[0]
        for event, event_id in zip(decided, ids, strict=True):
            name, schema_version, data = decider.codec.encode(event)
            rows.values["stream_id"].append(stream_id)
            rows.values["event_id"].append(event_id)
            rows.values["event_type"].append(name)
            rows.values["schema_version"].append(schema_version)
            rows.values["occurred_at"].append(occurred if occurred is not None else recorded)
            rows.values["recorded_at"].append(recorded)
            rows.values["data"].append(dump_json(data, what="data"))
            rows.values["metadata"].append(metadata)
            rows.values["category"].append(decider.category or stream_id.split("-", 1)[0])
            state = decider.evolve(state, event)
        states[stream_id] = (decider, state, version + len(decided))
        if len(pending[0]) >= chunk_events:
            flush()
        if progress is not None and since_progress >= 10_000:
            progress(since_progress)
            since_progress = 0
    flush()
    if progress is not None and since_progress:
        progress(since_progress)
    return report


def _decider_for(deciders: Mapping[str, Decider[Any]], stream_id: str) -> Decider[Any]:
    category = stream_id.split("-", 1)[0]
    decider = deciders.get(category)
    if decider is None:
        raise ValidationError(
            f"No decider handles the stream {stream_id!r} (category {category!r}).",
            hint=f"pass one for it: deciders={{{category!r}: ...}} (known: {sorted(deciders)}).",
        )
    return decider
