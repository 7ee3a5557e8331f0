"""Typed twins: the payload fields of an events file as typed Parquet columns.

``data`` stays the JSON text of record: the hash chain covers it and every plain reader keeps
reading it. Beside each events file ``events/category=C/month=M/NAME.parquet`` the store may
write a *twin*, ``typed/category=C/month=M/NAME.parquet``: the same rows in the same order,
with the columns questions filter and group by (:data:`TWIN_BASE`) and one column per
top-level payload field, named ``data.<field>`` (a literal dot). The twin is committed with
its events file (its digest in the same commit line), so ``verify`` covers it, and it lives
outside ``events/``, so a glob of ``events/`` sees exactly the contract's schema.

A field's column is typed from the text ``data->>'$.<field>'`` gives, which is what every
JSON read of it in DuckDB starts from, so a typed read is the JSON read, value for value:

=====================  ==============================================  =====================
column type            when every non-null text of the field ...       e.g.
=====================  ==============================================  =====================
``BIGINT``             is a canonical integer of at most 18 digits      ``42``, ``-7``
``DECIMAL(18,s)``      is a plain decimal; digits before and after      ``164.34``, ``500.0``
                       the point (``s``) at most 15 in all
``BOOLEAN``            is ``true`` or ``false``                         ``true``
``VARCHAR``            anything else: text, mixed kinds, objects        ``"EUR"``, ``[1,2]``
=====================  ==============================================  =====================

A field that holds a number in one event and text in another is a ``VARCHAR`` column of the
texts: still exactly what the JSON read gives. :func:`safe` says which casts of a typed
column equal the same cast of the text, so the engine uses a twin only where the answer is
the same.
"""

from __future__ import annotations

import os
import re
import threading
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from esanalytics._duck import DuckLimits

__all__ = ["FIELD_PREFIX", "MAX_FIELDS", "TWIN_BASE", "derive", "field_column", "safe"]

#: The columns every twin repeats from its events file, in this order.
TWIN_BASE: Final = (
    "global_position",
    "stream_id",
    "version",
    "event_type",
    "occurred_at",
    "recorded_at",
)
#: A payload field ``amount`` is the twin's column ``data.amount``.
FIELD_PREFIX: Final = "data."
#: At most this many fields (the most frequent) get a column; a twin with more fields in its
#: payloads says so (``more``), and the engine reads the others from the JSON.
MAX_FIELDS: Final = 64
#: Fields a ``data()`` path can name: the ones worth a column.
FIELD_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# What the text of each typed class looks like (regexp_full_match, RE2).
_INTEGER = r"0|-?[1-9][0-9]{0,17}"
_DECIMAL = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?"
_NEGATIVE_ZERO = r"-0(\.0+)?"  # its double is -0.0, a decimal's 0.0: kept as text
_DECIMAL_DIGITS = 15  # digits in all: the scaled integer stays below 2**53, so DOUBLE is exact


_database: tuple[tuple[int, DuckLimits], duckdb.DuckDBPyConnection] | None = None
_database_lock = threading.Lock()


def _cursor() -> duckdb.DuckDBPyConnection:
    """A connection of its own to the process's in-memory DuckDB database: opening a
    database costs about 25 ms, a cursor next to nothing, and compaction derives a twin per
    partition (a child process makes its own database: DuckDB's threads do not survive a
    fork). The database is opened anew when the DuckDB limits in the environment change
    (``esa --memory-limit`` sets them for one verb only)."""
    global _database
    from esanalytics._duck import DuckLimits, connect

    owner = (os.getpid(), DuckLimits.resolve())
    with _database_lock:
        if _database is None or _database[0] != owner:
            _database = (owner, connect())
        return _database[1].cursor()


def field_column(name: str) -> str:
    """The twin's column name for the payload field ``name``."""
    return FIELD_PREFIX + name


