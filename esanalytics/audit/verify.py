"""Integrity: recompute the hash chain and say exactly what was altered, and where.

Every event's ``hash`` covers its predecessor's hash and its canonical encoding (see
:mod:`esanalytics.events`). ``verify`` checks, in one pass over the log in position order:

* every committed file is there, readable, and holds the rows the commit log says;
* positions run 1, 2, 3 ... with no gap (a deleted event), repeat (an inserted one) or
  disorder (a moved one);
* each row's hash matches its content (else the event was *modified*);
* each row's ``prev_hash`` is the previous row's hash (else the chain is *broken*: something
  was removed, inserted or reordered there);
* each stream's versions run 1, 2, 3 ...;
* the log reaches the head the commit log records (else its tail was *truncated*), and, given
  a signed checkpoint, still contains and extends it.

The per-row hashing runs in worker processes, one per core, on independent slices: each row
is checked against its own stored ``prev_hash``, so no slice waits for another.

**Two ways to a clean result.** Every line of the commit log carries the SHA-256 of the line
before it, and every file it adds carries the SHA-256 of the file's bytes (DESIGN.md §2). So
by default ``verify`` first checks that chain of lines and hashes each committed file whole
(OpenSSL, on every core): if every link holds and every file is byte for byte what its commit
recorded, every event is as it was written, and the result says ``method="files"``. Anything
else (a broken link, a changed or missing file, a lake written before digests, a checkpoint
that does not vouch for every file up to its position) sends ``verify`` down the event-by-event
path above, which names the first bad position, the stream and the kind of fault.
``deep=True`` (``esa verify --deep``) always takes that path; it also reports a file whose bytes
changed although every event in it still matches its hash (``rewritten``), and a commit line
whose link does not hold (``commit_log``).

**What the quick pass proves.** Every event a reader can see is covered by a link or a
recomputed hash: files by their digests in linked commit lines; the newest commit line, which
no later line links to, by rehashing the events of the files it adds (its cost is the size of
the newest commit; a signed checkpoint that signed that line spares it); events held inline
in commit lines by their chain (each line's rows follow the previous commit's ``last_hash`` and
end at their own) and, for the unsealed ones readers take from the log, by their hashes; and
the files and unsealed rows together hold exactly the log's head. Both passes also compare
what readers are served with what the log proves: ``_esa/checkpoint.json`` (the state readers
open from) against the state the log gives at its offset, event files in ``events/`` that no
commit names (plain Parquet readers count them; a rolled-back or cut log leaves them), a writer
index saved beyond the log's end, materialized projections against the digests recorded
when they were written, and typed twins (``typed/``, the typed copies of files' rows that
queries read) against the digests their commit lines record; the twins the newest line adds,
which no later line links to, are derived again from their events files and compared. What stays out of reach without a signed checkpoint: a log rewritten
wholesale, or cut together with its saved state and the files of the lost commits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from esanalytics.events import (
    EVENT_SCHEMA,
    FILE_SCHEMA,
    GENESIS_HASH,
    hashes_match,
    hex_digests,
    rows_match,
)
from esanalytics.exceptions import CorruptLakeError, EsaError, LakeChangedError
from esanalytics.store import (
    GENESIS_LINK,
    CommitLine,
    EventStore,
    FileEntry,
    open_store,
)
from esanalytics.store.commitlog import replay
from esanalytics.store.eventstore import _rows_table
from esanalytics.store.fs import LakeFS, LocalFS
from esanalytics.store.layout import partition_dir, retired_name, tmp_name

__all__ = ["Finding", "VerifyResult", "verify"]


@dataclass(frozen=True)
class Finding:
    """One fault. ``kind`` is one of: ``missing_file``, ``unreadable_file``, ``file_rows``,
    ``modified``, ``chain_break``, ``deleted``, ``inserted``, ``moved``, ``version_gap``,
    ``truncated``, ``checkpoint``, ``commit_log``, ``rewritten``, ``saved_state`` (the
    store's ``_esa/checkpoint.json`` or writer index disagrees with the commit log),
    ``unnamed_file`` (event files no commit names: the log was rolled back or files were
    added), ``projection`` (a materialized projection's stored state was altered),
    ``statistics`` (what the commit log or the file's own footer says about a file's rows,
    positions, times or streams does not hold its events: readers that skip files or row
    groups by it miss events), ``misplaced`` (a file outside the folder of its category
    and month: readers take the category and month from the folder) and ``twin`` (a typed
    twin, the typed copy of a file's rows that queries read, is altered, missing, or in
    ``typed/`` without a commit naming it: its events file is not affected)."""

    kind: str
    position: int | None
    stream_id: str | None
    detail: str
    path: str | None = None


@dataclass(frozen=True)
class VerifyResult:
    """The outcome: ``ok`` when nothing was found. ``digest`` is the hash of the last event
    verified (the chain head), ``position`` its position. ``method`` says how the result was
    reached: ``"files"`` (every committed file hashed whole against the linked commit log) or
    ``"events"`` (every event's hash recomputed)."""

    ok: bool
    position: int
    events: int
    digest: str
    findings: tuple[Finding, ...]
    seconds: float
    checkpoint: dict[str, Any] | None = field(default=None)
    method: str = "events"
    why: str | None = None  # why every event was rehashed instead of the files

    @property
    def first(self) -> Finding | None:
        """The first fault in log order (missing or unreadable files first; the commit
        log's own faults last)."""
        return self.findings[0] if self.findings else None

    def __str__(self) -> str:
        if self.ok:
            how = (
                "every file matches its committed SHA-256"
                if self.method == "files"
                else "every event's hash recomputed"
            )
            against = ", extends the signed checkpoint" if self.checkpoint is not None else ""
            because = f"\n  (event by event because {self.why})" if self.why else ""
            return (
                f"OK: {self.events:,} events, chain intact up to position {self.position} "
                f"(head {self.digest[:16]}...; {how}{against}){because}"
            )
        lines = [f"FAILED: {len(self.findings)} finding(s); first:"]
        for finding in self.findings[:20]:
            where = (
                f"position {finding.position}"
                if finding.position is not None
                else finding.path or ""
            )
            stream = f" in {finding.stream_id!r}" if finding.stream_id else ""
            lines.append(f"  {finding.kind:16} {where}{stream}: {finding.detail}")
        if len(self.findings) > 20:
            lines.append(f"  ... and {len(self.findings) - 20} more")
        return "\n".join(lines)


def verify(
    store: EventStore | str | os.PathLike[str],
    *,
    against: dict[str, Any] | None = None,
    key: bytes | None = None,
    deep: bool = False,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyResult:
    """Check the whole log (see the module docstring); with ``against`` (a checkpoint from
    :func:`~esanalytics.audit.make_checkpoint`) and its ``key``, also prove the log still
    holds and extends that checkpoint; with ``deep``, recompute every event's hash even when
    every file matches its digest. Never raises for a damaged lake: every fault becomes a
    :class:`Finding` (``store`` may also be a lake's path, so that a lake no reader will
    open is reported as findings too). Writers, seals, compactions and vacuums may run
    meanwhile: it verifies the log as its lines stood when read, and starts again if a file it
    reads is vacuumed away (raising LakeChangedError after three tries). ``progress(n)`` is told of each ``n`` events checked (a negative ``n``
    takes back what the quick pass counted before it turned to the event-by-event one).

    >>> import tempfile, esanalytics as esa
    >>> store = esa.open(tempfile.mkdtemp() + "/lake", create=True)
    >>> _ = store.append("account-1", [esa.NewEvent("AccountOpened", {})])
    >>> verify(store, workers=1).ok
    True
    """
    for attempt in range(_ATTEMPTS):
        try:
            return _verify(store, against, key, deep, workers, progress)
        except (_Vacuumed, LakeChangedError):
            # A file of the log read was compacted and then vacuumed while it was read:
            # verify the log as it is now (the compacted files hold the same events).
            if attempt == _ATTEMPTS - 1:
                raise LakeChangedError(
                    "Files of the lake were compacted and vacuumed while verify read them, "
                    f"{_ATTEMPTS} times in a row.",
                    hint="run verify again, or vacuum with a longer older_than.",
                    path=str(getattr(store, "path", store)),
                ) from None
    raise AssertionError("unreachable")


_ATTEMPTS = 3


class _Vacuumed(Exception):
    """A committed file was found under none of its names while it was read."""


#: The lakes on object storage being verified, by URL: how an ``s3://`` path is opened.
_OBJECT_STORES: dict[str, Any] = {}


def _open_moving(path: str) -> Any:
    """Open a committed file (``path``: its final name) wherever it is now. A file only
    moves forward (temporary name, final name, retired name, deleted by vacuum), so
    trying the names in that order finds it even while a writer renames it; an open file
    stays readable whatever happens to its name. On object storage (an ``s3://`` path) a
    file never moves: it is opened where it is, through its lake's S3 filesystem."""
    if path.startswith("s3://"):
        fs = next((fs for url, fs in _OBJECT_STORES.items() if path.startswith(url + "/")), None)
        if fs is None:
            raise _Vacuumed(path)
        try:
            return fs.arrow.open_input_file(fs.arrow_path(path[len(fs.url) + 1 :]))
        except FileNotFoundError:
            raise _Vacuumed(path) from None
    for candidate in (path, tmp_name(path), path, retired_name(path)):
        try:
            return open(candidate, "rb")  # (the caller closes it)
        except FileNotFoundError:
            continue
    raise _Vacuumed(path)


def _verify(
    store: EventStore | str | os.PathLike[str],
    against: dict[str, Any] | None,
    key: bytes | None,
    deep: bool,
    workers: int | None,
    progress: Callable[[int], None] | None,
) -> VerifyResult:
    """One verify of the log as its lines stand when read (see :func:`verify`): every
    later step (the files, the unsealed rows, the head) is taken from those lines, so that
    writers, seals and compactions running meanwhile change nothing it sees."""
    started = time.perf_counter()
    workers = workers or min(os.cpu_count() or 1, 4)
    root = store.path if isinstance(store, EventStore) else _root(store)
    try:
        if not isinstance(store, EventStore):
            store = open_store(store)
        if not store.fs.local:  # its files open through its filesystem, in this process
            _OBJECT_STORES[store.fs.url] = store.fs
            workers = 1
        store.refresh()  # (refuses a log no reader or writer will take)
        lines = store.commit_lines()
    except CorruptLakeError as error:  # a log no reader or writer will take
        return _refused(error, root, against, started, store)
    logged = replay([line.record for line in lines])
    head = logged.head
    live = _live_files(lines)
    # (the folder around the log: saved state, unnamed files, twins, stored projections)
    around = _state_findings(store.fs, lines, live)
    inline = _inline_findings(lines)
    why = "--deep asked for it"
    if not deep:
        quick = _verify_files(store, lines, live, against, key, workers, progress, started)
        if isinstance(quick, VerifyResult) and not inline:
            if not around:
                return quick
            return dataclasses.replace(quick, ok=False, findings=tuple(around))
        why = quick if isinstance(quick, str) else "events held in commit lines do not match"
    findings: list[Finding] = []
    entries = [entry for entry, _ in live.values()]
    readable = []
    for entry in entries:
        problem = _check_file(store, entry)
        if problem is not None:
            findings.append(problem)
        if problem is None or problem.kind == "file_rows":  # still read what it holds
            readable.append(entry)
    # Each worker reads its own files and sends back only compact facts: the rows whose hash
    # fails, every row's position with 64-bit prefixes of its prev_hash and hash (for the
    # links, checked here in position order), and per-stream version sums.
    committed = {path: entry.sha256 for path, (entry, _) in live.items()}
    tasks = [(_file(store, e.path), e.category, committed.get(e.path), e) for e in readable]
    tail = (
        _rows_table([tuple(row) for row in logged.tail])
        if logged.tail
        else EVENT_SCHEMA.empty_table()
    )
    # The lead keeps of each file only its findings and digest check; its links go into one
    # set of arrays and its version sums into one running table (see _Gathered), so the
    # lead's memory is 24 bytes an event and a row a stream, not every file's facts at once.
    gathered = _Gathered(sum(entry.rows for entry in readable) + tail.num_rows)
    parallel = workers > 1 and len(tasks) > 1
    with ProcessPoolExecutor(max_workers=workers) if parallel else contextlib.nullcontext() as pool:
        results = pool.map(_file_facts, tasks, chunksize=1) if pool else map(_file_facts, tasks)
        for facts in results:
            gathered.add(facts)
            if progress is not None:
                progress(len(facts.positions))
    if tail.num_rows:
        gathered.add(_facts(tail))
    findings += gathered.bad
    positions, prev8, hash8, runs_through = gathered.in_order()
    events = len(positions)
    last_seen = int(positions[-1]) if events else 0
    # (each event's prev_hash is the hash of the one before it; the first's is the genesis)
    broken = np.flatnonzero(prev8[1:] != hash8[:-1]) + 1
    if events and prev8[0] != np.uint64(0):
        broken = np.r_[0, broken]
    del prev8, hash8
    for index in broken[:1_000].tolist():
        findings.append(
            Finding(
                "chain_break",
                int(positions[index]),
                None,
                "prev_hash is not the hash of the event before it",
            )
        )
    findings += _version_findings(store, readable, gathered.versions(), tail)
    if not runs_through:  # (positions 1..n, each once, need no more looking)
        findings += _position_findings(positions, head)
    del positions
    if last_seen < head:
        findings.append(
            Finding(
                "truncated",
                last_seen + 1,
                None,
                f"the commit log's head is {head}, the events stop at {last_seen}",
            )
        )
    last_hash = GENESIS_HASH
    if events:
        last = _rows(store, readable, pc.field("global_position") == last_seen, tail)
        last_hash = last["hash"][0].as_py() if last.num_rows else GENESIS_HASH
    findings = _explain_moves(store, readable, findings, tail)
    findings += _link_findings(lines)
    seen = {(f.kind, f.position) for f in findings if f.position is not None}
    findings += [f for f in inline if (f.kind, f.position) not in seen]
    findings += around
    if against is not None:
        from esanalytics.audit.checkpoint import check_checkpoint

        signed = check_checkpoint(store, against, key)
        findings += signed or _checkpoint_line_findings(lines, against)
    if not [f for f in findings if f not in around]:  # events hold, a file's bytes do not
        for entry, digest_ok in zip(readable, gathered.digests_ok, strict=False):
            if digest_ok is False:
                findings.append(
                    Finding(
                        "rewritten",
                        None,
                        None,
                        f"{entry.path} is not byte for byte the file that was committed (its "
                        "SHA-256 is not the one its commit line records), though every event "
                        "in it still matches its hash: the file was re-encoded or rewritten by "
                        "another tool, or the digest in the commit log was edited",
                        store._resolve(entry.path),
                    )
                )
    findings.sort(key=_order)
    return VerifyResult(
        not findings,
        last_seen,
        events,
        last_hash,
        tuple(findings),
        time.perf_counter() - started,
        against,
        why=why,
    )


def _verify_files(
    store: EventStore,
    lines: list[CommitLine],
    live: dict[str, tuple[FileEntry, int]],
    against: dict[str, Any] | None,
    key: bytes | None,
    workers: int,
    progress: Callable[[int], None] | None,
    started: float,
) -> VerifyResult | str:
    """The clean result by whole-file digests (see the module docstring), or why it cannot
    be reached that way and every event must be rehashed."""
    if any(line.prev is None for line in lines):
        return "the commit log was written before its lines were linked"
    broken = _link_findings(lines)
    if broken:
        return broken[0].detail
    inline: list[int] = []  # positions of events held in commit lines
    sealed_upto = 0
    head, last_hash = 0, GENESIS_HASH
    for line in lines:
        record = line.record
        if record["kind"] == "seal":
            sealed_upto = max(sealed_upto, record["upto"])
        inline += [row[0] for row in record.get("rows", ())]
        if record["kind"] == "append":
            head, last_hash = record["last"], record["last_hash"]
    if any(entry.sha256 is None for entry, _ in live.values()):
        return "some files were written before file digests"
    unsealed = sum(1 for position in inline if position > sealed_upto)
    events = sum(entry.rows for entry, _ in live.values()) + unsealed
    if events != head:
        return f"the committed files hold {events:,} events, the log's head is {head:,}"
    if against is not None:
        from esanalytics.audit.checkpoint import check_checkpoint

        if "log_digest" not in against:
            return "the checkpoint was made before checkpoints signed the commit log"
        if check_checkpoint(store, against, key) or _checkpoint_line_findings(lines, against):
            return "the checkpoint does not check out"
        signed, position = int(against["commit"]), int(against["position"])
        if any(n > signed and e.min_position <= position for e, n in live.values()):
            return (
                "files compacted after the checkpoint hold events from before it, and their "
                "digests are not signed (export a new checkpoint after compacting to keep "
                "verify quick)"
            )
    entries = [entry for entry, _ in live.values()]

    def matches(entry: FileEntry) -> bool:
        try:
            with _open_moving(_file(store, entry.path)) as file:
                return hashlib.file_digest(file, "sha256").hexdigest() == entry.sha256
        except (_Vacuumed, OSError):
            return False

    from concurrent.futures import ThreadPoolExecutor

    counted = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="esa-verify") as pool:
        for entry, ok in zip(entries, pool.map(matches, entries), strict=True):
            if not ok:
                if progress is not None and counted:
                    progress(-counted)  # the event-by-event pass counts from zero again
                return f"{entry.path} is missing or differs from its committed digest"
            if progress is not None:
                progress(entry.rows)
                counted += entry.rows
    # Nothing links to the newest commit line, so a file digest in it vouches for nothing
    # but itself (unless a signed checkpoint signed that line): its events are rehashed.
    # (The checkpoint vouches for the line whose digest it signed, not for a number.)
    newest = lines[-1].record if lines else {}
    signed = against is not None and against.get("log_digest") == lines[-1].digest
    added: list[pa.Table] = []
    for raw in () if signed else newest.get("add", ()):
        entry = FileEntry.from_json(raw)
        problem = _newest_file_problem(_file(store, entry.path), entry, added)
        if problem is not None:
            return problem
    problem = None if signed or not added else _newest_line_problem(store, lines, added)
    if problem is not None:
        return problem
    return VerifyResult(
        True,
        head,
        events,
        last_hash,
        (),
        time.perf_counter() - started,
        against,
        method="files",
    )


def _newest_file_problem(path: str, entry: FileEntry, added: list[pa.Table]) -> str | None:
    """Why a file the newest commit adds cannot be vouched for, or None: every event must
    match its hash, and what its commit line and its footer say about it must hold (see
    :class:`_Misleading`). Read run by run of row groups (see :func:`_row_group_runs`), as
    a compaction's file of millions of events would not fit a worker's memory whole."""
    import pyarrow.parquet as pq

    checks = _Misleading(entry, path)
    matches = True
    try:
        with _open_moving(path) as file:
            handle = pq.ParquetFile(file)
            for groups in _row_group_runs(handle.metadata):
                table = handle.read_row_groups(groups)
                checks.add(handle.metadata, groups, table)
                added.append(table.select(["global_position", "prev_hash", "hash"]))
                matches = matches and _all_match(table, entry.category)
    except (_Vacuumed, OSError, pa.ArrowException) as error:
        return f"{entry.path}, added by the newest commit, cannot be read: {error}"
    misleading = checks.findings()
    if misleading:
        return misleading[0].detail
    if not matches:
        return f"an event of {entry.path}, added by the newest commit, does not match its hash"
    return None


def _all_match(table: pa.Table, category: str) -> bool:
    """Whether every event of ``table`` (a file's columns, without the category it holds
    by its folder) matches its hash: row by row for a few rows (no Arrow compute, no pandas
    import: the quick pass stays quick), column-wise for many."""
    if table.num_rows > 20_000:
        return not _facts(table.add_column(2, "category", _repeated(category, table.num_rows))).bad
    columns = [
        (column.cast(pa.int64()) if pa.types.is_timestamp(column.type) else column).to_pylist()
        for column in table.columns
    ]
    columns.insert(2, [category] * table.num_rows)
    return all(rows_match(zip(*columns, strict=True)))


def _newest_line_problem(
    store: EventStore, lines: list[CommitLine], added: list[pa.Table]
) -> str | None:
    """Why the files the newest commit line adds (``added``: their positions, prev_hash and
    hash columns) do not hold exactly the events that line says, or None. Each event matching
    its own hash is not enough: an unlinked line can name a copy of other events, or remove
    another file than the ones it replaced with as many rows. So an append's files hold its
    positions, chained from the commit before; a seal's, the unsealed events it seals; a
    compaction's, the events of the files it removes (read again, against their digests)."""
    record = lines[-1].record
    before = replay([line.record for line in lines[:-1]])
    got = pa.concat_tables(added).sort_by("global_position")
    positions = got["global_position"].to_pylist()
    hashes = got["hash"].to_pylist()
    kind = record["kind"]
    if kind == "append":
        prevs = got["prev_hash"].to_pylist()
        if (
            positions != list(range(record["first"], record["last"] + 1))
            or prevs != [before.last_hash, *hashes[:-1]]
            or hashes[-1:] != [record["last_hash"]]
        ):
            return "the files of the newest append do not hold the chain of events it names"
        return None
    if kind == "seal":
        sealed = [(row[0], row[12]) for row in before.tail if row[0] <= record["upto"]]
        if list(zip(positions, hashes, strict=True)) != sealed:
            return "the file of the newest seal does not hold the unsealed events it seals"
        return None
    replaced: list[pa.Table] = []
    for path in record.get("remove", ()):
        raw = before.files.get(path)
        if raw is None or raw.get("sha256") is None:
            return f"the newest compaction removes {path}, which was not a committed file"
        try:
            with _open_moving(_file(store, path)) as file:
                if hashlib.file_digest(file, "sha256").hexdigest() != raw["sha256"]:
                    return f"{path}, which the newest compaction replaced, was altered"
                file.seek(0)
                replaced.append(_columns(file, ["global_position", "hash"]))
        except (_Vacuumed, OSError, pa.ArrowException):
            return f"{path}, which the newest compaction replaced, is gone (vacuumed)"
    old = pa.concat_tables(replaced).sort_by("global_position") if replaced else None
    if old is None or (
        old["global_position"].to_pylist() != positions or old["hash"].to_pylist() != hashes
    ):
        return "the file of the newest compaction does not hold the events of the files it removes"
    return None


def _columns(file: Any, names: list[str]) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.ParquetFile(file).read(columns=names)


class _Misleading:
    """What would make a reader see other events than the file holds, although every event
    matches its hash and the file its digest: the file outside the folder of its category
    and month (readers take both from the folder), the commit line's rows, positions,
    recorded times or streams not those of the file (readers skip whole files by them), or
    row group statistics that exclude values the row group holds, and indexes our writer
    never writes (bloom filters, page indexes), by which DuckDB and pyarrow skip row groups
    and pages. A commit line no later line links to can be edited unseen, and so can the
    file it adds with it, so the quick pass checks this for the newest commit's files.

    The file is given run by run of its row groups (:meth:`add`), so that a file of millions
    of events is checked in the memory of one run (see :func:`_row_group_runs`); what the
    commit line claims of the whole file is checked against the runs' merged bounds."""

    def __init__(self, entry: FileEntry, path: str) -> None:
        self.entry, self.path = entry, path
        self.groups: list[Finding] = []
        self.rows = 0
        self.bounds: dict[str, list[tuple[Any, Any]]] = {
            "positions": [],
            "recorded times": [],
            "streams": [],
        }

    def _found(self, kind: str, detail: str) -> Finding:
        return Finding(kind, None, None, f"{self.entry.path}: {detail}", self.path)

    def add(self, metadata: Any, groups: list[int], table: pa.Table) -> None:
        """Check the row groups ``groups`` of the file, whose rows ``table`` holds."""
        self.rows += table.num_rows
        if table.num_rows:
            for what, column in (
                ("positions", table["global_position"]),
                ("recorded times", table["recorded_at"].cast(pa.int64())),
                ("streams", table["stream_id"]),
            ):
                bounds = pc.min_max(column)
                self.bounds[what].append((bounds["min"].as_py(), bounds["max"].as_py()))
        offset = 0
        for index in groups:
            group = metadata.row_group(index)
            part = table.slice(offset, group.num_rows)
            offset += group.num_rows
            for column in range(group.num_columns):
                chunk = group.column(column)
                name = chunk.path_in_schema
                if chunk.bloom_filter_offset or chunk.has_column_index or chunk.has_offset_index:
                    self.groups.append(self._found("statistics", f"row group {index} has a "
                        f"bloom filter or page index for column {name}, which our writer never "
                        "writes: readers may skip rows by it"))  # fmt: skip
                    continue
                stats = chunk.statistics
                if stats is None or name not in part.column_names:
                    continue
                values = part[name]
                wrong = stats.has_null_count and stats.null_count != values.null_count
                if stats.has_min_max and part.num_rows:
                    # (times as their stored int64: converting a timestamp imports pandas)
                    timed = pa.types.is_timestamp(values.type)
                    bounds = pc.min_max(values.cast(pa.int64()) if timed else values)
                    low, high = bounds["min"].as_py(), bounds["max"].as_py()
                    least, most = (
                        (stats.min_raw, stats.max_raw) if timed else (stats.min, stats.max)
                    )
                    wrong = wrong or not (least <= low and high <= most)
                if wrong:
                    self.groups.append(self._found("statistics", f"row group {index}'s "
                        f"statistics for column {name} do not hold the values it holds: readers "
                        "that skip row groups by them (DuckDB, pyarrow, esanalytics' stream "
                        "reads) miss its events"))  # fmt: skip

    def findings(self) -> list[Finding]:
        """What misleads, once every row group was added: the file's place, what its commit
        line claims of it, then its row groups' statistics."""
        entry, findings = self.entry, []
        folder, _, name = entry.path.rpartition("/")
        if folder != partition_dir(entry.category, entry.month) or not (
            name.endswith(".parquet") and not name.startswith(".")
        ):
            findings.append(self._found("misplaced", f"its commit names category "
                f"{entry.category!r} and month {entry.month}, whose folder is "
                f"{partition_dir(entry.category, entry.month)}/: readers take the category "
                "and month from the folder"))  # fmt: skip
        if self.rows:
            pos, rec, streams = (
                (min(low for low, _ in spans), max(high for _, high in spans))
                for spans in self.bounds.values()
            )
            months = {_month_of(rec[0]), _month_of(rec[1])}
            if months != {entry.month}:
                findings.append(self._found("misplaced", f"it holds events recorded in "
                    f"{', '.join(sorted(months))}, its commit and folder say {entry.month}"))  # fmt: skip
            held = {
                "rows": (self.rows, entry.rows),
                "positions": (pos, (entry.min_position, entry.max_position)),
                "recorded times": (rec, (entry.min_recorded_us, entry.max_recorded_us)),
                "streams": (streams, (entry.min_stream, entry.max_stream)),
            }
            differ = [f"{what} {claimed} (it holds {actual})"
                      for what, (actual, claimed) in held.items() if actual != claimed]  # fmt: skip
            if differ:
                findings.append(self._found("statistics", "its commit line gives other "
                    + "; ".join(differ) + ": readers that skip files by these miss its events"))  # fmt: skip
        return findings + self.groups


#: The most rows verify's event-by-event pass reads of a file at once (whole row groups, at
#: least one): a worker's memory stays that of a few hundred thousand events whatever the
#: file's size (a compacted lake of 100M events has files of 2.5M).
READ_ROWS = 262_144


def _row_group_runs(metadata: Any) -> list[list[int]]:
    """The file's row groups in runs of at most :data:`READ_ROWS` rows (a larger group is
    a run of its own); one empty run for a file of no row groups."""
    runs: list[list[int]] = [[]]
    rows = 0
    for index in range(metadata.num_row_groups):
        n = metadata.row_group(index).num_rows
        if runs[-1] and rows + n > READ_ROWS:
            runs.append([])
            rows = 0
        runs[-1].append(index)
        rows += n
    return runs


def _month_of(us: int) -> str:
    return str(np.datetime64(us, "us").astype("datetime64[M]"))


def _root(lake: str | os.PathLike[str]) -> Path | str:
    """A lake's folder, or its URL on object storage."""
    return lake if isinstance(lake, str) and lake.startswith("s3://") else Path(lake)


def _lake_fs(root: Path | str) -> LakeFS | None:
    """The filesystem of a lake no store opened (its log refused): its folder, or its
    objects with the storage options of the environment (None when those cannot reach it)."""
    if isinstance(root, Path):
        return LocalFS(root)
    try:
        from esanalytics.store.s3 import S3FS

        return S3FS(root)
    except EsaError:
        return None


def _file(store: EventStore, path: str) -> str:
    """Where a committed events file is read from: its path, or its ``s3://`` URI."""
    return store.fs.uri(f"events/{path}")


def _refused(
    error: CorruptLakeError,
    root: Path | str,
    against: dict[str, Any] | None,
    started: float,
    store: EventStore | str | os.PathLike[str],
) -> VerifyResult:
    """The result for a lake whose commit log or saved state no reader will take: why,
    and, when the log's lines can still be read, what readers were offered beside what the
    log proves (the saved state, files no commit names)."""
    detail = error.problem + (f" ({error.hint})" if error.hint else "")
    findings = [
        Finding(
            getattr(error, "finding", "commit_log"),
            None,
            None,
            detail,
            getattr(error, "path", None),
        )
    ]
    try:
        fs = store.fs if isinstance(store, EventStore) else _lake_fs(root)
        if fs is not None:
            lines, _, _ = fs.commit_log().lines(0)
            findings += _state_findings(fs, lines, _live_files(lines))
    except CorruptLakeError:
        pass  # the log itself cannot be read: the first finding says why
    return VerifyResult(
        False, 0, 0, GENESIS_HASH, tuple(findings), time.perf_counter() - started, against
    )


def _inline_findings(lines: list[CommitLine]) -> list[Finding]:
    """The events held in commit lines: positions run on from commit to commit, each
    line's rows link to the event before them (the previous commit's ``last_hash``) and to
    each other and end at its own ``last_hash``, and every row still unsealed (readers see
    those from the log itself) matches its hash. Unlike a file, the newest line's rows are
    vouched for by no later link, so they must be rehashed."""
    findings: list[Finding] = []
    sealed = max((ln.record["upto"] for ln in lines if ln.record["kind"] == "seal"), default=0)
    previous, following = GENESIS_HASH, 1
    unsealed: list[Any] = []
    for line in lines:
        record = line.record
        if record["kind"] != "append":
            continue
        n, rows = record["n"], record.get("rows") or []
        if record["first"] != following:
            findings.append(Finding("commit_log", record["first"], None,
                                    f"commit {n} starts at position {record['first']}, the "
                                    f"commit before it ended at {following - 1}"))  # fmt: skip
        if rows:
            if [row[0] for row in rows] != list(range(record["first"], record["last"] + 1)):
                findings.append(Finding("commit_log", record["first"], None,
                                        f"commit {n} holds rows of other positions than it "
                                        "names"))  # fmt: skip
            for row, before in zip(rows, [previous] + [row[12] for row in rows[:-1]], strict=True):
                if row[11] != before:
                    findings.append(Finding("chain_break", row[0], row[1],
                                            "prev_hash is not the hash of the event before it "
                                            f"(held in commit {n})"))  # fmt: skip
            if rows[-1][12] != record["last_hash"]:
                findings.append(Finding("commit_log", record["last"], None,
                                        f"commit {n}'s last_hash is not its last event's "
                                        "hash"))  # fmt: skip
            unsealed += [row for row in rows if row[0] > sealed]
        previous, following = record["last_hash"], record["last"] + 1
    for row, ok in zip(unsealed, rows_match(unsealed), strict=True):
        if not ok:
            findings.append(Finding("modified", row[0], row[1],
                                    "the event's content does not match its hash (data, "
                                    "metadata or another field was altered in the commit "
                                    "line that holds it)"))  # fmt: skip
    return findings


def _state_findings(
    fs: LakeFS, lines: list[CommitLine], live: dict[str, tuple[FileEntry, int]]
) -> list[Finding]:
    """What readers may see beside what the commit log proves: the store's saved state
    (``_esa/checkpoint.json``) and writer index against the log, event files that no commit
    names, and materialized projections whose stored state was altered. Read through the
    lake's filesystem (``fs``), so a lake on object storage is checked by the same lines."""
    findings = []
    path = "_esa/checkpoint.json"
    pointer = "_esa/writer-index/current.json"
    texts: dict[str, str | None] = {}
    for file in (path, pointer):
        texts[file] = _reread(fs, file)
    # Both are saved after the commit line they describe: saved beyond the lines read, they
    # belong to a commit made since, which the log, read again now, holds.
    if max(_saved_offset(text) for text in texts.values()) > (lines[-1].end if lines else 0):
        with contextlib.suppress(CorruptLakeError):
            lines = fs.commit_log().lines(0)[0]
            live = _live_files(lines)
    ends = {line.end: index for index, line in enumerate(lines)}
    ends[0] = -1
    log_end = lines[-1].end if lines else 0

    def saved(detail: str, rel: str) -> None:
        findings.append(Finding("saved_state", None, None, detail, fs.uri(rel)))

    try:
        state = json.loads(texts[path] or "") if texts[path] is not None else None
        offset = None if state is None else int(state["offset"])
    except (OSError, ValueError, KeyError, TypeError):
        state, offset = None, None
        saved("_esa/checkpoint.json cannot be read", path)
    if state is not None and offset is not None:
        if offset not in ends:
            saved(f"_esa/checkpoint.json was taken at byte {offset:,} of the commit log, which "
                  f"ends at {log_end:,} with no commit line there: the log was cut short, "
                  f"rolled back or replaced (the saved state holds {state.get('head')} "
                  "events)", path)  # fmt: skip
        else:
            log = replay([line.record for line in lines[: ends[offset] + 1]])
            named = {raw.get("path"): raw for raw in state.get("files", [])}
            differ = [
                what
                for what, mine, theirs in (
                    ("files", log.files, named),
                    ("unsealed events", log.tail, state.get("tail")),
                    ("head", (log.n, log.head, log.last_hash, log.recorded_at),
                     (state.get("n"), state.get("head"), state.get("last_hash"),
                      state.get("recorded_at"))),
                )
                if mine != theirs
            ]  # fmt: skip
            digest = state.get("log_digest")
            if digest is not None and offset and digest != lines[ends[offset]].digest:
                differ.append("the digest of the commit line it was taken at")
            if differ:
                saved(f"_esa/checkpoint.json (the state readers open from) differs from the "
                      f"commit log in: {', '.join(differ)}", path)  # fmt: skip
    try:
        index = json.loads(texts[pointer] or "") if texts[pointer] else {}
        index_at = int(index.get("offset", 0))
    except (ValueError, KeyError, TypeError, AttributeError):
        index, index_at = {}, 0
    if index_at > log_end:  # (an edited line is named by its broken link instead)
        saved(f"the writer index was saved at byte {index_at:,} of the commit log, which ends "
              f"at {log_end:,}: the log was cut short or rolled back", pointer)  # fmt: skip
    elif index_at in ends and "ids_sha256" in index:  # (older indexes are rebuilt, unused)
        at = replay([line.record for line in lines[: ends[index_at] + 1]]).head
        problem = _writer_index_problem(fs, "_esa/writer-index", index, at)
        if index.get("log_digest") != (lines[ends[index_at]].digest if index_at else GENESIS_LINK):
            problem = problem or "it was not saved at the commit line it names"
        if problem and _reread(fs, pointer) != texts[pointer]:
            problem = None  # a writer saved a newer index while it was read: not a fault
        if problem:
            saved(f"the writer index (what writers check versions and event ids against) "
                  f"does not match the commit log: {problem}; writers rebuild it from the "
                  "log, and `esa compact` saves a new one", pointer)  # fmt: skip
    findings += _unnamed_findings(fs, live, lines)
    findings += _twin_findings(fs, live, lines)
    # (a lake on object storage keeps no materialized projections; importing DuckDB takes a
    # tenth of a second)
    if isinstance(fs, LocalFS) and fs.exists("projections"):
        from esanalytics.materialized import stored_state_problems

        for where, problem in stored_state_problems(fs.root):
            findings.append(Finding("projection", None, None, problem, where))
    return findings


def _saved_offset(text: str | None) -> int:
    """The commit log offset a saved state file was taken at (0 if none can be read)."""
    try:
        return int(json.loads(text or "")["offset"])
    except (ValueError, KeyError, TypeError):
        return 0


def _reread(fs: LakeFS, rel: str) -> str | None:
    """The text of a saved state file: None when it is missing, "" when it cannot be read."""
    try:
        return fs.read_bytes(rel).decode()
    except FileNotFoundError:
        return None
    except (OSError, EsaError, UnicodeDecodeError):
        return ""


def _writer_index_problem(fs: LakeFS, folder: str, index: dict[str, Any], head: int) -> str | None:
    """What is wrong with a writer index (in the lake's ``folder``) taken when the log held
    ``head`` events, if any."""
    import io

    import pyarrow.parquet as pq

    try:
        for name, digest in ((index["heads"], index["heads_sha256"]),
                             (index["ids"], index["ids_sha256"])):  # fmt: skip
            if fs.digest(f"{folder}/{name}") != digest:
                return f"{name} is not the file that was saved (its SHA-256 differs)"
        heads = pa.BufferReader(fs.read_bytes(f"{folder}/{index['heads']}"))
        versions = pq.read_table(heads, columns=["version"])
        count = pc.sum(versions["version"]).as_py() or 0
        keys = len(np.load(io.BytesIO(fs.read_bytes(f"{folder}/{index['ids']}"))))
    except (OSError, EsaError, ValueError, KeyError, TypeError, pa.ArrowException) as error:
        return f"it cannot be read ({error})"
    if count != head or keys != head:
        return f"it holds {count:,} versions and {keys:,} event ids, the log {head:,} events"
    return None


def _unnamed_findings(
    fs: LakeFS, live: dict[str, tuple[FileEntry, int]], lines: list[CommitLine]
) -> list[Finding]:
    """Visible event files that no commit names: plain Parquet readers count their events,
    the commit log does not (a rolled-back log, or files put there by hand or by a query).
    A file that the newest commit removed but a crashed compaction had not yet retired is
    named by the log: the next writer retires it. And committed files hidden under their retired
    name (only a file a commit removed is retired): esanalytics' readers still find them
    there, plain Parquet readers do not. On object storage nothing is renamed: a replaced
    file stays under its name until vacuum, and a writer's strays (see :func:`_strays`) are
    only reported once vacuum would have deleted them."""
    import pyarrow.parquet as pq

    listed = set(fs.list_files("events"))
    retiring = _retiring(lines)

    def unnamed_of(names: Any) -> list[str]:  # (lake-relative paths)
        return [
            path
            for path in names
            if path.endswith(".parquet")  # at any depth, as `events/**/*.parquet` reads
            and (name := path.removeprefix("events/")) not in live
            and name not in retiring
        ]

    unnamed = unnamed_of(sorted(listed))
    hidden = [
        name
        for name in live
        if fs.renames_on_publish
        and f"events/{name}" not in listed
        and f"events/{retired_name(name)}" in listed
    ]
    # Committed or removed since the lines were read? (A file is named after its commit,
    # and retired after the commit that removes it.)
    if unnamed or hidden:
        with contextlib.suppress(CorruptLakeError):
            lines = fs.commit_log().lines(0)[0]
            live = _live_files(lines)
            retiring = _retiring(lines)
            unnamed = unnamed_of(unnamed)
            hidden = [name for name in hidden if name in live]
    findings = [
        Finding(
            "misplaced",
            None,
            None,
            f"{name} is committed and no commit removed it, but it is hidden under its retired "
            f"name: esanalytics' readers read its {live[name][0].rows:,} events, plain Parquet "
            "readers (DuckDB, pyarrow) miss them. Rename it back",
            fs.uri(f"events/{retired_name(name)}"),
        )
        for name in hidden
        if name in live
    ]
    unnamed = _strays(fs, unnamed, lines, "events/")
    if not unnamed:
        return findings
    rows = 0
    for path in unnamed:
        try:
            with fs.arrow.open_input_file(fs.arrow_path(path)) as file:
                rows += pq.ParquetFile(file).metadata.num_rows
        except Exception:  # an unreadable file counts as a file, not as rows
            continue
    proven = sum(entry.rows for entry, _ in live.values())
    return [
        *findings,
        Finding(
            "unnamed_file",
            None,
            None,
            f"{len(unnamed):,} file(s) in events/ that no commit names hold {rows:,} events "
            f"(e.g. {unnamed[0].removeprefix('events/')}): plain Parquet readers (DuckDB, "
            f"pyarrow) count them, the commit log proves {proven:,} in files. "
            + (
                "The log was rolled back or cut, or files were put there by hand or by a query"
                if fs.renames_on_publish
                else _STRAY_HINT
            ),
            fs.uri(unnamed[0]),
        ),
    ]


#: How old a file no commit names must be before verify reports it on object storage, where
#: writers put files under their final names before the commit that names them: vacuum's
#: default ``older_than``, after which vacuum deletes a writer's leftovers.
STRAY_AGE = timedelta(hours=1)

#: The name a writer gives the files it puts on object storage before its commit (see
#: ``EventStore._write_files``): an append's or seal's ``a<commit number>-<token>-...``, a
#: compaction's ``c<token>-...``.
_WRITERS_NAME = re.compile(r"(a\d{12}-[0-9a-f]{10}-|c[0-9a-f]{12}-)[0-9a-z-]*\.parquet")

_STRAY_HINT = (
    "On object storage a writer that lost its commit race or died leaves such files until "
    "`esa vacuum` deletes them an hour later; these are older than that, or not named as a "
    "writer names its files: the log was rolled back or cut, vacuum was not run, or files "
    "were put there by hand. Run `esa vacuum`, then verify again"
)


def _strays(fs: LakeFS, unnamed: list[str], lines: list[CommitLine], root: str) -> list[str]:
    """The files of ``unnamed`` (lake-relative, below ``root``) to report. On a local lake,
    all of them. On object storage, leave out a file some commit named that a later one
    replaced (it stays under its name until vacuum deletes it) and a writer's stray: named as
    a writer names a file it puts there before its commit, and younger than
    :data:`STRAY_AGE` (a writer about to commit it, or one that lost its race or died
    since, whose files vacuum deletes). Any other file, or a stray that old, is reported:
    plain readers of the folder count its rows."""
    if fs.renames_on_publish or not unnamed:
        return unnamed
    named = {raw["path"] for line in lines for raw in line.record.get("add", ())}
    cutoff = time.time() - STRAY_AGE.total_seconds()
    reported = []
    for path in unnamed:
        name = path.removeprefix(root)
        if name in named:
            continue
        if _WRITERS_NAME.fullmatch(name.rpartition("/")[2]):
            try:
                if fs.modified(path) > cutoff:
                    continue
            except FileNotFoundError:
                continue  # (deleted by its writer or vacuum since it was listed)
        reported.append(path)
    return reported


def _retiring(lines: list[CommitLine]) -> set[str]:
    """The files the newest line removes: a crash may have left them at their published
    names, and the next writer retires them before it commits. A file an older line removed
    is retired (or vacuumed) for good: back at its published name, it is a stray."""
    return set(lines[-1].record.get("remove", ())) if lines else set()


def _twin_findings(
    fs: LakeFS, live: dict[str, tuple[FileEntry, int]], lines: list[CommitLine]
) -> list[Finding]:
    """Typed twins (see :mod:`esanalytics.store.typed`) that are not what their commit
    lines name: a twin whose bytes differ from its digest (named with the first row whose
    typed values differ from ``derive()`` of its events file), or that the newest line adds
    and is not ``derive()`` of its file (no later line links to that digest); a twin that
    is missing, or hidden under its retired name; a ``.parquet`` in ``typed/`` that no
    commit names as a twin (on object storage, see :func:`_strays`)."""
    from concurrent.futures import ThreadPoolExecutor

    listed = set(fs.list_files("typed"))
    twinned = [entry for entry, _ in live.values() if entry.typed is not None]
    newest = {raw["path"] for raw in (lines[-1].record.get("add", ()) if lines else ())}
    retiring = _retiring(lines)

    def unnamed_of(names: Any, live: dict[str, tuple[FileEntry, int]]) -> list[str]:
        return [
            path
            for path in names
            if path.endswith(".parquet")
            and (name := path.removeprefix("typed/")) not in retiring
            and (name not in live or live[name][0].typed is None)
        ]

    unnamed = unnamed_of(sorted(listed), live)

    def check(entry: FileEntry) -> Finding | None:
        assert entry.typed is not None
        path = fs.uri(f"typed/{entry.typed.path}")
        retired = f"typed/{retired_name(entry.typed.path)}"
        if fs.renames_on_publish and not os.path.exists(path) and fs.exists(retired):
            return _twin_finding(  # (or retired since the lines were read: see below)
                entry,
                fs.uri(retired),
                "is hidden under its retired name, and no commit removed its file: plain "
                "readers of typed/ miss its rows. Rename it back",
            )
        try:
            with _open_moving(path) as file:
                digest = hashlib.file_digest(file, "sha256").hexdigest()
        except (_Vacuumed, OSError):
            return _twin_finding(entry, path, "is missing")
        if digest == entry.typed.sha256 and entry.path not in newest:
            return None
        difference = _twin_difference(fs, entry, path)
        if digest == entry.typed.sha256:
            if difference is None:
                return None
            return _twin_finding(entry, path, f"is not derived from its events file: {difference}")
        return _twin_finding(
            entry,
            path,
            "is not the file that was committed (its SHA-256 is not the one its commit line "
            f"records): {difference or 'its values still equal derive() of its events file'}",
        )

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="esa-verify") as pool:
        findings = [f for f in pool.map(check, twinned) if f is not None]
    missing = [f for f in findings if " is missing. " in f.detail]
    hidden = [f for f in findings if "retired name" in f.detail]
    if (
        missing or unnamed or hidden
    ):  # committed or removed (and vacuumed) since the lines were read?
        with contextlib.suppress(CorruptLakeError):
            lines = fs.commit_log().lines(0)[0]
            now = _live_files(lines)
            retiring = _retiring(lines)
            gone = {f.path for f in missing} - {
                fs.uri(f"typed/{e.typed.path}") for e, _ in now.values() if e.typed is not None
            }
            findings = [f for f in findings if f.path not in gone]
            findings = [  # removed by a commit since: retired, as it should be
                f
                for f in findings
                if f not in hidden
                or any(
                    e.typed is not None and f.path == fs.uri(f"typed/{retired_name(e.typed.path)}")
                    for e, _ in now.values()
                )
            ]
            unnamed = unnamed_of(unnamed, now)
    unnamed = _strays(fs, unnamed, lines, "typed/")
    if unnamed:
        findings.append(
            Finding(
                "twin",
                None,
                None,
                f"{len(unnamed):,} file(s) in typed/ that no commit names as a typed twin (e.g. "
                f"{unnamed[0].removeprefix('typed/')}): a query of typed/ would read their rows. "
                + (
                    "The log was rolled back or cut, or files were put there by hand; move them "
                    "out of the lake"
                    if fs.renames_on_publish
                    else _STRAY_HINT
                ),
                fs.uri(unnamed[0]),
            )
        )
    return findings


def _twin_finding(entry: FileEntry, path: str, what: str) -> Finding:
    return Finding(
        "twin",
        None,
        None,
        f"the typed twin of {entry.path} (positions {entry.min_position}..{entry.max_position})"
        f" {what}. Queries that read twins would read it; its events file is not affected. "
        "Restore the twin from a backup",
        path,
    )


def _twin_difference(fs: LakeFS, entry: FileEntry, path: str) -> str | None:
    """How the twin at ``path`` differs from ``derive()`` of its events file: the fields its
    commit line names, or the first row whose typed values differ, and in which column (None
    when they are equal)."""
    import pyarrow.parquet as pq

    from esanalytics.store import typed

    try:
        with _open_moving(fs.uri(f"events/{entry.path}")) as file:
            if entry.sha256 and hashlib.file_digest(file, "sha256").hexdigest() != entry.sha256:
                return "its events file is altered too, so derive() cannot say what it should hold"
            file.seek(0)
            body = pq.ParquetFile(file).read(columns=[*typed.TWIN_BASE, "data"])
        with _open_moving(path) as file:
            twin = pq.ParquetFile(file).read()
    except _Vacuumed:
        with contextlib.suppress(CorruptLakeError):
            if entry.path not in _live_files(fs.commit_log().lines(0)[0]):
                raise  # compacted and vacuumed since the lines were read: verify starts again
        return "its events file or the twin is missing"
    except (OSError, pa.ArrowException) as error:
        return f"it cannot be compared with its events file ({error})"
    expected, fields, more = typed.derive(body)
    assert entry.typed is not None
    if (list(entry.typed.fields.items()), entry.typed.more) != (list(fields.items()), more):
        return (  # readers take each column's type (or its absence) from the line
            f"its commit line names the fields {entry.typed.fields} (more: "
            f"{entry.typed.more}), derive() gives {fields} (more: {more})"
        )
    if twin.column_names != expected.column_names:
        return f"its columns are {twin.column_names}, derive() gives {expected.column_names}"
    first: tuple[int, str] | None = None
    rows = min(twin.num_rows, expected.num_rows)
    for name in expected.column_names:
        mine, theirs = twin[name].slice(0, rows), expected[name].slice(0, rows)
        if not mine.type.equals(theirs.type):
            return f"its column {name} is {mine.type}, derive() gives {theirs.type}"
        differs = pc.or_(
            pc.fill_null(pc.not_equal(mine, theirs), False),
            pc.not_equal(pc.is_null(mine), pc.is_null(theirs)),
        )
        index = pc.index(differs, True).as_py()
        if index >= 0 and (first is None or index < first[0]):
            first = (index, name)
    if first is None and twin.num_rows != expected.num_rows:
        first = (rows, "(rows)")
    if first is None:
        return None
    index, name = first
    position = body["global_position"][index].as_py() if index < body.num_rows else None
    if name == "(rows)":
        return f"it holds {twin.num_rows:,} rows, its events file {expected.num_rows:,}"
    return (
        f"row {index:,} (position {position}) is the first whose typed values differ: column "
        f"{name} holds {twin[name][index].as_py()!r}, derive() of its events file gives "
        f"{expected[name][index].as_py()!r}"
    )


def _live_files(lines: list[CommitLine]) -> dict[str, tuple[FileEntry, int]]:
    """The files the commit lines leave in the log, each with the commit that added it."""
    live: dict[str, tuple[FileEntry, int]] = {}
    for line in lines:
        for path in line.record.get("remove", ()):
            live.pop(path, None)
        for raw in line.record.get("add", ()):
            live[raw["path"]] = (FileEntry.from_json(raw), line.record["n"])
    return live


def _link_findings(lines: list[CommitLine]) -> list[Finding]:
    """Commit lines whose ``prev`` is not the digest of the line before, or whose number
    does not follow the one before (lines written before links carry none and are not
    judged)."""
    findings = []
    for index, line in enumerate(lines):
        if line.prev is not None and line.record.get("n") != index + 1:
            findings.append(
                Finding(
                    "commit_log",
                    None,
                    None,
                    f"commit line {index + 1} carries the number {line.record.get('n')}: the "
                    "commit log was altered there (a line renumbered, removed or inserted)",
                )
            )
        expected = lines[index - 1].digest if index else GENESIS_LINK
        if line.prev is not None and line.prev != expected:
            findings.append(
                Finding(
                    "commit_log",
                    None,
                    None,
                    f"commit {line.record.get('n')} does not link to the commit line before it: "
                    "the commit log was altered there (a line edited, removed or inserted)",
                )
            )
    return findings


def _checkpoint_line_findings(lines: list[CommitLine], against: dict[str, Any]) -> list[Finding]:
    """A checkpoint that signed a commit line: that line must still be in the log, unchanged."""
    if "log_digest" not in against:
        return []
    try:
        number = int(against["commit"])
    except (KeyError, TypeError, ValueError):
        return [Finding("checkpoint", None, None, "the checkpoint file is incomplete")]
    line = next((ln for ln in lines if ln.record.get("n") == number), None)
    if line is not None and line.digest == against["log_digest"]:
        return []
    found = "is gone" if line is None else "differs"
    return [
        Finding(
            "checkpoint",
            None,
            None,
            f"commit {number}, which the checkpoint signed, {found}: the commit log was rewritten",
        )
    ]


@dataclass(frozen=True)
class _FileFacts:
    bad: list[Finding]
    positions: Any
    prev8: Any
    hash8: Any
    versions: pa.Table  # stream_id, n, low, high, total, squares
    digest_ok: bool | None = None  # the file's bytes against its committed SHA-256


class _Gathered:
    """The lead's part of the every-event pass: what each file's facts (see :func:`_facts`)
    leave once they arrive. Links (positions with prefixes of prev_hash and hash) are copied
    into one array each, sized by the committed row counts and grown if files hold more;
    version sums are folded into one running table whenever enough have piled up; each
    file keeps only its findings and digest check."""

    #: Version rows (stream, file) held before they are folded into the running table.
    FOLD_ROWS = 2_000_000

    def __init__(self, expected: int) -> None:
        self.positions: Any = np.empty(expected, np.int64)
        self.prev8: Any = np.empty(expected, np.uint64)
        self.hash8: Any = np.empty(expected, np.uint64)
        self.filled = 0
        self.bad: list[Finding] = []
        self.digests_ok: list[bool | None] = []
        self._versions: list[pa.Table] = []
        self._pending = 0

    def add(self, facts: _FileFacts) -> None:
        n = len(facts.positions)
        if self.filled + n > len(self.positions):  # files hold more rows than were committed
            size = max(2 * len(self.positions), self.filled + n)
            self.positions, self.prev8, self.hash8 = (
                np.resize(a, size) for a in (self.positions, self.prev8, self.hash8)
            )
        end = self.filled + n
        self.positions[self.filled : end] = facts.positions
        self.prev8[self.filled : end] = facts.prev8
        self.hash8[self.filled : end] = facts.hash8
        self.filled = end
        self.bad += facts.bad
        self.digests_ok.append(facts.digest_ok)
        self._versions.append(facts.versions)
        self._pending += facts.versions.num_rows
        if self._pending > self.FOLD_ROWS:
            self._versions = [_merged_versions(self._versions)]
            self._pending = self._versions[0].num_rows

    def versions(self) -> pa.Table | None:
        """Each stream's version sums over every file (see :func:`_version_findings`)."""
        return _merged_versions(self._versions) if self._versions else None

    def in_order(self) -> tuple[Any, Any, Any, bool]:
        """positions, prev8 and hash8 in position order, and whether the positions are
        exactly 1..n, each once. That (the log as it should be) is checked in one pass and
        each array is put in order by placing every row at its position; otherwise they are
        sorted by position (stable, so a repeated position keeps file order). Called once:
        it hands its arrays over rather than keep a second copy."""
        n = self.filled
        positions, prev8, hash8 = self.positions[:n], self.prev8[:n], self.hash8[:n]
        self.positions = self.prev8 = self.hash8 = np.empty(0, np.int64)
        if n == 0 or (int(positions.min()) == 1 and int(positions.max()) == n):
            seen = np.zeros(n, dtype=bool)
            positions -= 1  # (now each row's place)
            seen[positions] = True
            if seen.all():  # n positions in 1..n that cover all n places: each once
                del seen
                prev8 = _placed(prev8, positions)
                hash8 = _placed(hash8, positions)
                del positions
                return np.arange(1, n + 1, dtype=np.int64), prev8, hash8, True
            del seen
            positions += 1
        order = np.argsort(positions, kind="stable")
        return positions[order], prev8[order], hash8[order], False


def _placed(values: Any, places: Any) -> Any:
    out = np.empty_like(values)
    out[places] = values
    return out


def _merged_versions(tables: list[pa.Table]) -> pa.Table:
    """Per-stream version sums of several parts of the log added up (see :func:`_facts`),
    in the columns each part has, one buffer a column: group_by's chunks are slices of one
    buffer, and pickling a slice sends its whole buffer, so a worker's sums would cross to
    the lead once per chunk (and pile up there)."""
    if len(tables) > 1:
        tables = [
            pa.concat_tables(tables)
            .group_by("stream_id")
            .aggregate(list(_VERSION_MERGE))
            .rename_columns({f"{name}_{how}": name for name, how in _VERSION_MERGE})
        ]
    return tables[0].combine_chunks()


def _file_facts(task: tuple[str, str, str | None, FileEntry | None]) -> _FileFacts:
    """Worker: the facts of one file (see verify), and, given its entry, what would mislead
    its readers (see :class:`_Misleading`). The file is read run by run of its row groups
    (see :func:`_row_group_runs`), each run's facts merged into the file's."""
    import pyarrow.parquet as pq

    path, category, sha256, entry = task
    checks = None if entry is None else _Misleading(entry, path)
    parts = []
    with _open_moving(path) as file:  # (the file stays readable if a writer renames it)
        handle = pq.ParquetFile(file)
        for groups in _row_group_runs(handle.metadata):
            table = handle.read_row_groups(groups)  # (read_table would import pandas)
            if checks is not None:
                checks.add(handle.metadata, groups, table)
            parts.append(
                _facts(table.add_column(2, "category", _repeated(category, table.num_rows)))
            )
            del table
        if sha256 is not None:
            file.seek(0)
            digest_ok = hashlib.file_digest(file, "sha256").hexdigest() == sha256
    facts = _merged(parts)
    if checks is not None:
        facts.bad[:0] = checks.findings()
    if sha256 is None:
        return facts
    return dataclasses.replace(facts, digest_ok=digest_ok)


def _merged(parts: list[_FileFacts]) -> _FileFacts:
    """The facts of a file from those of its runs of row groups, in file order (a stream's
    version sums added up over the runs, as :class:`_Gathered` adds up files')."""
    versions = _merged_versions([p.versions for p in parts])
    if len(parts) == 1:
        return dataclasses.replace(parts[0], versions=versions)
    return _FileFacts(
        [bad for p in parts for bad in p.bad],
        np.concatenate([p.positions for p in parts]),
        np.concatenate([p.prev8 for p in parts]),
        np.concatenate([p.hash8 for p in parts]),
        versions,
    )


#: How per-stream version facts of two parts of the log merge (see :func:`_facts`).
_VERSION_MERGE = (
    ("version_count", "sum"),
    ("version_min", "min"),
    ("version_max", "max"),
    ("version_sum", "sum"),
    ("squares_sum", "sum"),
)


def _repeated(text: str, n: int) -> pa.Array:
    """``text`` n times, as a string column (``pa.array`` of a list would import pandas,
    a second of the quick verify)."""
    data = text.encode()
    offsets = np.arange(0, (n + 1) * len(data), len(data) or 1, dtype=np.int32)[: n + 1]
    if not data:
        offsets = np.zeros(n + 1, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data * n)]
    )


