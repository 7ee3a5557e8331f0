"""The writer's caches: every stream's version and every event id's 64-bit key, which a
writer checks appends against. Loaded from the saved writer index (``_esa/writer-index/``,
which compaction and large ingests write) plus the commits after it, or from a scan of the
log; kept current with commits other handles make (:meth:`WriterIndexMixin._absorb`)."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from esanalytics.events import (
    uuid_keys,
)
from esanalytics.exceptions import (
    LakeChangedError,
)
from esanalytics.store._faults import kill_point
from esanalytics.store.commitlog import (
    FileEntry,
)
from esanalytics.store.layout import (
    WRITER_INDEX,
)
from esanalytics.store.reader import ReaderMixin
from esanalytics.store.state import _LOG, _rows_table, _WriterState

if TYPE_CHECKING:
    pass


class WriterIndexMixin(ReaderMixin):
    """The writer caches of :class:`~esanalytics.store.eventstore.EventStore`."""

    # -- writer caches -------------------------------------------------------------------

    def _absorb(self, record: dict[str, Any], added: list[FileEntry]) -> None:
        """Keep a writer's caches current with a commit another handle or process made."""
        writer = self._writer
        if writer.heads is None and not writer.ids_loaded:
            return
        if "rows" in record:
            if writer.heads is not None:
                for row in record["rows"]:
                    writer.heads[row[1]] = row[3]
            if writer.ids_loaded:
                writer.remember(
                    uuid_keys(pa.array([row[4] for row in record["rows"]], pa.string()))
                )
            return
        try:
            table = self._scan(added, None, columns=["stream_id", "version", "event_id"])
        except LakeChangedError:  # compacted and vacuumed since: reload the caches when needed
            self._writer = _WriterState()
            return
        if writer.heads is not None:
            grouped = table.group_by("stream_id").aggregate([("version", "max")])
            writer.heads.update(
                zip(
                    grouped["stream_id"].to_pylist(),
                    grouped["version_max"].to_pylist(),
                    strict=True,
                )
            )
        if writer.ids_loaded:
            writer.remember(uuid_keys(table["event_id"]))

    def _load_heads(self) -> dict[str, int]:
        heads = self._load_writer().heads
        assert heads is not None
        return heads

    def _load_ids(self) -> _WriterState:
        return self._load_writer()

    def _load_writer(self) -> _WriterState:
        """Stream versions and event-id keys, which a writer checks appends against. They come
        from the writer index that compaction and large ingests save, plus the commits after
        it; without an index, from a scan of the whole log. Under the writer lock."""
        writer = self._writer
        if writer.heads is not None:
            return writer
        loaded = self._read_writer_index()
        if loaded is not None:
            writer.heads, keys, offset = loaded
            writer.id_runs = [keys] if len(keys) else []
            records, _, _ = self._log.read_from(offset)
            appends = [
                r for r in records if r["kind"] == "append" and r["n"] <= self._commit_number
            ]
            # The log confirms the index's count of events: the head then is the head now
            # less what the appends after it added. A mismatch: an index not to trust.
            added = sum(r["last"] - r["first"] + 1 for r in appends)
            if sum(writer.heads.values()) != len(keys) or len(keys) != self._head - added:
                _LOG.warning("the writer index of %s disagrees with the log: scanning", self.path)
                loaded = None
            else:
                for record in appends:
                    table = self._appended(record)
                    _merge_heads(writer.heads, table)
                    writer.remember(uuid_keys(table["event_id"]))
        if loaded is None:
            table = self._scan(
                list(self._files.values()),
                None,
                columns=["stream_id", "version", "event_id"],
                tail=self._tail,
            )
            writer.heads = {}
            _merge_heads(writer.heads, table)
            writer.id_runs = [np.sort(uuid_keys(table["event_id"]))] if table.num_rows else []
            writer.recent_ids = set()
        writer.ids_loaded = True
        return writer

    def _appended(self, record: dict[str, Any]) -> pa.Table:
        """Stream ids, versions and event ids of an append commit, from its line or from the
        files that hold its events now (a compaction may have replaced, and a vacuum deleted,
        the files it named)."""
        columns = ["stream_id", "version", "event_id"]
        if "rows" in record:
            return _rows_table(record["rows"]).select(columns)
        entries = [FileEntry.from_json(raw) for raw in record["add"]]
        if all(entry.path in self._files for entry in entries):
            return self._scan(entries, None, columns=columns)
        first, last = record["first"], record["last"]
        holding = [
            entry
            for entry in self._files.values()
            if entry.min_position <= last and entry.max_position >= first
        ]
        span = (pc.field("global_position") >= first) & (pc.field("global_position") <= last)
        return self._scan(holding, span, columns=columns)

    def _read_writer_index(self) -> tuple[dict[str, int], Any, int] | None:
        """The saved writer index, if its files are the ones it recorded (by SHA-256) and it
        was saved at a line the commit log still holds; else None (the writer scans)."""
        folder = f"{self._meta}/{WRITER_INDEX}"
        try:
            info = json.loads(self.fs.read_bytes(f"{folder}/current.json").decode())
            offset = info["offset"]
            if not isinstance(offset, int) or offset > self._offset:
                return None
            if info.get("log_digest") != self._log.digest_at(offset):
                return None  # also an index written before digests: not trusted, rebuilt
            for name, digest in ((info["heads"], info["heads_sha256"]),
                                 (info["ids"], info["ids_sha256"])):  # fmt: skip
                if "/" in name or self.fs.digest(f"{folder}/{name}") != digest:
                    _LOG.warning("the writer index of %s was altered: scanning", self.path)
                    return None
            import pyarrow.parquet as pq

            heads_table = pq.read_table(
                self.fs.arrow_path(f"{folder}/{info['heads']}"), filesystem=self.fs.arrow
            )
            heads = dict(
                zip(
                    heads_table["stream_id"].to_pylist(),
                    heads_table["version"].to_pylist(),
                    strict=True,
                )
            )
            keys = np.load(io.BytesIO(self.fs.read_bytes(f"{folder}/{info['ids']}")))
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
            return None  # no index, or a damaged one: scan instead
        return heads, keys, offset

    def _save_writer_index(self) -> None:
        """Save the writer caches as of the last commit (under the writer lock), so the next
        process's first append does not scan the whole log."""
        writer = self._load_writer()
        assert writer.heads is not None
        folder = f"{self._meta}/{WRITER_INDEX}"
        self.fs.make_dirs(folder)
        runs = [*writer.id_runs]
        if writer.recent_ids:
            runs.append(np.fromiter(writer.recent_ids, np.uint64))
        keys = np.sort(np.concatenate(runs)) if runs else np.empty(0, np.uint64)
        writer.id_runs, writer.recent_ids = ([keys] if len(keys) else []), set()
        stem = f"{self._commit_number:012d}{self._token}"
        import pyarrow.parquet as pq

        heads = pa.table(
            {
                "stream_id": list(writer.heads),
                "version": pa.array(list(writer.heads.values()), pa.int64()),
            }
        )
        with self.fs.open_output(f"{folder}/heads-{stem}.parquet") as out:
            pq.write_table(heads, out)
        ids = io.BytesIO()
        np.save(ids, keys)
        with self.fs.open_output(f"{folder}/ids-{stem}.npy") as out:
            out.write(ids.getbuffer())
        for name in (f"heads-{stem}.parquet", f"ids-{stem}.npy"):
            self.fs.sync(f"{folder}/{name}")
        pointer = {
            "offset": self._offset,
            "log_digest": self._log.digest_at(self._offset),
            "heads": f"heads-{stem}.parquet",
            "heads_sha256": self.fs.digest(f"{folder}/heads-{stem}.parquet"),
            "ids": f"ids-{stem}.npy",
            "ids_sha256": self.fs.digest(f"{folder}/ids-{stem}.npy"),
        }
        kill_point("writer_index.before_pointer")
        self.fs.write_atomic(f"{folder}/current.json", json.dumps(pointer).encode())
        for old in self.fs.glob(folder, "*-*.*"):
            if stem not in old.rpartition("/")[2]:
                self.fs.remove(old)
        self._saved_ids, self._unsaved_ids = len(keys), 0


def _merge_heads(heads: dict[str, int], table: pa.Table) -> None:
    if table.num_rows:
        grouped = table.group_by("stream_id").aggregate([("version", "max")])
        for stream_id, version in zip(
            grouped["stream_id"].to_pylist(), grouped["version_max"].to_pylist(), strict=True
        ):
            heads[stream_id] = max(version, heads.get(stream_id, 0))
