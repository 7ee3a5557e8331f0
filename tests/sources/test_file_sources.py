"""File sources against an independent reading of the same file (pandas, plain DuckDB).

Each format is imported as a user would (``esa.import_events``), read back from the lake, and
compared field by field with what pandas or DuckDB read from the source: stream ids, types,
occurred times, payloads and order. Then re-runs (nothing written, byte for byte), growth
(only the new rows), and every kind of bad input (the lake unchanged, or an exact rejects
file with ``on_error="skip"``).
"""

from __future__ import annotations

import gzip
import json
import re
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import esanalytics as esa
from esanalytics.sources.importer import rejects_path
from tests.conftest import log_bytes

KINDS = ["Opened", "Deposited", "Withdrawn", "Closed"]


def events_of(lake: Path) -> list[dict[str, Any]]:
    """The lake's events in log order, with data and metadata parsed."""
    rows = esa.open(lake).read_all().to_arrow().to_pylist()
    for row in rows:
        row["data"] = json.loads(row["data"])
        row["metadata"] = json.loads(row["metadata"])
    return rows


def iso_utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert("UTC")


def write_jsonl(path: Path, rows: list[Any], *, compress: bool = False) -> None:
    text = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(text) if compress else text)


def sample_rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    """Rows as an export holds them: nested payloads, unicode, several streams, times with
    offsets other than UTC."""
    rows = []
    for i in range(start, start + n):
        rows.append(
            {
                "stream": f"account-{i % 7}",
                "type": KINDS[i % 4],
                "timestamp": f"2025-03-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:05+0{i % 3}:00",
                "data": {
                    "amount": i * 1.5 if i % 2 else i,
                    "owner": {"name": f"Zoë {i}", "tags": ["a", "b"][: i % 3]},
                    "note": None if i % 5 == 0 else f'say "hi" {i}',
                },
            }
        )
    return rows


# -- JSON Lines ---------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["export.jsonl", "export.ndjson", "export.jsonl.gz"])
def test_jsonl_round_trip_equals_pandas(tmp_path: Path, filename: str) -> None:
    source = tmp_path / filename
    rows = sample_rows(300)
    write_jsonl(source, rows, compress=filename.endswith(".gz"))
    lake = tmp_path / "lake"
    summary = esa.import_events(lake, source, create=True)
    assert summary.events == 300
    assert summary.streams == 7

    expected = pd.read_json(source, lines=True, dtype=False)
    got = events_of(lake)
    assert [e["global_position"] for e in got] == list(range(1, 301))
    assert [e["stream_id"] for e in got] == expected["stream"].tolist()
    assert [e["event_type"] for e in got] == expected["type"].tolist()
    assert [pd.Timestamp(e["occurred_at"]) for e in got] == [
        iso_utc(t) for t in expected["timestamp"]
    ]
    assert [e["data"] for e in got] == expected["data"].tolist()  # nested objects stay JSON
    # versions count per stream in file order
    seen: dict[str, int] = {}
    for e in got:
        seen[e["stream_id"]] = seen.get(e["stream_id"], 0) + 1
        assert e["version"] == seen[e["stream_id"]]


def test_jsonl_without_data_field_payload_is_the_other_fields(tmp_path: Path) -> None:
    """No data/payload/body field: the payload is the row minus the mapped fields, nested
    values kept as JSON."""
    source = tmp_path / "flat.jsonl"
    rows = [
        {"aggregateId": f"order-{i}", "eventType": "Placed", "occurredAt": "2025-01-01T00:00:00Z",
         "total": i, "lines": [{"sku": "x", "qty": i}], "customer": {"id": i}}
        for i in range(20)
    ]  # fmt: skip
    write_jsonl(source, rows)
    lake = tmp_path / "lake"
    summary = esa.import_events(lake, source, create=True)
    assert summary.mapping.fields["stream_id"] == "aggregateId"
    assert summary.mapping.fields["event_type"] == "eventType"
    expected = duckdb.sql(
        f"SELECT total, to_json(lines) AS lines, to_json(customer) AS customer "
        f"FROM read_json('{source}', format='newline_delimited')"
    ).fetchall()
    got = events_of(lake)
    assert [(e["data"]["total"], e["data"]["lines"], e["data"]["customer"]) for e in got] == [
        (t, json.loads(li), json.loads(c)) for t, li, c in expected
    ]
    assert all(set(e["data"]) == {"total", "lines", "customer"} for e in got)


# -- CSV ----------------------------------------------------------------------------------

_PLAIN_DECIMAL = re.compile(r"-?(0|[1-9][0-9]{0,14})(\.[0-9]{1,15})?")


def csv_cell(text: str) -> Any:
    """The rule CsvSource documents: a plain decimal is a number (not 007, not 1e5),
    true/false are booleans, empty is null, anything else is text."""
    if text == "":
        return None
    if _PLAIN_DECIMAL.fullmatch(text):
        return float(text) if "." in text else int(text)
    if text in ("true", "false"):
        return text == "true"
    return text


