"""Extracts: checksums that sha256sum accepts, CSV that cannot run formulas, trails by scope."""

from __future__ import annotations

import csv
import hashlib
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import esanalytics as esa
from esanalytics.audit import Scope, trail
from esanalytics.engine import Session
from esanalytics.exceptions import ValidationError
from esanalytics.report import safe_for_spreadsheets, write_extract

HOSTILE = [
    '=HYPERLINK("http://x")',
    "+1+1",
    "-2",
    "@SUM(A1)",
    "\tTAB",
    "plain",
    "<script>alert(1)</script>",
    None,
]


def test_csv_cells_never_start_a_formula(tmp_path: Path) -> None:
    table = pa.table({"text": HOSTILE, "n": list(range(len(HOSTILE)))})
    sums = write_extract(table, tmp_path / "trail.csv")
    with open(tmp_path / "trail.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    cells = [r["text"] for r in rows]
    for original, cell in zip(HOSTILE, cells, strict=True):
        if original is None:
            assert cell == ""
        elif original[0] in "=+-@\t":
            assert cell == "'" + original
        else:
            assert cell == original
    assert [int(r["n"]) for r in rows] == list(range(len(HOSTILE)))  # numbers stay numbers
    check = subprocess.run(
        ["sha256sum", "-c", sums.name], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert safe_for_spreadsheets(table)["n"].equals(table["n"])


def test_parquet_extract_and_checksum(tmp_path: Path) -> None:
    table = pa.table({"text": HOSTILE})
    sums = write_extract(table, tmp_path / "trail.parquet", fmt="parquet")
    assert pq.read_table(tmp_path / "trail.parquet").equals(table)  # Parquet keeps the data as is
    digest, name = sums.read_text().split()
    assert name == "trail.parquet"
    assert digest == hashlib.sha256((tmp_path / "trail.parquet").read_bytes()).hexdigest()
    (tmp_path / "trail.parquet").write_bytes(b"tampered")
    assert (
        subprocess.run(["sha256sum", "-c", sums.name], cwd=tmp_path, capture_output=True).returncode
        != 0
    )
    with pytest.raises(ValidationError, match="Unknown extract format"):
        write_extract(table, tmp_path / "x.xlsx", fmt="xlsx")


def test_trails_by_scope_match_the_log(sample_lake: Path) -> None:
    store = esa.open(sample_lake)
    session = Session(store)
    events = store.read_all().to_list()
    entity = trail(session, Scope("entity", "account-3"))
    assert entity["global_position"].to_pylist() == [
        e.global_position for e in events if e.stream_id == "account-3"
    ]
    actor = trail(session, Scope("actor", "alice"))
    assert actor.num_rows == sum(1 for e in events if e.metadata.get("actor") == "alice") > 0
    assert set(actor["actor"].to_pylist()) == {"alice"}
    some = next(e for e in events if e.stream_id.startswith("order-") and e.version > 2)
    chain = trail(session, Scope("correlation", some.metadata["correlation_id"]))
    assert set(chain["stream_id"].to_pylist()) == {some.stream_id}
    period = trail(session, Scope("period", start="2024-02-01", end="2024-02-02"))
    expected = [
        e.global_position
        for e in events
        if "2024-02-01" <= e.recorded_at.isoformat()[:10] < "2024-02-02"
    ]
    assert period["global_position"].to_pylist() == expected
    with pytest.raises(ValidationError, match="needs a value"):
        trail(session, Scope("actor"))