def derive(body: pa.Table) -> tuple[pa.Table, dict[str, str], bool]:
    """The twin of an events file's rows (a table with :data:`TWIN_BASE` and ``data``): the
    twin table, its fields (name to DuckDB type, in column order) and whether the payloads
    hold more fields than got a column. DuckDB parses the JSON (twice: keys, then texts);
    Arrow classifies and casts the texts."""
    import pyarrow as pa

    twin = body.select(list(TWIN_BASE))
    con = _cursor()
    try:
        con.register("esa_body", body.select(["data"]))
        counted = con.sql(
            "SELECT k, count(*) AS n FROM (SELECT unnest(json_keys(data)) AS k FROM esa_body "
            "WHERE json_type(data) = 'OBJECT') GROUP BY k ORDER BY n DESC, k"
        ).fetchall()
        names = [str(k) for k, _ in counted if FIELD_NAME.fullmatch(str(k))]
        more = len(names) > MAX_FIELDS
        names = sorted(names[:MAX_FIELDS])
        if not names:
            return twin, {}, more
        paths = ", ".join(f"'$.{name}'" for name in names)
        items = ", ".join(f"t[{i}]" for i in range(1, len(names) + 1))
        texts = con.sql(
            f"SELECT {items} FROM (SELECT json_extract_string(data, [{paths}]) AS t FROM esa_body)"
        ).to_arrow_table()
    finally:
        con.close()
    fields = {}
    for name, column in zip(names, texts.columns, strict=True):
        kind, values = _typed(column.combine_chunks())
        fields[name] = kind
        twin = twin.append_column(pa.field(field_column(name), values.type), values)
    return twin, fields, more


def _typed(texts: pa.Array) -> tuple[str, pa.Array]:
    """A field's column type and values, from its texts (null where the field is missing or
    null). A cheap look at the first texts rules out most classes before a full pass."""
    import pyarrow as pa
    import pyarrow.compute as pc

    present = pc.drop_null(texts)
    if len(present) == 0:
        return "VARCHAR", texts.cast(pa.string())
    head = present.slice(0, 256)

    def all_match(pattern: str) -> bool:
        whole = f"^({pattern})$"
        if not pc.all(pc.match_substring_regex(head, whole)).as_py():
            return False
        return bool(pc.all(pc.match_substring_regex(present, whole)).as_py())

    if all_match(_INTEGER):
        return "BIGINT", pc.cast(texts, pa.int64())
    if (
        all_match(_DECIMAL)
        and not pc.any(pc.match_substring_regex(present, f"^({_NEGATIVE_ZERO})$")).as_py()
    ):
        dot = pc.find_substring(present, ".")
        length = pc.utf8_length(present)
        fraction = pc.if_else(pc.less(dot, 0), 0, pc.subtract(pc.subtract(length, dot), 1))
        whole = pc.subtract(
            pc.if_else(pc.less(dot, 0), length, dot),
            pc.cast(pc.starts_with(present, "-"), pa.int32()),
        )
        scale = int(pc.max(fraction).as_py())
        if int(pc.max(whole).as_py()) + scale <= _DECIMAL_DIGITS:
            return f"DECIMAL(18,{scale})", pc.cast(texts, pa.decimal128(18, scale))
    if pc.all(pc.is_in(present, pa.array(["true", "false"]))).as_py():
        return "BOOLEAN", pc.equal(texts, "true")
    return "VARCHAR", texts.cast(pa.string())


_INTEGERS = frozenset(
    [
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "INT",
        "INT1",
        "INT2",
        "INT4",
        "INT8",
        "SHORT",
        "LONG",
        "SIGNED",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "UHUGEINT",
    ]
)
_DECIMAL_TYPE = re.compile(r"(DECIMAL|NUMERIC)(\(\d+(,\d+)?\))?")


def safe(stored: str, requested: str) -> bool:
    """Whether ``TRY_CAST(column AS requested)`` over a twin column of type ``stored`` equals
    ``TRY_CAST(data->>'$.field' AS requested)`` for every value (the property tests check
    each pair this allows)."""
    wanted = re.sub(r"\s+", "", requested.upper())
    if stored == "VARCHAR":
        return True  # the same text, cast the same way
    numeric = wanted in _INTEGERS or wanted == "DOUBLE" or bool(_DECIMAL_TYPE.fullmatch(wanted))
    if stored == "BIGINT":
        return numeric or wanted in ("VARCHAR", "TEXT", "STRING")
    if stored.startswith("DECIMAL("):
        return numeric  # as text, 1.5 stored at scale 2 would read 1.50, not the JSON's 1.5
    if stored == "BOOLEAN":
        return wanted in ("BOOLEAN", "BOOL", "VARCHAR", "TEXT", "STRING")
    return False
