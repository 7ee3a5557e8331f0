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
import dataclasses
import fcntl
import json
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from esanalytics.events import TIMESTAMP, from_epoch_us
from esanalytics.exceptions import DuplicateEventError, SourceError, ValidationError
from esanalytics.sources import mapping as _mapping
from esanalytics.sources.base import RawBatch, Source
from esanalytics.sources.mapping import ImportMapping
from esanalytics.sources.registry import open_source
from esanalytics.store import EventStore, open_store
from esanalytics.store._faults import kill_point
from esanalytics.store.layout import EVENTS_DIR, LAKE_DIR, MARKER, TYPED_DIR, storage_error

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
            f" ({self.events / self.seconds:,.0f} events/s)"
            if self.seconds and self.events >= 10_000
            else ""
        )
        lines = [f"import {self.name!r} from {self.source}: {self.events:,} "
                 f"event{'' if self.events == 1 else 's'} written in "
                 f"{self.seconds:.1f} s{rate}, {self.batches:,} commit"
                 f"{'' if self.batches == 1 else 's'}"]  # fmt: skip
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
            lines.append(
                "  nothing new in the source since the last run"
                if self.resumed
                else "  nothing imported: the source holds no events yet"
            )
        lines.append(f"  head         position {self.head:,}")
        used = ", ".join(f"{role} <- {where}" for role, where in self.mapping.describe())
        lines.append(f"  mapping      {used}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """In a notebook: the mapping used, then the summary (as ``esa import`` prints)."""
        printer.text("\n".join([*self.mapping.shown(), str(self)]))


def _iso(moment: datetime | None) -> str:
    return "-" if moment is None else moment.isoformat().replace("+00:00", "Z")


def rejects_path(lake: str | os.PathLike[str], name: str) -> Path:
    """Where ``on_error="skip"`` writes an import's rejected rows: beside the lake, never in it."""
    lake = Path(lake)
    return lake.parent / f"{lake.name}.rejects" / f"{name}.jsonl"


def _check_zone(zone: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    import duckdb

    try:
        ZoneInfo(zone)
        with duckdb.connect() as con:  # (DuckDB's zones: it reads the times)
            con.execute("SELECT timezone(?, TIMESTAMP '2000-01-01')", [zone])
    except (ZoneInfoNotFoundError, ValueError, duckdb.Error):
        raise SourceError(
            f"{zone!r} is not a time zone.",
            hint="give an IANA zone name such as UTC, Europe/Berlin or America/New_York.",
            source=None,
            where=None,
        ) from None


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
    schema: str | None = None,
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
    ``zone`` reads times that carry none. ``schema`` picks a database source's event store
    layout (default: found by its tables). ``on_error="skip"`` writes rows it cannot use,
    with reasons, to :func:`rejects_path` instead of stopping. ``follow`` keeps reading a
    growing source until ``stop`` is set or the process is interrupted.
    """
    if not poll_seconds > 0:
        raise ValidationError(
            f"poll_seconds is {poll_seconds!r}.",
            hint="give the seconds between looks at a followed source, more than 0 (--poll 1).",
        )
    if on_error not in ("raise", "skip"):
        raise ValidationError(
            f"on_error is {on_error!r}.", hint="use on_error='raise' (stop at the first bad "
            "row) or 'skip' (write bad rows to a rejects file and go on)."
        )  # fmt: skip
    started = time.perf_counter()
    src: Source = source if isinstance(source, Source) else open_source(source, schema=schema)
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
    if given.zone is not None:
        _check_zone(given.zone)
    for spec in (given.occurred_at, given.recorded_at):
        _check_format(spec)
    told = bool(given.fields or given.occurred_at or given.recorded_at or given.zone)
    # a lake this call makes is removed again if the import fails before its first commit
    new_lake = (
        None
        if isinstance(lake, EventStore) or not create or (Path(lake) / LAKE_DIR / MARKER).exists()
        else (Path(lake), Path(lake).exists())
    )
    store = lake if isinstance(lake, EventStore) else open_store(lake, create=create)
    stored = store.cursor(name)
    summary = ImportSummary(name=name, source=src.label, resumed=stored is not None)
    if stored is not None:
        if stored.get("source") != src.identity:
            raise SourceError(
                f"The import {name!r} in this lake reads {stored.get('source')}, not "
                f"{src.identity}.",
                hint=getattr(src, "other_source_hint", None)
                or "to continue, point at the same path (a file that was moved: move it back); "
                "another source gets its own --name. A new --name reads a source from its start: "
                "rows without their own event id that were imported would be written twice.",
                source=name,
                where=None,
            )
        summary.mapping = ImportMapping.from_json(stored["mapping"])
        if told and _differs(given, summary.mapping):
            raise _other_mapping(name, summary.mapping, given)
    previous = stored
    if on_error == "skip":
        lake = store.local_folder("The rejected rows of an import (on_error='skip')")
        rejects: _Rejects | None = _Rejects(rejects_path(lake, name), lake)
    else:
        rejects = None
    from esanalytics._duck import connect

    con = connect()  # (within the memory limit the user set, like every lake connection)
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET threads = 2")
    resolved: ImportMapping | None = None
    if stored is not None:  # (options that differ from it were refused above)
        resolved = summary.mapping = _with_origins(summary.mapping, src)
        if on_mapping is not None:
            on_mapping(resolved)
    stop = stop or threading.Event()
    seen_rows = False

    def mapped_batches(at: dict[str, Any] | None) -> Iterator[tuple[RawBatch, pa.Table]]:
        """The source's batches after ``at``, each with its mapping applied (DuckDB, off
        the GIL): computed one batch ahead of the commits, in a thread."""
        nonlocal resolved
        for raw in src.read(at, con=con, follow=follow, name=name):
            if resolved is None:  # (a first run: a stored mapping was taken above)
                # a source whose rows have a shape of its own (a Kafka record) completes
                # the mapping itself; the others by the common field names
                own = getattr(src, "detect", None)
                resolved = own(given, raw) if own else _detect(given, raw, source=src.label)
                resolved = _with_origins(resolved, src)
                summary.mapping = resolved
                if on_mapping is not None:
                    on_mapping(resolved)
            table = pa.table({"line": raw.lines, "at": raw.at})
            mapped = _mapping.apply(con, table, resolved, name=name)
            settle = getattr(src, "settle", None)  # (a source's own reasons and fixed rows)
            yield raw, mapped if settle is None else settle(raw, mapped)

    # Where the next look at the source starts: after the last batch this run handled, which
    # is past the stored cursor when a batch held only events already in the lake.
    read_upto = previous["at"] if previous else None
    try:
        total = src.size()
        while True:
            with _ahead(mapped_batches(read_upto)) as ahead:
                for raw, mapped in ahead:
                    seen_rows = True
                    read_upto = raw.cursor
                    assert resolved is not None
                    previous = _commit_batch(
                        store, raw, mapped, resolved, name, src, previous, rejects, summary
                    )
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
    except BaseException:
        _forget_new_lake(store, new_lake)
        raise
    finally:
        con.close()
    if not seen_rows and stored is None and not follow:
        _forget_new_lake(store, new_lake)
        raise SourceError(
            f"The source {src.label} holds no events: nothing was imported.",
            hint=getattr(src, "empty_hint", None)
            or "check that it is the right file and not empty (blank lines are skipped).",
            source=name,
            where=None,
        )
    summary.streams = len(summary._streams)
    summary.head = store.head
    summary.seconds = time.perf_counter() - started
    if rejects is not None and summary.rejected:
        summary.rejects_path = rejects.path
    return summary


_T = TypeVar("_T")


class _ahead(Generic[_T]):
    """The items of an iterator, computed one ahead in a thread; leaving the ``with`` stops
    the thread (after the item it is on) and closes the iterator there."""

    def __init__(self, items: Iterator[_T]) -> None:
        self._items = items
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="esa-import-read")

    def _run(self) -> None:
        try:
            for item in self._items:
                while not self._halt.is_set():
                    try:
                        self._queue.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._halt.is_set():
                    return
            self._queue.put(("end", None))
        except BaseException as error:  # handed to the consumer, raised there
            self._queue.put(("error", error))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> Iterator[_T]:
        self._thread.start()
        return self._consume()

    def _consume(self) -> Iterator[_T]:
        while True:
            kind, value = self._queue.get()
            if kind == "item":
                yield value
            elif kind == "end":
                return
            else:
                raise value

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        while self._thread.is_alive():  # let it finish its item and close the source
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.1)
        self._thread.join()


def _with_origins(mapping: ImportMapping, src: Source) -> ImportMapping:
    """``mapping`` with what the source's own fields stand for, for printing (a source whose
    rows esa makes, such as an event store's, says which of its columns each one is)."""
    origins = getattr(src, "origins", None)
    return dataclasses.replace(mapping, origins=dict(origins)) if origins else mapping


def _check_format(spec: _mapping.TimeField | None) -> None:
    if spec is None or spec.format in _mapping.TIME_FORMATS:
        return
    import duckdb

    with duckdb.connect() as con:
        try:
            con.execute("SELECT try_strptime('', " + _mapping._quote(spec.format) + ")")
        except duckdb.Error as error:
            raise SourceError(
                f"The time format {spec.format!r} for {spec.path} is not a strptime pattern: "
                f"{str(error).splitlines()[0]}",
                hint="use codes such as '%d/%m/%Y %H:%M' or '%Y-%m-%dT%H:%M:%S%z', or one of "
                "iso, epoch_s, epoch_ms, epoch_us.",
                source=None,
                where=None,
            ) from None


def _forget_new_lake(store: EventStore, new_lake: tuple[Path, bool] | None) -> None:
    """Remove the lake this import created if nothing was committed to it: a failed import
    leaves no lake behind (a folder that existed empty stays, empty)."""
    try:
        if new_lake is None or store.refresh() != 0:
            return
    except Exception:  # the lake cannot be read: leave it, and let the first error stand
        return
    root, existed = new_lake
    for part in (LAKE_DIR, EVENTS_DIR, TYPED_DIR):
        shutil.rmtree(root / part, ignore_errors=True)
    if not existed:
        with contextlib.suppress(OSError):
            root.rmdir()


def _differs(given: ImportMapping, kept: ImportMapping) -> bool:
    """Whether options given on a re-run ask for something other than the kept mapping (a
    time field given without a format matches the format detected for it)."""
    if any(kept.fields.get(role) != where for role, where in given.fields.items()):
        return True
    if given.zone is not None and given.zone != kept.zone:
        return True
    for asked, had in (
        (given.occurred_at, kept.occurred_at),
        (given.recorded_at, kept.recorded_at),
    ):
        if asked is not None and (
            had is None or asked.path != had.path or asked.format not in ("iso", had.format)
        ):
            return True
    return False


def _other_mapping(name: str, kept: ImportMapping, asked: ImportMapping) -> SourceError:
    return SourceError(
        f"The import {name!r} was made with the mapping {kept.to_json()}, not {asked.to_json()}.",
        hint="run it again without mapping options to keep its mapping, "
        "or import under a new --name with the new mapping.",
        source=name,
        where=None,
    )


def _detect(given: ImportMapping, raw: RawBatch, *, source: str) -> ImportMapping:
    keys: list[str] = []
    samples: dict[str, Any] = {}
    for text in raw.lines.slice(0, _SAMPLE_ROWS).to_pylist():
        try:
            row = json.loads(text) if text is not None else None
        except (ValueError, RecursionError):  # (nested too deep: a bad row, named later)
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
    raw: RawBatch,
    mapped: pa.Table,
    mapping: ImportMapping,
    name: str,
    src: Source,
    previous: dict[str, Any] | None,
    rejects: _Rejects | None,
    summary: ImportSummary,
) -> dict[str, Any] | None:
    """Check and commit one mapped batch with its cursor; returns the newest cursor."""
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
    while True:  # (a batch with no row left still commits its cursor)
        table = _ingest_table(mapped, mapping)
        try:
            commit, already = store.import_batch(table, cursor=cursor, previous=previous)
        except (ValidationError, DuplicateEventError) as error:
            row = getattr(error, "row", None)
            if row is None or isinstance(error, SourceError):
                raise
            at = mapped["at"][row].as_py()
            problem = re.sub(r" at row \d+", "", error.problem)  # (the batch's row: `at` says)
            if rejects is None:
                raise _bad_row(name, at, problem, hint=error.hint) from None
            keep = np.ones(mapped.num_rows, dtype=bool)
            keep[row] = False
            category = getattr(error, "category", None)
            if category is not None:  # every row of a category the store refuses, at once
                categories = (
                    table["category"]
                    if "category" in table.column_names
                    else pc.list_element(pc.split_pattern(table["stream_id"], "-", max_splits=1), 0)
                )
                keep &= ~pc.fill_null(pc.equal(categories, category), False).to_numpy(
                    zero_copy_only=False
                )
            out = pa.array(np.flatnonzero(~keep))
            rejects.add(
                mapped["at"].take(out).to_pylist(),
                [problem] * len(out),
                raw.lines.take(mapped["row"].take(out)).to_pylist(),
            )
            summary.rejected += len(out)
            mapped = mapped.filter(pa.array(keep))
            continue
        summary.already += already
        if commit is None:  # no new event: the store committed the cursor alone
            return cursor
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


def _bad_row(name: str, at: str, reason: str, *, hint: str | None = None) -> SourceError:
    if hint is None and reason.endswith("has no time zone"):
        hint = (
            "give the zone the source wrote its times in: --timezone Europe/Berlin "
            "(zone= in Python), or a format with %z"
        )
    elif hint is None and " is not a time in " in reason:
        hint = "name the format, e.g. --occurred-at 'FIELD:%d/%m/%Y %H:%M' or FIELD:epoch_ms"
    elif hint is None and reason.startswith(("no stream id", "no event type")):
        hint = "map the field, e.g. --map stream_id=FIELD or --map event_type=FIELD"
    return SourceError(
        f"{at}: {reason.rstrip('.')}. Nothing of this batch was written.",
        hint=(hint.rstrip(".") + "; or " if hint else "")
        + "fix the row and run the import again (it continues after the last committed "
        "batch), or pass --on-error skip to write such rows, with reasons, to a rejects file "
        "and go on.",
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
                    json.dumps(
                        {
                            "where": w,
                            "reason": r,
                            "row": None if row is None else row.rstrip("\r\n"),
                        },
                        ensure_ascii=False,
                    )
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
