"""The event store over a lake: :class:`EventStore` and :func:`open_store`.

The store is one class composed of layers, each in a module of its own, each building on
the one before (a newcomer finds a step by its name):

- :mod:`~esanalytics.store.state`: what a handle knows of the log, its checkpoint, refresh;
- :mod:`~esanalytics.store.reader`: pins, scans, footers, one-stream reads, snapshots;
- :mod:`~esanalytics.store.writer_index`: stream versions and event-id keys for writers;
- :mod:`~esanalytics.store.recovery`: finishing what a crashed writer left;
- :mod:`~esanalytics.store.writer`: append, ingest, import and the commit protocol;
- :mod:`~esanalytics.store.maintenance`: sealing, compaction and vacuum;
- :mod:`~esanalytics.store.subscription`: catch-up subscriptions.

Every file the store touches goes through one seam, :mod:`esanalytics.store.fs`
(:class:`~esanalytics.store.fs.LocalFS` for a lake folder), which :func:`open_store` picks.
This module re-exports the names other modules and tests import from it.
"""

from __future__ import annotations

import json
import os
import sys
import types
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from esanalytics.events import validate_position
from esanalytics.exceptions import CorruptLakeError, LakeNotFoundError, ValidationError
from esanalytics.store import maintenance as _maintenance
from esanalytics.store import reader as _reader
from esanalytics.store import writer as _writer
from esanalytics.store._faults import kill_point
from esanalytics.store.fs import LakeFS, LocalFS
from esanalytics.store.layout import (
    COMMIT_LOG,
    EVENTS_DIR,
    LAKE_DIR,
    LAKE_FORMAT,
    LAKE_FORMAT_VERSION,
    MARKER,
    writing,
)
from esanalytics.store.maintenance import COMPACT_ROW_GROUP_ROWS as COMPACT_ROW_GROUP_ROWS
from esanalytics.store.maintenance import MaintenanceMixin
from esanalytics.store.reader import _DECODED_CACHE_GROUPS as _DECODED_CACHE_GROUPS
from esanalytics.store.reader import _PIECE_ROWS as _PIECE_ROWS
from esanalytics.store.reader import _READ_ATTEMPTS as _READ_ATTEMPTS
from esanalytics.store.reader import LakeSnapshot
from esanalytics.store.state import _month_of as _month_of
from esanalytics.store.state import _now_us as _now_us
from esanalytics.store.state import _rows_table as _rows_table
from esanalytics.store.subscription import Subscription
from esanalytics.store.writer import _INDEX_AFTER_ROWS as _INDEX_AFTER_ROWS
from esanalytics.store.writer import _INLINE_LIMIT as _INLINE_LIMIT
from esanalytics.store.writer import SEAL_AGE_US as SEAL_AGE_US
from esanalytics.store.writer import SEAL_ROWS as SEAL_ROWS
from esanalytics.store.writer import TWIN_MIN_ROWS as TWIN_MIN_ROWS
from esanalytics.store.writer import TWIN_ROW_GROUP_ROWS as TWIN_ROW_GROUP_ROWS
from esanalytics.store.writer import AppendRequest

__all__ = ["AppendRequest", "EventStore", "LakeSnapshot", "Subscription", "open_store"]

#: The tunables this module re-exports, by the module that reads them. Setting one here (as
#: ``monkeypatch.setattr(eventstore, "SEAL_ROWS", 3)`` does, and undoes) sets it there too,
#: so code and tests written before the split keep working.
_OWNERS: dict[str, types.ModuleType] = {
    "COMPACT_ROW_GROUP_ROWS": _maintenance,
    "_DECODED_CACHE_GROUPS": _reader,
    "_READ_ATTEMPTS": _reader,
    "_PIECE_ROWS": _reader,
    "_INDEX_AFTER_ROWS": _writer,
    "_INLINE_LIMIT": _writer,
    "SEAL_AGE_US": _writer,
    "SEAL_ROWS": _writer,
    "TWIN_MIN_ROWS": _writer,
    "TWIN_ROW_GROUP_ROWS": _writer,
}


