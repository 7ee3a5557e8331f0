"""The store layer: Parquet layout, commit record, append, read, subscribe, compact."""

from esanalytics.store.eventstore import (
    AppendRequest,
    EventStore,
    LakeSnapshot,
    Subscription,
    open_store,
)
from esanalytics.store.results import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Commit,
    Events,
    ExpectedVersion,
    Inventory,
    StreamAppend,
)

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendRequest",
    "Commit",
    "EventStore",
    "Events",
    "ExpectedVersion",
    "Inventory",
    "LakeSnapshot",
    "StreamAppend",
    "Subscription",
    "open_store",
]