def _prefix(raw: Any) -> Any:
    """The first 8 bytes of each decoded hash as a uint64."""
    return np.ascontiguousarray(raw[:, :8]).view(">u8").reshape(-1).astype(np.uint64)


def _facts(table: pa.Table) -> _FileFacts:
    prev_raw, hash_raw = hex_digests(table["prev_hash"]), hex_digests(table["hash"])
    ok = hashes_match(table, prev_raw, hash_raw)
    bad_rows = np.flatnonzero(~ok)
    bad = [
        Finding("modified", int(table["global_position"][i].as_py()), table["stream_id"][i].as_py(),
                "the event's content does not match its hash (data, metadata or another field was altered)")
        for i in bad_rows.tolist()
    ]  # fmt: skip
    version = table["version"]
    squares = pc.multiply(version, version)
    grouped = (
        table.select(["stream_id"])
        .append_column("version", version)
        .append_column("squares", squares)
        .group_by("stream_id")
        .aggregate(
            [
                ("version", "count"),
                ("version", "min"),
                ("version", "max"),
                ("version", "sum"),
                ("squares", "sum"),
            ]
        )
    )
    return _FileFacts(
        bad,
        table["global_position"].to_numpy(),
        _prefix(prev_raw),
        _prefix(hash_raw),
        grouped,
    )


