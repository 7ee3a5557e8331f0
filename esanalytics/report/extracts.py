"""Extracts an auditor can take away: CSV or Parquet, each with a SHA-256 checksum beside it
(``<file>.sha256``, in the format ``sha256sum -c`` reads).

CSV cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``,
a tab or a carriage return) are prefixed with a single quote, as OWASP advises, so opening
an extract never executes anything an event's author wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from esanalytics.store import file_digest
from esanalytics.store._atomic import replacing, write_whole

__all__ = ["checksum", "safe_for_spreadsheets", "write_extract"]

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_for_spreadsheets(table: pa.Table) -> pa.Table:
    """Every text cell that starts like a formula gets a leading ``'``."""
    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            risky = pc.starts_with(column, _FORMULA_START[0])
            for start in _FORMULA_START[1:]:
                risky = pc.or_(risky, pc.starts_with(column, start))
            column = pc.if_else(
                pc.fill_null(risky, False), pc.binary_join_element_wise("'", column, ""), column
            )
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


checksum = file_digest  # the hex SHA-256 of a file, as the store seals its own files


def write_extract(table: pa.Table, path: str | os.PathLike[str], *, fmt: str = "csv") -> Path:
    """Write ``table`` to ``path`` (CSV made safe for spreadsheets, or Parquet) and its
    checksum to ``path.sha256``; returns the checksum file."""
    target = Path(path)
    if fmt not in ("csv", "parquet"):
        from esanalytics.exceptions import ValidationError

        raise ValidationError(f"Unknown extract format {fmt!r}.", hint="use 'csv' or 'parquet'.")
    with replacing(target) as tmp:  # whole or not at all, like the checksum file
        if fmt == "csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(safe_for_spreadsheets(table), tmp)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        digest = checksum(tmp)
    sums = write_whole(target.with_name(target.name + ".sha256"), f"{digest}  {target.name}\n")
    return sums
