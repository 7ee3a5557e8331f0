"""Where things live in a lake folder, and the few file-system moves the store makes.

    lake/
      _esa/lake.json          marks the folder as a lake (format and version)
      _esa/commits.log        the commit record: one checksummed JSON line per commit
      _esa/checkpoint.json    the state as of a recent commit, so opening reads only the rest
      _esa/writer-index/      stream versions and event-id keys as of a commit, for writers
      _esa/writer.lock        serializes writers (threads and processes) at commit time
      _esa/compact.lock       one compaction at a time
      events/category=<c>/month=<YYYY-MM>/<name>.parquet     committed, visible files
      typed/category=<c>/month=<YYYY-MM>/<name>.parquet      a file's typed twin, committed
                                                             with it (store/typed.py)

A file is written as ``.<name>.parquet.tmp`` beside its final place, synced, named in the
commit record, and only then renamed to ``<name>.parquet``; a file that compaction replaced
is renamed to ``.<name>.parquet.retired`` and kept for readers of older snapshots until
``vacuum``. A file's twin takes the same steps under ``typed/``, in the same commit. Names
that start with ``.`` and do not end in ``.parquet`` are skipped by DuckDB's
``*.parquet`` globs, pyarrow's discovery and Spark, so plain readers never see a half-written
or an uncommitted file. Nothing a user passes (stream id, category) builds a path except a
category, which :func:`~esanalytics.events.validate_category` restricts to a plain name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from esanalytics.exceptions import EsaError, StorageError

LAKE_DIR: Final = "_esa"
EVENTS_DIR: Final = "events"
TYPED_DIR: Final = "typed"
MARKER: Final = "lake.json"
COMMIT_LOG: Final = "commits.log"
CHECKPOINT: Final = "checkpoint.json"
WRITER_INDEX: Final = "writer-index"
WRITER_LOCK: Final = "writer.lock"
COMPACT_LOCK: Final = "compact.lock"
LAKE_FORMAT: Final = "esanalytics-lake"
LAKE_FORMAT_VERSION: Final = 1


def partition_dir(category: str, month: str) -> str:
    """The relative folder of a partition, below ``events/``."""
    return f"category={category}/month={month}"


def tmp_name(relpath: str) -> str:
    head, _, name = relpath.rpartition("/")
    return f"{head}/.{name}.tmp"


def retired_name(relpath: str) -> str:
    head, _, name = relpath.rpartition("/")
    return f"{head}/.{name}.retired"


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durably(root: Path, relative: str) -> Path:
    """Create ``root/relative`` and sync every folder it created, so a commit never names a
    file whose folder a power cut could lose."""
    target = root / relative
    if target.is_dir():
        return target
    missing = []
    probe = target
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    target.mkdir(parents=True, exist_ok=True)
    for folder in [*reversed(missing), probe]:
        fsync_dir(folder if folder.is_dir() else folder.parent)
    return target


def inside_lake(lake: Path | str, literal: str) -> bool:
    """Does a path (as written in SQL or on a command line) name something inside the lake,
    after ``~``, ``..`` and symbolic links, resolved from the current folder? (For a lake on
    object storage, ``lake`` is its URL: a URL below it is inside.)"""
    if isinstance(lake, str):
        text = literal.rstrip("/")
        return text == lake or text.startswith(lake + "/")
    text = literal.removeprefix("file://")
    if "://" in text:  # another file system (s3://, http://): never the lake's folder
        return False
    target = Path(os.path.expanduser(text)).absolute()
    return target.resolve().is_relative_to(lake.resolve())


class FileLock:
    """An exclusive lock held through ``flock`` (between processes) and a thread lock (between
    threads of one process, which share ``flock`` ownership through the open file)."""

    def __init__(self, path: Path) -> None:
        import threading

        self._path = path
        self._thread_lock = threading.Lock()
        self._fd: int | None = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread_lock:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock


_FULL = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def storage_error(error: BaseException, lake: Path | str, doing: str) -> StorageError | None:
    """The hinted error for a write that found the disk full or the lake read-only (None for
    any other failure). ``doing`` names the write, e.g. "the append"."""
    if isinstance(error, EsaError):
        return None
    code = getattr(error, "errno", None)
    if code is None:  # DuckDB reports the errno only in its message
        found = re.search(r'"errno":"(\d+)"', str(error))
        code = int(found.group(1)) if found else None
    if code in _FULL:
        return StorageError(
            f"The disk holding the lake {lake} is full: {doing} was not written.",
            hint="free space on that disk (or raise the quota), then retry; nothing was "
            "written, so the retry cannot duplicate anything.",
            path=str(lake),
            errno=code,
        )
    if code in _READ_ONLY:
        return StorageError(
            f"The lake {lake} is read-only here ({os.strerror(code)}): {doing} was not written.",
            hint="open it only to read (reads need no write access), or check the folder's "
            "permissions and how the disk is mounted, then retry.",
            path=str(lake),
            errno=code,
        )
    return None


@contextlib.contextmanager
def writing(lake: Path | str, doing: str) -> Iterator[None]:
    """Raise a full disk or a read-only lake met inside as a hinted :class:`StorageError`."""
    try:
        yield
    except Exception as error:
        mapped = storage_error(error, lake, doing)
        if mapped is None:
            raise
        raise mapped from error