def _rows(store: EventStore, readable: list[Any], predicate: Any, tail: pa.Table) -> pa.Table:
    """Rows of the readable files and the unsealed tail that match, by position."""
    table = pa.concat_tables([store._scan(readable, predicate), tail.filter(predicate)])
    return table.sort_by("global_position")


def _version_findings(
    store: EventStore, readable: list[Any], versions: pa.Table | None, tail: pa.Table
) -> list[Finding]:
    """Each stream's versions are exactly 1..n: count, min, max, sum and sum of squares
    (``versions``, one row a stream) agree with that, checked for all streams at once, and a
    failing stream is read to name the version that breaks the run."""
    if versions is None:
        return []
    n = versions["version_count"].to_numpy().astype(np.float64)
    checks = (
        (versions["version_min"].to_numpy() == 1)
        & (versions["version_max"].to_numpy() == n)
        & (versions["version_sum"].to_numpy() == n * (n + 1) / 2)
        & (versions["squares_sum"].to_numpy() == n * (n + 1) * (2 * n + 1) / 6)
    )
    findings = []
    for stream in versions["stream_id"].take(pa.array(np.flatnonzero(~checks)[:100])).to_pylist():
        rows = _rows(store, readable, pc.field("stream_id") == stream, tail)
        expected = 1
        for version, position in zip(
            rows["version"].to_pylist(), rows["global_position"].to_pylist(), strict=True
        ):
            if version != expected:
                findings.append(
                    Finding(
                        "version_gap", position, stream, f"version {version} follows {expected - 1}"
                    )
                )
                break
            expected += 1
        else:
            findings.append(Finding("version_gap", None, stream, "the stream's versions repeat"))
    return findings


