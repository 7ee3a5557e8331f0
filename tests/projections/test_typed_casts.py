"""For random payloads, every cast of a twin's column that :func:`safe` allows gives, row by
row, exactly what the same cast of the JSON text gives (DuckDB computes both)."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from esanalytics.store.typed import TWIN_BASE, derive, field_column, safe

#: What questions ask for: every kind of integer, decimals of several widths, floats,
#: booleans, text, and types no twin may serve (dates) to see ``safe`` refuse them.
REQUESTED = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "UINTEGER", "UBIGINT",
    "DOUBLE", "FLOAT", "DECIMAL(18,2)", "DECIMAL(18,0)", "DECIMAL(5,1)", "DECIMAL(38,10)",
    "NUMERIC", "DECIMAL", "BOOLEAN", "BOOL", "VARCHAR", "TEXT", "DATE", "TIMESTAMP",
)  # fmt: skip

#: Raw JSON texts of one value, by class: integers big and small, decimals of varying scale
#: (and texts DuckDB rewrites: 1.50, 1e3, -0.0), booleans, and anything (numbers as strings,
#: objects, arrays, null). A field keeps to one class in most examples, so that twins get
#: every column type, and mixes them in others.
INTEGER = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(["0", "-0", "-1", "9223372036854775807", "999999999999999999", "1e3"]),
)
DECIMAL = st.one_of(
    st.tuples(st.integers(-(10**9), 10**9), st.integers(0, 10**8), st.integers(1, 9)).map(
        lambda t: f"{t[0]}.{str(t[1]).zfill(t[2])[: t[2]]}"
    ),
    st.sampled_from(["-0.0", "1.50", "0.1", "123456789012345.5", "2.5", "-2.5", "1E-2", "7"]),
)
BOOLEAN = st.sampled_from(["true", "false"])
ANY = st.one_of(
    INTEGER, DECIMAL, BOOLEAN, st.just("null"),
    st.text(alphabet="01.-e ta", max_size=5).map(json.dumps),
    st.sampled_from(['{"a": 1}', "[1, 2]", "[]", '"true"', '"12"', '"1.5"', '""']),
)  # fmt: skip
NAMES = ("a", "b", "c", "amount")
KINDS: set[str] = set()  # the column types the examples gave twins


@st.composite
def payloads(draw: st.DrawFn) -> list[str]:
    """JSON texts of events: objects whose fields keep to a class (or not), go missing or
    hold null, and now and then a payload that is not an object."""
    classes = {n: draw(st.sampled_from([INTEGER, DECIMAL, BOOLEAN, ANY])) for n in NAMES}
    texts = []
    for _ in range(draw(st.integers(1, 30))):
        if draw(st.integers(0, 19)) == 0:
            texts.append(draw(st.sampled_from(["[1]", '"x"', "3"])))
            continue
        fields = {n: draw(classes[n]) for n in NAMES if draw(st.integers(0, 3))}
        if fields and draw(st.integers(0, 9)) == 0:
            fields[draw(st.sampled_from(sorted(fields)))] = "null"
        texts.append("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}")
    return texts


@settings(max_examples=80)
@given(payloads())
def test_every_safe_cast_of_a_twin_equals_the_json_cast(texts: list[str]) -> None:
    n = len(texts)
    body = pa.table(
        {
            "global_position": pa.array(range(1, n + 1), pa.int64()),
            "stream_id": ["s"] * n,
            "version": pa.array(range(1, n + 1), pa.int64()),
            "event_type": ["E"] * n,
            "occurred_at": pa.array([0] * n, pa.timestamp("us", "UTC")),
            "recorded_at": pa.array([0] * n, pa.timestamp("us", "UTC")),
            "data": texts,
        }
    )
    twin, fields, _ = derive(body)
    KINDS.update(kind.partition("(")[0] for kind in fields.values())
    assert twin.column_names[: len(TWIN_BASE)] == list(TWIN_BASE)
    con = duckdb.connect()
    con.register("twin", twin)
    con.register("body", body)
    pairs = [(n, t) for n, stored in fields.items() for t in REQUESTED if safe(stored, t)]
    assert {n for n, _ in pairs} == set(fields)  # every column serves some request
    if not pairs:
        return
    casts = ", ".join(
        f"TRY_CAST(t.\"{field_column(n)}\" AS {t}), TRY_CAST(b.data->>'$.{n}' AS {t})"
        for n, t in pairs
    )
    rows = con.sql(
        f"SELECT b.data, {casts} FROM twin t JOIN body b USING (global_position) "
        "ORDER BY global_position"
    ).fetchall()
    for row in rows:
        for i, (name, requested) in enumerate(pairs):
            typed, plain = row[1 + 2 * i], row[2 + 2 * i]
            case = (name, fields[name], requested, row[0], typed, plain)
            assert typed == plain, case
            assert type(typed) is type(plain), case


def test_the_examples_gave_twins_every_column_type() -> None:
    """Run after the property test: it made twins of every type."""
    if KINDS:  # the property test ran in this process
        assert {"BIGINT", "DECIMAL", "BOOLEAN", "VARCHAR"} == KINDS
