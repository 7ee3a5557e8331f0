"""The command handler: load, decide, append with the loaded version, retry on conflict."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from esanalytics._typing import TimeLike
from esanalytics.domain.decider import Decider
from esanalytics.events import NewEvent, to_epoch_us, to_utc
from esanalytics.exceptions import ConcurrencyError, StreamNotFoundError
from esanalytics.store import EventStore
from esanalytics.store._atomic import write_whole

__all__ = ["CommandContext", "CommandHandler", "CommandResult", "Loaded", "SnapshotStore"]

S = TypeVar("S")


@dataclass(frozen=True)
class CommandContext:
    """Who sends a command and why. ``correlation_id`` ties a chain of commands together
    (a new one is made when absent); ``causation_id`` names the command or event that caused
    this one (the command itself when absent). Extra keys go into every event's metadata."""

    actor: str | None = None
    reason: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    source: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CommandResult:
    """What a handled command wrote. ``events`` are typed; ``event_ids`` and positions match
    them one for one. An accepted command that decides nothing writes nothing (empty)."""

    stream_id: str
    events: tuple[Any, ...]
    event_ids: tuple[str, ...]
    version: int
    first_position: int | None
    last_position: int | None
    command_id: str
    correlation_id: str
    retries: int
    context: CommandContext

    def next_context(self, **changes: Any) -> CommandContext:
        """The context for a command this result causes: same correlation id, caused by this
        command's last event."""
        cause = self.event_ids[-1] if self.event_ids else self.command_id
        return replace(
            self.context, correlation_id=self.correlation_id, causation_id=cause, **changes
        )


@dataclass(frozen=True)
class Loaded(Generic[S]):
    """A state and where it came from: the stream version folded up to, and whether the fold
    started from a snapshot."""

    state: S
    version: int
    from_snapshot: int | None = None


class SnapshotStore:
    """Snapshots as small JSON files in the lake (``_esa/snapshots/<decider>/``), named by a
    hash of the stream id (so no id builds a path). A snapshot records the decider version
    that wrote it: another version's snapshot is ignored, never misread."""

    def __init__(self, lake: Path | None, decider_name: str) -> None:
        # (None: a lake on object storage, which keeps no snapshots yet; none are read)
        self.folder = (
            None
            if lake is None
            else lake
            / "_esa"
            / "snapshots"
            / hashlib.sha256(decider_name.encode()).hexdigest()[:16]
        )

    def _path(self, stream_id: str) -> Path:
        assert self.folder is not None
        return self.folder / (hashlib.sha256(stream_id.encode()).hexdigest()[:40] + ".json")

    def get(self, stream_id: str) -> dict[str, Any] | None:
        if self.folder is None:
            return None
        try:
            raw = json.loads(self._path(stream_id).read_text())
        except (OSError, ValueError):
            return None  # none yet, or cut short: a snapshot is only ever a shortcut
        return raw if isinstance(raw, dict) and raw.get("stream_id") == stream_id else None

    def put(self, stream_id: str, record: dict[str, Any]) -> None:
        """Save a snapshot. It is written after its command's events are committed, and it is
        only a shortcut: a failure (a full disk, a read-only lake) is logged, never raised,
        or a caller would retry a command that was done."""
        if self.folder is None:
            return
        try:  # (a unique temporary name: threads of one process save at once)
            self.folder.mkdir(parents=True, exist_ok=True)
            write_whole(self._path(stream_id), json.dumps({**record, "stream_id": stream_id}))
        except OSError as error:
            logging.getLogger("esanalytics.domain").warning(
                "snapshot of %s not saved: %s", stream_id, error
            )


def command_metadata(context: CommandContext, command_id: str, command: Any) -> dict[str, Any]:
    """The metadata of every event a command decides: who and why (from the context), the
    correlation id (the command's own id when the context has none), the causation id (the
    command itself when absent), the command's id and name, and the context's extra keys."""
    return {
        key: value
        for key, value in {
            "actor": context.actor,
            "reason": context.reason,
            "correlation_id": context.correlation_id or command_id,
            "causation_id": context.causation_id or command_id,
            "command_id": command_id,
            "command": type(command).__name__,
            "source": context.source,
            **context.extra,
        }.items()
        if value is not None
    }


