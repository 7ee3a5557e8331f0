"""The commit record: which files make up the log, one durable line per commit.

Each line is ``<json>\\t<crc32 as 8 hex digits>\\n``. A commit is the moment its line is
complete in ``_esa/commits.log``; the writer syncs the file before it acknowledges. A line cut
short by a crash (no newline, or a checksum that does not match) is not a commit: readers stop
before it and the next writer truncates it away, under the writer lock.

The lines form a hash chain of their own (DESIGN.md §2): each body carries ``prev``, the hex
SHA-256 of the previous line's body bytes (64 zeros on the first line), and every file it adds
carries ``sha256``, the digest of the file's bytes. So the digest of the last line covers every
file of the log and every event held inline, and ``verify`` can prove a clean lake by hashing
whole files instead of every event. Lakes written before this have lines without ``prev``;
they are read as before and verified event by event.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esanalytics.exceptions import CorruptLakeError
from esanalytics.store._faults import kill_point

__all__ = [
    "GENESIS_LINK",
    "CommitLine",
    "CommitLog",
    "FileEntry",
    "LogState",
    "TypedTwin",
    "file_digest",
    "replay",
]

GENESIS_LINK = "0" * 64


def file_digest(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (OpenSSL, streamed, off the GIL)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass(frozen=True, slots=True)
class TypedTwin:
    """The typed twin of a committed events file (see :mod:`esanalytics.store.typed`): its
    path below ``typed/`` (the events file's own path), digest and size, the payload fields
    it holds as columns (name to DuckDB type) and whether the payloads hold more fields."""

    path: str
    sha256: str
    bytes: int
    fields: dict[str, str]
    more: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "fields": self.fields,
        } | ({"more": True} if self.more else {})

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TypedTwin:
        return cls(
            path=raw["path"],
            sha256=raw["sha256"],
            bytes=raw["bytes"],
            fields=dict(raw["fields"]),
            more=bool(raw.get("more", False)),
        )


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
    sha256: str | None = None  # of the file's bytes; None in lakes written before digests
    typed: TypedTwin | None = None  # its typed twin; None in files written without one

    def to_json(self) -> dict[str, Any]:
        return (
            {
                "path": self.path,
                "category": self.category,
                "month": self.month,
                "rows": self.rows,
                "pos": [self.min_position, self.max_position],
                "rec": [self.min_recorded_us, self.max_recorded_us],
                "streams": [self.min_stream, self.max_stream],
                "bytes": self.bytes,
            }
            | ({} if self.sha256 is None else {"sha256": self.sha256})
            | ({} if self.typed is None else {"typed": self.typed.to_json()})
        )

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
            sha256=raw.get("sha256"),
            typed=None if raw.get("typed") is None else TypedTwin.from_json(raw["typed"]),
        )


def encode_line(record: dict[str, Any]) -> bytes:
    body = json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode()
    return body + b"\t" + f"{zlib.crc32(body):08x}".encode() + b"\n"


_FIELDS: dict[str, tuple[tuple[str, type], ...]] = {  # what each kind of commit carries
    "append": (("first", int), ("last", int), ("last_hash", str), ("recorded_at", int)),
    "seal": (("upto", int), ("add", list)),
    "compact": (("add", list), ("remove", list), ("at", int)),
    # An import's cursor moved past rows that added no event (all rejected, or all already
    # in the lake): the line holds the cursor alone.
    "cursor": (("cursor", dict),),
}


def _commit_record(body: bytes, path: Path | str, at: int) -> dict[str, Any]:
    """The record of a checksummed line, which must be a commit: a JSON object with its
    number and kind (a line whose checksum holds but which is not one was written by hand)."""
    try:
        record = json.loads(body)
    except ValueError:
        record = None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("n"), int)
        or record.get("kind") not in _FIELDS
        or any(not isinstance(record.get(k), t) for k, t in _FIELDS[record["kind"]])
        or not all(isinstance(r, list) and len(r) == 13 for r in record.get("rows", []))
        or not all(isinstance(a, dict) for a in record.get("add", []))
    ):
        raise CorruptLakeError(
            f"The commit log {path} has a line at byte {at} whose checksum holds but which is "
            "not a commit (not JSON, or no commit number and kind).",
            hint="the commit log was edited by hand or by another tool; restore "
            "_esa/commits.log from a backup, and run `esa verify` to see what is affected.",
            path=str(path),
        )
    return record


@dataclass(frozen=True, slots=True)
class CommitLine:
    """One complete commit line: its record, where it ends, the digest of its body and the
    ``prev`` link it carries (None in lines written before links)."""

    record: dict[str, Any]
    end: int
    digest: str
    prev: str | None


@dataclass
class LogState:
    """What a run of commit records leaves: the newest commit number, the head and its hash,
    the newest recorded time, the live files and the unsealed rows (the store's own state,
    and what ``_esa/checkpoint.json`` saves)."""

    n: int = 0
    head: int = 0
    last_hash: str = "0" * 64
    recorded_at: int = 0
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    tail: list[list[Any]] = field(default_factory=list)

    def apply(self, record: dict[str, Any]) -> None:
        for path in record.get("remove", ()):
            self.files.pop(path, None)
        for raw in record.get("add", ()):
            self.files[raw["path"]] = raw
        self.n = record["n"]
        if record["kind"] == "seal":
            self.tail = [row for row in self.tail if row[0] > record["upto"]]
        self.tail.extend(list(row) for row in record.get("rows", ()))
        if record["kind"] == "append":
            self.head, self.last_hash = record["last"], record["last_hash"]
            self.recorded_at = record["recorded_at"]


def replay(records: list[dict[str, Any]]) -> LogState:
    """The state the records leave, from an empty log."""
    state = LogState()
    for record in records:
        state.apply(record)
    return state


class CommitLog:
    """Reads and appends commit lines. Not thread-safe by itself: the store holds the writer
    lock around :meth:`append` and serializes its own reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tip: tuple[int, str] = (0, GENESIS_LINK)  # (end offset, digest of the line before)

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
        lines, end, torn = self.lines(offset)
        return [line.record for line in lines], end, torn

    def lines(self, offset: int = 0) -> tuple[list[CommitLine], int, bool]:
        """Complete lines after byte ``offset`` with their digests and links:
        ``(lines, new_offset, torn_tail)``."""
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
        lines: list[CommitLine] = []
        position = 0
        while position < len(chunk):
            end = chunk.find(b"\n", position)
            if end < 0:
                return lines, offset + position, True
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
                return lines, offset + position, True
            record = _commit_record(body, self.path, offset + position)
            digest = hashlib.sha256(body).hexdigest()
            lines.append(CommitLine(record, offset + end + 1, digest, record.get("prev")))
            position = end + 1
        if lines:
            self._tip = (lines[-1].end, lines[-1].digest)
        return lines, offset + position, False

    def lines_before(self, end: int) -> list[CommitLine]:
        """The complete lines that end at or before byte ``end``, read backwards from there
        until they hold a seal and an append line (so that they give the unsealed rows and
        the head as of ``end``), or the whole log before ``end``. Raises CorruptLakeError if
        ``end`` is not the end of a line of this log."""
        size = self.size()
        if end == 0:
            return []
        damaged = CorruptLakeError(
            f"The commit log {self.path} does not hold the commits the lake's saved state "
            f"(_esa/checkpoint.json) was taken at: it is {size:,} bytes long and has no "
            f"complete commit line ending at byte {end:,}.",
            hint="the commit log was cut short, emptied or replaced (by hand, by a restore, "
            "or by a query that wrote to it). Restore _esa/commits.log from a backup; "
            "`esa verify` names what is affected. Nothing was written.",
            path=str(self.path),
        )
        if size < end:
            raise damaged
        step = 1 << 16
        with open(self.path, "rb") as handle:
            while True:
                low = max(0, end - step)
                handle.seek(low)
                chunk = handle.read(end - low)
                if not chunk.endswith(b"\n"):
                    raise damaged
                if low:  # the first piece may be the end of a longer line
                    cut = chunk.find(b"\n")
                    chunk, low = chunk[cut + 1 :], low + cut + 1
                lines = []
                start = low
                for raw in chunk.split(b"\n")[:-1]:
                    body, tab, crc = raw.rpartition(b"\t")
                    if not tab or f"{zlib.crc32(body):08x}".encode() != crc:
                        raise damaged
                    record = _commit_record(body, self.path, start)
                    start += len(raw) + 1
                    digest = hashlib.sha256(body).hexdigest()
                    lines.append(CommitLine(record, start, digest, record.get("prev")))
                kinds = {line.record["kind"] for line in lines}
                if low == 0 or {"seal", "append"} <= kinds:
                    return lines
                step *= 4

    def digest_at(self, end: int) -> str:
        """The digest of the line that ends at byte ``end`` (64 zeros for 0)."""
        return self._digest_before(end)

    def _digest_before(self, valid_end: int) -> str:
        """The digest of the complete line that ends at ``valid_end`` (the link the next line
        carries); read backwards from there when it is not the line last seen."""
        if valid_end == 0:
            return GENESIS_LINK
        if self._tip[0] == valid_end:
            return self._tip[1]
        with open(self.path, "rb") as handle:
            start = valid_end - 1  # the newline that ends the line
            step = 1 << 16
            while True:
                low = max(0, start - step)
                handle.seek(low)
                window = handle.read(start - low)
                cut = window.rfind(b"\n")
                if cut >= 0 or low == 0:
                    line_start = low + cut + 1
                    break
                step *= 4
            handle.seek(line_start)
            line = handle.read(valid_end - 1 - line_start)
        body = line.rpartition(b"\t")[0]
        return hashlib.sha256(body).hexdigest()

    def append(self, record: dict[str, Any], *, valid_end: int) -> int:
        """Durably append one commit line after byte ``valid_end`` (dropping any torn tail
        beyond it), linked to the line before it (``record["prev"]`` is set here). Returns
        the new end offset. The caller holds the writer lock."""
        record["prev"] = self._digest_before(valid_end)
        line = encode_line(record)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            if os.fstat(fd).st_size != valid_end:
                os.ftruncate(fd, valid_end)
            try:
                # A full disk makes pwrite write only part of the line: write the rest, or
                # fail; a line is acknowledged only once it is whole and synced.
                view = memoryview(line)
                written = 0
                while written < len(line):
                    written += os.pwrite(fd, view[written:], valid_end + written)
                kill_point("commitlog.after_write")
                os.fdatasync(fd)
            except OSError:
                # Leave the log as it was. (An interrupt instead leaves the line torn, which
                # readers skip and the next writer truncates, or whole: committed, and taken
                # in by the next recovery, like a writer killed before its acknowledgement.)
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, valid_end)
                    os.fdatasync(fd)
                raise
        finally:
            os.close(fd)
        body = line.rpartition(b"\t")[0]
        self._tip = (valid_end + len(line), hashlib.sha256(body).hexdigest())
        return valid_end + len(line)
