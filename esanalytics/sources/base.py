"""What every import source provides, and the helpers file sources share.

A source reads its rows from a *cursor* on: its own coordinates of the last row a previous
run committed (a file's byte offset and line, a Parquet file and row, a topic partition's
offset). It hands them over in batches of JSON object text, one per row, each with its
coordinates (``orders.jsonl:12``), so that one mapping (:mod:`esanalytics.sources.mapping`)
serves every source, and the cursor that the batch ends at. A new system is one class.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from esanalytics.exceptions import SourceChangedError, SourceError

__all__ = ["RawBatch", "Source", "changed", "digest_range"]

# How much of a file a cursor fingerprints: the first bytes and the bytes before the offset.
FINGERPRINT_BYTES = 4096


@dataclass(frozen=True)
class RawBatch:
    """Rows of a source: ``lines`` (JSON object text per row, or null for a row that is not
    text), ``at`` (each row's coordinates), the ``cursor`` after the last of them, and
    ``done`` (how far the source has been read, in the units of :meth:`Source.size`)."""

    lines: pa.Array
    at: pa.Array
    cursor: dict[str, Any]
    done: int

    @property
    def rows(self) -> int:
        return len(self.lines)


@runtime_checkable
class Source(Protocol):
    """An import source. ``kind`` names it (``jsonl``, ``csv``, ``parquet``); ``label`` is
    what messages call it; ``identity`` is stored with the cursor so that a run under the
    same name reads the same source.

    A source whose rows have a shape of its own (a Kafka record: key, value, headers) may
    also define ``detect(given: ImportMapping, raw: RawBatch) -> ImportMapping``, completing
    the user's mapping from its first batch; the others are mapped by common field names.
    It may define ``settle(raw: RawBatch, mapped: pa.Table) -> pa.Table`` too, to put its
    own reasons for bad rows (a Kafka value that is not JSON) and rows of its own kind (a
    tombstone) into a mapped batch before it is checked and committed. A source whose rows
    esa makes from another system's columns may define ``origins``
    (``{"stream_id": "originator_id", ...}``): the mapping is printed in those terms."""

    kind: str
    label: str

    @property
    def identity(self) -> str: ...

    def default_name(self) -> str:
        """A name for the import when the user gives none."""
        ...

    def size(self) -> int | None:
        """The source's total size in progress units (bytes, rows), if known."""
        ...

    def read(
        self, at: dict[str, Any] | None, *, con: Any, follow: bool, name: str | None
    ) -> Iterator[RawBatch]:
        """Batches after the cursor ``at`` (from the start when None), up to the source's
        current end. Raises :class:`SourceChangedError` if ``at`` no longer fits the source.
        With ``follow``, a row still being written (a last line with no newline) is left
        for the next call. ``con`` is a DuckDB connection the source may use."""
        ...


def digest_range(path: str | os.PathLike[str], start: int, end: int) -> str:
    """Hex SHA-256 of the bytes ``[start, end)`` of a file."""
    with open(path, "rb") as handle:
        handle.seek(start)
        return hashlib.sha256(handle.read(max(0, end - start))).hexdigest()


def changed(source: str, what: str, *, name: str | None) -> SourceChangedError:
    return SourceChangedError(
        f"The source {source} changed under the import's cursor: {what}.",
        hint="an import only follows a source that grows at its end: restore the original "
        "to go on. If the source was replaced on purpose, import it under a new --name: rows "
        "with their own event id that were imported are recognised and skipped, but rows "
        "without an id of their own are written again, so leave those out of the new file.",
        source=name,
        where=None,
    )


def no_such_source(path: str) -> SourceError:
    return SourceError(
        f"There is no file or folder {path} to import.",
        hint="check the path; a folder or a glob ('exports/*.parquet') imports every file "
        "in it, in name order.",
        source=None,
        where=None,
    )
