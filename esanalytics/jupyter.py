"""IPython extension: ``%load_ext esanalytics.jupyter`` turns on offline charts and adds the
``%%esql`` cell magic, which runs SQL against a lake at a time cut::

    %esql_lake ../data/sample-lake
    %%esql --as-of 2024-03-01 --valid-at 2024-02-15 -o balances
    SELECT stream_id, count(*) FROM events GROUP BY ALL ORDER BY 2 DESC LIMIT 5

The cell's result is a pandas DataFrame (``-o NAME`` also keeps it in the variable NAME).
Options: ``--lake PATH`` (else the one ``%esql_lake`` set, else ``$ESA_LAKE``),
``--as-of TIME``, ``--valid-at TIME``, ``--position N``. The example projections
(``account_balances``, ``order_status``) and their ``*_as_of`` macros are registered, so
``SELECT * FROM account_balances_as_of('2024-03-01')`` works too.
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Any

from esanalytics.exceptions import EsaError, ValidationError

__all__ = ["esql", "load_ipython_extension"]

_state: dict[str, Any] = {"lake": None, "sessions": {}}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # raise, never exit the kernel
        raise ValidationError(
            f"%%esql: {message}.",
            hint="usage: %%esql [--lake PATH] [--as-of TIME] [--valid-at TIME] "
            "[--position N] [-o NAME]",
        )


_parser = _Parser(prog="%%esql", add_help=False)
_parser.add_argument("--lake")
_parser.add_argument("--as-of")
_parser.add_argument("--valid-at")
_parser.add_argument("--position", type=int)
_parser.add_argument("-o", "--output")


def _session(lake: str, as_of: str | None, valid_at: str | None, position: int | None) -> Any:
    import esanalytics as esa
    from esanalytics.catalog import PROJECTIONS
    from esanalytics.engine import Session

    key = (str(Path(lake).resolve()), as_of, valid_at, position)
    session = _state["sessions"].get(key)
    if session is None:
        session = Session(esa.open(lake), as_of=as_of, valid_at=valid_at, position=position)
        for projection in PROJECTIONS.values():
            projection.register(session)
        _state["sessions"][key] = session
    else:
        session.refresh()  # pick up what was appended since (a position pin stays put)
    return session


def esql(line: str, cell: str, namespace: dict[str, Any] | None = None) -> Any:
    """Run the SQL of ``cell`` with the options of ``line``; returns a DataFrame."""
    args = _parser.parse_args(shlex.split(line))
    lake = args.lake or _state["lake"] or os.environ.get("ESA_LAKE")
    if not lake:
        raise ValidationError(
            "%%esql does not know which lake to read.",
            hint="run %esql_lake PATH once, pass --lake PATH, or set ESA_LAKE.",
        )
    if not cell.strip():
        raise ValidationError("%%esql got an empty cell.", hint="write a query below the magic.")
    frame = _session(lake, args.as_of, args.valid_at, args.position).df(cell)
    if args.output and namespace is not None:
        namespace[args.output] = frame
    return frame


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext esanalytics.jupyter``."""
    from esanalytics import viz

    viz.enable()

    def esql_magic(line: str, cell: str) -> Any:
        from esanalytics.engine import query_error

        try:
            return esql(line, cell, ipython.user_ns)
        except EsaError as error:  # a clear message, not a traceback
            print(error)
            return None
        except Exception as error:
            refused = query_error(error)  # the query's own fault: say how the lake reads
            if refused is None:
                raise
            print(refused)
            return None

    def esql_lake(line: str) -> None:
        path = line.strip() or None
        if path and not Path(path, "_esa").is_dir():
            print(f"{path} is not a lake (no _esa folder).\nHint: check the path, or run esa demo.")
            return
        _state["lake"] = path

    ipython.register_magic_function(esql_magic, magic_kind="cell", magic_name="esql")
    ipython.register_magic_function(esql_lake, magic_kind="line", magic_name="esql_lake")
