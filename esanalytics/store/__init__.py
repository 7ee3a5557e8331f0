"""The store layer: Parquet layout, commit record, append, read, subscribe, compact."""

from esanalytics.store.commitlog import GENESIS_LINK, CommitLine, FileEntry, file_digest
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
    "GENESIS_LINK",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendRequest",
    "Commit",
    "CommitLine",
    "EventStore",
    "Events",
    "ExpectedVersion",
    "FileEntry",
    "Inventory",
    "LakeSnapshot",
    "StreamAppend",
    "Subscription",
    "file_digest",
    "open_store",
]
