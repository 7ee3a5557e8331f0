"""File sources: JSON Lines (optionally gzip), CSV, and Parquet (a file, a folder, a glob).

Each streams its file in bounded blocks (a 10 GB file never needs 10 GB of memory) and keeps a
cursor that a later run checks before it reads on: the byte offset after the last committed
line and fingerprints of the file's first bytes and of the bytes before the offset, so a file
that was truncated or rewritten is refused instead of read from the wrong place.
"""

from __future__ import annotations

import glob as _glob
import gzip
import hashlib
import io
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from esanalytics.exceptions import SourceError
from esanalytics.sources.base import (
    FINGERPRINT_BYTES,
    RawBatch,
    changed,
    digest_range,
    no_such_source,
)

__all__ = ["CsvSource", "JsonLinesSource", "ParquetSource", "open_file_source"]

BLOCK_BYTES = 16 << 20  # a batch of JSON Lines or CSV: some 40k-150k rows, under 1 GB at work
PARQUET_BATCH_ROWS = 200_000


def _strip_suffixes(name: str) -> str:
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".csv", ".parquet"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name or "import"


def _coordinates(prefix: str, numbers: np.ndarray[Any, Any]) -> pa.Array:
    return pc.binary_join_element_wise(
        pa.array(np.full(len(numbers), prefix, dtype=object), pa.string()),
        pa.array(numbers).cast(pa.string()),
        "",
    )


class _OneFile:
    """What the sources of one file share: its path, name, identity and size in bytes."""

    def __init__(self, path: str | os.PathLike[str], *, block_bytes: int = BLOCK_BYTES) -> None:
        self.path = Path(path)
        self.label = str(path)
        self.block_bytes = block_bytes

    @property
    def identity(self) -> str:
        return str(self.path.resolve())

    def default_name(self) -> str:
        return _strip_suffixes(self.path.name)

    def size(self) -> int | None:
        if not self.path.is_file():
            raise no_such_source(self.label)
        return self.path.stat().st_size


class JsonLinesSource(_OneFile):
    """A JSON Lines file (``.jsonl``, ``.ndjson``, either ``.gz``): one JSON object per line.
    Blank lines are skipped; a row's coordinates are ``file:line``."""

    kind = "jsonl"

    def __init__(self, path: str | os.PathLike[str], *, block_bytes: int = BLOCK_BYTES) -> None:
        super().__init__(path, block_bytes=block_bytes)
        self.compressed = self.path.name.endswith(".gz")

    def _open(self) -> IO[bytes]:
        if self.compressed:
            return gzip.open(self.path, "rb")  # type: ignore[return-value]
        return open(self.path, "rb")

    def _check(
        self, handle: IO[bytes], at: dict[str, Any], name: str | None
    ) -> tuple[bytes, bytes]:
        """Check that the file still holds, at its start and before the cursor, the bytes
        the cursor fingerprinted; returns those bytes (the first and the last before the
        cursor), with ``handle`` left at the cursor."""
        offset = int(at["offset"])
        if not self.compressed and self.path.stat().st_size < offset:
            raise changed(
                self.label,
                f"it is {self.path.stat().st_size:,} bytes, shorter than the "
                f"{offset:,} already imported (truncated)",
                name=name,
            )
        head = handle.read(min(offset, FINGERPRINT_BYTES))
        if hashlib.sha256(head).hexdigest() != at["first"]:
            raise changed(self.label, "its first bytes are not the ones imported", name=name)
        start = max(0, offset - FINGERPRINT_BYTES)
        handle.seek(start)  # (gzip seeks by decompressing from the start)
        before = handle.read(offset - start)
        if len(before) != offset - start:
            raise changed(self.label, "it is shorter than what was already imported", name=name)
        if hashlib.sha256(before).hexdigest() != at["check"]:
            raise changed(
                self.label, "the bytes before the cursor are not the ones imported", name=name
            )
        return head, before

    def read(
        self,
        at: dict[str, Any] | None,
        *,
        con: Any = None,
        follow: bool = False,
        name: str | None = None,
    ) -> Iterator[RawBatch]:
        try:
            yield from self._read(at, follow=follow, name=name)
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            raise SourceError(
                f"The file {self.label} is not a whole gzip file: {error}.",
                hint="it was cut short (a copy or download that did not finish) or is not "
                "gzip: fetch it again, then run the import again (it continues after the last "
                "committed batch).",
                source=name,
                where=self.path.name,
            ) from None

    def _read(
        self, at: dict[str, Any] | None, *, follow: bool, name: str | None
    ) -> Iterator[RawBatch]:
        if not self.path.is_file():
            raise no_such_source(self.label)
        offset = int(at["offset"]) if at else 0
        line = int(at["line"]) if at else 0
        with self._open() as handle:
            # the file's first bytes and the bytes before the cursor, for the next cursors
            head, window = self._check(handle, at, name) if at else (b"", b"")
            raw: Any = getattr(handle, "fileobj", None) or handle  # bytes on disk, for progress
            carry = b""
            while True:
                block = handle.read(self.block_bytes)
                if block:
                    text = carry + block
                    last = text.rfind(b"\n")
                    if last < 0:
                        carry = text
                        continue
                    body, carry = text[: last + 1], text[last + 1 :]
                    consumed = len(body)
                else:  # the end: a last line with no newline counts, unless still written
                    if follow or not carry.strip():
                        return
                    body, consumed, carry = carry + b"\n", len(carry), b""
                real = body[:consumed]
                if len(head) < FINGERPRINT_BYTES:
                    head += real[: FINGERPRINT_BYTES - len(head)]
                window = (window + real)[-FINGERPRINT_BYTES:]
                if offset == 0 and body.startswith(b"\xef\xbb\xbf"):  # a BOM (Windows tools)
                    body = b"   " + body[3:]
                lines, numbers = _split_lines(body, line)
                line += body.count(b"\n")
                offset += consumed
                cursor = {
                    "file": self.path.name,
                    "offset": offset,
                    "line": line,
                    "first": hashlib.sha256(head[: min(offset, FINGERPRINT_BYTES)]).hexdigest(),
                    "check": hashlib.sha256(window).hexdigest(),
                }
                if len(lines):
                    yield RawBatch(
                        lines, _coordinates(f"{self.path.name}:", numbers), cursor, raw.tell()
                    )
                if not block:
                    return


