"""Audit exceptions equal a plain Python walk over the events: back-dated, after hours (UTC
hours at the edges) and self-approved, including metadata whose keys JSON escapes, which a
text search for ``approved_by`` alone would miss."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

import esanalytics as esa
from esanalytics.audit import Scope, audit_exceptions
from esanalytics.audit.exceptions import KINDS
from esanalytics.engine import Session
from esanalytics.exceptions import ValidationError

START = datetime(2024, 3, 4, tzinfo=UTC)


def test_each_kind_equals_a_plain_walk(tmp_path: Path) -> None:
    metadata = [
        {"actor": "ann", "approved_by": "ann"},
        '{"actor": "bob", "approved\\u005fby": "bob"}',  # the same key, escaped
        '{"\\u0061ctor": "cy", "approved_by": "cy"}',
        {"actor": "dee", "approved_by": "eve"},
        {"actor": "fay"},
        {"actor": "gus", "note": "approved_by nobody"},
    ]
    hours = [7, 8, 18, 19, 23, 0]
    recorded = [START + timedelta(days=i, hours=h, minutes=59 if h in (7, 18) else 0)
                for i, h in enumerate(hours)]  # fmt: skip
    back = [timedelta(days=2), timedelta(0), timedelta(days=1), timedelta(days=1, seconds=1),
            timedelta(0), timedelta(days=30)]  # fmt: skip
    store = esa.open(tmp_path / "lake", create=True)
    store.ingest(
        pa.table(
            {
                "stream_id": [f"thing-{i}" for i in range(len(metadata))],
                "event_type": ["Noted"] * len(metadata),
                "data": ["{}"] * len(metadata),
                "metadata": [m if isinstance(m, str) else json.dumps(m) for m in metadata],
                "recorded_at": pa.array(recorded, pa.timestamp("us", "UTC")),
                "occurred_at": pa.array(
                    [r - b for r, b in zip(recorded, back, strict=True)], pa.timestamp("us", "UTC")
                ),
            }
        )
    )
    got = audit_exceptions(
        Session(esa.open(tmp_path / "lake")), Scope("period", start="2024-01-01", end="2025-01-01")
    ).to_pylist()
    expected = set()
    for position, (meta, at, late) in enumerate(zip(metadata, recorded, back, strict=True), 1):
        parsed = meta if isinstance(meta, dict) else json.loads(meta)
        if late > timedelta(days=1):
            expected.add(("back_dated", position))
        if at.hour < 8 or at.hour >= 19:
            expected.add(("after_hours", position))
        if parsed.get("approved_by") is not None and parsed.get("approved_by") == parsed.get(
            "actor"
        ):
            expected.add(("self_approved", position))
    assert {(r["kind"], r["global_position"]) for r in got} == expected
    assert {("self_approved", 2), ("self_approved", 3)} <= expected  # escaped keys count


def test_kinds_picks_the_questions_asked(sample_lake: Path) -> None:
    session = Session(esa.open(sample_lake))
    scope = Scope("period", start="2024-01-01", end="2024-06-01")
    every = audit_exceptions(session, scope).to_pylist()
    assert {r["kind"] for r in every} == set(KINDS)
    for kind in KINDS:
        alone = audit_exceptions(session, scope, kinds=[kind]).to_pylist()
        assert alone == [r for r in every if r["kind"] == kind]
    both = audit_exceptions(session, scope, kinds=["segregation", "back_dated"]).to_pylist()
    assert both == [r for r in every if r["kind"] in ("segregation", "back_dated")]
    assert audit_exceptions(session, scope, kinds=["segregation"], rules=()).num_rows == 0
    with pytest.raises(ValidationError, match="'late'") as caught:
        audit_exceptions(session, scope, kinds=["late"])
    assert "Hint: choose among back_dated, after_hours" in str(caught.value)