class _ForwardingModule(types.ModuleType):
    """This module, whose re-exported tunables forward assignments to their owners."""

    def __setattr__(self, name: str, value: object) -> None:
        owner = _OWNERS.get(name)
        if owner is not None:
            setattr(owner, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _ForwardingModule


class EventStore(MaintenanceMixin):
    """An event store whose log is hive-partitioned Parquet in a lake folder.

    Open one with :func:`esanalytics.open`. Appends are atomic and durable, checked against
    expected versions, and serialized between threads and processes; reads are pinned to one
    committed log position, so they never see part of an append.

    >>> import tempfile, esanalytics as esa
    >>> store = esa.open(tempfile.mkdtemp() + "/lake", create=True)
    >>> store.append("account-1", [esa.NewEvent("AccountOpened", {"owner": "Ada"})]).version
    1
    """

    def _repr_html_(self) -> str:
        """The lake at a glance in a notebook: counts, time range, categories."""
        return self.inventory()._repr_html_()

    def __repr__(self) -> str:
        return f"<EventStore {self.path} at position {self._head}>"

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Seal the unsealed tail if this handle appended (so plain Parquet readers see
        everything) and stop the read threads. A seal that fails here (a full disk, a
        read-only lake) is left for a later writer: the events are already durable. The
        handle can still be used afterwards; ``with esa.open(...)`` calls this on exit."""
        if self._tail and self._wrote:
            self._deferred("sealing on close", self.flush)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def subscribe(
        self,
        from_position: int = 0,
        *,
        categories: Iterable[str] | None = None,
        event_types: Iterable[str] | None = None,
        poll_interval: float = 0.05,
    ) -> Subscription:
        """A catch-up subscription: every committed event after ``from_position`` in order,
        then new ones as they commit. Store ``subscription.position`` as your checkpoint."""
        from_position = validate_position(from_position, what="from_position")
        return Subscription(self, from_position, categories, event_types, poll_interval)


def open_store(
    path: str | os.PathLike[str],
    *,
    create: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> EventStore:
    """Open the lake at ``path``; with ``create=True`` make it if it does not exist.

    ``path`` is a folder, or a prefix on object storage: ``s3://bucket/prefix``, reached with
    ``storage_options`` (``endpoint_url``, ``region``, ``key``, ``secret``, ``token``,
    ``anonymous``; each one not given is taken from the usual ``AWS_*`` variables). Lakes on
    object storage need ``pip install 'esanalytics[s3]'``.

    >>> import tempfile, esanalytics as esa
    >>> esa.open(tempfile.mkdtemp() + "/lake", create=True).head
    0
    """
    fs: LakeFS
    root: Path | str
    if isinstance(path, str) and path.startswith("s3://"):
        from esanalytics.store.s3 import S3FS  # (boto3 and fsspec: only for such lakes)

        fs = S3FS(str(path), storage_options)
        root = fs.url
    else:
        if storage_options:
            raise ValidationError(
                "storage_options are for lakes on object storage (s3://bucket/prefix).",
                hint=f"leave them out to open the folder {path}.",
                path=str(path),
            )
        root = Path(path)
        fs = LocalFS(root)
    marker_rel = f"{LAKE_DIR}/{MARKER}"
    marker = fs.uri(marker_rel)
    if not fs.exists(marker_rel):
        if not create:
            raise LakeNotFoundError(
                f"There is no lake at {root}.",
                hint="pass create=True to make a new one, or run `esa demo` to build the sample "
                "lake under data/.",
                cli_hint=f"check the path; `esa init {root}` makes a new, empty lake there, and "
                "`esa demo` builds the sample lake under data/.",
                path=str(root),
            )
        # (a creation cut short leaves only its own two folders: a retry finishes it)
        if any(name not in (LAKE_DIR, EVENTS_DIR) for name in fs.children("")):
            raise ValidationError(
                f"{root} exists and holds other files; a lake needs a folder of its own.",
                hint="pick a new or empty folder for the lake.",
                path=str(root),
            )
        with writing(root, "the new lake"):  # a retry with create=True finishes it
            fs.make_dirs(LAKE_DIR)
            fs.make_dirs(EVENTS_DIR)
            log = f"{LAKE_DIR}/{COMMIT_LOG}"
            if fs.local and not fs.exists(log):  # (a retry keeps the log it made; an
                # object log is its line objects: none yet)
                fs.create_new(log, b"")
            kill_point("create.before_marker")
            # Two processes may make one lake at once: either marker does.
            fs.create_new(
                marker_rel,
                json.dumps(
                    {
                        "format": LAKE_FORMAT,
                        "version": LAKE_FORMAT_VERSION,
                        "created_at": datetime.now(UTC).isoformat(),
                    }
                ).encode(),
            )
    else:
        try:
            info = json.loads(fs.read_bytes(marker_rel).decode())
            damaged = not isinstance(info, dict) or not isinstance(info.get("version", 0), int)
        except OSError as error:
            raise CorruptLakeError(
                f"The lake's marker {marker} is unreadable: {error}.",
                hint="restore _esa/lake.json from a backup; it names the lake's format.",
                path=str(marker),
            ) from None
        except ValueError:  # (UnicodeDecodeError is one)
            damaged = True
        if damaged:
            raise CorruptLakeError(
                f"The lake marker {marker} is damaged: it is not the JSON object that marks "
                "a folder as a lake.",
                hint="restore it from a backup, or write it again: "
                f'{{"format": "{LAKE_FORMAT}", "version": {LAKE_FORMAT_VERSION}}}. It holds '
                "no events; `esa verify` then checks the rest. Nothing was read or written.",
                path=str(marker),
            )
        if info.get("format") != LAKE_FORMAT or info.get("version", 0) > LAKE_FORMAT_VERSION:
            raise CorruptLakeError(
                f"{root} is a lake of format {info.get('format')} v{info.get('version')}, which "
                "this esanalytics cannot read.",
                hint="upgrade esanalytics (pip install -U esanalytics).",
                path=str(root),
            )
    return EventStore(root, fs)
