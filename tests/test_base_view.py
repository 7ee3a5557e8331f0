"""``events_base``: the rows of ``events`` with only the columns of types and times, read from
the typed twins where files have them, and the questions that read only those columns
(activity, spike days, variants, back-dated and after-hours exceptions) answer as they do
over ``events``, on a lake with twinned files, a file without a twin and an unsealed tail,
at position, system-time and valid-time cuts."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import esanalytics as esa
from esanalytics import questions
from esanalytics.audit import Scope, audit_exceptions
from esanalytics.engine import TYPED_BASE, Session

START = datetime(2024, 1, 29, tzinfo=UTC)
#: Asks for every event over ``events`` (metadata is not a column of ``events_base``).
ALL_EVENTS = "metadata IS NOT NULL"


def _batch(store: esa.EventStore, first: int, count: int) -> None:
    """Ingest ``count`` events recorded 7 hours apart from event ``first`` on (across month
    ends), some back-dated by up to 3 days, in two categories."""
    numbers = range(first, first + count)
    recorded = [START + timedelta(hours=7 * n) for n in numbers]
    store.ingest(
        pa.table(
            {
                "stream_id": [f"{'acct' if n % 3 else 'ord'}-{n % 5}" for n in numbers],
                "category": ["acct" if n % 3 else "ord" for n in numbers],
                "event_type": [("Opened", "Moved", "Closed")[n % 4 % 3] for n in numbers],
                "data": [json.dumps({"amount": n}) for n in numbers],
                "metadata": [json.dumps({"actor": f"a{n % 2}"}) for n in numbers],
                "recorded_at": pa.array(recorded, pa.timestamp("us", "UTC")),
                "occurred_at": pa.array(
                    [
                        r - timedelta(hours=n % 4 * 20)
                        for n, r in zip(numbers, recorded, strict=True)
                    ],
                    pa.timestamp("us", "UTC"),
                ),
            }
        )
    )


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two compacted (twinned) batches, one ingested file without a twin, an unsealed tail."""
    path = tmp_path_factory.mktemp("base") / "lake"
    store = esa.open(path, create=True)
    _batch(store, 0, 150)
    _batch(store, 150, 150)
    store.compact()
    _batch(store, 300, 60)
    store.append("ord-9", [esa.NewEvent("Opened", {"amount": 1}), esa.NewEvent("Moved", {})])
    snapshot = store.snapshot()
    assert any(snapshot.twins)
    assert None in snapshot.twins
    assert snapshot.tail.num_rows == 2
    return path


def _rows(session: Session, query: str) -> list[tuple[Any, ...]]:
    return session.sql(query).fetchall()


CUTS = st.fixed_dictionaries(
    {},
    optional={
        "position": st.integers(0, 365),
        "as_of": st.sampled_from(
            [START + timedelta(days=d, hours=h) for d in (0, 30, 60, 90, 900) for h in (0, 13)]
        ),
        "valid_at": st.sampled_from([START + timedelta(days=d) for d in (3, 40, 88, 900)]),
    },
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=CUTS)
def test_base_questions_answer_as_over_events(lake: Path, cut: dict[str, Any]) -> None:
    with Session(esa.open(lake), **cut) as session:
        base = ", ".join(TYPED_BASE)
        assert _rows(session, f"SELECT {base} FROM events_base ORDER BY global_position") == _rows(
            session, f"SELECT {base} FROM events ORDER BY global_position"
        )
        assert session.base_source() == "events_base"
        assert session.base_source("month > '2024-02'") == "events_base"
        assert session.base_source(ALL_EVENTS) == "events"
        for by in ("hour", "week"):
            for axis in ("system", "valid"):
                fast = questions.activity(session, by=by, axis=axis).fetchall()  # type: ignore[arg-type]
                slow = questions.activity(session, by=by, axis=axis, where=ALL_EVENTS)  # type: ignore[arg-type]
                assert fast == slow.fetchall()
        for factor in (0.5, 1.0, 1.5):
            fast = questions.spike_days(session, factor=factor).fetchall()
            assert fast == questions.spike_days(session, factor=factor, where=ALL_EVENTS).fetchall()
        # variants: a plain fold of each stream's types in version order
        events = _rows(session, "SELECT stream_id, version, event_type, category FROM events")
        for category in (None, "acct", "ord"):
            paths: dict[str, list[tuple[int, str]]] = defaultdict(list)
            for stream, version, kind, cat in events:
                if category in (None, cat):
                    paths[stream].append((version, kind))
            counted = Counter(tuple(k for _, k in sorted(p)) for p in paths.values())
            got = questions.variants(session, category=category).fetchall()
            assert {tuple(v): n for v, _, n, _, _ in got} == dict(counted)
        # back-dated and after-hours: a plain walk over events
        scope = Scope("period", start="2024-01-01", end="2030-01-01")
        walked = set()
        for position, occurred, recorded in _rows(
            session, "SELECT global_position, occurred_at, recorded_at FROM events"
        ):
            if recorded.year >= 2030:
                continue
            if recorded - occurred > timedelta(days=1):
                walked.add(("back_dated", position))
            hour = recorded.astimezone(UTC).hour
            if hour < 8 or hour >= 19:
                walked.add(("after_hours", position))
        got = audit_exceptions(session, scope, kinds=["back_dated", "after_hours"]).to_pylist()
        assert {(r["kind"], r["global_position"]) for r in got} == walked
        for r in got:  # the metadata of these very rows (the tail's has no actor)
            position = r["global_position"]
            assert r["actor"] == (f"a{(position - 1) % 2}" if position <= 360 else None)
        # an actor's scope names metadata, so it reads events: the same rows of that actor
        # (within the period)
        actor = audit_exceptions(session, Scope("actor", "a0"), kinds=["back_dated", "after_hours"])
        assert [r for r in got if r["actor"] == "a0"] == [
            r for r in actor.to_pylist() if r["global_position"] in {p for _, p in walked}
        ]


def test_a_category_named_base_leaves_events_base_alone(store: esa.EventStore) -> None:
    store.append("base-1", [esa.NewEvent("Noted", {"amount": 1})], category="base")
    store.compact()
    assert any(store.snapshot().twins)
    with Session(store) as session:
        assert "base" not in session.category_views
        columns = [row[0] for row in _rows(session, "DESCRIBE events_base")]
        assert columns == list(TYPED_BASE)