_WHITESPACE = np.array([9, 10, 13, 32], dtype=np.uint8)


def _split_lines(body: bytes, line: int) -> tuple[pa.Array, np.ndarray[Any, Any]]:
    """The non-blank lines of ``body`` (whole lines, each ending in a newline) as text, with
    their 1-based line numbers after ``line`` lines already read; a line that is not UTF-8
    becomes null."""
    data = np.frombuffer(body, dtype=np.uint8)
    ends = np.flatnonzero(data == 10)
    starts = np.r_[0, ends[:-1] + 1]
    offsets = np.r_[starts, ends[-1] + 1 if len(ends) else 0].astype(np.int64)
    binary = pa.Array.from_buffers(
        pa.large_binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(body)]
    )
    numbers = np.arange(line + 1, line + 1 + len(ends), dtype=np.int64)
    # A blank line holds only whitespace. A JSON object starts with "{" (or whitespace):
    # only lines that do not start with a visible byte are looked at one by one.
    first = data[np.minimum(starts, len(data) - 1)] if len(data) else np.zeros(0, np.uint8)
    blank = np.isin(first, _WHITESPACE)
    for index in np.flatnonzero(blank).tolist():
        blank[index] = not body[starts[index] : ends[index]].strip()
    keep = np.flatnonzero(~blank)
    if len(keep) < len(ends):
        binary = binary.take(pa.array(keep))
        numbers = numbers[keep]
    try:
        text = binary.cast(pa.large_string())
    except pa.ArrowInvalid:
        values = []
        for value in binary.to_pylist():
            try:
                values.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                values.append(None)
        text = pa.array(values, pa.large_string())
    return text, numbers


class _Limited(io.RawIOBase):
    """The first ``limit`` bytes of a file, for a CSV reader that must not see a row still
    being written."""

    def __init__(self, handle: IO[bytes], limit: int) -> None:
        self.handle, self.left = handle, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)[: self.left]
        n = self.handle.readinto(view)  # type: ignore[attr-defined]
        self.left -= n or 0
        return n or 0


