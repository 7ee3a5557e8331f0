"""The one seam between the store and the storage that holds a lake: every file the store
reads, writes, renames, syncs, locks or lists goes through a :class:`LakeFS`.

Paths are lake-relative, with ``/`` separators (``"events/category=a/month=2024-01/x.parquet"``,
``"_esa/checkpoint.json"``); a backend maps them to its own names. :class:`LocalFS` is a lake
folder on local disk and keeps the store's behaviour byte for byte (temporary names, fsync,
``os.replace``, ``flock``). An object-storage backend (``store/s3.py``) implements the same
methods; a new backend must implement every method below that raises NotImplementedError,
plus the attributes ``url``, ``local``, ``arrow`` and ``renames_on_publish``.

On object storage some of them may be no-ops, and why:

- :meth:`~LakeFS.make_dirs`: there are no folders, only keys.
- :meth:`~LakeFS.sync` and :meth:`~LakeFS.sync_dir`: a PUT is durable when it returns.
- :meth:`~LakeFS.lock`: a ``nullcontext``; commits are optimistic (a conditional PUT of the
  next commit line decides between writers), so no lock is held across machines.
- :meth:`~LakeFS.rename` is a copy and a delete there: it is never relied on for atomicity.
  With ``renames_on_publish`` False the store writes new files under their final (unique)
  names before the commit and never renames them to publish; a file no commit names is never
  read (readers take their files from the commit log, never from a listing).

The commit log is the backend's too: :meth:`~LakeFS.commit_log` returns an object with the
API of :class:`~esanalytics.store.commitlog.CommitLog` (``path``, ``size``, ``read_from``,
``lines``, ``lines_before``, ``digest_at``, ``append(record, valid_end=)``).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from esanalytics.store.layout import (
    COMMIT_LOG,
    LAKE_DIR,
    FileLock,
    fsync_dir,
    fsync_file,
    make_dirs_durably,
)

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import pyarrow as pa
    import pyarrow.fs as pafs

    from esanalytics.store.commitlog import CommitLog

__all__ = ["LakeFS", "LocalFS"]


class LakeFS:
    """Where a lake's files live, as the store sees it (see the module docstring).

    ``url`` names the lake to users (``"/abs/lake"`` or ``"s3://bucket/prefix"``); ``local`` is
    True for a folder on local disk; ``arrow`` is the pyarrow file system that reads and
    writes it (paths through :meth:`arrow_path`); ``renames_on_publish`` tells the store how
    a new file becomes visible (True: written as ``.<name>.tmp`` and renamed after its commit
    line; False: written under its final, unique name before the commit)."""

    url: str
    local: bool
    renames_on_publish: bool

    @property
    def arrow(self) -> pafs.FileSystem:
        raise NotImplementedError

    def arrow_path(self, rel: str) -> str:
        """``rel`` as :attr:`arrow` names it."""
        raise NotImplementedError

    def uri(self, rel: str) -> str:
        """``rel`` as DuckDB (and error messages) name it: a local path or ``s3://...``."""
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def size(self, rel: str) -> int:
        """The file's size in bytes (FileNotFoundError when it is missing)."""
        raise NotImplementedError

    def read_bytes(self, rel: str) -> bytes:
        """The whole file (FileNotFoundError when it is missing)."""
        raise NotImplementedError

    def list_files(self, rel: str) -> list[str]:
        """Every file below ``rel`` at any depth, as lake-relative paths, sorted (an empty
        list when there is none)."""
        raise NotImplementedError

    def children(self, rel: str) -> list[str]:
        """The names (files and folders) directly inside the folder ``rel`` (``""``: the
        lake's own), sorted; an empty list when it does not exist."""
        raise NotImplementedError

    def glob(self, rel: str, pattern: str) -> list[str]:
        """The files below ``rel`` whose path relative to it matches ``pattern`` segment by
        segment (``*`` never crosses a ``/``), as lake-relative paths. Built on
        :meth:`list_files`; a backend may list less."""
        want = pattern.split("/")
        prefix = rel.rstrip("/") + "/"
        found = []
        for path in self.list_files(rel):
            parts = path.removeprefix(prefix).split("/")
            if len(parts) == len(want) and all(
                fnmatch.fnmatchcase(part, wanted) for part, wanted in zip(parts, want, strict=True)
            ):
                found.append(path)
        return found

    def write_atomic(self, rel: str, data: bytes) -> None:
        """Replace the file with ``data`` whole or not at all, durably."""
        raise NotImplementedError

    def create_new(self, rel: str, data: bytes) -> bool:
        """Write ``data`` to ``rel`` only if nothing is there, atomically and durably; False
        (nothing written) if something is."""
        raise NotImplementedError

    def open_output(self, rel: str) -> pa.NativeFile:
        """A stream that writes a new file at ``rel`` (closing it ends the file)."""
        raise NotImplementedError

    def remove(self, rel: str) -> None:
        """Delete the file; a missing one is fine."""
        raise NotImplementedError

    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst``, replacing it."""
        raise NotImplementedError

    def make_dirs(self, rel: str) -> None:
        """Make the folder ``rel`` and its parents, durably (a no-op where there are none)."""
        raise NotImplementedError

    def sync(self, rel: str) -> None:
        """Make the file's bytes durable (a no-op where a written file is durable)."""
        raise NotImplementedError

    def sync_dir(self, rel: str) -> None:
        """Make the folder's entries (names created, renamed, deleted) durable."""
        raise NotImplementedError

    def digest(self, rel: str) -> str:
        """Hex SHA-256 of the file's bytes."""
        raise NotImplementedError

    def modified(self, rel: str) -> float:
        """When the file was last written, in seconds since the epoch (FileNotFoundError when
        it is missing)."""
        raise NotImplementedError

    def lock(self, name: str) -> AbstractContextManager[None]:
        """Hold the lake's lock ``name`` (``"writer.lock"``, ``"compact.lock"``) between
        threads and processes for the ``with`` block (a no-op where commits are optimistic)."""
        raise NotImplementedError

    def commit_log(self) -> CommitLog:
        """The lake's commit log (a new reader and appender of it)."""
        raise NotImplementedError


