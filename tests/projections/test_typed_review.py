"""A second reading of the typed-twins read side: cases where an answer read through the
twins (or the ``events_<category>`` views) could differ from the answer read from the JSON
alone, each pinned by the smallest lake that showed it."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

import esanalytics as esa
from esanalytics.engine import Session


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
