"""The import machinery every source shares: map, check, commit with the cursor, resume.

A run reads the named import's cursor from the lake, asks the source for the rows after it,
maps each batch to events in one DuckDB query, and commits the batch together with the cursor
it ends at, in one commit line (:meth:`EventStore.import_batch`). So a crash never leaves the
cursor ahead of or behind the events; event ids are the source's own (or derived from the
row's coordinates), so a batch read twice is written once.

Times: ``occurred_at`` is the field the mapping names (else the commit time). ``recorded_at``
is the source's own commit time where the mapping names one, else the time of the import.
A lake's recorded times never go back along the log (as-of cuts are log prefixes), so a
source time that goes back in the source's own order (clock skew, late rows) is raised to
the newest before it, and the source's own value is kept in the metadata as
``source_recorded_at``: nothing valid is refused, and "as of S" means "what the source had
committed, in its own order, by the first moment it said S".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from esanalytics.events import TIMESTAMP, from_epoch_us
from esanalytics.exceptions import SourceError, ValidationError
from esanalytics.sources import mapping as _mapping
from esanalytics.sources.base import RawBatch, Source
from esanalytics.sources.files import open_file_source
from esanalytics.sources.mapping import ImportMapping
from esanalytics.store import EventStore, open_store
from esanalytics.store._faults import kill_point
from esanalytics.store.layout import storage_error

__all__ = ["ImportSummary", "import_events", "rejects_path"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SAMPLE_ROWS = 1000


@dataclass
class ImportSummary:
    """What a run of an import did."""

    name: str
    source: str
    events: int = 0  # written by this run
    already: int = 0  # read again but already in the lake (a re-run, a retry, a repeat)
    rejected: int = 0  # written to the rejects file (on_error="skip")
    batches: int = 0  # commits made
    streams: int = 0  # streams this run wrote to
    first_occurred: datetime | None = None
    last_occurred: datetime | None = None
    head: int = 0  # the lake's head position after the run
    seconds: float = 0.0
    rejects_path: Path | None = None
    mapping: ImportMapping = field(default_factory=ImportMapping)
    resumed: bool = False  # the import had a cursor before this run
    _streams: set[str] = field(default_factory=set, repr=False)

    def __str__(self) -> str:
        rate = (
            f" ({self.events / self.seconds:,.0f} events/s)" if self.seconds and self.events else ""
        )
        lines = [f"import {self.name!r} from {self.source}: {self.events:,} events written in "
                 f"{self.seconds:.1f} s{rate}, {self.batches:,} commits"]  # fmt: skip
        if self.events:
            lines.append(f"  streams      {self.streams:,}")
            lines.append(
                f"  occurred     {_iso(self.first_occurred)} .. {_iso(self.last_occurred)}"
            )
        if self.already:
            lines.append(f"  already in the lake, skipped  {self.already:,}")
        if self.rejected:
            lines.append(f"  rejected     {self.rejected:,}, with reasons in {self.rejects_path}")
        if not self.events and not self.already and not self.rejected:
            lines.append("  nothing new in the source since the last run")
        lines.append(f"  head         position {self.head:,}")
        return "\n".join(lines)


def _iso(moment: datetime | None) -> str:
    return "-" if moment is None else moment.isoformat().replace("+00:00", "Z")


def rejects_path(lake: str | os.PathLike[str], name: str) -> Path:
    """Where ``on_error="skip"`` writes an import's rejected rows: beside the lake, never in it."""
    lake = Path(lake)
    return lake.parent / f"{lake.name}.rejects" / f"{name}.jsonl"


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise SourceError(
            f"The import name {name!r} is not a name esa can keep.",
            hint="use letters, digits, '.', '_' and '-', starting with a letter or digit "
            "(up to 100 characters), e.g. --name orders-2025.",
            source=name,
            where=None,
        )
    return name


