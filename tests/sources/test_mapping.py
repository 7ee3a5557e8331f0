"""The mapping from a source's rows to events: detection, templates, paths, metadata, times.

Times are checked against Python's own zone and epoch arithmetic; the as-of answers of a log
whose source commit times go back are checked against a pandas computation of the documented
rule (as of S: the events whose running maximum of source commit times, in file order, is at
most S).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

import esanalytics as esa
from esanalytics.engine import Session
from tests.conftest import log_bytes
from tests.sources.test_file_sources import events_of


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def imported(tmp_path: Path, rows: list[dict[str, Any]], **options: Any) -> list[dict[str, Any]]:
    lake = tmp_path / "lake"
    esa.import_events(lake, write_jsonl(tmp_path / "src.jsonl", rows), create=True, **options)
    return events_of(lake)


def refused(tmp_path: Path, rows: list[dict[str, Any]], **options: Any) -> esa.SourceError:
    lake = tmp_path / "lake"
    esa.open(lake, create=True)
    before = log_bytes(lake)
    with pytest.raises(esa.SourceError) as caught:
        esa.import_events(lake, write_jsonl(tmp_path / "src.jsonl", rows), **options)
    assert log_bytes(lake) == before
    assert caught.value.hint
    return caught.value


# -- detection ----------------------------------------------------------------------------

SHAPES: list[tuple[dict[str, Any], dict[str, str], str | None]] = [
    (  # esanalytics' own names
        {"stream_id": "a-1", "event_type": "Opened", "occurred_at": "2025-01-01T00:00:00Z",
         "data": {"x": 1}},
        {"stream_id": "stream_id", "event_type": "event_type", "data": "data"}, "occurred_at",
    ),
    (  # EventStoreDB / Axon style
        {"aggregateId": "a-1", "eventType": "Opened", "timestamp": "2025-01-01T00:00:00Z",
         "payload": {"x": 1}, "eventId": "e-1"},
        {"stream_id": "aggregateId", "event_type": "eventType", "data": "payload",
         "event_id": "eventId"}, "timestamp",
    ),
    (  # a log shipper
        {"stream": "a-1", "type": "Opened", "ts": 1735689600, "body": {"x": 1},
         "actor": "ada", "correlationId": "c-1"},
        {"stream_id": "stream", "event_type": "type", "data": "body", "metadata.actor": "actor",
         "metadata.correlation_id": "correlationId"}, "ts",
    ),
    (  # canonical name wins over the others
        {"stream_id": "a-1", "stream": "b-1", "event_type": "Opened", "type": "x", "event": "y"},
        {"stream_id": "stream_id", "event_type": "event_type"}, None,
    ),
]  # fmt: skip


@pytest.mark.parametrize(("row", "want", "time"), SHAPES)
def test_detected_from_common_shapes(
    tmp_path: Path, row: dict[str, Any], want: dict[str, str], time: str | None
) -> None:
    lake = tmp_path / "lake"
    summary = esa.import_events(lake, write_jsonl(tmp_path / "s.jsonl", [row]), create=True)
    for role, field in want.items():
        assert summary.mapping.fields[role] == field
    assert (summary.mapping.occurred_at.path if summary.mapping.occurred_at else None) == time
    (event,) = events_of(lake)
    assert event["stream_id"] == row[want["stream_id"]]
    assert event["event_type"] == row[want["event_type"]]
    if "data" in want:
        assert event["data"] == row[want["data"]]
    if "metadata.actor" in want:
        assert event["metadata"]["actor"] == "ada"
        assert event["metadata"]["correlation_id"] == "c-1"
    if time == "ts":
        assert event["occurred_at"] == datetime(2025, 1, 1, tzinfo=UTC)


def test_ambiguous_type_names_both_with_a_hint(tmp_path: Path) -> None:
    error = refused(tmp_path, [{"stream": "a-1", "type": "Opened", "event": "Opened"}])
    assert "type" in error.problem
    assert "event" in error.problem
    assert "event_type" in error.problem
    assert "--map event_type=type" in (error.hint or "")
    # saying which settles it
    (tmp_path / "ok").mkdir()
    events = imported(tmp_path / "ok", [{"stream": "a-1", "type": "A", "event": "B"}],
                      mapping={"event_type": "event"})  # fmt: skip
    assert events[0]["event_type"] == "B"
    assert events[0]["data"] == {"type": "A"}


def test_unknown_stream_lists_the_fields(tmp_path: Path) -> None:
    error = refused(tmp_path, [{"account": "1", "kind": "Opened", "amount": 5}])
    assert "stream_id" in error.problem
    for field in ("account", "kind", "amount"):
        assert field in error.problem
    assert "--map stream_id=" in (error.hint or "")


def test_templates_dotted_paths_and_metadata(tmp_path: Path) -> None:
    rows = [
        {
            "payload": {"account": {"id": 7, "region": "eu"}, "amount": 5},
            "kind": "Deposited",
            "who": {"name": "ada"},
            "why": "salary",
            "corr": "c-9",
        }
    ]
    events = imported(
        tmp_path,
        rows,
        mapping={
            "stream_id": "account-{payload.account.region}-{payload.account.id}",
            "event_type": "kind",
            "data": "payload",
            "metadata.actor": "who.name",
            "metadata.reason": "why",
            "metadata.correlation_id": "corr",
            "category": "ledger-{payload.account.region}",
        },
    )
    (event,) = events
    assert event["stream_id"] == "account-eu-7"
    assert event["category"] == "ledger-eu"
    assert event["event_type"] == "Deposited"
    assert event["data"] == rows[0]["payload"]
    assert event["metadata"] == {"actor": "ada", "reason": "salary", "correlation_id": "c-9"}


def test_category_field_missing_on_a_row_is_a_bad_row(tmp_path: Path) -> None:
    error = refused(
        tmp_path,
        [{"stream": "a-1", "type": "A", "ledger": "x"}, {"stream": "a-1", "type": "A"}],
        mapping={"category": "ledger"},
    )
    assert error.where == "src.jsonl:2"
    assert "no category (ledger)" in error.problem


def test_template_with_a_missing_field_is_a_bad_row(tmp_path: Path) -> None:
    error = refused(
        tmp_path,
        [{"acct": 1, "kind": "A"}, {"kind": "A"}],
        mapping={"stream_id": "account-{acct}", "event_type": "kind"},
    )
    assert error.where == "src.jsonl:2"
    assert "account-{acct}" in error.problem


@pytest.mark.parametrize(
    "value", [{"amount": 5, "tags": ["a"]}, json.dumps({"amount": 5, "tags": ["a"]})]
)
def test_data_field_holding_an_object_or_its_json_text(tmp_path: Path, value: Any) -> None:
    (event,) = imported(tmp_path, [{"stream": "a-1", "type": "T", "data": value}])
    assert event["data"] == {"amount": 5, "tags": ["a"]}


def test_data_field_holding_text_that_is_not_an_object(tmp_path: Path) -> None:
    """A field named like a payload that holds plain text (an e-mail's body) is not taken
    for the payload: it stays a field of it. Mapped on purpose, it is a bad row."""
    rows = [{"stream": "mail-1", "type": "Sent", "body": "hello", "meta": "x", "to": "ada"}]
    (event,) = imported(tmp_path, rows)
    assert event["data"] == {"body": "hello", "meta": "x", "to": "ada"}
    assert event["metadata"] == {}
    (tmp_path / "mapped").mkdir()
    error = refused(tmp_path / "mapped", [{"stream": "a-1", "type": "T", "data": "just words"}],
                    mapping={"data": "data"})  # fmt: skip
    assert error.where == "src.jsonl:1"
    assert "payload" in error.problem


def test_metadata_field_as_json_text_merged_with_named_keys(tmp_path: Path) -> None:
    (event,) = imported(
        tmp_path,
        [{"stream": "a-1", "type": "T", "meta": json.dumps({"ip": "1.2.3.4"}), "actor": "bob"}],
    )
    assert event["metadata"] == {"ip": "1.2.3.4", "actor": "bob"}


def test_any_key_stays_in_the_payload(tmp_path: Path) -> None:
    """Keys JSON allows but paths trip on (empty, quotes, backslashes, dots, '$') stay in the
    payload as they are, with nulls and order kept."""
    row = {"stream": "a-1", "type": "T", 'a"b': 1, "a'b": 2, "a\\b": 3, "a.b": 4, "": 5,
           "ü": 6, "$": 7, "a b": None, "[0]": [None], "*": {"x": None}}  # fmt: skip
    (event,) = imported(tmp_path, [row])
    expected = {k: v for k, v in row.items() if k not in ("stream", "type")}
    assert event["data"] == expected
    assert list(event["data"]) == list(expected)


def test_bad_strptime_format_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "s.jsonl", [{"stream": "a-1", "type": "T", "w": "x"}])
    with pytest.raises(esa.SourceError) as caught:
        esa.import_events(tmp_path / "lake", source, create=True, occurred_at="w:%Q", zone="UTC")
    assert "%Q" in caught.value.problem
    assert caught.value.hint
    assert not (tmp_path / "lake").exists()


def test_bad_mapping_options(tmp_path: Path) -> None:
    for pairs in (["stream=acct"], ["stream_id"], ["event_id={x}-y"]):
        with pytest.raises(esa.SourceError) as caught:
            esa.ImportMapping.parse(pairs)
        assert caught.value.hint


# -- occurred times -----------------------------------------------------------------------


def test_iso_times_with_zones(tmp_path: Path) -> None:
    stamps = ["2025-03-01T09:30:00Z", "2025-03-01T09:30:00+01:00", "2025-03-01 09:30:00.123-05:30",
              "2025-03-01T09:30:00.5+0200"]  # fmt: skip
    events = imported(tmp_path, [{"stream": "a-1", "type": "T", "at": s} for s in stamps],
                      occurred_at="at")  # fmt: skip
    want = [pd.Timestamp(s).tz_convert("UTC").to_pydatetime() for s in stamps]
    assert [e["occurred_at"] for e in events] == want


def test_naive_time_refused_with_a_timezone_hint(tmp_path: Path) -> None:
    error = refused(tmp_path, [{"stream": "a-1", "type": "T", "time": "2025-03-01T09:30:00"}])
    assert error.where == "src.jsonl:1"
    assert "no time zone" in error.problem
    assert "--timezone" in (error.hint or "")


def test_naive_times_read_in_a_zone_across_daylight_saving(tmp_path: Path) -> None:
    stamps = ["2025-01-15T12:00:00", "2025-07-15T12:00:00", "2025-03-30T01:59:59",
              "2025-03-30T03:00:00", "2025-10-26T03:30:00"]  # fmt: skip
    rows = [{"stream": "a-1", "type": "T", "time": s} for s in stamps]
    events = imported(tmp_path, rows, zone="Europe/Berlin")
    berlin = ZoneInfo("Europe/Berlin")
    want = [datetime.fromisoformat(s).replace(tzinfo=berlin).astimezone(UTC) for s in stamps]
    assert [e["occurred_at"] for e in events] == want
    assert events[0]["occurred_at"].hour == 11  # CET, +01:00
    assert events[1]["occurred_at"].hour == 10  # CEST, +02:00


@pytest.mark.parametrize("zone", ["Mars/Olympus", "+02:00", ""])
def test_unknown_zone_is_refused_before_anything_is_made(tmp_path: Path, zone: str) -> None:
    source = write_jsonl(tmp_path / "s.jsonl", [{"stream": "a-1", "type": "T", "t": "2025-01-01"}])
    with pytest.raises(esa.SourceError) as caught:
        esa.import_events(tmp_path / "lake", source, create=True, zone=zone or " ")
    assert "not a time zone" in caught.value.problem
    assert "Europe/Berlin" in (caught.value.hint or "")
    assert not (tmp_path / "lake").exists()


EPOCH = datetime(2025, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "spec"),
    [
        (1735689600.25, None),
        (1735689600250, None),
        (1735689600250000, None),
        (1735689600.25, "ts:epoch_s"),
        (1735689600250, "ts:epoch_ms"),
        (1735689600250000, "ts:epoch_us"),
        ("1735689600250", "ts:epoch_ms"),
        (1735689600250, "ts"),  # named without a format: numbers are epoch, by size
        (1735689600.25, "ts"),
    ],
)
def test_epoch_times_by_size_and_explicit(tmp_path: Path, value: Any, spec: str | None) -> None:
    options = {"occurred_at": spec} if spec else {}
    (event,) = imported(tmp_path, [{"stream": "a-1", "type": "T", "ts": value}], **options)
    assert event["occurred_at"] == EPOCH


@pytest.mark.parametrize(("value", "spec"), [(1e20, None), (1e300, "ts:epoch_s")])
def test_epoch_out_of_range_is_a_bad_row(tmp_path: Path, value: float, spec: str | None) -> None:
    rows = [
        {"stream": "a-1", "type": "T", "ts": 1735689600},
        {"stream": "a-1", "type": "T", "ts": value},
    ]
    if spec is None:
        rows = rows[::-1]  # detected from the first row's size: microseconds
    options = {"occurred_at": spec} if spec else {}
    error = refused(tmp_path, rows, **options)
    assert error.where == ("src.jsonl:2" if spec else "src.jsonl:1")
    assert "out of range" in error.problem
    lake = tmp_path / "skip"
    write_jsonl(tmp_path / "src.jsonl", rows)
    summary = esa.import_events(
        lake, tmp_path / "src.jsonl", create=True, on_error="skip", **options
    )
    assert summary.rejected == 1


def test_strptime_format_with_a_zone(tmp_path: Path) -> None:
    rows = [{"stream": "a-1", "type": "T", "when": "31/12/2024 23:15"},
            {"stream": "a-1", "type": "T", "when": "01/07/2025 08:00"}]  # fmt: skip
    events = imported(tmp_path, rows, occurred_at="when:%d/%m/%Y %H:%M", zone="Europe/Berlin")
    assert [e["occurred_at"] for e in events] == [
        datetime(2024, 12, 31, 22, 15, tzinfo=UTC),
        datetime(2025, 7, 1, 6, 0, tzinfo=UTC),
    ]
    (tmp_path / "bad").mkdir()
    error = refused(tmp_path / "bad", [{"stream": "a-1", "type": "T", "when": "2025-07-01"}],
                    occurred_at="when:%d/%m/%Y %H:%M", zone="UTC")  # fmt: skip
    assert "%d/%m/%Y %H:%M" in error.problem


def test_no_time_field_occurred_is_the_commit_time(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    (event,) = imported(tmp_path, [{"stream": "a-1", "type": "T"}])
    assert event["occurred_at"] == event["recorded_at"]
    assert before - timedelta(seconds=1) <= event["recorded_at"] <= datetime.now(UTC)


# -- recorded times: clamped, and as-of answers ---------------------------------------------


def test_recorded_times_going_back_are_clamped_and_as_of_equals_pandas(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    n = 400
    base = datetime(2025, 5, 1, tzinfo=UTC)
    # a mostly increasing commit clock with skew of up to +-90 s between servers
    seconds = np.cumsum(rng.integers(0, 30, n)) + rng.integers(-90, 90, n)
    recorded = [base + timedelta(seconds=int(s)) for s in seconds]
    rows = [
        {"stream": f"a-{i % 9}", "type": "T", "committed_at": r.isoformat(), "data": {"i": i}}
        for i, r in enumerate(recorded)
    ]
    lake = tmp_path / "lake"
    summary = esa.import_events(lake, write_jsonl(tmp_path / "skew.jsonl", rows), create=True)
    assert summary.mapping.recorded_at is not None
    assert summary.mapping.recorded_at.path == "committed_at"
    events = events_of(lake)
    assert [e["data"]["i"] for e in events] == list(range(n))  # file order kept

    frame = pd.DataFrame(
        {"i": range(n), "source": pd.to_datetime([r.isoformat() for r in recorded])}
    )
    frame["lake"] = frame["source"].cummax()
    assert [pd.Timestamp(e["recorded_at"]) for e in events] == frame["lake"].tolist()
    moved = frame["lake"] != frame["source"]
    assert moved.sum() > 20  # the test has skew to show
    for e, (_, row) in zip(events, frame.iterrows(), strict=True):
        if row["lake"] != row["source"]:
            assert pd.Timestamp(e["metadata"]["source_recorded_at"]) == row["source"]
        else:
            assert "source_recorded_at" not in e["metadata"]

    store = esa.open(lake)
    cuts = [
        frame["source"].min() - pd.Timedelta(seconds=1),
        *frame["source"].sample(25, random_state=1),
    ]
    for cut in cuts:
        want = frame.loc[frame["lake"] <= cut, "i"].tolist()
        with Session(store, as_of=cut.to_pydatetime()) as session:
            got = session.sql("SELECT data->>'i' FROM events ORDER BY global_position").fetchall()
        assert [int(v) for (v,) in got] == want
        got = (
            Session(store)
            .sql("SELECT count(*) FROM events_as_of(?::TIMESTAMPTZ)", params=[cut.to_pydatetime()])
            .fetchall()
        )
        assert got == [(len(want),)]
        by_store = store.read_all(as_of=cut.to_pydatetime()).to_arrow()["data"].to_pylist()
        assert [json.loads(d)["i"] for d in by_store] == want


def test_recorded_time_in_the_future_is_clamped_to_now(tmp_path: Path) -> None:
    later = datetime.now(UTC) + timedelta(days=30)
    rows = [
        {"stream": "a-1", "type": "T", "recorded_at": "2025-01-01T00:00:00Z"},
        {"stream": "a-1", "type": "T", "recorded_at": later.isoformat()},
        {"stream": "a-1", "type": "T", "recorded_at": "2025-01-02T00:00:00Z"},
    ]
    before = datetime.now(UTC)
    events = imported(tmp_path, rows)
    assert events[0]["recorded_at"] == datetime(2025, 1, 1, tzinfo=UTC)
    assert before <= events[1]["recorded_at"] <= datetime.now(UTC)
    assert events[2]["recorded_at"] == events[1]["recorded_at"]
    assert pd.Timestamp(events[1]["metadata"]["source_recorded_at"]) == pd.Timestamp(later)
    assert pd.Timestamp(events[2]["metadata"]["source_recorded_at"]) == pd.Timestamp(
        "2025-01-02T00:00:00Z"
    )


def test_recorded_at_missing_on_a_row_is_named(tmp_path: Path) -> None:
    error = refused(
        tmp_path,
        [{"stream": "a-1", "type": "T", "recorded_at": "2025-01-01T00:00:00Z"},
         {"stream": "a-1", "type": "T"}],
    )  # fmt: skip
    assert error.where == "src.jsonl:2"
    assert "recorded_at" in error.problem
