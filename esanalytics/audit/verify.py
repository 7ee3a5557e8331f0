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
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from esanalytics.events import EVENT_SCHEMA, FILE_SCHEMA, GENESIS_HASH, canonical_rows, hex_digests
from esanalytics.exceptions import CorruptLakeError
from esanalytics.store import EventStore

__all__ = ["Finding", "VerifyResult", "verify"]


@dataclass(frozen=True)
class Finding:
    """One fault. ``kind`` is one of: ``missing_file``, ``unreadable_file``, ``file_rows``,
    ``modified``, ``chain_break``, ``deleted``, ``inserted``, ``moved``, ``version_gap``,
    ``truncated``, ``checkpoint``."""

    kind: str
    position: int | None
    stream_id: str | None
    detail: str
    path: str | None = None


@dataclass(frozen=True)
class VerifyResult:
    """The outcome: ``ok`` when nothing was found. ``digest`` is the hash of the last event
    verified (the chain head), ``position`` its position."""

    ok: bool
    position: int
    events: int
    digest: str
    findings: tuple[Finding, ...]
    seconds: float
    checkpoint: dict[str, Any] | None = field(default=None)

    @property
    def first(self) -> Finding | None:
        """The first fault in log order (file faults first)."""
        return self.findings[0] if self.findings else None

    def __str__(self) -> str:
        if self.ok:
            return f"OK: {self.events:,} events, chain intact up to position {self.position} (head {self.digest[:16]}...)"
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


