"""The commit record: which files make up the log, one durable line per commit.

Each line is ``<json>\\t<crc32 as 8 hex digits>\\n``. A commit is the moment its line is
complete in ``_esa/commits.log``; the writer syncs the file before it acknowledges. A line cut
short by a crash (no newline, or a checksum that does not match) is not a commit: readers stop
before it and the next writer truncates it away, under the writer lock.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esanalytics.exceptions import CorruptLakeError

__all__ = ["CommitLog", "FileEntry"]


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One committed Parquet file and the facts that let readers skip it unopened."""

    path: str  # relative to events/
    category: str
    month: str
    rows: int
    min_position: int
    max_position: int
    min_recorded_us: int
    max_recorded_us: int
    min_stream: str
    max_stream: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "category": self.category,
            "month": self.month,
            "rows": self.rows,
            "pos": [self.min_position, self.max_position],
            "rec": [self.min_recorded_us, self.max_recorded_us],
            "streams": [self.min_stream, self.max_stream],
            "bytes": self.bytes,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> FileEntry:
        return cls(
            path=raw["path"],
            category=raw["category"],
            month=raw["month"],
            rows=raw["rows"],
            min_position=raw["pos"][0],
            max_position=raw["pos"][1],
            min_recorded_us=raw["rec"][0],
            max_recorded_us=raw["rec"][1],
            min_stream=raw["streams"][0],
            max_stream=raw["streams"][1],
            bytes=raw["bytes"],
        )


def encode_line(record: dict[str, Any]) -> bytes:
    body = json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode()
    return body + b"\t" + f"{zlib.crc32(body):08x}".encode() + b"\n"


class CommitLog:
    """Reads and appends commit lines. Not thread-safe by itself: the store holds the writer
    lock around :meth:`append` and serializes its own reads."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            raise CorruptLakeError(
                f"The commit log {self.path} is missing.",
                hint="this folder is not a complete lake; restore _esa/commits.log from a "
                "backup, or open the right folder.",
                path=str(self.path),
            ) from None

    def read_from(self, offset: int) -> tuple[list[dict[str, Any]], int, bool]:
        """Complete commits after byte ``offset``: ``(records, new_offset, torn_tail)``."""
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
        records: list[dict[str, Any]] = []
        position = 0
        while position < len(chunk):
            end = chunk.find(b"\n", position)
            if end < 0:
                return records, offset + position, True
            line = chunk[position:end]
            body, tab, crc = line.rpartition(b"\t")
            if not tab or f"{zlib.crc32(body):08x}".encode() != crc:
                if chunk.find(b"\n", end + 1) >= 0:
                    # A bad line followed by good ones is not a torn write: it is damage.
                    raise CorruptLakeError(
                        f"The commit log {self.path} has a damaged line at byte "
                        f"{offset + position}.",
                        hint="restore _esa/commits.log from a backup; `esa verify` can tell "
                        "which events are affected.",
                        path=str(self.path),
                    )
                return records, offset + position, True
            records.append(json.loads(body))
            position = end + 1
        return records, offset + position, False

    def append(self, record: dict[str, Any], *, valid_end: int) -> int:
        """Durably append one commit line after byte ``valid_end`` (dropping any torn tail
        beyond it). Returns the new end offset. The caller holds the writer lock."""
        line = encode_line(record)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            if os.fstat(fd).st_size != valid_end:
                os.ftruncate(fd, valid_end)
            os.pwrite(fd, line, valid_end)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        return valid_end + len(line)
