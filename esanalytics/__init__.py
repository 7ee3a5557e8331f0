"""esanalytics: event sourcing you can inspect.

An embedded event store whose log is hive-partitioned Parquet, a write side, temporal SQL in
DuckDB, notebooks and audit reports.

>>> import tempfile, esanalytics as esa
>>> store = esa.open(tempfile.mkdtemp() + "/lake", create=True)
>>> commit = store.append("account-42", [esa.NewEvent("AccountOpened", {"owner": "Ada"})],
...                       expected_version=esa.NO_STREAM)
>>> [e.event_type for e in store.read_stream("account-42")]
['AccountOpened']
"""

from esanalytics.events import NewEvent, RecordedEvent
from esanalytics.exceptions import (
    ConcurrencyError,
    CorruptLakeError,
    DuplicateEventError,
    EsaError,
    LakeNotFoundError,
    StorageError,
    StreamNotFoundError,
    ValidationError,
)
from esanalytics.store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendRequest,
    Commit,
    Events,
    EventStore,
    ExpectedVersion,
    Inventory,
    Subscription,
)
from esanalytics.store import open_store as open

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendRequest",
    "Commit",
    "ConcurrencyError",
    "CorruptLakeError",
    "DuplicateEventError",
    "EsaError",
    "EventStore",
    "Events",
    "ExpectedVersion",
    "Inventory",
    "LakeNotFoundError",
    "NewEvent",
    "RecordedEvent",
    "StorageError",
    "StreamNotFoundError",
    "Subscription",
    "ValidationError",
    "__version__",
    "open",
]