def import_events(
    lake: str | os.PathLike[str] | EventStore,
    source: str | os.PathLike[str] | Source,
    *,
    name: str | None = None,
    mapping: ImportMapping | Mapping[str, str] | None = None,
    occurred_at: str | None = None,
    recorded_at: str | None = None,
    zone: str | None = None,
    on_error: str = "raise",
    follow: bool = False,
    create: bool = False,
    poll_seconds: float = 1.0,
    stop: threading.Event | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    on_mapping: Callable[[ImportMapping], None] | None = None,
    on_batch: Callable[[ImportSummary], None] | None = None,
) -> ImportSummary:
    """Import the events of ``source`` (a path: ``.jsonl``/``.ndjson`` (``.gz``), ``.csv``,
    ``.parquet``, a folder or a glob of Parquet; or a :class:`Source`) into ``lake``.

    The import is called ``name`` (default: the file's name); its cursor and mapping are
    kept in the lake, so running it again imports only what is new, and needs no mapping.
    ``mapping`` maps parts of the event to fields (``{"stream_id": "account_id"}``, or
    templates such as ``"account-{account_id}"``); what it leaves out is found by common
    names. ``occurred_at``/``recorded_at`` name time fields (``FIELD`` or
    ``FIELD:FORMAT``: ``epoch_s``, ``epoch_ms``, ``epoch_us``, or a strptime pattern);
    ``zone`` reads times that carry none. ``on_error="skip"`` writes rows it cannot use,
    with reasons, to :func:`rejects_path` instead of stopping. ``follow`` keeps reading a
    growing source until ``stop`` is set or the process is interrupted.
    """
    if on_error not in ("raise", "skip"):
        raise ValidationError(
            f"on_error is {on_error!r}.", hint="use on_error='raise' (stop at the first bad "
            "row) or 'skip' (write bad rows to a rejects file and go on)."
        )  # fmt: skip
    started = time.perf_counter()
    store = lake if isinstance(lake, EventStore) else open_store(lake, create=create)
    src: Source = source if isinstance(source, Source) else open_file_source(source)
    name = _check_name(name or src.default_name())
    if isinstance(mapping, Mapping):
        mapping = ImportMapping.parse([f"{k}={v}" for k, v in mapping.items()])
    given = mapping or ImportMapping()
    if occurred_at or recorded_at or zone:
        given = ImportMapping(
            fields=dict(given.fields),
            occurred_at=_mapping.TimeField.parse(occurred_at) if occurred_at else given.occurred_at,
            recorded_at=_mapping.TimeField.parse(recorded_at) if recorded_at else given.recorded_at,
            zone=zone or given.zone,
        )
    told = bool(given.fields or given.occurred_at or given.recorded_at or given.zone)
    stored = store.cursor(name)
    summary = ImportSummary(name=name, source=src.label, resumed=stored is not None)
    if stored is not None:
        if stored.get("source") != src.identity:
            raise SourceError(
                f"The import {name!r} in this lake reads {stored.get('source')}, not "
                f"{src.identity}.",
                hint="give this source its own --name, or point at the same source to continue.",
                source=name,
                where=None,
            )
        summary.mapping = ImportMapping.from_json(stored["mapping"])
    previous = stored
    # Where the next read starts: past the last batch read, even one that committed nothing
    # (every row rejected or already in the lake), so a follower does not read it again.
    at = stored["at"] if stored else None
    total = src.size()
    rejects = _Rejects(rejects_path(store.path, name), store.path) if on_error == "skip" else None
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET threads = 2")
    resolved: ImportMapping | None = None
    if stored is not None and not told:
        resolved = summary.mapping
        if on_mapping is not None:
            on_mapping(resolved)
    stop = stop or threading.Event()
    seen_rows = False
    try:
        while True:
            for raw in src.read(at, con=con, follow=follow, name=name):
                seen_rows = True
                if resolved is None:
                    resolved = _detect(given, raw, source=src.label)
                    if stored is not None and resolved.to_json() != summary.mapping.to_json():
                        raise SourceError(
                            f"The import {name!r} was made with the mapping "
                            f"{summary.mapping.to_json()}, not {resolved.to_json()}.",
                            hint="run it again without mapping options to keep its mapping, "
                            "or import under a new --name with the new mapping.",
                            source=name,
                            where=None,
                        )
                    summary.mapping = resolved
                    if on_mapping is not None:
                        on_mapping(resolved)
                previous = _commit_batch(
                    store, con, raw, resolved, name, src, previous, rejects, summary
                )
                at = raw.cursor
                if progress is not None:
                    progress(raw.done, total)
                if on_batch is not None:
                    on_batch(summary)
                if stop.is_set():
                    break
            if not follow or stop.is_set():
                break
            try:
                if stop.wait(poll_seconds):
                    break
            except KeyboardInterrupt:
                break
    finally:
        con.close()
    if not seen_rows and stored is None and not follow:
        raise SourceError(
            f"The source {src.label} holds no events: nothing was imported.",
            hint="check that it is the right file and not empty (blank lines are skipped).",
            source=name,
            where=None,
        )
    summary.streams = len(summary._streams)
    summary.head = store.head
    summary.seconds = time.perf_counter() - started
    if rejects is not None and summary.rejected:
        summary.rejects_path = rejects.path
    return summary


