"""Bugs found in a second reading of the import machinery (issue 13), each shown by a test
that failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

import esanalytics as esa
from esanalytics.sources import CsvSource


def _events(lake: Path) -> list[esa.Event]:
    return list(esa.open(lake).read_all())


def test_csv_follow_resumes_after_a_poll_that_saw_a_row_still_being_written(
    tmp_path: Path,
) -> None:
    source = tmp_path / "orders.csv"
    source.write_text("stream_id,event_type,n\norder-1,Placed,1\norder-2,Pla")  # row 2 half
    con = duckdb.connect()
    first = list(CsvSource(source).read(None, con=con, follow=True))
    assert [b.rows for b in first] == [1]
    with open(source, "a") as handle:
        handle.write("ced,2\n")  # the writer finishes the row
    again = list(CsvSource(source).read(first[-1].cursor, con=con, follow=True))
    assert [json.loads(line)["stream_id"] for b in again for line in b.lines.to_pylist()] == [
        "order-2"
    ]


def test_a_metadata_field_that_is_not_an_object_is_refused_when_the_rows_have_ids(
    tmp_path: Path,
) -> None:
    lake, source = tmp_path / "lake", tmp_path / "e.jsonl"
    rows = [
        {"id": "7", "stream_id": "s-1", "event_type": "T", "metadata": {"actor": "ann"}},
        {"id": "8", "stream_id": "s-1", "event_type": "T", "metadata": "oops"},
    ]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(esa.SourceError, match=r"e\.jsonl:2: the metadata metadata is not a JSON"):
        esa.import_events(lake, source, create=True)
    assert not lake.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01 09:30:00 America/New_York", "2025-03-01T14:30:00+00:00"),
        ("2025-03-01 09:30:00 UTC", "2025-03-01T09:30:00+00:00"),
        ("2025-03-01T09:30:00 EST", "2025-03-01T14:30:00+00:00"),
    ],
)
def test_an_iso_time_with_a_zone_name_is_read_in_that_zone_not_in_the_default_one(
    tmp_path: Path, text: str, expected: str
) -> None:
    lake, source = tmp_path / "lake", tmp_path / "e.jsonl"
    source.write_text(json.dumps({"stream_id": "s-1", "event_type": "T", "at": text}) + "\n")
    esa.import_events(lake, source, create=True, occurred_at="at", zone="Europe/Berlin")
    (event,) = _events(lake)
    assert event.occurred_at.isoformat() == expected
    # and without a default zone it is read all the same (it has one)
    other = tmp_path / "other"
    esa.import_events(other, source, create=True, occurred_at="at")
    (event,) = _events(other)
    assert event.occurred_at.isoformat() == expected


@pytest.mark.parametrize("zone", ["posixrules", "localtime"])
def test_a_zone_duckdb_does_not_know_is_refused_before_the_lake_is_touched(
    tmp_path: Path, zone: str
) -> None:
    lake, source = tmp_path / "lake", tmp_path / "e.jsonl"
    source.write_text(
        json.dumps({"stream_id": "s-1", "event_type": "T", "at": "2025-03-01 09:30"}) + "\n"
    )
    with pytest.raises(esa.SourceError, match="is not a time zone"):
        esa.import_events(lake, source, create=True, occurred_at="at", zone=zone)
    assert not lake.exists()


def test_csv_columns_whose_names_hold_spaces_can_be_mapped(tmp_path: Path) -> None:
    lake, source = tmp_path / "lake", tmp_path / "export.csv"
    source.write_text(
        "Account ID,Event Type,Created At,Amount\n"
        "account-1,Deposited,2025-03-01 09:30:00,12\n"
        "account-1,Withdrawn,2025-03-02 10:00:00,5\n"
    )
    summary = esa.import_events(
        lake,
        source,
        mapping={"stream_id": "Account ID", "event_type": "Event Type"},
        occurred_at="Created At",
        zone="UTC",
        create=True,
    )
    assert summary.events == 2
    events = _events(lake)
    assert [(e.stream_id, e.event_type, e.data) for e in events] == [
        ("account-1", "Deposited", {"Amount": 12}),
        ("account-1", "Withdrawn", {"Amount": 5}),
    ]
    assert events[1].occurred_at.isoformat() == "2025-03-02T10:00:00+00:00"
    # and the CLI takes them as the Python API does
    again = tmp_path / "again"
    esa.import_events(again, source, mapping=esa.ImportMapping.parse(
        ["stream_id=Account ID", "event_type=Event Type"], occurred_at="Created At", zone="UTC"
    ), create=True)  # fmt: skip
    assert len(_events(again)) == 2


def test_a_nested_field_mapped_leaves_the_rest_of_its_object_in_the_payload(
    tmp_path: Path,
) -> None:
    lake, source = tmp_path / "lake", tmp_path / "orders.jsonl"
    rows = [
        {"order": {"id": 5, "total": 10, "lines": [1, 2]}, "kind": "Placed", "at": "x"},
        {"order": {"id": 6}, "kind": "Placed", "note": None},
        {"order": {"id": 7, "by": {"name": "ann", "team": "b"}}, "kind": "Placed"},
    ]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    esa.import_events(
        lake,
        source,
        mapping={
            "stream_id": "order-{order.id}",
            "event_type": "kind",
            "metadata.actor": "order.by.name",
        },
        create=True,
    )
    events = {e.stream_id: e for e in _events(lake)}
    assert events["order-5"].data == {"order": {"total": 10, "lines": [1, 2]}, "at": "x"}
    assert events["order-6"].data == {"order": {}, "note": None}
    assert events["order-7"].data == {"order": {"by": {"team": "b"}}}
    assert events["order-7"].metadata["actor"] == "ann"


def test_field_names_with_quotes_work_in_every_role(tmp_path: Path) -> None:
    lake, source = tmp_path / "lake", tmp_path / "e.jsonl"
    rows = [
        {"it's": "s-1", "ty'pe": "T", "o'clock": 1740821400, "rec'd": "2025-03-01T09:30:00Z",
         "v'": 2, 'say "hi"': "x"},
        {"it's": "s-1", "ty'pe": "T", "o'clock": "soon", "rec'd": "2025-03-01T09:31:00Z",
         "v'": 2, 'say "hi"': "y"},
        {"it's": "s-1", "ty'pe": "T", "o'clock": 1740821400, "rec'd": "2025-03-01T09:32:00Z",
         "v'": "two", 'say "hi"': "z"},
    ]  # fmt: skip
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = esa.import_events(
        lake,
        source,
        mapping={"stream_id": "it's", "event_type": "ty'pe", "schema_version": "v'"},
        occurred_at="o'clock:epoch_s",
        recorded_at="rec'd",
        on_error="skip",
        create=True,
    )
    assert (summary.events, summary.rejected) == (1, 2)
    (event,) = _events(lake)
    assert event.occurred_at.isoformat() == "2025-03-01T09:30:00+00:00"
    assert event.data == {'say "hi"': "x"}
    assert summary.rejects_path is not None
    reasons = [json.loads(line)["reason"] for line in summary.rejects_path.read_text().splitlines()]
    assert reasons == [
        'o\'clock "soon" is not a number of seconds since 1970',
        'v\' "two" is not a whole number',
    ]


def test_a_row_nested_too_deep_for_python_is_a_bad_row_not_a_crash(tmp_path: Path) -> None:
    lake, source = tmp_path / "lake", tmp_path / "e.jsonl"
    deep = '{"stream_id": "s-1", "event_type": "T", "x": ' + "[" * 5000 + "]" * 5000 + "}"
    source.write_text(deep + "\n" + json.dumps({"stream_id": "s-1", "event_type": "T"}) + "\n")
    summary = esa.import_events(lake, source, on_error="skip", create=True)
    assert (summary.events, summary.rejected) == (1, 1)
    assert summary.rejects_path is not None
    (reject,) = [json.loads(line) for line in summary.rejects_path.read_text().splitlines()]
    assert reject["where"] == "e.jsonl:1"


def test_a_fractional_schema_version_is_a_bad_row_not_rounded(tmp_path: Path) -> None:
    lake, source = tmp_path / "lake", tmp_path / "e.jsonl"
    rows = [{"stream_id": "s-1", "event_type": "T", "schema_version": v} for v in (1.5, 2, "3")]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = esa.import_events(lake, source, on_error="skip", create=True)
    assert (summary.events, summary.rejected) == (2, 1)
    assert [e.schema_version for e in _events(lake)] == [2, 3]
    assert summary.rejects_path is not None
    (reject,) = [json.loads(line) for line in summary.rejects_path.read_text().splitlines()]
    assert (reject["where"], reject["reason"]) == (
        "e.jsonl:1",
        'schema_version "1.5" is not a whole number',
    )


def test_rows_whose_id_is_empty_text_are_not_one_event(tmp_path: Path) -> None:
    lake, source = tmp_path / "lake", tmp_path / "e.jsonl"
    rows = [{"id": i, "stream_id": "s-1", "event_type": "T", "n": n}
            for n, i in enumerate(["", "", " ", "7", None])]  # fmt: skip
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = esa.import_events(lake, source, create=True)
    assert (summary.events, summary.already) == (5, 0)
    assert sorted(e.data["n"] for e in _events(lake)) == [0, 1, 2, 3, 4]
    # and a re-run under the same name writes none of them again
    assert esa.import_events(lake, source).events == 0


@pytest.mark.parametrize("cut", ["half", "not gzip"])
def test_a_gzip_file_cut_short_or_not_gzip_is_a_source_error(tmp_path: Path, cut: str) -> None:
    import gzip

    lake, source = tmp_path / "lake", tmp_path / "e.jsonl.gz"
    text = "".join(
        json.dumps({"stream_id": f"s-{i}", "event_type": "T", "pad": "x" * 40}) + "\n"
        for i in range(5000)
    )
    whole = gzip.compress(text.encode())
    source.write_bytes(whole[: len(whole) // 2] if cut == "half" else b"plain text\n")
    with pytest.raises(esa.SourceError) as caught:
        esa.import_events(lake, source, create=True)
    assert "e.jsonl.gz" in caught.value.problem
    assert "gzip" in caught.value.problem
    assert caught.value.hint
    assert not lake.exists()


def test_a_csv_file_that_is_not_utf8_says_so_not_that_a_row_does_not_fit(
    tmp_path: Path,
) -> None:
    lake, source = tmp_path / "lake", tmp_path / "latin1.csv"
    source.write_bytes("stream_id,event_type,name\ns-1,T,café\n".encode("latin-1"))
    with pytest.raises(esa.SourceError) as caught:
        esa.import_events(lake, source, create=True)
    assert "UTF-8" in caught.value.problem
    assert "does not fit its header" not in caught.value.problem
    assert "UTF-8" in (caught.value.hint or "")
    assert not lake.exists()


def test_a_row_the_store_refuses_is_named_by_its_place_in_the_source_only(
    tmp_path: Path,
) -> None:
    lake, source = tmp_path / "lake", tmp_path / "e.jsonl"
    rows = [{"stream_id": s, "event_type": "T"} for s in ("s-1", "s-2", "")]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(esa.SourceError) as caught:
        esa.import_events(lake, source, create=True)
    assert caught.value.problem.startswith("e.jsonl:3: The stream id '' is empty")
    assert "at row" not in caught.value.problem  # (row 2 of the batch: not the file's line 3)
    summary = esa.import_events(lake, source, create=True, on_error="skip")
    assert summary.rejects_path is not None
    (reject,) = [json.loads(line) for line in summary.rejects_path.read_text().splitlines()]
    assert reject["where"] == "e.jsonl:3"
    assert "at row" not in reject["reason"]


def test_a_first_follow_that_found_no_rows_does_not_speak_of_a_last_run(tmp_path: Path) -> None:
    import threading

    lake, source = tmp_path / "lake", tmp_path / "e.jsonl"
    source.write_text("")
    stop = threading.Event()
    stop.set()  # (stops after the first look)
    summary = esa.import_events(lake, source, create=True, follow=True, stop=stop)
    assert summary.events == 0
    assert "since the last run" not in str(summary)
    assert "no events yet" in str(summary)


@pytest.mark.parametrize("text", ["2025-03-01T09:30:00z", "2025-03-01t09:30:00z"])
def test_rfc3339_lower_case_t_and_z_are_read(tmp_path: Path, text: str) -> None:
    lake, source = tmp_path / "lake", tmp_path / "e.jsonl"
    source.write_text(json.dumps({"stream_id": "s-1", "event_type": "T", "at": text}) + "\n")
    esa.import_events(lake, source, create=True, occurred_at="at")
    (event,) = _events(lake)
    assert event.occurred_at.isoformat() == "2025-03-01T09:30:00+00:00"


def test_a_parquet_file_of_a_folder_that_is_not_parquet_is_a_source_error(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    lake, folder = tmp_path / "lake", tmp_path / "exports"
    folder.mkdir()
    pq.write_table(pa.table({"stream_id": ["s-1"], "event_type": ["T"]}), folder / "a.parquet")
    (folder / "b.parquet").write_bytes(b"PAR1 still being written")
    with pytest.raises(esa.SourceError) as caught:
        esa.import_events(lake, folder, create=True)
    assert "b.parquet" in caught.value.problem
    assert caught.value.hint
    assert not lake.exists()


@pytest.mark.parametrize("occurred_at", ["at", "at:%d.%m.%Y %H:%M"])
def test_a_local_time_in_a_daylight_saving_gap_is_a_bad_row(
    tmp_path: Path, occurred_at: str
) -> None:
    lake, source = tmp_path / "lake", tmp_path / "e.jsonl"
    times = (
        ["2025-03-30 01:59:00", "2025-03-30 02:30:00", "2025-03-30 03:00:00"]
        if occurred_at == "at"
        else ["30.03.2025 01:59", "30.03.2025 02:30", "30.03.2025 03:00"]
    )
    rows = [{"stream_id": "s-1", "event_type": "T", "at": t} for t in times]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = esa.import_events(
        lake, source, create=True, occurred_at=occurred_at, zone="Europe/Berlin", on_error="skip"
    )
    assert (summary.events, summary.rejected) == (2, 1)
    assert [e.occurred_at.isoformat() for e in _events(lake)] == [
        "2025-03-30T00:59:00+00:00",
        "2025-03-30T01:00:00+00:00",
    ]
    assert summary.rejects_path is not None
    (reject,) = [json.loads(line) for line in summary.rejects_path.read_text().splitlines()]
    assert reject["where"] == "e.jsonl:2"
    assert "does not exist in Europe/Berlin" in reject["reason"]


def test_a_source_moved_under_its_import_name_warns_that_a_new_name_imports_it_again(
    tmp_path: Path,
) -> None:
    lake, source = tmp_path / "lake", tmp_path / "orders.jsonl"
    source.write_text(json.dumps({"stream_id": "s-1", "event_type": "T"}) + "\n")
    esa.import_events(lake, source, create=True)
    moved = tmp_path / "moved"
    moved.mkdir()
    source.rename(moved / "orders.jsonl")
    with pytest.raises(esa.SourceError) as caught:
        esa.import_events(lake, moved / "orders.jsonl")
    hint = caught.value.hint or ""
    assert "from its start" in hint
    assert "twice" in hint
