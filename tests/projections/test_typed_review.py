"""A second reading of the typed-twins read side: cases where an answer read through the
twins (or the ``events_<category>`` views) could differ from the answer read from the JSON
alone, each pinned by the smallest lake that showed it."""

from __future__ import annotations

import duckdb
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

import esanalytics as esa
from esanalytics.engine import Session
from tests.projections.test_category_views import _ingest


def test_a_view_name_two_categories_map_to_shows_only_the_category_so_named(
    store: esa.EventStore,
) -> None:
    """``Account`` and ``a-b`` map to the names ``events_account`` and ``events_a_b`` that
    the categories ``account`` and ``a_b`` spell exactly: those views hold the exactly
    named category's events, never another's."""
    _ingest(store, [
        ("a-1", "account", {"amount": 1}),
        ("b-1", "Account", {"amount": 2}),
        ("c-1", "a_b", {"x": 1}),
        ("d-1", "a-b", {"x": 2}),
        ("e-1", "X-y", {"x": 3}),
        ("f-1", "x-Y", {"x": 4}),  # neither is events_x_y exactly: no view for either
    ])  # fmt: skip
    store.compact()
    for session in (Session(store), Session(store, typed=False)):
        assert session.category_views == {"account": "events_account", "a_b": "events_a_b"}
        for category, view in session.category_views.items():
            found = session.sql(f"SELECT DISTINCT category FROM {view}").fetchall()
            assert found == [(category,)]


def _ingest_texts(store: esa.EventStore, stream: str, texts: list[str]) -> None:
    """Ingest raw JSON payload texts of one stream of category ``acct`` as one file."""
    store.ingest(
        pa.table(
            {
                "stream_id": [stream] * len(texts),
                "category": ["acct"] * len(texts),
                "event_type": ["Noted"] * len(texts),
                "data": texts,
                "metadata": ["{}"] * len(texts),
            }
        )
    )


#: Numbers whose text DuckDB's ``data->>'$.f'`` and ``from_json(data, ...)`` write apart
#: (``1e-7`` and ``1e-07``, ``100000000000000000000.0`` and ``1e+20``).
ODD = ["1.0e-7", "100000000000000000000.0", "1.7976931348623157e308", "2.5E-10", "1e21"]


def test_a_field_read_as_text_is_the_text_of_data_arrow_arrow_in_every_reader(
    store: esa.EventStore,
) -> None:
    """``data("f")`` is ``TRY_CAST(data->>'$.f' AS VARCHAR)``: a twin stores that text, so
    the JSON reads (files without twins, the unsealed tail, ``typed=False``) must give it
    too, not the other spelling of the same double that ``from_json`` writes."""
    from esanalytics.projections import Last, Projection, data

    texts = [f'{{"f": {v}}}' for v in ODD]
    for i, text in enumerate(texts):
        _ingest_texts(store, f"s-{i}", [text])
    store.compact()  # one twinned file
    for i, text in enumerate(texts):  # the same texts in a file without a twin
        _ingest_texts(store, f"t-{i}", [text])
    store.append("u-0", [esa.NewEvent("Noted", {"f": 1e-7})], category="acct")  # the tail
    assert any(e.typed is not None for e in store.files())
    projection = Projection("p", {"f": Last(data("f"), on=["Noted"])}, category="acct")
    expected = dict(
        Session(store, typed=False)
        .sql("SELECT stream_id, arg_max(data->>'$.f', global_position) FROM events GROUP BY 1")
        .fetchall()
    )
    assert expected["s-0"] == "1e-7"
    for session in (Session(store), Session(store, typed=False)):
        state = {r[0]: r[1] for r in projection.state(session).fetchall()}
        assert state == expected
        view = dict(session.sql("SELECT stream_id, f FROM events_acct").fetchall())
        assert view == expected


@settings(max_examples=60)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False).map(repr),
            st.integers(-(10**25), 10**25).map(str),
            st.tuples(st.integers(-(10**6), 10**6), st.integers(-40, 40)).map(
                lambda t: f"{t[0]}e{t[1]}"
            ),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_a_projection_reads_each_number_as_the_text_data_arrow_arrow_gives(
    numbers: list[str],
) -> None:
    """Any JSON number: a projection's JSON read of ``data("f")`` is the text of
    ``data->>'$.f'``, which is what a twin stores."""
    from esanalytics.projections import Last, Projection, data

    texts = [f'{{"f": {n}}}' for n in numbers]
    events = pa.table(
        {
            "global_position": pa.array(range(1, len(texts) + 1), pa.int64()),
            "stream_id": [f"s-{i}" for i in range(len(texts))],
            "category": ["acct"] * len(texts),
            "event_type": ["Noted"] * len(texts),
            "data": texts,
        }
    )
    projection = Projection("p", {"f": Last(data("f"), on=["Noted"])}, category="acct")
    con = duckdb.connect()
    con.register("ev", events)
    read = dict(con.sql(f"SELECT key, f FROM ({projection.aggregate_sql('ev')})").fetchall())
    expected = dict(con.sql("SELECT stream_id, data->>'$.f' FROM ev").fetchall())
    assert read == expected