def _rehash(
    table: pa.Table, prev_raw: Any = None, hash_raw: Any = None
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """For each row: does ``hash`` equal sha256(prev_hash || canonical(row))? One tight loop
    of SHA-256 calls; decoding and comparing are done by numpy."""
    import hashlib

    canonical = canonical_rows(table)
    n = len(canonical)
    if n == 0:
        return np.zeros(0, dtype=bool)
    buffers = canonical.buffers()
    bounds = np.frombuffer(
        buffers[1], dtype=np.int64, count=n + 1, offset=canonical.offset * 8
    ).tolist()
    data = memoryview(buffers[2])
    prev = (hex_digests(table["prev_hash"]) if prev_raw is None else prev_raw).tobytes()
    sha = hashlib.sha256
    digests: list[bytes] = []
    append = digests.append
    start = bounds[0]
    for i, end in enumerate(bounds[1:]):
        append(sha(prev[32 * i : 32 * i + 32] + data[start:end]).digest())
        start = end
    computed = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(n, 32)
    stored = hex_digests(table["hash"]) if hash_raw is None else hash_raw
    matches: np.ndarray[Any, np.dtype[np.bool_]] = np.all(computed == stored, axis=1)
    return matches


def verify(
    store: EventStore,
    *,
    against: dict[str, Any] | None = None,
    key: bytes | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyResult:
    """Check the whole log (see the module docstring); with ``against`` (a checkpoint from
    :func:`~esanalytics.audit.make_checkpoint`) and its ``key``, also prove the log still
    holds and extends that checkpoint. Never raises for a damaged lake: every fault becomes a
    :class:`Finding`.

    >>> import tempfile, esanalytics as esa
    >>> store = esa.open(tempfile.mkdtemp() + "/lake", create=True)
    >>> _ = store.append("account-1", [esa.NewEvent("AccountOpened", {})])
    >>> verify(store, workers=1).ok
    True
    """
    started = time.perf_counter()
    findings: list[Finding] = []
    head = store.refresh()
    entries = store.files()
    readable = []
    for entry in entries:
        problem = _check_file(store, entry)
        if problem is not None:
            findings.append(problem)
        if problem is None or problem.kind == "file_rows":  # still read what it holds
            readable.append(entry)
    workers = workers or min(os.cpu_count() or 1, 4)
    # Each worker reads its own files and sends back only compact facts: the rows whose hash
    # fails, every row's position with 64-bit prefixes of its prev_hash and hash (for the
    # links, checked here in position order), and per-stream version sums.
    tasks = [(store._resolve(e.path), e.category) for e in readable]
    parts: list[_FileFacts] = []
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for facts in pool.map(_file_facts, tasks, chunksize=1):
                parts.append(facts)
                if progress is not None:
                    progress(len(facts.positions))
    else:
        for task in tasks:
            parts.append(_file_facts(task))
            if progress is not None:
                progress(len(parts[-1].positions))
    tail = store.unsealed()
    if tail.num_rows:
        parts.append(_facts(tail))
    findings += [bad for facts in parts for bad in facts.bad]
    positions = np.concatenate([f.positions for f in parts]) if parts else np.empty(0, np.int64)
    prev8 = np.concatenate([f.prev8 for f in parts]) if parts else np.empty(0, np.uint64)
    hash8 = np.concatenate([f.hash8 for f in parts]) if parts else np.empty(0, np.uint64)
    order = np.argsort(positions, kind="stable")
    positions, prev8, hash8 = positions[order], prev8[order], hash8[order]
    events = len(positions)
    last_seen = int(positions[-1]) if events else 0
    genesis = np.uint64(0)
    expected_prev = np.r_[genesis, hash8[:-1]] if events else hash8
    for index in np.flatnonzero(prev8 != expected_prev)[:1_000].tolist():
        findings.append(
            Finding(
                "chain_break",
                int(positions[index]),
                None,
                "prev_hash is not the hash of the event before it",
            )
        )
    findings += _version_findings(store, readable, parts)
    findings += _position_findings([positions], head)
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
        last = _rows(store, readable, pc.field("global_position") == last_seen)
        last_hash = last["hash"][0].as_py() if last.num_rows else GENESIS_HASH
    findings = _explain_moves(store, readable, findings)
    if against is not None:
        from esanalytics.audit.checkpoint import check_checkpoint

        findings += check_checkpoint(store, against, key)
    findings.sort(key=_order)
    return VerifyResult(
        not findings,
        last_seen,
        events,
        last_hash,
        tuple(findings),
        time.perf_counter() - started,
        against,
    )


@dataclass(frozen=True)
class _FileFacts:
    bad: list[Finding]
    positions: Any
    prev8: Any
    hash8: Any
    versions: pa.Table  # stream_id, n, low, high, total, squares


def _file_facts(task: tuple[str, str]) -> _FileFacts:
    """Worker: the facts of one file (see verify)."""
    import pyarrow.parquet as pq

    path, category = task
    table = pq.read_table(path)
    table = table.add_column(2, "category", pa.array([category] * table.num_rows, pa.string()))
    return _facts(table)


def _prefix(raw: Any) -> Any:
    """The first 8 bytes of each decoded hash as a uint64."""
    return np.ascontiguousarray(raw[:, :8]).view(">u8").reshape(-1).astype(np.uint64)


def _facts(table: pa.Table) -> _FileFacts:
    prev_raw, hash_raw = hex_digests(table["prev_hash"]), hex_digests(table["hash"])
    ok = _rehash(table, prev_raw, hash_raw)
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


def _rows(store: EventStore, readable: list[Any], predicate: Any) -> pa.Table:
    """Rows of the readable files and the unsealed tail that match, by position."""
    tail = store.unsealed()
    table = pa.concat_tables([store._scan(readable, predicate), tail.filter(predicate)])
    return table.sort_by("global_position")


def _version_findings(
    store: EventStore, readable: list[Any], parts: list[_FileFacts]
) -> list[Finding]:
    """Each stream's versions are exactly 1..n: count, min, max, sum and sum of squares
    agree with that (checked for all streams at once), and a failing stream is read to name
    the version that breaks the run."""
    if not parts:
        return []
    merged = (
        pa.concat_tables([p.versions for p in parts])
        .group_by("stream_id")
        .aggregate(
            [
                ("version_count", "sum"),
                ("version_min", "min"),
                ("version_max", "max"),
                ("version_sum", "sum"),
                ("squares_sum", "sum"),
            ]
        )
    )
    n = merged["version_count_sum"].to_numpy().astype(np.float64)
    checks = (
        (merged["version_min_min"].to_numpy() == 1)
        & (merged["version_max_max"].to_numpy() == n)
        & (merged["version_sum_sum"].to_numpy() == n * (n + 1) / 2)
        & (merged["squares_sum_sum"].to_numpy() == n * (n + 1) * (2 * n + 1) / 6)
    )
    findings = []
    for stream in merged["stream_id"].take(pa.array(np.flatnonzero(~checks)[:100])).to_pylist():
        versions = _rows(store, readable, pc.field("stream_id") == stream)
        expected = 1
        for version, position in zip(
            versions["version"].to_pylist(), versions["global_position"].to_pylist(), strict=True
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


def _position_findings(chunks: list[Any], head: int) -> list[Finding]:
    """Positions must be exactly 1..n: missing ones were deleted, repeated ones inserted."""
    positions = np.sort(np.concatenate(chunks)) if chunks else np.empty(0, np.int64)
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


def _explain_moves(store: EventStore, entries: list[Any], findings: list[Finding]) -> list[Finding]:
    """A row that fails its hash but would pass at another position was *moved*: its
    prev_hash names the event it followed. Looked up only for the (few) modified rows."""
    modified = [f for f in findings if f.kind == "modified"][:1_000]
    if not modified:
        return findings
    positions = [f.position for f in modified]
    rows = store._scan(entries, pc.field("global_position").isin(positions), tail=[]).to_pylist()
    tail = store.unsealed()
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
        if _rehash(original)[0]:
            explained[finding.position] = Finding(
                "moved",
                finding.position,
                finding.stream_id,
                f"this event was at position {origin}; it was given position {finding.position}",
            )
    return [explained.get(f.position, f) if f.kind == "modified" else f for f in findings]


def _order(finding: Finding) -> tuple[int, int]:
    return (0 if finding.position is None else 1, finding.position or 0)


def _check_file(store: EventStore, entry: Any) -> Finding | None:
    import pyarrow.parquet as pq

    path = store.path / "events" / entry.path
    try:
        resolved = store._resolve(entry.path)
    except CorruptLakeError:
        return Finding(
            "missing_file",
            None,
            None,
            f"committed file {entry.path} is missing (positions {entry.min_position}..{entry.max_position})",
            str(path),
        )
    try:
        handle = pq.ParquetFile(resolved)
        rows = handle.metadata.num_rows
        schema = handle.schema_arrow
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