CSV_TEXT = (
    "stream,type,timestamp,amount,code,flag,note,big,sci\r\n"
    'account-1,Opened,2025-01-01T00:00:00Z,12,007,true,"plain, with comma",123456789012345,1e5\r\n'
    'account-2,Deposited,2025-01-02T00:00:00+02:00,-3.5,0,false,"line\nbreak",1234567890123456,-0\r\n'
    'account-1,Deposited,2025-01-03T00:00:00Z,,12.50,TRUE,"say ""hi""",0.5,.5\r\n'
    "account-3,Closed,2025-01-04T23:59:59Z,0,-12,False,Zoë ünïcödé,00,1.\r\n"
)


@pytest.mark.parametrize("bom", [False, True])
def test_csv_round_trip_equals_pandas_all_text(tmp_path: Path, bom: bool) -> None:
    """A CSV as Excel writes it (CRLF, optional BOM, quoted commas, newlines and quotes):
    the payload is the row minus the mapped columns, each cell by the documented rule."""
    source = tmp_path / "export.csv"
    source.write_bytes(("\ufeff" if bom else "").encode() + CSV_TEXT.encode())
    lake = tmp_path / "lake"
    summary = esa.import_events(lake, source, create=True)
    assert summary.events == 4
    expected = pd.read_csv(source, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    got = events_of(lake)
    assert [e["stream_id"] for e in got] == expected["stream"].tolist()
    assert [e["event_type"] for e in got] == expected["type"].tolist()
    assert [pd.Timestamp(e["occurred_at"]) for e in got] == [
        iso_utc(t) for t in expected["timestamp"]
    ]
    payload_columns = [c for c in expected.columns if c not in ("stream", "type", "timestamp")]
    want = [{c: csv_cell(row[c]) for c in payload_columns} for _, row in expected.iterrows()]
    assert [e["data"] for e in got] == want
    # the rule, spelled out on the cells that matter
    assert got[0]["data"]["code"] == "007"
    assert got[0]["data"]["sci"] == "1e5"
    assert got[0]["data"]["big"] == 123456789012345
    assert got[1]["data"]["big"] == "1234567890123456"
    assert got[2]["data"]["amount"] is None
    assert got[2]["data"]["flag"] == "TRUE"
    assert got[1]["data"]["note"] == "line\nbreak"


def test_csv_matches_duckdb_read_csv_all_varchar(tmp_path: Path) -> None:
    source = tmp_path / "many.csv"
    frame = pd.DataFrame(
        {
            "account_id": [str(i % 11) for i in range(500)],
            "kind": [KINDS[i % 4] for i in range(500)],
            "when": [f"2025-02-{1 + i % 28:02d} 10:00:00+00:00" for i in range(500)],
            "amount": [str(i * 7 % 1000) for i in range(500)],
            "memo": [f"memo {i}" if i % 3 else "" for i in range(500)],
        }
    )
    frame.to_csv(source, index=False)
    lake = tmp_path / "lake"
    esa.import_events(
        lake,
        source,
        create=True,
        mapping={"stream_id": "account-{account_id}", "event_type": "kind"},
        occurred_at="when",
    )
    expected = duckdb.sql(
        f"SELECT * FROM read_csv('{source}', all_varchar=true, header=true)"
    ).fetchall()
    got = events_of(lake)
    assert len(got) == len(expected) == 500
    for e, (account, kind, when, amount, memo) in zip(got, expected, strict=True):
        assert e["stream_id"] == f"account-{account}"
        assert e["event_type"] == kind
        assert pd.Timestamp(e["occurred_at"]) == iso_utc(when)
        # the payload is the row minus the mapped columns, a template's too
        assert e["data"] == {
            "amount": csv_cell(amount),
            "memo": csv_cell(memo or ""),
        }


# -- Parquet ------------------------------------------------------------------------------


def parquet_rows(n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "stream_id": [f"order-{i % 5}" for i in range(start, start + n)],
            "event_type": [KINDS[i % 4] for i in range(start, start + n)],
            "occurred_at": pa.array(
                [1_740_000_000_000_000 + i * 1_000_000 for i in range(start, start + n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "amount": [i * 2 for i in range(start, start + n)],
            "lines": [[{"sku": f"s{i}", "qty": i % 3}] for i in range(start, start + n)],
        }
    )


def check_parquet(lake: Path, expected: pd.DataFrame, extra: tuple[str, ...] = ()) -> None:
    got = events_of(lake)
    assert len(got) == len(expected)
    assert [e["stream_id"] for e in got] == expected["stream_id"].tolist()
    assert [e["event_type"] for e in got] == expected["event_type"].tolist()
    assert [pd.Timestamp(e["occurred_at"]) for e in got] == expected["occurred_at"].tolist()
    for e, (_, row) in zip(got, expected.iterrows(), strict=True):
        assert e["data"]["amount"] == row["amount"]
        assert e["data"]["lines"] == [dict(x) for x in row["lines"]]
        for key in extra:
            assert e["data"][key] == row[key]
        assert set(e["data"]) == {"amount", "lines", *extra}


def test_parquet_one_file(tmp_path: Path) -> None:
    source = tmp_path / "events.parquet"
    pq.write_table(parquet_rows(400), source, row_group_size=64)
    lake = tmp_path / "lake"
    esa.import_events(lake, source, create=True)
    check_parquet(lake, pd.read_parquet(source))


def test_parquet_folder_in_name_order_and_glob(tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    # written out of name order: the import reads in name order
    pq.write_table(parquet_rows(30, 60), folder / "part-03.parquet")
    pq.write_table(parquet_rows(30, 0), folder / "part-01.parquet")
    pq.write_table(parquet_rows(30, 30), folder / "part-02.parquet")
    (folder / "_SUCCESS").write_text("")
    expected = duckdb.sql(
        f"SELECT * FROM read_parquet('{folder}/*.parquet', filename=true, file_row_number=true) "
        "ORDER BY filename, file_row_number"
    ).df()
    lake = tmp_path / "lake"
    esa.import_events(lake, folder, create=True)
    check_parquet(lake, expected)

    lake2 = tmp_path / "lake2"
    esa.import_events(lake2, str(folder / "part-0[12].parquet"), create=True)
    check_parquet(lake2, expected.iloc[:60].reset_index(drop=True))


def test_parquet_hive_folders_become_fields(tmp_path: Path) -> None:
    root = tmp_path / "hive"
    for region in ("eu", "us"):
        for day in ("2025-01-01", "2025-01-02"):
            part = root / f"region={region}" / f"day={day}"
            part.mkdir(parents=True)
            start = (0 if region == "eu" else 100) + (0 if day.endswith("1") else 50)
            pq.write_table(parquet_rows(20, start), part / "data.parquet")
    expected = duckdb.sql(
        f"SELECT * FROM read_parquet('{root}/**/*.parquet', hive_partitioning=true, "
        "hive_types_autocast=false, filename=true, file_row_number=true) "
        "ORDER BY filename, file_row_number"
    ).df()
    lake = tmp_path / "lake"
    esa.import_events(lake, root, create=True)
    check_parquet(lake, expected, extra=("region", "day"))


# -- idempotent and incremental -----------------------------------------------------------


def test_reimport_writes_nothing_and_appended_lines_import_alone(tmp_path: Path) -> None:
    source = tmp_path / "log.jsonl"
    write_jsonl(source, sample_rows(50))
    lake = tmp_path / "lake"
    esa.import_events(lake, source, create=True)
    before = log_bytes(lake)
    commits = (lake / "_esa" / "commits.log").read_bytes()
    again = esa.import_events(lake, source)
    assert again.events == 0
    assert again.batches == 0
    assert again.resumed
    assert log_bytes(lake) == before
    assert (lake / "_esa" / "commits.log").read_bytes() == commits

    with open(source, "a") as handle:
        handle.write("\n   \n")  # blank lines between are skipped
        handle.writelines(json.dumps(r) + "\n" for r in sample_rows(25, start=50))
    grown = esa.import_events(lake, source)
    assert grown.events == 25
    assert grown.batches == 1
    expected = pd.read_json(source, lines=True, dtype=False)
    got = events_of(lake)
    assert [e["data"] for e in got] == expected["data"].tolist()
    assert [e["global_position"] for e in got] == list(range(1, 76))
    # a last line without a newline is read too, and then the next run does not read it again
    with open(source, "a") as handle:
        handle.write(json.dumps(sample_rows(1, start=75)[0]))
    assert esa.import_events(lake, source).events == 1
    assert esa.import_events(lake, source).events == 0
    with open(source, "a") as handle:  # the user ends that line and goes on
        handle.write("\n" + json.dumps(sample_rows(1, start=76)[0]) + "\n")
    assert esa.import_events(lake, source).events == 1
    assert len(events_of(lake)) == 77


def test_csv_appended_rows_and_stored_mapping_reused(tmp_path: Path) -> None:
    source = tmp_path / "ledger.csv"
    source.write_text("acct,kind,at,amount\n" + "".join(
        f"{i % 3},Deposited,2025-01-01T00:00:{i:02d}Z,{i}\n" for i in range(10)
    ))  # fmt: skip
    lake = tmp_path / "lake"
    first = esa.import_events(
        lake, source, create=True,
        mapping={"stream_id": "acct-{acct}", "event_type": "kind"}, occurred_at="at",
    )  # fmt: skip
    assert first.events == 10
    with open(source, "a") as handle:
        handle.writelines(f"{i % 3},Withdrawn,2025-01-01T00:01:{i:02d}Z,{i}\n" for i in range(5))
    second = esa.import_events(lake, source)  # no options: the stored mapping
    assert second.events == 5
    assert second.mapping.to_json() == first.mapping.to_json()
    got = events_of(lake)
    assert [e["stream_id"] for e in got[-5:]] == [f"acct-{i % 3}" for i in range(5)]
    assert [e["data"]["amount"] for e in got] == [*range(10), *range(5)]
    # a different mapping on a re-run is refused, naming both, with nothing written
    before = log_bytes(lake)
    with pytest.raises(esa.SourceError) as caught:
        esa.import_events(lake, source, mapping={"stream_id": "acct", "event_type": "kind"})
    assert "acct-{acct}" in str(caught.value)
    assert "without mapping options" in str(caught.value)
    assert log_bytes(lake) == before


def test_parquet_new_file_after_the_others_is_picked_up(tmp_path: Path) -> None:
    folder = tmp_path / "drops"
    folder.mkdir()
    pq.write_table(parquet_rows(10, 0), folder / "2025-01-01.parquet")
    pq.write_table(parquet_rows(10, 10), folder / "2025-01-02.parquet")
    lake = tmp_path / "lake"
    assert esa.import_events(lake, folder, create=True).events == 20
    before = log_bytes(lake)
    assert esa.import_events(lake, folder).events == 0
    assert log_bytes(lake) == before
    pq.write_table(parquet_rows(10, 20), folder / "2025-01-03.parquet")
    assert esa.import_events(lake, folder).events == 10
    expected = duckdb.sql(
        f"SELECT * FROM read_parquet('{folder}/*.parquet', filename=true, file_row_number=true) "
        "ORDER BY filename, file_row_number"
    ).df()
    check_parquet(lake, expected)
    # a file that sorts before the cursor cannot be placed: refused, nothing written
    pq.write_table(parquet_rows(10, 30), folder / "2024-12-31.parquet")
    before = log_bytes(lake)
    with pytest.raises(esa.SourceChangedError):
        esa.import_events(lake, folder)
    assert log_bytes(lake) == before


def test_event_ids_uuid_kept_others_derived_deterministically(tmp_path: Path) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    rows = [
        {"stream": "a-1", "type": "T", "id": ids[0].upper(), "data": {}},
        {"stream": "a-1", "type": "T", "id": ids[1], "data": {}},
        {"stream": "a-1", "type": "T", "id": "evt-0001", "data": {}},
        {"stream": "a-1", "type": "T", "id": 42, "data": {}},
        {"stream": "a-1", "type": "T", "id": ids[1], "data": {}},  # the same event twice
        {"stream": "a-1", "type": "T", "id": "evt-0001", "data": {}},
    ]
    source = tmp_path / "ids.jsonl"
    write_jsonl(source, rows)
    got = []
    for lake in (tmp_path / "one", tmp_path / "two"):
        summary = esa.import_events(lake, source, create=True)
        assert summary.events == 4
        assert summary.already == 2
        got.append(events_of(lake))
    one, two = got
    assert [e["event_id"] for e in one] == [e["event_id"] for e in two]  # deterministic
    assert one[0]["event_id"] == ids[0]
    assert one[1]["event_id"] == ids[1]
    assert "source_event_id" not in one[0]["metadata"]
    assert one[2]["metadata"]["source_event_id"] == "evt-0001"
    assert one[3]["metadata"]["source_event_id"] == "42"
    assert all(uuid.UUID(e["event_id"]) for e in one)
    assert len({e["event_id"] for e in one}) == 4
    assert all(not e["data"] for e in one)
    # one id on two different events is not a repeat: refused, named by its place
    conflict = tmp_path / "conflict.jsonl"
    write_jsonl(conflict, [*rows, {"stream": "a-1", "type": "T", "id": ids[1], "data": {"x": 1}}])
    with pytest.raises(esa.SourceError, match="as another event") as caught:
        esa.import_events(tmp_path / "three", conflict, create=True)
    assert caught.value.where == "conflict.jsonl:7"


def test_same_file_under_new_name_writes_nothing(tmp_path: Path) -> None:
    """Rows without ids get ids from their place in the source (import name and line), so a
    re-run is free; the same rows with their own ids are recognised under any name."""
    source = tmp_path / "with-ids.jsonl"
    write_jsonl(source, [{"stream": "a-1", "type": "T", "event_id": f"e{i}"} for i in range(5)])
    lake = tmp_path / "lake"
    esa.import_events(lake, source, create=True)
    again = esa.import_events(lake, source, name="second-name")
    assert again.events == 0
    assert again.already == 5


# -- bad input ----------------------------------------------------------------------------

GOOD = {"stream": "account-1", "type": "Opened", "timestamp": "2025-01-01T00:00:00Z", "data": {}}
BAD_LINES: list[tuple[str, bytes, str]] = [
    ("malformed JSON", b'{"stream": "account-1", "type": ', "not valid JSON"),
    ("a JSON array", b'["account-1", "Opened"]', "not a JSON object"),
    ("a JSON string", b'"account-1"', "not a JSON object"),
    ("missing stream", json.dumps({**GOOD, "stream": None}).encode(), "no stream id (stream)"),
    ("no stream key", json.dumps({"type": "Opened"}).encode(), "no stream id (stream)"),
    ("bad event type", json.dumps({**GOOD, "type": "money moved!"}).encode(), "is not a name"),
    ("bad time", json.dumps({**GOOD, "timestamp": "yesterday"}).encode(), '"yesterday"'),
    ("bad payload", json.dumps({**GOOD, "data": [1, 2]}).encode(), "payload"),
    ("invalid UTF-8", b'{"stream": "account-1", "type": "Opened", "x": "\xff\xfe"}', "UTF-8"),
]


def good_lines(n: int, start: int = 0) -> bytes:
    return b"".join(
        json.dumps({**GOOD, "data": {"i": i}}).encode() + b"\n" for i in range(start, start + n)
    )


def prepared_lake(tmp_path: Path) -> Path:
    """A lake that already holds another import, so 'unchanged' has something to keep."""
    lake = tmp_path / "lake"
    other = tmp_path / "other.jsonl"
    other.write_bytes(good_lines(3))
    esa.import_events(lake, other, create=True)
    return lake


@pytest.mark.parametrize(("label", "line", "reason"), BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_bad_row_is_named_and_nothing_is_written(
    tmp_path: Path, label: str, line: bytes, reason: str
) -> None:
    lake = prepared_lake(tmp_path)
    source = tmp_path / "bad.jsonl"
    source.write_bytes(good_lines(3) + b"\n" + line + b"\n" + good_lines(2, 3))  # line 5
    before = log_bytes(lake)
    with pytest.raises(esa.SourceError) as caught:
        esa.import_events(lake, source, name="bad", mapping={"data": "data"})
    assert log_bytes(lake) == before
    assert esa.open(lake).cursor("bad") is None
    error = caught.value
    assert error.where == "bad.jsonl:5"
    assert str(error).startswith("bad.jsonl:5: ")
    assert reason in error.problem
    assert error.hint
    assert "--on-error skip" in error.hint


@pytest.mark.parametrize(
    ("text", "what"),
    [(b"", "holds no events"), (b"\n\n  \n\t\r\n", "holds no events")],
    ids=["empty", "blank lines"],
)
def test_empty_source_has_its_own_error(tmp_path: Path, text: bytes, what: str) -> None:
    lake = prepared_lake(tmp_path)
    source = tmp_path / "empty.jsonl"
    source.write_bytes(text)
    before = log_bytes(lake)
    with pytest.raises(esa.SourceError, match=what) as caught:
        esa.import_events(lake, source)
    assert caught.value.hint
    assert log_bytes(lake) == before


def test_empty_csv_and_csv_with_only_a_header(tmp_path: Path) -> None:
    lake = prepared_lake(tmp_path)
    before = log_bytes(lake)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(esa.SourceError, match="empty"):
        esa.import_events(lake, empty)
    header = tmp_path / "header.csv"
    header.write_text("stream,type\n")
    with pytest.raises(esa.SourceError, match="holds no events"):
        esa.import_events(lake, header)
    assert log_bytes(lake) == before


def test_csv_repeated_header_name(tmp_path: Path) -> None:
    lake = prepared_lake(tmp_path)
    source = tmp_path / "twice.csv"
    source.write_text("stream,type,amount,amount\na-1,T,1,2\n")
    before = log_bytes(lake)
    with pytest.raises(esa.SourceError, match="repeated") as caught:
        esa.import_events(lake, source)
    assert "amount" in caught.value.problem
    assert caught.value.hint
    assert log_bytes(lake) == before


def test_truncated_or_rewritten_source_is_refused(tmp_path: Path) -> None:
    lake = prepared_lake(tmp_path)
    source = tmp_path / "grows.jsonl"
    source.write_bytes(good_lines(40))
    esa.import_events(lake, source)
    before = log_bytes(lake)
    original = source.read_bytes()

    source.write_bytes(original[: len(original) // 2])  # truncated
    with pytest.raises(esa.SourceChangedError, match="truncated") as caught:
        esa.import_events(lake, source)
    assert caught.value.hint
    assert "--name" in caught.value.hint
    assert (
        "without an id of their own are written again" in caught.value.hint
    )  # rows here have no ids
    assert log_bytes(lake) == before

    source.write_bytes(original.replace(b'"i": 1}', b'"i": 9}', 1))  # same size, rewritten
    with pytest.raises(esa.SourceChangedError):
        esa.import_events(lake, source)
    assert log_bytes(lake) == before

    source.write_bytes(original[:-5] + b"9}\n" + good_lines(3))  # last line changed, then grown
    with pytest.raises(esa.SourceChangedError):
        esa.import_events(lake, source)
    assert log_bytes(lake) == before

    csv_source = tmp_path / "grows-too.csv"
    csv_source.write_text("stream,type\n" + "a-1,T\n" * 20)
    esa.import_events(lake, csv_source)
    before = log_bytes(lake)
    csv_source.write_text("stream,type\n" + "a-1,T\n" * 5)
    with pytest.raises(esa.SourceChangedError):
        esa.import_events(lake, csv_source)
    assert log_bytes(lake) == before

    source.write_bytes(original)  # restored: the import goes on as if nothing happened
    assert esa.import_events(lake, source).events == 0


def test_skip_writes_exact_rejects_and_imports_the_good_rows(tmp_path: Path) -> None:
    lake = prepared_lake(tmp_path)
    source = tmp_path / "mixed.jsonl"
    lines = [good_lines(2)]
    bad_at = {}
    number = 2
    for k, (_, line, reason) in enumerate(BAD_LINES):
        lines.append(line + b"\n" + good_lines(1, 2 + k))
        bad_at[f"mixed.jsonl:{number + 1}"] = (line, reason)
        number += 2
    source.write_bytes(b"".join(lines))
    summary = esa.import_events(lake, source, on_error="skip", mapping={"data": "data"})
    good = 2 + len(BAD_LINES)
    assert summary.events == good
    assert summary.rejected == len(BAD_LINES)
    path = rejects_path(lake, "mixed")
    assert summary.rejects_path == path
    assert not path.is_relative_to(lake)
    rejects = [json.loads(t) for t in path.read_text().splitlines()]
    assert [r["where"] for r in rejects] == list(bad_at)
    for r in rejects:
        line, reason = bad_at[r["where"]]
        assert reason in r["reason"]
        if r["row"] is not None:  # a line that is not UTF-8 cannot be kept as text
            assert r["row"].encode() == line  # the row as it stands, without its newline
    got = [e for e in events_of(lake) if e["data"].get("i") is not None][3:]
    assert [e["data"]["i"] for e in got] == list(range(good))
    # re-running: nothing new, the rejects file unchanged
    text = path.read_bytes()
    again = esa.import_events(lake, source, on_error="skip")
    assert again.events == 0
    assert path.read_bytes() == text


def test_skip_batch_of_only_bad_rows_rerun_does_not_duplicate_rejects(tmp_path: Path) -> None:
    lake = prepared_lake(tmp_path)
    source = tmp_path / "allbad.jsonl"
    source.write_bytes(b'{"stream": "a-1", "type": "no good"}\n{"stream": "a-1"}\n')
    first = esa.import_events(lake, source, on_error="skip")
    assert first.events == 0
    assert first.rejected == 2
    path = rejects_path(lake, "allbad")
    text = path.read_bytes()
    # the rows added no event, yet the cursor moved past them, in a line of its own
    log = (Path(lake) / "_esa" / "commits.log").read_bytes()
    kinds = [json.loads(line.split(b"\t")[0])["kind"] for line in log.splitlines()]
    assert kinds[-1] == "cursor"
    head = esa.open(lake).head
    second = esa.import_events(lake, source, on_error="skip")
    assert (second.rejected, second.events, second.head) == (0, 0, head)  # nothing read again
    assert path.read_bytes() == text
    assert len(text.splitlines()) == 2
    from esanalytics.audit.verify import verify

    store = esa.open(lake)
    assert verify(store).ok  # the cursor line verifies
    assert verify(store, deep=True).ok
    store.compact()
    assert verify(esa.open(lake)).ok
    # a row added later is imported from there
    with open(source, "ab") as handle:
        handle.write(b'{"stream": "a-2", "type": "Added"}\n')
    third = esa.import_events(lake, source, on_error="skip")
    assert (third.events, third.rejected) == (1, 0)


def test_error_in_a_later_batch_keeps_earlier_batches_and_resumes_after_a_fix(
    tmp_path: Path,
) -> None:
    """Batches commit as they go: a bad row stops its batch only; fixing it and running
    again continues after the last committed batch with no gap and no repeat."""
    from esanalytics.sources.files import JsonLinesSource

    lake = prepared_lake(tmp_path)
    source = tmp_path / "big.jsonl"
    body = good_lines(200)
    lines = body.splitlines(keepends=True)
    lines[150] = b'{"stream": "account-1", "type": "Opened", "timestamp": "nope"}\n'
    source.write_bytes(b"".join(lines))
    with pytest.raises(esa.SourceError, match=r"big\.jsonl:151"):
        esa.import_events(lake, JsonLinesSource(source, block_bytes=2048), name="big")
    committed = len(events_of(lake)) - 3
    assert 0 < committed < 150
    lines[150] = body.splitlines(keepends=True)[150]
    source.write_bytes(b"".join(lines))
    esa.import_events(lake, JsonLinesSource(source, block_bytes=2048), name="big")
    got = events_of(lake)
    assert [e["data"]["i"] for e in got[3:]] == list(range(200))
    assert [e["global_position"] for e in got] == list(range(1, 204))


def test_failed_create_leaves_no_lake(tmp_path: Path) -> None:
    """An import that fails on a new lake it was asked to create leaves no lake behind (a
    later run without --create must not find an empty lake it never asked for)."""
    source = tmp_path / "bad.jsonl"
    source.write_bytes(b"{\n")
    lake = tmp_path / "new-lake"
    with pytest.raises(esa.SourceError):
        esa.import_events(lake, source, create=True)
    assert not lake.exists()
    with pytest.raises(esa.SourceError, match="no file or folder"):
        esa.import_events(lake, tmp_path / "missing.jsonl", create=True)
    assert not lake.exists()
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    with pytest.raises(esa.SourceError):
        esa.import_events(empty, source, create=True)
    assert empty.is_dir()
    assert not any(empty.iterdir())


def test_csv_blank_lines_then_growth_imports_each_row_once(tmp_path: Path) -> None:
    """Blank lines (and rows of only empty cells) are skipped, and a re-run after the file
    grew starts after the last row read: no row twice, none lost."""
    source = tmp_path / "gaps.csv"
    source.write_text("stream,type,v\na-1,T,1\n\n\na-1,T,2\n,,\na-1,T,3\n\n")
    lake = tmp_path / "lake"
    assert esa.import_events(lake, source, create=True).events == 3
    with open(source, "a") as handle:
        handle.write("a-1,T,4\n\na-1,T,5\n")
    assert esa.import_events(lake, source).events == 2
    assert [e["data"]["v"] for e in events_of(lake)] == [1, 2, 3, 4, 5]
    expected = pd.read_csv(source, dtype=str).dropna(how="all")  # pandas skips blank lines
    assert [str(e["data"]["v"]) for e in events_of(lake)] == expected["v"].tolist()


def test_small_csv_rewritten_is_refused(tmp_path: Path) -> None:
    """A CSV under the fingerprint size rewritten with other rows (same or larger size) is
    not read on from the old row count."""
    lake = prepared_lake(tmp_path)
    source = tmp_path / "small.csv"
    source.write_text("stream,type,v\na-1,T,1\na-1,T,2\n")
    esa.import_events(lake, source)
    before = log_bytes(lake)
    source.write_text("stream,type,v\nb-1,X,9\nb-1,X,8\nb-1,X,7\n")
    with pytest.raises(esa.SourceChangedError):
        esa.import_events(lake, source)
    assert log_bytes(lake) == before
    big = tmp_path / "big.csv"
    rows = "".join(f"a-1,T,{i}\n" for i in range(2000))
    big.write_text("stream,type,v\n" + rows)
    esa.import_events(lake, big)
    before = log_bytes(lake)
    # (a same-size change in the middle, outside both fingerprints, is not seen: as for JSONL)
    big.write_text("stream,type,v\n" + rows.replace("a-1,T,1999\n", "a-1,T,7777\n"))  # last row
    with pytest.raises(esa.SourceChangedError):
        esa.import_events(lake, big)
    assert log_bytes(lake) == before


def test_csv_row_with_wrong_number_of_fields_is_named(tmp_path: Path) -> None:
    lake = prepared_lake(tmp_path)
    source = tmp_path / "ragged.csv"
    source.write_text("stream,type,v\na-1,T,1\na-1,T\na-1,T,3\n")
    before = log_bytes(lake)
    with pytest.raises(esa.SourceError) as caught:
        esa.import_events(lake, source)
    assert "ragged.csv" in caught.value.problem
    assert "a-1,T" in caught.value.problem
    assert "3" in caught.value.problem
    assert caught.value.hint
    assert log_bytes(lake) == before


def test_counter_ids_of_two_tables_do_not_collide(tmp_path: Path) -> None:
    """Two exports whose own ids are row counters (1, 2, 3 in each table) are different
    events: both are imported. The same export under another name is still recognised."""
    lake = tmp_path / "lake"
    for table in ("orders", "payments"):
        source = tmp_path / f"{table}.csv"
        source.write_text(
            "id,stream,type\n" + "".join(f"{i},{table}-{i},Created\n" for i in range(1, 6))
        )
        summary = esa.import_events(lake, source, create=True)
        assert summary.events == 5
        assert summary.already == 0
    got = events_of(lake)
    assert [e["stream_id"] for e in got] == [f"{t}-{i}" for t in ("orders", "payments")
                                             for i in range(1, 6)]  # fmt: skip
    assert [e["metadata"]["source_event_id"] for e in got] == [str(i) for i in range(1, 6)] * 2
    again = esa.import_events(lake, tmp_path / "payments.csv", name="payments-again")
    assert again.events == 0
    assert again.already == 5


def test_jsonl_with_a_byte_order_mark_and_crlf(tmp_path: Path) -> None:
    """Windows tools write a UTF-8 BOM and CRLF line ends; the file reads as pandas reads it,
    and a re-run after growth continues at the right place."""
    source = tmp_path / "windows.jsonl"
    rows = sample_rows(5)
    source.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps(r).encode() + b"\r\n" for r in rows))
    lake = tmp_path / "lake"
    assert esa.import_events(lake, source, create=True).events == 5
    with open(source, "ab") as handle:
        handle.write(json.dumps(sample_rows(1, start=5)[0]).encode() + b"\r\n")
    assert esa.import_events(lake, source).events == 1
    expected = pd.read_json(source, lines=True, dtype=False, encoding="utf-8-sig")
    assert [e["data"] for e in events_of(lake)] == expected["data"].tolist()
    assert [e["stream_id"] for e in events_of(lake)] == expected["stream"].tolist()


def test_not_json_nan_in_parquet_is_a_bad_row_with_one_full_stop(tmp_path: Path) -> None:
    source = tmp_path / "nan.parquet"
    pq.write_table(
        pa.table({"stream": ["a-1", "a-1"], "type": ["T", "T"], "x": [1.0, float("nan")]}), source
    )
    lake = prepared_lake(tmp_path)
    before = log_bytes(lake)
    with pytest.raises(esa.SourceError) as caught:
        esa.import_events(lake, source)
    assert caught.value.where == "nan.parquet:row 2"
    assert "NaN" in caught.value.problem
    assert ".." not in str(caught.value)
    assert log_bytes(lake) == before


def test_stream_id_the_store_refuses_is_a_bad_row(tmp_path: Path) -> None:
    """A stream id whose category cannot name a folder ('x/y-1') is named by its line, and
    on_error='skip' puts every such row in the rejects file and imports the others."""
    source = tmp_path / "streams.jsonl"
    rows = [{"stream": "x/y-1" if i % 50 == 7 else f"a-{i % 10}", "type": "T", "i": i}
            for i in range(300)]  # fmt: skip
    write_jsonl(source, rows)
    lake = prepared_lake(tmp_path)
    before = log_bytes(lake)
    with pytest.raises(esa.SourceError) as caught:
        esa.import_events(lake, source)
    assert caught.value.where == "streams.jsonl:8"
    assert "x/y" in caught.value.problem
    assert log_bytes(lake) == before
    summary = esa.import_events(lake, source, on_error="skip")
    assert summary.rejected == 6
    assert summary.events == 294
    rejects = [json.loads(t) for t in rejects_path(lake, "streams").read_text().splitlines()]
    assert [r["where"] for r in rejects] == [f"streams.jsonl:{i + 1}" for i in range(7, 300, 50)]
    assert [e["data"]["i"] for e in events_of(lake)[3:]] == [i for i in range(300) if i % 50 != 7]


def test_csv_bad_row_in_a_later_batch_fixed_then_resumed(tmp_path: Path) -> None:
    """A CSV read in several batches stops at a bad row with the earlier batches committed;
    the user fixes the row (the file grows by a few bytes) and the import goes on."""
    from esanalytics.sources.files import CsvSource

    lake = prepared_lake(tmp_path)
    source = tmp_path / "long.csv"
    rows = [f"a-{i % 5},T,{i}\n" for i in range(3000)]
    rows[2500] = "a-1,bad type,2500\n"
    source.write_text("stream,type,v\n" + "".join(rows))
    with pytest.raises(esa.SourceError, match=r"long\.csv:row 2501"):
        esa.import_events(lake, CsvSource(source, block_bytes=8192), name="long")
    committed = len(events_of(lake)) - 3
    assert 0 < committed < 2500
    rows[2500] = "a-1,TypeFixed,2500\n"
    source.write_text("stream,type,v\n" + "".join(rows))
    esa.import_events(lake, CsvSource(source, block_bytes=8192), name="long")
    assert [e["data"]["v"] for e in events_of(lake)[3:]] == list(range(3000))
    # and once read to its end, the bytes before the end are fingerprinted
    source.write_text("stream,type,v\n" + "".join(rows).replace("a-4,T,2999", "a-4,T,9999"))
    with pytest.raises(esa.SourceChangedError):
        esa.import_events(lake, CsvSource(source, block_bytes=8192), name="long")
