"""Catch-up subscriptions (:meth:`EventStore.subscribe`): every committed event after a
position, then new ones as they commit, by polling the commit log."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from esanalytics.store.eventstore import EventStore


class Subscription:
    """A catch-up subscription (see :meth:`EventStore.subscribe`). Iterate it for
    :class:`~esanalytics.events.RecordedEvent` objects, or call :meth:`batches` for Arrow
    record batches; ``position`` is the checkpoint to store; :meth:`stop` ends iteration."""

    def __init__(
        self,
        store: EventStore,
        from_position: int,
        categories: Iterable[str] | None,
        event_types: Iterable[str] | None,
        poll_interval: float,
    ) -> None:
        self.store = store
        self.position = from_position
        self._categories = None if categories is None else list(categories)
        self._event_types = None if event_types is None else list(event_types)
        self._poll = poll_interval
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def batches(self, *, timeout: float | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches of new events; with ``timeout``, stops after that many seconds
        without a new commit."""
        idle_since = time.monotonic()
        while not self._stopped.is_set():
            head = self.store.refresh()
            if head > self.position:
                for batch in self.store.iter_batches(
                    from_position=self.position,
                    position=head,
                    categories=self._categories,
                    event_types=self._event_types,
                ):
                    yield batch
                    if batch.num_rows:
                        self.position = int(batch["global_position"][-1].as_py())
                    if self._stopped.is_set():
                        return
                self.position = head
                idle_since = time.monotonic()
                continue
            if timeout is not None and time.monotonic() - idle_since >= timeout:
                return
            self._stopped.wait(self._poll)

    def events(self, *, timeout: float | None = None) -> Iterator[Any]:
        from esanalytics.events import RecordedEvent

        for batch in self.batches(timeout=timeout):
            for row in batch.to_pylist():
                self.position = row["global_position"]
                yield RecordedEvent.from_row(row)

    def __iter__(self) -> Iterator[Any]:
        return self.events()