def _position_findings(positions: Any, head: int) -> list[Finding]:
    """Positions (in order) must be exactly 1..n: missing ones were deleted, repeated ones
    inserted."""
    findings = []
    if len(positions) and positions[0] > 1:
        findings.append(
            Finding("deleted", 1, None, f"positions 1..{int(positions[0]) - 1} are missing")
        )
    steps = np.diff(positions)
    for index in np.flatnonzero(steps == 0)[:1_000].tolist():
        findings.append(
            Finding("inserted", int(positions[index]), None, "a second event holds this position")
        )
    for index in np.flatnonzero(steps > 1)[:1_000].tolist():
        low, high = int(positions[index]) + 1, int(positions[index + 1]) - 1
        if low <= head:
            findings.append(
                Finding("deleted", low, None, f"positions {low}..{min(high, head)} are missing")
            )
    return findings


def _explain_moves(
    store: EventStore, entries: list[Any], findings: list[Finding], tail: pa.Table
) -> list[Finding]:
    """A row that fails its hash but would pass at another position was *moved*: its
    prev_hash names the event it followed. Looked up only for the (few) modified rows."""
    modified = [f for f in findings if f.kind == "modified"][:1_000]
    if not modified:
        return findings
    positions = [f.position for f in modified]
    rows = store._scan(entries, pc.field("global_position").isin(positions), tail=[]).to_pylist()
    rows += tail.filter(
        pc.is_in(tail["global_position"], pa.array(positions, pa.int64()))
    ).to_pylist()
    by_position = {row["global_position"]: row for row in rows}
    wanted = list({row["prev_hash"] for row in rows})
    found = store._scan(
        entries, pc.field("hash").isin(wanted), columns=["global_position", "hash"]
    ).to_pylist()
    predecessor = {row["hash"]: row["global_position"] for row in found}
    explained = {}
    for finding in modified:
        row = by_position.get(finding.position)
        if row is None or row["prev_hash"] not in predecessor:
            continue
        origin = predecessor[row["prev_hash"]] + 1
        if origin == finding.position:
            continue
        original = pa.Table.from_pylist([{**row, "global_position": origin}], schema=EVENT_SCHEMA)
        if hashes_match(original)[0]:
            explained[finding.position] = Finding(
                "moved",
                finding.position,
                finding.stream_id,
                f"this event was at position {origin}; it was given position {finding.position}",
            )
    return [explained.get(f.position, f) if f.kind == "modified" else f for f in findings]


