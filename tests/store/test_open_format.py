"""The lake is plain hive-partitioned Parquet: other readers need none of our code."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pytest

import esanalytics as esa


def test_duckdb_reads_the_lake_with_no_code_of_ours(sample_lake: Path) -> None:
    ours = esa.open(sample_lake).read_all().to_pandas()
    con = duckdb.connect()
    theirs = con.sql(
        f"SELECT * EXCLUDE (month) FROM read_parquet('{sample_lake}/events/**/*.parquet', "
        "hive_partitioning = true) ORDER BY global_position"
    ).df()
    assert len(theirs) == len(ours) == 30_000
    for column in [
        "global_position",
        "stream_id",
        "category",
        "version",
        "event_id",
        "data",
        "metadata",
        "hash",
    ]:
        assert theirs[column].tolist() == ours[column].tolist(), column
    assert (theirs["recorded_at"] == ours["recorded_at"]).all()
    per_category = con.sql(
        f"SELECT category, count(*) FROM read_parquet('{sample_lake}/events/**/*.parquet', "
        "hive_partitioning = true) GROUP BY ALL ORDER BY 1"
    ).fetchall()
    assert dict(per_category) == ours["category"].value_counts().to_dict()


def test_pyarrow_dataset_reads_the_lake(sample_lake: Path) -> None:
    dataset = ds.dataset(sample_lake / "events", format="parquet", partitioning="hive")
    table = dataset.to_table().sort_by("global_position")
    assert table.num_rows == 30_000
    assert table["global_position"].to_pylist() == list(range(1, 30_001))
    assert set(table["category"].to_pylist()) == {"account", "order"}


@pytest.mark.parametrize("with_compaction", [False, True])
def test_plain_readers_see_appends_once_sealed(lake: Path, with_compaction: bool) -> None:
    store = esa.open(lake, create=True)
    for i in range(25):
        store.append(f"account-{i % 3}", [esa.NewEvent("MoneyDeposited", {"amount": i})])
    store.flush()
    if with_compaction:
        store.compact()
    count = duckdb.sql(
        f"SELECT count(*), count(DISTINCT global_position), max(global_position) "
        f"FROM read_parquet('{lake}/events/**/*.parquet', hive_partitioning = true)"
    ).fetchall()[0]
    assert count == (25, 25, 25)
