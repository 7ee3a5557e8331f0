"""The commit log on object storage: one object per line, each made by a conditional PUT.

A local lake's log is one file that writers append to under a lock. Object stores have neither
append nor lock, so here each line is its own object, named after the byte offset the line
would start at in the local file::

    _esa/commits/00000000000000000000.line      the first line (its bytes, newline included)
    _esa/commits/00000000000000000347.line      the second: the first was 347 bytes long

The objects hold exactly the bytes the local log would (the same checksummed JSON, the same
``prev`` hash chain), so offsets, checkpoints, ``verify`` and signed checkpoints read the same
numbers from either log. The log's size is the last object's offset plus its length: one LIST,
since zero-padded names list in order.

A commit is ``PUT If-None-Match: *`` of the object at the writer's size of the log. Two writers
that read the same log name the same object, and the store lets exactly one create it: the
other gets :class:`LostRace`, takes in the winner's line, checks its expected versions again and
retries. A writer that read an old size names an object that exists, so it can never commit
past a line it has not read. An object is whole or absent, so no line is ever cut short: a
line that is not one complete, checksummed commit was written by someone else, and is damage.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, Protocol, TypeVar

from esanalytics.exceptions import ConcurrencyError, CorruptLakeError
from esanalytics.store._faults import kill_point
from esanalytics.store.commitlog import GENESIS_LINK, CommitLine, _commit_record, encode_line

__all__ = ["COMMIT_ATTEMPTS", "LOG_FOLDER", "LostRace", "ObjectCommitLog", "line_name", "retried"]

#: The folder of the log's objects, below the lake.
LOG_FOLDER = "_esa/commits"
_NAME = re.compile(r"(\d{20})\.line")
#: Lines fetched at once when a reader takes in many.
_FETCHERS = 16
#: Times a write is tried when other writers keep committing first, before LostRace reaches
#: its caller (each try takes in their commits and checks expected versions again).
COMMIT_ATTEMPTS = 30
_P = ParamSpec("_P")
_T = TypeVar("_T")
_retrying = threading.local()


def line_name(offset: int) -> str:
    """The rel path of the line that starts at byte ``offset``."""
    return f"{LOG_FOLDER}/{offset:020d}.line"


class LostRace(ConcurrencyError):
    """Another writer committed the line this one tried to write (the object at its offset
    exists). The store takes the new line in and retries; it reaches a caller only when every
    retry lost. Attribute: ``path`` (the commit log)."""

    path: str


def retried(write: Callable[_P, _T]) -> Callable[_P, _T]:
    """Run ``write`` again when its commit lost the race for its line to another writer
    (:class:`LostRace`, only on object storage), after a short random pause, up to
    :data:`COMMIT_ATTEMPTS` times. Each run starts over: it takes in the other writers'
    commits, checks the expected versions and ids against them, and writes its files anew
    (the lost try's were deleted). A write inside another retried one is retried by the
    outer one only."""

    @functools.wraps(write)
    def again(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        if getattr(_retrying, "active", False):
            return write(*args, **kwargs)
        _retrying.active = True
        try:
            for attempt in range(1, COMMIT_ATTEMPTS + 1):
                try:
                    return write(*args, **kwargs)
                except LostRace as lost:
                    if attempt == COMMIT_ATTEMPTS:
                        raise LostRace(
                            f"{COMMIT_ATTEMPTS} attempts to commit to {lost.path} each found "
                            "another writer's commit there first.",
                            hint="too many writers commit to this lake at once; write in "
                            "larger batches or from fewer processes, and try again. Nothing "
                            "was written.",
                            path=lost.path,
                            stream_id="",
                            expected=None,
                            actual=0,
                        ) from None
                    time.sleep(random.uniform(0, min(0.25, 0.004 * 2**attempt)))
            raise AssertionError("unreachable")
        finally:
            _retrying.active = False

    return again


class _Objects(Protocol):
    """What the log needs of the lake's storage (:class:`esanalytics.store.s3.S3FS` has it)."""

    url: str

    def list_sized(
        self, rel: str, *, start_after: str | None = None
    ) -> Iterable[tuple[str, int]]: ...

    def read_bytes(self, rel: str) -> bytes: ...

    def create_new(self, rel: str, data: bytes) -> bool: ...


class ObjectCommitLog:
    """Reads and appends commit lines held one per object; the API of
    :class:`esanalytics.store.commitlog.CommitLog`. Appends need no lock: :meth:`append`
    raises :class:`LostRace` when another writer took the offset first."""

    def __init__(self, fs: _Objects) -> None:
        self.fs = fs
        self.path = f"{fs.url}/{LOG_FOLDER}"
        self._tip: tuple[int, str] = (0, GENESIS_LINK)  # (end offset, digest of the line before)
        self._starts: dict[int, int] = {}  # end offset -> start offset, of the lines listed

    # -- listing ---------------------------------------------------------------------------

    def _listed(self, after: int | None) -> list[tuple[int, int]]:
        """``(offset, bytes)`` of the lines starting at ``after`` or later (all for None),
        checked to follow each other with no gap; remembered for :meth:`digest_at`."""
        start_after = None if not after else f"{LOG_FOLDER}/{after:020d}"
        found: list[tuple[int, int]] = []
        for rel, size in self.fs.list_sized(LOG_FOLDER, start_after=start_after):
            match = _NAME.fullmatch(rel[len(LOG_FOLDER) + 1 :])
            if match is None:
                raise self._damaged(f"an object {rel} that is not a commit line")
            found.append((int(match.group(1)), size))
        expected = after or 0
        for offset, size in found:
            if offset != expected:
                raise self._damaged(
                    f"a gap: the line at byte {expected:,} is missing"
                    if offset > expected
                    else f"a line at byte {offset:,}, inside the line before it"
                )
            self._starts[offset + size] = offset
            expected = offset + size
        return found

    def size(self) -> int:
        """The log's length in bytes, as if it were one file: the end of its last line."""
        end = self._tip[0]
        found = self._listed(end)
        return found[-1][0] + found[-1][1] if found else end

    # -- reading ---------------------------------------------------------------------------

    def _fetch(self, listed: list[tuple[int, int]]) -> list[CommitLine]:
        """The lines of the listed objects, each checked to be one complete commit line."""

        def one(item: tuple[int, int]) -> CommitLine:
            offset, size = item
            try:
                data = self.fs.read_bytes(line_name(offset))
            except FileNotFoundError:
                raise self._damaged(f"a gap: the line at byte {offset:,} vanished") from None
            body, tab, crc = data[:-1].rpartition(b"\t")
            if (
                len(data) != size
                or not data.endswith(b"\n")
                or b"\n" in data[:-1]
                or not tab
                or f"{zlib.crc32(body):08x}".encode() != crc
            ):
                raise self._damaged(f"a damaged line at byte {offset:,}")
            record = _commit_record(body, self.path, offset)
            digest = hashlib.sha256(body).hexdigest()
            return CommitLine(record, offset + size, digest, record.get("prev"))

        if len(listed) <= 2:
            return [one(item) for item in listed]
        with ThreadPoolExecutor(min(_FETCHERS, len(listed))) as pool:
            return list(pool.map(one, listed))

    def read_from(self, offset: int) -> tuple[list[dict[str, Any]], int, bool]:
        """Complete commits after byte ``offset``: ``(records, new_offset, torn_tail)``
        (never torn: an object is whole or absent)."""
        lines, end, torn = self.lines(offset)
        return [line.record for line in lines], end, torn

    def lines(self, offset: int = 0) -> tuple[list[CommitLine], int, bool]:
        """Complete lines after byte ``offset`` with their digests and links:
        ``(lines, new_offset, False)``."""
        lines = self._fetch(self._listed(offset))
        if lines:
            self._tip = (lines[-1].end, lines[-1].digest)
            return lines, lines[-1].end, False
        return lines, offset, False

    def lines_before(self, end: int) -> list[CommitLine]:
        """The complete lines that end at or before byte ``end``, read backwards from there
        until they hold a seal and an append line (so that they give the unsealed rows and
        the head as of ``end``), or the whole log before ``end``. Raises CorruptLakeError if
        ``end`` is not the end of a line of this log."""
        if end == 0:
            return []
        listed = [item for item in self._listed(None) if item[0] < end]
        if not listed or sum(listed[-1]) != end:
            raise CorruptLakeError(
                f"The commit log {self.path} does not hold the commits the lake's saved state "
                f"(_esa/checkpoint.json) was taken at: it has no complete commit line ending "
                f"at byte {end:,}.",
                hint="commit objects were deleted or replaced (by hand, by a restore, or by "
                "another tool). Restore _esa/commits/ from a backup; `esa verify` names what "
                "is affected. Nothing was written.",
                path=self.path,
            )
        lines: list[CommitLine] = []
        step = 8
        while listed:
            batch, listed = listed[-step:], listed[:-step]
            lines[:0] = self._fetch(batch)
            if {"seal", "append"} <= {line.record["kind"] for line in lines}:
                break
            step *= 4
        return lines

    def digest_at(self, end: int) -> str:
        """The digest of the line that ends at byte ``end`` (64 zeros for 0)."""
        if end == 0:
            return GENESIS_LINK
        if self._tip[0] == end:
            return self._tip[1]
        if end not in self._starts:
            self._listed(None)
        start = self._starts.get(end)
        if start is None:
            raise self._damaged(f"no line ending at byte {end:,}")
        [line] = self._fetch([(start, end - start)])
        return line.digest

    # -- writing ---------------------------------------------------------------------------

    def append(self, record: dict[str, Any], *, valid_end: int) -> int:
        """Commit one line at byte ``valid_end`` (the writer's size of the log), linked to the
        line before it (``record["prev"]`` is set here), by creating its object only if no
        object has its name. Returns the new end offset; raises :class:`LostRace` if another
        writer's line is there already (nothing was written)."""
        record["prev"] = self.digest_at(valid_end)
        line = encode_line(record)
        if not self.fs.create_new(line_name(valid_end), line):
            raise LostRace(
                f"Another writer committed to {self.path} at byte {valid_end:,} first.",
                hint="the lake changed while this write was being prepared; take in the new "
                "commits and try again (the store retries this itself). Nothing was written.",
                path=self.path,
                stream_id="",
                expected=None,
                actual=0,
            )
        kill_point("commitlog.after_write")
        body = line.rpartition(b"\t")[0]
        end = valid_end + len(line)
        self._starts[end] = valid_end
        self._tip = (end, hashlib.sha256(body).hexdigest())
        return end

    def _damaged(self, what: str) -> CorruptLakeError:
        return CorruptLakeError(
            f"The commit log {self.path} has {what}.",
            hint="commit objects were edited, deleted or added by hand or by another tool; "
            "restore _esa/commits/ from a backup, and run `esa verify` to see what is "
            "affected.",
            path=self.path,
        )
