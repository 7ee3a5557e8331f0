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

import importlib as _importlib
import typing as _t

# The names below load on first use (PEP 562), so `import esanalytics`, and `esa --help`,
# do not pay for NumPy, pyarrow and pandas until something is read or written.
_EXPORTS = {
    "ANY": "esanalytics.store",
    "NO_STREAM": "esanalytics.store",
    "STREAM_EXISTS": "esanalytics.store",
    "AppendRequest": "esanalytics.store",
    "Commit": "esanalytics.store",
    "ConcurrencyError": "esanalytics.exceptions",
    "CorruptLakeError": "esanalytics.exceptions",
    "DuplicateEventError": "esanalytics.exceptions",
    "EsaError": "esanalytics.exceptions",
    "EventStore": "esanalytics.store",
    "Events": "esanalytics.store",
    "ExpectedVersion": "esanalytics.store",
    "Inventory": "esanalytics.store",
    "LakeNotFoundError": "esanalytics.exceptions",
    "NewEvent": "esanalytics.events",
    "RecordedEvent": "esanalytics.events",
    "StorageError": "esanalytics.exceptions",
    "StreamNotFoundError": "esanalytics.exceptions",
    "Subscription": "esanalytics.store",
    "ValidationError": "esanalytics.exceptions",
    "ImportMapping": "esanalytics.sources",
    "ImportSummary": "esanalytics.sources",
    "SourceChangedError": "esanalytics.exceptions",
    "SourceError": "esanalytics.exceptions",
    "import_events": "esanalytics.sources",
    "open": "esanalytics.store",
}

if _t.TYPE_CHECKING:
    from esanalytics.events import NewEvent, RecordedEvent
    from esanalytics.exceptions import (
        ConcurrencyError,
        CorruptLakeError,
        DuplicateEventError,
        EsaError,
        LakeNotFoundError,
        SourceChangedError,
        SourceError,
        StorageError,
        StreamNotFoundError,
        ValidationError,
    )
    from esanalytics.sources import ImportMapping, ImportSummary, import_events
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


def __getattr__(name: str) -> _t.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'esanalytics' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), "open_store" if name == "open" else name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


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
    "ImportMapping",
    "ImportSummary",
    "Inventory",
    "LakeNotFoundError",
    "NewEvent",
    "RecordedEvent",
    "SourceChangedError",
    "SourceError",
    "StorageError",
    "StreamNotFoundError",
    "Subscription",
    "ValidationError",
    "__version__",
    "import_events",
    "open",
]
