"""Files written whole or not at all: every output (reports, charts, extracts, query results,
checkpoints, materialized states) is written to a temporary name in its own folder, synced,
and renamed into place, so a reader never finds half a file after a kill or a full disk."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from esanalytics.store.layout import fsync_dir, fsync_file

__all__ = ["replacing", "temporary_beside", "write_whole"]


def temporary_beside(target: Path) -> Path:
    """A hidden name beside ``target`` that no other writer (process or thread) uses."""
    return target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; when the block ends, it is
    synced and renamed to ``path`` (which keeps its old content until then). If the block
    raises, the temporary file is deleted and ``path`` is as before."""
    target = Path(path)
    tmp = temporary_beside(target)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # the rename stands; syncing the folder makes it durable
        fsync_dir(target.parent.absolute())


def write_whole(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` whole or not at all; returns the path."""
    with replacing(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(path)
