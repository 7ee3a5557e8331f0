"""How the toolkit opens DuckDB: every connection it makes for a lake comes from :func:`connect`,
so the memory limit and the temporary space a user sets reach all of them.

DuckDB takes up to 80% of the machine's memory by default and spills what does not fit into
``.tmp`` in the working folder, which may be the lake itself. Here a connection spills into a
folder of its own under the system's temporary folder (removed when the process ends), and
three settings bound it, each given to :func:`connect` (``Session(store,
memory_limit="4GB")``) or else read from the environment (the CLI's global ``--memory-limit``,
``--temp-dir`` and ``--max-temp-size`` set these for the process and its children):

* ``ESA_MEMORY_LIMIT``: DuckDB's ``memory_limit`` (``4GB``, ``512MB``, ``50%``);
* ``ESA_TEMP_DIR``: where DuckDB spills (``temp_directory``);
* ``ESA_MAX_TEMP_SIZE``: how much it may spill there (``max_temp_directory_size``).

A value DuckDB does not understand raises :class:`~esanalytics.exceptions.ValidationError`
with a hint, never DuckDB's own parser error.

>>> con = connect(memory_limit="1GB")
>>> con.sql("SELECT current_setting('memory_limit')").fetchall()
[('953.6 MiB',)]
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing.util
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from esanalytics.exceptions import ValidationError

if TYPE_CHECKING:
    import duckdb

__all__ = ["ENV_MAX_TEMP_SIZE", "ENV_MEMORY_LIMIT", "ENV_TEMP_DIR", "DuckLimits", "connect"]

ENV_MEMORY_LIMIT = "ESA_MEMORY_LIMIT"
ENV_TEMP_DIR = "ESA_TEMP_DIR"
ENV_MAX_TEMP_SIZE = "ESA_MAX_TEMP_SIZE"
_SIZE_HINT = (
    "give a size with its unit, such as 4GB, 512MB or 4GiB (or a share of the memory, "
    "such as 50%), to {where}."
)
_spill_root: Path | None = None
_spill_lock = threading.Lock()
_spill_count = itertools.count()


@dataclass(frozen=True)
class DuckLimits:
    """The resources a DuckDB connection may use: ``memory_limit`` and
    ``max_temp_size`` as DuckDB sizes (``"4GB"``), ``temp_dir`` the folder it spills into.
    ``None`` leaves DuckDB's default (memory: 80% of the machine; spill size: 90% of the free
    disk)."""

    memory_limit: str | None = None
    temp_dir: str | None = None
    max_temp_size: str | None = None

    @classmethod
    def resolve(
        cls,
        memory_limit: str | None = None,
        temp_dir: str | Path | None = None,
        max_temp_size: str | None = None,
    ) -> DuckLimits:
        """The limits given, each one missing taken from its environment variable."""
        env = os.environ
        return cls(
            memory_limit=memory_limit or env.get(ENV_MEMORY_LIMIT) or None,
            temp_dir=str(temp_dir) if temp_dir else env.get(ENV_TEMP_DIR) or None,
            max_temp_size=max_temp_size or env.get(ENV_MAX_TEMP_SIZE) or None,
        )

    def config(self) -> dict[str, str]:
        """DuckDB's configuration for these limits; the spill folder is always set."""
        config = {"temp_directory": self.temp_dir or _spill_folder()}
        if self.memory_limit:
            config["memory_limit"] = self.memory_limit
        if self.max_temp_size:
            config["max_temp_directory_size"] = self.max_temp_size
        return config


def _spill_folder() -> str:
    """A folder no other connection spills into, below this process's own temporary folder
    (DuckDB makes it only when it spills; the process removes them all at exit)."""
    global _spill_root
    with _spill_lock:
        if _spill_root is None or not _spill_root.name.endswith(f"-{os.getpid()}"):
            _spill_root = Path(tempfile.gettempdir()) / f"esa-duckdb-{os.getpid()}"
            _spill_root.mkdir(exist_ok=True)  # (DuckDB makes the last folder only)
            atexit.register(shutil.rmtree, _spill_root, True)
            # A multiprocessing child (a process pool's worker) ends without atexit: its
            # finalizers run instead.
            multiprocessing.util.Finalize(None, shutil.rmtree, (_spill_root, True), exitpriority=0)
        return str(_spill_root / str(next(_spill_count)))


def connect(
    *,
    threads: int | None = None,
    memory_limit: str | None = None,
    temp_dir: str | Path | None = None,
    max_temp_size: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB database within the limits given (or set in the environment:
    see the module's text). ``threads`` caps its threads (default: all cores)."""
    import duckdb

    limits = DuckLimits.resolve(memory_limit, temp_dir, max_temp_size)
    if limits.temp_dir:
        _check_temp_dir(limits.temp_dir)
    config: dict[str, str | bool | int | float | list[str]] = dict(limits.config())
    if threads:
        config["threads"] = threads
    try:
        return duckdb.connect(config=config)
    except duckdb.Error as error:
        raise _limit_error(limits, error) from None


def _check_temp_dir(folder: str) -> None:
    """Refuse a spill folder DuckDB could not make when it first spills (it makes the last
    folder only), so the query fails now, naming the setting, not later as an unreadable
    lake."""
    path = Path(folder)
    existing = path if path.exists() else path.parent
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return
    if not existing.exists():
        why = f"{existing} does not exist"
    elif not existing.is_dir():
        why = f"{existing} is not a folder"
    else:
        why = f"{existing} cannot be written"
    raise ValidationError(
        f"DuckDB cannot spill into {folder}: {why}.",
        hint="name a folder that exists, or whose parent folder exists, and can be written, "
        f"to temp_dir= (or {ENV_TEMP_DIR}, or esa --temp-dir).",
    )


def _limit_error(limits: DuckLimits, error: Exception) -> ValidationError:
    """What was wrong with the limits DuckDB refused, and where it was set: each setting is
    tried alone to name the one at fault."""
    import duckdb

    settings = (
        ("memory_limit", limits.memory_limit, "the memory limit", "memory_limit", ENV_MEMORY_LIMIT, "--memory-limit"),
        ("max_temp_directory_size", limits.max_temp_size, "the temporary space limit", "max_temp_size", ENV_MAX_TEMP_SIZE, "--max-temp-size"),
        ("temp_directory", limits.temp_dir, "the temporary folder", "temp_dir", ENV_TEMP_DIR, "--temp-dir"),
    )  # fmt: skip
    for key, value, what, argument, variable, option in settings:
        if not value:
            continue
        try:
            duckdb.connect(config={key: value}).close()
        except duckdb.Error as refused:
            message = str(refused).splitlines()[0]
            where = f"{argument}= (or {variable}, or esa {option})"
            if key == "temp_directory":
                return ValidationError(
                    f"DuckDB cannot spill into {value}: {message}",
                    hint=f"name a folder that can be made and written, to {where}.",
                )
            if "Out of Memory" in message:
                return ValidationError(
                    f"{what.capitalize()} {value!r} is too small to open DuckDB.",
                    hint=f"give DuckDB at least a few hundred megabytes (512MB), to {where}.",
                )
            return ValidationError(
                f"{what.capitalize()} {value!r} is not a size: {message}",
                hint=_SIZE_HINT.format(where=where),
            )
    return ValidationError(
        f"DuckDB refused the resource limits {limits}: {str(error).splitlines()[0]}",
        hint="check the limits given (memory_limit=, temp_dir=, max_temp_size=, or their "
        "ESA_ variables) and that the temporary folder can be written.",
    )