class CsvSource(_OneFile):
    """A CSV file with a header row. Every value is read as text and becomes, in the
    payload, a JSON number if it is a plain decimal (``12``, ``-3.5``; not ``007`` or
    ``1e5``), ``true``/``false``, null if empty, and text otherwise. Blank lines and rows
    whose every cell is empty are skipped. A row's coordinates are ``file:row N`` (rows after
    the header, 1-based, blank lines counted)."""

    kind = "csv"

    def read(
        self,
        at: dict[str, Any] | None,
        *,
        con: Any,
        follow: bool = False,
        name: str | None = None,
    ) -> Iterator[RawBatch]:
        import csv

        import pyarrow.csv as pv

        if not self.path.is_file():
            raise no_such_source(self.label)
        size = self.path.stat().st_size
        with open(self.path, "rb") as handle:
            first = hashlib.sha256(handle.read(FINGERPRINT_BYTES)).hexdigest()
        row = int(at["row"]) if at else 0
        if at:
            if size < int(at["size"]):
                raise changed(
                    self.label,
                    f"it is {size:,} bytes, shorter than the {int(at['size']):,} it was "
                    "(truncated)",
                    name=name,
                )
            if digest_range(self.path, 0, min(int(at["size"]), FINGERPRINT_BYTES)) != at["first"]:
                raise changed(self.label, "its first bytes are not the ones imported", name=name)
            end = int(at["size"])
            if (
                "tail" in at
                and digest_range(self.path, max(0, end - FINGERPRINT_BYTES), end) != at["tail"]
            ):
                raise changed(
                    self.label, "the bytes before the cursor are not the ones imported", name=name
                )
        limit = size
        if follow:
            with open(self.path, "rb") as handle:
                handle.seek(max(0, size - (1 << 20)))
                tail = handle.read()
            limit = size - (len(tail) - tail.rfind(b"\n") - 1) if b"\n" in tail else 0
        with open(self.path, "rb") as handle:
            header_line = handle.readline()
        if not header_line.strip():
            raise SourceError(
                f"The CSV file {self.label} is empty: it has no header row.",
                hint="a CSV source needs a header row naming its columns.",
                source=name,
                where=None,
            )
        names = next(csv.reader([header_line.decode("utf-8-sig", "replace")]))
        if len(set(names)) != len(names) or any(not n.strip() for n in names):
            raise SourceError(
                f"The CSV file {self.label} has an empty or repeated column name in its "
                f"header: {', '.join(names)}.",
                hint="give every column a distinct name in the header row.",
                source=name,
                where=None,
            )
        if limit <= len(header_line):
            return
        before = digest_range(self.path, max(0, limit - FINGERPRINT_BYTES), limit)
        if limit < size:  # (follow) a cursor fingerprints the bytes read, not a row still written
            size, first = limit, digest_range(self.path, 0, min(limit, FINGERPRINT_BYTES))
        try:
            yield from self._batches(pv, con, names, row, limit, size, first, before)
        except pa.ArrowInvalid as error:  # a row with more or fewer fields than the header
            if "invalid UTF8" in str(error):
                raise SourceError(
                    f"The CSV file {self.label} is not UTF-8 text: "
                    f"{str(error).removeprefix('In CSV ')}.",
                    hint="convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8, or save it as "
                    "'CSV UTF-8'), then run the import again: it continues after the last "
                    "committed batch.",
                    source=name,
                    where=self.path.name,
                ) from None
            raise SourceError(
                f"The CSV file {self.label} has a row that does not fit its header "
                f"({len(names)} columns): {str(error).removeprefix('CSV parse error: ')}.",
                hint="give every row as many fields as the header (quote fields that hold "
                "commas, quotes or newlines), then run the import again: it continues after the "
                "last committed batch.",
                source=name,
                where=self.path.name,
            ) from None

    def _batches(
        self,
        pv: Any,
        con: Any,
        names: list[str],
        row: int,
        limit: int,
        size: int,
        first: str,
        tail: str,
    ) -> Iterator[RawBatch]:
        with open(self.path, "rb") as raw:
            reader = pv.open_csv(
                io.BufferedReader(_Limited(raw, limit), buffer_size=1 << 20),
                read_options=pv.ReadOptions(
                    block_size=self.block_bytes, skip_rows_after_names=row, use_threads=True
                ),
                convert_options=pv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()),
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
                # blank lines are rows of empty cells here, so that the row count of the
                # cursor is the one skip_rows_after_names counts; they are dropped below
                parse_options=pv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
            )
            pending: RawBatch | None = None
            for batch in reader:
                if batch.num_rows == 0:
                    continue
                table = pa.Table.from_batches([batch])
                numbers = np.arange(row + 1, row + 1 + batch.num_rows, dtype=np.int64)
                row += batch.num_rows
                filled = np.zeros(batch.num_rows, dtype=bool)
                for column in table.columns:
                    filled |= pc.not_equal(column, "").to_numpy(zero_copy_only=False)
                cursor = {"file": self.path.name, "row": row, "size": size, "first": first}
                if not filled.any():
                    continue
                if not filled.all():
                    table = table.filter(pa.array(filled))
                    numbers = numbers[filled]
                lines = _csv_lines(con, table, names)
                if pending is not None:
                    yield pending
                pending = RawBatch(
                    lines, _coordinates(f"{self.path.name}:row ", numbers), cursor, raw.tell()
                )
            if pending is not None:
                # the last batch read all the file had: the bytes before its end must stay
                # (an earlier batch's end is not known in bytes, so only this one is checked)
                pending.cursor["tail"] = tail
                yield pending