class CommandHandler(Generic[S]):
    """Handles commands for one decider over a store.

    ``snapshot_every=N`` saves a snapshot whenever a stream passes a multiple of N events;
    ``max_retries`` bounds how often a command is re-decided after a concurrency conflict;
    ``cache_size`` keeps that many streams' current states in memory (0 turns it off): a
    cached state is used only when the store confirms the stream is still at its version, and
    a stale one would fail the append's version check and be reloaded anyway.

    >>> import tempfile, esanalytics as esa
    >>> from esanalytics.domain import accounts
    >>> store = esa.open(tempfile.mkdtemp() + "/lake", create=True)
    >>> bank = CommandHandler(store, accounts.decider)
    >>> bank.handle("account-1", accounts.OpenAccount(owner="Ada")).version
    1
    >>> bank.handle("account-1", accounts.DepositMoney(amount=25.0)).version
    2
    >>> bank.state("account-1").balance
    25.0
    """

    def __init__(
        self,
        store: EventStore,
        decider: Decider[S],
        *,
        snapshot_every: int | None = None,
        max_retries: int = 3,
        cache_size: int = 10_000,
    ) -> None:
        self.store = store
        self.decider = decider
        self.snapshot_every = snapshot_every
        self.max_retries = max_retries
        self.snapshots = SnapshotStore(
            store.local_folder("Handler snapshots") if snapshot_every or store.fs.local else None,
            decider.name,
        )
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Loaded[S]] = OrderedDict()

    # -- reading state -----------------------------------------------------------------

    def load(
        self,
        stream_id: str,
        *,
        version: int | None = None,
        as_of: TimeLike | None = None,
        valid_at: TimeLike | None = None,
        use_snapshot: bool = True,
    ) -> Loaded[S]:
        """The state of one stream: now, at a stream ``version``, as recorded at system time
        ``as_of``, or as it was true at valid time ``valid_at`` (folded in the order of
        ``(occurred_at, version)``). Every bound is the same fold with an upper bound; a
        snapshot shortens it when one fits inside the bounds."""
        snapshot = (
            self._usable_snapshot(stream_id, version, as_of)
            if use_snapshot and valid_at is None
            else None
        )
        start = snapshot["version"] if snapshot else 0
        events = self.store.read_stream(
            stream_id, from_version=start + 1, to_version=version, as_of=as_of
        )
        records = events.to_list()
        last = records[-1].version if records else start
        if valid_at is not None:
            cut = to_utc(valid_at, what="valid_at")
            records = sorted(
                (r for r in records if r.occurred_at <= cut),
                key=lambda r: (r.occurred_at, r.version),
            )
        initial = self.decider.state_from(snapshot["state"]) if snapshot else None
        state = self.decider.fold((self.decider.codec.decode_record(r) for r in records), initial)
        return Loaded(state, last, start if snapshot else None)

    def state(self, stream_id: str, **bounds: Any) -> S:
        """Shorthand for ``load(...).state``; raises :class:`StreamNotFoundError` for a
        stream with no events within the bounds."""
        loaded = self.load(stream_id, **bounds)
        if loaded.version == 0:
            raise StreamNotFoundError(
                f"The stream {stream_id!r} has no events within those bounds.",
                hint="check the id, or the version/as_of bound.",
                stream_id=stream_id,
            )
        return loaded.state

    def _usable_snapshot(
        self, stream_id: str, version: int | None, as_of: TimeLike | None
    ) -> dict[str, Any] | None:
        snapshot = self.snapshots.get(stream_id)
        if snapshot is None or snapshot.get("decider_version") != self.decider.version:
            return None
        if version is not None and snapshot["version"] > version:
            return None
        if as_of is not None and snapshot["recorded_at_us"] > to_epoch_us(as_of, what="as_of"):
            return None
        return snapshot

    # -- handling commands --------------------------------------------------------------

    def handle(
        self, stream_id: str, command: Any, *, context: CommandContext | None = None
    ) -> CommandResult:
        """Decide ``command`` on the stream's current state and append what it decides,
        atomically, expecting the version it was decided on. On a conflict the command is
        decided again on the new state, up to ``max_retries`` times. A rejected command
        raises :class:`~esanalytics.domain.CommandRejected` and writes nothing."""
        context = context or CommandContext()
        command_id = str(uuid.uuid4())
        correlation_id = context.correlation_id or command_id
        metadata = command_metadata(context, command_id, command)
        for attempt in range(self.max_retries + 1):
            loaded = self._current(stream_id)
            decided = tuple(self.decider.decide(command, loaded.state))
            if not decided:
                return CommandResult(
                    stream_id,
                    (),
                    (),
                    loaded.version,
                    None,
                    None,
                    command_id,
                    correlation_id,
                    attempt,
                    context,
                )
            ids = tuple(str(uuid.uuid4()) for _ in decided)
            new_events = []
            for event, event_id in zip(decided, ids, strict=True):
                name, schema_version, data = self.decider.codec.encode(event)
                new_events.append(
                    NewEvent(
                        name,
                        data,
                        metadata=metadata,
                        event_id=event_id,
                        schema_version=schema_version,
                    )
                )
            try:
                commit = self.store.append(
                    stream_id,
                    new_events,
                    expected_version=loaded.version,
                    category=self.decider.category,
                )
            except ConcurrencyError:
                self._cache.pop(stream_id, None)
                if attempt == self.max_retries:
                    raise
                continue
            state = self.decider.fold(decided, loaded.state)
            self._remember(stream_id, Loaded(state, commit.version))
            self._maybe_snapshot(
                stream_id, state, loaded.version, commit.version, commit.recorded_at
            )
            return CommandResult(
                stream_id, decided, ids, commit.version, commit.first_position, commit.last_position,
                command_id, correlation_id, attempt, context,
            )  # fmt: skip
        raise AssertionError("unreachable")

    def _current(self, stream_id: str) -> Loaded[S]:
        """The stream's current state: from the cache when the store confirms its version
        (or with only the newer events folded on), else loaded."""
        cached = self._cache.get(stream_id)
        if cached is not None:
            known = self.store.known_version(stream_id)
            if known == cached.version:
                self._cache.move_to_end(stream_id)
                return cached
            if known is not None and known > cached.version:
                newer = self.store.read_stream(stream_id, from_version=cached.version + 1).to_list()
                state = self.decider.fold(
                    (self.decider.codec.decode_record(r) for r in newer), cached.state
                )
                fresh = Loaded(state, newer[-1].version if newer else cached.version)
                self._remember(stream_id, fresh)
                return fresh
        loaded = self.load(stream_id)
        self._remember(stream_id, loaded)
        return loaded

    def _remember(self, stream_id: str, loaded: Loaded[S]) -> None:
        if self.cache_size <= 0:
            return
        self._cache[stream_id] = loaded
        self._cache.move_to_end(stream_id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _maybe_snapshot(
        self, stream_id: str, state: S, before: int, version: int, recorded_at: Any
    ) -> None:
        every = self.snapshot_every
        if not every or version // every == before // every:
            return
        self.snapshots.put(
            stream_id,
            {
                "version": version,
                "decider_version": self.decider.version,
                "recorded_at_us": to_epoch_us(recorded_at),
                "state": self.decider.snapshot_of(state),
            },
        )