def _detect(given: ImportMapping, raw: RawBatch, *, source: str) -> ImportMapping:
    keys: list[str] = []
    samples: dict[str, Any] = {}
    for text in raw.lines.slice(0, _SAMPLE_ROWS).to_pylist():
        try:
            row = json.loads(text) if text is not None else None
        except ValueError:
            continue
        if not isinstance(row, dict):
            continue
        for key, value in row.items():
            if key not in samples:
                keys.append(key)
                samples[key] = value
            elif samples[key] is None:
                samples[key] = value
    return _mapping.detect(given, keys, samples, source=source)


def _commit_batch(
    store: EventStore,
    con: Any,
    raw: RawBatch,
    mapping: ImportMapping,
    name: str,
    src: Source,
    previous: dict[str, Any] | None,
    rejects: _Rejects | None,
    summary: ImportSummary,
) -> dict[str, Any] | None:
    """Map, check and commit one batch with its cursor; returns the newest cursor."""
    mapped = _mapping.apply(con, pa.table({"line": raw.lines, "at": raw.at}), mapping, name=name)
    bad = mapped["reason"].is_valid()
    if pc.any(bad).as_py():
        where = np.flatnonzero(bad.to_numpy(zero_copy_only=False))
        if rejects is None:
            first = int(where[0])
            raise _bad_row(name, mapped["at"][first].as_py(), mapped["reason"][first].as_py())
        rejects.add(
            mapped["at"].take(pa.array(where)).to_pylist(),
            mapped["reason"].take(pa.array(where)).to_pylist(),
            raw.lines.take(pa.array(where)).to_pylist(),
        )
        summary.rejected += len(where)
        mapped = mapped.filter(pc.invert(bad))
    cursor = {
        "name": name,
        "at": raw.cursor,
        "mapping": mapping.to_json(),
        "source": src.identity,
        "kind": src.kind,
    }
    while mapped.num_rows:
        table = _ingest_table(mapped, mapping)
        try:
            commit, already = store.import_batch(table, cursor=cursor, previous=previous)
        except ValidationError as error:
            row = getattr(error, "row", None)
            if row is None or isinstance(error, SourceError):
                raise
            at = mapped["at"][row].as_py()
            if rejects is None:
                raise _bad_row(name, at, error.problem, hint=error.hint) from None
            rejects.add([at], [error.problem], [raw.lines[int(mapped["row"][row].as_py())].as_py()])
            summary.rejected += 1
            keep = np.ones(mapped.num_rows, dtype=bool)
            keep[row] = False
            mapped = mapped.filter(pa.array(keep))
            continue
        summary.already += already
        if commit is None:
            return previous
        written = commit.last_position - commit.first_position + 1
        summary.events += written
        summary.batches += 1
        for stream in commit.streams:
            summary._streams.add(stream.stream_id)
        occurred = table["occurred_at"].cast(pa.int64())
        spans = [from_epoch_us(v.as_py()) for v in pc.min_max(occurred).values() if v.is_valid]
        if occurred.null_count:
            spans.append(commit.recorded_at)
        if spans:
            low, high = min(spans), max(spans)
            summary.first_occurred = min(filter(None, [summary.first_occurred, low]))
            summary.last_occurred = max(filter(None, [summary.last_occurred, high]))
        return cursor
    return previous


