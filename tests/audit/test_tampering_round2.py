"""Round 2 of issue 11's tampering: SQL run through the library (Session.sql, the %%esql
magic) cannot write into the lake any more than `esa sql` can."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import esanalytics as esa
from esanalytics.audit import verify
from esanalytics.engine import Session
from tests.conftest import log_bytes


def _lake(lake: Path) -> esa.EventStore:
    store = esa.open(lake, create=True)
    store.append("acct-1", [esa.NewEvent("MoneyDeposited", {"amount": 1})])
    store.flush()
    return store


def _writes(lake: Path) -> list[str]:
    relative = os.path.relpath(lake / "_esa" / "commits.log")
    return [
        f"COPY (SELECT 'x' AS garbage) TO '{lake}/_esa/commits.log' (FORMAT csv, HEADER false)",
        f"COPY (SELECT 1 AS n) TO '{relative}' (FORMAT csv)",
        f"COPY (SELECT * FROM events) TO '{lake}/events' (FORMAT parquet, PARTITION_BY (category), OVERWRITE_OR_IGNORE)",
        f"EXPORT DATABASE '{lake}/_esa'",
        f"SELECT 1; COPY (SELECT 1 AS n) TO 'file://{lake}/x.csv'",
    ]


def test_session_sql_refuses_writes_into_the_lake_and_writes_elsewhere(
    tmp_path: Path,
) -> None:
    store = _lake(tmp_path / "lake")
    before = log_bytes(store.path)
    session = Session(store)
    for query in _writes(store.path):
        with pytest.raises(esa.ValidationError, match="writes inside the lake") as caught:
            session.sql(query)
        assert "outside the lake" in (caught.value.hint or "")
    assert log_bytes(store.path) == before
    assert verify(store).ok
    mine = tmp_path / "mine.csv"
    session.sql(f"COPY (SELECT * FROM events) TO '{mine}' (FORMAT csv)")
    assert mine.read_text().count("\n") == 2
    assert session.sql("SELECT count(*) FROM events").fetchall() == [(1,)]


def test_the_esql_magic_refuses_writes_into_the_lake(tmp_path: Path) -> None:
    from esanalytics.jupyter import esql

    store = _lake(tmp_path / "lake")
    before = log_bytes(store.path)
    with pytest.raises(esa.ValidationError, match="writes inside the lake"):
        esql(f"--lake {store.path}", _writes(store.path)[0])
    assert log_bytes(store.path) == before
    assert esql(f"--lake {store.path}", "SELECT count(*) AS n FROM events")["n"][0] == 1
