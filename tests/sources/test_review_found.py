"""Bugs found in a second reading of the import machinery (issue 13), each shown by a test
that failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

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