def _order(finding: Finding) -> tuple[int, int]:
    """Faults of files first, then events in log order, then the commit log's own and what
    misleads readers about a file (after the events, whose alteration it often follows)."""
    if finding.kind in ("commit_log", "rewritten", "statistics", "misplaced", "twin"):
        return (2, 0)
    return (0 if finding.position is None else 1, finding.position or 0)


def _check_file(store: EventStore, entry: Any) -> Finding | None:
    import pyarrow.parquet as pq

    path = _file(store, entry.path)
    try:
        resolved = store._resolve(entry.path)
    except CorruptLakeError:
        return Finding(
            "missing_file",
            None,
            None,
            f"committed file {entry.path} is missing (positions {entry.min_position}..{entry.max_position})",
            path,
        )
    try:
        with _open_moving(path) as file:  # (renamed since it was resolved?)
            handle = pq.ParquetFile(file)
            rows = handle.metadata.num_rows
            schema = handle.schema_arrow
    except _Vacuumed:
        # On object storage nothing looked for it first (see EventStore._locate): still
        # committed, it is missing; replaced by a compaction since, verify starts again.
        if store.fs.renames_on_publish or entry.path not in _live_files(
            store.fs.commit_log().lines(0)[0]
        ):
            raise
        return Finding(
            "missing_file",
            None,
            None,
            f"committed file {entry.path} is missing (positions {entry.min_position}..{entry.max_position})",
            path,
        )
    except Exception as error:
        return Finding(
            "unreadable_file", None, None, f"{entry.path} cannot be read: {error}", resolved
        )
    if schema.names != FILE_SCHEMA.names or any(
        not schema.field(f.name).type.equals(f.type) for f in FILE_SCHEMA
    ):
        detail = (
            f"{entry.path} does not have the event record's columns (replaced by another file?)"
        )
        return Finding("unreadable_file", None, None, detail, resolved)
    if rows != entry.rows:
        return Finding(
            "file_rows",
            None,
            None,
            f"{entry.path} holds {rows} rows; the commit log says {entry.rows} (swapped or altered)",
            resolved,
        )
    return None
