"""``events_<category>``: one typed column per payload field, whose type holds every event's
JSON value exactly (twins that disagree, files without twins and the unsealed tail
included), cut like ``events``, in Python sessions and in ``esa sql``."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import esanalytics as esa
from esanalytics.engine import Session, query_error
from tests.conftest import run_esa
from tests.projections.test_typed_reads import assert_exact


def _ingest(store: esa.EventStore, rows: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Ingest (stream, category, payload) rows as one file."""
    store.ingest(
        pa.table(
            {
                "stream_id": [r[0] for r in rows],
                "category": [r[1] for r in rows],
                "event_type": ["Noted"] * len(rows),
                "data": [json.dumps(r[2]) for r in rows],
                "metadata": ["{}"] * len(rows),
            }
        )
    )


@pytest.fixture
def mixed(store: esa.EventStore) -> esa.EventStore:
    """Twins of one file (compacted), a file without a twin, and the unsealed tail, whose
    fields disagree: amount is a decimal of scale 2, then an integer, then scale 3; code is a
    number, then text; flag a boolean; stream_id a payload field named like a column."""
    _ingest(store, [
        ("acct-1", "acct", {"amount": 1.25, "code": 7, "flag": True, "stream_id": "x"}),
        ("acct-2", "acct", {"amount": 10, "code": 8, "flag": False}),
        ("all-1", "all", {"amount": 1}),  # events_all is taken: no view for this one
    ])  # fmt: skip
    store.compact()
    _ingest(store, [("acct-1", "acct", {"amount": 123456789012345678, "code": "A-7"})])
    store.append("acct-3", [esa.NewEvent("Noted", {"amount": 0.125, "late": "yes"})])
    return store


def types_of(session: Session) -> dict[str, str]:
    """The column types of ``events_acct``."""
    return {name: kind for name, kind, *_ in session.sql("DESCRIBE events_acct").fetchall()}


def test_a_view_per_category_with_one_exact_type_per_field(mixed: esa.EventStore) -> None:
    session = Session(mixed)
    assert session.category_views == {"acct": "events_acct"}
    kinds = types_of(session)
    assert {k: kinds[k] for k in ("amount", "code", "flag", "late", "data.stream_id")} == {
        "amount": "DECIMAL(21,3)",  # 18 digits of integer beside 3 of scale
        "code": "VARCHAR",
        "flag": "BOOLEAN",
        "late": "VARCHAR",
        "data.stream_id": "VARCHAR",  # the payload's, beside the event's own stream_id
    }
    rows = session.sql("SELECT stream_id, amount FROM events_acct ORDER BY global_position")
    assert rows.fetchall() == [
        ("acct-1", Decimal("1.25")),
        ("acct-2", Decimal("10")),
        ("acct-1", Decimal("123456789012345678")),
        ("acct-3", Decimal("0.125")),
    ]
    assert_exact(session, "events_acct", "acct")
    json_only = Session(mixed, typed=False)
    query = "SELECT * FROM events_acct ORDER BY global_position"
    assert session.sql(query).fetchall() == json_only.sql(query).fetchall()
    assert session.sql("SELECT count(*) FROM events_all").fetchall() == [(5,)]  # not replaced


def test_the_view_is_cut_like_events(mixed: esa.EventStore) -> None:
    first = Session(mixed, position=2)
    assert first.sql("SELECT count(*) FROM events_acct").fetchall() == [(2,)]
    assert types_of(first)["amount"] == "DECIMAL(18,2)"  # only the twin's events
    assert Session(mixed, position=1).sql("SELECT stream_id FROM events_acct").fetchall() == [
        ("acct-1",)
    ]  # a file that holds events beyond the session's position
    recorded = first.sql("SELECT max(recorded_at) FROM events").fetchall()[0][0]
    then = Session(mixed, as_of=recorded)
    assert then.sql("SELECT count(*) FROM events_acct").fetchall() == [(2,)]


def test_a_session_for_the_toolkits_own_queries_has_no_views_and_the_same_answers(
    mixed: esa.EventStore,
) -> None:
    from esanalytics.projections import Last, Projection, data

    plain = Session(mixed, category_views=False)
    assert plain.category_views == {}
    assert not plain.sql("SELECT * FROM duckdb_views() WHERE view_name = 'events_acct'").fetchall()
    latest = Projection("latest", {"amount": Last(data("amount", "DOUBLE"), on=["Noted"])}, "acct")
    full = Session(mixed)
    assert latest.state(plain).fetchall() == latest.state(full).fetchall()


def test_a_lake_without_twins_has_no_views(store: esa.EventStore) -> None:
    store.append("acct-1", [esa.NewEvent("Noted", {"amount": 1})])
    assert Session(store).category_views == {}


def test_esa_sql_reads_the_views_and_the_hint_names_them(mixed: esa.EventStore, lake: Path) -> None:
    done = run_esa("sql", str(lake), "SELECT sum(amount) AS total FROM events_acct", check=True)
    assert "123456789012345689.375" in done.stdout.replace(",", "")
    session = Session(mixed)
    for query in ("SELECT nothing FROM events", "SELECT * FROM events_nothing"):
        try:
            session.sql(query)
        except Exception as error:
            explained = query_error(error)
            assert explained is not None
            assert "events_<category>" in str(explained.hint)
        else:
            raise AssertionError(query)


def test_fields_that_differ_only_in_case_stay_in_the_json(store: esa.EventStore) -> None:
    _ingest(store, [("acct-1", "acct", {"Amount": 1, "amount": 2, "code": 3})])
    store.compact()
    session = Session(store)
    assert list(types_of(session))[8:] == ["code"]
    assert session.sql("SELECT code FROM events_acct").fetchall() == [(3,)]
    json_only = Session(store, typed=False)
    assert json_only.sql("SELECT code FROM events_acct").fetchall() == [(3,)]