class LocalFS(LakeFS):
    """A lake folder on local disk. ``root`` is kept as given (paths in messages and
    snapshots are ``root`` joined with the relative path, as they always were)."""

    local = True
    renames_on_publish = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root.absolute())
        self._locks: dict[str, FileLock] = {}
        self._arrow: pafs.FileSystem | None = None

    def __repr__(self) -> str:
        return f"LocalFS({self.root})"

    def full(self, rel: str) -> Path:
        """The local path of ``rel``."""
        return self.root / rel

    @property
    def arrow(self) -> pafs.FileSystem:
        if self._arrow is None:
            import pyarrow.fs as pafs

            self._arrow = pafs.LocalFileSystem()
        return self._arrow

    def arrow_path(self, rel: str) -> str:
        return os.path.abspath(self.root / rel)

    def uri(self, rel: str) -> str:
        return str(self.root / rel)

    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def size(self, rel: str) -> int:
        return (self.root / rel).stat().st_size

    def read_bytes(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def list_files(self, rel: str) -> list[str]:
        base = self.root / rel
        found = []
        for folder, _dirs, names in os.walk(base):
            inner = Path(folder).relative_to(self.root).as_posix()
            found += [f"{inner}/{name}" for name in names]
        return sorted(found)

    def children(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.root / rel))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def glob(self, rel: str, pattern: str) -> list[str]:
        base = self.root / rel
        return [path.relative_to(self.root).as_posix() for path in base.glob(pattern)]

    def write_atomic(self, rel: str, data: bytes) -> None:
        """Written to ``.<name>.tmp`` beside it (one writer at a time: callers hold the writer
        lock), synced, renamed over it, and the folder synced."""
        target = self.root / rel
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            tmp.write_bytes(data)
            fsync_file(tmp)
            os.replace(tmp, target)
            fsync_dir(target.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def create_new(self, rel: str, data: bytes) -> bool:
        """Written to a temporary name of its own, synced, then linked to ``rel`` (which
        fails if ``rel`` exists), so a reader never finds it half written."""
        from esanalytics.store._atomic import temporary_beside

        target = self.root / rel
        tmp = temporary_beside(target)
        try:
            tmp.write_bytes(data)
            fsync_file(tmp)
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
            fsync_dir(target.parent)
            return True
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def open_output(self, rel: str) -> pa.NativeFile:
        import pyarrow as pa

        return pa.OSFile(str(self.root / rel), mode="wb")

    def remove(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)

    def rename(self, src: str, dst: str) -> None:
        os.replace(self.root / src, self.root / dst)

    def make_dirs(self, rel: str) -> None:
        make_dirs_durably(self.root, rel)

    def sync(self, rel: str) -> None:
        fsync_file(self.root / rel)

    def sync_dir(self, rel: str) -> None:
        fsync_dir(self.root / rel)

    def digest(self, rel: str) -> str:
        with open(self.root / rel, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()

    def modified(self, rel: str) -> float:
        return (self.root / rel).stat().st_mtime

    def lock(self, name: str) -> AbstractContextManager[None]:
        """``flock`` on ``_esa/<name>`` (and a thread lock shared by this handle's threads)."""
        held = self._locks.get(name)
        if held is None:
            held = self._locks[name] = FileLock(self.root / LAKE_DIR / name)
        return held.hold()

    def commit_log(self) -> CommitLog:
        from esanalytics.store.commitlog import CommitLog

        return CommitLog(self.root / LAKE_DIR / COMMIT_LOG)