_CSV_NUMBER = r"^-?(0|[1-9][0-9]{0,14})(\.[0-9]{1,15})?$"


def _csv_lines(con: Any, table: pa.Table, names: list[str]) -> pa.Array:
    def cell(column: str) -> str:
        ref = '"' + column.replace('"', '""') + '"'
        return (
            f"CASE WHEN {ref} = '' THEN NULL "
            f"WHEN regexp_matches({ref}, '{_CSV_NUMBER}') THEN CAST({ref} AS JSON) "
            f"WHEN {ref} IN ('true', 'false') THEN CAST({ref} AS JSON) "
            f"ELSE to_json({ref}) END"
        )

    pairs = ", ".join("'" + n.replace("'", "''") + "', " + cell(n) for n in names)
    con.register("csv_rows", table)
    try:
        out = con.sql(f"SELECT CAST(json_object({pairs}) AS VARCHAR) AS line FROM csv_rows")
        return out.to_arrow_table()["line"].combine_chunks()
    finally:
        con.unregister("csv_rows")


class ParquetSource:
    """Parquet: one file, a folder (hive ``key=value`` folders become fields), or a glob,
    read in file-name order. A row's coordinates are ``file:row N``. Nested columns stay
    nested in the payload; a text column mapped as the payload or metadata that holds a JSON
    object is read as that object (other text columns stay text)."""

    kind = "parquet"

    def __init__(self, path: str | os.PathLike[str], *, batch_rows: int = PARQUET_BATCH_ROWS):
        self.spec = str(path)
        self.label = str(path)
        self.batch_rows = batch_rows

    @property
    def identity(self) -> str:
        if any(ch in self.spec for ch in "*?["):
            return os.path.abspath(self.spec)
        return str(Path(self.spec).resolve())

    def default_name(self) -> str:
        base = self.spec.rstrip("/").split("/")[-1]
        if any(ch in base for ch in "*?["):
            base = self.spec.rstrip("/").split("/")[-2] if "/" in self.spec else "import"
        return _strip_suffixes(base)

    def _files(self) -> tuple[Path, list[Path]]:
        if any(ch in self.spec for ch in "*?["):
            files = sorted(Path(p) for p in _glob.glob(self.spec, recursive=True))
            root = Path(_glob.escape(self.spec.split("*")[0].split("?")[0].split("[")[0]))
            root = root if root.is_dir() else root.parent
        else:
            path = Path(self.spec)
            if path.is_dir():
                root = path
                files = sorted(
                    p for p in path.rglob("*.parquet") if not p.name.startswith((".", "_"))
                )
            elif path.is_file():
                root, files = path.parent, [path]
            else:
                raise no_such_source(self.label)
        files = [f for f in files if f.is_file()]
        if not files:
            raise SourceError(
                f"The source {self.label} holds no Parquet files.",
                hint="point at a .parquet file, a folder of them, or a glob such as "
                "'exports/*.parquet'.",
                source=None,
                where=None,
            )
        return root, files

    def size(self) -> int | None:
        _, files = self._files()
        return int(sum(_parquet_file(f, self.label).metadata.num_rows for f in files))

    def read(
        self,
        at: dict[str, Any] | None,
        *,
        con: Any,
        follow: bool = False,
        name: str | None = None,
    ) -> Iterator[RawBatch]:
        root, files = self._files()
        names = [f.relative_to(root).as_posix() for f in files]
        start_file, start_row = 0, 0
        done = 0
        if at:
            index = int(at["index"])
            if index >= len(names) or names[index] != at["file"]:
                raise changed(
                    self.label,
                    f"{at['file']} is not its file number {index + 1} in name order any more "
                    "(a file was added before it, renamed or removed)",
                    name=name,
                )
            if files[index].stat().st_size != int(at["size"]):
                raise changed(self.label, f"{at['file']} was rewritten", name=name)
            start_file, start_row = index, int(at["row"])
            for f in files[:index]:
                done += _parquet_file(f, self.label, name).metadata.num_rows
            done += start_row
        for index in range(start_file, len(files)):
            path = files[index]
            relative = names[index]
            parquet = _parquet_file(path, self.label, name)
            total = parquet.metadata.num_rows
            row = start_row if index == start_file else 0
            if row >= total:
                continue
            partitions = [part.split("=", 1) for part in Path(relative).parent.parts if "=" in part]
            seen = 0
            for batch in parquet.iter_batches(batch_size=self.batch_rows):
                if seen + batch.num_rows <= row:
                    seen += batch.num_rows
                    continue
                skip = max(0, row - seen)
                seen += batch.num_rows
                table = pa.Table.from_batches([batch]).slice(skip)
                for key, value in partitions:
                    if key not in table.column_names:
                        table = table.append_column(key, pa.array([value] * table.num_rows))
                lines = _parquet_lines(con, table)
                numbers = np.arange(seen - table.num_rows + 1, seen + 1, dtype=np.int64)
                done += table.num_rows
                cursor = {
                    "file": relative,
                    "index": index,
                    "row": seen,
                    "size": path.stat().st_size,
                }
                yield RawBatch(lines, _coordinates(f"{relative}:row ", numbers), cursor, done)