def _bad_row(name: str, at: str, reason: str, *, hint: str | None = None) -> SourceError:
    return SourceError(
        f"{at}: {reason}. Nothing of this batch was written.",
        hint=(hint + "; or " if hint else "")
        + "fix the row and run the import again (it continues after the last committed "
        "batch), map the field (--map ROLE=FIELD), or pass --on-error skip to write such "
        "rows to a rejects file and go on.",
        source=name,
        where=at,
    )


def _ingest_table(mapped: pa.Table, mapping: ImportMapping) -> pa.Table:
    columns: dict[str, Any] = {
        "stream_id": mapped["stream_id"],
        "event_type": mapped["event_type"],
        "event_id": mapped["event_id"],
        "data": mapped["data"],
        "metadata": mapped["metadata"],
        "occurred_at": mapped["occurred_us"].cast(pa.int64()).cast(TIMESTAMP),
    }
    if mapping.recorded_at is not None:
        columns["recorded_at"] = mapped["recorded_us"].cast(pa.int64()).cast(TIMESTAMP)
    if "category" in mapped.column_names:
        columns["category"] = mapped["category"]
    if "schema_version" in mapped.column_names:
        columns["schema_version"] = pc.fill_null(mapped["schema_version"], 1)
    return pa.table(columns)


class _Rejects:
    """The rejects file of an import: one JSON line per rejected row (where, reason, row),
    written and synced before the batch commits; a row rejected again on a re-run (its
    batch committed nothing), or by two runs of one import at once, is not written twice."""

    def __init__(self, path: Path, lake: Path) -> None:
        self.path, self.lake = path, lake
        self._seen: set[str] = set()
        self._read = 0  # how much of the file _seen has taken in

    def add(self, where: list[str], reasons: list[str], rows: list[str | None]) -> None:
        whole: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+b") as handle:
                # Runs of one import take turns here, each first taking in what others wrote.
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                whole = _whole_lines(self.path)
                handle.seek(min(self._read, whole))
                for text in handle.read(whole - handle.tell()).splitlines():
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        self._seen.add(json.loads(text)["where"])
                self._read = whole
                new = [
                    json.dumps({"where": w, "reason": r, "row": row}, ensure_ascii=False)
                    for w, r, row in zip(where, reasons, rows, strict=True)
                    if w not in self._seen
                ]
                if not new:
                    return
                if handle.seek(0, os.SEEK_END) != whole:  # a crash cut the last line: drop
                    handle.truncate(whole)  # it (its row is new)
                payload = ("\n".join(new) + "\n").encode("utf-8")
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
                self._read = whole + len(payload)
        except OSError as error:
            mapped = storage_error(error, self.lake, f"the rejected rows ({self.path})")
            if mapped is None:
                raise
            if whole is not None:
                with contextlib.suppress(OSError):  # leave no part of them
                    os.truncate(self.path, whole)
            raise mapped from error
        kill_point("import.after_rejects")
        self._seen.update(where)


def _whole_lines(path: Path) -> int:
    """The size of ``path`` up to the end of its last whole line."""
    with open(path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - (1 << 16))
            handle.seek(start)
            cut = handle.read(end - start).rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            end = start
    return 0