def _parquet_file(path: Path, label: str, name: str | None = None) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise SourceError(
            f"The file {path.name} of {label} is not a whole Parquet file: {error}",
            hint="it may still be being written: move only finished files into the folder "
            "(or name them with a glob that leaves the others out), then run the import again.",
            source=name,
            where=path.name,
        ) from None


def _parquet_lines(con: Any, table: pa.Table) -> pa.Array:
    con.register("parquet_rows", table)
    try:
        out = con.sql("SELECT CAST(to_json(t) AS VARCHAR) AS line FROM parquet_rows AS t")
        return out.to_arrow_table()["line"].combine_chunks()
    finally:
        con.unregister("parquet_rows")


def open_file_source(spec: str | os.PathLike[str]) -> JsonLinesSource | CsvSource | ParquetSource:
    """The file source for a path, by its extension (a folder or glob: Parquet)."""
    text = str(spec)
    lower = text.lower()
    if lower.endswith((".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".json", ".json.gz")):
        return JsonLinesSource(text)
    if lower.endswith((".csv", ".csv.gz")):
        if lower.endswith(".gz"):
            raise SourceError(
                f"{text}: gzip-compressed CSV is not read.",
                hint="decompress it first (gunzip), or export it as .jsonl.gz.",
                source=None,
                where=None,
            )
        return CsvSource(text)
    if lower.endswith(".parquet") or any(ch in text for ch in "*?[") or Path(text).is_dir():
        return ParquetSource(text)
    if not Path(text).exists():
        raise no_such_source(text)
    raise SourceError(
        f"{text}: esa cannot tell what kind of file this is from its name.",
        hint="name it .jsonl or .ndjson (JSON Lines, optionally .gz), .csv, or .parquet.",
        source=None,
        where=None,
    )
